"""Sweep learning rate × seeds for DQN in a single compiled program with ``jax.vmap``.

Numeric hyperparameters are pytree leaves of the config, so a stacked config sweeps
without recompiling per value.

    python examples/sweep_hyperparameters.py
"""

import dataclasses
import itertools

import jax
import numpy as np

from minirl import envs
from minirl.algos import dqn
from minirl.core.config import stack

env, env_params = envs.make("CartPole-v1")
learning_rates = [3e-4, 1e-3]
seeds = 3
base = dqn.Config(**{**dqn.preset("CartPole-v1"), "total_steps": 30_000})
configs = [
    dataclasses.replace(base, learning_rate=lr)
    for lr, _ in itertools.product(learning_rates, range(seeds))
]
keys = jax.random.split(jax.random.PRNGKey(0), len(configs))

train = jax.jit(jax.vmap(dqn.train, in_axes=(0, 0, None, None)), static_argnums=2)
_, metrics = train(keys, stack(configs), env, env_params)

last = base.num_iterations // 10
episodes = np.asarray(metrics["episodes"][:, -last:]).sum(axis=1)
final = np.asarray(metrics["episode_return_sum"][:, -last:]).sum(axis=1) / np.maximum(episodes, 1)
for i, lr in enumerate(learning_rates):
    per_seed = final[i * seeds : (i + 1) * seeds]
    print(
        f"learning_rate={lr:g}: final returns {np.round(per_seed, 1)}, "
        f"median {np.median(per_seed):.1f}"
    )
