"""Seeds × hyperparameter sweeps over devices and hosts, and data-parallel training.

Three ways to use more hardware, all with JAX's own machinery (``jax.jit`` with
``NamedSharding``, ``jax.shard_map``, ``jax.distributed``; never ``jax.pmap``):

**Sweeps.** Runs of different seeds and numeric hyperparameters are independent, so a
sweep is one ``jax.vmap``-ped program over a leading "run" axis. With several devices that
axis is split over a one-dimensional device mesh::

    base = dqn.Config(env_id="CartPole-v1")
    configs = configs_for(base, grid(lr=[1e-4, 1e-3], gamma=[0.9, 0.99]))
    keys, batched, rows = expand(configs, seeds=8)      # 4 configs × 8 seeds = 32 runs
    state, metrics = sweep(dqn.train, keys, batched)    # leaves [32, ...]

A run count that does not divide the number of devices is padded (by repeating the last
run) and the padding is dropped from the results.

**Several hosts.** Call ``jax.distributed.initialize`` (``initialize_distributed``) in every
process first; then the same ``sweep`` call spans all processes' devices. ``sweep``
gathers the results to every host; ``sweep_local`` leaves each process only its own rows,
which ``write_slice`` saves and ``merge_slices`` joins into one table.

**Data parallelism.** One agent whose environments are split over devices:
``data_parallel(ppo.step, mesh, state, split=lambda s: s.env)`` runs the step inside
``jax.shard_map``; the algorithm averages its gradients with ``jax.lax.pmean`` over the
axis it is given (``axis_name``), so the result equals the single-device step up to float
reassociation.
"""

import dataclasses
import itertools
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from minirl.core.config import stack

RUNS = "runs"  # mesh axis of a sweep: independent runs (seeds × configurations)
ENVS = "envs"  # mesh axis of data-parallel training: environments of one agent

# Short names accepted for config fields in grids (``--grid lr=...``).
ALIASES = {"lr": "learning_rate"}


# ----------------------------------------------------------------------------- grids


def grid(**values: Sequence[Any]) -> list[dict[str, Any]]:
    """Every combination of the values, the first name varying slowest.

    ``grid(lr=[1, 2], gamma=[.9, .99])`` → ``[{lr: 1, gamma: .9}, {lr: 1, gamma: .99}, …]``.
    """
    names = list(values)
    for name in names:
        if len(values[name]) == 0:
            raise ValueError(f"grid {name}= has no values")
    return [dict(zip(names, combo)) for combo in itertools.product(*values.values())]


