"""Linear-quadratic regulators: time-varying LQR, LQR under Gaussian noise, iLQR, and a
parallel-in-time LQR.

Notation (Levine, CS 285 lecture 10, "Optimal control and planning"), with z_t = [x_t; u_t],
x ∈ ℝⁿ, u ∈ ℝᵐ and t = 0 … T−1:

    x_{t+1} = F_t z_t + f_t                                   F_t [n, n+m], f_t [n]
    cost    = Σ_t ½ z_tᵀ C_t z_t + z_tᵀ c_t  +  ½ x_Tᵀ C_T x_T + x_Tᵀ c_T

(the final cost C_T, c_T is optional and zero by default). The backward pass keeps the
cost-to-go V_t(x) = ½ xᵀ V_t x + v_tᵀ x + s_t, starting from V_T = C_T, v_T = c_T, s_T = 0:

    Q_t = C_t + F_tᵀ V_{t+1} F_t          q_t = c_t + F_tᵀ V_{t+1} f_t + F_tᵀ v_{t+1}
    K_t = −Q_uu⁻¹ Q_ux                    k_t = −Q_uu⁻¹ q_u
    V_t = Q_xx + Q_xu K_t + K_tᵀ Q_ux + K_tᵀ Q_uu K_t
    v_t = q_x + Q_xu k_t + K_tᵀ q_u + K_tᵀ Q_uu k_t
    s_t = s_{t+1} + ½ f_tᵀ V_{t+1} f_t + v_{t+1}ᵀ f_t + ½ k_tᵀ Q_uu k_t + k_tᵀ q_u

and the forward pass applies u_t = K_t x_t + k_t. With additive noise x_{t+1} = F_t z_t +
f_t + w_t, w_t ~ N(0, Σ_t), the gains are unchanged (certainty equivalence) and the
expected cost gains ½ tr(V_{t+1} Σ_t) per step (Bertsekas, "Dynamic Programming and Optimal
Control", vol. 1, §4.1).

iLQR (Li & Todorov, 2004; Tassa, Erez & Todorov, 2012, "Synthesis and stabilization of
complex behaviors through online trajectory optimization") linearises the dynamics and
quadratises the cost around the current trajectory (x̂, û) with JAX autodiff, solves the LQR
above in deviations (δx, δu) with Q_uu + μI, and runs the forward pass on the true dynamics
with u_t = K_t (x_t − x̂_t) + α k_t + û_t, accepting the largest α whose cost improves. It
stops at a stationary point of the open-loop cost J(U), whose gradient the adjoint recursion
λ_t = c_x + F_xᵀ λ_{t+1}, ∂J/∂u_t = c_u + F_uᵀ λ_{t+1} gives from the same linearisation (see
:func:`ilqr` for the rule and for the regularisation schedule).

The deviation dynamics have no offset:

    δx_{t+1} = F_t [δx_t; δu_t]        (here)
    δx_{t+1} = F_t [δx_t; δu_t] + f_t  (the notes' LQR form, applied to deviations)

because the nominal trajectory is a rollout of the true dynamics, x̂_{t+1} = f(x̂_t, û_t),
so the constant of the linearisation, f(x̂_t, û_t) − x̂_{t+1}, is zero. The backward pass
therefore runs with f_t = 0 (and the offset terms of v_t and s_t vanish).

The parallel LQR (Särkkä & García-Fernández, 2023, "Temporal parallelization of dynamic
programming and linear quadratic control", IEEE TAC) computes every V_t with one associative
scan (O(log T) depth) and the states with a second one over affine maps.
"""

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ..core.config import ConfigError, check_positive_int, check_range

Dynamics = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""``dynamics(x[n], u[m], t) -> x_next[n]``."""
Cost = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""``cost(x[n], u[m], t) -> scalar``."""

_MAX_REG_TRIES = 64  # μ values tried for the returned iLQR gains before giving up (NaN)


