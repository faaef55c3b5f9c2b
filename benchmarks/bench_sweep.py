"""Sweeps over devices: aggregate env steps/s of a PPO sweep against the number of runs
(configurations × seeds), and what minirl's design (``minirl.sweep``: K-wide programs
dispatched round-robin to the devices) costs against the old one (one ``jax.jit(jax.vmap(
train))`` program partitioned over a device mesh with ``NamedSharding``).

    python benchmarks/bench_sweep.py            # full run → RESULTS.md (sweep section)
    python benchmarks/bench_sweep.py --quick    # tiny budgets, a smoke test; writes to
                                                # $TMPDIR/minirl-bench-quick/

Every run is a small PPO agent on CartPole-v1 (``PPO`` below); the runs are a learning-rate
grid × up to 4 seeds, so every run has its own numeric hyperparameters, as in a real sweep.
Device counts are set with ``XLA_FLAGS=--xla_force_host_platform_device_count=D``, which JAX
reads at start-up, so each device count runs in its own worker process (this script with
``--worker``). Measured in each worker:

- **scaling**: ``sweep.run`` with the default K = ⌈N/8⌉ runs per program, N = 1 … 1024,
  on the default device and on 1 and 2 forced CPU devices;
- **design comparison** (forced 1 and 2 devices, N = 4, 16, 64, 256):
  new, K = ⌈N/D⌉ (one program per device: the widest the new design can go on D devices);
  new, K = ⌈N/8⌉ (the default: the only K that does not depend on the hardware);
  old, one program over a 1-d mesh of all D devices (inputs and outputs split along the
  run axis with ``NamedSharding``, N padded to a multiple of D), rebuilt here in a few
  lines since the library no longer has it.

Each measurement starts from empty compile caches (``jax.clear_caches()``). Wall time is
the median of the timed calls after a first call; compile time = first call − that median
(the first call traces, compiles one executable per device used, and runs). Every call
includes placing the inputs and bringing the outputs to the host, for both designs. The
final metrics and learner parameters of every run are saved by each worker, and the parent
compares the D = 2 files with the D = 1 files bit for bit.
"""

import argparse
import collections
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV_ID = "CartPole-v1"

# A small PPO agent per run: 4 CartPole envs × 32 steps per iteration.
PPO = dict(
    num_envs=4,
    rollout_steps=32,
    num_epochs=2,
    num_minibatches=2,
    hidden=(32, 32),
)

MODES = {
    "full": dict(scaling=[1, 4, 16, 64, 256, 1024], compare=[4, 16, 64, 256],
                 steps=4 * 32 * 40, repeats=3),
    "quick": dict(scaling=[1, 4, 16], compare=[4, 16], steps=4 * 32 * 4, repeats=1),
}
FORCED = (1, 2)  # forced CPU device counts
TARGET_GROUPS = 8  # minirl.sweep's default: K = ⌈N / 8⌉
DESIGNS = {
    "new-per-device": "new, K = ⌈N/D⌉",
    "new-default": "new, K = ⌈N/8⌉ (default)",
    "old": "old, one sharded program",
}


# ----------------------------------------------------------------------------- workers


def spawn(script: Path, devices: int | None, args: list[str], timeout: int = 7200) -> dict:
    """Run ``script --worker ARGS`` in a fresh process, with ``devices`` forced CPU devices
    (None: JAX's default devices); its messages are passed on as they come. Returns the
    JSON of its last stdout line, or ``{"error": ...}``. Shared with bench_cores.py."""
    env = dict(os.environ)
    if devices is not None:
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
        env["JAX_PLATFORMS"] = "cpu"
    command = [sys.executable, str(script), "--worker", *args]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    tail: collections.deque[str] = collections.deque(maxlen=20)

    def relay() -> None:
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.strip())

    relay_thread = threading.Thread(target=relay, daemon=True)
    relay_thread.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        stdout = proc.stdout.read()
        proc.wait()
    finally:
        timer.cancel()
        relay_thread.join(timeout=10)
    if timed_out.is_set():
        return dict(error=f"worker timed out after {timeout} s")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        last = next((line for line in reversed(tail) if line), "failed")
        return dict(error=f"worker exited {proc.returncode}: {last[:300]}")
    return json.loads(lines[-1])


