"""Every core: what ``minirl train --seeds S`` gains from spreading its runs over all CPU
cores as host devices, against one device. DQN at 4 seeds and PPO at 16 seeds with the
shared configs of bench_dqn.py and bench_ppo.py, trained through the engine the command
line uses (``minirl.runner.train``: ``minirl.sweep``'s K-wide programs with the default
K = ⌈S/8⌉, in chunks, a checkpoint after every chunk).

    python benchmarks/bench_cores.py            # full run → RESULTS.md (cores section)
    python benchmarks/bench_cores.py --quick    # tiny budgets, a smoke test; writes to
                                                # $TMPDIR/minirl-bench-quick/

The command line asks XLA for one CPU device per core before JAX starts
(``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>``); JAX reads the flag at
start-up, so each device count runs in its own worker process (this script with
``--worker``). In each worker, ``runner.train`` runs twice in a fresh output directory:
the first call compiles (one executable per device used for ``init`` and for the chunk) and
trains, the second finds every program compiled. Env steps/s *including compile* = env
steps / first call; *excluding compile* = env steps / second call; both include what the
command line does besides computing (host summaries and a checkpoint after every chunk).
For reference, the 1-device worker also times the benchmarks' own way of running seeds:
one ``jax.jit(jax.vmap(train))`` program over all S seeds (compiled ahead, no chunks, no
checkpoints).

The same worker gives bench_dqn.py, bench_ppo.py and bench_sac.py their "minirl, CLI
default (every core)" column: :func:`cli_default` runs it with one CPU device per core on
that benchmark's own config and seed counts (``--bench NAME``).
"""

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

ENV_ID = "CartPole-v1"
CASES = (("dqn", 4), ("ppo", 16))  # (algorithm, seeds)
MODES = {
    # env steps per seed (the bench_dqn / bench_ppo budgets; quick: their quick budgets)
    "full": dict(dqn=100_000, ppo=64 * 4096),
    "quick": dict(dqn=3_000, ppo=2 * 4096),
}


def bench_hp(name: str, steps: int) -> dict:
    """The shared hyperparameters of bench_<name>.py (dqn, ppo, sac) at ``steps``."""
    return dict(importlib.import_module(f"bench_{name}").SHARED, total_steps=steps)


def algo_config(name: str, hp: dict):
    """minirl's config of bench_<name>.py for the hyperparameters ``hp`` (its ``SHARED``,
    with the run's budget)."""
    return importlib.import_module(f"bench_{name}").minirl_config(hp)


def train_twice(name: str, hp: dict, seeds: int, eval_episodes: int = 0) -> dict:
    """``minirl train --seeds S`` as the command line runs it: ``runner.train`` on this
    process's devices, in a fresh output directory (checkpoints, summary files), twice; the
    first call compiles, the second finds every program compiled. With ``eval_episodes``,
    each seed's greedy policy after training plays that many episodes (``runner.evaluate``
    with seed 1, as the benchmarks evaluate their single-program runs)."""
    import jax
    import numpy as np

    from minirl import envs, results, runner
    from minirl.algos import ALGORITHMS

    config = algo_config(name, hp)
    algo = ALGORITHMS[name]
    env_id = hp.get("env_id", ENV_ID)
    walls = []
    for attempt in ("first", "second"):
        with tempfile.TemporaryDirectory(prefix="minirl-bench-cores-") as out_dir:
            start = time.perf_counter()
            run = runner.train(algo, config, *envs.make(env_id), seeds=seeds,
                               out_dir=out_dir, env_id=env_id)
            walls.append(time.perf_counter() - start)
        print(f"  devices={jax.device_count()} {name} {seeds} seeds, {attempt} call: "
              f"{walls[-1]:.1f} s", file=sys.stderr, flush=True)
    steps = seeds * results.env_steps_done(run.history)
    returns = results.final_returns(run.history, seeds)
    row = dict(
        algo=name, seeds=seeds, engine="runner.train", k=run.runs_per_program,
        programs=math.ceil(seeds / run.runs_per_program), devices_used=run.devices,
        chunks=len(run.chunks), env_steps=steps, first_seconds=walls[0],
        seconds=walls[1], compile_seconds=max(walls[0] - walls[1], 0.0),
        rate_with_compile=steps / walls[0], rate=steps / walls[1],
        final_return=float(np.nanmean(returns)),
    )
    if eval_episodes:
        greedy = runner.evaluate(algo, config, *envs.make(env_id), run.state.learner.params,
                                 eval_episodes, seed=1)
        row["greedy_return_per_seed"] = [float(r) for r in np.mean(greedy, axis=1)]
    return row