class LQRSolution(eqx.Module):
    """An LQR plan: the trajectory, the feedback law u_t = K_t x_t + k_t, and its cost.

    ``cost`` is the (expected, for the noisy LQR) cost of this plan from ``states[0]``.
    """

    states: jax.Array  # [T+1, n]
    actions: jax.Array  # [T, m]
    K: jax.Array  # [T, m, n]
    k: jax.Array  # [T, m]
    V: jax.Array  # [T+1, n, n]  quadratic term of the cost-to-go
    v: jax.Array  # [T+1, n]     linear term of the cost-to-go
    cost: jax.Array  # scalar


class ILQRSolution(eqx.Module):
    """An iLQR plan, its local feedback law, and the record of its iterations.

    ``K`` and ``k`` belong to the returned trajectory (x̂, û) = (states, actions): they are
    the gains of the LQR backward pass on the linear-quadratic model at (x̂, û) (dynamics
    linearised, cost quadratised, no offset), with Q_uu + μI and μ = ``reg``, so that

        u_t = û_t + k_t + K_t (x_t − x̂_t)

    minimises that model's cost-to-go. K is the time-varying LQR feedback around the plan
    (use u_t = û_t + K_t (x_t − x̂_t) to track it from a perturbed state); k is the step the
    next iteration would take, ≈ 0 at convergence.
    """

    states: jax.Array  # [T+1, n]
    actions: jax.Array  # [T, m]
    K: jax.Array  # [T, m, n]  LQR feedback gains at (states, actions)
    k: jax.Array  # [T, m]     LQR open-loop step at (states, actions), ≈ 0 at convergence
    reg: jax.Array  # scalar: μ of K and k, 0 unless Q_uu is not positive definite there
    cost: jax.Array  # scalar: cost of (states, actions) on the true dynamics
    costs: jax.Array  # [max_iterations + 1]: cost after each iteration (last value repeated)
    iterations: jax.Array  # int: accepted or rejected iterations run
    converged: jax.Array  # bool: (states, actions) is stationary, Q_uu ≻ 0 there (see ilqr)


# ----------------------------------------------------------------------------- validation


def _check_lq(F, f, C, c, x0, C_final=None, c_final=None) -> tuple[int, int, int]:
    if F.ndim != 3:
        raise ConfigError(f"F has shape {F.shape}; allowed: [T, n, n+m]")
    T, n, nm = F.shape
    m = nm - n
    if m < 1:
        raise ConfigError(f"F has shape {F.shape}; allowed: [T, n, n+m] with m ≥ 1")
    expected = {"f": (T, n), "C": (T, nm, nm), "c": (T, nm), "x0": (n,)}
    for name, value in (("f", f), ("C", C), ("c", c), ("x0", x0)):
        if tuple(value.shape) != expected[name]:
            raise ConfigError(
                f"{name} has shape {tuple(value.shape)}; allowed: {expected[name]} "
                f"(T={T}, n={n}, m={m} from F)"
            )
    if C_final is not None and tuple(C_final.shape) != (n, n):
        raise ConfigError(f"C_final has shape {tuple(C_final.shape)}; allowed: {(n, n)}")
    if c_final is not None and tuple(c_final.shape) != (n,):
        raise ConfigError(f"c_final has shape {tuple(c_final.shape)}; allowed: {(n,)}")
    return T, n, m


def _final(n, dtype, C_final, c_final):
    C_final = jnp.zeros((n, n), dtype) if C_final is None else jnp.asarray(C_final, dtype)
    c_final = jnp.zeros((n,), dtype) if c_final is None else jnp.asarray(c_final, dtype)
    return C_final, c_final


# ----------------------------------------------------------------------------- LQR


def _gains(F_t, f_t, C_t, c_t, V_next, v_next, n, reg=0.0):
    """Q-function of one step and the minimising affine law (the equations above)."""
    Q = C_t + F_t.T @ V_next @ F_t
    q = c_t + F_t.T @ (V_next @ f_t + v_next)
    Q_xx, Q_xu, Q_ux, Q_uu = Q[:n, :n], Q[:n, n:], Q[n:, :n], Q[n:, n:]
    q_x, q_u = q[:n], q[n:]
    Q_uu_reg = 0.5 * (Q_uu + Q_uu.T) + reg * jnp.eye(Q_uu.shape[0], dtype=Q.dtype)
    chol = jnp.linalg.cholesky(Q_uu_reg)  # NaN where Q_uu + μI is not positive definite
    solve = lambda b: jax.scipy.linalg.cho_solve((chol, True), b)
    K = -solve(Q_ux)
    k = -solve(q_u)
    V = Q_xx + Q_xu @ K + K.T @ Q_ux + K.T @ Q_uu @ K
    V = 0.5 * (V + V.T)
    v = q_x + Q_xu @ k + K.T @ q_u + K.T @ Q_uu @ k
    ds = 0.5 * f_t @ V_next @ f_t + v_next @ f_t + 0.5 * k @ Q_uu @ k + k @ q_u
    ok = jnp.all(jnp.isfinite(chol))
    return K, k, V, v, ds, ok


