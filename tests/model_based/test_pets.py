"""PETS, the learned-model env and the known rewards against independent references.

- the known rewards equal the gymnax env's own reward (and termination) on random
  states and actions;
- ``ModelEnv`` runs under ``rollout.collect`` unchanged: time-limit truncation, auto-reset,
  ``final_observation``, rewards equal to the known function of the stored transition, and
  equal wrappers hash alike (a static jit argument);
- particle propagation: the grouped, vmapped prediction equals a Python loop that predicts
  each particle with its own member (the distribution of the assignment, TS1 / TS∞ along
  the horizon and the planned cost against Monte Carlo: test_pets_propagation.py);
- with the true env as the planning model and one particle, pets' planner returns the
  plan of ``minirl.planning.mpc``'s CEM on the env with the same key;
- the loop: one ``step`` = K env steps then exactly one fit (the learner after a step
  equals ``learn`` on the stored data), ``train`` fits once per K steps; same key → same
  bits; vmap over seeds equals a loop; ``act`` stays in the action box;
- bad configs raise ConfigError naming the field.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl import envs
from minirl.core import rollout
from minirl.core.config import ConfigError
from minirl.model_based import dynamics, model_env, pets, rewards
from minirl.planning import mpc

pytestmark = pytest.mark.timeout(600)

SEEDS = st.integers(0, 2**31 - 1)
PENDULUM = envs.make("Pendulum-v1")
TINY = dict(total_steps=12, refit_every=6, random_steps=3, hidden=(8,), horizon=3,
            num_samples=4, num_elites=2, iterations=2, particles=2, ensemble_size=2,
            fit_updates=2, batch_size=4, buffer_size=32)


# ----------------------------------------------------------------------------- rewards


@settings(max_examples=10)
@given(SEEDS)
def test_pendulum_reward_is_the_envs(seed):
    env, ep = PENDULUM
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    theta = jax.random.uniform(k1, (64,), minval=-10.0, maxval=10.0)
    theta_dot = jax.random.uniform(k2, (64,), minval=-8.0, maxval=8.0)
    action = jax.random.uniform(k3, (64, 1), minval=-4.0, maxval=4.0)  # beyond the box too
    _, state = env.reset(k1, ep)
    states = jax.vmap(lambda t, td: state.replace(theta=t, theta_dot=td))(theta, theta_dot)
    obs = jax.vmap(env.get_obs)(states)
    next_obs, _, reward, done, _ = jax.vmap(env.step_env, in_axes=(None, 0, 0, None))(
        k1, states, action, ep)
    mine = jax.vmap(rewards.pendulum_reward, in_axes=(0, 0, 0, None))(obs, action, next_obs, ep)
    np.testing.assert_allclose(mine, reward, rtol=1e-5, atol=1e-5)
    assert not np.any(done)


@settings(max_examples=10)
@given(SEEDS)
def test_mountain_car_reward_and_termination_are_the_envs(seed):
    env, ep = envs.make("MountainCarContinuous-v0")
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    position = jax.random.uniform(k1, (256,), minval=0.2, maxval=0.6)
    velocity = jax.random.uniform(k2, (256,), minval=-0.07, maxval=0.07)
    action = jax.random.uniform(k3, (256, 1), minval=-1.5, maxval=1.5)
    _, state = env.reset(k1, ep)
    states = jax.vmap(lambda x, v: state.replace(position=x, velocity=v))(position, velocity)
    obs = jax.vmap(env.get_obs)(states)
    next_obs, _, reward, done, _ = jax.vmap(env.step_env, in_axes=(None, 0, 0, None))(
        k1, states, action, ep)
    known = rewards.known(env)
    mine = jax.vmap(known.reward, in_axes=(0, 0, 0, None))(obs, action, next_obs, ep)
    ends = jax.vmap(known.terminated, in_axes=(0, 0, 0, None))(obs, action, next_obs, ep)
    np.testing.assert_allclose(mine, reward, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ends, done)
    assert np.any(done) and not np.all(done)


def test_unknown_reward_is_a_config_error():
    env, _ = envs.make("Acrobot-v1")
    with pytest.raises(ConfigError, match="no known reward"):
        rewards.known(env)


# ----------------------------------------------------------------------------- model env


def _model(seed, kind="probabilistic", members=3, learn_reward=False):
    config = dynamics.ModelConfig(kind=kind, ensemble_size=members, hidden=(16,),
                                  learn_reward=learn_reward)
    return dynamics.init(jax.random.PRNGKey(seed), 3, 1, config), config


@pytest.mark.parametrize("kind", ["probabilistic", "bnn"])
def test_model_env_runs_under_collect(kind):
    env, ep = PENDULUM
    model, config = _model(0, kind)
    menv = model_env.ModelEnv(env, config)
    assert menv == model_env.ModelEnv(env, config)
    assert hash(menv) == hash(model_env.ModelEnv(env, config))
    other = dynamics.ModelConfig(kind=kind, ensemble_size=3, hidden=(32,))
    assert menv != model_env.ModelEnv(env, other)
    params = menv.params(model, ep.replace(max_steps_in_episode=7))
    policy = rollout.random_policy(menv, params)

    @jax.jit
    def run(key):
        carry = rollout.reset(key, menv, params, 2)
        return rollout.collect(key, menv, params, carry, policy, 20)

    run_static = jax.jit(lambda key, e: rollout.reset(key, e, params, 2).obs, static_argnums=1)
    run_static(jax.random.PRNGKey(0), menv)  # hashable: a static argument
    _, traj = run(jax.random.PRNGKey(1))
    assert traj.obs.shape == (20, 2, 3) and traj.action.shape == (20, 2, 1)
    done = np.asarray(traj.done)
    # time limit 7: truncated at steps 6 and 13 (0-based), never terminated (Pendulum)
    assert np.array_equal(np.where(done[:, 0])[0], [6, 13])
    assert not np.any(traj.terminated)
    flat = jax.tree.map(lambda x: x.reshape(40, -1), (traj.obs, traj.action, traj.next_obs))
    expected = jax.vmap(rewards.pendulum_reward, in_axes=(0, 0, 0, None))(
        *flat, params.env_params).reshape(20, 2)
    np.testing.assert_allclose(traj.reward, expected, rtol=1e-5, atol=1e-5)
    # auto-reset: the obs after a truncation is a fresh reset (|θ̇| ≤ 1), not next_obs
    after = np.asarray(traj.obs[7, :])
    assert np.all(np.abs(after[:, 2]) <= 1.0)
    assert np.all(np.abs(np.linalg.norm(after[:, :2], axis=-1) - 1) < 1e-5)
    # no reset elsewhere: obs_{t+1} = next_obs_t
    keep = ~done[:-1]
    np.testing.assert_array_equal(np.asarray(traj.obs[1:])[keep],
                                  np.asarray(traj.next_obs[:-1])[keep])


@pytest.mark.parametrize("reward", ["known", "learned"])
def test_model_env_step_is_a_member_prediction(reward):
    """A deterministic one-member model env steps exactly as dynamics.predict; its reward
    is the known function or the model's reward head."""
    env, ep = PENDULUM
    model, config = _model(3, "deterministic", members=1, learn_reward=reward == "learned")
    menv = model_env.ModelEnv(env, config, reward=reward)
    params = menv.params(model, ep)
    obs, state = menv.reset(jax.random.PRNGKey(0), params)
    action = jnp.array([0.7])
    next_obs, _, reward_value, terminated, truncated, info = menv.step(
        jax.random.PRNGKey(1), state, action, params)
    member = jax.tree.map(lambda x: x[0], model.members)
    expected, learned = dynamics.predict(member, model, obs, action, jax.random.PRNGKey(2),
                                         config, sample=False)
    np.testing.assert_allclose(next_obs, expected, rtol=1e-6)
    if reward == "learned":
        np.testing.assert_allclose(reward_value, learned, rtol=1e-6)
    else:
        np.testing.assert_allclose(reward_value, rewards.pendulum_reward(obs, action, expected,
                                                                         ep), rtol=1e-6)
    np.testing.assert_allclose(info["final_observation"], expected, rtol=1e-6)
    assert not terminated and not truncated


