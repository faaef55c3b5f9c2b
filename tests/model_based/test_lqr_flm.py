"""LQR-FLM (minirl/model_based/lqr_flm.py) on a linear-quadratic system, against the LQR
solution of the true system computed independently (a NumPy Riccati recursion for the
gains, the dense KKT system of the QP for the trajectory): fitting local models from the
controller's own samples (fewer per step than dim x + dim u, so the prior carries the fit)
and taking KL-bounded steps, the mean controller converges to the true LQR controller.
float64 throughout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirl.model_based import lqr_flm
from minirl.planning import linear_gaussian as lg
from tests.planning.test_lqr import dense_qp

pytestmark = pytest.mark.timeout(300)

T, N_X, N_U, SAMPLES = 8, 3, 2, 3  # SAMPLES < N_X + N_U


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def lq_system(seed):
    """A time-invariant linear system (the prior from all steps is then exact) and a
    quadratic cost ½zᵀCz + cᵀz with C ≻ 0 (the known reward is a function of (x, u) alone,
    so the cost is the same at every step; the LQR gains still vary with t)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(N_X, N_X))
    A = 0.9 * A / np.max(np.abs(np.linalg.eigvals(A)))
    B = rng.normal(size=(N_X, N_U))
    F = np.broadcast_to(np.concatenate([A, B], 1), (T, N_X, N_X + N_U)).copy()
    f = np.broadcast_to(0.3 * rng.normal(size=N_X), (T, N_X)).copy()
    G = rng.normal(size=(N_X + N_U, N_X + N_U))
    C = np.broadcast_to(G @ G.T / (N_X + N_U) + 0.2 * np.eye(N_X + N_U),
                        (T, N_X + N_U, N_X + N_U)).copy()
    c = np.broadcast_to(rng.normal(size=N_X + N_U), (T, N_X + N_U)).copy()
    x0 = rng.normal(size=N_X)
    return F, f, C, c, x0


def riccati(F, f, C, c):
    """The LQR feedback u_t = K_t x_t + k_t by the textbook backward recursion (NumPy)."""
    V, v = np.zeros((N_X, N_X)), np.zeros(N_X)
    Ks, ks = [], []
    for t in reversed(range(T)):
        Q = C[t] + F[t].T @ V @ F[t]
        q = c[t] + F[t].T @ (V @ f[t] + v)
        Q_uu, Q_ux, q_u = Q[N_X:, N_X:], Q[N_X:, :N_X], q[N_X:]
        K, k = -np.linalg.solve(Q_uu, Q_ux), -np.linalg.solve(Q_uu, q_u)
        V = Q[:N_X, :N_X] + Q[:N_X, N_X:] @ K
        V = 0.5 * (V + V.T)
        v = q[:N_X] + Q[:N_X, N_X:] @ k
        Ks.append(K)
        ks.append(k)
    return np.stack(Ks[::-1]), np.stack(ks[::-1])


def sample(key, policy, F, f, x0):
    """SAMPLES rollouts of one linear-Gaussian controller (leaves [T, ...]) on the true,
    noise-free system: states [1, SAMPLES, T+1, n], actions [1, SAMPLES, T, m]."""

    def one(key):
        def body(x, inputs):
            K, k, S, F_t, f_t, step_key = inputs
            u = K @ x + k + jnp.linalg.cholesky(S) @ jax.random.normal(step_key, (N_U,))
            return F_t @ jnp.concatenate([x, u]) + f_t, (x, u)

        x_T, (xs, us) = jax.lax.scan(
            body, x0, (policy.K, policy.k, policy.cov, F, f, jax.random.split(key, T)))
        return jnp.concatenate([xs, x_T[None]]), us

    states, actions = jax.vmap(one)(jax.random.split(key, SAMPLES))
    return lqr_flm.Samples(states[None], actions[None])