def zip_values(**values: Sequence[Any]) -> list[dict[str, Any]]:
    """The i-th value of every name together: ``zip_values(lr=[1, 2], gamma=[.9, .99])`` →
    ``[{lr: 1, gamma: .9}, {lr: 2, gamma: .99}]``. All lists must have the same length."""
    lengths = {name: len(v) for name, v in values.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{n}: {k}" for n, k in lengths.items())
        raise ValueError(f"zipped values need equal lengths; got {shown}")
    names = list(values)
    return [dict(zip(names, combo)) for combo in zip(*values.values())]


def sweepable_field(config_cls: type, name: str) -> str:
    """The config field a grid name refers to (aliases such as ``lr`` resolved).

    Raises ``ValueError`` for an unknown field, and for a static field (one that sets a
    shape, a loop length or a switch): those would need one compiled program per value.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    field = ALIASES.get(name, name) if name not in fields else name
    algo = config_cls.__module__.rsplit(".", 1)[-1]
    if field not in fields:
        raise ValueError(f"unknown field {name!r} for {algo}; fields: {', '.join(fields)}")
    if fields[field].metadata.get("static", False):
        raise ValueError(
            f"field {field!r} of {algo} is static (it sets shapes, loop lengths or a switch) "
            "and cannot be swept in one program; sweep numeric fields, or set it with --set"
        )
    return field


def configs_for(base: eqx.Module, assignments: Sequence[dict[str, Any]]) -> list[eqx.Module]:
    """``base`` with each assignment applied (aliases resolved; static fields rejected).
    Each config is validated as it is built, so a bad value names its field."""
    out = []
    for assignment in assignments:
        changes = {sweepable_field(type(base), k): v for k, v in assignment.items()}
        out.append(dataclasses.replace(base, **changes))
    return out


def expand(
    configs: Sequence[eqx.Module], seeds: int, seed: int = 0
) -> tuple[jax.Array, eqx.Module, np.ndarray]:
    """Configurations × seeds as one batch of runs, configuration-major.

    Returns ``keys [C·S]``, the stacked config (leaves ``[C·S]``) and ``rows [C, S]`` (the
    run index of configuration c, seed s). Every configuration gets the same ``S`` keys
    (common random numbers), so configurations differ only in their hyperparameters.
    """
    if seeds < 1:
        raise ValueError(f"seeds={seeds} is out of range; allowed: integers ≥ 1")
    seed_keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    keys = jnp.tile(seed_keys, (len(configs), 1))
    batched = stack([c for c in configs for _ in range(seeds)])
    return keys, batched, np.arange(len(configs) * seeds).reshape(len(configs), seeds)


# ----------------------------------------------------------------------------- meshes


def make_mesh(devices: Sequence[Any] | None = None, axis: str = RUNS) -> Mesh:
    """A one-dimensional mesh over ``devices`` (default: every device of every process,
    grouped by process so that each process owns a contiguous block of rows)."""
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (axis,))


def padded_size(n: int, mesh: Mesh) -> int:
    """``n`` rounded up to a multiple of the mesh size."""
    size = mesh.devices.size
    return -(-n // size) * size


def _pad(tree: Any, n: int, total: int) -> Any:
    """Leading axis ``n`` → ``total`` by repeating the last row (valid keys and configs, so
    the padding computes harmlessly)."""

    def pad(x):
        x = np.asarray(x)
        return np.concatenate([x, np.repeat(x[-1:], total - n, axis=0)]) if total > n else x

    return jax.tree.map(pad, tree)


def _put_rows(tree: Any, sharding: NamedSharding) -> Any:
    """Host arrays (identical on every process) → global arrays split along axis 0."""
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]), tree
    )


def _num_runs(keys: Any) -> int:
    return int(np.shape(keys)[0])


def _check_batched(keys: Any, configs: Any) -> Any:
    if isinstance(configs, list | tuple):
        configs = stack(configs)
    n = _num_runs(keys)
    arrays, _ = eqx.partition(configs, eqx.is_array_like)
    for leaf in jax.tree.leaves(arrays):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != n:
            raise ValueError(
                f"configs must be batched along a leading axis of {n} runs (one per key); "
                f"got a leaf of shape {np.shape(leaf)} — use minirl.core.config.stack"
            )
    return configs


_COMPILED: dict[Any, Callable] = {}


def _sharded_program(fn: Callable, mesh: Mesh, donate: bool = False) -> Callable:
    """``jax.jit(jax.vmap(fn))`` with inputs and outputs split along the run axis."""
    cache_key = (fn, mesh, donate)
    if cache_key not in _COMPILED:
        rows = NamedSharding(mesh, P(mesh.axis_names[0]))
        _COMPILED[cache_key] = jax.jit(
            jax.vmap(fn), in_shardings=rows, out_shardings=rows, donate_argnums=0 if donate else ()
        )
    return _COMPILED[cache_key]


def sweep_local(
    train_fn: Callable, keys: Any, configs: Any, mesh: Mesh | None = None
) -> tuple[np.ndarray, Any]:
    """Run the sweep over ``mesh`` and return this process's rows as NumPy arrays.

    Returns ``(rows, outputs)``: the indices of the runs this process computed (padding
    excluded, ascending) and ``train_fn``'s outputs for them, leaves ``[len(rows), ...]``.
    Every process must make the same call with the same ``keys`` and ``configs``.
    """
    mesh = mesh or make_mesh()
    configs = _check_batched(keys, configs)
    outputs = _run_padded(train_fn, keys, configs, mesh)
    return local_rows(outputs, _num_runs(keys))


def _run_padded(train_fn: Callable, keys: Any, configs: Any, mesh: Mesh) -> Any:
    program, args = prepare(train_fn, keys, configs, mesh)
    return program(*args)


def prepare(
    train_fn: Callable, keys: Any, configs: Any, mesh: Mesh | None = None
) -> tuple[Callable, tuple[Any, Any]]:
    """The jitted sweep program and its inputs, padded and placed on ``mesh``:
    ``program(*args)`` returns the padded, row-sharded outputs (what ``sweep`` runs; for
    benchmarks, ``program.lower(*args).compile()`` separates compiling from running)."""
    mesh = mesh or make_mesh()
    configs = _check_batched(keys, configs)
    n = _num_runs(keys)
    total = padded_size(n, mesh)
    rows = NamedSharding(mesh, P(mesh.axis_names[0]))
    arrays, static = eqx.partition(configs, eqx.is_array_like)
    args = _put_rows(_pad((np.asarray(keys), arrays), n, total), rows)

    def run(key, arrays):
        return train_fn(key, eqx.combine(arrays, static))

    return _sharded_program(_cached(train_fn, static, run), mesh), args


_RUNNERS: dict[Any, Callable] = {}


def _cached(train_fn: Callable, static: Any, run: Callable) -> Callable:
    # One wrapper function per (train_fn, static config), so jit's cache is hit again.
    key = (train_fn, jax.tree.structure(static), tuple(jax.tree.leaves(static)))
    return _RUNNERS.setdefault(key, run)


def sweep(train_fn: Callable, keys: Any, configs: Any, mesh: Mesh | None = None) -> Any:
    """``jax.vmap(train_fn)(keys, configs)`` as one compiled program over a device mesh.

    ``keys`` is ``[N]`` PRNG keys and ``configs`` one config whose numeric leaves are
    ``[N]`` (``minirl.core.config.stack``, or a list of configs, stacked here). On one
    device this is exactly ``jax.jit(jax.vmap(train_fn))``. With several devices the run
    axis is split over ``mesh`` (default: all devices, ``make_mesh()``) with ``jax.jit``
    and ``NamedSharding``; ``N`` is padded to a multiple of the device count and the
    padding dropped. Under several processes (``jax.distributed``) every process makes
    the same call and receives all ``N`` rows (gathered over the hosts); use
    ``sweep_local`` to keep only each process's own rows.
    """
    mesh = mesh or make_mesh()
    configs = _check_batched(keys, configs)
    n = _num_runs(keys)
    outputs = _run_padded(train_fn, keys, configs, mesh)
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: x[:n] if eqx.is_array(x) else x, outputs)
    from jax.experimental import multihost_utils

    arrays, static = eqx.partition(outputs, eqx.is_array)
    gathered = multihost_utils.process_allgather(arrays, tiled=True)
    return eqx.combine(jax.tree.map(lambda x: np.asarray(x)[:n], gathered), static)


def local_rows(outputs: Any, n: int) -> tuple[np.ndarray, Any]:
    """The rows of row-sharded global ``outputs`` held by this process, as NumPy arrays,
    with padding rows (index ≥ ``n``) dropped. Returns ``(row indices, outputs)``."""
    arrays, static = eqx.partition(outputs, eqx.is_array)
    leaves = jax.tree.leaves(arrays)
    if not leaves:
        return np.arange(0), outputs
    blocks = sorted({(_start(s.index), s.data.shape[0]) for s in leaves[0].addressable_shards})
    index = np.concatenate([np.arange(start, start + size) for start, size in blocks])

    def rows_of(x):
        by_start = {_start(s.index): s.data for s in x.addressable_shards}
        return np.concatenate([np.asarray(by_start[start]) for start, _ in blocks])

    keep = index < n
    local = jax.tree.map(lambda x: rows_of(x)[keep], arrays)
    return index[keep], eqx.combine(local, static)


def _start(index: tuple) -> int:
    first = index[0] if index else slice(None)
    return first.start or 0


def _leading(tree: Any) -> int:
    leaves = jax.tree.leaves(tree)
    return len(leaves[0]) if leaves else 0


# ----------------------------------------------------------------------------- chunked sweeps


@dataclasses.dataclass
class SweepRun:
    """A sweep trained in chunks: this process's rows and their per-chunk summaries."""

    rows: np.ndarray  # run indices this process holds (padding excluded)
    history: list[dict[str, list[float]]]  # per chunk: name → one value per local row
    state: Any = None  # final states of the local rows (NumPy), if kept


def train_chunked(
    init_fn: Callable,
    step_fn: Callable,
    keys: Any,
    configs: Any,
    chunks: Sequence[int],
    summarise: Callable[[dict[str, jax.Array]], dict[str, jax.Array]],
    *,
    mesh: Mesh | None = None,
    report: Callable[[SweepRun], None] | None = None,
) -> SweepRun:
    """``init`` then ``step`` scanned in chunks, all runs in one program per chunk length.

    The runs' states stay on the devices between chunks (split along the run axis and
    donated); after each chunk ``summarise`` (applied to the per-run metrics stacked over
    the chunk, leaves ``[N, chunk]``) is brought to the host, appended to the history for
    this process's rows, and ``report`` is called. The outcome equals one ``train`` call
    per run (``lax.scan`` of ``step``), chunked.
    """
    mesh = mesh or make_mesh()
    configs = _check_batched(keys, configs)
    n = _num_runs(keys)
    total = padded_size(n, mesh)
    rows = NamedSharding(mesh, P(mesh.axis_names[0]))
    arrays, static = eqx.partition(configs, eqx.is_array_like)
    keys, arrays = _put_rows(_pad((np.asarray(keys), arrays), n, total), rows)

    def init(key, arrays):
        return init_fn(key, eqx.combine(arrays, static))

    state = jax.jit(jax.vmap(init), in_shardings=rows, out_shardings=rows)(keys, arrays)
    programs: dict[int, Callable] = {}
    run = SweepRun(rows=np.arange(0), history=[])
    for length in chunks:
        if length not in programs:

            def chunk(state, arrays, length=length):
                config = eqx.combine(arrays, static)
                return jax.lax.scan(lambda s, _: step_fn(s, config), state, length=length)

            def summarised(state, arrays, chunk=chunk):
                state, metrics = jax.vmap(chunk)(state, arrays)
                return state, summarise(metrics)

            programs[length] = jax.jit(
                summarised, in_shardings=rows, out_shardings=rows, donate_argnums=0
            )
        state, summary = programs[length](state, arrays)
        run.rows, local = local_rows(summary, n)
        run.history.append({k: np.asarray(v, np.float64).tolist() for k, v in local.items()})
        if report is not None:
            report(run)
    run.state = state
    return run


# ----------------------------------------------------------------------------- hosts


def initialize_distributed(
    coordinator_address: str, num_processes: int, process_id: int, timeout_s: int = 120
) -> None:
    """``jax.distributed.initialize`` for CPU, GPU or TPU processes; a no-op if already
    initialised. It must run before anything initialises JAX's backends (any computation,
    ``jax.devices()``, and importing gymnax, which builds arrays at import). On CPU,
    cross-process collectives use gloo."""
    if jax.distributed.is_initialized():
        return
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
    )


