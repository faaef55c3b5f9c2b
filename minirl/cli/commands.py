"""The commands of ``minirl``: each takes the parsed flags and returns an exit status.

Modules that start JAX's backends (gymnax builds arrays when imported) are imported inside
the commands, after ``minirl.cli.main`` has chosen the device count.
"""

import argparse
import dataclasses
import os
import sys
from typing import Any, get_args, get_origin

from minirl.cli import UsageError
from minirl.core.config import ConfigError

ENV_PREFIX = "env."


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


def parse_value(config_cls: type, name: str, text: str) -> Any:
    """Parse ``text`` as the type of field ``name`` of ``config_cls``."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    if name not in fields:
        raise ConfigError(
            f"unknown field {name!r} for {config_cls.__module__.rsplit('.', 1)[-1]}; "
            f"fields: {', '.join(fields)} (env parameters: {ENV_PREFIX}FIELD)"
        )
    annotation = fields[name].type
    try:
        if annotation is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
        if get_origin(annotation) is tuple:
            item = get_args(annotation)[0]
            parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
            return tuple(item(p) for p in parts)
        return text
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a valid {_type_name(annotation)}") from None


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is tuple:
        return "comma-separated list of " + get_args(annotation)[0].__name__
    return getattr(annotation, "__name__", str(annotation))


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None


def parse_sets(config_cls: type | None, assignments: list[str]) -> tuple[dict, dict]:
    """``["lr=1e-3", "env.gravity=3.7"]`` → (typed config overrides, env overrides)."""
    overrides, env_overrides = {}, {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name:
            raise UsageError(f"--set {assignment!r} must look like field=value")
        if name.startswith(ENV_PREFIX):
            env_overrides[name[len(ENV_PREFIX):]] = _number(name, text)
        elif config_cls is None:
            overrides[name] = _number(name, text)
        else:
            overrides[name] = parse_value(config_cls, name, text)
    return overrides, env_overrides


def parse_grid(config_cls: type, assignments: list[str]) -> dict[str, list[Any]]:
    """``["lr=1e-4,3e-4", "env.gravity=9.8,3.7"]`` → ``{"learning_rate": [...],
    "env.gravity": [...]}``; unknown or static fields raise a one-line error."""
    from minirl import sweep

    values: dict[str, list[Any]] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise UsageError(f"--grid {assignment!r} must look like field=value1,value2,...")
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if name.startswith(ENV_PREFIX):
            field = name
            parsed = [_number(name, part) for part in parts]
        else:
            field = sweep.sweepable_field(config_cls, name)
            parsed = [parse_value(config_cls, field, part) for part in parts]
        if field in values:
            raise UsageError(f"--grid {field} is given twice")
        values[field] = parsed
    return values


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


# ----------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace, argv: list[str] | None) -> int:
    from minirl import checkpoint, envs, runner
    from minirl.cli import output

    algo = _algorithm(args.algo)
    _check_counts(args, "seeds", "steps", "chunks", "runs_per_program", "stop_after_chunks")
    devices = _devices(args.devices)
    if args.resume:
        if args.env or args.steps or args.set:
            raise UsageError("--resume continues a run as configured; drop --env/--steps/--set")
        out_dir = args.resume
        meta = checkpoint.read_metadata(os.path.join(out_dir, runner.CHECKPOINT))
        seeds, total = meta.get("seeds", 1), meta.get("config", {}).get("total_steps", 0)
        config = env_id = env_overrides = None
        print(f"resuming {meta.get('algo')} on {meta.get('env')} from {out_dir}", file=sys.stderr)
    else:
        if not args.env:
            raise UsageError("--env is required (e.g. --env CartPole-v1); see `minirl list`")
        env_id = args.env
        overrides, env_overrides = parse_sets(algo.Config, args.set)
        config = runner.make_config(algo, env_id, args.steps, overrides)
        env, env_params = envs.make(env_id, **env_overrides)
        env_overrides = {name: getattr(env_params, name) for name in env_overrides}  # typed
        runner.check_compatible(algo, args.algo, env, env_params)
        runner.check_memory(algo, config, env, env_params, args.seeds)
        out_dir = args.out or os.path.join("runs", f"{args.algo}-{env_id}")
        if os.path.exists(os.path.join(out_dir, runner.CHECKPOINT)):
            raise UsageError(
                f"{out_dir} already holds a run; continue it with --resume {out_dir} "
                "or choose another --out"
            )
        seeds, total = args.seeds, config.total_steps
        print(
            f"training {args.algo} on {env_id}: {total:,} env steps × {seeds} seeds → {out_dir}"
            " (compiling, then running)",
            file=sys.stderr,
        )
    run = runner.train(
        args.algo,
        _algorithms(),
        out_dir,
        config=config,
        env_id=env_id,
        env_overrides=env_overrides,
        seeds=seeds,
        seed=args.seed,
        resume=bool(args.resume),
        stop_after_chunks=args.stop_after_chunks,
        report=output.Progress(total, seeds),
        target_chunks=args.chunks,
        runs_per_program=args.runs_per_program,
        devices=devices,
    )
    if not run.finished:
        print(
            f"stopped after {run.done_chunks}/{len(run.chunks)} chunks; continue with "
            f"`minirl train {args.algo} --resume {out_dir}`",
            file=sys.stderr,
        )
        return 0
    result = output.write_run_outputs(run, out_dir)
    output.print_table(result)
    print(f"wrote {out_dir}/summary.json, metrics.csv, curve.png, {runner.CHECKPOINT}")
    return 0


# ----------------------------------------------------------------------------- eval


def cmd_eval(args: argparse.Namespace, argv: list[str] | None) -> int:
    import numpy as np

    from minirl import envs, runner

    _check_counts(args, "episodes")
    run, state = runner.load_run(args.dir, _algorithms())
    algo = _algorithms()[run.algo_name]
    env, env_params = envs.make(run.env_id, **run.env_overrides)
    params = state.learner.params
    returns = runner.evaluate(algo, run.config, env, env_params, params, args.episodes,
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

        frames = animation.write_gif(algo, run.config, env, env_params, params, run.env_id,
                                     args.gif, seed=args.seed)
        print(f"wrote {args.gif} ({frames} frames, seed {run.seed}'s greedy episode)")
    return 0


# ----------------------------------------------------------------------------- plan


def cmd_plan(args: argparse.Namespace, argv: list[str] | None) -> int:
    from minirl import envs
    from minirl.cli import output
    from minirl.planning import mpc

    _check_counts(args, "seeds", "steps")
    options, env_overrides = parse_sets(None, args.set)
    env, env_params = envs.make(args.env, **env_overrides)
    out_dir = args.out or os.path.join("runs", f"plan-{args.planner}-{args.env}")
    print(
        f"planning with {args.planner} on {args.env}: {args.seeds} seeds → {out_dir} "
        "(one jitted program; compiling, then running)",
        file=sys.stderr,
    )
    result = mpc.run_planner(args.planner, env, env_params, args.seeds, args.steps, options,
                             args.seed)
    result["env"] = args.env
    result["env_overrides"] = env_overrides
    summary = output.write_plan_outputs(result, out_dir)
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
    if args.coordinator:
        from minirl import distributed

        try:  # jax.distributed must start before JAX's backends (gymnax's import)
            distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        except RuntimeError:
            if argv is not None:
                raise UsageError(
                    "--coordinator needs a fresh process: run `minirl sweep ...` as a command"
                ) from None
            _reexec_distributed(sys.argv[1:])  # does not return
    elif args.num_processes > 1:
        raise UsageError("--num-processes > 1 needs --coordinator HOST:PORT")

    import jax

    from minirl import envs, runner, sweep
    from minirl.cli import output

    algo = _algorithm(args.algo)
    values = parse_grid(algo.Config, args.grid)
    overrides, env_overrides = parse_sets(algo.Config, args.set)
    for name in values:
        if name in overrides or (name.startswith(ENV_PREFIX) and
                                 name[len(ENV_PREFIX):] in env_overrides):
            raise UsageError(f"{name} is given both in --grid and in --set")
    base = runner.make_config(algo, args.env, args.steps, overrides)
    env, env_params = envs.make(args.env, **env_overrides)
    env_overrides = {name: getattr(env_params, name) for name in env_overrides}  # typed
    runner.check_compatible(algo, args.algo, env, env_params)
    devices = _devices(args.devices)
    sizes = [len(v) for v in values.values()]
    if args.zip and len(set(sizes)) > 1:
        raise UsageError(f"--zip needs the same number of values in every --grid; got {sizes}")
    assignments = sweep.zip_values(**values) if args.zip else sweep.grid(**values)
    runs = sweep.expand(base, env, env_params, assignments, args.seeds, args.seed)
    k = args.runs_per_program or sweep.default_runs_per_program(runs.num_runs)
    local_runs = -(-runs.num_runs // (k * jax.process_count())) * k
    runner.check_memory(algo, base, env, env_params, min(local_runs, runs.num_runs))
    out_dir = args.out or os.path.join("runs", f"sweep-{args.algo}-{args.env}")
    lead = jax.process_index() == 0
    if lead:
        print(
            f"sweeping {args.algo} on {args.env}: {len(assignments)} configurations × "
            f"{args.seeds} seeds = {runs.num_runs} runs × {base.total_steps:,} env steps, "
            f"{k} runs per program on {len(devices)} device(s) × {jax.process_count()} "
            f"process(es) → {out_dir} (compiling, then running)",
            file=sys.stderr,
        )
    result = output.run_sweep(
        args.algo, algo, base, env, env_params, args.env, values, assignments, runs,
        seeds=args.seeds, seed=args.seed, zipped=args.zip, target_chunks=args.chunks,
        runs_per_program=k, devices=devices, out_dir=out_dir, lead=lead,
        env_overrides=env_overrides,
    )
    if lead:
        output.write_sweep_outputs(result, out_dir)
        output.print_ranking(result)
        print(f"wrote {out_dir}/summary.json, sweep.png")
    return 0


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