def quadratic_reward(C: np.ndarray, c: np.ndarray):
    C, c = jnp.asarray(C), jnp.asarray(c)

    def reward(x, u, env_params):
        z = jnp.concatenate([x, u])
        return -(0.5 * z @ C @ z + c @ z)

    return reward


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_a_linear_quadratic_system_lqr_flm_converges_to_the_lqr_solution(seed):
    """12 iterations of ``learn`` on the controller's own samples (3 per step, 5 inputs):
    the mean controller's gains and its trajectory are the true system's LQR solution.

    ``regularization=0``: as the controller becomes deterministic the samples' spread
    shrinks towards any ridge added to the input covariance (default 1e-6), and the ridge
    then biases the fit (in float64 here there is no need for one)."""
    F, f, C, c, x0 = lq_system(seed)
    Fj, fj, x0j = map(jnp.asarray, (F, f, x0))
    iterations = 12
    config = lqr_flm.Config(total_steps=SAMPLES * T * iterations, num_conditions=1,
                            samples=SAMPLES, horizon=T, regularization=0.0)
    controllers = lg.Policy(jnp.zeros((1, T, N_U, N_X)), jnp.zeros((1, T, N_U)),
                            jnp.broadcast_to(jnp.eye(N_U), (1, T, N_U, N_U)))
    params = lqr_flm.Params(controllers, x0j[None], jnp.full((N_U,), -jnp.inf),
                            jnp.full((N_U,), jnp.inf), None, quadratic_reward(C[0], c[0]))
    learner = lqr_flm.Learner(params, jnp.ones((1,)),
                              lqr_flm.Estimate(jnp.zeros((1,)), jnp.zeros((1,))),
                              jnp.zeros((), jnp.int32))
    learn = jax.jit(lqr_flm.learn)
    key = jax.random.PRNGKey(seed)
    for _ in range(iterations):
        key, sample_key = jax.random.split(key)
        policy = jax.tree.map(lambda x: x[0], learner.params.controllers)
        learner, metrics = learn(learner, sample(sample_key, policy, Fj, fj, x0j), config)
        assert np.isfinite(float(metrics["kl"]))
    policy = jax.tree.map(lambda x: np.asarray(x[0]), learner.params.controllers)
    K, k = riccati(F, f, C, c)
    states, actions, _ = dense_qp(F, f, C, c, x0, np.zeros((N_X, N_X)), np.zeros(N_X))
    np.testing.assert_allclose(policy.K, K, atol=1e-4)
    np.testing.assert_allclose(policy.k, k, atol=1e-4)
    x, us = x0, []
    for t in range(T):
        us.append(policy.K[t] @ x + policy.k[t])
        x = F[t] @ np.concatenate([x, us[-1]]) + f[t]
    np.testing.assert_allclose(np.stack(us), actions, atol=1e-4)
    assert np.max(policy.cov) < 1e-4  # the controller has become (nearly) deterministic


def test_state_action_reward_is_pendulums_reward_and_names_the_supported_envs():
    """The (obs, action) reward LQR-FLM reads is Pendulum-v1's own (checked against the
    env's step), and an env without one gets a ConfigError listing those that have one."""
    from minirl import envs
    from minirl.core.config import ConfigError
    from minirl.model_based import rewards

    env, env_params = envs.make("Pendulum-v1")
    reward_fn = rewards.state_action_reward(env)
    obs, state = env.reset(jax.random.PRNGKey(3), env_params)
    for action in (-3.0, -0.5, 0.0, 1.7):
        reward = env.step(jax.random.PRNGKey(4), state, jnp.array([action]), env_params)[2]
        np.testing.assert_allclose(reward_fn(obs, jnp.array([action]), env_params),
                                   reward, rtol=1e-5)
    cartpole, _ = envs.make("CartPole-v1")
    with pytest.raises(ConfigError, match="Pendulum-v1, Reacher-misc"):
        rewards.state_action_reward(cartpole)


@pytest.mark.parametrize("joints, torque_scale", [(2, 1.0), (2, 2.5)])
def test_state_action_reward_is_reachers_reward(joints, torque_scale):
    """Reacher-misc's (obs, action) reward equals the env's own step, for random states
    (angles far outside [−π, π] too), actions and goals (gymnax's get_obs fails for other
    than 2 joints, so 2 joints with two torque scales)."""
    from gymnax.environments.misc.reacher import EnvState, Reacher

    from minirl.model_based import rewards

    env = Reacher(num_joints=joints)
    env_params = env.default_params.replace(torque_scale=torque_scale)
    reward_fn = rewards.state_action_reward(env)
    rng = np.random.default_rng(joints)
    for _ in range(20):
        state = EnvState(angles=jnp.asarray(rng.uniform(-9, 9, joints), jnp.float32),
                         angle_vels=jnp.asarray(rng.normal(size=joints), jnp.float32),
                         goal_xy=jnp.asarray(rng.uniform(-joints, joints, 2), jnp.float32),
                         time=0)
        action = jnp.asarray(rng.uniform(-1, 1, joints), jnp.float32)
        obs = env.get_obs(state, env_params)
        reward = env.step_env(jax.random.PRNGKey(0), state, action, env_params)[2]
        np.testing.assert_allclose(reward_fn(obs, action, env_params), reward, rtol=1e-4,
                                   atol=1e-6)