def _distributed_cli() -> None:
    """``python -c "from minirl.parallel import _distributed_cli; _distributed_cli()" ARGS``:
    the ``minirl`` command with ``jax.distributed`` initialised before anything imports
    gymnax. ``minirl sweep --coordinator`` re-executes itself through this when JAX was
    already initialised by the time the command line was parsed."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    known, _ = parser.parse_known_args(sys.argv[1:])
    initialize_distributed(known.coordinator, known.num_processes, known.process_id)
    from minirl.cli import main

    sys.exit(main(sys.argv[1:]))


def reexec_distributed(argv: Sequence[str]) -> None:
    """Replace this process by ``_distributed_cli`` with the same command line."""
    import sys

    code = "from minirl.parallel import _distributed_cli; _distributed_cli()"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-c", code, *argv])


def barrier(name: str) -> None:
    """Wait until every process reaches this point (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def slice_path(out_dir: str, process_index: int) -> str:
    return os.path.join(out_dir, f"slice-{process_index:04d}.json")


def write_slice(out_dir: str, rows: Sequence[int], records: Sequence[Any]) -> str:
    """Write this process's records (one JSON-able value per row) atomically."""
    os.makedirs(out_dir, exist_ok=True)
    path = slice_path(out_dir, jax.process_index())
    payload = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "rows": [int(r) for r in rows],
        "records": list(records),
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f)
    os.replace(tmp, path)
    return path


