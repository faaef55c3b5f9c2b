"""Optimisation helpers: target-network updates and optax chains with traced hyperparameters."""

import jax
import jax.numpy as jnp
import optax
from jaxtyping import PyTree


def polyak_update(online: PyTree, target: PyTree, tau: float | jax.Array) -> PyTree:
    """θ̄ ← τθ + (1 − τ)θ̄, a convex combination; τ = 1 is a hard copy.

    After k updates towards a fixed θ the gap shrinks by (1 − τ)^k (Lillicrap et al., 2016).
    """
    return jax.tree.map(lambda p, t: tau * p + (1.0 - tau) * t, online, target)


def periodic_target_update(
    online: PyTree, target: PyTree, update_count: jax.Array, period: int | jax.Array, tau
) -> PyTree:
    """Polyak-update the target every ``period`` updates (after update ``update_count``).

    τ = 1 with period N is DQN's hard copy every N updates (Mnih et al., 2015); period 1 with
    τ < 1 is Polyak averaging every update.
    """
    due = (update_count % period) == 0
    updated = polyak_update(online, target, tau)
    return jax.tree.map(lambda new, old: jnp.where(due, new, old), updated, target)


def adam_with_clipping(
    learning_rate: float | jax.Array, max_grad_norm: float | jax.Array, eps: float | jax.Array = 1e-8
) -> optax.GradientTransformation:
    """Global-norm gradient clipping then Adam, with both numbers injected as state.

    Through ``optax.inject_hyperparams`` the learning rate and clipping norm live in the
    optimiser state, so they can be traced (swept with ``vmap``) and changed per update
    (schedules) without recompiling.
    """

    def chain(learning_rate, max_grad_norm, eps):
        return optax.chain(
            optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate, eps=eps)
        )

    return optax.inject_hyperparams(chain)(
        learning_rate=learning_rate, max_grad_norm=max_grad_norm, eps=eps
    )


def set_learning_rate(opt_state, learning_rate: jax.Array):
    """The state of an ``inject_hyperparams`` optimiser with a new learning rate."""
    hyperparams = dict(opt_state.hyperparams)
    hyperparams["learning_rate"] = jnp.asarray(learning_rate, hyperparams["learning_rate"].dtype)
    return opt_state._replace(hyperparams=hyperparams)
