"""Linear-Gaussian trajectory distributions: local models fitted by regression, their
marginals, the KL between two of them, and the KL-constrained LQR step of LQR-FLM and GPS.

Notation as in ``lqr.py`` (z_t = [x_t; u_t], x ∈ ℝⁿ, u ∈ ℝᵐ, t = 0 … T−1), with a
time-varying linear-Gaussian controller and local dynamics

    p(u_t | x_t)     = N(K_t x_t + k_t, S_t)                 (:class:`Policy`)
    p(x_{t+1} | z_t) = N(F_t z_t + f_t, W_t)                  (:class:`Gaussian` over x')
    p(x_0)           = N(μ_0, Σ_0)

so that the trajectory distribution p(τ) = p(x_0) Π_t p(u_t|x_t) p(x_{t+1}|z_t) is Gaussian
(Levine & Abbeel, 2014, "Learning neural network policies with guided policy search under
unknown dynamics", NIPS, §3). The controller is written in absolute coordinates; the form
u_t = K_t (x_t − x̂_t) + k̂_t + û_t of the papers is the same law with k_t = k̂_t + û_t −
K_t x̂_t.

**Local models by regression with a prior** (:func:`fit`; Levine & Abbeel, 2014, §3.1, and
the GPS authors' code). At every step t a Gaussian is fitted to the N
samples y_i = [z_t,i; x_{t+1},i] and conditioned on z. With N < dim z the empirical
covariance is singular, so it is combined with a normal-inverse-Wishart prior whose mean
μ_g and scale Σ_g are the moments of *all* time steps' samples (a global fit), counted as
n₀ pseudo-samples:

    Σ_t = (N Ŝ_t + n₀ Σ_g + N n₀/(N + n₀) (μ̂_t − μ_g)(μ̂_t − μ_g)ᵀ) / (N + n₀),   μ_t = μ̂_t

    F_t = Σ_t,yz Σ_t,zz⁻¹,   f_t = μ_t,y − F_t μ_t,z,   W_t = Σ_t,yy − F_t Σ_t,zz F_tᵀ

(the MAP covariance of the NIW posterior, with GPS's choice of keeping the empirical mean;
Ŝ_t is the biased sample covariance; ``regularization`` is added to Σ_t,zz as GPS adds
``sig_reg``). With n₀ = 0 and N > dim z it is least squares; for N → ∞ the prior's weight
vanishes. The same regression linearises a global policy at its samples (GPS).

**Trajectory KL** (:func:`trajectory_kl`). Two controllers under the same dynamics and
initial distribution differ only in their action factors, so

    D_KL(p(τ) ‖ p̄(τ)) = Σ_t E_{x_t ~ p}[ D_KL(p(u|x_t) ‖ p̄(u|x_t)) ]
      = Σ_t ½ [ tr(S̄⁻¹S) − m + log det S̄ − log det S
                + (ΔK μ_x + Δk)ᵀ S̄⁻¹ (ΔK μ_x + Δk) + tr(ΔKᵀ S̄⁻¹ ΔK Σ_x) ]

with ΔK = K − K̄, Δk = k − k̄ and (μ_x, Σ_x) the state marginal of p (:func:`forward`).

**The KL-constrained step** (:func:`kl_step`; Levine & Abbeel, 2014, §3.2, as
the GPS authors' code solves it). min_p E_p[c(τ)] s.t. D_KL(p ‖ p̄) ≤ ε has the Lagrangian
E_p[c] + η(D_KL(p ‖ p̄) − ε) = η (E_p[c/η − log p̄(τ)] − H(p)) − ηε, whose minimiser for a
fixed η is the maximum-entropy LQR solution on the surrogate cost c̃ = c/η − log p̄(u|x)
(:func:`eta_lqr`):

    −log p̄(u|x) = ½ [x; u]ᵀ [[K̄ᵀΛK̄, −K̄ᵀΛ], [−ΛK̄, Λ]] [x; u] + [x; u]ᵀ [K̄ᵀΛk̄; −Λk̄] + const,

Λ = S̄⁻¹; the gains are LQR's (``lqr.lqr`` on (C/η + C̄, c/η + c̄)) and the covariance is
S_t = Q̃_uu,t⁻¹. The dual g(η) has dg/dη = D_KL(p_η ‖ p̄) − ε, decreasing in η, so its
root is found by bisection in log η (a step whose Q̃_uu is not positive definite counts
as "η too small"). η → ∞ gives p̄ back; η → 0 gives the unconstrained LQR gains (and S → 0).
Other implementations solve the same dual with L-BFGS-B, or bracket with a quadratic fit (GPS).
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from . import lqr


class Policy(eqx.Module):
    """p(u_t | x_t) = N(K_t x_t + k_t, cov_t)."""

    K: jax.Array  # [T, m, n]
    k: jax.Array  # [T, m]
    cov: jax.Array  # [T, m, m]


class Gaussian(eqx.Module):
    """A linear-Gaussian conditional p(y_t | z_t) = N(F_t z_t + f_t, cov_t) per time step:
    local dynamics (y = x', z = [x; u]) or a linearised policy (y = u, z = x)."""

    F: jax.Array  # [T, b, a]
    f: jax.Array  # [T, b]
    cov: jax.Array  # [T, b, b]


class Marginals(eqx.Module):
    """The Gaussian marginals of z_t = [x_t; u_t] under a controller and dynamics, and of
    the final state x_T."""

    mean: jax.Array  # [T, n+m]
    cov: jax.Array  # [T, n+m, n+m]
    final_mean: jax.Array  # [n]
    final_cov: jax.Array  # [n, n]


def _sym(M: jax.Array) -> jax.Array:
    return 0.5 * (M + jnp.swapaxes(M, -1, -2))


# ----------------------------------------------------------------------------- regression


def fit(
    inputs: jax.Array,
    outputs: jax.Array,
    prior_strength: float | jax.Array = 1.0,
    regularization: float | jax.Array = 1e-6,
) -> Gaussian:
    """Per-time-step linear-Gaussian regression of ``outputs`` [N, T, b] on ``inputs``
    [N, T, a] with a normal-inverse-Wishart prior from all time steps (module doc):
    returns F [T, b, a], f [T, b] and the residual covariance [T, b, b].

    ``prior_strength`` n₀ counts the prior (the moments of all N·T samples) as n₀ samples;
    0 is plain least squares per step (needs N > a). ``regularization`` is added to the
    diagonal of each step's input covariance."""
    N, _, a = inputs.shape
    y = jnp.concatenate([inputs, outputs], axis=-1)  # [N, T, a+b]
    flat = y.reshape(-1, y.shape[-1])
    mu_g = jnp.mean(flat, axis=0)
    sigma_g = _sym((flat - mu_g).T @ (flat - mu_g) / flat.shape[0])
    mu = jnp.mean(y, axis=0)  # [T, a+b]
    diff = y - mu
    S = _sym(jnp.einsum("nti,ntj->tij", diff, diff) / N)
    d = mu - mu_g
    n0 = jnp.asarray(prior_strength, y.dtype)
    sigma = (N * S + n0 * sigma_g + (N * n0 / (N + n0)) * jnp.einsum("ti,tj->tij", d, d)) / (
        N + n0)
    sigma = _sym(sigma)
    eye = jnp.eye(a, dtype=y.dtype)
    s_zz = sigma[:, :a, :a] + regularization * eye
    s_yz = sigma[:, a:, :a]
    F = jnp.swapaxes(jnp.linalg.solve(s_zz, jnp.swapaxes(s_yz, 1, 2)), 1, 2)  # Σ_yz Σ_zz⁻¹
    f = mu[:, a:] - jnp.einsum("tij,tj->ti", F, mu[:, :a])
    cov = _sym(sigma[:, a:, a:] - F @ s_zz @ jnp.swapaxes(F, 1, 2))
    return Gaussian(F, f, cov)


# ----------------------------------------------------------------------------- marginals


def forward(
    dynamics: Gaussian, policy: Policy, x0_mean: jax.Array, x0_cov: jax.Array
) -> Marginals:
    """The marginals of z_t under ``policy`` and ``dynamics`` from N(x0_mean, x0_cov):

        μ_u = K μ_x + k,   Σ_xu = Σ_x Kᵀ,   Σ_uu = K Σ_x Kᵀ + S
        μ_x' = F μ_z + f,  Σ_x' = F Σ_z Fᵀ + W
    """
    n = x0_mean.shape[0]

    def step(carry, inputs):
        mean_x, cov_x = carry
        F, f, W, K, k, S = inputs
        mean_u = K @ mean_x + k
        cov_xu = cov_x @ K.T
        cov_z = jnp.block([[cov_x, cov_xu], [cov_xu.T, K @ cov_x @ K.T + S]])
        mean_z = jnp.concatenate([mean_x, mean_u])
        return (F @ mean_z + f, _sym(F @ cov_z @ F.T + W)), (mean_z, _sym(cov_z))

    (mean_T, cov_T), (mean, cov) = jax.lax.scan(
        step, (x0_mean, x0_cov),
        (dynamics.F, dynamics.f, dynamics.cov, policy.K, policy.k, policy.cov))
    del n
    return Marginals(mean, cov, mean_T, cov_T)


def expected_cost(C: jax.Array, c: jax.Array, c0: jax.Array, marginals: Marginals
                  ) -> jax.Array:
    """E[Σ_t ½ z_tᵀC_t z_t + c_tᵀz_t + c0_t] = Σ_t ½ tr(C_t Σ_t) + ½ μ_tᵀC_t μ_t + c_tᵀμ_t
    + c0_t under Gaussian marginals z_t ~ N(μ_t, Σ_t) (C [T, n+m, n+m], c [T, n+m],
    c0 [T])."""
    mu, cov = marginals.mean, marginals.cov
    return jnp.sum(0.5 * jnp.einsum("tij,tji->t", C, cov)
                   + 0.5 * jnp.einsum("ti,tij,tj->t", mu, C, mu)
                   + jnp.einsum("ti,ti->t", c, mu) + c0)


# ----------------------------------------------------------------------------- KL


def step_kl(policy: Policy, old: Policy, marginals: Marginals) -> jax.Array:
    """E_{x_t}[D_KL(p(u|x_t) ‖ p̄(u|x_t))] per step [T] (module doc), x_t from
    ``marginals`` (those of ``policy``)."""
    n = policy.K.shape[-1]
    m = policy.K.shape[-2]
    mean_x, cov_x = marginals.mean[:, :n], marginals.cov[:, :n, :n]
    chol_old = jnp.linalg.cholesky(old.cov)
    chol_new = jnp.linalg.cholesky(policy.cov)

    def one(mean_x, cov_x, K, k, S, K_old, k_old, L_old, L_new):
        prec_old = jax.scipy.linalg.cho_solve((L_old, True), jnp.eye(m, dtype=S.dtype))
        dK, dk = K - K_old, k - k_old
        d = dK @ mean_x + dk
        logdet_old = 2.0 * jnp.sum(jnp.log(jnp.diag(L_old)))
        logdet_new = 2.0 * jnp.sum(jnp.log(jnp.diag(L_new)))
        return 0.5 * (jnp.trace(prec_old @ S) - m + logdet_old - logdet_new + d @ prec_old @ d
                      + jnp.trace(dK.T @ prec_old @ dK @ cov_x))

    return jax.vmap(one)(mean_x, cov_x, policy.K, policy.k, policy.cov, old.K, old.k,
                         chol_old, chol_new)


def trajectory_kl(policy: Policy, old: Policy, dynamics: Gaussian, x0_mean: jax.Array,
                  x0_cov: jax.Array) -> jax.Array:
    """D_KL(p(τ) ‖ p̄(τ)) of two controllers under the same dynamics and initial state
    distribution: Σ_t of :func:`step_kl` under ``policy``'s marginals."""
    return jnp.sum(step_kl(policy, old, forward(dynamics, policy, x0_mean, x0_cov)))


# ----------------------------------------------------------------------------- KL step


def log_policy_cost(old: Policy) -> tuple[jax.Array, jax.Array]:
    """−log p̄(u|x) as a quadratic in z = [x; u] (constants dropped): C̄ [T, n+m, n+m] and
    c̄ [T, n+m] with Λ = S̄⁻¹ (module doc)."""
    m = old.K.shape[-2]
    prec = jnp.linalg.solve(old.cov, jnp.broadcast_to(jnp.eye(m, dtype=old.cov.dtype),
                                                      old.cov.shape))
    prec = _sym(prec)
    KT = jnp.swapaxes(old.K, 1, 2)
    C = jnp.concatenate([
        jnp.concatenate([KT @ prec @ old.K, -KT @ prec], axis=2),
        jnp.concatenate([-prec @ old.K, prec], axis=2),
    ], axis=1)
    c = jnp.concatenate([jnp.einsum("tij,tj->ti", KT @ prec, old.k),
                         -jnp.einsum("tij,tj->ti", prec, old.k)], axis=1)
    return _sym(C), c


def eta_lqr(dynamics: Gaussian, C: jax.Array, c: jax.Array, old: Policy, x0_mean: jax.Array,
            eta: jax.Array) -> tuple[Policy, jax.Array]:
    """The minimiser of E_p[c/η − log p̄] − H(p) over linear-Gaussian controllers: LQR on the
    surrogate cost (C/η + C̄, c/η + c̄) with S_t = Q̃_uu,t⁻¹. Returns the controller and
    whether every Q̃_uu was positive definite (where not, the controller holds NaN)."""
    n = x0_mean.shape[0]
    C_kl, c_kl = log_policy_cost(old)
    C_eta, c_eta = C / eta + C_kl, c / eta + c_kl
    solution = lqr.lqr(dynamics.F, dynamics.f, C_eta, c_eta, x0_mean)
    F_u = dynamics.F[:, :, n:]
    Q_uu = _sym(C_eta[:, n:, n:] + jnp.swapaxes(F_u, 1, 2) @ solution.V[1:] @ F_u)
    m = Q_uu.shape[-1]
    chol = jnp.linalg.cholesky(Q_uu)
    eye = jnp.broadcast_to(jnp.eye(m, dtype=Q_uu.dtype), Q_uu.shape)
    cov = _sym(jax.vmap(lambda L, e: jax.scipy.linalg.cho_solve((L, True), e))(chol, eye))
    ok = jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.isfinite(solution.K)) & jnp.all(
        jnp.isfinite(solution.k))
    return Policy(solution.K, solution.k, cov), ok