def _backward(F, f, C, c, C_final, c_final, noise_cov=None, reg=0.0):
    """Riccati recursion with ``lax.scan`` from t = T−1 down to 0."""
    n = F.shape[1]
    if noise_cov is None:
        noise_cov = jnp.zeros((F.shape[0], n, n), F.dtype)

    def step(carry, inputs):
        V_next, v_next, s_next, ok_all = carry
        F_t, f_t, C_t, c_t, Sigma_t = inputs
        K, k, V, v, ds, ok = _gains(F_t, f_t, C_t, c_t, V_next, v_next, n, reg)
        s = s_next + ds + 0.5 * jnp.trace(V_next @ Sigma_t)
        return (V, v, s, ok_all & ok), (K, k, V, v)

    init = (C_final, c_final, jnp.zeros((), F.dtype), jnp.array(True))
    (V0, v0, s0, ok), (K, k, V, v) = jax.lax.scan(
        step, init, (F, f, C, c, noise_cov), reverse=True
    )
    V = jnp.concatenate([V, C_final[None]], axis=0)
    v = jnp.concatenate([v, c_final[None]], axis=0)
    return K, k, V, v, s0, ok


def _forward(F, f, K, k, x0):
    def step(x, inputs):
        F_t, f_t, K_t, k_t = inputs
        u = K_t @ x + k_t
        return F_t @ jnp.concatenate([x, u]) + f_t, (x, u)

    x_T, (xs, us) = jax.lax.scan(step, x0, (F, f, K, k))
    return jnp.concatenate([xs, x_T[None]], axis=0), us


def trajectory_cost(C, c, states, actions, C_final=None, c_final=None) -> jax.Array:
    """Σ_t ½ z_tᵀ C_t z_t + z_tᵀ c_t + ½ x_Tᵀ C_T x_T + x_Tᵀ c_T of a given trajectory."""
    n = states.shape[-1]
    C_final, c_final = _final(n, states.dtype, C_final, c_final)
    z = jnp.concatenate([states[:-1], actions], axis=-1)
    running = 0.5 * jnp.einsum("ti,tij,tj->", z, C, z) + jnp.einsum("ti,ti->", z, c)
    x_T = states[-1]
    return running + 0.5 * x_T @ C_final @ x_T + c_final @ x_T


def lqr(
    F: jax.Array,
    f: jax.Array,
    C: jax.Array,
    c: jax.Array,
    x0: jax.Array,
    C_final: jax.Array | None = None,
    c_final: jax.Array | None = None,
) -> LQRSolution:
    """Time-varying LQR: backward Riccati pass, then the forward pass from ``x0``.

    Shapes: F [T, n, n+m], f [T, n], C [T, n+m, n+m], c [T, n+m], x0 [n]; optional final
    cost C_final [n, n], c_final [n]. Requires Q_uu ≻ 0 at every step (e.g. C_uu ≻ 0 and
    C ⪰ 0). Returns states [T+1, n], actions [T, m], gains K [T, m, n], offsets k [T, m],
    the cost-to-go terms V [T+1, n, n], v [T+1, n], and the cost of the plan.
    """
    _check_lq(F, f, C, c, x0, C_final, c_final)
    C_final, c_final = _final(F.shape[1], F.dtype, C_final, c_final)
    K, k, V, v, s0, _ = _backward(F, f, C, c, C_final, c_final)
    states, actions = _forward(F, f, K, k, x0)
    cost = 0.5 * x0 @ V[0] @ x0 + v[0] @ x0 + s0
    return LQRSolution(states, actions, K, k, V, v, cost)


