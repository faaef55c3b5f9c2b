"""Linear-Gaussian trajectory maths (minirl/planning/linear_gaussian.py) against independent
references: exact linear systems (regression), Monte Carlo (marginals, trajectory KL), the
dense QP of an LQ problem (η → 0), the old controller itself (η → ∞), autodiff-free
closed forms (expected cost, the surrogate −log p̄), and perturbations of the controller
(the η-step minimises its Lagrangian). float64 throughout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl.planning import linear_gaussian as lg
from minirl.planning import lqr
from tests.planning.test_lqr import dense_qp

pytestmark = pytest.mark.timeout(300)

SEEDS = st.integers(0, 2**31 - 1)
SHAPES = st.sampled_from([(3, 2, 1), (5, 3, 2)])  # (T, n, m)

FIT = jax.jit(lg.fit)
FORWARD = jax.jit(lg.forward)
KL = jax.jit(lg.trajectory_kl)
ETA_LQR = jax.jit(lg.eta_lqr)
KL_STEP = jax.jit(lg.kl_step)


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def random_policy(rng, T, n, m, scale=0.3):
    A = rng.normal(size=(T, m, m))
    return lg.Policy(jnp.asarray(rng.normal(size=(T, m, n)) * scale),
                     jnp.asarray(rng.normal(size=(T, m))),
                     jnp.asarray(A @ A.transpose(0, 2, 1) / m + 0.2 * np.eye(m)))


def random_dynamics(rng, T, n, m, scale=0.5, noise=0.1):
    B = rng.normal(size=(T, n, n))
    return lg.Gaussian(jnp.asarray(rng.normal(size=(T, n, n + m)) * scale),
                       jnp.asarray(rng.normal(size=(T, n)) * 0.3),
                       jnp.asarray(noise * (B @ B.transpose(0, 2, 1) / n + 0.1 * np.eye(n))))


def random_cost(rng, T, n, m):
    A = rng.normal(size=(T, n + m, n + m))
    return (jnp.asarray(A @ A.transpose(0, 2, 1) / (n + m) + 0.1 * np.eye(n + m)),
            jnp.asarray(rng.normal(size=(T, n + m))))


def sample_trajectories(rng, dynamics, policy, x0_mean, x0_cov, num):
    """Plain NumPy ancestral sampling: states [num, T+1, n], actions [num, T, m]."""
    F, f, W = map(np.asarray, (dynamics.F, dynamics.f, dynamics.cov))
    K, k, S = map(np.asarray, (policy.K, policy.k, policy.cov))
    T, n, _ = F.shape
    x = rng.multivariate_normal(np.asarray(x0_mean), np.asarray(x0_cov), size=num)
    xs, us = [x], []
    for t in range(T):
        u = x @ K[t].T + k[t] + rng.multivariate_normal(np.zeros(K.shape[1]), S[t], size=num)
        x = np.concatenate([x, u], 1) @ F[t].T + f[t] + rng.multivariate_normal(
            np.zeros(n), W[t], size=num)
        xs.append(x)
        us.append(u)
    return np.stack(xs, 1), np.stack(us, 1)


# ----------------------------------------------------------------------------- regression


@settings(max_examples=10)
@given(SEEDS, SHAPES)
def test_regression_recovers_a_noise_free_time_varying_linear_system(seed, shape):
    """N > n+m noise-free samples per step, no prior: (A_t, B_t, c_t) exactly; and with a
    prior towards the (wrong, time-invariant) global fit the error vanishes as N grows."""
    T, n, m = shape
    rng = np.random.default_rng(seed)
    truth = random_dynamics(rng, T, n, m)
    with jax.enable_x64(True):
        def data(N):
            z = rng.normal(size=(N, T, n + m))
            y = np.einsum("tij,ntj->nti", truth.F, z) + np.asarray(truth.f)
            return jnp.asarray(z), jnp.asarray(y)

        z, y = data(3 * (n + m))
        fitted = FIT(z, y, 0.0, 0.0)
        np.testing.assert_allclose(fitted.F, truth.F, atol=1e-8)
        np.testing.assert_allclose(fitted.f, truth.f, atol=1e-8)
        np.testing.assert_allclose(fitted.cov, 0.0, atol=1e-8)
        errors = []
        for N in (20, 200, 2000, 20000):
            fitted = FIT(*data(N), 1.0, 0.0)
            errors.append(float(jnp.max(jnp.abs(fitted.F - truth.F))))
        # the prior is worth one sample: its pull shrinks like 1/N
        assert errors[-1] < 1e-3 and errors[-1] < errors[0] / 100, errors


@settings(max_examples=10)
@given(SEEDS, SHAPES)
def test_regression_with_the_prior_is_exact_for_an_lti_system_with_fewer_samples_than_dims(
        seed, shape):
    """N = 2 < n+m samples per step: the per-step covariance is singular (plain least
    squares has no unique solution), but with the prior from all steps' data the fit of a
    time-invariant linear system is exact at every step."""
    T, n, m = shape
    T = 40
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n + m)) * 0.5
    c = rng.normal(size=n)
    z = rng.normal(size=(2, T, n + m))
    y = z @ A.T + c
    with jax.enable_x64(True):
        fitted = FIT(jnp.asarray(z), jnp.asarray(y), 1.0, 0.0)
        np.testing.assert_allclose(fitted.F, np.broadcast_to(A, fitted.F.shape), atol=1e-7)
        np.testing.assert_allclose(fitted.f, np.broadcast_to(c, fitted.f.shape), atol=1e-7)
        # the local fit alone is singular
        S = np.einsum("nti,ntj->tij", z - z.mean(0), z - z.mean(0))
        assert np.linalg.matrix_rank(S[0]) < n + m


def test_regression_residual_covariance_matches_the_noise():
    """Many samples of x' = A z + c + w, w ~ N(0, W): the residual covariance is W."""
    rng = np.random.default_rng(0)
    T, n, m, N = 3, 2, 1, 40_000
    truth = random_dynamics(rng, T, n, m, noise=0.5)
    z = rng.normal(size=(N, T, n + m))
    noise = np.stack([rng.multivariate_normal(np.zeros(n), truth.cov[t], size=N)
                      for t in range(T)], 1)
    y = np.einsum("tij,ntj->nti", truth.F, z) + np.asarray(truth.f) + noise
    with jax.enable_x64(True):
        fitted = FIT(jnp.asarray(z), jnp.asarray(y), 1.0, 0.0)
        np.testing.assert_allclose(fitted.cov, truth.cov, atol=0.03)
        np.testing.assert_allclose(fitted.F, truth.F, atol=0.03)