def cli_default(name: str, hp: dict, seeds_list: list[int], eval_episodes: int = 0,
                devices: int | None = None) -> list[dict]:
    """What ``minirl train --seeds S`` gives by default, for bench_<name>.py: a worker
    process with one CPU device per core (``devices``: another count), which runs
    :func:`train_twice` at each seed count on ``hp``. One row per seed count (an
    ``error`` row for each if the worker fails)."""
    from bench_sweep import spawn

    devices = devices or os.cpu_count() or 1
    result = spawn(Path(__file__), devices, [
        "--bench", name, "--hp-json", json.dumps(hp), "--seeds-list",
        ",".join(str(s) for s in seeds_list), "--eval-episodes", str(eval_episodes),
    ])
    if "error" in result:
        return [dict(seeds=s, devices=devices, error=result["error"]) for s in seeds_list]
    return [dict(row, devices=result["devices"]) for row in result["rows"]]


def bench_worker(args: argparse.Namespace) -> None:
    """:func:`cli_default`'s side: print one JSON line."""
    import jax

    hp = json.loads(args.hp_json)
    rows = [train_twice(args.bench, hp, int(seeds), args.eval_episodes)
            for seeds in args.seeds_list.split(",") if seeds]
    print(json.dumps(dict(devices=jax.device_count(), platform=jax.devices()[0].platform,
                          rows=rows)))


def worker(args: argparse.Namespace) -> None:
    """Measure in this process (XLA_FLAGS set by the parent); print one JSON line."""
    import jax
    import numpy as np

    from minirl import envs
    from minirl.algos import ALGORITHMS

    devices = jax.device_count()
    rows = []
    for name, seeds in CASES:
        if name not in args.algos:
            continue
        hp = bench_hp(name, args.steps[name])
        config = algo_config(name, hp)
        algo = ALGORITHMS[name]
        rows.append(train_twice(name, hp, seeds))
        if args.reference:
            env, env_params = envs.make(ENV_ID)
            keys = jax.random.split(jax.random.PRNGKey(0), seeds)
            train = jax.jit(jax.vmap(algo.train, in_axes=(0, None, None, None)),
                            static_argnums=2)
            start = time.perf_counter()
            compiled = train.lower(keys, config, env, env_params).compile()
            compile_s = time.perf_counter() - start
            start = time.perf_counter()
            state, _ = compiled(keys, config, env_params)
            jax.block_until_ready(state)
            run_s = time.perf_counter() - start
            steps = int(np.sum(np.asarray(state.env_steps)))
            rows.append(dict(
                algo=name, seeds=seeds, engine="jit(vmap(train))", k=seeds, programs=1,
                devices_used=1, chunks=1, env_steps=steps, first_seconds=compile_s + run_s,
                seconds=run_s, compile_seconds=compile_s,
                rate_with_compile=steps / (compile_s + run_s), rate=steps / run_s,
                final_return=None,
            ))
            print(f"  devices={devices} {name} {seeds} seeds, one jit(vmap) program: "
                  f"{run_s:.1f} s + {compile_s:.1f} s compile", file=sys.stderr, flush=True)
    print(json.dumps(dict(devices=devices, platform=jax.devices()[0].platform, rows=rows)))


