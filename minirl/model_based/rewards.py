"""Known reward and termination functions of a transition (obs, action, next_obs), by env.

Model-based planners that know the task's reward (PETS in its original form; Chua et al.,
2018, "Deep reinforcement learning in a handful of trials using probabilistic dynamics
models", app. "cost functions") learn only the dynamics and score imagined transitions with
these. Each is gymnax's formula rewritten on observations, so on a real transition it returns
exactly the env's reward (up to float rounding of recovering θ from (cos θ, sin θ)):

``Pendulum-v1``  obs = (cos θ, sin θ, θ̇); with θ = atan2(sin θ, cos θ) ∈ (−π, π] (which
    is already ``angle_normalize(θ)``) and u = clip(a, −max_torque, max_torque),
        r = −(θ² + 0.1 θ̇² + 0.001 u²)
    computed from the state *before* the step; never terminates.
``MountainCarContinuous-v0``  obs = (x, v); with the goal reached at the next state,
    g = [x' ≥ goal_position] · [v' ≥ goal_velocity],
        r = −0.1 a² + 100 g          (the unclipped action, as gymnax does)
    and the episode terminates when g.
``CartPole-v1``  obs = (x, ẋ, θ, θ̇); the episode terminates when the next state leaves the
    track or the pole falls past the threshold,
        terminated = |x'| > x_threshold  or  |θ'| > θ_threshold   (strict, as gymnax)
    and r = 1 − [obs is terminal] (gymnax rewards from the state before the step: 1 on every
    transition an agent sees, since a terminal state is reset before it acts again).

Signatures: ``reward(obs [d], action [m], next_obs [d], env_params) -> scalar`` and
``terminated(obs, action, next_obs, env_params) -> bool`` (``None`` when the env never
terminates); vmap them for batches. ``env_params`` is the real env's parameters (they hold
max_torque, the goal, ...).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..core.config import ConfigError

RewardFn = Callable[[jax.Array, jax.Array, jax.Array, Any], jax.Array]
DoneFn = Callable[[jax.Array, jax.Array, jax.Array, Any], jax.Array]


def pendulum_reward(obs: jax.Array, action: jax.Array, next_obs: jax.Array,
                    env_params: Any) -> jax.Array:
    """−(θ² + 0.1 θ̇² + 0.001 u²), θ = atan2(sin, cos), u = clip(a, ±max_torque)."""
    theta = jnp.arctan2(obs[..., 1], obs[..., 0])
    theta_dot = obs[..., 2]
    u = jnp.clip(jnp.reshape(action, (*obs.shape[:-1], -1))[..., 0],
                 -env_params.max_torque, env_params.max_torque)
    return -(jnp.square(theta) + 0.1 * jnp.square(theta_dot) + 0.001 * jnp.square(u))


def _mountain_car_goal(next_obs: jax.Array, env_params: Any) -> jax.Array:
    return (next_obs[..., 0] >= env_params.goal_position) & (
        next_obs[..., 1] >= env_params.goal_velocity)


def mountain_car_reward(obs: jax.Array, action: jax.Array, next_obs: jax.Array,
                        env_params: Any) -> jax.Array:
    """−0.1 a² + 100 [goal reached at next_obs]."""
    a = jnp.reshape(action, (*obs.shape[:-1], -1))[..., 0]
    return -0.1 * jnp.square(a) + 100.0 * _mountain_car_goal(next_obs, env_params)


def mountain_car_terminated(obs: jax.Array, action: jax.Array, next_obs: jax.Array,
                            env_params: Any) -> jax.Array:
    """x' ≥ goal_position and v' ≥ goal_velocity."""
    return _mountain_car_goal(next_obs, env_params)


def _cartpole_terminal(obs: jax.Array, env_params: Any) -> jax.Array:
    x, theta = obs[..., 0], obs[..., 2]
    return ((x < -env_params.x_threshold) | (x > env_params.x_threshold)
            | (theta < -env_params.theta_threshold_radians)
            | (theta > env_params.theta_threshold_radians))


def cartpole_reward(obs: jax.Array, action: jax.Array, next_obs: jax.Array,
                    env_params: Any) -> jax.Array:
    """1 − [obs is terminal]: 1 on every transition from a live state."""
    return 1.0 - _cartpole_terminal(obs, env_params).astype(jnp.float32)


def cartpole_terminated(obs: jax.Array, action: jax.Array, next_obs: jax.Array,
                        env_params: Any) -> jax.Array:
    """|x'| > x_threshold or |θ'| > θ_threshold."""
    return _cartpole_terminal(next_obs, env_params)


class Known(NamedTuple):
    reward: RewardFn
    terminated: DoneFn | None  # None: the env never terminates


KNOWN: dict[str, Known] = {
    "Pendulum-v1": Known(pendulum_reward, None),
    "MountainCarContinuous-v0": Known(mountain_car_reward, mountain_car_terminated),
    "CartPole-v1": Known(cartpole_reward, cartpole_terminated),
}
"""env name → its known reward and termination functions."""


def env_name(env: Any) -> str:
    return getattr(env, "name", type(env).__name__)


def known(env: Any) -> Known:
    """The known functions of ``env`` (by its ``name``), or :class:`ConfigError` listing the
    envs that have them."""
    name = env_name(env)
    if name not in KNOWN:
        raise ConfigError(
            f"env={name!r} has no known reward function; use reward='learned' or one of: "
            + ", ".join(KNOWN)
        )
    return KNOWN[name]


def never_terminated(obs: jax.Array, action: jax.Array, next_obs: jax.Array,
                     env_params: Any) -> jax.Array:
    """False (an env without terminal states)."""
    return jnp.zeros(obs.shape[:-1], bool)


# ----------------------------------------------------------------------------- costs c(x, u)

StateActionReward = Callable[[jax.Array, jax.Array, Any], jax.Array]


def pendulum_state_action_reward(obs: jax.Array, action: jax.Array, env_params: Any
                                 ) -> jax.Array:
    """Pendulum-v1's reward as a function of (obs, action) alone (it never reads next_obs)."""
    return pendulum_reward(obs, action, obs, env_params)