# ----------------------------------------------------------------------------- marginals, KL


@settings(max_examples=5)
@given(SEEDS, SHAPES)
def test_marginals_and_trajectory_kl_against_monte_carlo(seed, shape):
    """The forward marginals against sample moments, and D_KL(p ‖ p̄) against the Monte Carlo
    mean of Σ_t log p(u_t|x_t) − log p̄(u_t|x_t) over trajectories sampled from p."""
    T, n, m = shape
    rng = np.random.default_rng(seed)
    dynamics = random_dynamics(rng, T, n, m)
    new, old = random_policy(rng, T, n, m), random_policy(rng, T, n, m)
    x0_mean, x0_cov = rng.normal(size=n), 0.3 * np.eye(n)
    with jax.enable_x64(True):
        marginals = FORWARD(dynamics, new, jnp.asarray(x0_mean), jnp.asarray(x0_cov))
        kl = float(KL(new, old, dynamics, jnp.asarray(x0_mean), jnp.asarray(x0_cov)))
    num = 100_000
    xs, us = sample_trajectories(rng, dynamics, new, x0_mean, x0_cov, num)
    z = np.concatenate([xs[:, :T], us], -1)
    np.testing.assert_allclose(z.mean(0), marginals.mean, atol=0.05 * (1 + np.abs(
        marginals.mean).max()))
    sample_cov = np.einsum("nti,ntj->tij", z - z.mean(0), z - z.mean(0)) / num
    np.testing.assert_allclose(sample_cov, marginals.cov, atol=0.05 * (1 + np.abs(
        marginals.cov).max()))
    log_ratio = np.zeros(num)
    for t in range(T):
        for policy, sign in ((new, 1.0), (old, -1.0)):
            mean = xs[:, t] @ np.asarray(policy.K[t]).T + np.asarray(policy.k[t])
            log_ratio += sign * scipy.stats.multivariate_normal(
                np.zeros(m), np.asarray(policy.cov[t])).logpdf(us[:, t] - mean)
    mc, stderr = log_ratio.mean(), log_ratio.std() / np.sqrt(num)
    assert abs(kl - mc) < 5 * stderr + 1e-3 * abs(mc), (kl, mc, stderr)


