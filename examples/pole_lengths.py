"""One PPO agent per pole length, all trained in one compiled program, and their curves.

The environment's parameters are a pytree, so ``jax.vmap`` over stacked parameters trains
one agent per CartPole pole length (×2 seeds) in a single program. ``envs.make`` keeps
gymnax's derived fields (pole mass × length) consistent with the length.

    python examples/pole_lengths.py          # writes pole_lengths.png
"""

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minirl import envs  # noqa: E402
from minirl.algos import ppo  # noqa: E402

lengths = [0.25, 0.5, 1.0, 2.0]  # half-lengths in metres (gymnax's default is 0.5)
seeds = 2
env, _ = envs.make("CartPole-v1")
params = envs.stack_params(
    envs.make("CartPole-v1", length=length)[1] for length in lengths for _ in range(seeds)
)
keys = jax.random.split(jax.random.PRNGKey(0), seeds)
keys = jax.numpy.tile(keys, (len(lengths), 1))  # the same seeds for every length
config = ppo.Config(**{**ppo.preset("CartPole-v1"), "total_steps": 100_000})

# One program: in_axes says the key and the env parameters vary per run, the config not.
train = jax.jit(jax.vmap(ppo.train, in_axes=(0, None, None, 0)), static_argnums=2)
_, metrics = train(keys, config, env, params)

steps = np.asarray(metrics["env_steps"][0])
episodes = np.asarray(metrics["episodes"]).reshape(len(lengths), seeds, -1)
returns = np.asarray(metrics["episode_return_sum"]).reshape(len(lengths), seeds, -1)
window = 5  # iterations pooled per point of the curve
fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
for i, length in enumerate(lengths):
    kernel = np.ones(window)
    pooled = [np.convolve(returns[i, s], kernel, "valid") /
              np.maximum(np.convolve(episodes[i, s], kernel, "valid"), 1) for s in range(seeds)]
    ax.plot(steps[window - 1:], np.mean(pooled, axis=0), label=f"pole half-length {length} m")
    final = [p[-1] for p in pooled]
    print(f"length {length}: final returns per seed {np.round(final, 1)}")
ax.set_xlabel("environment steps")
ax.set_ylabel("episode return (mean of 2 seeds)")
ax.set_title("PPO on CartPole-v1, one agent per pole length, one program")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig("pole_lengths.png")
print("wrote pole_lengths.png")
