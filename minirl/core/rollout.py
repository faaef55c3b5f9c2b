"""Vectorised gymnax stepping and trajectory collection under ``lax.scan``.

gymnax 1.x semantics (``env.step`` returns ``obs, state, reward, terminated, truncated,
info``, auto-resets, and ``info["final_observation"]`` holds the observation before the
reset) are kept exactly: a transition's ``next_obs`` is the *true* next observation, so a
learner bootstraps from ``V(next_obs)`` on truncation and cuts only on ``terminated``.
An episode is counted in the statistics when ``terminated | truncated``.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .config import ConfigError

Policy = Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]]
"""``policy(key, obs[E, ...]) -> (action[E, ...], policy_info)``."""


# ----------------------------------------------------------------------------- env facts
#
# An environment is any object with gymnax 1.x's pure methods ``reset(key, params)``,
# ``step(key, state, action, params)`` (a 6-tuple with ``info["final_observation"]``),
# ``observation_space(params)`` and ``action_space(params)``. A discrete action space has
# an integer ``n``; a continuous one has ``low``, ``high`` and ``shape``. These helpers read
# what an algorithm needs from the spaces, so nothing here depends on gymnax's classes.


def check_env(env: Any) -> None:
    """Raise :class:`ConfigError` unless ``env`` has the methods of the environment interface."""
    missing = [m for m in ("reset", "step", "observation_space", "action_space")
               if not callable(getattr(env, m, None))]
    if missing:
        raise ConfigError(
            f"env={type(env).__name__} lacks {', '.join(missing)}; an environment needs "
            "gymnax 1.x's reset(key, params), step(key, state, action, params), "
            "observation_space(params) and action_space(params)"
        )


def action_kind(env: Any, env_params: Any) -> str:
    """``"discrete"`` (the action space has ``n``) or ``"continuous"`` (a box)."""
    return "discrete" if hasattr(env.action_space(env_params), "n") else "continuous"


def num_actions(env: Any, env_params: Any) -> int:
    """|A| of a discrete action space (a Python int: it sets shapes)."""
    return int(env.action_space(env_params).n)


def action_shape(env: Any, env_params: Any) -> tuple[int, ...]:
    """The shape of one continuous action."""
    return tuple(env.action_space(env_params).shape)


def action_bounds(env: Any, env_params: Any) -> tuple[jax.Array, jax.Array]:
    """``(low, high)`` of a box action space, float32 arrays of the action's shape.

    They may be traced (bounds that depend on ``env_params``, swept with ``vmap``)."""
    space = env.action_space(env_params)
    shape = tuple(space.shape)
    low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), shape)
    high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), shape)
    return low, high


def observation_shape(env: Any, env_params: Any) -> tuple[int, ...]:
    """The shape of one observation, read off an abstract ``reset`` (nothing is computed)."""
    obs, _ = jax.eval_shape(env.reset, jax.random.PRNGKey(0), env_params)
    return tuple(obs.shape)


def require_action_kind(env: Any, env_params: Any, allowed: str, algo: str) -> None:
    """Raise :class:`ConfigError` unless the env's action space is ``allowed``
    (``"discrete"``, ``"continuous"`` or ``"both"``)."""
    check_env(env)
    kind = action_kind(env, env_params)
    if allowed != "both" and kind != allowed:
        name = getattr(env, "name", type(env).__name__)
        raise ConfigError(
            f"env={name!r} has {kind} actions; {algo} needs a {allowed} action space"
        )


class EpisodeStats(eqx.Module):
    """Running return and length of the episode in progress in each of ``E`` envs."""

    returns: jax.Array  # [E]
    lengths: jax.Array  # [E]

    @classmethod
    def zeros(cls, num_envs: int) -> "EpisodeStats":
        return cls(jnp.zeros(num_envs, jnp.float32), jnp.zeros(num_envs, jnp.int32))

    def update(
        self, reward: jax.Array, done: jax.Array
    ) -> tuple["EpisodeStats", jax.Array, jax.Array]:
        """Add one step; return the new stats and, per env, the finished episode's return
        and length where ``done`` (zero elsewhere)."""
        returns = self.returns + reward.astype(jnp.float32)
        lengths = self.lengths + 1
        finished_return = jnp.where(done, returns, 0.0)
        finished_length = jnp.where(done, lengths, 0)
        stats = EpisodeStats(jnp.where(done, 0.0, returns), jnp.where(done, 0, lengths))
        return stats, finished_return, finished_length


class EnvCarry(eqx.Module):
    """What a collector carries between steps: env state, current obs, episode stats."""

    env_state: Any
    obs: jax.Array
    stats: EpisodeStats


class Transition(eqx.Module):
    """One step of ``E`` environments; leaves are ``[E, ...]`` (``[T, E, ...]`` stacked).

    ``next_obs`` is the true next observation (``final_observation`` at an episode end).
    ``episode_return``/``episode_length`` hold the finished episode's statistics where
    ``done = terminated | truncated`` and zero elsewhere. ``policy_info`` is whatever the
    policy returned besides the action (behaviour probabilities, log-probs, values).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    episode_return: jax.Array | None = None
    episode_length: jax.Array | None = None
    policy_info: Any = None

    @property
    def done(self) -> jax.Array:
        return self.terminated | self.truncated


