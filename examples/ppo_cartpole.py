"""Train PPO on CartPole-v1 for 4 seeds in one compiled program, sweep the clip range in a
second one, then play greedily.

python examples/ppo_cartpole.py
"""

import time

import jax
import numpy as np

from minirl.algos import ppo
from minirl.core import rollout
from minirl.core.config import stack

config = ppo.Config(env_id="CartPole-v1", total_steps=200_000, **ppo.preset("CartPole-v1"))
keys = jax.random.split(jax.random.PRNGKey(0), 4)


def final_returns(metrics) -> np.ndarray:
    """Mean return of the training episodes completed in the last 10% of each run."""
    last = max(1, config.num_iterations // 10)
    episodes = np.asarray(metrics["episodes"][..., -last:]).sum(axis=-1)
    returns = np.asarray(metrics["episode_return_sum"][..., -last:]).sum(axis=-1)
    return returns / np.maximum(episodes, 1)


start = time.perf_counter()
states, metrics = jax.jit(jax.vmap(ppo.train, in_axes=(0, None)))(keys, config)
jax.block_until_ready(metrics)
print(f"4 seeds × {config.total_steps:,} env steps in {time.perf_counter() - start:.1f}s")
print("final training return per seed:", np.round(final_returns(metrics), 1))

# A hyperparameter sweep is the same program with a batched config: clip range ε per run.
sweep = [ppo.Config(**{**ppo.preset("CartPole-v1"), "total_steps": 200_000, "clip_epsilon": eps})
         for eps in
         (0.05, 0.1, 0.2, 0.3)]
_, swept = jax.jit(jax.vmap(ppo.train))(keys, stack(sweep))
for eps, value in zip((0.05, 0.1, 0.2, 0.3), final_returns(swept)):
    print(f"clip_epsilon={eps}: final training return {value:.1f}")

# Greedy play (the mode of π) with the first seed's policy.
env, env_params = rollout.make_env(config.env_id)
params = jax.tree.map(lambda x: x[0], states.params)
obs, env_state = env.reset(jax.random.PRNGKey(1), env_params)
total, key = 0.0, jax.random.PRNGKey(2)
for _ in range(500):
    key, act_key, step_key = jax.random.split(key, 3)
    action = ppo.act(params, obs, act_key, config, deterministic=True)
    obs, env_state, reward, terminated, truncated, _ = env.step(
        step_key, env_state, action, env_params
    )
    total += float(reward)
    if terminated or truncated:
        break
print(f"greedy episode return: {total:.0f}")