def merge_slices(out_dir: str, num_runs: int, process_count: int | None = None) -> list[Any]:
    """All processes' records in run order. Raises ``ValueError`` if a slice is missing,
    or rows are missing or duplicated."""
    process_count = process_count or jax.process_count()
    merged: dict[int, Any] = {}
    for p in range(process_count):
        path = slice_path(out_dir, p)
        if not os.path.exists(path):
            raise ValueError(f"slice {path} of process {p} is missing")
        with open(path) as f:
            payload = json.load(f)
        for row, record in zip(payload["rows"], payload["records"]):
            if row in merged:
                raise ValueError(f"run {row} appears in more than one slice")
            merged[row] = record
    missing = sorted(set(range(num_runs)) - set(merged))
    if missing:
        raise ValueError(f"runs {missing[:8]} are in no slice")
    return [merged[i] for i in range(num_runs)]


# ----------------------------------------------------------------------------- data parallel


def shard_specs(state: Any, split: Callable[[Any], Any], axis: str = ENVS) -> Any:
    """Partition specs for ``state``'s arrays: ``P(axis)`` (split on the leading axis) for
    the arrays inside ``split(state)``, ``P()`` (replicated) for all others."""
    arrays = eqx.filter(state, eqx.is_array)
    sharded = {id(x) for x in jax.tree.leaves(eqx.filter(split(state), eqx.is_array))}
    return jax.tree.map(lambda x: P(axis) if id(x) in sharded else P(), arrays)


