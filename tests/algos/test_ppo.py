"""PPO: the contract's transformations (same key same bits, jit == eager, vmap == loop,
sweeps without recompiling), data parallelism over a named env axis, continuous and
Lagrangian variants, config validation and the CLI."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirl import cli
from minirl.algos import ppo
from minirl.core import distributions
from minirl.core.config import stack

pytestmark = pytest.mark.timeout(300)

SMALL = dict(
    env_id="CartPole-v1",
    total_steps=96,
    num_envs=4,
    rollout_steps=8,
    num_epochs=2,
    num_minibatches=2,
    hidden=(16,),
)


def small_config(**overrides) -> ppo.Config:
    return ppo.Config(**{**SMALL, **overrides})


def arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(arrays(a), arrays(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_same_key_same_bits_and_jit_equals_eager():
    config = small_config()
    key = jax.random.PRNGKey(3)
    run = jax.jit(ppo.train)
    a, b = run(key, config), run(key, config)
    for x, y in zip(arrays(a), arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)
    # One step, jitted and eager, from the same state (tiny: eager mode is slow).
    config = small_config(num_envs=2, rollout_steps=4, num_epochs=1, num_minibatches=1)
    state = ppo.init(key, config)
    jitted, jm = jax.jit(ppo.step, static_argnums=1)(state, config)
    with jax.disable_jit():
        eager, em = ppo.step(state, config)
    assert_trees_close(jitted.params, eager.params, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(jm["value_loss"], em["value_loss"], rtol=1e-4)


def test_vmap_over_seeds_equals_loop():
    config = small_config()
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    batched_state, batched_metrics = jax.jit(jax.vmap(ppo.train, in_axes=(0, None)))(keys, config)
    single = jax.jit(ppo.train)
    for i in range(3):
        state, metrics = single(keys[i], config)
        np.testing.assert_allclose(metrics["episode_return_sum"],
                                   batched_metrics["episode_return_sum"][i], rtol=1e-5)
        assert_trees_close(state.params, jax.tree.map(lambda x, i=i: x[i], batched_state.params),
                           rtol=1e-4, atol=1e-5)


def test_hyperparameter_sweep_is_one_program_and_equals_separate_runs():
    sweep = [dict(learning_rate=1e-3, gamma=0.99, lam=0.95, clip_epsilon=0.2, entropy_coef=0.0),
             dict(learning_rate=3e-4, gamma=0.95, lam=0.9, clip_epsilon=0.1, entropy_coef=0.01),
             dict(learning_rate=1e-4, gamma=0.9, lam=1.0, clip_epsilon=0.3, entropy_coef=0.1)]
    configs = [small_config(**values) for values in sweep]
    keys = jax.random.split(jax.random.PRNGKey(1), len(configs))
    _, swept = jax.jit(jax.vmap(ppo.train))(keys, stack(configs))
    traces = []

    def counted_train(key, config):
        traces.append(config)
        return ppo.train(key, config)

    single = jax.jit(counted_train)
    for i, config in enumerate(configs):
        _, metrics = single(keys[i], config)
        np.testing.assert_allclose(metrics["value_loss"], swept["value_loss"][i], rtol=2e-4,
                                   atol=1e-6)
        np.testing.assert_allclose(metrics["kl"], swept["kl"][i], rtol=2e-3, atol=1e-7)
    assert len(traces) == 1  # different numbers reuse the one traced program


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(objective="lagrangian", normalize_observations=True),
    dict(env_id="Pendulum-v1", normalize_observations=True),
], ids=["clip", "lagrangian-obsnorm", "pendulum"])
def test_sharded_env_axis_equals_single_device(overrides):
    """step with ``axis_name`` over 2 env shards (a named vmap axis standing in for
    shard_map devices) equals the single-device step."""
    config = small_config(**overrides)
    state = ppo.init(jax.random.PRNGKey(5), config)
    want_state, want = jax.jit(ppo.step, static_argnums=1)(state, config)

    def shard(x):
        return x.reshape(2, x.shape[0] // 2, *x.shape[1:])

    def sharded_step(env):
        return ppo.step(eqx.tree_at(lambda s: s.env, state, env), config, axis_name="envs")

    got_state, got = jax.jit(jax.vmap(sharded_step, axis_name="envs"))(
        jax.tree.map(shard, state.env)
    )
    for name in ("episodes", "episode_return_sum", "env_steps", "value_loss", "kl", "entropy"):
        np.testing.assert_allclose(got[name][0], want[name], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got[name][1], want[name], rtol=1e-4, atol=1e-6)
    first = jax.tree.map(lambda x: x[0], got_state)
    assert_trees_close(first.params, want_state.params, rtol=1e-4, atol=1e-5)
    assert_trees_close(
        jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), got_state.env), want_state.env
    )


@pytest.mark.parametrize("squash", [False, True])
def test_continuous_policy_and_action_bounds(squash):
    config = small_config(env_id="Pendulum-v1", squash=squash, init_log_std=1.0)
    state, metrics = jax.jit(ppo.train)(jax.random.PRNGKey(0), config)
    assert np.isfinite(np.asarray(metrics["value_loss"])).all()
    dist = ppo.policy(state.params, state.env.obs[0], config)
    assert isinstance(dist, distributions.TanhNormal if squash else distributions.Normal)
    keys = jax.random.split(jax.random.PRNGKey(1), 200)
    actions = jax.vmap(lambda k: ppo.act(state.params, state.env.obs[0], k, config))(keys)
    assert actions.shape == (200, 1)
    assert float(jnp.max(jnp.abs(actions))) <= 2.0
    greedy = ppo.act(state.params, state.env.obs[0], keys[0], config, deterministic=True)
    assert greedy.shape == (1,)


def test_lagrangian_multiplier_follows_dual_ascent():
    config = small_config(objective="lagrangian", max_kl=1e-6, dual_learning_rate=5.0,
                          kl_coef_init=0.5)
    state = ppo.init(jax.random.PRNGKey(0), config)
    new_state, metrics = jax.jit(ppo.step, static_argnums=1)(state, config)
    expected = max(0.0, 0.5 + 5.0 * (float(metrics["kl_after"]) - 1e-6))
    np.testing.assert_allclose(new_state.kl_coef, expected, rtol=1e-5)


def test_first_minibatch_is_on_policy():
    """At θ = θ_old the ratio is 1, so nothing is clipped and the KL is 0."""
    config = small_config(num_epochs=1, num_minibatches=1)
    state = ppo.init(jax.random.PRNGKey(0), config)
    env, trajectory = ppo.collect(state.params, state.env, jax.random.PRNGKey(1), config)
    batch = ppo.make_batch(state.params, trajectory, config)
    flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)
    _, aux = ppo.loss_fn(state.params, flat, state.kl_coef, config)
    assert float(aux["clip_fraction"]) == 0.0
    np.testing.assert_allclose(aux["kl"], 0.0, atol=1e-7)


def test_image_observations_use_a_cnn():
    config = small_config(env_id="Breakout-MinAtar")
    state, metrics = jax.jit(ppo.train)(jax.random.PRNGKey(0), config)
    assert state.params.actor.__class__.__name__ == "CNN"
    assert np.isfinite(np.asarray(metrics["value_loss"])).all()


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(env_id="NoSuchEnv-v0"), "NoSuchEnv-v0"),
        (dict(gamma=0.0), "gamma"),
        (dict(lam=1.5), "lam"),
        (dict(clip_epsilon=0.0), "clip_epsilon"),
        (dict(num_minibatches=3), "num_minibatches"),
        (dict(num_epochs=0), "num_epochs"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(entropy_coef=-0.1), "entropy_coef"),
        (dict(max_kl=0.0), "max_kl"),
        (dict(objective="trust"), "objective"),
        (dict(activation="gelu"), "activation"),
        (dict(total_steps=8), "total_steps"),
        (dict(hidden=()), "hidden"),
        (dict(learning_rate=np.array([1e-3, -1.0])), "learning_rate"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        small_config(**overrides)


def test_cli_trains_ppo(tmp_path, capsys):
    argv = ["train", "ppo", "--env", "CartPole-v1", "--steps", "256", "--seeds", "2",
            "--chunks", "2", "--out", str(tmp_path), "--set", "num_envs=4",
            "--set", "rollout_steps=16", "--set", "hidden=8"]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["algo"] == "ppo" and summary["steps"] == 256
    assert len(summary["final_returns"]) == 2
    assert cli.main(["eval", str(tmp_path), "--episodes", "2"]) == 0
    assert "median over seeds" in capsys.readouterr().out
    # A bad value is one clear line, exit status 2.
    assert cli.main(["train", "ppo", "--env", "CartPole-v1", "--set", "clip_epsilon=-1",
                     "--out", str(tmp_path / "bad")]) == 2
    assert "clip_epsilon" in capsys.readouterr().err