def lqr_gaussian(
    F: jax.Array,
    f: jax.Array,
    C: jax.Array,
    c: jax.Array,
    x0: jax.Array,
    noise_cov: jax.Array,
    C_final: jax.Array | None = None,
    c_final: jax.Array | None = None,
) -> LQRSolution:
    """LQR under x_{t+1} = F_t z_t + f_t + w_t, w_t ~ N(0, Σ_t).

    The gains and the mean trajectory are those of :func:`lqr`; ``cost`` is the expected
    cost of the closed loop u_t = K_t x_t + k_t, the deterministic cost plus
    ½ Σ_t tr(V_{t+1} Σ_t). ``noise_cov`` is Σ [n, n] (every step) or Σ_t [T, n, n].
    """
    T, n, _ = _check_lq(F, f, C, c, x0, C_final, c_final)
    noise_cov = jnp.asarray(noise_cov, F.dtype)
    if noise_cov.shape == (n, n):
        noise_cov = jnp.broadcast_to(noise_cov, (T, n, n))
    if noise_cov.shape != (T, n, n):
        raise ConfigError(
            f"noise_cov has shape {noise_cov.shape}; allowed: {(n, n)} or {(T, n, n)}"
        )
    C_final, c_final = _final(n, F.dtype, C_final, c_final)
    K, k, V, v, s0, _ = _backward(F, f, C, c, C_final, c_final, noise_cov)
    states, actions = _forward(F, f, K, k, x0)
    cost = 0.5 * x0 @ V[0] @ x0 + v[0] @ x0 + s0
    return LQRSolution(states, actions, K, k, V, v, cost)