def data_parallel(
    step_fn: Callable,
    mesh: Mesh,
    state: Any,
    split: Callable[[Any], Any],
    *,
    length: int = 1,
    donate: bool = False,
) -> Callable:
    """Data-parallel ``step_fn(state, config, axis_name) -> (state, metrics)``.

    The arrays in ``split(state)`` (e.g. ``lambda s: s.env``: every environment's state,
    leading axis ``[E]``) are split over the one mesh axis; the rest of the state
    (parameters, optimiser state, key, counters) and the config are replicated. Inside
    ``jax.shard_map`` each device runs ``step_fn`` on its ``E / devices`` environments with
    ``axis_name`` set to the mesh axis; the step averages gradients (and any statistics)
    with ``jax.lax.pmean`` over that axis and returns replicated metrics. ``state`` is a
    template (the structure and which leaves are split); the result is a jitted
    ``run(state, config) -> (state, metrics)`` doing ``length`` steps (metrics stacked
    ``[length, ...]``).
    """
    axis = mesh.axis_names[0]
    specs = shard_specs(state, split, axis)
    _, static = eqx.partition(state, eqx.is_array)

    def run(arrays, config):
        def body(arrays, _):
            new_state, metrics = step_fn(eqx.combine(arrays, static), config, axis)
            return eqx.filter(new_state, eqx.is_array), metrics

        return jax.lax.scan(body, arrays, length=length)

    def outer(arrays, config):
        sharded = jax.shard_map(
            run, mesh=mesh, in_specs=(specs, P()), out_specs=(specs, P()), check_vma=False
        )
        return sharded(arrays, config)

    program = jax.jit(outer, donate_argnums=0 if donate else ())

    def call(state, config):
        arrays, _ = eqx.partition(state, eqx.is_array)
        arrays, metrics = program(arrays, config)
        return eqx.combine(arrays, static), metrics

    return call


