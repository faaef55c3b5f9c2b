"""PlaNet (minirl.model_based.planet) against independent references.

- the closed-form KL of diagonal Gaussians equals a NumPy Monte Carlo average of
  log q − log p; free nats: the KL term is max(KL, free_nats), with zero gradient below;
- the Gaussian log-likelihood equals SciPy's (the ELBO itself, its time alignment, the
  window mask and the planner's cost: test_planet_elbo.py, against the exact likelihood of
  a linear-Gaussian state-space model);
- the prior's latent rollout equals a Python loop over the model's parts;
- the policy's memory is the belief filtered through the stored history;
- pixel observations have the stated shape and range and are a function of the state;
- bad configs raise ConfigError naming the field; same key → same bits; a few ``learn``
  steps reduce the loss on a fixed batch; ``act`` stays in the action box.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl import envs
from minirl.core import rollout
from minirl.core.config import ConfigError
from minirl.core.distributions import Normal
from minirl.model_based import planet

pytestmark = pytest.mark.timeout(300)

SEEDS = st.integers(0, 2**31 - 1)
SMALL = dict(total_steps=64, rollout_steps=8, action_repeat=2, gradient_steps=2,
             batch_size=4, sequence_length=5, buffer_size=64, learning_starts=16,
             deterministic_size=8, stochastic_size=3, hidden=16, embedding_size=8,
             horizon=3, num_samples=8, num_elites=2, cem_iterations=2)


@pytest.fixture(scope="module")
def pixel_env():
    return pixels("Pendulum-v1", 8)


def pixels(env_id, size):
    env, params = envs.make(env_id)
    return envs.PixelObservations(env, size=size, grayscale=True), params


def _model(key, config, obs_shape=(8, 8, 1), action_dim=1):
    return planet.RSSM(key, obs_shape, action_dim, config)


# ----------------------------------------------------------------------------- KL, likelihood


def normal_kl(mean_q, std_q, mean_p, std_p):
    """The KL planet's loss takes: KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)), summed over the last axis."""
    return Normal(mean_q, jnp.log(std_q)).kl(Normal(mean_p, jnp.log(std_p)))


@given(SEEDS, st.integers(1, 3))
@settings(max_examples=10)
def test_kl_matches_monte_carlo(seed, dim):
    rng = np.random.default_rng(seed)
    mq, mp = rng.normal(size=dim), rng.normal(size=dim)
    sq, sp = rng.uniform(0.3, 2.0, size=dim), rng.uniform(0.3, 2.0, size=dim)
    closed = float(normal_kl(jnp.asarray(mq), jnp.asarray(sq), jnp.asarray(mp),
                               jnp.asarray(sp)))
    x = mq + sq * rng.normal(size=(400_000, dim))
    log_ratio = (scipy.stats.norm.logpdf(x, mq, sq) - scipy.stats.norm.logpdf(x, mp, sp)).sum(-1)
    stderr = log_ratio.std() / np.sqrt(len(x))
    assert closed == pytest.approx(log_ratio.mean(), abs=5 * stderr + 1e-3)
    assert closed >= -1e-6


@given(SEEDS, st.floats(0.0, 5.0))
@settings(max_examples=10)
def test_free_nats_is_max_with_zero_gradient_below(seed, free):
    rng = np.random.default_rng(seed)
    mp, sp = jnp.asarray(rng.normal(size=3)), jnp.asarray(rng.uniform(0.5, 2, 3))
    sq = jnp.asarray(rng.uniform(0.5, 2, 3))
    mq = jnp.asarray(rng.normal(size=3) * 2)

    def cost(m):
        return planet.free_nats_kl(normal_kl(m, sq, mp, sp), free)

    kl = float(normal_kl(mq, sq, mp, sp))
    assert float(cost(mq)) == pytest.approx(max(kl, free), rel=1e-5)
    grad = np.asarray(jax.grad(cost)(mq))
    if kl < free - 1e-4:
        np.testing.assert_array_equal(grad, 0.0)
    elif kl > free + 1e-4:
        # d/dμ_q of the closed form: (μ_q − μ_p)/σ_p²
        np.testing.assert_allclose(grad, (mq - mp) / sp**2, rtol=1e-4, atol=1e-6)


