"""SAC: the scaled tanh-Normal against quadrature and a NumPy change of variables, episode
ends, the direction of one temperature update through learn, the contract's transformations
(continuous and discrete), a user's networks and config errors. The actor, critic-target
and temperature objectives are tested in test_sac_objectives.py."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from minirl import envs
from minirl.algos import sac
from minirl.core import critics, distributions, rollout
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(1200)

SEEDS = st.integers(0, 2**32 - 1)
SMALL = dict(total_steps=300, buffer_size=300, batch_size=16, learning_starts=100, hidden=(16,))
PENDULUM, PENDULUM_PARAMS = envs.make("Pendulum-v1")
CARTPOLE, CARTPOLE_PARAMS = envs.make("CartPole-v1")


def small_config(**overrides) -> sac.Config:
    return sac.Config(**{**SMALL, **overrides})


def arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def random_box_dist(seed: int, dim: int):
    rng = np.random.default_rng(seed)
    low = rng.uniform(-3.0, 1.0, dim)
    high = low + rng.uniform(0.2, 4.0, dim)  # non-symmetric bounds
    mean = rng.uniform(-1.5, 1.5, dim)
    log_std = rng.uniform(np.log(0.2), np.log(1.0), dim)
    dist = distributions.ScaledTanhNormal(*(jnp.asarray(x) for x in (mean, log_std, low, high)))
    return dist, mean, np.exp(log_std), low, high


# ----------------------------------------------------------------------------- the distribution


def box_grid(low: float, high: float, n: int) -> np.ndarray:
    """Quadrature nodes in (low, high), dense near the ends where the density can peak."""
    return low + (high - low) * 0.5 * (np.tanh(np.linspace(-7.0, 7.0, n)) + 1.0)


@settings(max_examples=10)
@given(SEEDS)
def test_scaled_tanh_normal_density_integrates_to_one_in_1d(seed):
    with jax.enable_x64(True):
        dist, *_, low, high = random_box_dist(seed, 1)
        a = box_grid(low[0], high[0], 200_001)
        density = np.exp(np.asarray(dist.log_prob(jnp.asarray(a[:, None]))))
    np.testing.assert_allclose(np.trapezoid(density, a), 1.0, atol=1e-6)


@settings(max_examples=4)
@given(SEEDS)
def test_scaled_tanh_normal_density_integrates_to_one_in_2d(seed):
    with jax.enable_x64(True):
        dist, *_, low, high = random_box_dist(seed, 2)
        a0, a1 = box_grid(low[0], high[0], 2001), box_grid(low[1], high[1], 2001)
        grid = np.stack(np.meshgrid(a0, a1, indexing="ij"), axis=-1)  # [n, n, 2]
        density = np.exp(np.asarray(dist.log_prob(jnp.asarray(grid))))
    total = np.trapezoid(np.trapezoid(density, a1, axis=1), a0)
    np.testing.assert_allclose(total, 1.0, atol=1e-4)


@given(SEEDS, st.sampled_from([1, 2, 3]))
def test_scaled_tanh_normal_log_prob_is_the_change_of_variables(seed, dim):
    """log π(a) = log N(g(a); μ, σ²) + log|det ∂g/∂a| with g(a) = atanh((a − mid)/half), the
    Jacobian taken by central differences in NumPy."""
    with jax.enable_x64(True):
        dist, mean, std, low, high = random_box_dist(seed, dim)
        rng = np.random.default_rng(seed + 1)
        a = low + (high - low) * rng.uniform(0.02, 0.98, (5, dim))
        got = np.asarray(dist.log_prob(jnp.asarray(a)))
        _, sampled_log_prob = dist.sample_and_log_prob(jax.random.PRNGKey(seed % 1000))
        sample = dist.sample(jax.random.PRNGKey(seed % 1000))
        np.testing.assert_allclose(dist.log_prob(sample), sampled_log_prob, rtol=1e-6)
        assert np.all((low <= np.asarray(sample)) & (np.asarray(sample) <= high))

    def g(x):
        return np.arctanh((x - (high + low) / 2) / ((high - low) / 2))

    h = 1e-6
    derivative = (g(a + h) - g(a - h)) / (2 * h)  # diagonal Jacobian
    want = np.sum(stats.norm.logpdf(g(a), mean, std) + np.log(derivative), axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_mode_and_unit_maps():
    dist, mean, _, low, high = random_box_dist(3, 2)
    np.testing.assert_allclose(dist.mode(), low + (high - low) * (np.tanh(mean) + 1) / 2,
                               rtol=1e-5)
    x = jnp.asarray([0.3, -0.7])
    np.testing.assert_allclose(dist.to_unit(dist.from_unit(x)), x, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- targets


INIT = jax.jit(sac.init, static_argnums=2)  # one compile per static config, not op by op


def _learner(config, env, env_params, seed=0):
    return INIT(jax.random.PRNGKey(seed), config, env, env_params).learner


def _batch(env, env_params, size=32, seed=0, discrete=False):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    obs = jax.random.normal(keys[0], (size, 3 if not discrete else 4))
    if discrete:
        action = jax.random.randint(keys[1], (size,), 0, 2)
    else:
        low, high = rollout.action_bounds(env, env_params)
        action = jax.random.uniform(keys[1], (size, 1), minval=low, maxval=high)
    return rollout.Transition(
        obs=obs, action=action, reward=jax.random.normal(keys[2], (size,)),
        next_obs=jax.random.normal(keys[3], obs.shape),
        terminated=jnp.arange(size) % 5 == 0, truncated=jnp.arange(size) % 7 == 0,
    )


class ObsCritic(eqx.Module):
    """Q(s, a) = w·s for every a (continuous: a scalar; discrete: [A])."""

    w: jax.Array
    num_actions: int = eqx.field(static=True, default=0)

    def __call__(self, obs, action=None):
        value = jnp.dot(self.w, obs)
        return value if self.num_actions == 0 else jnp.full(self.num_actions, value)


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_truncation_bootstraps_from_the_final_observation_and_termination_cuts(kind):
    """With Q̄(s, ·) = w·s and α = 0, y = r + γ(1 − terminated) w·s' where s' is the stored
    next observation (the final one at a truncation)."""
    discrete = kind == "discrete"
    env, env_params = (CARTPOLE, CARTPOLE_PARAMS) if discrete else (PENDULUM, PENDULUM_PARAMS)
    config = small_config(gamma=0.5)
    learner = _learner(config, env, env_params)
    size = 4 if discrete else 3
    w = jnp.arange(1.0, size + 1.0)
    target_critics = critics.ensemble(lambda k: ObsCritic(w, 2 if discrete else 0),
                                      jax.random.PRNGKey(0), 2)
    final_obs = jnp.ones((3, size))
    batch = rollout.Transition(
        obs=jnp.zeros((3, size)),
        action=jnp.zeros(3, jnp.int32) if discrete else jnp.zeros((3, 1)),
        reward=jnp.ones(3), next_obs=final_obs,
        terminated=jnp.array([False, True, False]), truncated=jnp.array([True, False, False]),
    )
    y = sac.soft_targets(learner.params, target_critics, 0.0, batch, jax.random.PRNGKey(0),
                         config)
    v = float(jnp.sum(w))
    np.testing.assert_allclose(y, [1.0 + 0.5 * v, 1.0, 1.0 + 0.5 * v], rtol=1e-6)


# ----------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_one_update_lowers_alpha_above_the_target_entropy_and_raises_it_below(kind):
    """Through sac.learn: H̄ far below any entropy the policy can have → α decreases; H̄
    above it → α increases (continuous: H ≤ Σ log(high − low); discrete: H ≤ log|A|)."""
    discrete = kind == "discrete"
    env, env_params = (CARTPOLE, CARTPOLE_PARAMS) if discrete else (PENDULUM, PENDULUM_PARAMS)
    batch = _batch(env, env_params, discrete=discrete)
    if discrete:
        low_target = dict(target_entropy_fraction=0.0)
        high_target = dict(target_entropy_fraction=1.0)
    else:
        low_target = dict(target_entropy_per_dim=-20.0)
        high_target = dict(target_entropy_per_dim=5.0)  # log(4) ≈ 1.39 on Pendulum's box
    for overrides, sign in ((low_target, -1), (high_target, 1)):
        config = small_config(alpha_init=0.5, **overrides)
        learner = _learner(config, env, env_params)
        new, metrics = jax.jit(sac.learn)(learner, batch, config)
        assert np.sign(float(new.log_alpha - learner.log_alpha)) == sign, (overrides, metrics)


def test_alpha_stays_fixed_when_not_learned():
    config = small_config(learn_alpha=False, alpha_init=0.2)
    learner = _learner(config, PENDULUM, PENDULUM_PARAMS)
    new, metrics = sac.learn(learner, _batch(PENDULUM, PENDULUM_PARAMS), config)
    np.testing.assert_allclose(metrics["alpha"], 0.2, rtol=1e-6)
    np.testing.assert_array_equal(new.log_alpha, learner.log_alpha)


# ---------------------------------------------------------------- env, networks, config
# (the contract every learner shares is tests/test_contract.py)

TRAIN = jax.jit(sac.train, static_argnums=2)


def test_discrete_sac_trains_on_cartpole():
    config = small_config(total_steps=300)
    state, metrics = TRAIN(jax.random.PRNGKey(0), config, CARTPOLE, CARTPOLE_PARAMS)
    assert state.learner.params.low is None
    assert state.buffer.data.action.dtype == jnp.int32
    updated = np.asarray(metrics["env_steps"]) >= config.learning_starts
    for name in ("critic_loss", "actor_loss", "entropy", "alpha"):
        assert np.isfinite(np.asarray(metrics[name])).all(), name
    entropy = np.asarray(metrics["entropy"])[updated]
    assert np.all((entropy > 0) & (entropy <= np.log(2) + 1e-6))  # exact H of a Categorical
    assert int(metrics["episodes"].sum()) > 0


def test_act_and_action_bounds_come_from_the_env_params():
    env_params = dataclasses.replace(PENDULUM_PARAMS, max_torque=0.5)
    config = small_config()
    state = sac.init(jax.random.PRNGKey(0), config, PENDULUM, env_params)
    params = state.learner.params
    np.testing.assert_allclose(params.low, [-0.5])
    np.testing.assert_allclose(params.high, [0.5])
    obs = state.env.obs[0]
    keys = jax.random.split(jax.random.PRNGKey(1), 500)
    samples = np.asarray(jax.vmap(lambda k: sac.act(params, obs, k, config))(keys))
    assert samples.shape == (500, 1) and np.all(np.abs(samples) <= 0.5)
    mode = sac.act(params, obs, keys[0], config, deterministic=True)
    np.testing.assert_allclose(mode, sac.policy(params, obs).mode())
    # Discrete: the most probable action, and samples from the Categorical.
    state = sac.init(jax.random.PRNGKey(0), config, CARTPOLE, CARTPOLE_PARAMS)
    params, obs = state.learner.params, state.env.obs[0]
    assert sac.act(params, obs, keys[0], config, True) == jnp.argmax(params.net(obs))


# ----------------------------------------------------------------------------- own networks


class TwoLayerCritic(eqx.Module):
    """A user's critic (obs, unit action) → Q, with an eqx.nn.MLP (a function field)."""

    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(4, "scalar", 16, 2, key=key, activation=jax.nn.tanh)

    def __call__(self, obs, action):
        return self.mlp(jnp.concatenate([obs, action]))


