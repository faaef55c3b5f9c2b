"""LQR, noisy LQR, parallel LQR and iLQR against dense and closed-form references (float64)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl.core.config import ConfigError
from minirl.planning import lqr

pytestmark = pytest.mark.timeout(300)

# jitted once per shape (eager calls would recompile the scans every example)
LQR = jax.jit(lqr.lqr)
LQR_GAUSSIAN = jax.jit(lqr.lqr_gaussian)
LQR_PARALLEL = jax.jit(lqr.lqr_parallel)

SHAPES = st.sampled_from([(1, 1, 1), (3, 2, 1), (5, 3, 2)])  # (T, n, m)
SEEDS = st.integers(0, 2**31 - 1)


def random_problem(seed, T, n, m, scale=0.5):
    """A random LQ problem with C_t ⪰ 0, C_uu ≻ 0 and a final cost."""
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(T, n, n + m)) * scale
    f = rng.normal(size=(T, n))
    A = rng.normal(size=(T, n + m, n + m))
    C = A @ A.transpose(0, 2, 1) / (n + m) + 0.1 * np.eye(n + m)
    c = rng.normal(size=(T, n + m))
    B = rng.normal(size=(n, n))
    C_final = B @ B.T / n
    c_final = rng.normal(size=n)
    x0 = rng.normal(size=n)
    return F, f, C, c, x0, C_final, c_final


def dense_qp(F, f, C, c, x0, C_final, c_final):
    """Solve min ½yᵀHy + hᵀy s.t. x_0 = x0, x_{t+1} = F_t z_t + f_t by its KKT system."""
    T, n, nm = F.shape
    m = nm - n
    N = (T + 1) * n + T * m
    xi = lambda t: np.arange(t * n, (t + 1) * n)
    ui = lambda t: (T + 1) * n + np.arange(t * m, (t + 1) * m)
    H, h = np.zeros((N, N)), np.zeros(N)
    for t in range(T):
        z = np.concatenate([xi(t), ui(t)])
        H[np.ix_(z, z)] += C[t]
        h[z] += c[t]
    H[np.ix_(xi(T), xi(T))] += C_final
    h[xi(T)] += c_final
    rows = [np.zeros((n, N))]
    rows[0][:, xi(0)] = np.eye(n)
    b = [x0]
    for t in range(T):
        row = np.zeros((n, N))
        row[:, xi(t + 1)] = np.eye(n)
        row[:, np.concatenate([xi(t), ui(t)])] -= F[t]
        rows.append(row)
        b.append(f[t])
    A, b = np.concatenate(rows), np.concatenate(b)
    kkt = np.block([[H, A.T], [A, np.zeros((A.shape[0], A.shape[0]))]])
    y = np.linalg.solve(kkt, np.concatenate([-h, b]))[:N]
    states = y[: (T + 1) * n].reshape(T + 1, n)
    actions = y[(T + 1) * n :].reshape(T, m)
    return states, actions, 0.5 * y @ H @ y + h @ y


@given(SEEDS, SHAPES)
def test_lqr_equals_dense_qp(seed, shape):
    problem = random_problem(seed, *shape)
    with jax.enable_x64(True):
        solution = LQR(*map(jnp.asarray, problem))
        states, actions, cost = dense_qp(*problem)
        np.testing.assert_allclose(solution.states, states, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(solution.actions, actions, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(solution.cost, cost, rtol=1e-7, atol=1e-7)
        # the cost reported is the cost of the trajectory returned
        F, f, C, c, x0, C_final, c_final = problem
        direct = lqr.trajectory_cost(C, c, solution.states, solution.actions, C_final, c_final)
        np.testing.assert_allclose(solution.cost, direct, rtol=1e-9, atol=1e-9)


@given(SEEDS, SHAPES)
def test_cost_to_go_symmetric_psd(seed, shape):
    problem = random_problem(seed, *shape)
    with jax.enable_x64(True):
        V = np.asarray(LQR(*map(jnp.asarray, problem)).V)
    np.testing.assert_allclose(V, V.transpose(0, 2, 1), atol=1e-12)
    assert np.all(np.linalg.eigvalsh(V) >= -1e-9)


def test_long_horizon_approaches_dare():
    rng = np.random.default_rng(0)
    n, m, T = 3, 2, 300
    A = rng.normal(size=(n, n))
    A = 1.1 * A / np.max(np.abs(np.linalg.eigvals(A)))  # open-loop unstable
    B = rng.normal(size=(n, m))
    Q, R = np.eye(n), 0.5 * np.eye(m)
    P = scipy.linalg.solve_discrete_are(A, B, Q, R)
    K = -np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
    F = np.broadcast_to(np.concatenate([A, B], axis=1), (T, n, n + m))
    C = np.broadcast_to(scipy.linalg.block_diag(Q, R), (T, n + m, n + m))
    with jax.enable_x64(True):
        solution = lqr.lqr(
            jnp.asarray(F), jnp.zeros((T, n)), jnp.asarray(C), jnp.zeros((T, n + m)), jnp.ones(n)
        )
    np.testing.assert_allclose(solution.V[0], P, rtol=1e-8)
    np.testing.assert_allclose(solution.K[0], K, rtol=1e-8, atol=1e-10)


@given(SEEDS, SHAPES)
def test_gaussian_lqr_same_gains_and_trace_term(seed, shape):
    F, f, C, c, x0, C_final, c_final = random_problem(seed, *shape)
    T, n, _ = shape
    rng = np.random.default_rng(seed + 1)
    L = rng.normal(size=(T, n, n)) * 0.3
    Sigma = L @ L.transpose(0, 2, 1)
    with jax.enable_x64(True):
        args = tuple(map(jnp.asarray, (F, f, C, c, x0)))
        plain = jax.tree.map(np.asarray, LQR(*args, C_final, c_final))
        noisy = jax.tree.map(np.asarray, LQR_GAUSSIAN(*args, jnp.asarray(Sigma), C_final, c_final))
    np.testing.assert_allclose(noisy.K, plain.K, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(noisy.k, plain.k, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(noisy.states, plain.states, rtol=1e-12, atol=1e-12)
    extra = 0.5 * sum(np.trace(plain.V[t + 1] @ Sigma[t]) for t in range(T))
    np.testing.assert_allclose(noisy.cost - plain.cost, extra, rtol=1e-8, atol=1e-10)


def test_gaussian_lqr_expected_cost_matches_monte_carlo():
    T, n, m = 5, 2, 1
    F, f, C, c, x0, C_final, c_final = random_problem(3, T, n, m)
    Sigma = 0.2 * np.eye(n)
    samples = 20_000
    with jax.enable_x64(True):
        args = tuple(map(jnp.asarray, (F, f, C, c, x0)))
        noisy = lqr.lqr_gaussian(*args, jnp.asarray(Sigma), C_final, c_final)
        noise = jax.random.multivariate_normal(
            jax.random.PRNGKey(0), jnp.zeros(n), jnp.asarray(Sigma), (samples, T)
        )

        def cost(w):
            states, actions = lqr.closed_loop(args[0], args[1], noisy.K, noisy.k, args[4], w)
            return lqr.trajectory_cost(C, c, states, actions, C_final, c_final)

        costs = np.asarray(jax.jit(jax.vmap(cost))(noise))
    error = 4 * costs.std() / np.sqrt(samples)
    assert abs(costs.mean() - float(noisy.cost)) < error, (costs.mean(), float(noisy.cost), error)


@given(SEEDS, st.sampled_from([(1, 1, 1), (4, 2, 1), (7, 3, 2), (16, 2, 2)]))
def test_parallel_lqr_matches_sequential(seed, shape):
    problem = random_problem(seed, *shape)
    with jax.enable_x64(True):
        args = tuple(map(jnp.asarray, problem))
        sequential = jax.tree.map(np.asarray, LQR(*args))
        parallel = jax.tree.map(np.asarray, LQR_PARALLEL(*args))
    for name in ("states", "actions", "K", "k", "V", "v", "cost"):
        np.testing.assert_allclose(
            getattr(parallel, name), getattr(sequential, name), rtol=1e-7, atol=1e-7, err_msg=name
        )


def test_lqr_jit_vmap():
    problem = random_problem(0, 4, 2, 1)
    F, f, C, c, x0, C_final, c_final = map(jnp.asarray, problem)
    x0s = jnp.stack([x0, 2 * x0, -x0])
    batched = jax.jit(jax.vmap(lqr.lqr, in_axes=(None, None, None, None, 0, None, None)))(
        F, f, C, c, x0s, C_final, c_final
    )
    for i in range(3):
        single = lqr.lqr(F, f, C, c, x0s[i], C_final, c_final)
        np.testing.assert_allclose(batched.states[i], single.states, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batched.cost[i], single.cost, rtol=1e-5)


def lq_functions(F, f, C, c, C_final, c_final):
    def dynamics(x, u, t):
        return F[t] @ jnp.concatenate([x, u]) + f[t]

    def cost(x, u, t):
        z = jnp.concatenate([x, u])
        return 0.5 * z @ C[t] @ z + c[t] @ z

    return dynamics, cost, lambda x: 0.5 * x @ C_final @ x + c_final @ x


@functools.partial(jax.jit, static_argnames="max_iterations")
def ilqr_on_lq(F, f, C, c, x0, C_final, c_final, U0, max_iterations):
    """iLQR on the LQ problem given as functions (the problem is traced: one compile a shape)."""
    dynamics, cost, final_cost = lq_functions(F, f, C, c, C_final, c_final)
    return lqr.ilqr(dynamics, cost, x0, U0, final_cost, max_iterations=max_iterations)


@settings(max_examples=10)
@given(SEEDS, SHAPES)
def test_ilqr_solves_lq_in_one_iteration(seed, shape):
    problem = random_problem(seed, *shape)
    T, n, m = shape
    with jax.enable_x64(True):
        args = tuple(map(jnp.asarray, problem))
        U0 = jnp.asarray(np.random.default_rng(seed).normal(size=(T, m)))
        one = ilqr_on_lq(*args, U0, max_iterations=1)
        exact = LQR(*args)
        np.testing.assert_allclose(one.states, exact.states, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(one.actions, exact.actions, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(one.cost, exact.cost, rtol=1e-7, atol=1e-7)
        # the feedback is the LQR's; the open-loop step at the optimum is zero
        np.testing.assert_allclose(one.K, exact.K, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(one.k, 0.0, atol=1e-7)
        # and then it stops: nothing is left to improve
        full = ilqr_on_lq(*args, U0, max_iterations=50)
        assert bool(full.converged) and int(full.iterations) <= 2


def pendulum(params):
    """A torque-limited pendulum x = (θ, θ̇) with a non-quadratic cost; θ = 0 is upright."""
    dt, gravity, length = params

    def dynamics(x, u, t):
        torque = 2.0 * jnp.tanh(u[0])
        theta_dot = x[1] + dt * (gravity / length * jnp.sin(x[0]) + torque)
        return jnp.stack([x[0] + dt * theta_dot, theta_dot])

    def cost(x, u, t):
        return (1.0 - jnp.cos(x[0])) + 0.1 * x[1] ** 2 + 0.01 * u[0] ** 2

    return dynamics, cost, lambda x: 10.0 * (1.0 - jnp.cos(x[0])) + x[1] ** 2


@jax.jit
def ilqr_pendulum_trig(params, x0, U0):
    """iLQR on :func:`pendulum` and the open-loop costs of U0 and of the returned actions."""
    dynamics, cost, final_cost = pendulum(params)
    solution = lqr.ilqr(dynamics, cost, x0, U0, final_cost, max_iterations=15)
    _, initial = lqr.rollout(dynamics, cost, x0, U0, final_cost)
    _, final = lqr.rollout(dynamics, cost, x0, solution.actions, final_cost)
    return solution, initial, final


@settings(max_examples=15)
@given(
    SEEDS,
    st.floats(0.02, 0.1),
    st.floats(5.0, 15.0),
    st.floats(-3.0, 3.0),
)
def test_ilqr_cost_never_increases(seed, dt, gravity, theta0):
    params = (jnp.float32(dt), jnp.float32(gravity), jnp.float32(1.0))
    x0 = jnp.array([theta0, 0.0])
    U0 = 0.5 * jax.random.normal(jax.random.PRNGKey(seed % 1000), (20, 1))
    solution, initial, final = ilqr_pendulum_trig(params, x0, U0)
    costs = np.asarray(solution.costs)
    assert np.all(np.diff(costs) <= 0.0), costs
    np.testing.assert_allclose(costs[0], initial, rtol=1e-5)
    np.testing.assert_allclose(solution.cost, final, rtol=1e-5)
    assert float(solution.cost) <= float(initial)


# ----------------------------------------------------------------------------- iLQR, nonlinear

DT, GRAVITY = 0.05, 9.81
Q_DIAG, R, Q_FINAL_DIAG = np.array([2.0, 0.2]), 0.1, np.array([20.0, 2.0])


def pendulum_dynamics(x, u, t):
    """An inverted pendulum x = (θ, θ̇) under a saturating torque 2 tanh(u) (θ = 0 upright)."""
    theta_dot = x[1] + DT * (GRAVITY * jnp.sin(x[0]) + 2.0 * jnp.tanh(u[0]))
    return jnp.stack([x[0] + DT * theta_dot, theta_dot])


def quadratic_cost(x, u, t):
    return 0.5 * (Q_DIAG @ x**2 + R * u[0] ** 2)


def quadratic_final_cost(x):
    return 0.5 * Q_FINAL_DIAG @ x**2


def plain_rollout_cost(x0, U):
    """Total cost of the action sequence U from x0: a Python loop, independent of lqr.rollout."""
    x, total = x0, 0.0
    for t in range(U.shape[0]):
        total = total + quadratic_cost(x, U[t], t)
        x = pendulum_dynamics(x, U[t], t)
    return total + quadratic_final_cost(x)


PLAIN_COST = jax.jit(plain_rollout_cost)
PLAIN_GRADIENT = jax.jit(jax.grad(plain_rollout_cost, argnums=1))  # ∇_U J(U)


def pendulum_lq_model(states, actions):
    """The pendulum's linearisation and the cost's derivatives at (states, actions), by hand:
    F_t = ∂f/∂[x; u], C_t = ∇²ℓ, c_t = ∇ℓ, and the final cost's, as numpy arrays."""
    states, actions = np.asarray(states), np.asarray(actions)
    T = actions.shape[0]
    F = np.zeros((T, 2, 3))
    for t in range(T):
        wobble = DT * GRAVITY * np.cos(states[t, 0])  # ∂θ̇'/∂θ
        push = DT * 2.0 / np.cosh(actions[t, 0]) ** 2  # ∂θ̇'/∂u
        F[t] = [[1.0 + DT * wobble, DT, DT * push], [wobble, 1.0, push]]
    C = np.broadcast_to(np.diag([*Q_DIAG, R]), (T, 3, 3))
    c = np.einsum("tij,tj->ti", C, np.concatenate([states[:-1], actions], axis=1))
    C_final = np.diag(Q_FINAL_DIAG)
    return F, C, c, C_final, C_final @ states[-1]


