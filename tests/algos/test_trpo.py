"""TRPO / natural policy gradient: the policy step keeps the KL bound (line search) or
lands on the quadratic model's boundary (plain NPG), the contract's transformations, config
validation and the CLI."""

import json

import equinox as eqx
import jax
import numpy as np
import pytest

from minirl import cli
from minirl.algos import ppo, trpo
from minirl.core import optim
from minirl.core.config import stack

pytestmark = pytest.mark.timeout(300)

SMALL = dict(env_id="CartPole-v1", total_steps=96, num_envs=4, rollout_steps=8, hidden=(16,),
             value_epochs=2, value_minibatches=2, cg_iterations=5)


def small_config(**overrides) -> trpo.Config:
    return trpo.Config(**{**SMALL, **overrides})


def arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def flat_batch(config, key=0):
    state = trpo.init(jax.random.PRNGKey(key), config)
    _, trajectory = ppo.collect(state.params, state.env, jax.random.PRNGKey(key + 1), config)
    batch = ppo.make_batch(state.params, trajectory, config)
    return state, jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("max_kl", [1e-3, 0.05])
def test_line_search_step_keeps_kl_within_delta_and_improves(env_id, max_kl):
    config = small_config(env_id=env_id, max_kl=max_kl)
    state, batch = flat_batch(config)
    new_params, info = jax.jit(trpo.policy_step, static_argnums=2)(state.params, batch, config)
    surrogate_and_kl = trpo.surrogate_and_kl(state.params, batch, config)
    before, _ = surrogate_and_kl(trpo._policy_part(state.params))
    after, kl = surrogate_and_kl(trpo._policy_part(new_params))
    assert float(kl) <= max_kl * (1 + 1e-5)
    if bool(info["accepted"]):
        assert float(after) > float(before)
    else:
        for a, b in zip(arrays(new_params), arrays(state.params), strict=True):
            np.testing.assert_array_equal(a, b)
    # The critic is not touched by the policy step.
    for a, b in zip(arrays(new_params.critic), arrays(state.params.critic), strict=True):
        np.testing.assert_array_equal(a, b)


def test_natural_gradient_step_lands_on_the_trust_region_boundary():
    """Without line search θ ← θ + s, s = √(2δ/xᵀFx)·x: the damped quadratic model
    ½sᵀ(F + cI)s equals δ, and for a small δ the true KL matches ½sᵀFs."""
    config = small_config(line_search=False, max_kl=1e-5, cg_iterations=10)
    state, batch = flat_batch(config)
    new_params, info = jax.jit(trpo.policy_step, static_argnums=2)(state.params, batch, config)
    old, new = trpo._policy_part(state.params), trpo._policy_part(new_params)
    s = jax.tree.map(lambda a, b: a - b, new, old)
    kl_fn = lambda p: trpo.surrogate_and_kl(state.params, batch, config)(p)[1]
    damped = optim.fisher_vector_product(kl_fn, old, s, config.cg_damping)
    plain = optim.fisher_vector_product(kl_fn, old, s)
    np.testing.assert_allclose(0.5 * optim.tree_vdot(s, damped), 1e-5, rtol=1e-3)
    np.testing.assert_allclose(info["kl"], 0.5 * optim.tree_vdot(s, plain), rtol=0.05)
    assert float(info["kl"]) <= 1e-5 * 1.01


def test_same_key_same_bits_and_vmap_equals_loop():
    config = small_config()
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    run = jax.jit(trpo.train)
    a, b = run(keys[0], config), run(keys[0], config)
    for x, y in zip(arrays(a), arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)
    batched_state, batched = jax.jit(jax.vmap(trpo.train, in_axes=(0, None)))(keys, config)
    for i in range(2):
        state, metrics = run(keys[i], config)
        np.testing.assert_allclose(metrics["value_loss"], batched["value_loss"][i], rtol=1e-4)
        for x, y in zip(arrays(state.params), arrays(batched_state.params), strict=True):
            np.testing.assert_allclose(x, y[i], rtol=1e-4, atol=1e-5)


def test_sweep_over_delta_and_gamma_is_one_program():
    configs = [small_config(max_kl=d, gamma=g, value_learning_rate=lr)
               for d, g, lr in [(0.01, 0.99, 1e-3), (0.05, 0.9, 3e-4)]]
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    _, swept = jax.jit(jax.vmap(trpo.train))(keys, stack(configs))
    traces = []

    def counted(key, config):
        traces.append(config)
        return trpo.train(key, config)

    single = jax.jit(counted)
    for i, config in enumerate(configs):
        _, metrics = single(keys[i], config)
        np.testing.assert_allclose(metrics["value_loss"], swept["value_loss"][i], rtol=2e-3,
                                   atol=1e-6)
    assert len(traces) == 1


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(max_kl=0.0), "max_kl"),
        (dict(backtrack_ratio=1.0), "backtrack_ratio"),
        (dict(cg_iterations=0), "cg_iterations"),
        (dict(value_minibatches=3), "value_minibatches"),
        (dict(gamma=1.5), "gamma"),
        (dict(cg_damping=-1.0), "cg_damping"),
        (dict(env_id="NoSuchEnv-v0"), "NoSuchEnv-v0"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        small_config(**overrides)


def test_cli_trains_trpo(tmp_path):
    argv = ["train", "trpo", "--env", "Pendulum-v1", "--steps", "256", "--seeds", "2",
            "--chunks", "2", "--out", str(tmp_path), "--set", "num_envs=4",
            "--set", "rollout_steps=16", "--set", "hidden=8"]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["algo"] == "trpo" and summary["env"] == "Pendulum-v1"
