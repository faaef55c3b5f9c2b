"""DDPG and TD3: target-policy smoothing noise against the clipped normal's closed form, the
TD3 target's expectation (clipped double Q at the smoothed action) against quadrature, the
deterministic policy gradient against finite differences of E_s[Q₁(s, μ_θ(s))], the delayed
actor and the target networks as moving averages of the online ones, episode ends, TD3 as
DDPG's config, the contract's transformations, a user's networks and config errors."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from minirl import envs
from minirl.algos import ddpg, td3
from minirl.core import critics, rollout
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(1200)

SMALL = dict(total_steps=300, buffer_size=300, batch_size=16, learning_starts=100, hidden=(16,))
ENV, ENV_PARAMS = envs.make("Pendulum-v1")


def small_config(module=ddpg, **overrides):
    return module.Config(**{**SMALL, **overrides})


def arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


INIT = jax.jit(ddpg.init, static_argnums=2)  # one compile per static config, not op by op


def _learner(config, seed=0):
    return INIT(jax.random.PRNGKey(seed), config, ENV, ENV_PARAMS).learner


def _batch(size=32, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    return rollout.Transition(
        obs=jax.random.normal(keys[0], (size, 3)),
        action=jax.random.uniform(keys[1], (size, 1), minval=-2.0, maxval=2.0),
        reward=jax.random.normal(keys[2], (size,)),
        next_obs=jax.random.normal(keys[3], (size, 3)),
        terminated=jnp.arange(size) % 5 == 0, truncated=jnp.arange(size) % 7 == 0,
    )


# ----------------------------------------------------------------------------- targets


def test_td3_is_ddpg_with_three_switches():
    config = td3.Config()
    assert config.clipped_double_q and config.num_critics == 2
    assert config.target_noise == 0.2 and config.target_noise_clip == 0.5
    assert config.policy_delay == 2
    plain = ddpg.Config()
    assert not plain.clipped_double_q and plain.target_noise == 0.0 and plain.policy_delay == 1
    assert td3.learn is ddpg.learn and td3.init is ddpg.init and td3.act is ddpg.act
    assert isinstance(config, ddpg.Config)


class LinearCritic(eqx.Module):
    """Q(s, a) = w·s + v·a (a in the unit box)."""

    w: jax.Array
    v: jax.Array

    def __call__(self, obs, action):
        return jnp.dot(self.w, obs) + jnp.dot(self.v, action)


def _linear_critics(w, v, size=1):
    return critics.ensemble(lambda k: LinearCritic(jnp.asarray(w), jnp.asarray(v)),
                            jax.random.PRNGKey(0), size)


class ConstantActor(eqx.Module):
    """f_θ(s) = out for every s, so the target action μ̄(s') = tanh(out) is known."""

    out: jax.Array

    def __call__(self, obs):
        return self.out


def _constant_target_actor(unit_action: float) -> ddpg.Actor:
    return ddpg.Actor(ConstantActor(jnp.asarray([np.arctanh(unit_action)], jnp.float32)),
                      jnp.asarray([-2.0]), jnp.asarray([2.0]))


def _next_state_batch(size: int, next_obs=(1.0, 0.0, 0.0)) -> rollout.Transition:
    return rollout.Transition(
        obs=jnp.zeros((size, 3)), action=jnp.zeros((size, 1)), reward=jnp.zeros(size),
        next_obs=jnp.tile(jnp.asarray(next_obs), (size, 1)), terminated=jnp.zeros(size, bool),
        truncated=jnp.zeros(size, bool),
    )


def test_without_smoothing_noise_the_target_action_is_the_target_policy():
    """σ̃ = 0: with Q̄(s, a) = a (unit box), γ = 1 and r = 0, y = μ̄(s') exactly."""
    config = small_config(gamma=1.0, target_noise=0.0)
    learner = _learner(config)
    batch = dataclasses.replace(_batch(size=64), terminated=jnp.zeros(64, bool),
                                reward=jnp.zeros(64))
    y = ddpg.td_targets(learner.target_params, _linear_critics(np.zeros(3), np.ones(1)), batch,
                        jax.random.PRNGKey(1), config)
    mean = jax.vmap(ddpg.unit_policy, in_axes=(None, 0))(learner.target_params, batch.next_obs)
    np.testing.assert_allclose(y, mean[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("noise, clip", [(0.2, 0.5), (0.5, 0.3), (1.0, 0.8)])
def test_target_smoothing_noise_is_a_clipped_normal(noise, clip):
    """ã' − μ̄(s') = clip(ε, −c, c), ε ~ N(0, σ̃²), read from 2·10⁵ targets with μ̄ = 0,
    Q̄(s, a) = a, γ = 1, r = 0. Against the clipped normal's closed form (k = c/σ̃, Φ and φ
    from scipy): mean 0, E[x²] = σ̃²(2Φ(k) − 1 − 2kφ(k)) + 2c²(1 − Φ(k)), an atom of mass
    1 − Φ(k) at each of ±c, and P(x ≤ t) = Φ(t/σ̃) inside. Tolerances: 5 standard errors."""
    size = 200_000
    config = small_config(gamma=1.0, target_noise=noise, target_noise_clip=clip)
    y = np.asarray(ddpg.td_targets(_constant_target_actor(0.0),
                                   _linear_critics(np.zeros(3), np.ones(1)),
                                   _next_state_batch(size), jax.random.PRNGKey(1), config),
                   np.float64)
    k = clip / noise

    def close(sample, want):
        assert abs(sample.mean() - want) < 5 * sample.std() / np.sqrt(size) + 1e-6, (
            sample.mean(), want)

    close(y, 0.0)
    second = noise**2 * (2 * stats.norm.cdf(k) - 1 - 2 * k * stats.norm.pdf(k))
    close(y**2, second + 2 * clip**2 * stats.norm.sf(k))
    atom = stats.norm.sf(k)
    close((y >= clip - 1e-6).astype(float), atom)
    close((y <= -clip + 1e-6).astype(float), atom)
    assert np.all(np.abs(y) <= clip + 1e-6)
    for t in (-0.5 * clip, 0.0, 0.5 * clip):
        close((y <= t).astype(float), stats.norm.cdf(t / noise))


def test_td3_target_is_the_expected_clipped_double_q_under_the_smoothed_action():
    """TD3's y = r + γ E_ε[min(Q̄₁, Q̄₂)(s', clip(μ̄(s') + clip(ε, −c, c), −1, 1))] with
    Q̄₁ = 0.2 + a and Q̄₂ = 0.9 − a (their minimum switches at a = 0.35) and μ̄ = 0.6, so the
    outer clip at 1 is reached: the mean of 2·10⁵ targets against quadrature over ε."""
    size, gamma, reward = 200_000, 0.9, 0.5
    config = small_config(td3, gamma=gamma, target_noise=0.3, target_noise_clip=0.5)
    twins = LinearCritic(jnp.asarray([[0.2, 0.0, 0.0], [0.9, 0.0, 0.0]]),  # leaves [2, ...]
                         jnp.asarray([[1.0], [-1.0]]))
    batch = dataclasses.replace(_next_state_batch(size), reward=jnp.full(size, reward))
    y = np.asarray(ddpg.td_targets(_constant_target_actor(0.6), twins, batch,
                                   jax.random.PRNGKey(2), config), np.float64)

    def value(eps):
        a = np.clip(0.6 + np.clip(eps, -0.5, 0.5), -1.0, 1.0)
        return min(0.2 + a, 0.9 - a) * stats.norm.pdf(eps, 0.0, 0.3)

    expected = integrate.quad(value, -3.0, 3.0, points=[-0.5, -0.25, 0.4, 0.5], epsabs=1e-12)[0]
    want = reward + gamma * expected
    assert abs(y.mean() - want) < 5 * y.std() / np.sqrt(size), (y.mean(), want)


def test_truncation_bootstraps_from_the_final_observation_and_termination_cuts():
    config = small_config(gamma=0.5)
    learner = _learner(config)
    target_critics = _linear_critics([1.0, 2.0, 3.0], [0.0])
    batch = rollout.Transition(
        obs=jnp.zeros((3, 3)), action=jnp.zeros((3, 1)), reward=jnp.ones(3),
        next_obs=jnp.ones((3, 3)),
        terminated=jnp.array([False, True, False]), truncated=jnp.array([True, False, False]),
    )
    y = ddpg.td_targets(learner.target_params, target_critics, batch, jax.random.PRNGKey(0),
                        config)
    np.testing.assert_allclose(y, [1.0 + 0.5 * 6.0, 1.0, 1.0 + 0.5 * 6.0], rtol=1e-6)


# ----------------------------------------------------------------------------- the actor


class LinearActor(eqx.Module):
    """f_θ(s) = W s + b, so μ_θ(s) = tanh(W s + b) in the unit box."""

    weight: jax.Array  # [D, 3]
    bias: jax.Array  # [D]

    def __call__(self, obs):
        return self.weight @ obs + self.bias


class TrackingCritics(eqx.Module):
    """M critics Q_j(s, x) = −‖x − C_j s‖² + e_j·s on unit-box actions; leaves [M, ...]."""

    gain: jax.Array  # [M, D, 3]
    bonus: jax.Array  # [M, 3]

    def __call__(self, obs, x):
        return -jnp.sum(jnp.square(x - self.gain @ obs)) + jnp.dot(self.bonus, obs)


def test_actor_gradient_is_the_gradient_of_the_first_critics_value_of_the_policy():
    """The deterministic policy gradient is ∇_θ J with J(θ) = E_s[Q_φ1(s, μ_θ(s))] (Silver et
    al., 2014): −∇ of ddpg.actor_loss against central finite differences of J written in
    NumPy (Q₁ a known quadratic, μ_θ = tanh(W s + b)), over 16 states. The second critic,
    whose minimum with the first would change the gradient, plays no part."""
    rng = np.random.default_rng(0)
    dim = 2
    weight, bias = rng.normal(size=(dim, 3)) * 0.7, rng.normal(size=dim) * 0.3
    gain, bonus = rng.normal(size=(2, dim, 3)) * 0.5, rng.normal(size=(2, 3))
    obs = rng.normal(size=(16, 3))
    with jax.enable_x64(True):
        box = jnp.asarray([-1.0, 0.0]), jnp.asarray([2.0, 0.5])
        params = ddpg.Actor(LinearActor(jnp.asarray(weight), jnp.asarray(bias)), *box)
        twins = TrackingCritics(jnp.asarray(gain), jnp.asarray(bonus))
        got = jax.grad(ddpg.actor_loss)(params.net, params, twins, jnp.asarray(obs))
        got = np.concatenate([np.ravel(got.weight), np.ravel(got.bias)])

    def values(theta):
        """Q_j(s, μ_θ(s)) for both critics, [2, 16]."""
        w, b = theta[:3 * dim].reshape(dim, 3), theta[3 * dim:]
        x = np.tanh(obs @ w.T + b)
        return np.stack([-np.sum((x - obs @ gain[j].T) ** 2, -1) + obs @ bonus[j]
                         for j in (0, 1)])

    def derivative(objective):
        theta, h = np.concatenate([np.ravel(weight), bias]), 1e-6
        return np.array([(objective(theta + e) - objective(theta - e)) / (2 * h)
                         for e in np.eye(theta.size) * h])

    want = derivative(lambda theta: values(theta)[0].mean())
    np.testing.assert_allclose(-got, want, rtol=1e-6, atol=1e-8)
    other = derivative(lambda theta: values(theta).min(0).mean())  # what a min would give
    assert np.max(np.abs(other - want)) > 0.05


def test_delayed_actor_and_targets_move_every_dth_update():
    config = small_config(td3, policy_delay=2)
    learner, batch = _learner(config), _batch()
    learn = jax.jit(ddpg.learn)
    once, m1 = learn(learner, batch, config)
    twice, m2 = learn(once, batch, config)
    for name in ("params", "target_params", "target_critics"):
        for x, y in zip(arrays(getattr(once, name)), arrays(getattr(learner, name))):
            np.testing.assert_array_equal(x, y)  # update 1 of 2: unchanged
        assert any(not np.array_equal(x, y) for x, y in
                   zip(arrays(getattr(twice, name)), arrays(getattr(once, name)))), name
    assert float(m1["actor_loss"]) == 0.0 and float(m2["actor_loss"]) != 0.0
    assert not np.array_equal(arrays(once.critics)[0], arrays(learner.critics)[0])


def ema_of_snapshots(initial, snapshots, tau):
    """(1 − τ)^m θ̄₀ + Σ_i τ(1 − τ)^(m − i) θ_i over m snapshots θ_1 … θ_m (leaf lists): the
    closed form of m Polyak steps, a geometrically weighted sum."""
    m = len(snapshots)
    total = [(1 - tau) ** m * np.asarray(x, np.float64) for x in initial]
    for i, snapshot in enumerate(snapshots, start=1):
        total = [t + tau * (1 - tau) ** (m - i) * np.asarray(x, np.float64)
                 for t, x in zip(total, snapshot)]
    return total


def test_targets_are_the_moving_average_of_the_networks_after_the_actor_updates():
    """Over 7 updates with d = 3 and τ = 0.3, after update k the target actor and target
    critics are the geometrically weighted average of the initial targets and the online
    networks right after updates 3 and 6 (the actor's updates) up to k: in between they do
    not move, and the critics moved at updates the average leaves out."""
    tau = 0.3
    config = small_config(td3, policy_delay=3, tau=tau)
    learner, batch = _learner(config), _batch()
    learn = jax.jit(ddpg.learn)
    first = learner
    actors, critic_sets = [], []
    for k in range(1, 8):
        learner, _ = learn(learner, batch, config)
        if k % 3 == 0:
            actors.append(arrays(learner.params))
            critic_sets.append(arrays(learner.critics))
        for got, initial, snapshots in ((learner.target_params, first.target_params, actors),
                                        (learner.target_critics, first.target_critics,
                                         critic_sets)):
            want = ema_of_snapshots(arrays(initial), snapshots, tau)
            for x, y in zip(arrays(got), want, strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(x, y) for x, y in zip(actors[0], actors[1]))  # the actor moved


def test_act_is_the_deterministic_policy_plus_clipped_noise():
    env_params = dataclasses.replace(ENV_PARAMS, max_torque=0.5)
    config = small_config(exploration_noise=0.5)
    params = ddpg.init(jax.random.PRNGKey(0), config, ENV, env_params).learner.params
    np.testing.assert_allclose(params.low, [-0.5])
    obs = jnp.array([1.0, 0.0, 0.3])
    mu = ddpg.act(params, obs, jax.random.PRNGKey(0), config, deterministic=True)
    np.testing.assert_allclose(mu, 0.5 * np.tanh(np.asarray(params.net(obs))), rtol=1e-6)
    keys = jax.random.split(jax.random.PRNGKey(1), 2000)
    samples = np.asarray(jax.vmap(lambda k: ddpg.act(params, obs, k, config))(keys))
    assert np.all(np.abs(samples) <= 0.5) and np.std(samples) > 0.05


# ---------------------------------------------------------------- env, networks, config
# (the contract every learner shares is tests/test_contract.py)

def test_ddpg_on_a_discrete_env_is_refused():
    env, params = envs.make("CartPole-v1")
    with pytest.raises(ConfigError, match="CartPole-v1.*discrete.*continuous"):
        ddpg.init(jax.random.PRNGKey(0), small_config(), env, params)
    with pytest.raises(ConfigError, match="CartPole-v1.*discrete.*continuous"):
        td3.init(jax.random.PRNGKey(0), small_config(td3), env, params)


class TwoLayerCritic(eqx.Module):
    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(4, "scalar", 16, 2, key=key, activation=jax.nn.tanh)

    def __call__(self, obs, action):
        return self.mlp(jnp.concatenate([obs, action]))


def user_networks(key, num_critics=2, out=1):
    actor_key, critic_key = jax.random.split(key)
    return critics.ActorCritics(
        actor=eqx.nn.MLP(3, out, 16, 2, key=actor_key),
        critics=critics.ensemble(TwoLayerCritic, critic_key, num_critics),
    )


def test_bring_your_own_networks():
    config = small_config(td3, policy_delay=1)
    network = user_networks(jax.random.PRNGKey(5))
    learner = ddpg.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS, network).learner
    new, metrics = jax.jit(ddpg.learn)(learner, _batch(), config)
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    assert not np.array_equal(new.params.net.module.layers[0].weight,
                              network.actor.layers[0].weight)
    with pytest.raises(ConfigError, match=r"network.actor returns shape \(2,\).*\(1,\)"):
        ddpg.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS,
                  user_networks(jax.random.PRNGKey(0), out=2))
    with pytest.raises(ConfigError, match=r"ensemble of 1"):
        ddpg.init(jax.random.PRNGKey(0), small_config(), ENV, ENV_PARAMS, network)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(gamma=1.5), "gamma"),
        (dict(tau=0.0), "tau"),
        (dict(exploration_noise=-0.1), "exploration_noise"),
        (dict(target_noise=float("inf")), "target_noise"),
        (dict(target_noise_clip=-1.0), "target_noise_clip"),
        (dict(policy_delay=0), "policy_delay"),
        (dict(clipped_double_q="yes"), "clipped_double_q"),
        (dict(batch_size=0), "batch_size"),
        (dict(total_steps=0), "total_steps"),
        (dict(learning_rate=np.array([1e-3, 0.0])), "learning_rate"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        small_config(**overrides)
    with pytest.raises(ConfigError, match=field):
        small_config(td3, **overrides)
