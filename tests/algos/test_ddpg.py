"""DDPG and TD3: the clipped double-Q target, target-policy smoothing, the deterministic
policy gradient against the chain rule, the delayed actor, episode ends, TD3 as DDPG's
config, the contract's transformations, a user's networks, errors and resume."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirl import envs, runner
from minirl.algos import ddpg, td3
from minirl.core import critics, rollout
from minirl.core.config import ConfigError, stack

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


def test_clipped_double_q_target_is_at_most_each_critics_target():
    """ddpg.td_targets with (Q̄1, Q̄2) against (Q̄1, Q̄1) and (Q̄2, Q̄2), the same smoothing
    noise: the min-target is ≤ each single-critic target, and equals their min."""
    config = small_config(td3, gamma=0.9)
    learner = _learner(config)
    batch, key = _batch(), jax.random.PRNGKey(3)

    def targets(members):
        ensemble = jax.tree.map(lambda x: x[jnp.asarray(members)], learner.target_critics)
        return np.asarray(ddpg.td_targets(learner.target_params, ensemble, batch, key, config))

    both, first, second = targets([0, 1]), targets([0, 0]), targets([1, 1])
    assert np.all(both <= first + 1e-6) and np.all(both <= second + 1e-6)
    np.testing.assert_allclose(both, np.minimum(first, second), rtol=1e-6, atol=1e-6)
    assert np.any(np.abs(first - second) > 1e-3)


class LinearCritic(eqx.Module):
    """Q(s, a) = w·s + v·a (a in the unit box)."""

    w: jax.Array
    v: jax.Array

    def __call__(self, obs, action):
        return jnp.dot(self.w, obs) + jnp.dot(self.v, action)


def _linear_critics(w, v, size=1):
    return critics.ensemble(lambda k: LinearCritic(jnp.asarray(w), jnp.asarray(v)),
                            jax.random.PRNGKey(0), size)


@pytest.mark.parametrize("noise", [0.0, 0.2, 1.0])
def test_target_policy_smoothing_is_clipped_noise_within_the_unit_box(noise):
    """With Q̄(s, a) = a (unit box) and γ = 1, y − r is the smoothed target action ã':
    μ̄(s') itself without noise, else within ±c of it and inside [−1, 1]."""
    config = small_config(gamma=1.0, target_noise=noise, target_noise_clip=0.3)
    learner = _learner(config)
    batch = dataclasses.replace(_batch(size=256), terminated=jnp.zeros(256, bool))
    target_critics = _linear_critics(np.zeros(3), np.ones(1))
    y = ddpg.td_targets(learner.target_params, target_critics, batch, jax.random.PRNGKey(1),
                        config)
    smoothed = np.asarray(y - batch.reward)
    mean = np.asarray(jax.vmap(ddpg.unit_policy, in_axes=(None, 0))(learner.target_params,
                                                                   batch.next_obs))[:, 0]
    if noise == 0.0:
        np.testing.assert_allclose(smoothed, mean, rtol=1e-5, atol=1e-6)
        return
    assert np.all(np.abs(smoothed - mean) <= 0.3 + 1e-5)
    assert np.all(np.abs(smoothed) <= 1.0 + 1e-6)
    assert np.std(smoothed - mean) > 0.05


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


def test_actor_gradient_is_the_deterministic_policy_gradient():
    """∇_θ(−E Q_φ1(s, μ_θ(s))) = −(1/B) Σ_b (∂μ_θ(s_b)/∂θ)ᵀ ∇_a Q_φ1(s_b, a)|_{a=μ_θ(s_b)},
    assembled from separate per-sample Jacobians; the second critic plays no part."""
    config = small_config(td3)
    learner = _learner(config)
    params, obs = learner.params, _batch().obs
    got = jax.grad(ddpg.actor_loss)(params.net, params, learner.critics, obs)
    first = jax.tree.map(lambda x: x[0], learner.critics)

    def per_sample(s):
        mu, vjp = jax.vjp(lambda net: ddpg.unit_policy(ddpg.Actor(net, params.low,
                                                                  params.high), s), params.net)
        dq_da = jax.grad(lambda a: first(s, a))(mu)
        return vjp(dq_da)[0]

    want = jax.tree.map(lambda g: -jnp.mean(g, axis=0), jax.vmap(per_sample)(obs))
    for x, y in zip(arrays(got), arrays(want), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    other = jax.tree.map(lambda x: x.at[1].multiply(-3.0), learner.critics)
    again = jax.grad(ddpg.actor_loss)(params.net, params, other, obs)
    for x, y in zip(arrays(got), arrays(again), strict=True):
        np.testing.assert_array_equal(x, y)


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
    # Polyak: θ̄ ← τθ + (1 − τ)θ̄ at the second update.
    for t_new, t_old, p in zip(arrays(twice.target_params), arrays(once.target_params),
                               arrays(twice.params)):
        np.testing.assert_allclose(t_new, config.tau * p + (1 - config.tau) * t_old,
                                   rtol=1e-5, atol=1e-7)


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


# ----------------------------------------------------------------------------- contract

TRACES = []


def _train(key, config, env, env_params):
    TRACES.append(1)
    return ddpg.train(key, config, env, env_params)


TRAIN = jax.jit(_train, static_argnums=2)
BATCHED = jax.jit(jax.vmap(ddpg.train, in_axes=(0, 0, None, None)), static_argnums=2)


def test_same_key_same_bits_and_jit_equals_eager():
    config = small_config(td3)
    key = jax.random.PRNGKey(3)
    a, b = TRAIN(key, config, ENV, ENV_PARAMS), TRAIN(key, config, ENV, ENV_PARAMS)
    for x, y in zip(arrays(a), arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)
    state = a[0]
    batch = jax.tree.map(lambda x: x[:16], state.buffer.data)
    jitted, jm = jax.jit(ddpg.learn)(state.learner, batch, config)
    with jax.disable_jit():
        eager, em = ddpg.learn(state.learner, batch, config)
    for x, y in zip(arrays(jitted), arrays(eager), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(jm["critic_loss"], em["critic_loss"], rtol=1e-4)


def test_vmap_over_seeds_and_a_hyperparameter_sweep_equal_separate_runs_and_compile_once():
    configs = [small_config(td3, learning_rate=lr, policy_delay=d, target_noise=s)
               for lr, d, s in [(1e-3, 2, 0.2), (3e-4, 1, 0.0), (1e-3, 3, 0.5)]]
    keys = jax.random.split(jax.random.PRNGKey(1), len(configs))
    swept_state, swept = BATCHED(keys, stack(configs), ENV, ENV_PARAMS)
    before = len(TRACES)
    for i, config in enumerate(configs):
        state, metrics = TRAIN(keys[i], config, ENV, ENV_PARAMS)
        np.testing.assert_allclose(metrics["episode_return_sum"],
                                   swept["episode_return_sum"][i], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(metrics["critic_loss"], swept["critic_loss"][i], rtol=1e-3,
                                   atol=1e-4)
        for x, y in zip(arrays(state.learner), arrays(swept_state.learner)):
            np.testing.assert_allclose(x, y[i], rtol=1e-3, atol=1e-4)
    assert len(TRACES) - before <= 1  # lr, policy delay, smoothing noise: one program


def test_ddpg_on_a_discrete_env_is_refused():
    env, params = envs.make("CartPole-v1")
    with pytest.raises(ConfigError, match="CartPole-v1.*discrete.*continuous"):
        ddpg.init(jax.random.PRNGKey(0), small_config(), env, params)
    with pytest.raises(ConfigError, match="CartPole-v1.*discrete.*continuous"):
        runner.check_compatible(td3, "td3", env, params)


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


def test_resume_through_the_runner_equals_an_uninterrupted_run(tmp_path):
    algorithms = {"ddpg": ddpg, "td3": td3}
    kwargs = dict(config=small_config(td3), env_id="Pendulum-v1", seeds=2, target_chunks=3)
    whole = runner.train("td3", algorithms, str(tmp_path / "whole"), **kwargs)
    runner.train("td3", algorithms, str(tmp_path / "cut"), stop_after_chunks=1, **kwargs)
    resumed = runner.train("td3", algorithms, str(tmp_path / "cut"), resume=True)
    assert isinstance(resumed.config, td3.Config) and resumed.config.policy_delay == 2
    assert resumed.history == whole.history
    state_a = runner.load_run(str(tmp_path / "whole"), algorithms)[1]
    state_b = runner.load_run(str(tmp_path / "cut"), algorithms)[1]
    for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