def closed_loop(
    F: jax.Array, f: jax.Array, K: jax.Array, k: jax.Array, x0: jax.Array, noise: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Run u_t = K_t x_t + k_t on x_{t+1} = F_t z_t + f_t + noise_t; returns states, actions."""

    def step(x, inputs):
        F_t, f_t, K_t, k_t, w_t = inputs
        u = K_t @ x + k_t
        return F_t @ jnp.concatenate([x, u]) + f_t + w_t, (x, u)

    x_T, (xs, us) = jax.lax.scan(step, x0, (F, f, K, k, noise))
    return jnp.concatenate([xs, x_T[None]], axis=0), us


# ----------------------------------------------------------------------------- parallel LQR


def _combine(earlier, later):
    """Associative combination of conditional value functions (Särkkä & García-Fernández,
    2023, Lemma 8): elements (A, b, C, η, J) with V_{i→j}(x, y) =
    max_λ ½xᵀJx − ηᵀx − ½λᵀCλ − λᵀ(y − Ax − b), the earlier segment first."""
    A1, b1, C1, eta1, J1 = earlier
    A2, b2, C2, eta2, J2 = later
    eye = jnp.eye(A1.shape[-1], dtype=A1.dtype)
    mT = lambda M: jnp.swapaxes(M, -1, -2)
    mv = lambda M, x: jnp.einsum("...ij,...j->...i", M, x)
    # (I + C1 J2)⁻¹ and its transpose (I + J2 C1)⁻¹ (C1, J2 symmetric)
    W = jnp.linalg.solve(eye + C1 @ J2, eye)
    A = A2 @ W @ A1
    b = mv(A2 @ W, b1 + mv(C1, eta2)) + b2
    C = A2 @ W @ C1 @ mT(A2) + C2
    Wt = mT(W)
    eta = mv(mT(A1) @ Wt, eta2 - mv(J2, b1)) + eta1
    J = mT(A1) @ Wt @ J2 @ A1 + J1
    return A, b, 0.5 * (C + mT(C)), eta, 0.5 * (J + mT(J))


def lqr_parallel(
    F: jax.Array,
    f: jax.Array,
    C: jax.Array,
    c: jax.Array,
    x0: jax.Array,
    C_final: jax.Array | None = None,
    c_final: jax.Array | None = None,
) -> LQRSolution:
    """:func:`lqr` in O(log T) depth with two associative scans.

    The cross term is removed by u = ũ − C_uu⁻¹(C_ux x + c_u), leaving the state cost
    ½xᵀ(C_xx − C_xu C_uu⁻¹ C_ux)x + (c_x − C_xu C_uu⁻¹ c_u)ᵀx, the control cost ½ũᵀC_uu ũ and
    dynamics x' = (F_x − F_u C_uu⁻¹ C_ux) x + F_u ũ + f − F_u C_uu⁻¹ c_u. The reverse scan of
    the elements (A_t, b_t, F_u C_uu⁻¹ F_uᵀ, −q_t, Q_t) gives every cost-to-go V_t, v_t; the
    gains follow in parallel; the states come from a scan of x ↦ (F_x + F_u K_t) x + F_u k_t
    + f_t. Needs C_uu ≻ 0 at every step. Same outputs as :func:`lqr`.
    """
    T, n, m = _check_lq(F, f, C, c, x0, C_final, c_final)
    C_final, c_final = _final(n, F.dtype, C_final, c_final)
    F_x, F_u = F[:, :, :n], F[:, :, n:]
    C_xx, C_xu, C_ux, C_uu = C[:, :n, :n], C[:, :n, n:], C[:, n:, :n], C[:, n:, n:]
    c_x, c_u = c[:, :n], c[:, n:]
    G = jnp.linalg.solve(C_uu, C_ux)  # [T, m, n]
    g = jnp.linalg.solve(C_uu, c_u[..., None])[..., 0]  # [T, m]
    Q = C_xx - C_xu @ G
    q = c_x - jnp.einsum("tij,tj->ti", C_xu, g)
    A = F_x - F_u @ G
    b = f - jnp.einsum("tij,tj->ti", F_u, g)
    L = F_u @ jnp.linalg.solve(C_uu, jnp.swapaxes(F_u, 1, 2))
    zeros_nn = jnp.zeros((1, n, n), F.dtype)
    elements = (
        jnp.concatenate([A, zeros_nn]),
        jnp.concatenate([b, jnp.zeros((1, n), F.dtype)]),
        jnp.concatenate([0.5 * (L + jnp.swapaxes(L, 1, 2)), zeros_nn]),
        jnp.concatenate([-q, -c_final[None]]),
        jnp.concatenate([0.5 * (Q + jnp.swapaxes(Q, 1, 2)), C_final[None]]),
    )
    # reverse=True hands the operator (later, earlier)
    _, _, _, eta, J = jax.lax.associative_scan(
        lambda later, earlier: _combine(earlier, later), elements, reverse=True
    )
    V, v = J, -eta  # [T+1, n, n], [T+1, n]
    K, k, _, _, ds, _ = jax.vmap(
        lambda F_t, f_t, C_t, c_t, V_next, v_next: _gains(F_t, f_t, C_t, c_t, V_next, v_next, n)
    )(F, f, C, c, V[1:], v[1:])
    M = F_x + F_u @ K
    d = jnp.einsum("tij,tj->ti", F_u, k) + f

    def compose(earlier, later):  # x ↦ M2 (M1 x + d1) + d2
        M1, d1 = earlier
        M2, d2 = later
        return M2 @ M1, jnp.einsum("...ij,...j->...i", M2, d1) + d2

    M_cum, d_cum = jax.lax.associative_scan(compose, (M, d))
    states = jnp.concatenate([x0[None], M_cum @ x0 + d_cum], axis=0)
    actions = jnp.einsum("tij,tj->ti", K, states[:-1]) + k
    cost = 0.5 * x0 @ V[0] @ x0 + v[0] @ x0 + jnp.sum(ds)
    return LQRSolution(states, actions, K, k, V, v, cost)


# ----------------------------------------------------------------------------- iLQR


def rollout(
    dynamics: Dynamics,
    cost: Cost,
    x0: jax.Array,
    actions: jax.Array,
    final_cost: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Open-loop states [T+1, n] and total cost of ``actions`` [T, m] from ``x0``."""

    def step(x, inputs):
        u, t = inputs
        return dynamics(x, u, t), (x, cost(x, u, t))

    x_T, (xs, costs) = jax.lax.scan(step, x0, (actions, jnp.arange(actions.shape[0])))
    total = jnp.sum(costs) + (0.0 if final_cost is None else final_cost(x_T))
    return jnp.concatenate([xs, x_T[None]], axis=0), total


def _linearise(dynamics, cost, final_cost, states, actions):
    """F_t = ∂f/∂z, C_t = ∂²ℓ/∂z², c_t = ∂ℓ/∂z at (x̂_t, û_t), and the final cost's terms."""
    n = states.shape[-1]
    z = jnp.concatenate([states[:-1], actions], axis=-1)
    ts = jnp.arange(actions.shape[0])
    split = lambda fn: lambda z_t, t: fn(z_t[:n], z_t[n:], t)
    F = jax.vmap(jax.jacfwd(split(dynamics)))(z, ts)
    c = jax.vmap(jax.grad(split(cost)))(z, ts)
    C = jax.vmap(jax.hessian(split(cost)))(z, ts)
    x_T = states[-1]
    if final_cost is None:
        C_final, c_final = jnp.zeros((n, n), z.dtype), jnp.zeros((n,), z.dtype)
    else:
        C_final, c_final = jax.hessian(final_cost)(x_T), jax.grad(final_cost)(x_T)
    return F, c, 0.5 * (C + jnp.swapaxes(C, 1, 2)), 0.5 * (C_final + C_final.T), c_final


def _gradient(F, c, c_final):
    """∂J/∂u_t [T, m] of the open-loop cost J(U) = Σ_t ℓ(x_t, u_t) + ℓ_T(x_T) at a rollout,
    by the adjoint (costate) recursion on its linearisation (reverse-mode differentiation of
    the rollout; Bryson & Ho, 1975, "Applied Optimal Control", §2.2):

        λ_T = ∇ℓ_T(x_T),      [λ_t; ∂J/∂u_t] = c_t + F_tᵀ λ_{t+1}.
    """
    n = F.shape[1]

    def step(costate, inputs):
        F_t, c_t = inputs
        z_gradient = c_t + F_t.T @ costate
        return z_gradient[:n], z_gradient[n:]

    _, gradient = jax.lax.scan(step, c_final, (F, c), reverse=True)
    return gradient


def _reg_increase(reg, delta, reg_min, reg_factor):
    """Tassa et al. (2012), §II-F: Δ ← max(Δ₀, Δ·Δ₀), μ ← max(μ_min, μ·Δ)."""
    delta = jnp.maximum(reg_factor, delta * reg_factor)
    return jnp.maximum(reg_min, reg * delta), delta


def _reg_decrease(reg, delta, reg_min, reg_factor):
    """Tassa et al. (2012), §II-F: Δ ← min(1/Δ₀, Δ/Δ₀), μ ← μ·Δ, or 0 if μ·Δ < μ_min."""
    delta = jnp.minimum(1.0 / reg_factor, delta / reg_factor)
    reg = reg * delta
    return jnp.where(reg < reg_min, 0.0, reg), delta


class _Iterate(NamedTuple):
    """The carry of iLQR's loop."""

    X: jax.Array  # [T+1, n] current trajectory (a rollout of the true dynamics)
    U: jax.Array  # [T, m]
    J: jax.Array  # its cost
    reg: jax.Array  # μ
    delta: jax.Array  # Δ, the factor of the regularisation schedule
    i: jax.Array  # iterations run
    done: jax.Array
    costs: jax.Array  # [max_iterations + 1]
    scale: jax.Array  # max(1, max_t |∂J/∂u_t(U0)|): the gradient test is relative to it


def ilqr(
    dynamics: Dynamics,
    cost: Cost,
    x0: jax.Array,
    U0: jax.Array,
    final_cost: Callable[[jax.Array], jax.Array] | None = None,
    *,
    max_iterations: int = 50,
    tol: float = 1e-6,
    num_alphas: int = 8,
    reg_init: float = 0.0,
    reg_min: float = 1e-6,
    reg_max: float = 1e10,
    reg_factor: float = 2.0,
) -> ILQRSolution:
    """Iterative LQR from the initial action sequence ``U0`` [T, m].

    Each iteration linearises ``dynamics(x, u, t)`` and quadratises ``cost(x, u, t)`` (and
    ``final_cost(x_T)``) around the current (x̂, û) by autodiff, runs the LQR backward pass
    on the deviations (zero offset, see the module doc) with Q_uu + μI, and tries the forward
    pass on the true dynamics

        u_t = K_t (x_t − x̂_t) + α k_t + û_t,      α ∈ {1, ½, ¼, …} (``num_alphas`` values),

    all α at once (vectorised line search), keeping the largest α whose cost is strictly
    lower. The cost never increases.

    **Regularisation** (Tassa, Erez & Todorov, 2012, §II-F, a quadratic schedule for μ with
    Δ₀ = ``reg_factor``): after a rejected step or a Q_uu + μI that is not positive definite,
    Δ ← max(Δ₀, Δ·Δ₀), μ ← max(μ_min, μ·Δ); after an accepted step, Δ ← min(1/Δ₀, Δ/Δ₀),
    μ ← μ·Δ (0 below μ_min). Consecutive moves the same way compound, so μ settles near the
    smallest value that works instead of swinging by a fixed factor each way (on the
    non-convex A cos u problems of the tests: median 22 iterations to converge, 44 with a
    fixed factor of 10).

    **Stopping.** ``converged`` means that the returned trajectory is a stationary point of
    the open-loop cost J(U) that the model takes for a minimum:

        max_t |∂J/∂u_t| ≤ tol · max(1, max_t |∂J/∂u_t(U0)|)   and   Q_uu ≻ 0 with μ = 0,

    with ∂J/∂u_t from the adjoint recursion on the linearisation (:func:`_gradient`). Both
    tests are unchanged by adding a constant to the cost, and neither counts a small step as
    convergence (an earlier rule, improvement ≤ tol·(1 + |J|), did both and so reported a
    maximum as converged): with Q_uu indefinite μ grows and the steps shrink wherever it is
    (Tassa's iLQG.m likewise accepts its small-step test only while λ < 1e-5). The loop stops
    there, when no α improves at μ > ``reg_max`` (``inf``: never), or after
    ``max_iterations``. Beside a saddle or a maximum (small gradient, Q_uu indefinite) the
    gradient test alone does not stop it: the regularised steps lead away. Where no step can
    lower J in floating point (at an exact saddle, or with ``tol`` below the precision of
    the cost), μ grows past ``reg_max`` and it stops with ``converged`` False.

    The gains returned are those of the returned trajectory, not of the last iteration's
    linearisation (which is one accepted step behind): the model is linearised once more at
    the returned (x̂, û) and the backward pass rerun there with the smallest μ in
    {0, μ_min, …} (the schedule's increases) that keeps Q_uu + μI positive definite (see
    :class:`ILQRSolution`; K and k are NaN if no μ ≤ ``reg_max`` does). The stopping test
    above is evaluated there too, so ``converged`` describes the trajectory returned.
    """
    check_positive_int("max_iterations", max_iterations)
    check_positive_int("num_alphas", num_alphas)
    check_range("tol", tol, 0.0)
    check_range("reg_init", reg_init, 0.0)
    check_range("reg_min", reg_min, 0.0, low_inclusive=False)  # μ = 0 could never grow
    check_range("reg_max", reg_max, 0.0, allow_inf=True)  # inf: never give up on μ
    check_range("reg_factor", reg_factor, 1.0, low_inclusive=False)
    if U0.ndim != 2 or x0.ndim != 1:
        raise ConfigError(f"x0 has shape {x0.shape} and U0 {U0.shape}; allowed: x0 [n], U0 [T, m]")
    T, m = U0.shape
    n = x0.shape[0]
    dtype = U0.dtype
    alphas = 0.5 ** jnp.arange(num_alphas, dtype=dtype)
    X0, J0 = rollout(dynamics, cost, x0, U0, final_cost)

    def linearise(X, U):
        F, c, C, C_final, c_final = _linearise(dynamics, cost, final_cost, X, U)
        f = jnp.zeros(X[:-1].shape, X.dtype)  # zero offset: X is a rollout of the dynamics
        return F, f, C, c, C_final, c_final

    def largest_gradient(model):
        F, _, _, c, _, c_final = model
        return jnp.max(jnp.abs(_gradient(F, c, c_final)))

    def try_alpha(alpha, X, U, K, k):
        def step(x, inputs):
            x_hat, u_hat, K_t, k_t, t = inputs
            u = K_t @ (x - x_hat) + alpha * k_t + u_hat
            return dynamics(x, u, t), (x, u, cost(x, u, t))

        x_T, (xs, us, costs) = jax.lax.scan(step, x0, (X[:-1], U, K, k, jnp.arange(U.shape[0])))
        total = jnp.sum(costs) + (0.0 if final_cost is None else final_cost(x_T))
        total = jnp.where(jnp.isfinite(total), total, jnp.inf)
        return jnp.concatenate([xs, x_T[None]], axis=0), us, total

    def iterate(it: _Iterate) -> _Iterate:
        model = linearise(it.X, it.U)
        gradient = largest_gradient(model)
        scale = jnp.where(it.i == 0, jnp.maximum(1.0, gradient), it.scale)
        K, k, _, _, _, ok = _backward(*model, reg=it.reg)
        # Q_uu ≻ 0 without μ: known already when μ = 0, otherwise one more backward pass
        small = gradient <= tol * scale
        minimum = jax.lax.cond(
            small & (it.reg > 0),
            lambda: _backward(*model, reg=jnp.zeros((), dtype))[5],
            lambda: ok & (it.reg == 0),
        )
        stationary = small & minimum
        Xs, Us, Js = jax.vmap(try_alpha, in_axes=(0, None, None, None, None))(
            alphas, it.X, it.U, K, k
        )
        improved = ok & (Js < it.J) & ~stationary
        accept = jnp.any(improved)
        best = jnp.argmax(improved)  # the largest improving α
        J = jnp.where(accept, Js[best], it.J)
        X = jnp.where(accept, Xs[best], it.X)
        U = jnp.where(accept, Us[best], it.U)
        up = _reg_increase(it.reg, it.delta, reg_min, reg_factor)
        down = _reg_decrease(it.reg, it.delta, reg_min, reg_factor)
        reg, delta = jax.tree.map(lambda a, b: jnp.where(accept, a, b), down, up)
        done = stationary | (~accept & (it.reg > reg_max))
        costs = jnp.where(jnp.arange(it.costs.shape[0]) > it.i, J, it.costs)
        return _Iterate(X, U, J, reg, delta, it.i + 1, done, costs, scale)

    def feedback(model):
        """K, k at the model's trajectory with the smallest μ ∈ {0, μ_min, …} that works."""

        def attempt(carry):
            _, _, _, reg, delta, tries = carry
            reg, delta = jax.tree.map(
                lambda a, b: jnp.where(tries == 0, a, b),
                (jnp.zeros((), dtype), jnp.ones((), dtype)),
                _reg_increase(reg, delta, reg_min, reg_factor),
            )
            K, k, _, _, _, ok = _backward(*model, reg=reg)
            return K, k, ok, reg, delta, tries + 1

        def retry(carry):
            _, _, ok, reg, _, tries = carry
            # a bounded number of tries: reg_max may be inf
            return ~ok & (reg <= reg_max) & (tries < _MAX_REG_TRIES)

        init = (
            jnp.zeros((T, m, n), dtype),
            jnp.zeros((T, m), dtype),
            jnp.array(False),
            jnp.zeros((), dtype),
            jnp.ones((), dtype),
            jnp.array(0),
        )
        K, k, _, reg, _, _ = jax.lax.while_loop(retry, attempt, init)
        return K, k, reg

    init = _Iterate(
        X=X0,
        U=U0,
        J=J0,
        reg=jnp.asarray(reg_init, dtype),
        delta=jnp.ones((), dtype),
        i=jnp.array(0),
        done=jnp.array(False),
        costs=jnp.full((max_iterations + 1,), J0),
        scale=jnp.ones((), dtype),
    )
    it = jax.lax.while_loop(lambda it: (it.i < max_iterations) & ~it.done, iterate, init)
    model = linearise(it.X, it.U)
    K, k, reg = feedback(model)
    converged = (largest_gradient(model) <= tol * it.scale) & (reg == 0)
    return ILQRSolution(it.X, it.U, K, k, reg, it.J, it.costs, it.i, converged)
