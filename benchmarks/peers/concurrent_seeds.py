"""Run one training process per seed at the same time (multiprocessing, spawn) and collect
what each reports: the shared launcher of the Stable-Baselines3 and sbx peer scripts, which
cannot batch seeds inside one model.

Each worker is called as ``target(*args_for_seed(i), barrier, queue)``: it builds its model,
waits at ``barrier`` so that every process starts learning together, and puts one dict on
``queue`` (with ``seed``, ``start``, ``end``, ``env_steps``; or ``error``).
"""

import multiprocessing as mp
import queue as queue_module
import sys
from collections.abc import Callable


def run(target: Callable, args_for_seed: Callable[[int], tuple], seeds: int,
        label: str) -> tuple[list[dict], float, int] | None:
    """The workers' results sorted by seed, the wall time from the first ``learn`` start to
    the last ``learn`` end, and the env steps of all seeds; ``None`` (after printing the
    first error to stderr) if a worker failed or died."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(seeds)
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for_seed(i), barrier, queue))
             for i in range(seeds)]
    for proc in procs:
        proc.start()
    results = []
    while len(results) < len(procs):
        try:
            results.append(queue.get(timeout=5))
        except queue_module.Empty:
            if not any(proc.is_alive() for proc in procs) and queue.empty():
                codes = [proc.exitcode for proc in procs]
                results.append({"seed": -1, "error": f"workers died, exit codes {codes}"})
                break
    for proc in procs:
        proc.join(timeout=60)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        print(f"{label} worker failed: {errors[0]}", file=sys.stderr)
        return None
    results.sort(key=lambda r: r["seed"])
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return results, wall, sum(r["env_steps"] for r in results)