def example_transition(obs: jax.Array, action: jax.Array, policy_info: Any = None) -> Transition:
    """One transition shaped like one observation ``obs`` and one ``action`` (and, if given,
    ``policy_info``), with a float32 reward and boolean episode ends: the item a replay
    buffer is initialised with (``buffer.init(capacity, example)``); values are not used."""
    return Transition(
        obs=obs,
        action=action,
        reward=jnp.zeros((), jnp.float32),
        next_obs=obs,
        terminated=jnp.zeros((), bool),
        truncated=jnp.zeros((), bool),
        policy_info=policy_info,
    )


def reset(key: jax.Array, env: Any, env_params: Any, num_envs: int) -> EnvCarry:
    """Reset ``num_envs`` copies of ``env``."""
    keys = jax.random.split(key, num_envs)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(keys, env_params)
    return EnvCarry(env_state, obs, EpisodeStats.zeros(num_envs))


def env_step(
    key: jax.Array, env: Any, env_params: Any, carry: EnvCarry, action: jax.Array, policy_info=None
) -> tuple[EnvCarry, Transition]:
    """Step every env once with ``action`` [E, ...] (auto-reset as gymnax does)."""
    keys = jax.random.split(key, carry.obs.shape[0])
    obs, env_state, reward, terminated, truncated, info = jax.vmap(
        env.step, in_axes=(0, 0, 0, None)
    )(keys, carry.env_state, action, env_params)
    terminated = terminated.astype(bool)
    truncated = truncated.astype(bool)
    reward = reward.astype(jnp.float32)
    stats, finished_return, finished_length = carry.stats.update(reward, terminated | truncated)
    transition = Transition(
        obs=carry.obs,
        action=action,
        reward=reward,
        next_obs=info["final_observation"],
        terminated=terminated,
        truncated=truncated,
        episode_return=finished_return,
        episode_length=finished_length,
        policy_info=policy_info,
    )
    return EnvCarry(env_state, obs, stats), transition


def collect(
    key: jax.Array,
    env: Any,
    env_params: Any,
    carry: EnvCarry,
    policy: Policy,
    num_steps: int,
) -> tuple[EnvCarry, Transition]:
    """Run ``policy`` for ``num_steps`` steps in every env with ``lax.scan``.

    Returns the final carry and the trajectory with leaves ``[T, E, ...]``.
    """

    def one_step(carry: EnvCarry, step_key: jax.Array) -> tuple[EnvCarry, Transition]:
        act_key, env_key = jax.random.split(step_key)
        action, policy_info = policy(act_key, carry.obs)
        return env_step(env_key, env, env_params, carry, action, policy_info)

    return jax.lax.scan(one_step, carry, jax.random.split(key, num_steps))


