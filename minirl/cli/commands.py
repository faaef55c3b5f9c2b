"""The commands of ``minirl``: each takes the parsed flags and returns an exit status.

Modules that start JAX's backends (gymnax builds arrays when imported) are imported inside
the commands, after ``minirl.cli.main`` has chosen the device count.
"""

import argparse
import os
import sys

from minirl.cli import UsageError, output
from minirl.core.config import ConfigError

# ----------------------------------------------------------------------------- parsing


def _algorithms() -> dict:
    from minirl.algos import ALGORITHMS
    from minirl.model_based import LEARNERS

    return {**ALGORITHMS, **LEARNERS}


def _algorithm(name: str):
    algorithms = _algorithms()
    if name not in algorithms:
        raise ConfigError(f"unknown algorithm {name!r}; choose one of: {', '.join(algorithms)}")
    return algorithms[name]


def parse_options(planner: str, texts: list[str]) -> tuple[dict, dict]:
    """``["horizon=30", "env.g=9"]`` → (planner options typed like their defaults, env
    changes)."""
    from minirl import configs
    from minirl.planning import mpc

    defaults = mpc.planner_options(planner)
    options, env_changes = {}, {}
    for text in texts:
        name, value = configs.split_text("--set", text, "option=value")
        if name.startswith(configs.ENV_PREFIX):
            env_changes[name[len(configs.ENV_PREFIX):]] = configs.number(name, value)
            continue
        mpc.planner_options(planner, {name: None})  # an unknown option names the allowed
        kind = int if isinstance(defaults[name], int) else float
        options[name] = configs.parse_text(name, kind, value)
    return options, env_changes


def _check_counts(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name, None)
        low = 0 if name == "process_id" else 1
        if value is not None and value < low:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag}={value} is out of range; allowed: integers ≥ {low}")


def _devices(count: int | None) -> list:
    import jax

    devices = jax.local_devices()
    if count is not None:
        if not 1 <= count <= len(devices):
            raise UsageError(
                f"--devices={count} is out of range; 1 … {len(devices)} here (JAX started "
                f"with {len(devices)} device(s))"
            )
        devices = devices[:count]
    return devices


def _recorded_env(meta: dict):
    """The gymnax env a run recorded; a run on a user's own env has no id to rebuild from."""
    from minirl import envs

    if meta.get("env") is None:
        raise ConfigError(
            f"this run was trained on a user's environment ({meta.get('env_name')}), which the "
            "command line cannot rebuild; resume or evaluate it from Python "
            "(minirl.runner.resume, minirl.runner.evaluate_run), passing the environment again"
        )
    return envs.make(meta["env"], **meta.get("env_overrides", {}))


# ----------------------------------------------------------------------------- train


def _resolve(flag: object, from_file: object, default: object) -> object:
    """A command-line flag, else the run file's value, else the default."""
    return flag if flag is not None else from_file if from_file is not None else default