def test_kl_of_a_controller_to_itself_is_zero():
    rng = np.random.default_rng(1)
    dynamics, policy = random_dynamics(rng, 4, 3, 2), random_policy(rng, 4, 3, 2)
    with jax.enable_x64(True):
        kl = KL(policy, policy, dynamics, jnp.zeros(3), jnp.eye(3))
    assert abs(float(kl)) < 1e-10


def test_expected_cost_against_monte_carlo():
    rng = np.random.default_rng(2)
    T, n, m = 4, 3, 2
    dynamics, policy = random_dynamics(rng, T, n, m), random_policy(rng, T, n, m)
    C, c = random_cost(rng, T, n, m)
    c0 = jnp.asarray(rng.normal(size=T))
    x0 = rng.normal(size=n)
    with jax.enable_x64(True):
        marginals = FORWARD(dynamics, policy, jnp.asarray(x0), 0.2 * jnp.eye(n))
        expected = float(lg.expected_cost(C, c, c0, marginals))
    xs, us = sample_trajectories(rng, dynamics, policy, x0, 0.2 * np.eye(n), 200_000)
    z = np.concatenate([xs[:, :T], us], -1)
    costs = (0.5 * np.einsum("nti,tij,ntj->n", z, C, z) + np.einsum("ti,nti->n", c, z)
             + float(np.sum(c0)))
    assert abs(expected - costs.mean()) < 5 * costs.std() / np.sqrt(len(costs))


def test_log_policy_cost_is_minus_log_density_up_to_a_constant():
    rng = np.random.default_rng(3)
    T, n, m = 3, 3, 2
    old = random_policy(rng, T, n, m)
    with jax.enable_x64(True):
        C, c = lg.log_policy_cost(old)
    for t in range(T):
        values = []
        for _ in range(5):
            x, u = rng.normal(size=n), rng.normal(size=m)
            z = np.concatenate([x, u])
            quadratic = 0.5 * z @ np.asarray(C[t]) @ z + np.asarray(c[t]) @ z
            logpdf = scipy.stats.multivariate_normal(
                np.asarray(old.K[t]) @ x + np.asarray(old.k[t]), np.asarray(old.cov[t])
            ).logpdf(u)
            values.append(quadratic + logpdf)
        np.testing.assert_allclose(values, values[0], atol=1e-8)  # a constant


# ----------------------------------------------------------------------------- the η step