# ----------------------------------------------------------------------------- particles


@settings(max_examples=8)
@given(SEEDS, st.sampled_from(["ts1", "tsinf"]), st.sampled_from(["probabilistic", "bnn",
                                                                    "deterministic"]))
def test_grouped_step_equals_a_per_particle_loop(seed, propagation, kind):
    members_n, p = 3, 6
    model, config = _model(seed, kind, members=members_n, learn_reward=True)
    key = jax.random.PRNGKey(seed)
    k_obs, k_act, k_assign, k_noise, k_members = jax.random.split(key, 5)
    members = dynamics.sample_members(k_members, model, members_n, config)
    obs = jax.random.normal(k_obs, (p, 3))
    action = jax.random.normal(k_act, (1,))
    member_of = pets.assignment(k_assign, p, members_n, propagation)
    keys = jax.random.split(k_noise, p)
    next_obs, reward = pets.grouped_predict(members, model, obs, action, member_of, keys, config)
    for i in range(p):
        j = int(member_of[i])
        net = jax.tree.map(lambda x, j=j: x[j], members)
        o, r = dynamics.predict(net, model, obs[i], action, keys[i], config, sample=True)
        np.testing.assert_allclose(next_obs[i], o, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(reward[i], r, rtol=1e-5, atol=1e-6)


def _fitted_params(config, seed=0):
    env, ep = PENDULUM
    state = pets.init(jax.random.PRNGKey(seed), config, env, ep)
    return state.learner.params


def _env_propagator(env, ep):
    """The true Pendulum as a particle model: obs → (θ, θ̇) → env.step_env → obs."""

    def one(obs, action):
        _, state = env.reset(jax.random.PRNGKey(0), ep)
        state = state.replace(theta=jnp.arctan2(obs[1], obs[0]), theta_dot=obs[2])
        next_obs, *_ = env.step_env(jax.random.PRNGKey(0), state, action, ep)
        return next_obs

    return lambda obs, action, key: (jax.vmap(one, in_axes=(0, None))(obs, action), None)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_true_model_plans_like_mpc_on_the_env(seed):
    env, ep = PENDULUM
    config = pets.Config(particles=1, ensemble_size=1, horizon=10, num_samples=50,
                         num_elites=5, iterations=3, init_std=1.0, smoothing=0.1, hidden=(8,))
    params = _fitted_params(config)
    key, reset_key = jax.random.split(jax.random.PRNGKey(seed))
    obs, env_state = env.reset(reset_key, ep)
    planner = mpc.cem_planner(env, ep, horizon=10, num_samples=50, num_elites=5,
                              iterations=3, init_std=1.0, smoothing=0.1)
    warm = planner.init(env_state)
    action, shifted = jax.jit(planner.act)(key, env_state, warm)
    mine = jax.jit(lambda k, o: pets.plan(k, jax.random.PRNGKey(99), params,
                                          _env_propagator(env, ep), o, warm, config))(key, obs)
    np.testing.assert_allclose(mine.actions[0], action, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mine.actions[1:], shifted[:-1], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the loop


def test_step_is_k_env_steps_then_one_fit():
    env, ep = PENDULUM
    config = pets.Config(**TINY)
    state = pets.init(jax.random.PRNGKey(0), config, env, ep)
    new, metrics = jax.jit(pets.step, static_argnums=(1, 2))(state, config, env, ep)
    k = config.refit_every
    assert int(new.env_steps) == k and int(new.buffer.size) == k
    assert int(new.learner.updates) == config.fit_updates  # one fit of fit_updates updates
    # the learner after the step is `learn` applied once to the stored data
    expected, _ = pets.learn(state.learner, new.buffer.data, config, new.buffer.size)
    for a, b in zip(jax.tree.leaves(new.learner), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # the stored transitions are the env's: next_obs follows obs under the true dynamics
    data = jax.tree.map(lambda x: np.asarray(x[:k]), new.buffer.data)
    np.testing.assert_allclose(data.reward, jax.vmap(rewards.pendulum_reward, in_axes=(
        0, 0, 0, None))(data.obs, data.action, data.next_obs, ep), rtol=1e-4, atol=1e-4)


def _train(config, key):
    env, ep = PENDULUM
    return jax.jit(pets.train, static_argnums=(1, 2))(key, config, env, ep)


def test_train_refits_every_k_same_key_same_bits_and_vmap_equals_loop():
    env, ep = PENDULUM
    config = pets.Config(**TINY)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    state, metrics = _train(config, keys[0])
    assert int(state.learner.updates) == config.num_iterations * config.fit_updates
    assert config.num_iterations == 2
    assert metrics["env_steps"].tolist() == [6, 12]
    again, _ = _train(config, keys[0])
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)
    batched, _ = jax.jit(jax.vmap(pets.train, in_axes=(0, None, None, None)),
                         static_argnums=(1, 2))(keys, config, env, ep)
    other, _ = _train(config, keys[1])
    for i, single in enumerate((state, other)):
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            np.testing.assert_allclose(np.asarray(a)[i], b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("overrides", [
    dict(propagation="mean", reward="learned"), dict(model="bnn", planner="random"),
    dict(model="deterministic", ensemble_size=1, particles=1, propagation="ts1"),
])
def test_variants_act_in_the_box(overrides):
    env, ep = PENDULUM
    config = pets.Config(**{**TINY, **overrides})
    state = pets.init(jax.random.PRNGKey(0), config, env, ep)
    state, _ = jax.jit(pets.step, static_argnums=(1, 2))(state, config, env, ep)
    obs = jnp.array([1.0, 0.0, 0.5])
    action = jax.jit(lambda p, o, k: pets.act(p, o, k, config))(state.learner.params, obs,
                                                                jax.random.PRNGKey(1))
    assert action.shape == (1,) and np.all(np.abs(action) <= 2.0)
    assert np.all(np.isfinite(jax.tree.leaves(eqx.filter(state, eqx.is_array))[0]))


@pytest.mark.parametrize("bad, field", [
    (dict(particles=7, ensemble_size=5), "particles"),
    (dict(propagation="ts2"), "propagation"),
    (dict(planner="mppi"), "planner"),
    (dict(model="gp"), "model"),
    (dict(reward="guess"), "reward"),
    (dict(num_elites=500, num_samples=100), "num_elites"),
    (dict(horizon=0), "horizon"),
    (dict(smoothing=1.0), "smoothing"),
    (dict(total_steps=10, refit_every=200), "total_steps"),
    (dict(hidden=()), "hidden"),
])
def test_bad_config_raises(bad, field):
    with pytest.raises(ConfigError, match=field):
        pets.Config(**bad)


def test_discrete_env_and_unknown_reward_raise():
    env, ep = envs.make("CartPole-v1")
    with pytest.raises(ConfigError, match="continuous"):
        pets.init(jax.random.PRNGKey(0), pets.Config(**TINY), env, ep)
    env, ep = envs.make("MountainCarContinuous-v0")
    pets.init(jax.random.PRNGKey(0), pets.Config(**TINY), env, ep)  # known: fine
