"""Model-based RL on Pendulum-v1 with 5,000 real env steps (25 episodes): PETS (a
probabilistic ensemble, trajectory sampling, CEM) against the plain MBRL loop (one
deterministic network), 4 seeds each in one compiled program, then an MPC episode planned
through seed 0's learned model.

    python examples/pets_pendulum.py      # about 2.5 minutes on 2 CPU cores

SAC needs about 20,000 steps for the same returns (benchmarks/bench_model_based.py).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from minirl import envs
from minirl.model_based import pets

env, env_params = envs.make("Pendulum-v1")
keys = jax.random.split(jax.random.PRNGKey(0), 4)
train = jax.jit(jax.vmap(pets.train, in_axes=(0, None, None, None)), static_argnums=2)

variants = {
    "PETS (5 probabilistic members, TS∞)": pets.Config(**pets.preset("Pendulum-v1")),
    "plain (1 deterministic network)": pets.Config(
        **{**pets.preset("Pendulum-v1"), "model": "deterministic", "ensemble_size": 1,
           "particles": 1, "propagation": "mean"}),
}
states = {}
for name, config in variants.items():
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(train(keys, config, env, env_params))
    states[name] = (state, config)
    # one iteration = one episode of 200 steps here: the returns of the last 2 episodes
    returns = np.asarray(metrics["episode_return_sum"] / np.maximum(metrics["episodes"], 1))
    print(f"{name}: return of the last two episodes per seed "
          f"{np.round(returns[:, -2:].mean(axis=1), 1)}, first episode (random actions) "
          f"{np.round(returns[:, 0], 1)}  [{time.perf_counter() - start:.0f} s]")

# One episode of MPC through seed 0's learned ensemble: ``act`` plans from the observation
# alone (no warm start), 200 plans.
state, config = states["PETS (5 probabilistic members, TS∞)"]
params = jax.tree.map(lambda x: x[0], state.learner.params)


@jax.jit
def episode(key):
    obs, env_state = env.reset(key, env_params)

    def one(carry, key):
        obs, env_state = carry
        act_key, step_key = jax.random.split(key)
        action = pets.act(params, obs, act_key, config)
        obs, env_state, reward, _, _, _ = env.step(step_key, env_state, action, env_params)
        return (obs, env_state), reward

    _, rewards = jax.lax.scan(one, (obs, env_state), jax.random.split(key, 200))
    return jnp.sum(rewards)


total = float(episode(jax.random.PRNGKey(7)))
print(f"an MPC episode through the learned model: return {total:.1f}")
