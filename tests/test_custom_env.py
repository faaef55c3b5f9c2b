"""A user's own environment: a duck-typed class (not a gymnax subclass) with gymnax 1.x's
pure interface, trained by DQN and PPO to its optimal greedy return, and swept over its
parameters with ``vmap``."""

import types

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirl import envs, runner
from minirl.algos import dqn, ppo

pytestmark = pytest.mark.timeout(600)


class CorridorParams(eqx.Module):
    length: jax.Array = 6  # cells 0 … length−1; the goal is the last one
    max_steps: jax.Array = 30  # time limit (truncation)
    slip: jax.Array = 0.0  # probability that the move is reversed


class CorridorState(eqx.Module):
    position: jax.Array
    time: jax.Array


class Corridor:
    """Walk from cell 0 to the last cell; −1 per step, terminated at the goal. Optimal
    greedy return without slip: −(length − 1)."""

    name = "Corridor"

    def _obs(self, state, params):
        return jnp.stack([state.position / (params.length - 1), jnp.ones(())]).astype(jnp.float32)

    def reset(self, key, params):
        state = CorridorState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        return self._obs(state, params), state

    def step(self, key, state, action, params):
        move = jnp.where(action == 1, 1, -1)
        move = jnp.where(jax.random.uniform(key) < params.slip, -move, move)
        position = jnp.clip(state.position + move, 0, params.length - 1)
        next_state = CorridorState(position, state.time + 1)
        terminated = position == params.length - 1
        truncated = (next_state.time >= params.max_steps) & ~terminated
        final_obs = self._obs(next_state, params)
        reset_obs, reset_state = self.reset(key, params)
        done = terminated | truncated
        state = jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_state, next_state)
        obs = jnp.where(done, reset_obs, final_obs)
        return obs, state, jnp.float32(-1.0), terminated, truncated, {
            "final_observation": final_obs
        }

    def observation_space(self, params):
        return types.SimpleNamespace(shape=(2,))

    def action_space(self, params):
        return types.SimpleNamespace(n=2)


ENV = Corridor()
PARAMS = CorridorParams()


def greedy_returns(algo, config, params, env_params, episodes=4):
    batched = jax.tree.map(lambda x: x[None], params)
    return runner.evaluate(algo, config, ENV, env_params, batched, episodes, max_steps=30)[0]


@pytest.mark.parametrize("algo, config", [
    (dqn, dqn.Config(total_steps=3000, learning_starts=200, buffer_size=2000, hidden=(32,),
                     gamma=0.9, exploration_fraction=0.3, target_update_period=100)),
    (ppo, ppo.Config(total_steps=8192, num_envs=8, rollout_steps=32, hidden=(32,),
                     learning_rate=3e-3)),
], ids=["dqn", "ppo"])
def test_a_duck_typed_env_is_solved(algo, config):
    state, metrics = jax.jit(algo.train, static_argnums=2)(jax.random.PRNGKey(0), config, ENV,
                                                            PARAMS)
    returns = greedy_returns(algo, config, state.learner.params, PARAMS)
    np.testing.assert_array_equal(returns, -(PARAMS.length - 1))  # the optimum, every episode


def test_vmap_over_the_env_parameters_equals_separate_runs():
    config = ppo.Config(total_steps=2048, num_envs=4, rollout_steps=32, hidden=(16,))
    params = [CorridorParams(length=4), CorridorParams(length=8, slip=0.1)]
    stacked = envs.stack_params(params)
    batched = jax.jit(jax.vmap(ppo.train, in_axes=(None, None, None, 0)), static_argnums=2)
    _, metrics = batched(jax.random.PRNGKey(1), config, ENV, stacked)
    single = jax.jit(ppo.train, static_argnums=2)
    for i, p in enumerate(params):
        _, m = single(jax.random.PRNGKey(1), config, ENV, p)
        np.testing.assert_array_equal(m["episodes"][:4], metrics["episodes"][i][:4])
        np.testing.assert_allclose(m["episode_return_sum"][:4],
                                   metrics["episode_return_sum"][i][:4], rtol=1e-6)
        np.testing.assert_allclose(m["value_loss"][:4], metrics["value_loss"][i][:4],
                                   rtol=1e-4, atol=1e-5)
    # The two corridors really differ: the longer one takes longer episodes.
    mean_length = metrics["episode_length_sum"].sum(1) / metrics["episodes"].sum(1)
    assert mean_length[1] > mean_length[0]


def test_a_duck_typed_env_can_be_swept_through_minirl_sweep():
    from minirl import sweep

    config = dqn.Config(total_steps=600, learning_starts=100, buffer_size=400, hidden=(8,),
                        batch_size=16)
    runs = sweep.expand(config, ENV, PARAMS, [{"lr": 1e-3}, {"lr": 3e-4}], seeds=1)
    rows, (_, metrics) = sweep.run(dqn.train, runs, ENV, runs_per_program=2)
    assert rows.tolist() == [0, 1] and metrics["loss"].shape[0] == 2