def user_networks(key, num_critics=2, out=2):
    actor_key, critic_key = jax.random.split(key)
    return critics.ActorCritics(
        actor=eqx.nn.MLP(3, out, 16, 2, key=actor_key),
        critics=critics.ensemble(TwoLayerCritic, critic_key, num_critics),
    )


def test_bring_your_own_networks():
    config = small_config()
    network = user_networks(jax.random.PRNGKey(5))
    state = sac.init(jax.random.PRNGKey(0), config, PENDULUM, PENDULUM_PARAMS, network)
    learner = state.learner
    assert isinstance(learner.params.net.module, eqx.nn.MLP)
    batch = _batch(PENDULUM, PENDULUM_PARAMS)
    new, metrics = jax.jit(sac.learn)(learner, batch, config)
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    assert not np.array_equal(new.params.net.module.layers[0].weight,
                              network.actor.layers[0].weight)
    assert not np.array_equal(new.critics.module.mlp.layers[0].weight,
                              network.critics.mlp.layers[0].weight)
    # A factory initialises every seed of a vmap differently.
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    nets = jax.vmap(lambda k: sac.init(k, config, PENDULUM, PENDULUM_PARAMS,
                                       user_networks).learner.params.net)(keys)
    weights = nets.module.layers[0].weight
    assert not np.array_equal(weights[0], weights[1])


