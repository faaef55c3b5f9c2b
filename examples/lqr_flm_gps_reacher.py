"""LQR-FLM and guided policy search on gymnax's Reacher (2 joints, a goal per episode, 100
steps, reward exp(−|tip − goal|²) per step): 2 seeds each in one compiled program.

    python examples/lqr_flm_gps_reacher.py      # about 2 minutes on 2 CPU cores

LQR-FLM improves one time-varying linear-Gaussian controller per condition (a fixed reset
key) from its own rollouts, and reports iLQR on the true model from the same conditions
beside it. GPS trains one network from such controllers; from the conditions it matches
them, from random starts (goals it has not seen) it does not generalise with 4 conditions.
"""

import time

import jax
import numpy as np

from minirl import envs
from minirl.model_based import gps, lqr_flm

env, env_params = envs.make("Reacher-misc")
keys = jax.random.split(jax.random.PRNGKey(0), 2)


def run(module):
    config = module.Config(**module.preset("Reacher-misc"))
    train = jax.jit(jax.vmap(module.train, in_axes=(0, None, None, None)), static_argnums=2)
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(train(keys, config, env, env_params))
    return config, state, metrics, time.perf_counter() - start


config, state, metrics, seconds = run(lqr_flm)
returns = np.asarray(metrics["episode_return_sum"] / metrics["episodes"])
print(f"lqr_flm: the controllers' return from their conditions every 4 iterations "
      f"({config.steps_per_iteration:,} real steps each), per seed\n"
      f"{np.round(returns[:, ::4], 1)}  [{seconds:.0f} s]")
print(f"  iLQR on the true model from the same conditions: "
      f"{np.round(np.asarray(state.reference).mean(axis=-1), 1)}")

config, state, metrics, seconds = run(gps)
last = slice(-2, None)
for name, label in (("local_return", "local controllers, from the conditions"),
                    ("condition_return", "global network, from the conditions"),
                    ("episode_return_sum", "global network, from random starts")):
    values = np.asarray(metrics[name])
    if name == "episode_return_sum":
        values = values / np.asarray(metrics["episodes"])
    print(f"gps: {label}: {np.round(values[:, last].mean(axis=1), 1)}")
print(f"  [{seconds:.0f} s]")

# The global policy acts on any observation: one greedy action.
obs, _ = env.reset(jax.random.PRNGKey(5), env_params)
params = jax.tree.map(lambda x: x[0], state.learner.params)
print("an action of seed 0's network:",
      np.round(gps.act(params, obs, jax.random.PRNGKey(6), config, deterministic=True), 3))
