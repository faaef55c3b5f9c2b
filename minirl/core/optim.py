"""Optimisation helpers: target-network updates and optax chains with traced hyperparameters."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import PyTree

from . import data_axis


def polyak_update(online: PyTree, target: PyTree, tau: float | jax.Array) -> PyTree:
    """θ̄ ← τθ + (1 − τ)θ̄, a convex combination; τ = 1 is a hard copy.

    After k updates towards a fixed θ the gap shrinks by (1 − τ)^k (Lillicrap et al., 2016,
    "Continuous control with deep RL", §7). Convention: τ is the weight of the *online*
    network, so small τ (0.005) is slow tracking. Lecture notes often write the same update
    as φ' ← τ'φ' + (1 − τ')φ with τ' ≈ 0.999, the weight of the *target*: τ = 1 − τ'.
    """
    return jax.tree.map(lambda p, t: tau * p + (1.0 - tau) * t, online, target)


def fresh_copy(tree: PyTree) -> PyTree:
    """``tree`` with every array copied: the target θ̄ = θ at ``init``. A copy, not the same
    arrays, because donating a fresh state (``donate_argnums``) must not donate one buffer
    twice."""
    return jax.tree.map(lambda x: jnp.copy(x) if eqx.is_array(x) else x, tree)


def hard_target_update(
    online: PyTree, target: PyTree, update_count: jax.Array, period: int | jax.Array
) -> PyTree:
    """θ̄ ← θ after every ``period``-th update (``update_count`` counts from 1), else θ̄
    unchanged: DQN's periodic hard copy (Mnih et al., 2015, algorithm 1)."""
    due = (update_count % period) == 0
    return jax.tree.map(lambda new, old: jnp.where(due, new, old), online, target)


def adam_with_clipping(
    learning_rate: float | jax.Array,
    max_grad_norm: float | jax.Array,
    eps: float | jax.Array = 1e-8,
) -> optax.GradientTransformation:
    """The gradient averaged over the data axis (``core.data_axis``: only when one agent
    trains data-parallel), global-norm clipping, then Adam; the numbers injected as state.

    Through ``optax.inject_hyperparams`` the learning rate and clipping norm live in the
    optimiser state, so they can be traced (swept with ``vmap``) and changed per update
    (schedules) without recompiling.
    """

    def chain(learning_rate, max_grad_norm, eps):
        return optax.chain(
            data_axis.mean_gradients(),
            optax.clip_by_global_norm(max_grad_norm),
            optax.adam(learning_rate, eps=eps),
        )

    return optax.inject_hyperparams(chain)(
        learning_rate=learning_rate, max_grad_norm=max_grad_norm, eps=eps
    )


def set_learning_rate(opt_state, learning_rate: jax.Array):
    """The state of an ``inject_hyperparams`` optimiser with a new learning rate."""
    hyperparams = dict(opt_state.hyperparams)
    hyperparams["learning_rate"] = jnp.asarray(learning_rate, hyperparams["learning_rate"].dtype)
    return opt_state._replace(hyperparams=hyperparams)


def adam_step(
    optimizer: optax.GradientTransformation,
    params: PyTree,
    grads: PyTree,
    opt_state,
    learning_rate: jax.Array,
) -> tuple[PyTree, optax.OptState]:
    """One step of an ``inject_hyperparams`` optimiser (:func:`adam_with_clipping`) at
    ``learning_rate``: the updated ``params`` and optimiser state. Only array leaves are
    updated; a module's static parts (activations) pass through unchanged."""
    opt_state = set_learning_rate(opt_state, learning_rate)
    updates, opt_state = optimizer.update(
        eqx.filter(grads, eqx.is_array), opt_state, eqx.filter(params, eqx.is_array)
    )
    return eqx.apply_updates(params, updates), opt_state