@given(SEEDS, st.floats(0.05, 3.0))
@settings(max_examples=10)
def test_gaussian_log_prob_matches_scipy(seed, std):
    rng = np.random.default_rng(seed)
    x, mean = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    ours = planet.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean), std)
    np.testing.assert_allclose(ours, scipy.stats.norm.logpdf(x, mean, std).sum(-1),
                               rtol=1e-5, atol=1e-4)


def _batch(key, B=3, T=4, obs_shape=(8, 8, 1), done_at=None):
    k = jax.random.split(key, 4)
    obs = jax.random.uniform(k[0], (B, T, *obs_shape))
    next_obs = jax.random.uniform(k[1], (B, T, *obs_shape))
    action = jax.random.uniform(k[2], (B, T, 1), minval=-2, maxval=2)
    reward = jax.random.normal(k[3], (B, T))
    done = jnp.zeros((B, T), bool)
    if done_at is not None:
        done = done.at[0, done_at].set(True)
    data = rollout.Transition(obs, action, reward, next_obs, jnp.zeros((B, T), bool), done)
    return planet.Sequences(data, jnp.ones((B, T), bool))


# ----------------------------------------------------------------------------- the latent rollout


@given(SEEDS, st.integers(1, 6))
@settings(max_examples=5)
def test_prior_rollout_matches_python_loop(seed, horizon):
    config = planet.Config(**SMALL)
    key = jax.random.PRNGKey(seed)
    model = _model(key, config)
    k1, k2, k3 = jax.random.split(jax.random.fold_in(key, 1), 3)
    belief = planet.Belief(jax.random.normal(k1, (8,)), jax.random.normal(k2, (3,)))
    actions = jax.random.uniform(k3, (horizon, 1), minval=-2, maxval=2)
    beliefs, rewards = planet.imagine(model, belief, actions, config.min_std)
    h, s = np.asarray(belief.h), np.asarray(belief.s)
    for t in range(horizon):
        # GRU by hand (Cho et al., 2014), as equinox's GRUCell defines it
        x = np.asarray(model.activation(model.pre_gru(jnp.concatenate([s, actions[t]]))))
        W, U = np.asarray(model.gru.weight_ih), np.asarray(model.gru.weight_hh)
        bi, bh = np.asarray(model.gru.bias), np.asarray(model.gru.bias_n)
        D = 8
        gi, gh = W @ x + bi, U @ h
        r = 1 / (1 + np.exp(-(gi[:D] + gh[:D])))
        z = 1 / (1 + np.exp(-(gi[D:2 * D] + gh[D:2 * D])))
        n = np.tanh(gi[2 * D:] + r * (gh[2 * D:] + bh))
        h = (1 - z) * n + z * h
        s = np.asarray(model.prior_net(jnp.asarray(h, jnp.float32)))[:3]
        np.testing.assert_allclose(beliefs.h[t], h, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(beliefs.s[t], s, rtol=1e-4, atol=1e-5)
        reward = float(model.reward(planet.Belief(jnp.asarray(h), jnp.asarray(s))))
        assert float(rewards[t]) == pytest.approx(reward, rel=1e-4, abs=1e-5)


def test_the_policy_memory_is_the_belief_filtered_through_the_stored_history(pixel_env):
    """After a training step, each env's memory holds the belief filtered (from h = 0 at the
    episode's first observation) through the control steps stored in the buffer, and the
    last action taken: the policy training ran carries its history, as evaluation's does."""
    env, params = pixel_env
    config = planet.Config(**{**SMALL, "total_steps": 32, "rollout_steps": 8,
                              "learning_starts": 8})
    state = planet.init(jax.random.PRNGKey(3), config, env, params)
    model = state.learner.params.model  # the model the policy acted with (learn comes after)
    state, _ = jax.jit(planet.step, static_argnums=2)(state, config, env, params)
    data = jax.tree.map(lambda x: x[: int(state.buffer.size)], state.buffer.data)
    belief = planet.initial_belief(model, data.obs[0], config.min_std)
    # one env: item t is control step t; the memory has folded in every observation the
    # policy acted on (obs[0 … T−1]), the next one is folded in when it acts again
    for t in range(data.reward.shape[0] - 1):
        belief = planet.filter_step(model, belief, data.action[t], data.next_obs[t],
                                    data.terminated[t] | data.truncated[t], config.min_std)
    memory = jax.tree.map(lambda x: x[0], state.memory)
    np.testing.assert_allclose(memory.belief.h, belief.h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(memory.belief.s, belief.s, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(memory.action, data.action[-1])
    assert not bool(state.first[0])  # Pendulum's 50-control-step episodes have not ended


# ----------------------------------------------------------------------------- pixels


@given(st.floats(-np.pi, np.pi), st.floats(-8, 8))
@settings(max_examples=10)
def test_pixel_observations_shape_range_function_of_state(theta, velocity):
    env, params = pixels("Pendulum-v1", 12)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    state = state.replace(theta=jnp.float32(theta), theta_dot=jnp.float32(velocity))
    image = env.render(state, params)
    assert image.shape == (12, 12, 1) == env.observation_space(params).shape
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    np.testing.assert_array_equal(image, env.render(state, params))
    np.testing.assert_array_equal(image, env.render(state.replace(theta_dot=0.0), params))
    other = env.render(state.replace(theta=jnp.float32(theta + np.pi)), params)
    assert float(jnp.abs(other - image).max()) > 0.1


# ----------------------------------------------------------------------------- config, keys, learn


@pytest.mark.parametrize(
    "field, value",
    [("total_steps", 0), ("action_repeat", 0), ("num_samples", 1), ("num_elites", 500),
     ("free_nats", -1.0), ("decoder_std", 0.0), ("reward_scale", 0.0), ("min_std", 0.0),
     ("cem_smoothing", 1.0), ("activation", "gelu"), ("sequence_length", 2.5),
     ("learning_rate", float("nan")), ("buffer_size", 3)],
)
def test_bad_config_raises(field, value):
    with pytest.raises(ConfigError, match=field if field != "buffer_size" else "sequence"):
        planet.Config(**{**SMALL, field: value})


def test_needs_continuous_actions():
    env, params = envs.make("CartPole-v1")
    with pytest.raises(ConfigError, match="continuous"):
        planet.init(jax.random.PRNGKey(0), planet.Config(**SMALL),
                    envs.PixelObservations(env, size=8, grayscale=True), params)


def test_learn_reduces_loss_on_fixed_batch(pixel_env):
    env, params = pixel_env
    config = planet.Config(**{**SMALL, "learning_rate": 3e-3})
    state = planet.init(jax.random.PRNGKey(0), config, env, params)
    batch = _batch(jax.random.PRNGKey(1))
    learner = state.learner
    learn = eqx.filter_jit(lambda lr, b: planet.learn(lr, b, config))
    eval_key = jax.random.PRNGKey(2)
    first = float(planet.loss(learner.params.model, eval_key, batch, config)[0])
    for _ in range(30):
        learner, metrics = learn(learner, batch)
    last = float(planet.loss(learner.params.model, eval_key, batch, config)[0])
    assert np.isfinite(last) and last < first - 1.0, (first, last)
    assert int(learner.updates) == 30


def test_act_in_box(pixel_env):
    env, params = pixel_env
    config = planet.Config(**SMALL)
    state = planet.init(jax.random.PRNGKey(0), config, env, params)
    obs = state.env.obs[0]
    for deterministic in (True, False):
        a = planet.act(state.learner.params, obs, jax.random.PRNGKey(1), config, deterministic)
        assert a.shape == (1,) and float(jnp.abs(a).max()) <= 2.0
    assert planet.ACTION_KIND == "continuous"
    assert planet.preset("Pendulum-v1")["total_steps"] == 10_000 and planet.preset("x") == {}
