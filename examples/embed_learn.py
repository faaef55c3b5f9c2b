"""Use DQN's pure ``learn`` step inside your own loop, on data you bring.

Here the data are random CartPole transitions collected once and kept fixed (offline
fitted Q-iteration); any source of ``Transition`` windows works the same way.

    python examples/embed_learn.py
"""

import jax
import jax.numpy as jnp

from minirl.algos import dqn
from minirl.core import buffer, rollout

config = dqn.Config(env_id="CartPole-v1", batch_size=128, hidden=(64, 64), n_step=3)
state = dqn.init(jax.random.PRNGKey(0), config)

# Collect 20k random transitions from 8 envs and put them in a replay buffer.
env, env_params = rollout.make_env(config.env_id)
carry = rollout.reset(jax.random.PRNGKey(1), env, env_params, 8)
policy = rollout.random_policy(env, env_params)
_, trajectory = rollout.collect(jax.random.PRNGKey(2), env, env_params, carry, policy, 2_500)
items = rollout.Transition(
    obs=trajectory.obs,
    action=trajectory.action,
    reward=trajectory.reward,
    next_obs=trajectory.next_obs,
    terminated=trajectory.terminated,
    truncated=trajectory.truncated,
    policy_info=jnp.full(trajectory.reward.shape, 0.5),
)
items = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), items)  # time-major, 8 streams
replay = buffer.add(buffer.init(20_000, jax.tree.map(lambda x: x[0], items)), items)


@jax.jit
def fit(state, key):
    def one(state, key):
        windows, valid = buffer.sample_sequences(replay, key, config.batch_size, config.n_step, 8)
        return dqn.learn(state, dqn.Batch(windows, valid), config)

    return jax.lax.scan(one, state, jax.random.split(key, 1_000))


for round_ in range(5):
    state, metrics = fit(state, jax.random.PRNGKey(10 + round_))
    print(
        f"round {round_}: loss {float(metrics['loss'].mean()):.4f}, "
        f"mean Q {float(metrics['q_mean'].mean()):.2f}"
    )
