"""The ``minirl`` command line (also ``python -m minirl``).

    minirl train ALGO --env ENV_ID --steps N --seeds S --out DIR [--set field=value ...]
                [--eval-every N --eval-episodes E] [--log tensorboard|wandb]
    minirl train --config FILE.yaml|summary.json [flags that override the file]
    minirl train ALGO --resume DIR
    minirl eval DIR --episodes K [--gif FILE]
    minirl compare DIR [DIR ...] --out compare.png
    minirl plan PLANNER --env ENV_ID --seeds S --out DIR [--set option=value ...]
    minirl sweep ALGO --env ENV_ID --grid lr=1e-4,3e-4 --grid env.gravity=9.8,3.7 --seeds S
    minirl distill RUN_DIR [RUN_DIR ...] --out DIR [--steps N] [--seed S] [--set field=value ...]
    minirl list

``--set env.FIELD=V`` (and ``--grid env.FIELD=V1,V2``) change the environment's parameters.

Runs spread over every CPU core: before JAX starts, the command asks XLA for one host
device per core (``--devices K`` uses K of them); seeds and configurations are grouped into
programs of ``--runs-per-program`` runs that are dispatched to the devices, so the result
does not depend on how many devices there are.

Errors the user can fix (an unknown algorithm, env, field or value; a wrong action-space
type; a corrupt or foreign checkpoint; not enough memory) print one line naming the problem
and exit with status 2. Anything else is a bug and keeps its traceback.
"""

import argparse
import os
import sys

EXIT_USAGE = 2