# ----------------------------------------------------------------------------- trust regions
#
# Natural policy gradient and TRPO (Kakade, 2001; Schulman et al., 2015, "Trust region policy
# optimization", appendix C). Everything acts on parameter pytrees (a flat vector is one), so
# no dense matrix is ever formed.


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """⟨a, b⟩ summed over every leaf."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _axpy(alpha: jax.Array, x: PyTree, y: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: alpha * a + b, x, y)


def conjugate_gradient(
    matvec, b: PyTree, iterations: int, tolerance: float | jax.Array = 1e-10
) -> PyTree:
    """x ≈ A⁻¹b for a symmetric positive-definite operator ``matvec(v) = A v``.

    Hestenes & Stiefel (1952); Nocedal & Wright (2006), algorithm 5.2, started at x = 0 and
    stopped after ``iterations`` steps or when ‖r‖² ≤ ``tolerance``. In exact arithmetic it
    solves an n-dimensional system in at most n steps. ``matvec`` is matrix-free: TRPO
    passes a Fisher-vector product. A ``lax.while_loop``, so it jits and vmaps.
    """
    x = jax.tree.map(jnp.zeros_like, b)
    r, p = b, b
    rs = tree_vdot(r, r)

    def cond(carry):
        i, _, _, _, rs = carry
        return (i < iterations) & (rs > tolerance)

    def body(carry):
        i, x, r, p, rs = carry
        ap = matvec(p)
        alpha = rs / tree_vdot(p, ap)
        x = _axpy(alpha, p, x)
        r = _axpy(-alpha, ap, r)
        rs_new = tree_vdot(r, r)
        p = _axpy(rs_new / rs, p, r)
        return i + 1, x, r, p, rs_new

    return jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), x, r, p, rs))[1]


def fisher_vector_product(kl_fn, params: PyTree, v: PyTree, damping: float | jax.Array = 0.0):
    """F v + damping·v, with F = ∇²_θ KL(π_old ‖ π_θ) at θ = ``params`` = θ_old.

    ``kl_fn(params)`` is the mean KL between the (fixed, stop-gradient) old policy and the
    policy at ``params``; at θ = θ_old its Hessian is the Fisher information matrix
    (Schulman et al., 2015, appendix C.1). Computed forward-over-reverse,
    F v = ∂/∂ε ∇KL(θ + εv) (Pearlmutter, 1994): one gradient and one JVP, never a matrix.
    """
    _, hvp = jax.jvp(jax.grad(kl_fn), (params,), (v,))
    return _axpy(damping, v, hvp)


def trust_region_step(direction: PyTree, fisher_direction: PyTree, max_kl) -> PyTree:
    """s = √(2δ / xᵀFx) · x: the step along x = F⁻¹g whose quadratic KL model ½sᵀFs is δ.

    ``fisher_direction`` is F x. With x = F⁻¹g this is the natural-gradient step
    √(2δ / gᵀF⁻¹g) F⁻¹g of Schulman et al. (2015), eq. 14 and appendix C.
    """
    curvature = jnp.maximum(tree_vdot(direction, fisher_direction), 1e-12)
    scale = jnp.sqrt(2.0 * max_kl / curvature)
    return jax.tree.map(lambda x: scale * x, direction)


def backtracking_line_search(
    objective_and_kl,
    params: PyTree,
    full_step: PyTree,
    max_kl,
    backtrack_ratio: float | jax.Array = 0.5,
    max_backtracks: int = 10,
) -> tuple[PyTree, dict[str, jax.Array]]:
    """Try θ + βᵏ s for k = 0, 1, …, ``max_backtracks`` − 1; keep the first θ' with
    KL(θ, θ') ≤ δ and a surrogate that improves on θ's; if none does, keep θ.

    ``objective_and_kl(params) -> (surrogate, kl)`` with kl the mean KL from the policy
    at ``params`` (the input) to the candidate. The returned parameters never break the KL
    bound (Schulman et al., 2015, appendix C, "line search"). Returns them and
    ``{"accepted", "step_fraction", "kl", "improvement"}`` (fraction 0 when rejected).
    """
    base_objective, _ = objective_and_kl(params)

    def candidate(k):
        fraction = backtrack_ratio**k
        new = jax.tree.map(lambda p, s: p + fraction * s, params, full_step)
        objective, kl = objective_and_kl(new)
        ok = (kl <= max_kl) & (objective > base_objective) & jnp.isfinite(objective)
        return new, ok, fraction, kl, objective - base_objective

    def cond(carry):
        k, ok = carry[0], carry[1]
        return (k < max_backtracks) & ~ok

    def body(carry):
        k = carry[0]
        new, ok, fraction, kl, improvement = candidate(k.astype(zero.dtype))
        return k + 1, ok, new, *(jnp.asarray(x, zero.dtype) for x in (fraction, kl, improvement))

    zero = jnp.zeros_like(base_objective)
    init = (jnp.zeros((), jnp.int32), jnp.zeros((), bool), params, zero, zero, zero)
    _, accepted, new, fraction, kl, improvement = jax.lax.while_loop(cond, body, init)
    new = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), new, params)
    info = {
        "accepted": accepted,
        "step_fraction": jnp.where(accepted, fraction, 0.0),
        "kl": jnp.where(accepted, kl, 0.0),
        "improvement": jnp.where(accepted, improvement, 0.0),
    }
    return new, info


def normalize_advantages(advantages: jax.Array, eps: float = 1e-8) -> jax.Array:
    """(A − mean A) / (std A + eps) over every element (Schulman et al., 2017, PPO code).

    Under a data axis (``core.data_axis``; equal-sized shards) the mean and standard
    deviation are taken over the union of all shards, so a sharded batch is normalised
    exactly as the whole batch would be.
    """
    mean = data_axis.mean(jnp.mean(advantages))
    var = data_axis.mean(jnp.mean(jnp.square(advantages - mean)))
    return (advantages - mean) / (jnp.sqrt(var) + eps)
