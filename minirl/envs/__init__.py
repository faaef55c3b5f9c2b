"""Environments by id, and their parameters as values a user (or a sweep) can change.

An algorithm never sees an id: it takes ``(env, env_params)``, any object with gymnax 1.x's
pure ``reset``/``step``/``observation_space``/``action_space`` and a pytree of parameters.
This module is where ids become those two things, for the CLI, the presets and the
examples::

    env, env_params = envs.make("CartPole-v1")                      # gymnax defaults
    env, env_params = envs.make("CartPole-v1", gravity=3.7)         # a field changed
    env_params = envs.replace_params(env, env_params, length=1.0)   # derived fields follow

``env_params`` is a pytree, so ``jax.vmap(train, in_axes=(None, None, None, 0))`` over a
stacked ``env_params`` (:func:`stack_params`) trains one agent per parameter value in one
program.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any

import gymnax
import jax
import numpy as np

from ..core.config import ConfigError
from ..core.rollout import action_kind, check_env

REGISTERED: tuple[str, ...] = tuple(gymnax.registered_envs)


@functools.cache
def _gymnax(env_id: str) -> tuple[Any, Any]:
    # One env object per id: the env is a static argument of jit, so reusing the same
    # object lets every call hit the same compiled program.
    return gymnax.make(env_id)


def check_id(env_id: str) -> None:
    """Raise :class:`ConfigError` naming ``env_id`` and the known ids if it is unknown."""
    if env_id not in REGISTERED:
        raise ConfigError(
            f"env={env_id!r} is not a gymnax environment; choose one of: " + ", ".join(REGISTERED)
        )


def make(env_id: str, **params: Any) -> tuple[Any, Any]:
    """The gymnax environment ``env_id`` and its parameters, with ``params`` overriding the
    defaults (validated by :func:`replace_params`)."""
    check_id(env_id)
    try:
        env, env_params = _gymnax(env_id)
    except Exception as error:  # an env whose data cannot be loaded here (MNIST)
        raise ConfigError(f"env={env_id!r} cannot be built here: {error}") from None
    return env, replace_params(env, env_params, **params)


# ----------------------------------------------------------------------------- parameters


def _derive_cartpole(p: Any) -> Any:
    # gymnax stores two products of other fields; keep them consistent with their factors.
    return dataclasses.replace(
        p, total_mass=p.masscart + p.masspole, polemass_length=p.masspole * p.length
    )


DERIVED: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    # env name -> (fields computed from the others, how)
    "CartPole-v1": (("total_mass", "polemass_length"), _derive_cartpole),
}
"""Parameters that gymnax stores but that are functions of other parameters."""


def param_fields(env_params: Any) -> dict[str, Any]:
    """``{name: value}`` of a dataclass of env parameters (a flax ``struct.dataclass``)."""
    if not dataclasses.is_dataclass(env_params):
        return {}
    return {f.name: getattr(env_params, f.name) for f in dataclasses.fields(env_params)}


def _is_static(env_params: Any, name: str) -> bool:
    for field in dataclasses.fields(env_params):
        if field.name == name:
            return field.metadata.get("pytree_node", True) is False or field.metadata.get(
                "static", False
            )
    return False


def check_param(env: Any, env_params: Any, name: str, value: Any) -> Any:
    """``value`` converted to the type of parameter ``name``, or :class:`ConfigError` naming
    the field, the value and what is allowed (unknown or static field, wrong kind of
    number, non-finite, a non-positive episode limit, a derived field)."""
    env_name = getattr(env, "name", type(env).__name__)
    fields = param_fields(env_params)
    if name not in fields:
        raise ConfigError(
            f"unknown env parameter {name!r} for {env_name}; parameters: {', '.join(fields)}"
        )
    if _is_static(env_params, name):
        raise ConfigError(
            f"env parameter {name!r} of {env_name} is static (it sets a shape or a loop "
            "length) and cannot be changed here"
        )
    derived, _ = DERIVED.get(env_name, ((), None))
    if name in derived:
        raise ConfigError(
            f"env parameter {name!r} of {env_name} is derived from the others; set those "
            f"instead (derived: {', '.join(derived)})"
        )
    current = np.asarray(fields[name])
    if current.ndim:
        raise ConfigError(
            f"env parameter {name!r} of {env_name} is an array of shape {current.shape}; only "
            "scalar parameters can be set this way"
        )
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"env.{name}={value!r} is not a number") from None
    if array.ndim or not np.isfinite(array):
        raise ConfigError(f"env.{name}={value!r} is out of range; allowed: a finite number")
    if current.dtype == bool:
        if array not in (0.0, 1.0):
            raise ConfigError(f"env.{name}={value!r} is not allowed; choose one of True, False")
        return bool(array)
    if np.issubdtype(current.dtype, np.integer):
        if array != np.round(array):
            raise ConfigError(f"env.{name}={value!r} must be an integer")
        if name == "max_steps_in_episode" and array < 1:
            raise ConfigError(f"env.{name}={int(array)} is out of range; allowed: integers ≥ 1")
        return int(array)
    return float(array)


def replace_params(env: Any, env_params: Any, **changes: Any) -> Any:
    """``env_params`` with ``changes`` applied (each validated by :func:`check_param`) and
    derived fields recomputed (CartPole's ``total_mass`` and ``polemass_length``)."""
    if not changes:
        return env_params
    checked = {name: check_param(env, env_params, name, v) for name, v in changes.items()}
    params = dataclasses.replace(env_params, **checked)
    _, derive = DERIVED.get(getattr(env, "name", type(env).__name__), ((), None))
    return derive(params) if derive is not None else params


def stack_params(params: Iterable[Any]) -> Any:
    """Env parameters stacked along a new leading axis (one row per run), to ``vmap`` over.

    Leaves are stacked in the dtype JAX uses (float32, int32)."""
    params = list(params)
    if not params:
        raise ConfigError("no env parameters to stack")

    def stack(*leaves):
        array = np.stack([np.asarray(x) for x in leaves])
        if array.dtype == np.float64:
            return array.astype(np.float32)
        if array.dtype == np.int64:
            return array.astype(np.int32)
        return array

    return jax.tree.map(stack, *params)


def kind(env_id: str) -> str:
    """``"discrete"``, ``"continuous"``, or ``"unavailable"`` for an env that cannot be
    built on this machine (MNISTBandit needs a dataset download)."""
    try:
        env, env_params = make(env_id)
    except ConfigError:
        return "unavailable"
    check_env(env)
    return action_kind(env, env_params)
