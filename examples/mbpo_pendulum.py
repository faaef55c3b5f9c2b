"""MBPO on Pendulum-v1 with 5,000 real env steps (25 episodes): SAC trained on short
rollouts branched from real states through a learned ensemble (Janner et al., 2019), 2 seeds
in one compiled program, then a greedy episode of seed 0's policy in the real env.

    python examples/mbpo_pendulum.py      # about 2.5 minutes on 2 CPU cores

Any off-policy learner of minirl can be the agent: ``agent="td3"``, ``"ddpg"``, ``"naf"``,
``"qt_opt"``; on discrete envs ``"dqn"``, ``"soft_q"`` or ``"sac"`` (the model takes the
action one-hot). ``model="true"`` steps the real env in place of the model: an upper bound
that shows what the model costs.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from minirl import envs
from minirl.model_based import mbpo

env, env_params = envs.make("Pendulum-v1")
config = mbpo.Config(**mbpo.preset("Pendulum-v1"))  # agent="sac", 10 updates per real step
keys = jax.random.split(jax.random.PRNGKey(0), 2)
train = jax.jit(jax.vmap(mbpo.train, in_axes=(0, None, None, None)), static_argnums=2)

start = time.perf_counter()
state, metrics = jax.block_until_ready(train(keys, config, env, env_params))
# one iteration = refit_every = 250 real steps; the mean return of the episodes in each
returns = np.asarray(metrics["episode_return_sum"] / np.maximum(metrics["episodes"], 1))
print(f"mbpo (sac): mean episode return per 1,000 real steps, per seed\n"
      f"{np.round(returns.reshape(2, -1, 4).mean(axis=2), 1)}  "
      f"[{time.perf_counter() - start:.0f} s]")
print(f"held-out model mse at the last refit: {np.round(metrics['holdout_mse'][:, -1], 4)}")

# A greedy episode (the SAC policy's mode) of seed 0 in the real env.
params = jax.tree.map(lambda x: x[0], state.learner.params)


@jax.jit
def episode(key):
    obs, env_state = env.reset(key, env_params)

    def one(carry, key):
        obs, env_state = carry
        action = mbpo.act(params, obs, key, config, deterministic=True)
        obs, env_state, reward, _, _, _ = env.step(key, env_state, action, env_params)
        return (obs, env_state), reward

    _, rewards = jax.lax.scan(one, (obs, env_state), jax.random.split(key, 200))
    return jnp.sum(rewards)


print(f"a greedy episode of seed 0: return {float(episode(jax.random.PRNGKey(7))):.1f}")
