"""Use DQN's pure ``learn`` step inside your own loop, on data you bring.

``learn(learner, batch, config)`` needs no environment and no replay buffer: only the
learner (network, target network, optimiser state, update count) and a batch of N-step
windows. Here the data are random CartPole transitions collected once and kept fixed
(offline fitted Q-iteration); any source of ``Transition`` windows works the same way.

    python examples/embed_learn.py
"""

import jax
import jax.numpy as jnp

from minirl import envs
from minirl.algos import dqn
from minirl.core import buffer, rollout

env, env_params = envs.make("CartPole-v1")
config = dqn.Config(batch_size=128, hidden=(64, 64), n_step=3, total_steps=5_000)
learner = dqn.init(jax.random.PRNGKey(0), config, env, env_params).learner

# Collect 20k random transitions from 8 envs and put them in a replay buffer.
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
    policy_info=jnp.full(trajectory.reward.shape, 0.5),  # μ(a|s) of the uniform policy
)
items = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), items)  # time-major, 8 streams
replay = buffer.add(buffer.init(20_000, jax.tree.map(lambda x: x[0], items)), items)


@jax.jit
def fit(learner, key):
    def one(learner, key):
        windows, valid = buffer.sample_sequences(replay, key, config.batch_size, config.n_step, 8)
        return dqn.learn(learner, dqn.Batch(windows, valid), config)

    return jax.lax.scan(one, learner, jax.random.split(key, 1_000))


for round_ in range(5):
    learner, metrics = fit(learner, jax.random.PRNGKey(10 + round_))
    print(
        f"round {round_}: {int(learner.updates)} updates, loss "
        f"{float(metrics['loss'].mean()):.4f}, mean Q {float(metrics['q_mean'].mean()):.2f}"
    )
