"""Model-predictive control in a gymnax environment: plan, execute the first action, replan.

At every step t the planner solves a finite-horizon problem from the environment's current
state s_t, using the environment's own transition as the model (its state is copied by
value), and only the first action a_t of the plan is executed in the real environment:

    a_t = first(plan(s_t; warm start shift(plan_{t−1}))),   s_{t+1} ~ env.step(s_t, a_t)

(Mayne et al., 2000, "Constrained model predictive control: stability and optimality";
Levine, CS 285 lecture 11). The whole episode is one ``lax.scan``, so it jits end to end and
vmaps over seeds. Any planner plugs in through :class:`Planner`: random shooting, CEM, MCTS
and iLQR are provided; ``minirl.runner.plan`` runs one by name (``minirl plan``).

The model is any environment (gymnax 1.x interface), a learned one included. Planning needs
steps that do not auto-reset: :func:`step_without_reset` uses gymnax's ``step_env`` and
``is_truncated`` where the env has them and falls back to ``step`` (whose auto-reset only
matters after the episode ended, where everything is masked).
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..core import rollout
from ..core.config import ConfigError, check_choice, check_positive_int
from . import lqr, mcts, shooting


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


def step_without_reset(
    env: Any, key: jax.Array, state: Any, action: jax.Array, env_params: Any
) -> tuple[Any, jax.Array, jax.Array, jax.Array]:
    """``(next_state, reward, terminated, truncated)`` of one step that keeps the state at
    an episode's end (gymnax's ``step_env``), or of ``env.step`` for an env without it."""
    if hasattr(env, "step_env"):
        _, next_state, reward, terminated, _ = env.step_env(key, state, action, env_params)
        truncated = (
            env.is_truncated(next_state, env_params) if hasattr(env, "is_truncated")
            else jnp.array(False)
        )
    else:
        _, next_state, reward, terminated, truncated, _ = env.step(key, state, action,
                                                                   env_params)
    return (next_state, jnp.asarray(reward, jnp.float32), jnp.asarray(terminated, bool),
            jnp.asarray(truncated, bool))


def mpc(
    key: jax.Array,
    env: Any,
    env_params: Any,
    planner: Planner,
    num_steps: int,
    env_state: Any = None,
) -> MPCResult:
    """Run ``planner`` in closed loop for ``num_steps`` steps (one episode, then masked).

    Starts from ``env.reset(key)`` unless ``env_state`` is given. ``terminated`` or the time
    limit ends the episode (gymnax 1.x), after which the state is held and the rewards are
    zero instead of auto-resetting.
    """
    check_positive_int("num_steps", num_steps)
    reset_key, key = jax.random.split(key)
    if env_state is None:
        _, env_state = env.reset(reset_key, env_params)

    def one(carry, key):
        state, plan_carry, ended, total, length = carry
        plan_key, step_key = jax.random.split(key)
        action, plan_carry = planner.act(plan_key, state, plan_carry)
        next_state, reward, terminated, truncated = step_without_reset(
            env, step_key, state, action, env_params
        )
        done = terminated | truncated
        live = ~ended
        reward = jnp.where(live, reward, 0.0)
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


def _env_name(env: Any) -> str:
    return getattr(env, "name", type(env).__name__)


def _box(env: Any, env_params: Any) -> tuple[jax.Array, jax.Array]:
    if rollout.action_kind(env, env_params) != "continuous":
        raise ConfigError(
            f"env={_env_name(env)!r} has discrete actions; this planner needs a continuous "
            "(box) action space"
        )
    low, high = rollout.action_bounds(env, env_params)
    if not low.shape:
        low, high = low[None], high[None]
    return low, high


def cost_model(env: Any, env_params: Any) -> shooting.Step:
    """The shooting model of an env: state (env_state, ended), cost = −reward.

    Steps with a fixed key and without auto-reset (:func:`step_without_reset`); rewards
    after a termination count zero.
    """
    key = jax.random.PRNGKey(0)

    def step(state, action):
        env_state, ended = state
        env_state, reward, terminated, _ = step_without_reset(env, key, env_state, action,
                                                              env_params)
        cost = jnp.where(ended, 0.0, -reward)
        return (env_state, ended | terminated), cost

    return step


def vector_model(env: Any, env_params: Any, fields: tuple[str, ...]):
    """``(dynamics(x, v, t), cost(x, v, t), to_vector, from_vector, squash)`` for iLQR.

    The state x concatenates the named fields of the env state (scalars or arrays, in
    order, flattened); the plan variable v maps to the
    action box by u = mid + half·tanh(v) so that the bounds hold and gradients stay alive.
    The cost is −reward of ``env.with_transition_gradients().step_env``.
    """
    if not getattr(env, "supports_transition_gradients", False):
        raise ConfigError(
            f"env={_env_name(env)!r} has no differentiable transitions; iLQR needs them"
        )
    diff_env = env.with_transition_gradients()
    low, high = _box(env, env_params)
    mid, half = (high + low) / 2, (high - low) / 2
    key = jax.random.PRNGKey(0)
    _, template = env.reset(key, env_params)

    def squash(v):
        return mid + half * jnp.tanh(v)

    shapes = [jnp.shape(getattr(template, f)) for f in fields]
    offsets = np.cumsum([0] + [math.prod(shape) for shape in shapes])

    def to_vector(state):
        return jnp.concatenate([jnp.ravel(jnp.asarray(getattr(state, f), jnp.float32))
                                for f in fields])

    def from_vector(x, like=template):
        return like.replace(**{f: x[offsets[i]:offsets[i + 1]].reshape(shapes[i])
                               for i, f in enumerate(fields)})

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
    if rollout.action_kind(env, env_params) != "discrete":
        raise ConfigError(
            f"env={_env_name(env)!r} has continuous actions; mcts needs a discrete action space"
        )
    num_actions = rollout.num_actions(env, env_params)
    model = mcts.gymnax_model(env, env_params)

    def act(key, env_state, carry):
        result = mcts.search(
            key,
            model,
            env_state,
            num_actions=num_actions,
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
    """iLQR on the env's differentiable transitions (the state fields ``fields``), in the
    squashed action variable v (u = mid + half·tanh v, :func:`vector_model`), from three
    starts at every step, keeping the cheapest plan.

    The starts are the shifted previous plan, clipped to |v| ≤ 2.5, and the constant plans
    v = +1 and v = −1, solved together (vmapped). iLQR is local, and with one start MPC is
    committed to the basin of its first plan: from the zero plan a pendulum released near
    the top falls and swings round (Pendulum-v1 from θ = 0.5: return −124, −2 with the
    constant starts), and hanging at rest the zero plan is stationary (∂J/∂v = 0 by
    symmetry). The clip matters once iLQR runs its full budget: it keeps pushing a saturated
    v outwards, where tanh′(v) ≈ 0 freezes that action in every later warm start (one
    episode in four never swung up without it); tanh′(2.5) = 0.027 leaves it movable.
    Pendulum-v1, 16 episodes: median −122, CEM's −120 (one start: −234).
    """
    dynamics, cost, to_vector, _, squash = vector_model(env, env_params, fields)
    low, _ = _box(env, env_params)
    reach = 2.5  # |v| of the warm start: u within 0.987·half of mid, still movable
    constants = jnp.array([1.0, -1.0])  # the constant starts, v = ±1 (u = mid ± 0.76·half)

    def act(key, env_state, previous):
        warm = jnp.clip(previous, -reach, reach)
        starts = jnp.concatenate([warm[None], constants[:, None, None] + jnp.zeros_like(warm)])
        solutions = jax.vmap(
            lambda plan: lqr.ilqr(
                dynamics,
                cost,
                to_vector(env_state),
                plan,
                max_iterations=max_iterations,
                reg_init=reg_init,
            )
        )(starts)
        best = jax.tree.map(lambda leaf: leaf[jnp.argmin(solutions.cost)], solutions)
        return squash(best.actions[0]), shooting.shift(best.actions, jnp.zeros_like(low))

    return Planner(lambda env_state: jnp.zeros((horizon, low.shape[0])), act)


# ----------------------------------------------------------------------------- host level

# Vector views of gymnax states with differentiable transitions, for iLQR (by env name).
VECTOR_FIELDS = {"Pendulum-v1": ("theta", "theta_dot"),
                 "Reacher-misc": ("angles", "angle_vels", "goal_xy")}

PLANNERS: dict[str, tuple[str, dict[str, Any]]] = {
    "random_shooting": ("continuous", {"horizon": 30, "num_samples": 1000}),
    "cem": (
        "continuous",
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
        "discrete",
        {
            "num_simulations": 64,
            "c": 0.5,
            "gamma": 1.0,
            "rollout_depth": 50,
            "num_rollouts": 16,
            "max_depth": 1000,
        },
    ),
    "ilqr": ("differentiable", {"horizon": 40, "max_iterations": 10, "reg_init": 1.0}),
}
"""planner name -> (the envs it plans in, default options). "differentiable": an env with
differentiable transitions and a vector view of its state (``VECTOR_FIELDS``)."""

def planner_options(planner: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The named planner's default options with ``options`` applied (names checked)."""
    check_choice("planner", planner, PLANNERS)
    defaults = PLANNERS[planner][1]
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for planner {planner!r}; allowed: {', '.join(defaults)}"
        )
    return {**defaults, **options}


def make_planner(
    planner: str, env: Any, env_params: Any, options: dict[str, Any] | None = None
) -> Planner:
    """The named planner for ``env`` with ``options`` overriding its defaults; a
    :class:`ConfigError` names an unknown planner or option, a bad value (sizes are integers
    ≥ 1, ``rollout_depth`` ≥ 0), or an env the planner cannot plan in."""
    merged = planner_options(planner, options)
    if PLANNERS[planner][0] == "differentiable" and _env_name(env) not in VECTOR_FIELDS:
        raise ConfigError(
            f"env={_env_name(env)!r} is not supported by ilqr; it needs differentiable "
            f"transitions and a state vector (supported: {', '.join(VECTOR_FIELDS)})"
        )
    for name, value in merged.items():
        if isinstance(PLANNERS[planner][1][name], int):
            check_positive_int(name, value, minimum=0 if name == "rollout_depth" else 1)
    factory = {
        "random_shooting": random_shooting_planner,
        "cem": cem_planner,
        "mcts": mcts_planner,
        "ilqr": lambda e, p, **kw: ilqr_planner(e, p, fields=VECTOR_FIELDS[_env_name(e)], **kw),
    }[planner]
    return factory(env, env_params, **merged)