def cmd_train(args: argparse.Namespace, argv: list[str] | None) -> int:
    from minirl import configs, envs, runfile, runner, tracking
    from minirl.cli import output

    _check_counts(args, "seeds", "steps", "chunks", "runs_per_program", "stop_after_chunks",
                  "eval_every", "eval_episodes")
    devices = _devices(args.devices)
    log = args.log or None
    if args.resume:
        given = [flag for flag, value in (("--env", args.env), ("--steps", args.steps),
                                          ("--set", args.set), ("--config", args.config),
                                          ("--eval-every", args.eval_every),
                                          ("--eval-episodes", args.eval_episodes)) if value]
        if given:
            raise UsageError(f"--resume continues a run as configured; drop {'/'.join(given)}")
        out_dir = args.resume
        tracking.check(log, out_dir)
        meta = runner.read_metadata(out_dir)
        if args.algo and meta["algo"] != args.algo:
            raise ConfigError(f"--resume {out_dir} holds a {meta['algo']} run, not {args.algo}")
        algo_name = meta["algo"]
        progress = output.Progress(f"resuming {meta['algo']} on {meta['env']} from {out_dir}")
        run = runner.resume(out_dir, _algorithm(algo_name), *_recorded_env(meta),
                            report=progress, stop_after_chunks=args.stop_after_chunks,
                            devices=devices, log=log)
    else:
        spec = runfile.read(args.config) if args.config else runfile.RunFile("")
        if args.algo and spec.algo and args.algo != spec.algo:
            raise ConfigError(f"config file {spec.path} describes a {spec.algo} run; the "
                              f"command line names {args.algo}")
        algo_name = args.algo or spec.algo
        if not algo_name:
            raise UsageError("name an algorithm (minirl train ALGO ...; see `minirl list`) or "
                             "give --config FILE")
        algo = _algorithm(algo_name)
        env_id = args.env or spec.env
        if not env_id:
            raise UsageError("--env is required (e.g. --env CartPole-v1); see `minirl list`")
        changes, env_changes = configs.parse_sets(algo.Config, args.set)
        changes = {**spec.config_changes(algo.Config), **changes}  # flags override the file
        env_changes = {**spec.env_params, **env_changes}
        steps = args.steps
        if steps is None and "total_steps" not in changes:
            steps = spec.steps
        eval_every = _resolve(args.eval_every, spec.eval_every, None)
        eval_episodes = _resolve(args.eval_episodes, spec.eval_episodes, 10)
        if eval_every is None and args.eval_episodes is not None:
            raise UsageError("--eval-episodes needs --eval-every N (env steps between "
                             "evaluations)")
        seeds = _resolve(args.seeds, spec.seeds, 4)
        out_dir = args.out or os.path.join("runs", f"{algo_name}-{env_id}")
        tracking.check(log, out_dir)
        env, env_params = envs.make(env_id, **env_changes)
        config = configs.make(algo, env_id, steps, changes)
        progress = output.Progress(
            f"training {algo_name} on {env_id}: {config.total_steps:,} env steps × "
            f"{seeds} seeds → {out_dir} (compiling, then running)"
        )
        run = runner.train(
            algo, config, env, env_params, seeds=seeds, seed=_resolve(args.seed,
                                                                      spec.first_seed, 0),
            out_dir=out_dir, env_id=env_id, env_overrides=env_changes, report=progress,
            stop_after_chunks=args.stop_after_chunks,
            target_chunks=_resolve(args.chunks, spec.chunks, 50),
            runs_per_program=_resolve(args.runs_per_program, spec.runs_per_program, None),
            devices=devices, eval_every=eval_every, eval_episodes=eval_episodes, log=log,
        )
    if not run.finished:
        print(
            f"stopped after {run.done_chunks}/{len(run.chunks)} chunks; continue with "
            f"`minirl train {algo_name} --resume {out_dir}`",
            file=sys.stderr,
        )
        return 0
    output.print_table(run.summary())
    extra = ", tensorboard/" if "tensorboard" in tracking.entries(log) else ""
    print(f"wrote {out_dir}/summary.json, metrics.csv, curve.png, {runner.CHECKPOINT}{extra}")
    return 0


# ----------------------------------------------------------------------------- eval


def cmd_eval(args: argparse.Namespace, argv: list[str] | None) -> int:
    import numpy as np

    from minirl import runner

    _check_counts(args, "episodes")
    meta = runner.read_metadata(args.dir)
    if meta["algo"] == "distill":
        return _eval_distilled(args)
    algo = _algorithm(meta["algo"])
    env, env_params = _recorded_env(meta)
    run, returns = runner.evaluate_run(args.dir, algo, env, env_params, args.episodes,
                                       args.seed)
    print(f"greedy returns over {args.episodes} episodes, {run.algo_name} on {run.env_id}:")
    for s, row in enumerate(returns):
        print(
            f"  seed {run.seed + s}: mean {row.mean():.1f}  "
            f"(min {row.min():.1f}, max {row.max():.1f})"
        )
    print(f"  median over seeds: {np.median(returns.mean(axis=1)):.1f}")
    if args.gif:
        from minirl.cli import animation

        frames = animation.write_gif(algo, run.config, env, env_params, run.state.learner.params,
                                     run.env_id, args.gif, seed=args.seed)
        print(f"wrote {args.gif} ({frames} frames, seed {run.seed}'s greedy episode)")
    return 0


def _eval_distilled(args: argparse.Namespace) -> int:
    """``minirl eval`` of a student written by ``minirl distill``: greedy returns per task."""
    from minirl import distill

    if args.gif:
        raise UsageError("--gif is not available for a distilled student (several envs)")
    meta, returns = distill.evaluate_run(args.dir, args.episodes, args.seed)
    print(f"greedy returns over {args.episodes} episodes, distilled student "
          f"(seed {meta['seed']}), per task:")
    for entry, row in zip(meta["tasks"], returns):
        print(f"  {entry['env']}: mean {row.mean():.1f}  (min {row.min():.1f}, "
              f"max {row.max():.1f}; teacher {entry['teacher_algo']} from "
              f"{entry['teacher_run']})")
    return 0


# ----------------------------------------------------------------------------- plan