def lq_problem(seed, T=6, n=3, m=2):
    rng = np.random.default_rng(seed)
    dynamics = random_dynamics(rng, T, n, m, scale=0.4)
    C, c = random_cost(rng, T, n, m)
    old = random_policy(rng, T, n, m)
    x0 = jnp.asarray(rng.normal(size=n))
    return dynamics, C, c, old, x0, 0.1 * jnp.eye(n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eta_to_infinity_returns_the_old_controller(seed):
    dynamics, C, c, old, x0, _ = lq_problem(seed)
    with jax.enable_x64(True):
        policy, ok = ETA_LQR(dynamics, C, c, old, x0, 1e12)
    assert bool(ok)
    np.testing.assert_allclose(policy.K, old.K, atol=1e-8)
    np.testing.assert_allclose(policy.k, old.k, atol=1e-8)
    np.testing.assert_allclose(policy.cov, old.cov, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eta_to_zero_is_the_unconstrained_lqr_solution(seed):
    """η → 0: the mean trajectory is the solution of the LQ problem's dense KKT system, and
    the covariance vanishes like η."""
    dynamics, C, c, old, x0, _ = lq_problem(seed)
    with jax.enable_x64(True):
        eta = 1e-9
        policy, ok = ETA_LQR(dynamics, C, c, old, x0, eta)
        exact = lqr.lqr(dynamics.F, dynamics.f, C, c, x0)
    states, actions, _ = dense_qp(*map(np.asarray, (dynamics.F, dynamics.f, C, c, x0)),
                                  np.zeros((3, 3)), np.zeros(3))
    assert bool(ok)
    np.testing.assert_allclose(policy.K, exact.K, atol=1e-6)
    xs, us = lqr.closed_loop(dynamics.F, dynamics.f, policy.K, policy.k, x0,
                             jnp.zeros_like(dynamics.f))
    np.testing.assert_allclose(us, actions, atol=1e-6)
    np.testing.assert_allclose(xs, states, atol=1e-6)
    assert float(jnp.max(policy.cov)) < 1e-7


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("epsilon", [0.1, 1.0, 10.0])
def test_at_the_dual_optimum_the_kl_is_epsilon(seed, epsilon):
    """The step's controller has D_KL(p ‖ p̄) within 10 % of ε, measured by Monte Carlo on
    trajectories sampled from it (not by the step's own formula), and it improves the
    expected cost over the old controller."""
    dynamics, C, c, old, x0, x0_cov = lq_problem(seed)
    with jax.enable_x64(True):
        result = KL_STEP(dynamics, C, c, old, x0, x0_cov, epsilon)
        old_cost = lg.expected_cost(C, c, jnp.zeros(C.shape[0]),
                                    FORWARD(dynamics, old, x0, x0_cov))
        new_cost = lg.expected_cost(C, c, jnp.zeros(C.shape[0]),
                                    FORWARD(dynamics, result.policy, x0, x0_cov))
    assert abs(float(result.kl) - epsilon) <= 0.1 * epsilon, (float(result.kl), epsilon)
    rng = np.random.default_rng(seed)
    xs, us = sample_trajectories(rng, dynamics, result.policy, np.asarray(x0),
                                 np.asarray(x0_cov), 50_000)
    log_ratio = 0.0
    for t in range(C.shape[0]):
        for policy, sign in ((result.policy, 1.0), (old, -1.0)):
            mean = xs[:, t] @ np.asarray(policy.K[t]).T + np.asarray(policy.k[t])
            log_ratio = log_ratio + sign * scipy.stats.multivariate_normal(
                np.zeros(us.shape[-1]), np.asarray(policy.cov[t])).logpdf(us[:, t] - mean)
    mc = float(np.mean(log_ratio))
    stderr = float(np.std(log_ratio) / np.sqrt(len(log_ratio)))
    assert abs(mc - epsilon) <= 0.1 * epsilon + 4 * stderr, (mc, stderr, epsilon)
    assert float(new_cost) < float(old_cost)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_eta_step_minimises_its_lagrangian(seed):
    """p_η minimises L(p) = E_p[c] + η D_KL(p ‖ p̄) over linear-Gaussian controllers: random
    perturbations of its gains, offsets and covariances never lower L, computed from the
    forward marginals (closed forms, no backward pass)."""
    dynamics, C, c, old, x0, x0_cov = lq_problem(seed)
    rng = np.random.default_rng(seed + 10)
    eta = 3.0
    zero = jnp.zeros(C.shape[0])
    with jax.enable_x64(True):
        policy, ok = ETA_LQR(dynamics, C, c, old, x0, eta)

        def lagrangian(p):
            cost = lg.expected_cost(C, c, zero, FORWARD(dynamics, p, x0, x0_cov))
            return cost + eta * KL(p, old, dynamics, x0, x0_cov)

        best = float(lagrangian(policy))
        for _ in range(20):
            scale = 10 ** rng.uniform(-4, -1)
            A = rng.normal(size=policy.cov.shape) * scale
            other = lg.Policy(policy.K + rng.normal(size=policy.K.shape) * scale,
                              policy.k + rng.normal(size=policy.k.shape) * scale,
                              policy.cov + A @ jnp.swapaxes(A, 1, 2)
                              - 0.5 * scale * jnp.eye(policy.cov.shape[-1]) * policy.cov)
            if not np.all(np.linalg.eigvalsh(np.asarray(other.cov)) > 0):
                continue
            assert float(lagrangian(other)) >= best - 1e-9 * abs(best)
    assert bool(ok)


def test_expand_cost_is_exact_for_a_quadratic_cost():
    """For a quadratic cost the averaged expansion is the cost itself, at any samples."""
    rng = np.random.default_rng(4)
    T, n, m = 5, 3, 2
    C, c = random_cost(rng, T, n, m)
    c0 = jnp.asarray(rng.normal(size=T))

    def cost(x, u, t):
        z = jnp.concatenate([x, u])
        return 0.5 * z @ C[t] @ z + c[t] @ z + c0[t]

    with jax.enable_x64(True):
        states = jnp.asarray(rng.normal(size=(4, T + 1, n)))
        actions = jnp.asarray(rng.normal(size=(4, T, m)))
        Ce, ce, c0e = lg.expand_cost(cost, states, actions)
    np.testing.assert_allclose(Ce, C, atol=1e-10)
    np.testing.assert_allclose(ce, c, atol=1e-10)
    np.testing.assert_allclose(c0e, c0, atol=1e-10)



@settings(max_examples=15)
@given(SEEDS, st.integers(1, 7), st.integers(1, 4))
def test_jacobi_eigen_agrees_with_lapack(seed, d, batch):
    """The Jacobi eigendecomposition against LAPACK's (numpy.linalg.eigh): the same
    spectrum, orthonormal vectors, and A = V diag(w) Vᵀ, including repeated eigenvalues."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(batch, d, d))
    A = (M + np.swapaxes(M, 1, 2)) / 2
    if d > 2:  # a repeated eigenvalue: Q diag(1, 1, …) Qᵀ
        Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        w = rng.normal(size=d)
        w[1] = w[0]
        A[0] = (Q * w) @ Q.T
    w, V = lg.symmetric_eigen(jnp.asarray(A))
    np.testing.assert_allclose(np.sort(np.asarray(w), axis=-1), np.linalg.eigvalsh(A),
                               atol=1e-9)
    np.testing.assert_allclose(np.swapaxes(V, 1, 2) @ V, np.broadcast_to(np.eye(d), A.shape),
                               atol=1e-9)
    np.testing.assert_allclose((V * np.asarray(w)[:, None, :]) @ np.swapaxes(V, 1, 2), A,
                               atol=1e-9)


@settings(max_examples=10)
@given(SEEDS, st.integers(2, 6))
def test_psd_part_is_the_nearest_psd_matrix(seed, d):
    """Higham's nearest PSD matrix: against LAPACK's eigendecomposition, and no PSD matrix
    drawn at random is nearer in the Frobenius norm."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(d, d))
    A = (M + M.T) / 2
    P = np.asarray(lg.psd_part(jnp.asarray(A)))
    w, V = np.linalg.eigh(A)
    np.testing.assert_allclose(P, (V * np.maximum(w, 0)) @ V.T, atol=1e-9)
    assert np.linalg.eigvalsh(P).min() >= -1e-9
    for _ in range(50):
        B = rng.normal(size=(d, d))
        other = P + 0.1 * B @ B.T * rng.uniform()  # PSD perturbations in every direction
        other = other - 0.1 * rng.uniform() * P
        assert np.linalg.norm(other - A) >= np.linalg.norm(P - A) - 1e-12


def test_expand_cost_with_psd_keeps_each_samples_gradient():
    """With ``psd`` each sample's Hessian is replaced by its PSD part and the linear term
    rebuilt from it, so the averaged model still has the exact gradient at a single sample
    and a PSD Hessian (θ² with θ = atan2(s, c) has an indefinite Hessian off the axis)."""
    def cost(x, u, t):
        return jnp.arctan2(x[1], x[0]) ** 2 + 0.001 * u[0] ** 2

    states = jnp.asarray([[[np.cos(2.0), np.sin(2.0)], [1.0, 0.0]]])  # N = 1, T = 1
    actions = jnp.asarray([[[0.3]]])
    z = jnp.concatenate([states[0, 0], actions[0, 0]])
    C, c, _ = lg.expand_cost(cost, states, actions)
    assert np.linalg.eigvalsh(np.asarray(C[0])).min() < -0.1  # indefinite without
    Cp, cp, _ = lg.expand_cost(cost, states, actions, psd=True)
    assert np.linalg.eigvalsh(np.asarray(Cp[0])).min() >= -1e-9
    grad = jax.grad(lambda z: cost(z[:2], z[2:], 0))(z)
    np.testing.assert_allclose(Cp[0] @ z + cp[0], grad, atol=1e-9)  # ∇ of the model at z