# ----------------------------------------------------------------------------- `minirl sweep`
#
# Host-level pieces of the command: grids from the command line, the chunked run with
# progress, the merged summary, the ranking table and the plot. (Printing and files live
# here and in the CLI, never inside the algorithms.)


def parse_grid(config_cls: type, assignments: Sequence[str]) -> dict[str, list[Any]]:
    """``["lr=1e-4,3e-4", "gamma=0.99,0.995"]`` → ``{"learning_rate": [...], "gamma": [...]}``
    typed like the config fields; unknown or static fields raise a one-line ``ValueError``."""
    from minirl import runner

    values: dict[str, list[Any]] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise ValueError(f"--grid {assignment!r} must look like field=value1,value2,...")
        field = sweepable_field(config_cls, name)
        if field in values:
            raise ValueError(f"--grid {field} is given twice")
        values[field] = [
            runner.parse_value(config_cls, field, part.strip())
            for part in text.split(",")
            if part.strip()
        ]
    return values


def run_sweep(
    algo_name: str,
    algo: Any,
    base: eqx.Module,
    values: dict[str, list[Any]],
    *,
    seeds: int,
    seed: int = 0,
    zipped: bool = False,
    target_chunks: int = 20,
    mesh: Mesh | None = None,
    out_dir: str | None = None,
    report: Callable[[SweepRun, float], None] | None = None,
) -> dict[str, Any]:
    """Train every configuration × seed in one program (per chunk length) and return the
    summary: per configuration its values, per-seed final returns and their median.

    Under several processes each process trains its rows and writes its slice to
    ``out_dir`` (a filesystem all processes share); after a barrier process 0 merges the
    slices into the summary, and the other processes return only their row indices.
    """
    import time

    from minirl import runner

    assignments = zip_values(**values) if zipped else grid(**values)
    configs = configs_for(base, assignments)
    keys, batched, rows = expand(configs, seeds, seed)
    chunks = runner.chunk_plan(base.num_iterations, target_chunks)
    mesh = mesh or make_mesh()
    start = time.perf_counter()

    def progress(run: SweepRun) -> None:
        if report is not None:
            report(run, time.perf_counter() - start)

    run = train_chunked(
        algo.init,
        algo.step,
        keys,
        batched,
        chunks,
        runner.summarise_chunk,
        mesh=mesh,
        report=progress,
    )
    wall = time.perf_counter() - start
    finals = runner.final_returns(run.history, len(run.rows))
    steps = int(run.history[-1]["env_steps"][0]) if run.rows.size else 0
    records = [{"final_return": f, "env_steps": steps} for f in finals]
    num_runs = len(configs) * seeds
    if jax.process_count() > 1:
        if out_dir is None:
            raise ValueError("a sweep over several processes needs an output directory")
        write_slice(out_dir, run.rows, records)
        barrier("minirl-sweep-slices")
        if jax.process_index() != 0:  # process 0 merges (out_dir on a shared filesystem)
            return {"process_index": jax.process_index(), "rows": run.rows.tolist()}
        merged = merge_slices(out_dir, num_runs)
    else:
        by_row = dict(zip(run.rows.tolist(), records))
        merged = [by_row[i] for i in range(num_runs)]
    finals_all = np.array([_nan(r["final_return"]) for r in merged], np.float64)
    steps = max(int(r["env_steps"]) for r in merged)
    per_config = []
    for c, assignment in enumerate(assignments):
        values_c = {k: _jsonable(v) for k, v in assignment.items()}
        returns_c = finals_all[rows[c]]
        per_config.append(
            {
                "values": values_c,
                "final_returns": [_json_float(x) for x in returns_c],
                "median_final_return": _json_float(_nanmedian(returns_c)),
            }
        )
    ranking = sorted(
        range(len(per_config)),
        key=lambda c: -np.nan_to_num(_nan(per_config[c]["median_final_return"]), nan=-np.inf),
    )
    for rank, c in enumerate(ranking, 1):
        per_config[c]["rank"] = rank
    return {
        "algo": algo_name,
        "env": base.env_id,
        "steps": steps,
        "seeds": seeds,
        "first_seed": seed,
        "mode": "zip" if zipped else "grid",
        "swept": {k: [_jsonable(v) for v in vs] for k, vs in values.items()},
        "configurations": per_config,
        "ranking": ranking,
        "runs": num_runs,
        "devices": int(mesh.devices.size),
        "processes": jax.process_count(),
        "wall_seconds": wall,
        "env_steps_per_second": steps * num_runs / max(wall, 1e-9),
        "config": runner.config_to_json(base),
    }


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _json_float(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _nanmedian(x: np.ndarray) -> float:
    return float(np.nanmedian(x)) if np.any(np.isfinite(x)) else float("nan")


def _jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def write_sweep_outputs(result: dict[str, Any], out_dir: str) -> None:
    """``summary.json`` and ``sweep.png`` (final return against each swept value)."""
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, "summary.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, "summary.json"))
    plot_sweep(result, os.path.join(out_dir, "sweep.png"))


def plot_sweep(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["swept"])
    fig, axes = plt.subplots(
        1, len(names), figsize=(4.2 * len(names) + 1, 3.8), dpi=120, squeeze=False
    )
    for ax, name in zip(axes[0], names):
        xs = result["swept"][name]
        medians = []
        for x in xs:
            pooled = [
                _nan(r)
                for c in result["configurations"]
                if c["values"][name] == x
                for r in c["final_returns"]
            ]
            ax.scatter([x] * len(pooled), pooled, s=10, alpha=0.4, color="tab:blue")
            medians.append(_nanmedian(np.array(pooled, np.float64)))
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
        if numeric:
            order = np.argsort(xs)
            ax.plot(
                np.asarray(xs)[order],
                np.asarray(medians)[order],
                "o-",
                color="black",
                lw=2,
                label="median over seeds (and the other swept values)",
            )
            if min(xs) > 0 and max(xs) / min(xs) >= 3:
                ax.set_xscale("log")
            ax.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))])
            ax.minorticks_off()
        ax.set_xlabel(name)
        ax.set_ylabel("final return")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=7)
    fig.suptitle(
        f"minirl sweep {result['algo']} on {result['env']}: "
        f"{len(result['configurations'])} configurations × {result['seeds']} seeds"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_ranking(result: dict[str, Any], stream: Any = None) -> None:
    """The configurations ranked by median final return, as a table."""
    import sys

    from rich.console import Console
    from rich.table import Table

    names = list(result["swept"])
    table = Table(
        title=f"{result['algo']} on {result['env']}: {len(result['configurations'])} "
        f"configurations × {result['seeds']} seeds, ranked by median final return"
    )
    table.add_column("rank", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for column in ("median", "min", "max"):
        table.add_column(column, justify="right")
    for c in result["ranking"]:
        config = result["configurations"][c]
        returns = np.array([_nan(r) for r in config["final_returns"]], np.float64)
        finite = returns[np.isfinite(returns)]
        low, high = (f"{finite.min():.1f}", f"{finite.max():.1f}") if finite.size else ("-", "-")
        median = _nan(config["median_final_return"])
        table.add_row(
            str(config["rank"]),
            *(
                f"{config['values'][n]:g}"
                if isinstance(config["values"][n], float)
                else str(config["values"][n])
                for n in names
            ),
            f"{median:.1f}",
            low,
            high,
        )
    console = Console(file=stream or sys.stdout, width=120)
    console.print(table)
    console.print(
        f"{result['steps']:,} env steps × {result['runs']} runs on {result['devices']} "
        f"device(s), {result['processes']} process(es) in {result['wall_seconds']:.1f}s "
        f"({result['env_steps_per_second']:,.0f} env steps/s)"
    )
