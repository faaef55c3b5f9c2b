"""TRPO / natural policy gradient: the policy step keeps the KL bound (line search) or
lands on the quadratic model's boundary (plain NPG), the contract's transformations, config
validation and the CLI."""

import json

import equinox as eqx
import jax
import numpy as np
import pytest

from minirl import cli, envs
from minirl.algos import ppo, trpo
from minirl.core import optim
from minirl.core.config import ConfigError, stack

pytestmark = pytest.mark.timeout(300)

SMALL = dict(total_steps=96, num_envs=4, rollout_steps=8, hidden=(16,),
             value_epochs=2, value_minibatches=2, cg_iterations=5)


ENV, ENV_PARAMS = envs.make("CartPole-v1")
POLICY_STEP = jax.jit(trpo.policy_step)


def small_config(**overrides) -> trpo.Config:
    return trpo.Config(**{**SMALL, **overrides})


def arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def flat_batch(config, env=ENV, env_params=ENV_PARAMS, key=0):
    """A fresh learner and one batch collected with its policy: ``[T, E, ...]`` and flattened
    to ``[N, ...]``."""
    state = trpo.init(jax.random.PRNGKey(key), config, env, env_params)
    params = state.learner.params
    _, trajectory = ppo.collect(params, state.env, jax.random.PRNGKey(key + 1), config, env,
                                env_params)
    batch = ppo.make_batch(params, trajectory, config)
    return state.learner, batch, jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("max_kl", [1e-3, 0.05])
def test_line_search_step_keeps_kl_within_delta_and_improves(env_id, max_kl):
    config = small_config(max_kl=max_kl)
    learner, _, batch = flat_batch(config, *envs.make(env_id))
    params = learner.params
    new_params, info = POLICY_STEP(params, batch, config)
    surrogate_and_kl = trpo.surrogate_and_kl(params, batch, config)
    before, _ = surrogate_and_kl(trpo._policy_part(params))
    after, kl = surrogate_and_kl(trpo._policy_part(new_params))
    assert float(kl) <= max_kl * (1 + 1e-5)
    if bool(info["accepted"]):
        assert float(after) > float(before)
    else:
        for a, b in zip(arrays(new_params), arrays(params), strict=True):
            np.testing.assert_array_equal(a, b)
    # The critic is not touched by the policy step.
    for a, b in zip(arrays(new_params.critic), arrays(params.critic), strict=True):
        np.testing.assert_array_equal(a, b)


def test_natural_gradient_step_lands_on_the_trust_region_boundary():
    """Without line search θ ← θ + s, s = √(2δ/xᵀFx)·x: the damped quadratic model
    ½sᵀ(F + cI)s equals δ, and for a small δ the true KL matches ½sᵀFs."""
    config = small_config(line_search=False, max_kl=1e-5, cg_iterations=10)
    learner, _, batch = flat_batch(config)
    params = learner.params
    new_params, info = POLICY_STEP(params, batch, config)
    old, new = trpo._policy_part(params), trpo._policy_part(new_params)
    s = jax.tree.map(lambda a, b: a - b, new, old)
    kl_fn = lambda p: trpo.surrogate_and_kl(params, batch, config)(p)[1]
    damped = optim.fisher_vector_product(kl_fn, old, s, config.cg_damping)
    plain = optim.fisher_vector_product(kl_fn, old, s)
    np.testing.assert_allclose(0.5 * optim.tree_vdot(s, damped), 1e-5, rtol=1e-3)
    np.testing.assert_allclose(info["kl"], 0.5 * optim.tree_vdot(s, plain), rtol=0.05)
    assert float(info["kl"]) <= 1e-5 * 1.01


def test_learn_is_the_policy_step_then_the_value_regression():
    """``learn`` needs no env: on a collected batch it takes the policy step (the same as
    ``policy_step`` on the flattened batch) and regresses V onto the λ-returns, lowering
    ½(V − G)² on the batch; the counter advances by one."""
    config = small_config()
    learner, batch, flat = flat_batch(config)
    new, metrics = jax.jit(trpo.learn)(learner, batch, config)
    assert int(new.updates) == int(learner.updates) + 1
    stepped, info = POLICY_STEP(learner.params, flat, config)
    for x, y in zip(arrays(trpo._policy_part(new.params)), arrays(trpo._policy_part(stepped)),
                    strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    assert float(metrics["kl"]) <= config.max_kl * (1 + 1e-5)

    def value_error(params):
        v = ppo.batch_apply(ppo.value, params, flat.obs, config)
        return float(np.mean(0.5 * (np.asarray(v) - np.asarray(flat.target)) ** 2))

    assert value_error(new.params) < value_error(learner.params)
    assert np.isfinite(float(metrics["value_loss"])) and float(metrics["entropy"]) > 0


def test_continuous_action_bounds_come_from_env_params():
    config = small_config(init_log_std=1.0)
    env, env_params = envs.make("Pendulum-v1", max_torque=0.5)
    state = trpo.init(jax.random.PRNGKey(0), config, env, env_params)
    params = state.learner.params
    np.testing.assert_array_equal(params.high, [0.5])
    obs = state.env.obs[0]
    actions = jax.vmap(lambda k: trpo.act(params, obs, k, config))(
        jax.random.split(jax.random.PRNGKey(1), 100)
    )
    assert actions.shape == (100, 1) and float(np.max(np.abs(actions))) == 0.5


def test_sweep_over_delta_and_gamma_is_one_program():
    configs = [small_config(max_kl=d, gamma=g, value_learning_rate=lr)
               for d, g, lr in [(0.01, 0.99, 1e-3), (0.05, 0.9, 3e-4)]]
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    _, swept = jax.jit(jax.vmap(trpo.train, in_axes=(0, 0, None, None)), static_argnums=2)(
        keys, stack(configs), ENV, ENV_PARAMS
    )
    traces = []

    def counted(key, config, env, env_params):
        traces.append(config)
        return trpo.train(key, config, env, env_params)

    single = jax.jit(counted, static_argnums=2)
    for i, config in enumerate(configs):
        _, metrics = single(keys[i], config, ENV, ENV_PARAMS)
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
        (dict(max_kl=float("inf")), "max_kl"),
        (dict(value_learning_rate=float("nan")), "value_learning_rate"),
        (dict(line_search="yes"), "line_search"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        small_config(**overrides)
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        envs.make("NoSuchEnv-v0")


def test_cli_trains_trpo(tmp_path):
    argv = ["train", "trpo", "--env", "Pendulum-v1", "--steps", "256", "--seeds", "2",
            "--chunks", "2", "--out", str(tmp_path), "--set", "num_envs=4",
            "--set", "rollout_steps=16", "--set", "hidden=8", "--set", "env.max_torque=1.0"]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["algo"] == "trpo" and summary["env"] == "Pendulum-v1"
    assert summary["steps"] == 256 and len(summary["final_returns"]) == 2
    assert summary["env_params"] == {"max_torque": 1.0}
