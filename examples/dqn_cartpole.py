"""Train double DQN on CartPole-v1 for 4 seeds in one compiled program, then play greedily.

    python examples/dqn_cartpole.py
"""

import time

import jax
import numpy as np

from minirl import envs
from minirl.algos import dqn

env, env_params = envs.make("CartPole-v1")
config = dqn.Config(**{**dqn.preset("CartPole-v1"), "total_steps": 100_000})
keys = jax.random.split(jax.random.PRNGKey(0), 4)

# The env is static (a Python object); the config and env_params are traced arguments.
train = jax.jit(jax.vmap(dqn.train, in_axes=(0, None, None, None)), static_argnums=2)
start = time.perf_counter()
states, metrics = train(keys, config, env, env_params)
jax.block_until_ready(metrics)
print(f"4 seeds × {config.total_steps:,} env steps in {time.perf_counter() - start:.1f}s")

# Metrics are stacked per iteration: pool the episodes of the last 10% of the run.
last = config.num_iterations // 10
episodes = np.asarray(metrics["episodes"][:, -last:]).sum(axis=1)
returns = np.asarray(metrics["episode_return_sum"][:, -last:]).sum(axis=1)
print("final training return per seed:", np.round(returns / np.maximum(episodes, 1), 1))

# Greedy play with the first seed's network: `act` needs only the parameters.
params = jax.tree.map(lambda x: x[0], states.learner.params)
obs, env_state = env.reset(jax.random.PRNGKey(1), env_params)
total, key = 0.0, jax.random.PRNGKey(2)
act, step = jax.jit(dqn.act, static_argnums=4), jax.jit(env.step)
for _ in range(500):
    key, act_key, step_key = jax.random.split(key, 3)
    action = act(params, obs, act_key, config, True)
    obs, env_state, reward, terminated, truncated, _ = step(step_key, env_state, action,
                                                            env_params)
    total += float(reward)
    if terminated or truncated:
        break
print(f"greedy episode return: {total:.0f}")
