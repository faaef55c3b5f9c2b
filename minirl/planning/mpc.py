"""Model-predictive control in a gymnax environment: plan, execute the first action, replan.

At every step t the planner solves a finite-horizon problem from the environment's current
state s_t, using the environment's own transition as the model (its state is copied by
value), and only the first action a_t of the plan is executed in the real environment:

    a_t = first(plan(s_t; warm start shift(plan_{t−1}))),   s_{t+1} ~ env.step(s_t, a_t)

(Mayne et al., 2000, "Constrained model predictive control: stability and optimality";
Levine, CS 285 lecture 11). The whole episode is one ``lax.scan``, so it jits end to end and
vmaps over seeds. Any planner plugs in through :class:`Planner`: random shooting, CEM, MCTS
and iLQR are provided. :func:`run_planner` is the host-level entry point of ``minirl plan``.
"""

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

from minirl.core import rollout
from minirl.core.config import check_choice, check_positive_int
from minirl.planning import lqr, mcts, shooting


class Planner(NamedTuple):
    """``init(env_state) -> carry``; ``act(key, env_state, carry) -> (action, carry)``.

    ``carry`` is what the planner keeps between steps (e.g. the previous plan for a warm
    start); it must have a fixed shape.
    """

    init: Callable[[Any], Any]
    act: Callable[[jax.Array, Any, Any], tuple[jax.Array, Any]]


class MPCResult(eqx.Module):
    """One MPC episode: leaves ``[T]`` (``[S, T]`` vmapped over seeds)."""

    rewards: jax.Array  # reward of each step (zero after the episode ended)
    actions: jax.Array  # executed actions
    done: jax.Array  # True from the step that ended the episode onwards
    episode_return: jax.Array  # Σ rewards up to and including the first done
    episode_length: jax.Array  # number of steps of the episode
    final_state: Any  # the environment state after the last step of the episode


def mpc(
    key: jax.Array,
    env: Any,
    env_params: Any,
    planner: Planner,
    num_steps: int,
    env_state: Any = None,
) -> MPCResult:
    """Run ``planner`` in closed loop for ``num_steps`` steps (one episode, then masked).

    Starts from ``env.reset(key)`` unless ``env_state`` is given. The environment is stepped
    with ``env.step_env``; ``terminated`` or the time limit (``env.is_truncated``) ends the
    episode, as in gymnax 1.x's ``env.step``, after which the state is held and the rewards
    are zero instead of auto-resetting.
    """
    check_positive_int("num_steps", num_steps)
    reset_key, key = jax.random.split(key)
    if env_state is None:
        _, env_state = env.reset(reset_key, env_params)

    def one(carry, key):
        state, plan_carry, ended, total, length = carry
        plan_key, step_key = jax.random.split(key)
        action, plan_carry = planner.act(plan_key, state, plan_carry)
        _, next_state, reward, terminated, _ = env.step_env(step_key, state, action, env_params)
        done = jnp.asarray(terminated, bool) | env.is_truncated(next_state, env_params)
        live = ~ended
        reward = jnp.where(live, jnp.asarray(reward, jnp.float32), 0.0)
        # after the episode's end the state is frozen (no auto-reset: one episode per run)
        state = jax.tree.map(lambda new, old: jnp.where(live, new, old), next_state, state)
        ended = ended | done
        carry = (state, plan_carry, ended, total + reward, length + live.astype(jnp.int32))
        return carry, (reward, action, ended)

    init = (
        env_state,
        planner.init(env_state),
        jnp.array(False),
        jnp.zeros((), jnp.float32),
        jnp.zeros((), jnp.int32),
    )
    (final_state, _, _, total, length), (rewards, actions, done) = jax.lax.scan(
        one, init, jax.random.split(key, num_steps)
    )
    return MPCResult(rewards, actions, done, total, length, final_state)


# ----------------------------------------------------------------------------- models


def _box(env: Any, env_params: Any) -> tuple[jax.Array, jax.Array]:
    space = env.action_space(env_params)
    if not isinstance(space, spaces.Box):
        raise ValueError(
            f"env={env.name!r} has a {type(space).__name__} action space; allowed: Box"
        )
    shape = space.shape if len(space.shape) else (1,)
    low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), shape)
    high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), shape)
    return low, high


def cost_model(env: Any, env_params: Any) -> shooting.Step:
    """The shooting model of a gymnax env: state (env_state, ended), cost = −reward.

    Uses ``env.step_env`` with a fixed key (no auto-reset); rewards after a termination
    count zero.
    """
    key = jax.random.PRNGKey(0)

    def step(state, action):
        env_state, ended = state
        _, env_state, reward, terminated, _ = env.step_env(key, env_state, action, env_params)
        cost = jnp.where(ended, 0.0, -jnp.asarray(reward, jnp.float32))
        return (env_state, ended | jnp.asarray(terminated, bool)), cost

    return step