class KLStep(NamedTuple):
    """The result of :func:`kl_step`."""

    policy: Policy  # the new controller
    eta: jax.Array  # its dual variable
    kl: jax.Array  # D_KL(p_new(τ) ‖ p̄(τ)) under the fitted dynamics
    iterations: jax.Array  # dual iterations run


def kl_step(
    dynamics: Gaussian,
    C: jax.Array,
    c: jax.Array,
    old: Policy,
    x0_mean: jax.Array,
    x0_cov: jax.Array,
    epsilon: jax.Array,
    *,
    tol: float = 0.1,
    eta_min: float = 1e-6,
    eta_max: float = 1e16,
    max_iterations: int = 60,
) -> KLStep:
    """min_p E_p[Σ_t ½ z_tᵀC_t z_t + c_tᵀz_t] s.t. D_KL(p(τ) ‖ p̄(τ)) ≤ ε under the local
    ``dynamics`` from N(x0_mean, x0_cov): the dual in η by bisection in log η on
    [η_min, η_max] until |KL − ε| ≤ tol·ε (GPS's rule) or ``max_iterations``.

    The controller returned is that of the feasible end of the bracket (KL ≤ ε, up to the
    tolerance the loop stopped at); if even η_min keeps KL below ε the constraint is
    inactive and the (nearly) unconstrained solution at η_min is returned."""
    dtype = C.dtype
    epsilon = jnp.asarray(epsilon, dtype)

    def evaluate(log_eta):
        policy, ok = eta_lqr(dynamics, C, c, old, x0_mean, jnp.exp(log_eta))
        kl = trajectory_kl(policy, old, dynamics, x0_mean, x0_cov)
        kl = jnp.where(ok & jnp.isfinite(kl), kl, jnp.inf)
        return policy, kl

    lo, hi = jnp.log(jnp.asarray(eta_min, dtype)), jnp.log(jnp.asarray(eta_max, dtype))
    policy_lo, kl_lo = evaluate(lo)
    policy_hi, kl_hi = evaluate(hi)

    class Carry(NamedTuple):
        lo: jax.Array
        hi: jax.Array
        policy: Policy  # of hi: KL(hi) ≤ ε
        kl: jax.Array
        i: jax.Array
        done: jax.Array

    def body(carry: Carry) -> Carry:
        mid = 0.5 * (carry.lo + carry.hi)
        policy, kl = evaluate(mid)
        feasible = kl <= epsilon
        lo = jnp.where(feasible, carry.lo, mid)
        hi = jnp.where(feasible, mid, carry.hi)
        best = jax.tree.map(lambda a, b: jnp.where(feasible, a, b), policy, carry.policy)
        best_kl = jnp.where(feasible, kl, carry.kl)
        done = feasible & (jnp.abs(kl - epsilon) <= tol * epsilon)
        return Carry(lo, hi, best, best_kl, carry.i + 1, done)

    inactive = kl_lo <= epsilon
    init = Carry(lo, hi, policy_hi, kl_hi, jnp.zeros((), jnp.int32), inactive)
    out = jax.lax.while_loop(lambda s: ~s.done & (s.i < max_iterations), body, init)
    policy = jax.tree.map(lambda a, b: jnp.where(inactive, a, b), policy_lo, out.policy)
    kl = jnp.where(inactive, kl_lo, out.kl)
    eta = jnp.exp(jnp.where(inactive, lo, out.hi))
    return KLStep(policy, eta, kl, out.i)


