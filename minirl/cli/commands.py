"""The commands of ``minirl``: each takes the parsed flags and returns an exit status.

Modules that start JAX's backends (gymnax builds arrays when imported) are imported inside
the commands, after ``minirl.cli.main`` has chosen the device count.
"""

import argparse
import os
import sys

from minirl.cli import UsageError
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


def cmd_train(args: argparse.Namespace, argv: list[str] | None) -> int:
    from minirl import configs, envs, runner
    from minirl.cli import output

    algo = _algorithm(args.algo)
    _check_counts(args, "seeds", "steps", "chunks", "runs_per_program", "stop_after_chunks")
    devices = _devices(args.devices)
    if args.resume:
        if args.env or args.steps or args.set:
            raise UsageError("--resume continues a run as configured; drop --env/--steps/--set")
        out_dir = args.resume
        meta = runner.read_metadata(out_dir)
        if meta["algo"] != args.algo:
            raise ConfigError(f"--resume {out_dir} holds a {meta['algo']} run, not {args.algo}")
        progress = output.Progress(f"resuming {meta['algo']} on {meta['env']} from {out_dir}")
        run = runner.resume(out_dir, algo, *_recorded_env(meta), report=progress,
                            stop_after_chunks=args.stop_after_chunks, devices=devices)
    else:
        if not args.env:
            raise UsageError("--env is required (e.g. --env CartPole-v1); see `minirl list`")
        out_dir = args.out or os.path.join("runs", f"{args.algo}-{args.env}")
        changes, env_changes = configs.parse_sets(algo.Config, args.set)
        env, env_params = envs.make(args.env, **env_changes)
        config = configs.make(algo, args.env, args.steps, changes)
        progress = output.Progress(
            f"training {args.algo} on {args.env}: {config.total_steps:,} env steps × "
            f"{args.seeds} seeds → {out_dir} (compiling, then running)"
        )
        run = runner.train(
            algo, config, env, env_params, seeds=args.seeds, seed=args.seed, out_dir=out_dir,
            env_id=args.env, env_overrides=env_changes, report=progress,
            stop_after_chunks=args.stop_after_chunks, target_chunks=args.chunks,
            runs_per_program=args.runs_per_program, devices=devices,
        )
    if not run.finished:
        print(
            f"stopped after {run.done_chunks}/{len(run.chunks)} chunks; continue with "
            f"`minirl train {args.algo} --resume {out_dir}`",
            file=sys.stderr,
        )
        return 0
    output.print_table(run.summary())
    print(f"wrote {out_dir}/summary.json, metrics.csv, curve.png, {runner.CHECKPOINT}")
    return 0


# ----------------------------------------------------------------------------- eval


def cmd_eval(args: argparse.Namespace, argv: list[str] | None) -> int:
    import numpy as np

    from minirl import runner

    _check_counts(args, "episodes")
    meta = runner.read_metadata(args.dir)
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
                  "runs_per_program")
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
    )
    if result is not None:  # process 0
        output.print_ranking(result)
        print(f"wrote {out_dir}/summary.json, sweep.png")
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
    from minirl.planning.mpc import PLANNERS

    algorithms = _algorithms()
    print("algorithms (minirl train / sweep):")
    for name, module in algorithms.items():
        print(f"  {name:<10} {first_sentence(module.__doc__)}")
    print("environments (gymnax): id, action space, algorithms that fit")
    for env_id in envs.REGISTERED:
        kind = envs.kind(env_id)
        pixels = env_id.endswith(envs.PIXELS)
        # OBSERVATIONS: "pixels" (learns from images only), "vectors" (state vectors only)
        fits = [n for n, m in algorithms.items()
                if getattr(m, "ACTION_KIND", "both") in (kind, "both") and kind != "unavailable"
                and getattr(m, "OBSERVATIONS", "any") in ("any", "pixels" if pixels else "vectors")]
        note = "(cannot be built here: it downloads a dataset)" if kind == "unavailable" else ""
        print(f"  {env_id:<26} {kind:<12} {', '.join(fits) or note}")
    print("planners (minirl plan): name, the envs it plans in")
    for name, (needs, _) in PLANNERS.items():
        print(f"  {name:<16} {needs} action spaces" if needs != "differentiable"
              else f"  {name:<16} envs with differentiable transitions (Pendulum-v1)")
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "plan": cmd_plan,
    "sweep": cmd_sweep,
    "list": cmd_list,
}
