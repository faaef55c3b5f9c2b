"""Shared by the learning tests: train seeds in one vmapped program and read off the final
return of each seed — the mean return of the training episodes completed in the last 10%
of its iterations, the number ``minirl train`` reports as ``final_returns``.

``MINIRL_FIRST_SEED`` (default 0) moves every learning test to other seeds: the thresholds
must hold from any first seed (the presets were tuned on seeds the tests do not use).
"""

import os
import types

import jax
import numpy as np

FIRST_SEED = int(os.environ.get("MINIRL_FIRST_SEED", "0"))


def final_returns(metrics, num_iterations: int) -> np.ndarray:
    last = max(1, num_iterations // 10)
    episodes = np.asarray(metrics["episodes"][:, -last:]).sum(axis=1)
    returns = np.asarray(metrics["episode_return_sum"][:, -last:]).sum(axis=1)
    return returns / np.maximum(episodes, 1)


def train_seeds(
    algo: types.ModuleType, config, env, env_params, seeds: int = 4, first_seed: int | None = None
) -> np.ndarray:
    """Final returns of ``seeds`` seeds trained in one vmapped program."""
    first_seed = FIRST_SEED if first_seed is None else first_seed
    keys = jax.random.split(jax.random.PRNGKey(first_seed), seeds)
    train = jax.jit(jax.vmap(algo.train, in_axes=(0, None, None, None)), static_argnums=2)
    _, metrics = train(keys, config, env, env_params)
    return final_returns(metrics, config.num_iterations)


def train_preset(algo: types.ModuleType, env_id: str, seeds: int = 4):
    """``seeds`` seeds of ``algo``'s preset for ``env_id`` in one vmapped program, from
    ``FIRST_SEED``: (config, state, metrics), leaves ``[seeds, ...]``."""
    from minirl import envs

    env, env_params = envs.make(env_id)
    config = algo.Config(**algo.preset(env_id))
    keys = jax.random.split(jax.random.PRNGKey(FIRST_SEED), seeds)
    train = jax.jit(jax.vmap(algo.train, in_axes=(0, None, None, None)), static_argnums=2)
    state, metrics = train(keys, config, env, env_params)
    return config, state, metrics

