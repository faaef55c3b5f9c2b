"""minirl: pure functional, minimal reinforcement learning in JAX."""

import os
from importlib import metadata

__version__ = "0.1.0"


def _avoid_xla_cpu_deadlock() -> None:
    """Turn off XLA:CPU's concurrency-optimised scheduler, unless ``XLA_FLAGS`` already
    names it.

    With it on, some vmapped programs deadlocked on the CPU backend (every thread waiting,
    0 % CPU, for ever): GPS on Reacher-misc with 2 seeds in one program, reproducibly, and
    ``jnp.linalg.eigh`` inside LQR-FLM's vmapped scan before it. With it off the same
    programs run (GPS: 4 s), and PPO and SAC train at the same speed (106,066 against
    107,436 env steps/s; 232 against 235, within run-to-run noise). XLA reads the flags when
    its backend starts, so this takes effect when minirl is imported before the first JAX
    computation. XLA aborts on a flag it does not know, so it is set only for the jaxlib
    versions it was checked with (0.10)."""
    flag = "--xla_cpu_enable_concurrency_optimized_scheduler"
    current = os.environ.get("XLA_FLAGS", "")
    if flag in current:
        return
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return
    if version.startswith("0.10."):
        os.environ["XLA_FLAGS"] = f"{current} {flag}=false".strip()


_avoid_xla_cpu_deadlock()