def reacher_state_action_reward(obs: jax.Array, action: jax.Array, env_params: Any
                                ) -> jax.Array:
    """gymnax's Reacher-misc reward as a function of (obs, action): its step integrates
    θ̇' = θ̇ + dt·scale·a, θ' = θ + dt·θ̇' (semi-implicit Euler, no clipping) and rewards the
    *next* state, exp(−|p(θ') − g|²) with the tip p(θ) = (Σ_j cos θ_j, Σ_j sin θ_j) and the
    goal g; obs = [cos θ, sin θ, θ̇, g] with J joints (J = (dim obs − 2) / 3). The next
    angles' cosines and sines follow from the observed ones by the angle-sum formulas, so
    no angle is unwrapped."""
    joints = (obs.shape[-1] - 2) // 3
    cos, sin = obs[:joints], obs[joints:2 * joints]
    velocity = obs[2 * joints:3 * joints]
    goal = obs[3 * joints:]
    delta = env_params.dt * (velocity + env_params.dt * env_params.torque_scale * action)
    tip = jnp.stack([jnp.sum(cos * jnp.cos(delta) - sin * jnp.sin(delta)),
                     jnp.sum(sin * jnp.cos(delta) + cos * jnp.sin(delta))])
    return jnp.exp(-jnp.sum(jnp.square(tip - goal)))


STATE_ACTION: dict[str, StateActionReward] = {"Pendulum-v1": pendulum_state_action_reward,
                                              "Reacher-misc": reacher_state_action_reward}
"""env name → r(obs, action, env_params) for envs whose known reward does not read the next
observation and which never terminate: what trajectory optimisers with a known cost c(x, u)
= −r (LQR-FLM, GPS) need. Add an entry for your own env."""


def state_action_reward(env: Any) -> StateActionReward:
    """r(obs, action, env_params) of ``env`` (by its ``name``), or :class:`ConfigError`
    listing the envs that have one."""
    name = env_name(env)
    if name not in STATE_ACTION:
        raise ConfigError(
            f"env={name!r} has no known reward of (observation, action) for a fixed-horizon "
            "task; supported: " + ", ".join(STATE_ACTION)
            + " (add yours to minirl.model_based.rewards.STATE_ACTION)"
        )
    return STATE_ACTION[name]