def worker(args: argparse.Namespace) -> None:
    """Measure in this process (XLA_FLAGS already set by the parent); print one JSON line."""
    import equinox as eqx
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from minirl import envs, sweep
    from minirl.algos import ppo

    env, env_params = envs.make(ENV_ID)
    base = ppo.Config(**PPO, total_steps=args.steps)
    devices = jax.device_count()
    scaling = [int(r) for r in args.scaling.split(",") if r]
    compare = [int(r) for r in args.compare.split(",") if r]

    def make_runs(n: int) -> sweep.Runs:
        seeds = min(n, 4)
        lrs = np.geomspace(1e-4, 3e-3, max(1, n // seeds)).tolist()
        return sweep.expand(base, env, env_params, sweep.grid(lr=lrs), seeds=seeds)

    def new_design(runs: sweep.Runs, k: int):
        def call():
            return sweep.run(ppo.train, runs, env, runs_per_program=k)[1]

        groups = math.ceil(runs.num_runs / k)
        return call, dict(k=k, programs=groups, devices_used=min(devices, groups))

    def old_design(runs: sweep.Runs):
        """One ``jit(vmap(train))`` over a 1-d mesh of every device (minirl.parallel before
        contract v2): inputs and outputs split along the run axis, N padded to a multiple
        of the device count by repeating the last run (the padding is dropped)."""
        n = runs.num_runs
        total = -(-n // devices) * devices
        mesh = Mesh(np.asarray(jax.devices()), ("runs",))
        rows = NamedSharding(mesh, P("runs"))
        arrays, static = eqx.partition(runs.configs, eqx.is_array_like)

        def one(key, arrays, env_params):
            return ppo.train(key, eqx.combine(arrays, static), env, env_params)

        program = jax.jit(jax.vmap(one), in_shardings=rows, out_shardings=rows)
        pad = np.concatenate([np.arange(n), np.full(total - n, n - 1)])
        inputs = jax.tree.map(lambda x: np.asarray(x)[pad],
                              (runs.keys, arrays, runs.env_params))

        def call():
            out = program(*jax.device_put(inputs, rows))
            return jax.tree.map(lambda x: np.asarray(x)[:n], eqx.filter(out, eqx.is_array))

        return call, dict(k=total, programs=1, devices_used=devices)

    def save(path: Path, outputs) -> None:
        state, metrics = outputs
        arrays = {f"metric/{name}": np.asarray(v)[:, -1] for name, v in metrics.items()}
        params = jax.tree.leaves(eqx.filter(state.learner.params, eqx.is_array))
        arrays.update({f"param/{i}": np.asarray(x) for i, x in enumerate(params)})
        np.savez(path, **arrays)

    rows = []
    for n in sorted(set(scaling) | set(compare)):
        runs = make_runs(n)
        n = runs.num_runs
        designs = ["new-default"] + (["new-per-device", "old"] if n in compare else [])
        for design in designs:
            if design == "old":
                call, shape = old_design(runs)
            else:
                k = math.ceil(n / (TARGET_GROUPS if design == "new-default" else devices))
                call, shape = new_design(runs, k)
            jax.clear_caches()  # every measurement compiles from scratch
            start = time.perf_counter()
            outputs = call()
            first = time.perf_counter() - start
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            wall = float(np.median(times))
            if args.save_dir and n in compare:
                save(Path(args.save_dir) / f"{design}-{n}.npz", outputs)
            env_steps = n * base.num_iterations * base.num_envs * base.rollout_steps
            rows.append(dict(design=design, runs=n, **shape, env_steps=env_steps,
                             first_seconds=first, seconds=wall,
                             compile_seconds=max(first - wall, 0.0),
                             env_steps_per_second=env_steps / wall))
            print(f"  devices={devices} {design} runs={n} K={shape['k']}: "
                  f"{env_steps / wall:,.0f} env steps/s, compile {first - wall:.1f} s",
                  file=sys.stderr, flush=True)
    print(json.dumps(dict(devices=devices, platform=jax.devices()[0].platform,
                          device_kind=jax.devices()[0].device_kind, rows=rows)))


def same_bits(dir_a: Path, dir_b: Path, name: str) -> bool | None:
    """Whether two workers' saved outputs ``name`` are identical bit for bit (None: missing)."""
    import numpy as np

    a_path, b_path = dir_a / f"{name}.npz", dir_b / f"{name}.npz"
    if not (a_path.exists() and b_path.exists()):
        return None
    with np.load(a_path) as a, np.load(b_path) as b:
        if sorted(a.files) != sorted(b.files):
            return False
        return all(a[f].dtype == b[f].dtype and a[f].shape == b[f].shape
                   and a[f].tobytes() == b[f].tobytes() for f in a.files)


# ----------------------------------------------------------------------------- report


def rows_of(result: dict, design: str) -> dict[int, dict]:
    return {r["runs"]: r for r in result.get("rows", []) if r["design"] == design}


def scaling_table(result: dict, runs: list[int], reference: dict | None = None) -> list[str]:
    if "error" in result:
        return [f"failed: {result['error']}"]
    mine = rows_of(result, "new-default")
    ref = rows_of(reference or {}, "new-default")
    lines = [
        "| runs (configs × seeds) | K × programs | env steps | wall (s) | compile (s) "
        "| env steps/s | per run | vs 1 run |" + (" vs 1 device |" if reference else ""),
        "|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if reference else ""),
    ]
    present = [mine[n] for n in runs if n in mine]
    if not present:
        return lines
    first = present[0]["env_steps_per_second"] / present[0]["runs"]
    for r in present:
        rate = r["env_steps_per_second"]
        line = (f"| {r['runs']} | {r['k']} × {r['programs']} | {r['env_steps']:,} "
                f"| {r['seconds']:.2f} | {r['compile_seconds']:.1f} | {rate:,.0f} "
                f"| {rate / r['runs']:,.0f} | {rate / first:.1f}× |")
        if reference:
            theirs = ref.get(r["runs"])
            line += f" {rate / theirs['env_steps_per_second']:.2f}× |" if theirs else " – |"
        lines.append(line)
    return lines


def bits_cell(verdict: bool | None, design: str, one: dict | None, two: dict | None) -> str:
    if verdict is None:
        return "–"
    if verdict:
        return "**yes**"
    if design == "new-per-device" and one and two and one["k"] != two["k"]:
        return f"no (K {one['k']} vs {two['k']})"
    return "**no**"


def compare_table(forced: dict, runs: list[int], bits: dict) -> list[str]:
    one, two = forced.get(1, {}), forced.get(2, {})
    if "error" in one or "error" in two:
        return [f"failed: {one.get('error') or two.get('error')}"]
    lines = [
        "| runs N | design | K × programs (D=1 / D=2) | env steps/s D=1 | env steps/s D=2 "
        "| D=2 / D=1 | compile (s) D=1 | compile (s) D=2 | D=2 bits = D=1 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in runs:
        for design, label in DESIGNS.items():
            a, b = rows_of(one, design).get(n), rows_of(two, design).get(n)
            if not a or not b:
                continue
            ra, rb = a["env_steps_per_second"], b["env_steps_per_second"]
            shape = (f"{a['k']} × {a['programs']} / {b['k']} × {b['programs']}"
                     if design != "old" else f"{a['k']} on 1 / {b['k']} over 2")
            lines.append(
                f"| {n} | {label} | {shape} | {ra:,.0f} | {rb:,.0f} | {rb / ra:.2f}× "
                f"| {a['compile_seconds']:.1f} | {b['compile_seconds']:.1f} "
                f"| {bits_cell(bits.get((design, n)), design, a, b)} |"
            )
    return lines


def cost_lines(forced: dict, runs: list[int]) -> list[str]:
    """The new design against the old, per N, on the largest forced device count."""
    devices = max(d for d in forced if "error" not in forced[d]) if any(
        "error" not in r for r in forced.values()) else None
    if devices is None:
        return []
    result = forced[devices]
    old, new, wide = (rows_of(result, d) for d in ("old", "new-default", "new-per-device"))
    lines = []
    for n in runs:
        if n in old and n in new and n in wide:
            o = old[n]
            lines.append(
                f"- N = {n}, D = {devices}: default K = {new[n]['k']} runs at "
                f"{new[n]['env_steps_per_second'] / o['env_steps_per_second']:.2f}× the old "
                f"design's env steps/s and K = {wide[n]['k']} at "
                f"{wide[n]['env_steps_per_second'] / o['env_steps_per_second']:.2f}×; compile "
                f"{new[n]['compile_seconds']:.1f} s and {wide[n]['compile_seconds']:.1f} s "
                f"against {o['compile_seconds']:.1f} s"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--save-dir", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=str, help="comma-separated run counts (scaling)")
    parser.add_argument("--compare", type=str,
                        help="comma-separated run counts for the design comparison")
    parser.add_argument("--scaling", type=str, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help="env steps per run")
    parser.add_argument("--repeats", type=int, help="timed repeats (median)")
    parser.add_argument("--out", help="report path (default: RESULTS.md's sweep section)")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    mode = MODES["quick" if args.quick else "full"]
    runs = [int(r) for r in args.runs.split(",")] if args.runs else mode["scaling"]
    compare = [int(r) for r in args.compare.split(",")] if args.compare else mode["compare"]
    steps = args.steps or mode["steps"]
    repeats = args.repeats or mode["repeats"]
    if args.out:
        out = Path(args.out)
    elif args.quick:
        out = Path(tempfile.gettempdir()) / "minirl-bench-quick" / "RESULTS_sweep.md"
    else:
        out = HERE / "RESULTS.md"  # its "sweep" section (benchmarks/results.py)
    command = " ".join(["python benchmarks/bench_sweep.py", *sys.argv[1:]])
    started = time.perf_counter()
    common = ["--steps", str(steps), "--repeats", str(repeats)]

    print("default device:", file=sys.stderr)
    default = spawn(Path(__file__), None, [*common, "--scaling", ",".join(map(str, runs)),
                                           "--compare", ""])
    forced, saved = {}, {}
    with tempfile.TemporaryDirectory(prefix="minirl-bench-sweep-") as tmp:
        for devices in FORCED:
            print(f"{devices} forced CPU device(s):", file=sys.stderr)
            saved[devices] = Path(tmp) / f"d{devices}"
            saved[devices].mkdir()
            forced[devices] = spawn(
                Path(__file__), devices,
                [*common, "--scaling", ",".join(map(str, runs)),
                 "--compare", ",".join(map(str, compare)), "--save-dir", str(saved[devices])],
            )
        bits = {(design, n): same_bits(saved[1], saved[2], f"{design}-{n}")
                for design in DESIGNS for n in compare}

    lines = [
        f"# Sweep throughput and the cost of the design "
        f"({'quick smoke test, not a measurement' if args.quick else 'full'})",
        "",
        f"{dt.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; this run took "
        f"{time.perf_counter() - started:.0f} s. Made by `{command.strip()}`.",
        "",
        f"Per run {steps:,} env steps of PPO on {ENV_ID}: {PPO['num_envs']} envs × "
        f"{PPO['rollout_steps']} steps per iteration, {PPO['num_epochs']} epochs × "
        f"{PPO['num_minibatches']} minibatches, MLP {PPO['hidden']}. The runs are a "
        "learning-rate grid × up to 4 seeds. Wall time is the median of "
        f"{repeats} timed call(s) after a first call; *compile* = first call − that median "
        "(the first call traces, compiles one executable per device used, and runs); every "
        "measurement starts from empty compile caches. Calls include placing the inputs and "
        "bringing the outputs to the host.",
        "",
        "## What the design costs (forced CPU devices, "
        "`XLA_FLAGS=--xla_force_host_platform_device_count=D`)",
        "",
        "Designs: **new** = `minirl.sweep.run`, the runs cut into groups of K runs, every "
        "group one K-wide `vmap` program, groups dispatched round-robin to the devices (one "
        "compile per device used); **old** = one `jax.jit(jax.vmap(train))` program whose "
        "inputs and outputs are split along the run axis over a 1-d mesh of all D devices "
        "(`NamedSharding`; one compile). *D=2 bits = D=1*: the final metrics and learner "
        "parameters of every run, computed in the D = 2 worker, equal those of the D = 1 "
        "worker bit for bit. With K = ⌈N/D⌉ the two device counts run different K, so "
        "equal bits are not promised there; K = ⌈N/8⌉ depends on N alone.",
        "",
        *compare_table(forced, compare, bits),
        "",
        *cost_lines(forced, compare),
        "",
        "## Throughput against the number of runs (new design, default K = ⌈N/8⌉)",
        "",
        f"### Default device ({default.get('platform', '?')}, {default.get('devices', '?')})",
        "",
        *scaling_table(default, runs),
        "",
        "### 1 forced CPU device",
        "",
        *scaling_table(forced[1], runs),
        "",
        "### 2 forced CPU devices",
        "",
        *scaling_table(forced[2], runs, forced[1]),
        "",
        "The bar: near-linear growth of env steps/s with the number of runs until the cores "
        "saturate, and ≥ 1.6× from 1 to 2 devices (column *vs 1 device*). The last group of "
        "runs is padded to K by repeating its last run (computed and dropped).",
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
    raw.write_text(json.dumps(
        dict(default=default, forced=forced, steps=steps, quick=args.quick,
             same_bits={f"{d}-{n}": v for (d, n), v in bits.items()}), indent=1))
    print(report)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
