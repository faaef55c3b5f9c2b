"""A PPO sweep spread over every device, then one PPO agent trained data-parallel.

On a CPU-only machine this script splits the CPU into 2 JAX devices (set ``XLA_FLAGS``
yourself to choose another count; on a GPU/TPU host the real devices are used):

    python examples/sweep_devices.py [--steps 50000]

1. ``sweep.run``: 3 learning rates × 4 seeds = 12 runs, cut into programs of
   ``runs_per_program`` runs that are dispatched to the devices. A run's result depends only
   on that number, not on how many devices there are: rerun with one device and compare.
2. ``parallel.data_parallel``: one agent whose 16 environments are split over the devices
   with ``jax.shard_map``; PPO averages its gradients with ``pmean``.

Several hosts run the same calls after ``minirl.distributed.initialize(...)`` (see
``minirl sweep --coordinator``).
"""

import argparse
import dataclasses
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402  (XLA_FLAGS must be set first)
import numpy as np  # noqa: E402

from minirl import envs, parallel, sweep  # noqa: E402
from minirl.algos import ppo  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=50_000, help="env steps per run")
steps = parser.parse_args().steps
print(f"{jax.device_count()} devices: {jax.devices()}")
env, env_params = envs.make("CartPole-v1")

# 1. A sweep: 3 learning rates × 4 seeds in programs of 6 runs, one per device.
base = ppo.Config(**{**ppo.preset("CartPole-v1"), "total_steps": steps})
runs = sweep.expand(base, env, env_params, sweep.grid(lr=[3e-4, 1e-3, 2.5e-3]), seeds=4)
rows, (_, metrics) = sweep.run(ppo.train, runs, env, runs_per_program=6)
last = max(1, base.num_iterations // 10)
episodes = np.asarray(metrics["episodes"][:, -last:]).sum(axis=1)
final = np.asarray(metrics["episode_return_sum"][:, -last:]).sum(axis=1) / np.maximum(episodes, 1)
for c, lr in enumerate([3e-4, 1e-3, 2.5e-3]):
    print(f"learning_rate={lr:g}: final returns {np.round(final[runs.rows[c]], 1)}, "
          f"median {np.median(final[runs.rows[c]]):.1f}")

# 2. One agent, data-parallel: 16 environments split over the devices.
config = dataclasses.replace(base, num_envs=16)
mesh = parallel.make_mesh()
state = ppo.init(jax.random.PRNGKey(0), config, env, env_params)
run = parallel.data_parallel(ppo.step, mesh, state, lambda s: s.env, env,
                          length=config.num_iterations)
state, metrics = run(state, config, env_params)
episodes = np.asarray(metrics["episodes"][-last:]).sum()
final_return = np.asarray(metrics["episode_return_sum"][-last:]).sum() / max(episodes, 1)
print(f"data-parallel PPO, {config.num_envs} envs over {mesh.devices.size} devices: "
      f"final return {final_return:.1f}")