def random_policy(env: Any, env_params: Any) -> Policy:
    """Uniformly random actions from the env's action space (the throughput floor)."""
    space = env.action_space(env_params)

    def policy(key: jax.Array, obs: jax.Array) -> tuple[jax.Array, None]:
        keys = jax.random.split(key, obs.shape[0])
        return jax.vmap(space.sample)(keys), None

    return policy


def episode_metrics(trajectory: Transition) -> dict[str, jax.Array]:
    """Sums and count of the episodes completed in ``trajectory`` (any leading axes).

    Sums, not means, so that the host can pool them over any window of iterations.
    """
    done = trajectory.done
    return {
        "episodes": jnp.sum(done).astype(jnp.int32),
        "episode_return_sum": jnp.sum(trajectory.episode_return),
        "episode_length_sum": jnp.sum(trajectory.episode_length).astype(jnp.int32),
    }


class ActionRepeat:
    """An env whose one step holds an action for ``repeat`` steps of ``env``: the rewards are
    summed, and the step stops early (holding the state) at an episode's end.

    ``step`` returns gymnax 1.x's tuple: ``terminated``/``truncated`` of the step that ended
    the episode, ``info["final_observation"]`` the observation before the automatic reset,
    and ``info["env_steps"]`` how many steps of ``env`` were taken (``repeat``, fewer when
    the episode ended). PlaNet acts through it (``planet.acting_env``; Hafner et al., 2019,
    hold each action for R steps); ``minirl.envs.ActionRepeat`` is the same class.
    """

    def __init__(self, env: Any, repeat: int):
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ConfigError(f"repeat={repeat!r} must be an integer ≥ 1")
        self.env, self.repeat = env, repeat
        self.name = getattr(env, "name", type(env).__name__)

    def __hash__(self) -> int:  # a static argument of jit: equal wrappers share programs
        return hash((ActionRepeat, self.env, self.repeat))

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ActionRepeat) and (self.env, self.repeat) == (other.env,
                                                                               other.repeat)

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        return self.env.reset(key, params)

    def step(self, key: jax.Array, state: Any, action: jax.Array, params: Any):
        def one(carry, step_key):
            state, obs, reward, terminated, truncated, final_obs, ended, steps = carry
            new_obs, new_state, r, term, trunc, info = self.env.step(step_key, state, action,
                                                                     params)
            live = ~ended
            keep = lambda new, old: jax.tree.map(  # noqa: E731  (held once the episode ended)
                lambda n, o: jnp.where(live, n, o), new, old)
            term, trunc = jnp.asarray(term, bool), jnp.asarray(trunc, bool)
            carry = (
                keep(new_state, state), keep(new_obs, obs),
                reward + jnp.where(live, jnp.asarray(r, jnp.float32), 0.0),
                terminated | (live & term), truncated | (live & trunc),
                keep(info["final_observation"], final_obs), ended | term | trunc,
                steps + live.astype(jnp.int32),
            )
            return carry, None

        like = jax.eval_shape(self.env.step, key, state, action, params)[0]
        obs = jnp.zeros(like.shape, like.dtype)
        no = jnp.zeros((), bool)
        init = (state, obs, jnp.zeros((), jnp.float32), no, no, obs, no,
                jnp.zeros((), jnp.int32))
        (state, obs, reward, terminated, truncated, final_obs, _, steps), _ = jax.lax.scan(
            one, init, jax.random.split(key, self.repeat))
        return obs, state, reward, terminated, truncated, {"final_observation": final_obs,
                                                           "env_steps": steps}

    def observation_space(self, params: Any) -> Any:
        return self.env.observation_space(params)

    def action_space(self, params: Any) -> Any:
        return self.env.action_space(params)

    @property
    def default_params(self) -> Any:
        return self.env.default_params
