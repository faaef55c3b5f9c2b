"""Shared by the learning tests: train seeds in one vmapped program and read off the final
return of each seed — the mean return of the training episodes completed in the last 10%
of its iterations, the number ``minirl train`` reports as ``final_returns``."""

import types

import jax
import numpy as np


def final_returns(metrics, num_iterations: int) -> np.ndarray:
    last = max(1, num_iterations // 10)
    episodes = np.asarray(metrics["episodes"][:, -last:]).sum(axis=1)
    returns = np.asarray(metrics["episode_return_sum"][:, -last:]).sum(axis=1)
    return returns / np.maximum(episodes, 1)


def train_seeds(algo: types.ModuleType, config, seeds: int = 4, first_seed: int = 0):
    keys = jax.random.split(jax.random.PRNGKey(first_seed), seeds)
    _, metrics = jax.jit(jax.vmap(algo.train, in_axes=(0, None)))(keys, config)
    return final_returns(metrics, config.num_iterations)