def random_start(seed, T=20):
    rng = np.random.default_rng(seed)
    x0 = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-1.0, 1.0)])
    return jnp.asarray(x0), jnp.asarray(0.5 * rng.normal(size=(T, 1)))


ILQR_PENDULUM = {}


def ilqr_pendulum(max_iterations, tol=1e-6):
    key = (max_iterations, tol)
    if key not in ILQR_PENDULUM:
        ILQR_PENDULUM[key] = jax.jit(
            lambda x0, U0: lqr.ilqr(
                pendulum_dynamics,
                quadratic_cost,
                x0,
                U0,
                quadratic_final_cost,
                max_iterations=max_iterations,
                tol=tol,
            )
        )
    return ILQR_PENDULUM[key]


@settings(max_examples=10)
@given(SEEDS, st.sampled_from([1, 2, 3]))
def test_ilqr_gains_are_the_lqr_law_at_the_returned_trajectory(seed, max_iterations):
    """Stopped early, on a nonlinear system: K and k are the LQR gains of the model linearised
    by hand at the returned trajectory (not at the one before the last accepted step)."""
    with jax.enable_x64(True):
        x0, U0 = random_start(seed)
        solution = ilqr_pendulum(max_iterations)(x0, U0)
        assert float(solution.reg) == 0.0  # convex cost: Q_uu ≻ 0 without regularisation
        F, C, c, C_final, c_final = map(
            jnp.asarray, pendulum_lq_model(solution.states, solution.actions)
        )
        zeros = jnp.zeros(F.shape[:2])
        reference = LQR(F, zeros, C, c, jnp.zeros(2), C_final, c_final)
        np.testing.assert_allclose(solution.K, reference.K, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(solution.k, reference.k, rtol=1e-8, atol=1e-10)
        # the trajectory returned is a rollout of the true dynamics from x0
        x = x0
        for t in range(U0.shape[0]):
            np.testing.assert_allclose(solution.states[t], x, rtol=1e-12, atol=1e-12)
            x = pendulum_dynamics(x, solution.actions[t], t)
        np.testing.assert_allclose(solution.states[-1], x, rtol=1e-12, atol=1e-12)


@settings(max_examples=10)
@given(SEEDS)
def test_ilqr_converges_to_a_stationary_point(seed):
    """On a nonlinear system, iLQR's fixed point is a stationary point of the open-loop cost:
    ∇_U J(U) = 0, by autodiff of a plain rollout; the costs never increase on the way."""
    with jax.enable_x64(True):
        x0, U0 = random_start(seed)
        # tol bounds max_t |∂J/∂u_t| relative to its start; cost comparisons in float64 leave
        # ~1e-7 (|J| ~ 30) as the floor that a line search on J can reach
        solution = ilqr_pendulum(200, tol=1e-7)(x0, U0)
        assert bool(solution.converged)
        start = float(jnp.max(jnp.abs(PLAIN_GRADIENT(x0, U0))))
        end = float(jnp.max(jnp.abs(PLAIN_GRADIENT(x0, solution.actions))))
        assert end <= 1e-5 * max(start, 1.0), (start, end)
        costs = np.asarray(solution.costs)
        assert np.all(np.diff(costs) <= 0.0), costs
        np.testing.assert_allclose(costs[0], PLAIN_COST(x0, U0), rtol=1e-12)
        final = PLAIN_COST(x0, solution.actions)
        np.testing.assert_allclose(solution.cost, final, rtol=1e-12)
        np.testing.assert_allclose(costs[-1], final, rtol=1e-12)
        # nothing left to step: the open-loop term of the returned law vanishes
        assert float(jnp.max(jnp.abs(solution.k))) <= 1e-3


def test_ilqr_vmaps_over_initial_states():
    dynamics, cost, final_cost = pendulum((0.05, 10.0, 1.0))
    x0s = jnp.array([[1.0, 0.0], [-0.5, 1.0]])
    U0 = jnp.zeros((15, 1))
    solve = lambda x0: lqr.ilqr(dynamics, cost, x0, U0, final_cost, max_iterations=5)
    batched = jax.jit(jax.vmap(solve))(x0s)
    for i in range(2):
        single = jax.jit(solve)(x0s[i])
        np.testing.assert_allclose(batched.actions[i], single.actions, rtol=1e-4, atol=1e-5)


def test_bad_input_raises_config_error():
    F, f, C, c, x0, C_final, c_final = map(jnp.asarray, random_problem(0, 3, 2, 1))
    dynamics, cost, _ = lq_functions(F, f, C, c, C_final, c_final)
    with pytest.raises(ConfigError, match="f has shape"):
        lqr.lqr(F, f[:2], C, c, x0)
    with pytest.raises(ConfigError, match="x0 has shape"):
        lqr.lqr(F, f, C, c, x0[:1])
    with pytest.raises(ConfigError, match="noise_cov has shape"):
        lqr.lqr_gaussian(F, f, C, c, x0, jnp.eye(3))
    with pytest.raises(ConfigError, match="U0"):
        lqr.ilqr(dynamics, cost, x0, jnp.zeros(3))
    with pytest.raises(ConfigError, match="max_iterations"):
        lqr.ilqr(dynamics, cost, x0, jnp.zeros((3, 1)), max_iterations=0)
    with pytest.raises(ConfigError, match="reg_min"):
        lqr.ilqr(dynamics, cost, x0, jnp.zeros((3, 1)), reg_min=0.0)
    with pytest.raises(ConfigError, match="tol"):
        lqr.ilqr(dynamics, cost, x0, jnp.zeros((3, 1)), tol=float("inf"))


def test_ilqr_reg_max_inf_means_never_give_up():
    F, f, C, c, x0, C_final, c_final = map(jnp.asarray, random_problem(0, 3, 2, 1))
    dynamics, cost, final_cost = lq_functions(F, f, C, c, C_final, c_final)
    solve = jax.jit(
        lambda x0, U0: lqr.ilqr(
            dynamics, cost, x0, U0, final_cost, max_iterations=3, reg_max=float("inf")
        )
    )
    solution = solve(x0, jnp.zeros((3, 1)))
    assert np.all(np.isfinite(solution.K)) and bool(solution.converged)


# ----------------------------------------------------------------------------- iLQR, stopping rule


def plain_cost(dynamics, cost, final_cost=None):
    """J(x0, U) by a Python loop over the steps: an independent reference for autodiff."""

    def total(x0, U):
        x, J = x0, 0.0
        for t in range(U.shape[0]):
            J = J + cost(x, U[t], t)
            x = dynamics(x, U[t], t)
        return J if final_cost is None else J + final_cost(x)

    return total


def cosine_problem(amplitude, offset, drift):
    """x' = x + drift·u, ℓ(x, u) = A cos u + ½x² + offset (n = m = 1). Q_uu = −A cos u + …
    is indefinite near u = 0, where J(U) has a local maximum; its minima have cos u_t ≈ −1.
    drift = 0, A = 1234, T = 3 is the case of issue 17 (bug 1)."""

    def dynamics(x, u, t):
        return x + drift * u

    def cost(x, u, t):
        return amplitude * jnp.cos(u[0]) + 0.5 * x @ x + offset

    return dynamics, cost


@functools.partial(jax.jit, static_argnames="max_iterations")
def ilqr_cosine(amplitude, offset, drift, x0, U0, max_iterations=200):
    dynamics, cost = cosine_problem(amplitude, offset, drift)
    return lqr.ilqr(dynamics, cost, x0, U0, max_iterations=max_iterations)


def gradient_and_hessian(problem, x0, U):
    """∇_U J and the eigenvalues of ∇²_U J by autodiff of :func:`plain_cost`."""
    J = plain_cost(*problem)
    gradient = jax.grad(J, argnums=1)(x0, U)
    hessian = jax.hessian(J, argnums=1)(x0, U).reshape(U.size, U.size)
    return np.asarray(gradient), np.linalg.eigvalsh(np.asarray(hessian))


def test_ilqr_indefinite_q_uu_issue_case_ends_at_the_minimum():
    """Issue 17, bug 1: from U0 = 1e-3, near the maximum of A cos u, the old rule reported
    converged=True at cost 3702 (the maximum), |∂J/∂U| = 1.41, μ = 1e4."""
    with jax.enable_x64(True):
        x0, U0 = jnp.zeros(1), jnp.full((3, 1), 1e-3)
        solution = ilqr_cosine(1234.0, 0.0, 0.0, x0, U0)
        gradient, eigenvalues = gradient_and_hessian(
            cosine_problem(1234.0, 0.0, 0.0), x0, solution.actions
        )
    assert bool(solution.converged), solution.iterations
    np.testing.assert_allclose(solution.cost, -3 * 1234.0, rtol=1e-12)
    assert np.max(np.abs(gradient)) <= 1e-6 * 1234.0, gradient
    assert eigenvalues.min() > 0.0, eigenvalues


@settings(max_examples=15)
@given(
    st.floats(1.0, 2000.0),
    st.floats(1e-3, 0.05),
    st.sampled_from([1, 3, 5]),
    st.sampled_from([0.0, 0.5]),
    SEEDS,
)
def test_ilqr_non_convex_cost_ends_at_a_local_minimum(amplitude, u0, T, drift, seed):
    """Started near a maximum of a non-convex cost (Q_uu indefinite), iLQR converges, and
    where it stops is a local minimum of J(U): ∇_U J = 0 and ∇²_U J ⪰ 0, by autodiff of a
    plain rollout (the dynamics are linear, so J's Hessian is the model's, exactly)."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(T, 1))
    with jax.enable_x64(True):
        x0, U0 = jnp.ones(1), jnp.asarray(u0 * signs)
        problem = cosine_problem(amplitude, 0.0, drift)
        start, _ = gradient_and_hessian(problem, x0, U0)
        solution = ilqr_cosine(amplitude, 0.0, drift, x0, U0)
        gradient, eigenvalues = gradient_and_hessian(problem, x0, solution.actions)
    assert bool(solution.converged), (solution.iterations, solution.reg)
    assert np.max(np.abs(gradient)) <= 1e-6 * max(1.0, np.max(np.abs(start))) * 1.01, gradient
    assert eigenvalues.min() >= -1e-9 * amplitude, eigenvalues
    # a minimum, not the maximum it started beside: every u_t has moved to cos u_t < 0
    assert np.all(np.cos(np.asarray(solution.actions)) < 0.0), solution.actions


def offset_pendulum_cost(offset):
    return lambda x, u, t: quadratic_cost(x, u, t) + offset


@jax.jit
def ilqr_pendulum_offset(x0, U0, offset):
    return lqr.ilqr(
        pendulum_dynamics, offset_pendulum_cost(offset), x0, U0, quadratic_final_cost,
        max_iterations=100,
    )


@settings(max_examples=10)
@given(SEEDS, st.sampled_from([-1e3, 1e2, 1e3, 3e3]))
def test_ilqr_constant_offset_changes_nothing(seed, offset):
    """Adding a constant to every step's cost changes neither J's minimisers nor its
    gradient: the returned actions and ``converged`` are the same (up to rounding)."""
    with jax.enable_x64(True):
        x0, U0 = random_start(seed)
        plain = ilqr_pendulum_offset(x0, U0, 0.0)
        shifted = ilqr_pendulum_offset(x0, U0, offset)
        cosine = ilqr_cosine(1234.0, 0.0, 0.0, jnp.zeros(1), jnp.full((3, 1), 1e-3))
        cosine_shifted = ilqr_cosine(
            1234.0, offset, 0.0, jnp.zeros(1), jnp.full((3, 1), 1e-3)
        )
        plain, shifted, cosine, cosine_shifted = jax.tree.map(
            np.asarray, (plain, shifted, cosine, cosine_shifted)
        )
    assert bool(plain.converged) == bool(shifted.converged)
    np.testing.assert_allclose(shifted.actions, plain.actions, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(shifted.cost - 20 * offset, plain.cost, rtol=1e-9, atol=1e-9)
    assert bool(cosine.converged) == bool(cosine_shifted.converged)
    np.testing.assert_allclose(cosine_shifted.actions, cosine.actions, rtol=1e-6, atol=1e-8)


def random_nonlinear_problem(params):
    """x' = A x + B tanh(u) + ε sin(W x), ℓ = ½xᵀQx + ½uᵀRu + w Σ cos u + offset,
    final ½xᵀQ_f x: convex (w = 0) or not, with a constant offset or not."""
    A, B, W, eps, Q, R, w, offset, Q_final = params

    def dynamics(x, u, t):
        return A @ x + B @ jnp.tanh(u) + eps * jnp.sin(W @ x)

    def cost(x, u, t):
        return 0.5 * x @ Q @ x + 0.5 * u @ R @ u + w * jnp.sum(jnp.cos(u)) + offset

    return dynamics, cost, lambda x: 0.5 * x @ Q_final @ x


def random_nonlinear_params(seed, n, m, w, offset):
    rng = np.random.default_rng(seed)
    A = np.eye(n) + 0.3 * rng.normal(size=(n, n))
    B = rng.normal(size=(n, m))
    W = rng.normal(size=(n, n))
    L = rng.normal(size=(n, n))
    Q = L @ L.T / n + 0.1 * np.eye(n)
    R = 0.1 * np.eye(m)
    return tuple(
        map(jnp.asarray, (A, B, W, 0.3, Q, R, w, offset, 3.0 * Q))
    ), jnp.asarray(rng.normal(size=n)), jnp.asarray(0.3 * rng.normal(size=(T_OF[(n, m)], m)))


T_OF = {(1, 1): 2, (2, 1): 4, (2, 2): 3}  # one horizon per (n, m): few compiles


@functools.partial(jax.jit, static_argnames="max_iterations")
def ilqr_random(params, x0, U0, max_iterations):
    dynamics, cost, final_cost = random_nonlinear_problem(params)
    return lqr.ilqr(dynamics, cost, x0, U0, final_cost, max_iterations=max_iterations, tol=1e-6)


@settings(max_examples=25)
@given(
    SEEDS,
    st.sampled_from(list(T_OF)),
    st.sampled_from([0.0, 0.5, 5.0]),
    st.sampled_from([0.0, 10.0, -300.0, 1e4]),
    st.sampled_from([3, 30]),
)
def test_ilqr_converged_means_stationary(seed, shape, w, offset, max_iterations):
    """Whenever iLQR reports converged=True, the gradient of the open-loop cost J(U), by
    autodiff of a plain rollout, is below the stated tolerance: max_t |∂J/∂u_t| ≤
    tol·max(1, max_t |∂J/∂u_t(U0)|), with or without a constant in the cost, convex or not,
    and whether it stopped early or not."""
    with jax.enable_x64(True):
        params, x0, U0 = random_nonlinear_params(seed, *shape, w, offset)
        solution = ilqr_random(params, x0, U0, max_iterations=max_iterations)
        J = plain_cost(*random_nonlinear_problem(params))
        start = np.max(np.abs(np.asarray(jax.grad(J, argnums=1)(x0, U0))))
        end = np.max(np.abs(np.asarray(jax.grad(J, argnums=1)(x0, solution.actions))))
    if bool(solution.converged):
        assert end <= 1e-6 * max(1.0, start) * 1.01, (start, end, int(solution.iterations))
