"""Sweep throughput: aggregate env steps/s of a PPO sweep against the number of runs
(configurations × seeds), on the default device and on 1 and 2 forced CPU devices.

    python benchmarks/bench_sweep.py            # full run → RESULTS.md (sweep section)
    python benchmarks/bench_sweep.py --quick    # tiny budgets, a smoke test (~1-2 min);
                                                # writes to $TMPDIR/minirl-bench-quick/

Each measurement is one ``minirl.parallel.sweep`` program (``jax.vmap`` of ``ppo.train``
over the runs, split over the device mesh with ``jax.jit`` + ``NamedSharding``), compiled
ahead (``.lower().compile()``, compile time reported separately) and then timed over whole
training runs. The runs are a learning-rate grid × seeds: every run has its own numeric
hyperparameters, as in a real sweep. Device counts are set with
``XLA_FLAGS=--xla_force_host_platform_device_count=D``, which JAX reads at start-up, so each
device count runs in its own worker process (this script with ``--worker``).
"""

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# A small PPO agent per run: 4 CartPole envs × 32 steps per iteration.
PPO = dict(
    env_id="CartPole-v1",
    num_envs=4,
    rollout_steps=32,
    num_epochs=2,
    num_minibatches=2,
    hidden=(32, 32),
)


def worker(args: argparse.Namespace) -> None:
    """Measure in this process (XLA_FLAGS already set by the parent); print one JSON line."""
    import jax
    import numpy as np

    from minirl import parallel

    try:
        from minirl.algos import ppo as algo

        name = "ppo"
        base = algo.Config(**PPO, total_steps=args.steps)
    except ImportError:  # fall back to DQN where PPO is not available
        from minirl.algos import dqn as algo

        name = "dqn"
        base = algo.Config(
            env_id="CartPole-v1", total_steps=args.steps, num_envs=4, hidden=(32, 32),
            buffer_size=2_000, learning_starts=200, batch_size=32,
        )
    mesh = parallel.make_mesh()
    rows = []
    for runs in args.runs:
        seeds = min(runs, 4)
        lrs = np.geomspace(1e-4, 3e-3, max(1, runs // seeds)).tolist()
        configs = parallel.configs_for(base, parallel.grid(lr=lrs))
        keys, batched, _ = parallel.expand(configs, seeds)
        program, inputs = parallel.prepare(algo.train, keys, batched, mesh)
        start = time.perf_counter()
        compiled = program.lower(*inputs).compile()
        compile_s = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*inputs))
            times.append(time.perf_counter() - start)
        wall = float(np.median(times))
        env_steps = runs * base.num_iterations * base.num_envs * base.rollout_steps
        rows.append(
            dict(
                runs=runs,
                padded_runs=parallel.padded_size(runs, mesh),
                env_steps=env_steps,
                seconds=wall,
                compile_seconds=compile_s,
                env_steps_per_second=env_steps / wall,
            )
        )
        print(f"  {name} devices={jax.device_count()} runs={runs}: "
              f"{env_steps / wall:,.0f} env steps/s", file=sys.stderr, flush=True)
    print(json.dumps(dict(algo=name, devices=jax.device_count(),
                          platform=jax.devices()[0].platform, rows=rows)))


