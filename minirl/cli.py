"""The ``minirl`` command line (also ``python -m minirl``).

    minirl train ALGO --env ENV_ID --steps N --seeds S --out DIR [--set field=value ...]
    minirl train ALGO --resume DIR
    minirl eval DIR --episodes K
    minirl plan PLANNER --env ENV_ID --seeds S --out DIR [--set option=value ...]
    minirl sweep ALGO --env ENV_ID --grid lr=1e-4,3e-4 --grid gamma=0.99,0.995 --seeds S --out DIR
    minirl list

Bad input (unknown algorithm, env, field or value, a wrong action-space type, a corrupt or
foreign checkpoint) prints one line naming the problem and exits with status 2.
"""

import argparse
import os
import sys
import time

import numpy as np

from minirl import checkpoint, runner

EXIT_USAGE = 2


def _algorithms() -> dict:
    from minirl.algos import ALGORITHMS

    return ALGORITHMS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise ValueError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minirl", description="Pure functional RL in JAX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train an agent over several seeds")
    train.add_argument("algo", help="algorithm name (see `minirl list`)")
    train.add_argument("--env", help="gymnax environment id, e.g. CartPole-v1")
    train.add_argument("--steps", type=int, help="env steps per seed (config total_steps)")
    train.add_argument("--seeds", type=int, default=4, help="number of seeds run in parallel")
    train.add_argument("--seed", type=int, default=0, help="first PRNG seed")
    train.add_argument("--out", help="output directory (default runs/ALGO-ENV)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any config field; repeatable",
    )
    train.add_argument("--resume", metavar="DIR", help="continue the run checkpointed in DIR")
    train.add_argument(
        "--stop-after-chunks",
        type=int,
        default=None,
        metavar="K",
        help="stop (checkpointed) after K chunks; continue later with --resume",
    )
    train.add_argument(
        "--chunks",
        type=int,
        default=50,
        help="number of jitted chunks (progress and checkpoint points)",
    )

    evaluate = commands.add_parser("eval", help="greedy returns of a trained run")
    evaluate.add_argument("dir", help="a run directory written by `minirl train`")
    evaluate.add_argument("--episodes", type=int, default=10)
    evaluate.add_argument("--seed", type=int, default=1234)

    plan = commands.add_parser("plan", help="closed-loop MPC with a planner, several seeds")
    plan.add_argument("planner", help="random_shooting | cem | mcts | ilqr")
    plan.add_argument("--env", required=True, help="gymnax environment id, e.g. Pendulum-v1")
    plan.add_argument("--seeds", type=int, default=4, help="episodes (seeds) run in parallel")
    plan.add_argument("--seed", type=int, default=0, help="PRNG seed")
    plan.add_argument("--steps", type=int, help="steps of the episode (default: its limit)")
    plan.add_argument("--out", help="output directory (default runs/plan-PLANNER-ENV)")
    plan.add_argument(
        "--set", action="append", default=[], metavar="OPTION=VALUE",
        help="override a planner option (e.g. horizon=30); repeatable",
    )

    sweep = commands.add_parser(
        "sweep", help="a grid of hyperparameters × seeds as one compiled program"
    )
    sweep.add_argument("algo", help="algorithm name (see `minirl list`)")
    sweep.add_argument("--env", required=True, help="gymnax environment id, e.g. CartPole-v1")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="FIELD=V1,V2,...",
        help="values of a numeric config field (or alias: lr); repeatable; all combinations",
    )
    sweep.add_argument(
        "--zip", action="store_true", help="pair the i-th values of every --grid instead"
    )
    sweep.add_argument("--seeds", type=int, default=4, help="seeds per configuration")
    sweep.add_argument("--seed", type=int, default=0, help="first PRNG seed")
    sweep.add_argument("--steps", type=int, help="env steps per run (config total_steps)")
    sweep.add_argument("--out", help="output directory (default runs/sweep-ALGO-ENV)")
    sweep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field for every run; repeatable",
    )
    sweep.add_argument("--chunks", type=int, default=20, help="progress points (jitted chunks)")
    sweep.add_argument("--devices", type=int, help="use the first K devices (default: all)")
    sweep.add_argument(
        "--coordinator", metavar="HOST:PORT", help="jax.distributed coordinator (multi-host)"
    )
    sweep.add_argument("--num-processes", type=int, default=1, help="processes in the sweep")
    sweep.add_argument("--process-id", type=int, default=0, help="this process's index")

    commands.add_parser("list", help="algorithms, planners and environments")
    return parser


