"""Train double DQN on CartPole-v1 for 4 seeds in one compiled program, then play greedily.

python examples/dqn_cartpole.py
"""

import time

import jax
import numpy as np

from minirl.algos import dqn
from minirl.core import rollout

config = dqn.Config(env_id="CartPole-v1", total_steps=100_000, **dqn.preset("CartPole-v1"))
keys = jax.random.split(jax.random.PRNGKey(0), 4)

start = time.perf_counter()
states, metrics = jax.jit(jax.vmap(dqn.train, in_axes=(0, None)))(keys, config)
jax.block_until_ready(metrics)
print(f"4 seeds × {config.total_steps:,} env steps in {time.perf_counter() - start:.1f}s")

# Metrics are stacked per iteration: pool the episodes of the last 10% of the run.
last = config.num_iterations // 10
episodes = np.asarray(metrics["episodes"][:, -last:]).sum(axis=1)
returns = np.asarray(metrics["episode_return_sum"][:, -last:]).sum(axis=1)
print("final training return per seed:", np.round(returns / np.maximum(episodes, 1), 1))

# Greedy play with the first seed's network.
env, env_params = rollout.make_env(config.env_id)
params = jax.tree.map(lambda x: x[0], states.params)
obs, env_state = env.reset(jax.random.PRNGKey(1), env_params)
total, key = 0.0, jax.random.PRNGKey(2)
for _ in range(500):
    key, act_key, step_key = jax.random.split(key, 3)
    action = dqn.act(params, obs, act_key, config, deterministic=True)
    obs, env_state, reward, terminated, truncated, _ = env.step(
        step_key, env_state, action, env_params
    )
    total += float(reward)
    if terminated or truncated:
        break
print(f"greedy episode return: {total:.0f}")