# ----------------------------------------------------------------------------- PSD


def symmetric_eigen(A: jax.Array, sweeps: int = 8) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues w [..., d] and eigenvectors V [..., d, d] (A = V diag(w) Vᵀ) of small
    symmetric matrices by the cyclic Jacobi method (Golub & Van Loan, 2013, §8.5): each
    rotation zeroes one off-diagonal pair, and the off-diagonal mass falls quadratically
    per sweep, so a few sweeps reach float32 rounding for d ≲ 10.

    Written with matmuls only because ``jnp.linalg.eigh`` inside a vmapped ``lax.scan``
    hung XLA:CPU (every thread waiting); for the d ≤ 10 matrices of LQR-FLM's cost
    expansions the cost is negligible."""
    d = A.shape[-1]
    pairs = [(p, q) for p in range(d - 1) for q in range(p + 1, d)]
    eye = jnp.broadcast_to(jnp.eye(d, dtype=A.dtype), A.shape)

    def rotate(carry, _):
        A, V = carry
        for p, q in pairs:
            app, aqq, apq = A[..., p, p], A[..., q, q], A[..., p, q]
            small = jnp.abs(apq) <= 1e-30
            theta = (aqq - app) / (2.0 * jnp.where(small, 1.0, apq))
            t = jnp.sign(theta) / (jnp.abs(theta) + jnp.sqrt(theta * theta + 1.0))
            t = jnp.where(theta == 0.0, 1.0, t)
            t = jnp.where(small, 0.0, t)
            c = jax.lax.rsqrt(t * t + 1.0)
            sn = t * c
            J = eye.at[..., p, p].set(c).at[..., q, q].set(c)
            J = J.at[..., p, q].set(sn).at[..., q, p].set(-sn)
            A = jnp.swapaxes(J, -1, -2) @ A @ J
            V = V @ J
        return (_sym(A), V), None

    (A, V), _ = jax.lax.scan(rotate, (_sym(A), eye), None, length=sweeps)
    return jnp.diagonal(A, axis1=-2, axis2=-1), V


def psd_part(A: jax.Array, floor: float | jax.Array = 0.0) -> jax.Array:
    """The nearest positive semi-definite matrix to symmetric A in the Frobenius norm
    (Higham, 1988): V max(w, floor) Vᵀ, the negative eigenvalues raised to ``floor``."""
    w, V = symmetric_eigen(A)
    w = jnp.maximum(w, floor)
    return _sym((V * w[..., None, :]) @ jnp.swapaxes(V, -1, -2))


def spd_inverse(A: jax.Array) -> jax.Array:
    """A⁻¹ = V diag(1/w) Vᵀ of small symmetric positive-definite matrices [..., d, d], by
    :func:`symmetric_eigen` (matmuls only: ``jnp.linalg.inv`` inside GPS's vmapped scan
    hung XLA:CPU as ``eigh`` did, every thread waiting, with 2 seeds vmapped)."""
    w, V = symmetric_eigen(A)
    return _sym((V / w[..., None, :]) @ jnp.swapaxes(V, -1, -2))


# ----------------------------------------------------------------------------- costs


def expand_cost(cost, states: jax.Array, actions: jax.Array, psd: bool = False
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A quadratic model of ``cost(x, u, t)`` per step from samples states [N, T(+1), n],
    actions [N, T, m]: the second-order Taylor expansion at each sample by autodiff,
    rewritten in absolute coordinates and averaged over the samples (as the GPS
    authors' code does):

        ℓ(z) ≈ ½ zᵀ H_i z + (g_i − H_i z_i)ᵀ z + ℓ(z_i) − g_iᵀz_i + ½ z_iᵀH_i z_i

    Returns C [T, n+m, n+m], c [T, n+m] and the constants c0 [T]."""
    T = actions.shape[1]
    n = states.shape[-1]
    z = jnp.concatenate([states[:, :T], actions], axis=-1)  # [N, T, n+m]
    ts = jnp.arange(T)
    split = lambda z_t, t: cost(z_t[:n], z_t[n:], t)  # noqa: E731
    value = jax.vmap(jax.vmap(split, in_axes=(0, 0)), in_axes=(0, None))(z, ts)
    grad = jax.vmap(jax.vmap(jax.grad(split), in_axes=(0, 0)), in_axes=(0, None))(z, ts)
    hess = jax.vmap(jax.vmap(jax.hessian(split), in_axes=(0, 0)), in_axes=(0, None))(z, ts)
    hess = psd_part(hess) if psd else _sym(hess)
    Hz = jnp.einsum("ntij,ntj->nti", hess, z)
    C = jnp.mean(hess, axis=0)
    c = jnp.mean(grad - Hz, axis=0)
    c0 = jnp.mean(value - jnp.einsum("nti,nti->nt", grad, z)
                  + 0.5 * jnp.einsum("nti,nti->nt", z, Hz), axis=0)
    return C, c, c0