def test_networks_of_the_wrong_shape_are_refused():
    config = small_config()
    with pytest.raises(ConfigError, match=r"network.actor returns shape \(3,\).*\(2,\)"):
        sac.init(jax.random.PRNGKey(0), config, PENDULUM, PENDULUM_PARAMS,
                 user_networks(jax.random.PRNGKey(0), out=3))
    with pytest.raises(ConfigError, match=r"num_critics=2.*\(3,\)"):
        sac.init(jax.random.PRNGKey(0), config, PENDULUM, PENDULUM_PARAMS,
                 user_networks(jax.random.PRNGKey(0), num_critics=3))
    with pytest.raises(ConfigError, match="ActorCritics"):
        sac.init(jax.random.PRNGKey(0), config, PENDULUM, PENDULUM_PARAMS,
                 eqx.nn.Linear(3, 2, key=jax.random.PRNGKey(0)))


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(gamma=0.0), "gamma"),
        (dict(tau=1.5), "tau"),
        (dict(alpha_init=0.0), "alpha_init"),
        (dict(target_entropy_fraction=1.2), "target_entropy_fraction"),
        (dict(target_entropy_per_dim=float("nan")), "target_entropy_per_dim"),
        (dict(num_critics=0), "num_critics"),
        (dict(batch_size=500), "batch_size"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(activation="gelu"), "activation"),
        (dict(learn_alpha="yes"), "learn_alpha"),
        (dict(hidden=(0,)), "hidden"),
        (dict(num_envs=7), "buffer_size"),  # 300 is no multiple of 7
        (dict(learning_rate=np.array([1e-3, -1.0])), "learning_rate"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        small_config(**overrides)


def test_fresh_state_can_be_donated():
    config = small_config(learning_starts=0)
    state = sac.init(jax.random.PRNGKey(0), config, PENDULUM, PENDULUM_PARAMS)
    leaves = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
    assert len({id(x) for x in leaves}) == len(leaves)
