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
from ..core.rollout import ActionRepeat as ActionRepeat  # a wrapper, re-exported here
from ..core.rollout import action_kind, check_env

PIXELS = "-pixels"
"""``envs.make(id + PIXELS)``: the env of ``id`` observed through :class:`PixelObservations`."""
PIXEL_SIZE = 16
"""Side of the grayscale images of the ``-pixels`` ids: small enough for a CPU (PlaNet's
preset is tuned on it); build :class:`PixelObservations` yourself for other sizes."""


def _renderable() -> tuple[str, ...]:
    from .render import RENDERERS

    return tuple(RENDERERS)


REGISTERED: tuple[str, ...] = tuple(gymnax.registered_envs) + tuple(
    f"{env_id}{PIXELS}" for env_id in _renderable()
)


@functools.cache
def _gymnax(env_id: str) -> tuple[Any, Any]:
    # One env object per id: the env is a static argument of jit, so reusing the same
    # object lets every call hit the same compiled program.
    return gymnax.make(env_id)


def check_id(env_id: str) -> None:
    """Raise :class:`ConfigError` naming ``env_id`` and the known ids if it is unknown."""
    if env_id not in REGISTERED:
        raise ConfigError(
            f"env={env_id!r} is not a gymnax environment; choose one of: "
            + ", ".join(REGISTERED)
        )


def make(env_id: str, **params: Any) -> tuple[Any, Any]:
    """The gymnax environment ``env_id`` and its parameters, with ``params`` overriding the
    defaults (validated by :func:`replace_params`). ``"Pendulum-v1-pixels"`` (any renderable
    id + ``PIXELS``) is that env observed as ``PIXEL_SIZE``² grayscale images."""
    check_id(env_id)
    if env_id.endswith(PIXELS):
        env, env_params = make(env_id[: -len(PIXELS)], **params)
        return PixelObservations(env, size=PIXEL_SIZE, grayscale=True), env_params
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


# ----------------------------------------------------------------------------- wrappers


class _Box:
    """A box space: ``low``, ``high``, ``shape`` (what minirl reads off a space)."""

    def __init__(self, low: float, high: float, shape: tuple[int, ...], dtype=np.float32):
        self.low, self.high, self.shape, self.dtype = low, high, shape, dtype

    def sample(self, key):
        return jax.random.uniform(key, self.shape, minval=self.low, maxval=self.high)


class PixelObservations:
    """An env whose observations are images of its state, drawn inside ``jit``.

    ``PixelObservations(env, size=64)`` observes ``[size, size, 3]`` float32 images in [0, 1]
    rendered by ``minirl.envs.render`` (or ``[size, size, 1]`` with ``grayscale=True``); the
    state, the reward and the episode ends are the wrapped env's. ``final_observation`` is the
    image of the state before the automatic reset (gymnax 1.x semantics), so it needs the
    wrapped env's ``step_env`` and ``is_truncated`` (every gymnax env has them). One image
    shows no velocity: latent models with memory (PlaNet) recover it; a model-free agent
    would stack frames. Renderable envs: ``render.RENDERERS``.
    """

    def __init__(self, env: Any, size: int = 64, grayscale: bool = False):
        from . import render

        draw = render.renderer(env)
        if draw is None:
            raise ConfigError(
                f"env={getattr(env, 'name', type(env).__name__)!r} has no renderer; pixel "
                f"observations exist for: {', '.join(render.RENDERERS)}"
            )
        for method in ("step_env", "is_truncated"):
            if not hasattr(env, method):
                raise ConfigError(f"PixelObservations needs the wrapped env's {method}")
        self.env, self.size, self.grayscale, self._draw = env, size, grayscale, draw
        self.name = f"{env.name}-pixels"

    def __hash__(self) -> int:  # a static argument of jit: equal wrappers share programs
        return hash((PixelObservations, self.env, self.size, self.grayscale))

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, PixelObservations) and (
            self.env, self.size, self.grayscale) == (other.env, other.size, other.grayscale)

    def render(self, state: Any, params: Any) -> jax.Array:
        image = self._draw(state, params, self.size)
        if self.grayscale:
            image = image.mean(axis=-1, keepdims=True)
        return image

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        _, state = self.env.reset(key, params)
        return self.render(state, params), state

    def step_env(self, key, state, action, params):
        _, next_state, reward, terminated, info = self.env.step_env(key, state, action, params)
        return self.render(next_state, params), next_state, reward, terminated, info

    def is_truncated(self, state: Any, params: Any) -> jax.Array:
        return self.env.is_truncated(state, params)

    def step(self, key, state, action, params):
        step_key, reset_key = jax.random.split(key)
        final_obs, next_state, reward, terminated, info = self.step_env(step_key, state, action,
                                                                        params)
        truncated = self.env.is_truncated(next_state, params)
        done = jax.numpy.logical_or(terminated, truncated)
        reset_obs, reset_state = self.reset(reset_key, params)
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), reset_state, next_state)
        obs = jax.lax.select(done, reset_obs, final_obs)
        info = {**info, "final_observation": final_obs}
        return obs, state, reward, terminated, truncated, info

    def observation_space(self, params: Any) -> _Box:
        return _Box(0.0, 1.0, (self.size, self.size, 1 if self.grayscale else 3))

    def action_space(self, params: Any) -> Any:
        return self.env.action_space(params)

    @property
    def default_params(self) -> Any:
        return self.env.default_params
