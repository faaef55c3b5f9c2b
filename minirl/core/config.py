"""Validation helpers for algorithm configs.

Configs are validated once, in Python, when they are built. Numeric fields may hold a
Python number or an array of values (a batched config for a ``jax.vmap`` sweep); every
element is checked. Inside a trace (a config rebuilt by ``jax.tree`` or ``vmap``) the
values are abstract and nothing is checked.
"""

from collections.abc import Iterable
from typing import Any

import jax
import numpy as np


class ConfigError(ValueError):
    """A bad value given by the user (a config field, an env parameter, a flag), with a
    message that names the field, the value and what is allowed. The CLI prints these as
    one line; any other exception is a bug and keeps its traceback."""


def _concrete(value: Any) -> np.ndarray | None:
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allow_inf: bool = False,
) -> None:
    """Raise :class:`ConfigError` naming ``name`` unless every element of ``value`` is in
    range. NaN is never allowed, and ±inf only with ``allow_inf`` (for fields where inf
    means "off", such as a clipping threshold)."""
    array = _concrete(value)
    if array is None:
        return
    ok = ~np.isnan(array)
    if not allow_inf:
        infinite = np.isinf(array)
        if np.any(infinite):
            raise ConfigError(
                f"{name}={_show(array[infinite])} is not a finite number; allowed: finite values"
            )
    if low is not None:
        ok &= array >= low if low_inclusive else array > low
    if high is not None:
        ok &= array <= high if high_inclusive else array < high
    if not np.all(ok):
        left = "(-inf" if low is None else f"{'[' if low_inclusive else '('}{low:g}"
        right = "inf)" if high is None else f"{high:g}{']' if high_inclusive else ')'}"
        raise ConfigError(f"{name}={_show(array[~ok])} is out of range; allowed: {left}, {right}")


def check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a Python int ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name}={value!r} must be an integer ≥ {minimum}")
    if value < minimum:
        raise ConfigError(f"{name}={value} is out of range; allowed: integers ≥ {minimum}")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(
            f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}"
        )


def _show(array: np.ndarray) -> str:
    flat = np.ravel(array)
    text = ", ".join(f"{x:g}" for x in flat[:4])
    return text if flat.size == 1 else f"[{text}{', ...' if flat.size > 4 else ''}]"


def stack(configs: "Iterable[Any]") -> Any:
    """One config whose numeric leaves are stacked along a new leading axis.

    All configs must agree on their static fields (shapes, loop lengths, switches). The
    result sweeps with ``jax.vmap(train)(keys, stacked)`` in a single compiled program.
    """
    configs = list(configs)
    if not configs:
        raise ConfigError("configs is empty; give at least one config to stack")
    structures = {jax.tree.structure(config) for config in configs}
    if len(structures) != 1:
        raise ConfigError(
            "configs differ in static fields (env, sizes, switches); only numeric "
            "hyperparameters can be swept in one program"
        )
    return jax.tree.map(
        lambda *leaves: _narrow(np.stack([np.asarray(x) for x in leaves])), *configs
    )


def _narrow(array: np.ndarray) -> np.ndarray:
    # JAX runs in 32 bits unless x64 is enabled; stack in the dtype it will use.
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype == np.int64:
        return array.astype(np.int32)
    return array
