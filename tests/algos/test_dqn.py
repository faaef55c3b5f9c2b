"""DQN: targets against a brute-force reference, the contract's transformations, config
validation, and sweeps without recompiling."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minirl.algos import dqn
from minirl.core import rollout
from minirl.core.config import stack

pytestmark = pytest.mark.timeout(300)

SMALL = dict(
    env_id="CartPole-v1",
    total_steps=600,
    buffer_size=400,
    batch_size=16,
    learning_starts=100,
    hidden=(16,),
    target_update_period=50,
)


def small_config(**overrides) -> dqn.Config:
    return dqn.Config(**{**SMALL, **overrides})


# ----------------------------------------------------------------------------- targets


class TableQ(eqx.Module):
    """Q(s, ·) = table[s] for integer observations: makes reference targets exact."""

    table: jax.Array

    def __call__(self, obs):
        return self.table[obs.astype(jnp.int32)[0]]


def reference_target(sample, q_online, q_target, gamma, n, correction, double_q, clip):
    """Brute-force N-step target of one window, written as the definition reads."""
    obs, action, reward, next_obs, term, trunc, mu, valid = sample

    def value(s):
        if double_q:
            return q_target[s, np.argmax(q_online[s])]
        return q_target[s].max()

    g_tail = None
    for k in reversed(range(n)):
        d = gamma * (1.0 - term[k])
        v = value(next_obs[k])
        last = k == n - 1
        if last:
            g = reward[k] + d * v
        else:
            cont = valid[k + 1] and not (term[k] or trunc[k])
            s1, a1 = obs[k + 1], action[k + 1]
            greedy = a1 == np.argmax(q_online[s1])
            if correction == "none":
                c, q = float(cont), v
            elif correction == "cut":
                c, q = float(cont and greedy), v
            else:
                c, q = float(cont) * min(clip, float(greedy) / mu[k + 1]), q_target[s1, a1]
            g = reward[k] + d * (v + c * (g_tail - q))
        g_tail = g
    return g_tail


@given(
    n=st.sampled_from([1, 2, 3, 5]),
    correction=st.sampled_from(dqn.OFF_POLICY_CORRECTIONS),
    double_q=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_n_step_targets_match_brute_force(n, correction, double_q, seed):
    rng = np.random.default_rng(seed)
    num_states, num_actions, batch = 6, 3, 8
    q_online = rng.normal(size=(num_states, num_actions)).astype(np.float32)
    q_target = rng.normal(size=(num_states, num_actions)).astype(np.float32)
    obs = rng.integers(0, num_states, (batch, n, 1))
    next_obs = rng.integers(0, num_states, (batch, n, 1))
    action = rng.integers(0, num_actions, (batch, n))
    reward = rng.normal(size=(batch, n)).astype(np.float32)
    term = rng.random((batch, n)) < 0.2
    trunc = (rng.random((batch, n)) < 0.2) & ~term
    mu = rng.uniform(0.2, 1.0, (batch, n)).astype(np.float32)
    valid = np.cumprod(rng.random((batch, n)) < 0.85, axis=1).astype(bool)
    valid[:, 0] = True
    transitions = rollout.Transition(
        obs=jnp.asarray(obs),
        action=jnp.asarray(action),
        reward=jnp.asarray(reward),
        next_obs=jnp.asarray(next_obs),
        terminated=jnp.asarray(term),
        truncated=jnp.asarray(trunc),
        policy_info=jnp.asarray(mu),
    )
    config = small_config(
        n_step=n,
        off_policy_correction=correction,
        double_q=double_q,
        gamma=0.9,
        importance_ratio_clip=3.0,
    )
    got = dqn.n_step_targets(
        TableQ(jnp.asarray(q_online)),
        TableQ(jnp.asarray(q_target)),
        dqn.Batch(transitions, jnp.asarray(valid)),
        config,
    )
    want = [
        reference_target(
            (
                obs[b, :, 0],
                action[b],
                reward[b],
                next_obs[b, :, 0],
                term[b],
                trunc[b],
                mu[b],
                valid[b],
            ),
            q_online,
            q_target,
            0.9,
            n,
            correction,
            double_q,
            3.0,
        )
        for b in range(batch)
    ]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_truncation_bootstraps_from_final_observation_and_termination_cuts():
    q = jnp.arange(12.0).reshape(4, 3)  # V(s) = max = 3s + 2
    transitions = rollout.Transition(
        obs=jnp.zeros((2, 1, 1)),
        action=jnp.zeros((2, 1), jnp.int32),
        reward=jnp.ones((2, 1)),
        next_obs=jnp.array([[[3]], [[3]]]),
        terminated=jnp.array([[False], [True]]),
        truncated=jnp.array([[True], [False]]),
        policy_info=jnp.ones((2, 1)),
    )
    config = small_config(gamma=0.5, double_q=False)
    targets = dqn.n_step_targets(
        TableQ(q), TableQ(q), dqn.Batch(transitions, jnp.ones((2, 1), bool)), config
    )
    np.testing.assert_allclose(targets, [1.0 + 0.5 * 11.0, 1.0])


# ----------------------------------------------------------------------------- contract


def test_same_key_same_bits_and_jit_equals_eager():
    config = small_config()
    key = jax.random.PRNGKey(3)
    run = jax.jit(dqn.train, static_argnums=())
    state_a, metrics_a = run(key, config)
    state_b, metrics_b = run(key, config)
    for a, b in zip(jax.tree.leaves((state_a, metrics_a)), jax.tree.leaves((state_b, metrics_b))):
        np.testing.assert_array_equal(a, b)
    # One learn step, jitted and eager, on the same batch.
    batch = dqn.sample_batch(state_a, jax.random.PRNGKey(0), config)
    jitted, jm = jax.jit(dqn.learn)(state_a, batch, config)
    with jax.disable_jit():
        eager, em = dqn.learn(state_a, batch, config)
    for a, b in zip(
        jax.tree.leaves(eqx.filter(jitted.params, eqx.is_array)),
        jax.tree.leaves(eqx.filter(eager.params, eqx.is_array)),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jm["loss"], em["loss"], rtol=1e-5)


def test_vmap_over_seeds_equals_loop():
    config = small_config(total_steps=300)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    batched_state, batched_metrics = jax.jit(jax.vmap(dqn.train, in_axes=(0, None)))(keys, config)
    single = jax.jit(dqn.train)
    for i in range(3):
        state, metrics = single(keys[i], config)
        np.testing.assert_allclose(
            metrics["episode_return_sum"], batched_metrics["episode_return_sum"][i], rtol=1e-5
        )
        for a, b in zip(
            jax.tree.leaves(eqx.filter(state.params, eqx.is_array)),
            jax.tree.leaves(eqx.filter(batched_state.params, eqx.is_array)),
        ):
            np.testing.assert_allclose(a, b[i], rtol=1e-4, atol=1e-5)


def test_hyperparameter_sweep_is_one_program_and_equals_separate_runs():
    values = [1e-3, 3e-4, 1e-4]
    configs = [
        small_config(total_steps=300, learning_rate=lr, gamma=g)
        for lr, g in zip(values, [0.99, 0.95, 0.9])
    ]
    keys = jax.random.split(jax.random.PRNGKey(1), len(configs))
    _, swept = jax.jit(jax.vmap(dqn.train))(keys, stack(configs))
    traces = []

    def counted_train(key, config):
        traces.append(config)
        return dqn.train(key, config)

    single = jax.jit(counted_train)
    for i, config in enumerate(configs):
        _, metrics = single(keys[i], config)
        np.testing.assert_allclose(metrics["loss"], swept["loss"][i], rtol=2e-4, atol=1e-6)
    # Different numeric values reuse the one traced (so compiled) program.
    assert len(traces) == 1


def test_act_greedy_and_exploring():
    config = small_config()
    state = dqn.init(jax.random.PRNGKey(0), config)
    obs = state.env.obs[0]
    greedy = dqn.act(state.params, obs, jax.random.PRNGKey(1), config, deterministic=True)
    assert greedy == jnp.argmax(state.params(obs))
    explore = dqn.act(state.params, obs, jax.random.PRNGKey(1), config)
    assert explore.shape == () and 0 <= int(explore) < 2


def test_image_observations_use_a_cnn():
    config = dqn.Config(
        env_id="Breakout-MinAtar",
        total_steps=64,
        buffer_size=64,
        batch_size=8,
        learning_starts=16,
        hidden=(16,),
    )
    state, metrics = jax.jit(dqn.train)(jax.random.PRNGKey(0), config)
    assert state.params.__class__.__name__ == "CNN"
    assert np.isfinite(np.asarray(metrics["loss"])).all()


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(env_id="Pendulum-v1"), "Pendulum-v1"),
        (dict(env_id="NoSuchEnv-v0"), "NoSuchEnv-v0"),
        (dict(gamma=0.0), "gamma"),
        (dict(gamma=1.01), "gamma"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=500, buffer_size=400), "batch_size"),
        (dict(num_envs=3, buffer_size=400), "buffer_size"),
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(epsilon_end=1.5), "epsilon_end"),
        (dict(tau=0.0), "tau"),
        (dict(n_step=0), "n_step"),
        (dict(off_policy_correction="retrace"), "off_policy_correction"),
        (dict(loss="l1"), "loss"),
        (dict(hidden=()), "hidden"),
        (dict(learning_rate=np.array([1e-3, -1.0])), "learning_rate"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        small_config(**overrides)


def test_fresh_state_can_be_donated():
    """init must not alias arrays (e.g. the target network), or donating its state fails."""
    config = dqn.Config(env_id="CartPole-v1", total_steps=64, learning_starts=0, batch_size=8)
    state = dqn.init(jax.random.PRNGKey(0), config)
    leaves = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
    assert len({id(x) for x in leaves}) == len(leaves)
    step = jax.jit(lambda s: dqn.step(s, config), donate_argnums=0)
    state, _ = step(state)
    state, _ = step(state)
    assert int(state.env_steps) == 2