# Vector views of gymnax states with differentiable transitions, for iLQR.
VECTOR_FIELDS = {"Pendulum-v1": ("theta", "theta_dot")}


def vector_model(env: Any, env_params: Any, fields: tuple[str, ...]):
    """``(dynamics(x, v, t), cost(x, v, t), to_vector, from_vector, squash)`` for iLQR.

    The state x stacks the named fields of the env state; the plan variable v maps to the
    action box by u = mid + half·tanh(v) so that the bounds hold and gradients stay alive.
    The cost is −reward of ``env.with_transition_gradients().step_env``.
    """
    if not env.supports_transition_gradients:
        raise ValueError(f"env={env.name!r} has no differentiable transitions; iLQR needs them")
    diff_env = env.with_transition_gradients()
    low, high = _box(env, env_params)
    mid, half = (high + low) / 2, (high - low) / 2
    key = jax.random.PRNGKey(0)
    _, template = env.reset(key, env_params)

    def squash(v):
        return mid + half * jnp.tanh(v)

    def to_vector(state):
        return jnp.stack([jnp.asarray(getattr(state, f), jnp.float32) for f in fields])

    def from_vector(x, like=template):
        return like.replace(**{f: x[i] for i, f in enumerate(fields)})

    def transition(x, v):
        _, state, reward, _, _ = diff_env.step_env(key, from_vector(x), squash(v), env_params)
        return to_vector(state), -jnp.asarray(reward, x.dtype)

    dynamics = lambda x, v, t: transition(x, v)[0]
    cost = lambda x, v, t: transition(x, v)[1]
    return dynamics, cost, to_vector, from_vector, squash


# ----------------------------------------------------------------------------- planners


def random_shooting_planner(
    env: Any, env_params: Any, *, horizon: int = 30, num_samples: int = 1000
) -> Planner:
    """Random shooting with the env as model; no warm start."""
    low, high = _box(env, env_params)
    step = cost_model(env, env_params)

    def act(key, env_state, carry):
        plan = shooting.random_shooting(
            key,
            step,
            (env_state, jnp.array(False)),
            horizon=horizon,
            num_samples=num_samples,
            low=low,
            high=high,
        )
        return plan.actions[0], carry

    return Planner(lambda env_state: jnp.zeros(()), act)


def cem_planner(
    env: Any,
    env_params: Any,
    *,
    horizon: int = 30,
    num_samples: int = 200,
    num_elites: int = 20,
    iterations: int = 4,
    init_std: float = 1.0,
    smoothing: float = 0.1,
) -> Planner:
    """CEM with the env as model, warm-started from the shifted previous plan."""
    low, high = _box(env, env_params)
    step = cost_model(env, env_params)
    std = init_std * (high - low) / 2

    def act(key, env_state, previous):
        plan = shooting.cem(
            key,
            step,
            (env_state, jnp.array(False)),
            previous,
            num_samples=num_samples,
            num_elites=num_elites,
            iterations=iterations,
            low=low,
            high=high,
            init_std=std,
            smoothing=smoothing,
        )
        return plan.actions[0], shooting.shift(plan.actions, (low + high) / 2)

    init = lambda env_state: jnp.broadcast_to((low + high) / 2, (horizon, low.shape[0]))
    return Planner(init, act)


def mcts_planner(
    env: Any,
    env_params: Any,
    *,
    num_simulations: int = 64,
    c: float = 0.5,
    gamma: float = 1.0,
    rollout_depth: int = 50,
    num_rollouts: int = 16,
    max_depth: int = 1_000,
) -> Planner:
    """UCT with the env as model (discrete actions), searched afresh at every step; each new
    leaf is valued by the mean of ``num_rollouts`` uniformly random rollouts."""
    space = env.action_space(env_params)
    if not isinstance(space, spaces.Discrete):
        raise ValueError(
            f"env={env.name!r} has a {type(space).__name__} action space; allowed: Discrete"
        )
    model = mcts.gymnax_model(env, env_params)

    def act(key, env_state, carry):
        result = mcts.search(
            key,
            model,
            env_state,
            num_actions=int(space.n),
            num_simulations=num_simulations,
            c=c,
            gamma=gamma,
            rollout_depth=rollout_depth,
            num_rollouts=num_rollouts,
            max_depth=max_depth,
        )
        return result.action, carry

    return Planner(lambda env_state: jnp.zeros(()), act)