def run_worker(devices: int | None, runs: list[int], steps: int, repeats: int) -> dict:
    env = dict(os.environ)
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        env["JAX_PLATFORMS"] = "cpu"
    command = [
        sys.executable, __file__, "--worker", "--steps", str(steps), "--repeats", str(repeats),
        "--runs", ",".join(map(str, runs)),
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    sys.stderr.write(proc.stderr[-2000:] if proc.returncode else proc.stderr)
    if proc.returncode:
        return dict(error=proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(result: dict, reference: dict | None = None) -> list[str]:
    if "error" in result:
        return [f"failed: {result['error']}"]
    lines = [
        "| runs (configs × seeds) | env steps | wall (s) | compile (s) | env steps/s "
        "| per run | vs 1 run |" + (" vs 1 device |" if reference else ""),
        "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if reference else ""),
    ]
    first = result["rows"][0]["env_steps_per_second"] / result["rows"][0]["runs"]
    ref = {r["runs"]: r["env_steps_per_second"] for r in (reference or {}).get("rows", [])}
    for r in result["rows"]:
        rate = r["env_steps_per_second"]
        line = (
            f"| {r['runs']}" + (f" (padded to {r['padded_runs']})" if r["padded_runs"] != r["runs"]
                                else "")
            + f" | {r['env_steps']:,} | {r['seconds']:.2f} | {r['compile_seconds']:.1f} "
            f"| {rate:,.0f} | {rate / r['runs']:,.0f} | {rate / first:.1f}× |"
        )
        if reference:
            line += f" {rate / ref[r['runs']]:.2f}× |" if r["runs"] in ref else " – |"
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=str, help="comma-separated run counts")
    parser.add_argument("--steps", type=int, help="env steps per run")
    parser.add_argument("--repeats", type=int, help="timed repeats (median)")
    parser.add_argument("--out", help="report path (default: RESULTS.md's sweep section)")
    args = parser.parse_args()
    if args.worker:
        args.runs = [int(r) for r in args.runs.split(",")]
        worker(args)
        return

    quick = args.quick
    runs = [int(r) for r in args.runs.split(",")] if args.runs else (
        [1, 4, 16] if quick else [1, 4, 16, 64, 256, 1024]
    )
    device_runs = runs
    steps = args.steps or (4 * 32 * 4 if quick else 4 * 32 * 40)
    repeats = args.repeats or (1 if quick else 3)
    if args.out:
        out = Path(args.out)
    elif quick:
        out = Path(tempfile.gettempdir()) / "minirl-bench-quick" / "RESULTS_sweep.md"
    else:
        out = HERE / "RESULTS.md"  # its "sweep" section (benchmarks/results.py)
    command = "python benchmarks/bench_sweep.py " + " ".join(sys.argv[1:])

    print("default device:", file=sys.stderr)
    default = run_worker(None, runs, steps, repeats)
    forced = {}
    for devices in (1, 2):
        print(f"{devices} forced CPU device(s):", file=sys.stderr)
        forced[devices] = run_worker(devices, device_runs, steps, repeats)

    algo = default.get("algo", forced[1].get("algo", "?"))
    lines = [
        f"# Sweep throughput ({'quick smoke test, not a measurement' if quick else 'full'})",
        "",
        f"{dt.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}. "
        f"Made by `{command.strip()}`.",
        "",
        f"Algorithm: **{algo}**"
        + (" (PPO unavailable: fell back to DQN)" if algo == "dqn" else "")
        + f"; per run {steps:,} env steps: {PPO['num_envs']} CartPole-v1 envs × "
        f"{PPO['rollout_steps']} steps per iteration, {PPO['num_epochs']} epochs × "
        f"{PPO['num_minibatches']} minibatches, MLP {PPO['hidden']}. The runs are a "
        "learning-rate grid × up to 4 seeds, one `minirl.parallel.sweep` program each; "
        f"wall time is the median of {repeats} timed run(s) after compiling ahead.",
        "",
        f"## Default device ({default.get('platform', '?')}, {default.get('devices', '?')})",
        "",
        *table(default),
        "",
        "## Forced CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=D`)",
        "",
        "### 1 device",
        "",
        *table(forced[1]),
        "",
        "### 2 devices",
        "",
        *table(forced[2], forced[1]),
        "",
        "The bar: near-linear growth of env steps/s with the number of runs until the cores "
        "saturate, and ≥ 1.6× from 1 to 2 devices (column *vs 1 device*). Run counts that do "
        "not divide the device count are padded (the padding is computed and dropped).",
        "",
    ]
    report = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out == HERE / "RESULTS.md":
        sys.path.insert(0, str(HERE))
        from results import update_section

        update_section("sweep", report, out)
        raw = HERE / "RESULTS_sweep.json"
    else:
        out.write_text(report)
        raw = out.with_suffix(".json")
    raw.write_text(
        json.dumps(dict(default=default, forced=forced, steps=steps, quick=quick), indent=2)
    )
    print(report)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