def cmd_plan(args: argparse.Namespace, argv: list[str] | None) -> int:
    from minirl import envs, runner
    from minirl.cli import output

    _check_counts(args, "seeds", "steps")
    out_dir = args.out or os.path.join("runs", f"plan-{args.planner}-{args.env}")
    options, env_changes = parse_options(args.planner, args.set)
    env, env_params = envs.make(args.env, **env_changes)
    print(
        f"planning with {args.planner} on {args.env}: {args.seeds} seeds → {out_dir} "
        "(one jitted program; compiling, then running)",
        file=sys.stderr,
    )
    summary = runner.plan(args.planner, env, env_params, seeds=args.seeds, seed=args.seed,
                          steps=args.steps, options=options, out_dir=out_dir,
                          env_id=args.env, env_overrides=env_changes)
    output.print_table(summary)
    print(f"wrote {out_dir}/summary.json, metrics.csv, curve.png")
    return 0


# ----------------------------------------------------------------------------- sweep


def cmd_sweep(args: argparse.Namespace, argv: list[str] | None) -> int:
    _check_counts(args, "seeds", "steps", "chunks", "num_processes", "process_id",
                  "runs_per_program", "eval_every", "eval_episodes")
    if args.eval_episodes is not None and args.eval_every is None:
        raise UsageError("--eval-episodes needs --eval-every N (env steps between evaluations)")
    if args.process_id >= args.num_processes:
        raise UsageError(f"--process-id={args.process_id} must be < --num-processes")
    if not args.grid:
        raise UsageError("give at least one --grid FIELD=V1,V2,... (e.g. --grid lr=1e-4,1e-3)")
    if args.num_processes > 1 and not args.coordinator:
        raise UsageError("--num-processes > 1 needs --coordinator HOST:PORT")
    if args.coordinator:
        _start_distributed(args, argv)

    import jax

    from minirl import configs, envs, runner
    from minirl.cli import output

    algo = _algorithm(args.algo)
    devices = _devices(args.devices)
    out_dir = args.out or os.path.join("runs", f"sweep-{args.algo}-{args.env}")
    lead = jax.process_index() == 0
    grid = configs.parse_grid(algo.Config, args.grid)
    changes, env_changes = configs.parse_sets(algo.Config, args.set)
    for name in grid:
        if name in changes or name.removeprefix(configs.ENV_PREFIX) in env_changes:
            raise UsageError(f"{name} is given both in --grid and in --set")
    env, env_params = envs.make(args.env, **env_changes)
    base = configs.make(algo, args.env, args.steps, changes)
    progress = output.Progress(
        f"sweeping {args.algo} on {args.env}: {' × '.join(map(str, map(len, grid.values())))}"
        f"{' (zipped)' if args.zip else ''} values × {args.seeds} seeds × "
        f"{base.total_steps:,} env steps on {len(devices)} device(s) × {jax.process_count()} "
        f"process(es) → {out_dir} (compiling, then running)",
        unit="run",
    )
    result = runner.sweep(
        algo, base, env, env_params, grid, zipped=args.zip, seeds=args.seeds, seed=args.seed,
        out_dir=out_dir, env_id=args.env, env_overrides=env_changes,
        report=progress if lead else None, target_chunks=args.chunks,
        runs_per_program=args.runs_per_program, devices=devices,
        eval_every=args.eval_every, eval_episodes=args.eval_episodes or 10,
    )
    if result is not None:  # process 0
        output.print_ranking(result)
        print(f"wrote {out_dir}/summary.json, metrics.csv, sweep.png")
    return 0


def _start_distributed(args: argparse.Namespace, argv: list[str] | None) -> None:
    """``jax.distributed`` must start before JAX's backends (gymnax's import): here, or in a
    fresh process running this same command line."""
    from minirl import distributed

    try:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    except RuntimeError:
        if argv is not None:
            raise UsageError(
                "--coordinator needs a fresh process: run `minirl sweep ...` as a command"
            ) from None
        _reexec_distributed(sys.argv[1:])  # does not return


def _reexec_distributed(argv: list[str]) -> None:
    """Replace this process by ``minirl.cli.distributed_main`` with the same command line."""
    code = "from minirl.cli import distributed_main; distributed_main()"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-c", code, *argv])


# ----------------------------------------------------------------------------- compare