def ilqr_planner(
    env: Any,
    env_params: Any,
    *,
    fields: tuple[str, ...],
    horizon: int = 40,
    max_iterations: int = 10,
    reg_init: float = 1.0,
) -> Planner:
    """iLQR on the env's differentiable transitions (the state fields ``fields``), warm
    started from the shifted previous plan, in the squashed action variable."""
    dynamics, cost, to_vector, _, squash = vector_model(env, env_params, fields)
    low, _ = _box(env, env_params)

    def act(key, env_state, previous):
        solution = lqr.ilqr(
            dynamics,
            cost,
            to_vector(env_state),
            previous,
            max_iterations=max_iterations,
            reg_init=reg_init,
        )
        return squash(solution.actions[0]), shooting.shift(solution.actions, jnp.zeros_like(low))

    return Planner(lambda env_state: jnp.zeros((horizon, low.shape[0])), act)


# ----------------------------------------------------------------------------- host level

CONTINUOUS = ("Pendulum-v1", "MountainCarContinuous-v0")
PLANNERS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "random_shooting": (CONTINUOUS, {"horizon": 30, "num_samples": 1000}),
    "cem": (
        CONTINUOUS,
        {
            "horizon": 30,
            "num_samples": 200,
            "num_elites": 20,
            "iterations": 4,
            "init_std": 1.0,
            "smoothing": 0.1,
        },
    ),
    "mcts": (
        ("CartPole-v1", "Acrobot-v1", "MountainCar-v0"),
        {
            "num_simulations": 64,
            "c": 0.5,
            "gamma": 1.0,
            "rollout_depth": 50,
            "num_rollouts": 16,
            "max_depth": 1000,
        },
    ),
    "ilqr": (tuple(VECTOR_FIELDS), {"horizon": 40, "max_iterations": 10, "reg_init": 1.0}),
}
"""planner name -> (env ids it supports, default options)."""


def make_planner(planner: str, env_id: str, options: dict[str, Any] | None = None) -> Planner:
    """The named planner for ``env_id`` with ``options`` overriding its defaults."""
    check_choice("planner", planner, PLANNERS)
    env_ids, defaults = PLANNERS[planner]
    check_choice("env", env_id, env_ids)
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for planner {planner!r}; allowed: {', '.join(defaults)}"
        )
    merged = {**defaults, **options}
    for name in (
        "horizon",
        "num_samples",
        "num_elites",
        "iterations",
        "num_simulations",
        "max_iterations",
        "max_depth",
        "num_rollouts",
    ):
        if name in merged:
            merged[name] = int(merged[name])
            check_positive_int(name, merged[name])
    if "rollout_depth" in merged:
        merged["rollout_depth"] = int(merged["rollout_depth"])
        check_positive_int("rollout_depth", merged["rollout_depth"], minimum=0)
    env, env_params = rollout.make_env(env_id)
    factory = {
        "random_shooting": random_shooting_planner,
        "cem": cem_planner,
        "mcts": mcts_planner,
        "ilqr": lambda e, p, **kw: ilqr_planner(e, p, fields=VECTOR_FIELDS[env_id], **kw),
    }[planner]
    return factory(env, env_params, **merged)


def run_planner(
    planner: str,
    env_id: str,
    seeds: int = 4,
    steps: int | None = None,
    options: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """One MPC episode per seed, all seeds in one jitted, vmapped program.

    ``steps`` defaults to the env's episode limit. Returns a dict of host values:
    ``returns`` [seeds] and ``lengths`` [seeds] (the episode of each seed),
    ``rewards`` [seeds, steps] (per-step rewards, zero after the episode ended),
    ``options`` (the planner options used), ``env_steps`` (seeds × steps) and
    ``wall_time_s`` (including compilation). Raises ``ValueError`` for an unknown planner,
    an unsupported env, an unknown option or a bad value.
    """
    check_positive_int("seeds", seeds)
    plan = make_planner(planner, env_id, options)
    env, env_params = rollout.make_env(env_id)
    if steps is None:
        steps = int(env_params.max_steps_in_episode)
    check_positive_int("steps", steps)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    run = jax.jit(jax.vmap(lambda key: mpc(key, env, env_params, plan, steps)))
    start = time.perf_counter()
    result = jax.block_until_ready(run(keys))
    wall = time.perf_counter() - start
    return {
        "planner": planner,
        "env": env_id,
        "options": {**PLANNERS[planner][1], **(options or {})},
        "returns": np.asarray(result.episode_return),
        "lengths": np.asarray(result.episode_length),
        "rewards": np.asarray(result.rewards),
        "env_steps": seeds * steps,
        "wall_time_s": wall,
    }
