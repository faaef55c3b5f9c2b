"""BPTT against independent references: the gradient that backpropagation through the model
gives equals central finite differences of the objective (float64) through the true
Pendulum and through a fixed learned model; the objective itself equals the return of the
same rollout stepped one env step at a time in Python, summed by the λ-return's own
recursion written here; and which envs qualify for ``model="true"``.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirl import envs
from minirl.core.config import ConfigError
from minirl.model_based import bptt

pytestmark = pytest.mark.timeout(600)

TINY = dict(total_steps=24, refit_every=8, learning_starts=8, horizon=4, batch_size=4,
            buffer_size=32, hidden=(8,))


def eqx_float(x):
    return isinstance(x, jax.Array | np.ndarray) and jnp.issubdtype(x.dtype, jnp.floating)


def _f64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if eqx_float(x) else x, tree)


class Plain(eqx.Module):
    """A tanh MLP in the dtype of its weights (``core.nets.MLP`` computes in float32, which
    would put float32 rounding inside the finite differences)."""

    layers: tuple

    def __init__(self, key, sizes):
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(
            (jax.random.normal(k, (a, b)) / np.sqrt(a), 0.1 * jax.random.normal(k, (b,)))
            for k, a, b in zip(keys, sizes[:-1], sizes[1:]))

    def __call__(self, x):
        for w, b in self.layers[:-1]:
            x = jnp.tanh(x @ w + b)
        w, b = self.layers[-1]
        return x @ w + b


def _pendulum_starts(n, seed=0):
    """Pendulum states away from θ = ±π and the speed limit (where the dynamics have kinks)."""
    env, params = envs.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    _, state = env.reset(jax.random.PRNGKey(seed), params)
    theta = jnp.asarray(rng.uniform(-2.0, 2.0, n))
    theta_dot = jnp.asarray(rng.uniform(-1.0, 1.0, n))
    states = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,)), state).replace(
        theta=theta, theta_dot=theta_dot, last_u=jnp.zeros(n, theta.dtype))
    obs = jax.vmap(env.get_obs)(states)
    return env, params, states, obs


def _learner(config, env, params, seed=0):
    """A float64 learner whose policy and value are :class:`Plain` networks."""
    with jax.enable_x64(False):
        state = bptt.init(jax.random.PRNGKey(seed), config, env, params,
                          network=lambda k: Plain(k, (3, 8, 1)))
    value = Plain(jax.random.PRNGKey(seed + 1), (3, 8, 1))
    learner = dataclasses.replace(state.learner, value=value, target_value=value)
    return _f64(learner)


def _check_gradient(config, learner, starts, key):
    step_fn = bptt.model_step(learner, config)
    low, high = learner.params.low, learner.params.high

    def f(net):
        policy = bptt.Policy(net, low, high)
        return bptt.objective(policy, learner.target_value, step_fn, starts, key, config)[0]

    net = learner.params.net
    grad = jax.grad(f)(net)
    rng = np.random.default_rng(1)
    eps = 1e-6
    for _ in range(3):
        direction = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape)), net)
        plus = f(jax.tree.map(lambda p, d: p + eps * d, net, direction))
        minus = f(jax.tree.map(lambda p, d: p - eps * d, net, direction))
        fd = (plus - minus) / (2 * eps)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad),
                                                      jax.tree.leaves(direction)))
        np.testing.assert_allclose(analytic, fd, rtol=1e-6, atol=1e-9)
        assert abs(float(fd)) > 1e-6  # the objective depends on the policy


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("horizon", [1, 5])
def test_gradient_through_the_true_pendulum_equals_finite_differences(value, horizon):
    with jax.enable_x64(True):
        env, params, states, obs = _pendulum_starts(6)
        config = bptt.Config(**{**TINY, "horizon": horizon, "value": value})
        learner = _learner(config, env, params)
        _check_gradient(config, learner, bptt.Starts(states, obs), jax.random.PRNGKey(0))


@pytest.mark.parametrize("reward", ["known", "learned"])
def test_gradient_through_a_fixed_learned_model_equals_finite_differences(reward):
    """Through a learned ensemble (random members, reparameterised noise, both fixed by the
    key) with the known Pendulum reward or the model's reward head."""
    with jax.enable_x64(True):
        env, params, _, obs = _pendulum_starts(6)
        config = bptt.Config(**{**TINY, "horizon": 5, "model": "learned", "reward": reward,
                                "ensemble_size": 3, "model_hidden": (16,)})
        learner = _learner(config, env, params)
        _check_gradient(config, learner, bptt.Starts(obs, obs), jax.random.PRNGKey(3))


