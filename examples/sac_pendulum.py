"""SAC and TD3 on Pendulum-v1, 4 seeds each in one compiled program; then a sweep over SAC's
Polyak rate τ in one program (numeric hyperparameters are pytree leaves); then a greedy
episode with the best SAC seed.

    python examples/sac_pendulum.py          # about 7 minutes on 2 CPU cores
"""

import dataclasses
import time

import jax
import numpy as np

from minirl import envs
from minirl.algos import sac, td3
from minirl.core.config import stack

env, env_params = envs.make("Pendulum-v1")
keys = jax.random.split(jax.random.PRNGKey(0), 4)


def final_returns(metrics, num_iterations: int) -> np.ndarray:
    """Mean return of the training episodes in the last 10% of each run."""
    last = max(1, num_iterations // 10)
    episodes = np.asarray(metrics["episodes"][..., -last:]).sum(axis=-1)
    returns = np.asarray(metrics["episode_return_sum"][..., -last:]).sum(axis=-1)
    return returns / np.maximum(episodes, 1)


# The preset: 20k env steps (100 episodes), one update per env step.
results = {}
for algo in (sac, td3):
    config = algo.Config(**algo.preset("Pendulum-v1"))
    train = jax.jit(jax.vmap(algo.train, in_axes=(0, None, None, None)), static_argnums=2)
    start = time.perf_counter()
    states, metrics = train(keys, config, env, env_params)
    finals = final_returns(metrics, config.num_iterations)
    print(f"{algo.__name__.split('.')[-1]}: final returns {np.round(finals, 1)} "
          f"({time.perf_counter() - start:.0f}s)")
    results[algo] = (config, states, finals)

# τ × seeds in one program: a stacked config is vmapped like the keys.
config = results[sac][0]
taus = (0.005, 0.02)
configs = stack([dataclasses.replace(config, tau=tau) for tau in taus for _ in range(2)])
sweep = jax.jit(jax.vmap(sac.train, in_axes=(0, 0, None, None)), static_argnums=2)
_, metrics = sweep(jax.random.split(jax.random.PRNGKey(1), 4), configs, env, env_params)
finals = final_returns(metrics, config.num_iterations).reshape(len(taus), 2)
for tau, row in zip(taus, finals):
    print(f"SAC tau={tau}: final returns {np.round(row, 1)}")

# Greedy play: the mean action of the best seed's policy; `act` needs only the parameters
# (the action box is part of them).
config, states, finals = results[sac]
params = jax.tree.map(lambda x: x[int(np.argmax(finals))], states.learner.params)
obs, env_state = env.reset(jax.random.PRNGKey(2), env_params)
act, step = jax.jit(sac.act, static_argnums=4), jax.jit(env.step)
total, key = 0.0, jax.random.PRNGKey(3)
for _ in range(200):
    key, act_key, step_key = jax.random.split(key, 3)
    action = act(params, obs, act_key, config, True)
    obs, env_state, reward, terminated, truncated, _ = step(step_key, env_state, action,
                                                            env_params)
    total += float(reward)
    if terminated or truncated:
        break
print(f"greedy episode return: {total:.1f}")
