"""Train PPO on CartPole-v1 for 4 seeds in one compiled program, sweep the clip range in a
second one, then play greedily.

    python examples/ppo_cartpole.py
"""

import dataclasses
import time

import jax
import numpy as np

from minirl import envs
from minirl.algos import ppo
from minirl.core.config import stack

env, env_params = envs.make("CartPole-v1")
config = ppo.Config(**{**ppo.preset("CartPole-v1"), "total_steps": 200_000})
keys = jax.random.split(jax.random.PRNGKey(0), 4)


def final_returns(metrics) -> np.ndarray:
    """Mean return of the training episodes completed in the last 10% of each run."""
    last = max(1, config.num_iterations // 10)
    episodes = np.asarray(metrics["episodes"][..., -last:]).sum(axis=-1)
    returns = np.asarray(metrics["episode_return_sum"][..., -last:]).sum(axis=-1)
    return returns / np.maximum(episodes, 1)


start = time.perf_counter()
seeds = jax.jit(jax.vmap(ppo.train, in_axes=(0, None, None, None)), static_argnums=2)
states, metrics = seeds(keys, config, env, env_params)
jax.block_until_ready(metrics)
print(f"4 seeds × {config.total_steps:,} env steps in {time.perf_counter() - start:.1f}s")
print("final training return per seed:", np.round(final_returns(metrics), 1))

# A hyperparameter sweep is the same program with a batched config: clip range ε per run.
epsilons = (0.05, 0.1, 0.2, 0.3)
configs = stack([dataclasses.replace(config, clip_epsilon=eps) for eps in epsilons])
sweep = jax.jit(jax.vmap(ppo.train, in_axes=(0, 0, None, None)), static_argnums=2)
_, swept = sweep(keys, configs, env, env_params)
for eps, value in zip(epsilons, final_returns(swept)):
    print(f"clip_epsilon={eps}: final training return {value:.1f}")

# Greedy play (the mode of π) with the first seed's policy.
params = jax.tree.map(lambda x: x[0], states.learner.params)
obs, env_state = env.reset(jax.random.PRNGKey(1), env_params)
total, key = 0.0, jax.random.PRNGKey(2)
act, step = jax.jit(ppo.act, static_argnums=4), jax.jit(env.step)
for _ in range(500):
    key, act_key, step_key = jax.random.split(key, 3)
    action = act(params, obs, act_key, config, True)
    obs, env_state, reward, terminated, truncated, _ = step(step_key, env_state, action,
                                                            env_params)
    total += float(reward)
    if terminated or truncated:
        break
print(f"greedy episode return: {total:.0f}")
