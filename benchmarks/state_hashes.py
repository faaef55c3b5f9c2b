"""Hashes of the final states and metrics of small runs of every learner.

A refactor that must not move any learning result (renamed fields, code moved into
``minirl/core``, a new run path) is checked by running this before and after it and
comparing the printed hashes: the leaves are hashed in pytree order, so renaming a field
changes nothing, while one changed bit anywhere in the parameters, the optimiser state, the
buffer or the metrics changes the hash.

    python benchmarks/state_hashes.py > before.txt
    ... change ...
    python benchmarks/state_hashes.py > after.txt && diff before.txt after.txt
"""

import hashlib
import importlib

import jax
import numpy as np

from minirl import envs

RUNS = [
    # (module, env id, config overrides): a few iterations past each learner's warm-up
    ("minirl.algos.dqn", "CartPole-v1",
     dict(total_steps=1_200, learning_starts=500, buffer_size=1_000, hidden=(16,), n_step=3)),
    ("minirl.algos.ppo", "CartPole-v1",
     dict(total_steps=2_048, num_envs=4, rollout_steps=64, hidden=(16,))),
    ("minirl.algos.ppo", "Pendulum-v1",
     dict(total_steps=2_048, num_envs=4, rollout_steps=64, hidden=(16,))),
    ("minirl.algos.trpo", "CartPole-v1",
     dict(total_steps=2_048, num_envs=4, rollout_steps=64, hidden=(16,))),
    ("minirl.algos.sac", "Pendulum-v1",
     dict(total_steps=800, learning_starts=500, buffer_size=1_000, hidden=(16,))),
    ("minirl.algos.sac", "CartPole-v1",
     dict(total_steps=800, learning_starts=500, buffer_size=1_000, hidden=(16,))),
    ("minirl.algos.td3", "Pendulum-v1",
     dict(total_steps=800, learning_starts=500, buffer_size=1_000, hidden=(16,))),
    ("minirl.algos.naf", "Pendulum-v1",
     dict(total_steps=800, learning_starts=500, buffer_size=1_000, hidden=(16,))),
    ("minirl.algos.qt_opt", "Pendulum-v1",
     dict(total_steps=800, learning_starts=500, buffer_size=1_000, hidden=(16,))),
    ("minirl.algos.soft_q", "CartPole-v1",
     dict(total_steps=800, learning_starts=500, buffer_size=1_000, hidden=(16,), n_step=3)),
    ("minirl.model_based.pets", "Pendulum-v1",
     dict(total_steps=400, refit_every=200, random_steps=200, hidden=(16,), horizon=5,
          num_samples=16, num_elites=4, iterations=2, particles=5, fit_updates=10,
          batch_size=32, buffer_size=1_000)),
    ("minirl.model_based.planet", "Pendulum-v1-pixels",
     dict(total_steps=800, rollout_steps=50, learning_starts=400, gradient_steps=2,
          batch_size=4, sequence_length=8, buffer_size=1_000, deterministic_size=16,
          stochastic_size=4, hidden=16, embedding_size=16, horizon=4, num_samples=8,
          num_elites=2, cem_iterations=2)),
]


def digest(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype,
                                                                 jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if hasattr(leaf, "dtype"):
            h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    for module_name, env_id, overrides in RUNS:
        algo = importlib.import_module(module_name)
        env, env_params = envs.make(env_id)
        config = algo.Config(**overrides)
        train = jax.jit(algo.train, static_argnums=2)
        state, metrics = train(jax.random.PRNGKey(3), config, env, env_params)
        name = module_name.rsplit(".", 1)[-1]
        print(f"{name:<8} {env_id:<20} state {digest(state)}  metrics "
              f"{digest(dict(sorted(metrics.items())))}", flush=True)


if __name__ == "__main__":
    main()
