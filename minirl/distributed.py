"""Several processes (hosts) in one sweep: start-up through ``jax.distributed`` and the
per-process result slices that process 0 merges.

Every process runs the same command; ``minirl.programs`` gives each the groups of runs with
``g % process_count == process_index``, so no array ever crosses a host boundary. Each
process writes its rows to ``slice-NNNN.json`` in a shared directory (atomically), waits at
a barrier, and process 0 merges the slices in run order.
"""

import json
import os
from collections.abc import Sequence
from typing import Any

import jax

from .core.config import ConfigError


def initialize(
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
    """All processes' records in run order. Raises :class:`ConfigError` if a slice is
    missing, or rows are missing or duplicated."""
    process_count = process_count or jax.process_count()
    merged: dict[int, Any] = {}
    for p in range(process_count):
        path = slice_path(out_dir, p)
        if not os.path.exists(path):
            raise ConfigError(f"slice {path} of process {p} is missing")
        with open(path) as f:
            payload = json.load(f)
        for row, record in zip(payload["rows"], payload["records"]):
            if row in merged:
                raise ConfigError(f"run {row} appears in more than one slice")
            merged[row] = record
    missing = sorted(set(range(num_runs)) - set(merged))
    if missing:
        raise ConfigError(f"runs {missing[:8]} are in no slice")
    return [merged[i] for i in range(num_runs)]


def gather(out_dir: str | None, rows: Sequence[int], records: Sequence[Any],
           num_runs: int) -> list[Any] | None:
    """Every run's record in run order, on process 0; ``None`` on the others. With one
    process the records are only put in order; with several, each process writes its slice
    to ``out_dir`` (a filesystem all processes share), waits at a barrier, and process 0
    merges them."""
    if jax.process_count() == 1:
        by_row = dict(zip((int(r) for r in rows), records))
        return [by_row[i] for i in range(num_runs)]
    if out_dir is None:
        raise ConfigError("a sweep over several processes needs an output directory that all "
                          "processes share (out_dir)")
    write_slice(out_dir, rows, records)
    barrier("minirl-sweep-slices")
    return merge_slices(out_dir, num_runs) if jax.process_index() == 0 else None
