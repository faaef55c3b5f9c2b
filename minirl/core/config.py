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


def check_hidden(name: str, value: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a non-empty tuple of positive ints
    (the widths of a network's hidden layers)."""
    if (not isinstance(value, tuple | list) or not value
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in value)):
        raise ConfigError(f"{name}={value!r} must be a non-empty tuple of positive ints")


def check_one_iteration(total_steps: int, num_envs: int, rollout_steps: int) -> None:
    """Raise :class:`ConfigError` unless ``total_steps`` covers one iteration, the
    ``num_envs × rollout_steps`` env steps that one ``step`` collects."""
    if total_steps < num_envs * rollout_steps:
        raise ConfigError(
            f"total_steps={total_steps} is less than one iteration "
            f"(num_envs × rollout_steps = {num_envs * rollout_steps})"
        )


def check_on_policy(config: Any, *sizes: str) -> None:
    """The sizes every learner that collects ``num_envs × rollout_steps`` env steps per
    iteration shares, checked once here: ``total_steps``, ``num_envs``, ``rollout_steps``
    and the fields named in ``sizes`` are integers ≥ 1; ``hidden`` is a non-empty tuple of
    positive ints; ``total_steps`` covers one iteration."""
    for name in ("total_steps", "num_envs", "rollout_steps", *sizes):
        check_positive_int(name, getattr(config, name))
    check_hidden("hidden", config.hidden)
    check_one_iteration(config.total_steps, config.num_envs, config.rollout_steps)


def check_off_policy(config: Any, *sizes: str) -> None:
    """:func:`check_on_policy`'s checks plus the replay buffer's, for every replay-based
    learner: ``gradient_steps``, ``buffer_size``, ``batch_size`` (and ``sizes``) are
    integers ≥ 1 and ``learning_starts`` ≥ 0; ``buffer_size`` is a multiple of ``num_envs``
    (each ``add`` writes one step of every env, so a stored window follows one env through
    time); ``batch_size`` ≤ ``buffer_size``."""
    check_on_policy(config, "gradient_steps", "buffer_size", "batch_size", *sizes)
    check_positive_int("learning_starts", config.learning_starts, minimum=0)
    if config.buffer_size % config.num_envs:
        raise ConfigError(
            f"buffer_size={config.buffer_size} must be a multiple of "
            f"num_envs={config.num_envs}"
        )
    if config.batch_size > config.buffer_size:
        raise ConfigError(
            f"batch_size={config.batch_size} is larger than buffer_size={config.buffer_size}; "
            "allowed: batch_size ≤ buffer_size"
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
