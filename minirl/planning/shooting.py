"""Shooting planners over open-loop action sequences: random shooting and the cross-entropy
method (CEM).

Both minimise the cost of an action sequence a_{0:H} under a deterministic model

    J(a_{0:H}) = Σ_{t<H} cost_t + final_cost(s_H),      (s_{t+1}, cost_t) = step(s_t, a_t),

where the state s may be any pytree (a gymnax ``EnvState`` serves as it is).

*Random shooting* samples N sequences uniformly in the action box and keeps the best
(Nagabandi et al., 2018, "Neural network dynamics for model-based deep RL with model-free
fine-tuning"). *CEM* (Rubinstein, 1999; Botev et al., 2013, "The cross-entropy method for
optimization") samples N sequences from a diagonal Gaussian clipped to the bounds, refits
the Gaussian to the M lowest-cost samples (the elites), and repeats:

    μ ← β μ + (1 − β) mean(elites),    σ ← β σ + (1 − β) std(elites)

with smoothing β ∈ [0, 1). The current mean is always one of the samples, and the plan
returned is the lowest-cost sequence evaluated in any iteration, so the returned cost is the
cost of the returned plan and never exceeds that of the initial mean (a warm start, e.g.
:func:`shift` of the previous plan in MPC; Chua et al., 2018, "PETS"). The loop is
``core.action_search.cross_entropy_method`` (the one QT-Opt's action search runs) maximising
−J over sequences.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ..core.action_search import cross_entropy_method
from ..core.config import ConfigError, check_positive_int, check_range

Step = Callable[[Any, jax.Array], tuple[Any, jax.Array]]
"""``step(state, action[m]) -> (next_state, cost)``, deterministic."""


class Plan(eqx.Module):
    """An action sequence, the states it is predicted to visit, and its predicted cost."""

    actions: jax.Array  # [H, m]
    states: Any  # pytree with leaves [H+1, ...]: s_0 … s_H
    cost: jax.Array  # scalar J(actions)


def evaluate(
    step: Step,
    state: Any,
    actions: jax.Array,
    final_cost: Callable[[Any], jax.Array] | None = None,
) -> tuple[Any, jax.Array]:
    """States s_0 … s_H (leaves [H+1, ...]) and cost J of ``actions`` [H, m] from ``state``.

    A non-finite cost counts as +∞ so that it is never selected.
    """

    def one(s, a):
        s_next, cost = step(s, a)
        return s_next, (s_next, cost)

    last, (states, costs) = jax.lax.scan(one, state, actions)
    total = jnp.sum(costs) + (0.0 if final_cost is None else final_cost(last))
    states = jax.tree.map(lambda s0, rest: jnp.concatenate([s0[None], rest]), state, states)
    return states, jnp.where(jnp.isfinite(total), total, jnp.inf)


def best_of(
    step: Step,
    state: Any,
    candidates: jax.Array,
    final_cost: Callable[[Any], jax.Array] | None = None,
) -> Plan:
    """The lowest-cost sequence among ``candidates`` [N, H, m] (the first one on ties)."""
    states, costs = jax.vmap(evaluate, in_axes=(None, None, 0, None))(
        step, state, candidates, final_cost
    )
    best = jnp.argmin(costs)
    return Plan(candidates[best], jax.tree.map(lambda x: x[best], states), costs[best])


def _check_bounds(low, high, action_dim):
    low, high = jnp.broadcast_to(low, (action_dim,)), jnp.broadcast_to(high, (action_dim,))
    try:
        bad = bool(jnp.any(low > high))
    except jax.errors.ConcretizationTypeError:  # traced bounds: nothing to check
        bad = False
    if bad:
        raise ConfigError(f"low={low} exceeds high={high}; allowed: low ≤ high elementwise")
    return low, high


def random_shooting(
    key: jax.Array,
    step: Step,
    state: Any,
    *,
    horizon: int,
    num_samples: int,
    low: jax.Array,
    high: jax.Array,
    final_cost: Callable[[Any], jax.Array] | None = None,
) -> Plan:
    """Best of ``num_samples`` sequences drawn uniformly from [low, high]^{H×m}.

    ``low`` and ``high`` are finite, have shape [m] (or broadcast to it) and fix the action
    dimension.
    """
    check_positive_int("horizon", horizon)
    check_positive_int("num_samples", num_samples)
    check_range("low", low)  # finite: the samples are uniform in the box
    check_range("high", high)
    action_dim = jnp.shape(low)[-1] if jnp.ndim(low) else 1
    low, high = _check_bounds(jnp.asarray(low), jnp.asarray(high), action_dim)
    candidates = jax.random.uniform(
        key, (num_samples, horizon, action_dim), low.dtype, minval=low, maxval=high
    )
    return best_of(step, state, candidates, final_cost)


def shift(actions: jax.Array, fill: jax.Array | None = None) -> jax.Array:
    """Warm start for the next MPC step: a_{1:H} followed by ``fill`` (default: a_{H−1})."""
    last = actions[-1] if fill is None else jnp.broadcast_to(fill, actions.shape[1:])
    return jnp.concatenate([actions[1:], last[None]], axis=0)


def cem(
    key: jax.Array,
    step: Step,
    state: Any,
    init_mean: jax.Array,
    *,
    num_samples: int,
    num_elites: int,
    iterations: int,
    low: jax.Array,
    high: jax.Array,
    init_std: float | jax.Array = 1.0,
    smoothing: float = 0.0,
    final_cost: Callable[[Any], jax.Array] | None = None,
) -> Plan:
    """Cross-entropy method over sequences of shape ``init_mean`` [H, m] (see module doc).

    ``init_std`` is a scalar or [H, m]; ``smoothing`` is β; samples are clipped to
    [low, high] (an infinite bound leaves that side open). Returns the best sequence
    evaluated, with its predicted states and cost.
    """
    check_positive_int("num_samples", num_samples, minimum=2)
    check_range("init_std", init_std, 0.0)
    check_range("low", low, allow_inf=True)  # ±inf: that side unbounded
    check_range("high", high, allow_inf=True)
    if init_mean.ndim != 2:
        raise ConfigError(f"init_mean has shape {init_mean.shape}; allowed: [H, m]")
    low, high = _check_bounds(jnp.asarray(low), jnp.asarray(high), init_mean.shape[-1])

    def score(samples: jax.Array) -> jax.Array:  # −J of each sequence (+∞ cost → −∞)
        return -jax.vmap(evaluate, in_axes=(None, None, 0, None))(
            step, state, samples, final_cost
        )[1]

    actions, _ = cross_entropy_method(
        key, score, jnp.clip(init_mean, low, high), init_std, low, high,
        num_samples=num_samples, num_elites=num_elites, iterations=iterations,
        smoothing=smoothing,
    )
    states, cost = evaluate(step, state, actions, final_cost)
    return Plan(actions, states, cost)