def cmd_compare(args: argparse.Namespace, argv: list[str] | None) -> int:
    from minirl import compare
    from minirl.cli import output

    _, rows = compare.compare(args.dirs, args.out)
    output.print_comparison(rows)
    print(f"wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------- distill


def cmd_distill(args: argparse.Namespace, argv: list[str] | None) -> int:
    from minirl import configs, distill

    _check_counts(args, "steps", "episodes", "chunks")
    changes, env_changes = configs.parse_sets(distill.Config, args.set)
    if env_changes:
        raise UsageError("--set env.FIELD is not available for distill: each teacher's env is "
                         "rebuilt as its run recorded it")
    config = configs.make(distill, None, args.steps, changes)
    progress = _DistillProgress(
        f"distilling {len(args.dirs)} teacher(s) into one student: {config.total_steps:,} env "
        f"steps per task → {args.out} (compiling, then running)"
    )
    run = distill.run(args.dirs, args.out, config, seed=args.seed, episodes=args.episodes,
                      report=progress, target_chunks=args.chunks)
    _print_distilled(run.summary)
    print(f"wrote {args.out}/summary.json, metrics.csv, curve.png, {distill.CHECKPOINT}")
    return 0


class _DistillProgress(output.Progress):
    """``minirl train``'s progress line with one recent return per task, and the student's
    agreement with the teachers' argmax over the last chunk's batches."""

    def __init__(self, header: str):
        super().__init__(header, unit="task")
        self.names: list[str] = []

    def line(self, history: list, wall: float, seeds: int, total: int) -> str:
        from minirl import distill

        steps = history[-1]["env_steps"]
        rate = steps * len(self.names) / max(wall, 1e-9)
        width = 28
        filled = int(width * steps / max(total, 1))
        recent = distill.recent_returns(history, len(self.names))
        returns = " | ".join(f"{name} {value:8.1f}" for name, value in zip(self.names, recent))
        return (f"[{'#' * filled}{'.' * (width - filled)}] {steps:>9,}/{total:,} env steps/task "
                f"| {rate:>10,.0f} steps/s | {returns} | agreement "
                f"{history[-1].get('agreement', float('nan')):.3f} | {wall:6.1f}s")

    def __call__(self, run) -> None:
        self.names = run.task_names
        super().__call__(run)


def _print_distilled(summary: dict, stream=None) -> None:
    """Per task: the teacher's, the student's and a random policy's greedy returns, and the
    normalised score (student − random) / (teacher − random)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"distilled student (seed {summary['seed']}), greedy returns over "
                        f"{summary['eval_episodes']} episodes")
    for column in ("task", "teacher", "student", "random", "(s − r) / (t − r)"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for entry in summary["tasks"]:
        score = entry["normalised_return"]
        table.add_row(f"{entry['env']} ({entry['teacher_algo']})",
                      f"{entry['teacher_return']:.1f}", f"{entry['student_return']:.1f}",
                      f"{entry['random_return']:.1f}",
                      "nan" if score is None else f"{score:.3f}")
    console = Console(file=stream or sys.stdout, width=100)
    console.print(table)
    console.print(f"{summary['steps']:,} env steps per task in {summary['wall_seconds']:.1f}s")


# ----------------------------------------------------------------------------- list


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring, joined onto one line."""
    text = " ".join((doc or "").split())
    for end in (". ", ".\n"):
        if end in text:
            return text[: text.index(end) + 1]
    return text


def cmd_list(args: argparse.Namespace, argv: list[str] | None) -> int:
    from minirl import envs
    from minirl.planning.mpc import PLANNERS, VECTOR_FIELDS

    algorithms = _algorithms()
    print("algorithms (minirl train / sweep):")
    for name, module in algorithms.items():
        print(f"  {name:<10} {first_sentence(module.__doc__)}")
    print("environments (gymnax): id, action space, algorithms that fit "
          "(* measured not to learn it: notes below)")
    cannot = []  # (algorithm, env id, why): each learner's CANNOT_LEARN
    for env_id in envs.REGISTERED:
        kind = envs.kind(env_id)
        pixels = env_id.endswith(envs.PIXELS)
        # OBSERVATIONS: "pixels" (learns from images only), "vectors" (state vectors only)
        # ENVS: the only envs a learner can run on (a known reward of (obs, action): lqr_flm)
        fits = [n for n, m in algorithms.items()
                if getattr(m, "ACTION_KIND", "both") in (kind, "both") and kind != "unavailable"
                and getattr(m, "OBSERVATIONS", "any") in ("any", "pixels" if pixels else "vectors")
                and env_id in getattr(m, "ENVS", (env_id,))]
        marked = []
        for n in fits:
            why = getattr(algorithms[n], "CANNOT_LEARN", {}).get(env_id)
            marked.append(n if why is None else f"{n}*")
            if why is not None:
                cannot.append((n, env_id, why))
        note = "(cannot be built here: it downloads a dataset)" if kind == "unavailable" else ""
        print(f"  {env_id:<26} {kind:<12} {', '.join(marked) or note}")
    if cannot:
        print("* cannot learn (measured; `minirl train` still runs them):")
        for n, env_id, why in cannot:
            print(f"  {n} on {env_id}: {why}")
    print("planners (minirl plan): name, the envs it plans in")
    for name, (needs, _) in PLANNERS.items():
        print(f"  {name:<16} {needs} action spaces" if needs != "differentiable"
              else f"  {name:<16} envs with differentiable transitions "
              f"({', '.join(VECTOR_FIELDS)})")
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "plan": cmd_plan,
    "sweep": cmd_sweep,
    "compare": cmd_compare,
    "distill": cmd_distill,
    "list": cmd_list,
}
