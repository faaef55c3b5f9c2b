"""A PPO sweep over every device, then one PPO agent trained data-parallel.

On a CPU-only machine this script splits the CPU into 2 JAX devices (set ``XLA_FLAGS``
yourself to choose another count; on a GPU/TPU host the real devices are used):

    python examples/sweep_devices.py [--steps 50000]

1. ``parallel.sweep``: 3 learning rates × 4 seeds as one ``jax.vmap``-ped program, its
   run axis split over the devices with ``jax.jit`` + ``NamedSharding`` (12 runs on 2
   devices: 6 each; a count that does not divide is padded and the padding dropped).
2. ``parallel.data_parallel``: one agent whose 16 environments are split over the
   devices with ``jax.shard_map``; PPO averages its gradients with ``pmean``.

The same calls run under several hosts after ``parallel.initialize_distributed(...)``
(see ``minirl sweep --coordinator``).
"""

import argparse
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402  (XLA_FLAGS must be set first)
import numpy as np  # noqa: E402

from minirl import parallel  # noqa: E402
from minirl.algos import ppo  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=50_000, help="env steps per run")
steps = parser.parse_args().steps
print(f"{jax.device_count()} devices: {jax.devices()}")

# 1. A sweep: 3 learning rates × 4 seeds, one program.
base = ppo.Config(**{**ppo.preset("CartPole-v1"), "env_id": "CartPole-v1", "total_steps": steps})
configs = parallel.configs_for(base, parallel.grid(lr=[3e-4, 1e-3, 2.5e-3]))
keys, batched, rows = parallel.expand(configs, seeds=4)
_, metrics = parallel.sweep(ppo.train, keys, batched)  # leaves [12, iterations]
last = max(1, base.num_iterations // 10)
episodes = np.asarray(metrics["episodes"][:, -last:]).sum(axis=1)
final = np.asarray(metrics["episode_return_sum"][:, -last:]).sum(axis=1) / np.maximum(episodes, 1)
for c, config in enumerate(configs):
    print(f"learning_rate={config.learning_rate:g}: final returns {np.round(final[rows[c]], 1)}, "
          f"median {np.median(final[rows[c]]):.1f}")

# 2. One agent, data-parallel: 16 environments split over the devices.
config = ppo.Config(**{**ppo.preset("CartPole-v1"), "env_id": "CartPole-v1", "num_envs": 16,
                       "total_steps": steps})
mesh = parallel.make_mesh(axis=parallel.ENVS)
state = ppo.init(jax.random.PRNGKey(0), config)
run = parallel.data_parallel(ppo.step, mesh, state, split=lambda s: s.env,
                             length=config.num_iterations)
state, metrics = run(state, config)
episodes = np.asarray(metrics["episodes"][-last:]).sum()
final_return = np.asarray(metrics["episode_return_sum"][-last:]).sum() / max(episodes, 1)
print(f"data-parallel PPO, {config.num_envs} envs over {mesh.devices.size} devices: "
      f"final return {final_return:.1f}")
