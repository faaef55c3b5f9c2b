"""Backprop through time on Pendulum-v1: a deterministic policy trained by gradient ascent
on the λ-return of short rollouts through a differentiable model, 5,000 real env steps,
2 seeds in one compiled program; then the same through a learned ensemble.

    python examples/bptt_pendulum.py      # about 2 minutes on 2 CPU cores

``model="true"`` differentiates gymnax's own Pendulum step (an upper bound: the dynamics
are known); ``model="learned"`` differentiates an ensemble refitted on the real data the
policy collects. Both bootstrap the horizon with a learned value and clip the gradient
(``bptt.Config``; the README's benchmark has the gradient norm against the horizon).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from minirl import envs
from minirl.model_based import bptt

env, env_params = envs.make("Pendulum-v1")
keys = jax.random.split(jax.random.PRNGKey(0), 2)
train = jax.jit(jax.vmap(bptt.train, in_axes=(0, None, None, None)), static_argnums=2)


@jax.jit
def greedy_episode(params, key):
    """One episode of the policy's mean action in the real env; its return."""
    obs, env_state = env.reset(key, env_params)

    def one(carry, key):
        obs, env_state = carry
        action = bptt.act(params, obs, key, config, deterministic=True)
        obs, env_state, reward, _, _, _ = env.step(key, env_state, action, env_params)
        return (obs, env_state), reward

    _, rewards = jax.lax.scan(one, (obs, env_state), jax.random.split(key, 200))
    return jnp.sum(rewards)


for model in ("true", "learned"):
    config = bptt.Config(**{**bptt.preset("Pendulum-v1"), "model": model})
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(train(keys, config, env, env_params))
    # one iteration = refit_every = 200 real steps: the mean return per 1,000 real steps
    sums = np.asarray(metrics["episode_return_sum"]).reshape(2, -1, 5).sum(axis=2)
    counts = np.asarray(metrics["episodes"]).reshape(2, -1, 5).sum(axis=2)
    print(f"bptt model={model}: mean episode return per 1,000 real steps, per seed\n"
          f"{np.round(sums / np.maximum(counts, 1), 1)}  [{time.perf_counter() - start:.0f} s]")
    params = jax.tree.map(lambda x: x[0], state.learner.params)
    print(f"  a greedy episode of seed 0: return "
          f"{float(greedy_episode(params, jax.random.PRNGKey(7))):.1f}")
