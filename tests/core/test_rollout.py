"""Properties of minirl.core.rollout on gymnax environments: trajectories keep gymnax 1.x
semantics (next_obs is the true next observation, also on truncation), episode statistics
add up, and unknown env ids are rejected by name."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments.classic_control.cartpole import EnvState as CartPoleState
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl import envs
from minirl.core import rollout
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(120)

NUM_ENVS, NUM_STEPS, MAX_STEPS = 4, 40, 10
SEEDS = st.integers(0, 2**31 - 1)
FEW = settings(max_examples=8)


def make_collector(env_id, max_steps):
    env, params = envs.make(env_id, max_steps_in_episode=max_steps)
    policy = rollout.random_policy(env, params)

    @jax.jit
    def run(key):
        reset_key, collect_key = jax.random.split(key)
        carry = rollout.reset(reset_key, env, params, NUM_ENVS)
        return rollout.collect(collect_key, env, params, carry, policy, NUM_STEPS)

    return env, params, run


CARTPOLE = make_collector("CartPole-v1", MAX_STEPS)
PENDULUM = make_collector("Pendulum-v1", 7)


def cartpole_state(obs):
    x, x_dot, theta, theta_dot = obs
    return CartPoleState(x=x, x_dot=x_dot, theta=theta, theta_dot=theta_dot, time=0)


@jax.jit
@functools.partial(jax.vmap, in_axes=(0, 0))
@functools.partial(jax.vmap, in_axes=(0, 0))
def cartpole_physics(obs, action):
    env, params, _ = CARTPOLE
    return env.step_env(jax.random.PRNGKey(0), cartpole_state(obs), action, params)[0]


@jax.jit
@functools.partial(jax.vmap, in_axes=0)
@functools.partial(jax.vmap, in_axes=0)
def cartpole_out_of_bounds(obs):
    env, params, _ = CARTPOLE
    return env.is_terminal(cartpole_state(obs), params)


def same_obs(a, b):
    """Equal up to float32 rounding (XLA may compute the stepped observation and its copy in
    ``final_observation`` in differently fused kernels)."""
    return np.all(np.abs(a - b) <= 1e-6 * (1.0 + np.abs(b)), axis=-1)


def as_numpy(tree):
    return jax.tree.map(np.asarray, tree)


def check_episode_statistics(trajectory, final_carry):
    """episode_return/length at done = sums since the previous done in that env, else 0."""
    done = trajectory.terminated | trajectory.truncated
    running_return = np.zeros(NUM_ENVS)
    running_length = np.zeros(NUM_ENVS, int)
    for t in range(NUM_STEPS):
        running_return += trajectory.reward[t]
        running_length += 1
        np.testing.assert_allclose(
            trajectory.episode_return[t], np.where(done[t], running_return, 0.0), rtol=1e-5
        )
        np.testing.assert_array_equal(
            trajectory.episode_length[t], np.where(done[t], running_length, 0)
        )
        running_return = np.where(done[t], 0.0, running_return)
        running_length = np.where(done[t], 0, running_length)
    # The carry holds the episode in progress.
    np.testing.assert_allclose(final_carry.stats.returns, running_return, rtol=1e-5)
    np.testing.assert_array_equal(final_carry.stats.lengths, running_length)
    metrics = as_numpy(rollout.episode_metrics(trajectory))
    assert metrics["episodes"] == done.sum()
    np.testing.assert_allclose(
        metrics["episode_return_sum"], trajectory.episode_return.sum(), rtol=1e-5
    )
    assert metrics["episode_length_sum"] == trajectory.episode_length.sum()
    return done


@FEW
@given(SEEDS)
def test_cartpole_trajectory_semantics(seed):
    env, params, run = CARTPOLE
    carry, trajectory = as_numpy(run(jax.random.PRNGKey(seed)))
    assert trajectory.obs.shape == trajectory.next_obs.shape == (NUM_STEPS, NUM_ENVS, 4)
    assert trajectory.action.shape == trajectory.reward.shape == (NUM_STEPS, NUM_ENVS)
    assert trajectory.terminated.dtype == trajectory.truncated.dtype == np.bool_
    assert set(np.unique(trajectory.action)) <= {0, 1}
    done = check_episode_statistics(trajectory, carry)

    # next_obs[t] is obs[t+1] within an episode; across an episode end obs[t+1] is the
    # reset observation and next_obs[t] the final one.
    np.testing.assert_array_equal(
        same_obs(trajectory.next_obs[:-1], trajectory.obs[1:]), ~done[:-1]
    )
    assert same_obs(trajectory.next_obs[-1], carry.obs)[~done[-1]].all()

    # next_obs is the physics step from (obs, action) everywhere, truncations included
    # (the CartPole state is its observation) ...
    stepped = cartpole_physics(trajectory.obs, trajectory.action)
    np.testing.assert_allclose(trajectory.next_obs, stepped, rtol=1e-5, atol=1e-6)
    # ... terminated is exactly "the true next state is out of bounds", and truncated
    # exactly "the episode reached max_steps_in_episode".
    np.testing.assert_array_equal(
        trajectory.terminated, cartpole_out_of_bounds(trajectory.next_obs)
    )
    np.testing.assert_array_equal(trajectory.truncated, trajectory.episode_length == MAX_STEPS)
    assert (trajectory.episode_length <= MAX_STEPS).all()
    # A random policy rarely drops the pole within 10 steps: some episodes are cut by the
    # time limit alone (terminated False there), and CartPole pays 1 per step.
    assert (trajectory.truncated & ~trajectory.terminated).any()
    np.testing.assert_array_equal(trajectory.reward, 1.0)


@FEW
@given(SEEDS)
def test_pendulum_episode_returns_add_up(seed):
    # Pendulum never terminates and its rewards vary: every episode is a truncation.
    _, _, run = PENDULUM
    carry, trajectory = as_numpy(run(jax.random.PRNGKey(seed)))
    assert trajectory.action.shape == (NUM_STEPS, NUM_ENVS, 1)
    assert not trajectory.terminated.any()
    done = check_episode_statistics(trajectory, carry)
    every_seventh = np.arange(1, NUM_STEPS + 1) % 7 == 0
    np.testing.assert_array_equal(done, np.broadcast_to(every_seventh[:, None], done.shape))
    np.testing.assert_array_equal(
        same_obs(trajectory.next_obs[:-1], trajectory.obs[1:]), ~done[:-1]
    )


def test_same_key_same_bits_and_jit_equals_no_jit():
    env, params, run = CARTPOLE
    key = jax.random.PRNGKey(3)
    a = jax.tree.leaves(run(key))
    b = jax.tree.leaves(run(key))
    reset_key, collect_key = jax.random.split(key)
    carry = rollout.reset(reset_key, env, params, NUM_ENVS)
    policy = rollout.random_policy(env, params)
    c = jax.tree.leaves(rollout.collect(collect_key, env, params, carry, policy, NUM_STEPS))
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_allclose(x, z, rtol=1e-6, atol=1e-6)


def test_episode_stats_update():
    stats = rollout.EpisodeStats.zeros(3)
    stats, ret, length = stats.update(
        jnp.asarray([1.0, 2.0, 3.0]), jnp.asarray([False, True, False])
    )
    np.testing.assert_array_equal(ret, [0.0, 2.0, 0.0])
    np.testing.assert_array_equal(length, [0, 1, 0])
    stats, ret, length = stats.update(
        jnp.asarray([0.5, 1.0, 1.0]), jnp.asarray([True, True, False])
    )
    np.testing.assert_array_equal(ret, [1.5, 1.0, 0.0])
    np.testing.assert_array_equal(length, [2, 1, 0])
    np.testing.assert_array_equal(stats.returns, [0.0, 0.0, 4.0])
    np.testing.assert_array_equal(stats.lengths, [0, 0, 2])


def test_env_queries():
    cartpole, pendulum = envs.make("CartPole-v1"), envs.make("Pendulum-v1", max_torque=1.5)
    assert rollout.action_kind(*cartpole) == "discrete"
    assert rollout.action_kind(*pendulum) == "continuous"
    assert rollout.num_actions(*cartpole) == 2
    assert rollout.observation_shape(*cartpole) == (4,)
    assert rollout.action_shape(*pendulum) == (1,)
    low, high = rollout.action_bounds(*pendulum)
    np.testing.assert_array_equal(low, [-1.5])
    np.testing.assert_array_equal(high, [1.5])


def test_an_object_without_the_interface_is_refused():
    with pytest.raises(ConfigError, match="lacks step"):
        rollout.check_env(type("NotAnEnv", (), {"reset": lambda *a: None,
                                               "observation_space": lambda *a: None,
                                               "action_space": lambda *a: None})())