class Progress:
    """A live progress line between chunks (a plain line per chunk when not on a terminal)."""

    def __init__(self, total_steps: int, seeds: int, stream=sys.stderr):
        self.total = total_steps
        self.seeds = seeds
        self.stream = stream
        self.live = stream.isatty()
        self.last_print = 0.0
        self.started = time.perf_counter()

    def __call__(self, run: runner.Run, wall: float) -> None:
        steps = runner.env_steps_done(run)
        elapsed = time.perf_counter() - self.started
        rate = steps * self.seeds / max(wall, 1e-9)
        recent = runner.final_returns(run.history[-max(1, len(run.history) // 10) :], self.seeds)
        with np.errstate(all="ignore"):
            recent_mean = np.nanmean(recent) if not np.all(np.isnan(recent)) else float("nan")
        width = 28
        filled = int(width * steps / max(self.total, 1))
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {steps:>9,}/{self.total:,} env steps/seed"
            f" | {rate:>10,.0f} steps/s | recent return {recent_mean:8.1f}"
            f" | {elapsed:6.1f}s"
        )
        done = steps >= self.total
        if self.live:
            self.stream.write("\r" + line + ("\n" if done else ""))
            self.stream.flush()
        elif done or time.perf_counter() - self.last_print > 5.0:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_print = time.perf_counter()


def print_table(result: dict, stream=None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['algo']} on {result['env']}")
    table.add_column("seed", justify="right")
    table.add_column("final return", justify="right")
    for i, value in enumerate(result["final_returns"]):
        table.add_row(str(result.get("first_seed", 0) + i), f"{value:.1f}")
    table.add_section()
    table.add_row("median", f"{result['median_final_return']:.1f}")
    console = Console(file=stream or sys.stdout, width=100)
    console.print(table)
    console.print(
        f"{result['steps']:,} env steps × {result['seeds']} seeds in "
        f"{result['wall_seconds']:.1f}s ({result['env_steps_per_second']:,.0f} env steps/s)"
    )


def cmd_train(args: argparse.Namespace) -> int:
    algorithms = _algorithms()
    if args.algo not in algorithms:
        raise ValueError(f"unknown algorithm {args.algo!r}; choose one of: {', '.join(algorithms)}")
    algo = algorithms[args.algo]
    if args.resume:
        if args.env or args.steps or args.set:
            raise ValueError("--resume continues a run as configured; drop --env/--steps/--set")
        out_dir = args.resume
        meta = checkpoint.read_metadata(os.path.join(out_dir, runner.CHECKPOINT))
        seeds, total = meta["seeds"], meta["config"]["total_steps"]
        config = None
        print(
            f"resuming {meta['algo']} on {meta['config']['env_id']} from {out_dir}", file=sys.stderr
        )
    else:
        if not args.env:
            raise ValueError("--env is required (e.g. --env CartPole-v1); see `minirl list`")
        if args.seeds < 1:
            raise ValueError(f"--seeds={args.seeds} is out of range; allowed: integers ≥ 1")
        if args.steps is not None and args.steps < 1:
            raise ValueError(f"--steps={args.steps} is out of range; allowed: integers ≥ 1")
        if args.chunks < 1:
            raise ValueError(f"--chunks={args.chunks} is out of range; allowed: integers ≥ 1")
        overrides = runner.parse_sets(algo.Config, args.set)
        config = runner.make_config(algo, args.env, args.steps, overrides)
        out_dir = args.out or os.path.join("runs", f"{args.algo}-{args.env}")
        existing = os.path.join(out_dir, runner.CHECKPOINT)
        if os.path.exists(existing):
            raise ValueError(
                f"{out_dir} already holds a run; continue it with --resume {out_dir} "
                "or choose another --out"
            )
        seeds, total = args.seeds, config.total_steps
        print(
            f"training {args.algo} on {args.env}: {total:,} env steps × {seeds} seeds → {out_dir}",
            file=sys.stderr,
        )
    run = runner.train(
        args.algo,
        algorithms,
        out_dir,
        config=config,
        seeds=seeds,
        seed=args.seed,
        resume=bool(args.resume),
        stop_after_chunks=args.stop_after_chunks,
        report=Progress(total, seeds),
        target_chunks=args.chunks,
    )
    if run.done_chunks < len(run.chunks):
        print(
            f"stopped after {run.done_chunks}/{len(run.chunks)} chunks; continue with "
            f"`minirl train {args.algo} --resume {out_dir}`",
            file=sys.stderr,
        )
        return 0
    result = runner.summary(run)
    result["first_seed"] = run.seed
    print_table(result)
    print(f"wrote {out_dir}/summary.json, metrics.csv, curve.png, {runner.CHECKPOINT}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise ValueError(f"--episodes={args.episodes} is out of range; allowed: integers ≥ 1")
    run, state = runner.load_run(args.dir, _algorithms())
    algo = _algorithms()[run.algo_name]
    returns = runner.evaluate(algo, run.config, state, args.episodes, args.seed)
    print(f"greedy returns over {args.episodes} episodes, {run.algo_name} on {run.config.env_id}:")
    for s, row in enumerate(returns):
        print(
            f"  seed {run.seed + s}: mean {row.mean():.1f}  "
            f"(min {row.min():.1f}, max {row.max():.1f})"
        )
    print(f"  median over seeds: {np.median(returns.mean(axis=1)):.1f}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from minirl.planning import mpc

    if args.seeds < 1:
        raise ValueError(f"--seeds={args.seeds} is out of range; allowed: integers ≥ 1")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps={args.steps} is out of range; allowed: integers ≥ 1")
    options = runner.parse_options(args.set)
    out_dir = args.out or os.path.join("runs", f"plan-{args.planner}-{args.env}")
    print(
        f"planning with {args.planner} on {args.env}: {args.seeds} seeds → {out_dir} "
        "(one jitted program; compiling, then running)",
        file=sys.stderr,
    )
    result = mpc.run_planner(args.planner, args.env, args.seeds, args.steps, options, args.seed)
    summary_data = runner.write_plan_outputs(result, out_dir)
    print_table(summary_data)
    print(f"wrote {out_dir}/summary.json, metrics.csv, curve.png")
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    import gymnax

    from minirl.core import rollout

    algorithms = _algorithms()
    print("algorithms:")
    for name, module in algorithms.items():
        doc = (module.__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<8} {doc}")
    print("environments (gymnax):")
    for env_id in gymnax.registered_envs:
        try:
            kind = rollout.action_kind(env_id)
        except Exception:  # an env that cannot be built here is listed without its type
            kind = "?"
        fits = [n for n, m in algorithms.items()
                if getattr(m, "ACTION_KIND", "discrete") in (kind, "both")]
        print(f"  {env_id:<26} {kind:<10} {', '.join(fits)}")
    from minirl.planning.mpc import PLANNERS

    print("planners (minirl plan):")
    for name, (env_ids, _) in PLANNERS.items():
        print(f"  {name:<16} {', '.join(env_ids)}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    for name, low in (("seeds", 1), ("chunks", 1), ("num_processes", 1), ("process_id", 0)):
        if getattr(args, name) < low:
            flag, value = "--" + name.replace("_", "-"), getattr(args, name)
            raise ValueError(f"{flag}={value} is out of range; allowed: integers ≥ {low}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps={args.steps} is out of range; allowed: integers ≥ 1")
    if args.process_id >= args.num_processes:
        raise ValueError(f"--process-id={args.process_id} must be < --num-processes")
    if not args.grid:
        raise ValueError("give at least one --grid FIELD=V1,V2,... (e.g. --grid lr=1e-4,1e-3)")
    from minirl import parallel

    if args.coordinator:  # jax.distributed must start before JAX's backends (gymnax's import)
        try:
            parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
        except RuntimeError:
            if build_parser().parse_args(sys.argv[1:]) != args:
                raise ValueError(
                    "--coordinator needs a fresh process: run `minirl sweep ...` as a command"
                ) from None
            parallel.reexec_distributed(sys.argv[1:])  # does not return
    elif args.num_processes > 1:
        raise ValueError("--num-processes > 1 needs --coordinator HOST:PORT")
    import jax

    algorithms = _algorithms()
    if args.algo not in algorithms:
        raise ValueError(f"unknown algorithm {args.algo!r}; choose one of: {', '.join(algorithms)}")
    algo = algorithms[args.algo]
    values = parallel.parse_grid(algo.Config, args.grid)
    overrides = runner.parse_sets(algo.Config, args.set)
    for name in values:
        if name in overrides:
            raise ValueError(f"{name} is given both in --grid and in --set")
    base = runner.make_config(algo, args.env, args.steps, overrides)
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if args.devices is not None:
        if not 1 <= args.devices <= len(devices):
            raise ValueError(f"--devices={args.devices} is out of range; 1 … {len(devices)} here")
        devices = devices[: args.devices]
    mesh = parallel.make_mesh(devices)
    sizes = [len(v) for v in values.values()]
    if args.zip and len(set(sizes)) > 1:
        raise ValueError(f"--zip needs the same number of values in every --grid; got {sizes}")
    assignments = parallel.zip_values(**values) if args.zip else parallel.grid(**values)
    num_configs = len(parallel.configs_for(base, assignments))  # each validated here
    runs = num_configs * args.seeds
    out_dir = args.out or os.path.join("runs", f"sweep-{args.algo}-{args.env}")
    lead = jax.process_index() == 0
    if lead:
        print(
            f"sweeping {args.algo} on {args.env}: {num_configs} configurations × {args.seeds} "
            f"seeds = {runs} runs × {base.total_steps:,} env steps on {mesh.devices.size} "
            f"device(s), {jax.process_count()} process(es) → {out_dir} (one program per chunk "
            "length; compiling, then running)",
            file=sys.stderr,
        )
    stream = sys.stderr
    live = stream.isatty()
    last = [0.0]

    def progress(run: "parallel.SweepRun", wall: float) -> None:
        if not lead:
            return
        steps = int(run.history[-1]["env_steps"][0]) if run.rows.size else 0
        recent = runner.final_returns(run.history[-max(1, len(run.history) // 10) :], len(run.rows))
        with np.errstate(all="ignore"):
            recent_mean = np.nanmean(recent) if not np.all(np.isnan(recent)) else float("nan")
        filled = int(28 * steps / max(base.total_steps, 1))
        line = (
            f"[{'#' * filled}{'.' * (28 - filled)}] {steps:>9,}/{base.total_steps:,} env steps/run"
            f" | {steps * runs / max(wall, 1e-9):>10,.0f} steps/s | recent return "
            f"{recent_mean:8.1f} | {wall:6.1f}s"
        )
        done = steps >= base.total_steps
        if live:
            stream.write("\r" + line + ("\n" if done else ""))
            stream.flush()
        elif done or time.perf_counter() - last[0] > 5.0:
            stream.write(line + "\n")
            stream.flush()
            last[0] = time.perf_counter()

    result = parallel.run_sweep(
        args.algo,
        algo,
        base,
        values,
        seeds=args.seeds,
        seed=args.seed,
        zipped=args.zip,
        target_chunks=args.chunks,
        mesh=mesh,
        out_dir=out_dir,
        report=progress,
    )
    if lead:
        parallel.write_sweep_outputs(result, out_dir)
        parallel.print_ranking(result)
        print(f"wrote {out_dir}/summary.json, sweep.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        commands = {"train": cmd_train, "eval": cmd_eval, "plan": cmd_plan, "list": cmd_list}
        commands["sweep"] = cmd_sweep
        return commands[args.command](args)
    except (ValueError, checkpoint.CheckpointError) as error:
        print(f"minirl: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "minirl: interrupted; the last checkpoint is intact (continue with --resume)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