def render(report: dict) -> str:
    out = ["# Every core: `minirl train --seeds S` on 1 device and on all cores", ""]
    if report["quick"]:
        out += ["> **Quick mode (smoke test).** Tiny budgets, numbers are noise: do not quote "
                "them.", ""]
    out += [
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; {report['nproc']} CPU cores, Python "
        f"{platform.python_version()}; load average {report['load_start']} at the start, "
        f"{report['load_end']} at the end; this run took {report['wall_s']:.0f} s",
        f"- DQN: bench_dqn.py's shared config, {report['steps']['dqn']:,} env steps per seed; "
        f"PPO: bench_ppo.py's shared config, {report['steps']['ppo']:,} env steps per seed; "
        f"{ENV_ID}",
        "",
        "Engine `runner.train` is what `minirl train` runs: the seeds cut into programs of "
        "K = ⌈S/8⌉ runs, dispatched round-robin to the devices, trained in chunks with host "
        "summaries and a checkpoint after every chunk. *with compile*: env steps / the first "
        "call; *without*: env steps / a second call that finds every program compiled; "
        "*compile* = the difference. The `jit(vmap(train))` rows are the benchmarks' own "
        "single program over all seeds on one device (compiled ahead; no chunks, no "
        "checkpoints), for reference.",
        "",
        "| algorithm | seeds | devices | engine | K × programs | chunks | env steps/s "
        "without compile | with compile | compile (s) | vs 1 device |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = {}
    for devices, result in report["workers"].items():
        if "error" in result:
            continue
        for r in result["rows"]:
            if r["engine"] == "runner.train" and devices == min(report["workers"]):
                base[r["algo"]] = r["rate"]
    for devices, result in report["workers"].items():
        if "error" in result:
            out.append(f"| | | {devices} | failed: {result['error']} | | | | | | |")
            continue
        for r in result["rows"]:
            ratio = "—"
            if r["engine"] == "runner.train" and base.get(r["algo"]):
                ratio = f"{r['rate'] / base[r['algo']]:.2f}×"
            out.append(
                f"| {r['algo']} | {r['seeds']} | {devices} | `{r['engine']}` "
                f"| {r['k']} × {r['programs']} | {r['chunks']} | {r['rate']:,.0f} "
                f"| {r['rate_with_compile']:,.0f} | {r['compile_seconds']:.1f} | {ratio} |"
            )
    out.append("")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps-json", help=argparse.SUPPRESS)
    parser.add_argument("--algos", default="dqn,ppo", help="comma-separated: dqn,ppo")
    parser.add_argument("--devices", help="comma-separated device counts (default: 1 and "
                                          "every core)")
    parser.add_argument("--out", help="report path (default: RESULTS.md's cores section)")
    parser.add_argument("--bench", help=argparse.SUPPRESS)  # cli_default's worker: dqn|ppo|sac
    parser.add_argument("--hp-json", help=argparse.SUPPRESS)
    parser.add_argument("--seeds-list", help=argparse.SUPPRESS)
    parser.add_argument("--eval-episodes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    if args.worker and args.bench:
        bench_worker(args)
        return 0
    if args.worker:
        args.steps = json.loads(args.steps_json)
        worker(args)
        return 0

    from bench_sweep import spawn

    steps = MODES["quick" if args.quick else "full"]
    counts = ([int(d) for d in args.devices.split(",")] if args.devices
              else sorted({1, os.cpu_count() or 1}))
    if args.out:
        out = Path(args.out)
    elif args.quick:
        out = Path(tempfile.gettempdir()) / "minirl-bench-quick" / "RESULTS_cores.md"
    else:
        out = HERE / "RESULTS.md"  # its "cores" section (benchmarks/results.py)
    started = time.perf_counter()
    report = dict(
        quick=args.quick, steps=steps, nproc=os.cpu_count(),
        command=shlex.join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        load_start=" ".join(f"{x:.2f}" for x in os.getloadavg()), workers={},
    )
    for devices in counts:
        print(f"{devices} CPU device(s):", file=sys.stderr)
        extra = ["--reference"] if devices == min(counts) else []
        report["workers"][devices] = spawn(
            Path(__file__), devices,
            ["--steps-json", json.dumps(steps), "--algos", ",".join(args.algos), *extra],
        )
    report["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report["wall_s"] = time.perf_counter() - started
    text = render(report)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out == HERE / "RESULTS.md":
        from results import update_section

        update_section("cores", text, out)
        raw = HERE / "RESULTS_cores.json"
    else:
        out.write_text(text)
        raw = out.with_suffix(".json")
    raw.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