class UsageError(ValueError):
    """A bad flag or combination of flags."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="override a config field, or an env parameter as env.FIELD=VALUE; repeatable",
    )
    parser.add_argument(
        "--devices", type=int, metavar="K",
        help="use K devices (default: one per CPU core, or every accelerator)",
    )
    parser.add_argument(
        "--runs-per-program", type=int, metavar="K",
        help="runs (seeds × configurations) per compiled program; fixes the bits of every "
        "run whatever the device count (default: ⌈runs / 8⌉)",
    )


def _add_eval_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--eval-every", type=int, metavar="N",
        help="every N env steps (and at the end), play greedy episodes inside the program "
        "(training's bits do not change)",
    )
    parser.add_argument(
        "--eval-episodes", type=int, metavar="E",
        help="greedy episodes per evaluation (default 10; needs --eval-every)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minirl", description="Pure functional RL in JAX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train an agent over several seeds")
    train.add_argument("algo", nargs="?", help="algorithm name (see `minirl list`)")
    train.add_argument(
        "--config", metavar="FILE",
        help="a YAML or JSON run file (algo, env, env_params, config, seeds, first_seed, "
        "steps, ...) or a run's summary.json to reproduce it; flags given override it",
    )
    train.add_argument("--env", help="gymnax environment id, e.g. CartPole-v1")
    train.add_argument("--steps", type=int, help="env steps per seed (config total_steps)")
    train.add_argument("--seeds", type=int, help="number of seeds run in parallel (default 4)")
    train.add_argument("--seed", type=int, help="first PRNG seed (default 0)")
    train.add_argument("--out", help="output directory (default runs/ALGO-ENV)")
    train.add_argument("--resume", metavar="DIR", help="continue the run checkpointed in DIR")
    train.add_argument(
        "--stop-after-chunks", type=int, default=None, metavar="K",
        help="stop (checkpointed) after K chunks; continue later with --resume",
    )
    train.add_argument(
        "--chunks", type=int,
        help="number of jitted chunks (progress and checkpoint points; default 50)",
    )
    train.add_argument(
        "--log", action="append", default=[], metavar="TRACKER",
        help="tensorboard (event files in DIR/tensorboard) or wandb (pip install "
        "'minirl[wandb]'; offline without credentials, WANDB_MODE respected); repeatable",
    )
    _add_eval_flags(train)
    _add_run_flags(train)

    evaluate = commands.add_parser("eval", help="greedy returns of a trained run")
    evaluate.add_argument("dir", help="a run directory written by `minirl train`")
    evaluate.add_argument("--episodes", type=int, default=10)
    evaluate.add_argument("--seed", type=int, default=1234)
    evaluate.add_argument("--gif", metavar="FILE", help="also write one greedy episode as a GIF")

    plan = commands.add_parser("plan", help="closed-loop MPC with a planner, several seeds")
    plan.add_argument("planner", help="random_shooting | cem | mcts | ilqr")
    plan.add_argument("--env", required=True, help="gymnax environment id, e.g. Pendulum-v1")
    plan.add_argument("--seeds", type=int, default=4, help="episodes (seeds) run in parallel")
    plan.add_argument("--seed", type=int, default=0, help="PRNG seed")
    plan.add_argument("--steps", type=int, help="steps of the episode (default: its limit)")
    plan.add_argument("--out", help="output directory (default runs/plan-PLANNER-ENV)")
    plan.add_argument(
        "--set", action="append", default=[], metavar="OPTION=VALUE",
        help="a planner option (e.g. horizon=30) or env.FIELD=VALUE; repeatable",
    )

    sweep = commands.add_parser(
        "sweep", help="a grid of hyperparameters × env parameters × seeds"
    )
    sweep.add_argument("algo", help="algorithm name (see `minirl list`)")
    sweep.add_argument("--env", required=True, help="gymnax environment id, e.g. CartPole-v1")
    sweep.add_argument(
        "--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
        help="values of a numeric config field (alias: lr) or of env.FIELD; repeatable; "
        "all combinations",
    )
    sweep.add_argument(
        "--zip", action="store_true", help="pair the i-th values of every --grid instead"
    )
    sweep.add_argument("--seeds", type=int, default=4, help="seeds per configuration")
    sweep.add_argument("--seed", type=int, default=0, help="first PRNG seed")
    sweep.add_argument("--steps", type=int, help="env steps per run (config total_steps)")
    sweep.add_argument("--out", help="output directory (default runs/sweep-ALGO-ENV)")
    sweep.add_argument("--chunks", type=int, default=20, help="progress points (jitted chunks)")
    sweep.add_argument(
        "--coordinator", metavar="HOST:PORT", help="jax.distributed coordinator (multi-host)"
    )
    sweep.add_argument("--num-processes", type=int, default=1, help="processes in the sweep")
    sweep.add_argument("--process-id", type=int, default=0, help="this process's index")
    _add_eval_flags(sweep)
    _add_run_flags(sweep)

    compare = commands.add_parser(
        "compare", help="runs' curves on one figure; final returns with IQM and 95%% CIs"
    )
    compare.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories")
    compare.add_argument("--out", default="compare.png", help="the figure (default compare.png)")

    distill = commands.add_parser(
        "distill", help="distil trained teachers (one env each) into one student network"
    )
    distill.add_argument(
        "dirs", nargs="+", metavar="RUN_DIR",
        help="run directories written by `minirl train` with discrete actions (dqn, soft_q, "
        "ppo, trpo), one per task",
    )
    distill.add_argument("--out", required=True, help="output directory")
    distill.add_argument("--steps", type=int, help="env steps per task (config total_steps)")
    distill.add_argument("--seed", type=int, default=0, help="PRNG seed of the student")
    distill.add_argument(
        "--episodes", type=int, default=32,
        help="greedy episodes of the teacher, the student and a random policy per task for "
        "the summary (default 32)",
    )
    distill.add_argument(
        "--chunks", type=int, default=50,
        help="number of jitted chunks (progress and checkpoint points; default 50)",
    )
    distill.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="override a distill config field (e.g. temperature=0.01); repeatable",
    )

    commands.add_parser("list", help="algorithms, planners and environments")
    return parser


def request_cpu_devices(count: int | None = None) -> bool:
    """Ask XLA for one CPU device per core (or ``count``) unless JAX is already imported
    (its backends may have started, and then the device count is fixed; JAX has no public
    way to ask) or the user set ``--xla_force_host_platform_device_count``. Returns whether
    it did. The ``minirl`` command calls this before anything imports JAX."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "jax" in sys.modules or "xla_force_host_platform_device_count" in flags:
        return False
    count = count or os.cpu_count() or 1
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    return True


def distributed_main() -> None:
    """``python -c "from minirl.cli import distributed_main; distributed_main()" ARGS``:
    the ``minirl`` command with ``jax.distributed`` initialised before anything imports
    gymnax (``minirl sweep --coordinator`` re-executes itself through this when JAX started
    before the command line was parsed)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    known, _ = parser.parse_known_args(sys.argv[1:])
    from minirl import distributed

    distributed.initialize(known.coordinator, known.num_processes, known.process_id)
    sys.exit(main(sys.argv[1:]))


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"minirl: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.command in ("train", "sweep") and not getattr(args, "coordinator", None):
        request_cpu_devices()  # before anything below imports JAX
    from minirl.checkpoint import CheckpointError
    from minirl.core.config import ConfigError

    try:
        from minirl.cli import commands

        return commands.COMMANDS[args.command](args, argv)
    except (UsageError, ConfigError, CheckpointError) as error:
        print(f"minirl: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "minirl: interrupted; the last checkpoint is intact (continue with --resume)",
            file=sys.stderr,
        )
        return 130