def _python_rollout(env, params, policy, state, horizon):
    """One rollout stepped in Python with ``env.step`` (no auto-reset happens in H steps)."""
    obs = env.get_obs(state)
    observations, rewards = [obs], []
    for t in range(horizon):
        action = bptt.mean_action(policy, obs)
        obs, state, reward, terminated, truncated, _ = env.step(jax.random.PRNGKey(t), state,
                                                                action, params)
        assert not bool(terminated) and not bool(truncated)
        observations.append(obs)
        rewards.append(float(reward))
    return np.asarray(observations), np.asarray(rewards)


@pytest.mark.parametrize("value", [True, False])
def test_the_objective_is_the_lambda_return_of_the_env_rollout(value):
    """J = mean_B (1/H) Σ_t γ^t G^λ_t with G^λ_t = r_t + γ[(1 − λ)V(s_{t+1}) + λ G^λ_{t+1}],
    G^λ_H = V(s_H) (without the value: V = 0, λ = 1), from rollouts stepped here."""
    env, params, states, obs = _pendulum_starts(3, seed=4)
    states = jax.tree.map(lambda x: x.astype(jnp.float32) if eqx_float(x) else x, states)
    obs = obs.astype(jnp.float32)
    config = bptt.Config(**{**TINY, "horizon": 6, "value": value, "gamma": 0.9, "lam": 0.7})
    learner = bptt.init(jax.random.PRNGKey(1), config, env, params).learner
    value_fn = learner.target_value
    got = bptt.objective(learner.params, value_fn, bptt.model_step(learner, config),
                         bptt.Starts(states, obs), jax.random.PRNGKey(0), config)[0]
    want = []
    for i in range(3):
        state = jax.tree.map(lambda x, i=i: x[i], states)
        observations, rewards = _python_rollout(env, params, learner.params, state, 6)
        if value:
            v = np.asarray([float(value_fn(o)[0]) for o in observations])
            lam = 0.7
        else:
            v, lam = np.zeros(7), 1.0
        g = v[6]
        total = 0.0
        for t in reversed(range(6)):
            g = rewards[t] + 0.9 * ((1 - lam) * v[t + 1] + lam * g)
            total += 0.9 ** t * g
        want.append(total / 6)
    np.testing.assert_allclose(got, np.mean(want), rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------------- envs


DIFFERENTIABLE = ("Pendulum-v1", "MountainCarContinuous-v0", "Reacher-misc", "Swimmer-misc",
                  "PointRobot-misc")


def test_the_differentiable_envs_qualify_and_the_others_are_refused():
    for env_id in envs.REGISTERED:
        kind = envs.kind(env_id)
        if kind == "unavailable":
            continue
        env, params = envs.make(env_id)
        config = bptt.Config(**TINY)
        if env_id in DIFFERENTIABLE:
            bptt.init(jax.random.PRNGKey(0), config, env, params)
            continue
        with pytest.raises(ConfigError) as error:
            bptt.init(jax.random.PRNGKey(0), config, env, params)
        assert any(s in str(error.value) for s in (
            "needs a continuous action space", "needs vector observations",
            "has no differentiable transitions")), (env_id, error.value)


class _NoGradients:
    """Pendulum behind a wrapper that does not offer transition gradients."""

    def __init__(self):
        self.env, _ = envs.make("Pendulum-v1")
        self.name = "Pendulum-wrapped"

    def __getattr__(self, name):
        if name == "supports_transition_gradients":
            return False
        return getattr(self.env, name)


def test_an_env_without_transition_gradients_is_refused_with_what_qualifies():
    env = _NoGradients()
    params = env.env.default_params
    with pytest.raises(ConfigError, match="has no differentiable transitions.*Pendulum-v1, "
                                          "MountainCarContinuous-v0"):
        bptt.init(jax.random.PRNGKey(0), bptt.Config(**TINY), env, params)
    with pytest.raises(ConfigError, match="no known reward function"):
        bptt.init(jax.random.PRNGKey(0), bptt.Config(**TINY, model="learned"), env, params)


def test_learn_moves_the_policy_uphill_on_a_fixed_batch():
    """A few updates on one batch of start states raise the objective (the update follows
    the gradient it checks against finite differences above)."""
    env, params, states, obs = _pendulum_starts(16, seed=7)
    states = jax.tree.map(lambda x: x.astype(jnp.float32) if eqx_float(x) else x, states)
    config = bptt.Config(**{**TINY, "horizon": 10, "learning_rate": 1e-2})
    learner = bptt.init(jax.random.PRNGKey(0), config, env, params).learner
    batch = bptt.Starts(states, obs.astype(jnp.float32))
    learn = jax.jit(lambda learner: bptt.learn(learner, batch, config))
    first = None
    for _ in range(20):
        learner, metrics = learn(learner)
        first = metrics["objective"] if first is None else first
    assert float(metrics["objective"]) > float(first)
    assert np.isfinite(float(metrics["grad_norm"]))

