"""PPO: the contract's transformations (same key same bits, jit == eager, vmap == loop over
seeds and over env parameters, sweeps without recompiling), data parallelism over devices
(``minirl.parallel.data_parallel``), continuous actions with the
bounds taken from the env parameters, a user's own networks, the learning-rate schedule and
the Lagrangian's dual ascent against independent references, config validation and the
CLI."""

import json
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minirl import cli, envs
from minirl.algos import ppo
from minirl.core import distributions, nets
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(300)

SMALL = dict(
    total_steps=96,
    num_envs=4,
    rollout_steps=8,
    num_epochs=2,
    num_minibatches=2,
    hidden=(16,),
)
ENV, ENV_PARAMS = envs.make("CartPole-v1")
PENDULUM, PENDULUM_PARAMS = envs.make("Pendulum-v1")

# The env is static (a Python object), the config and env parameters are traced.
TRAIN = jax.jit(ppo.train, static_argnums=2)
LEARN = jax.jit(ppo.learn)


def small_config(**overrides) -> ppo.Config:
    return ppo.Config(**{**SMALL, **overrides})


def arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(arrays(a), arrays(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def flatten(batch: ppo.Batch) -> ppo.Batch:
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)


# ----------------------------------------------------------------------------- transformations


def test_vmap_over_env_params_equals_separate_runs_with_per_run_action_bounds():
    """One program trains one agent per max_torque; each agent's action box is its own env's
    (the bounds are traced), and each run equals a separate run with those parameters."""
    config = small_config(init_log_std=1.0)
    torques = [1.0, 0.5]
    params = [envs.make("Pendulum-v1", max_torque=m)[1] for m in torques]
    key = jax.random.PRNGKey(4)
    batched_state, batched = jax.jit(
        jax.vmap(ppo.train, in_axes=(None, None, None, 0)), static_argnums=2
    )(key, config, PENDULUM, envs.stack_params(params))
    for i, (torque, env_params) in enumerate(zip(torques, params)):
        state, metrics = TRAIN(key, config, PENDULUM, env_params)
        agent = jax.tree.map(lambda x, i=i: x[i], batched_state.learner.params)
        np.testing.assert_array_equal(agent.low, [-torque])
        np.testing.assert_array_equal(agent.high, [torque])
        np.testing.assert_allclose(metrics["episode_return_sum"],
                                   batched["episode_return_sum"][i], rtol=1e-4)
        assert_trees_close(state.learner.params, agent, rtol=1e-4, atol=1e-5)
        obs = state.env.obs[0]
        actions = jax.vmap(lambda k, agent=agent, obs=obs: ppo.act(agent, obs, k, config))(
            jax.random.split(jax.random.PRNGKey(i), 100)
        )
        assert float(jnp.max(jnp.abs(actions))) == pytest.approx(torque)


DATA_PARALLEL_SCRIPT = textwrap.dedent(
    '''
    import json, traceback

    import equinox as eqx
    import jax
    import numpy as np

    from minirl import envs, parallel
    from minirl.algos import ppo

    assert jax.device_count() == 2, jax.devices()
    SMALL = dict(total_steps=96, num_envs=4, rollout_steps=8, num_epochs=2, num_minibatches=2,
                 hidden=(16,))
    VARIANTS = {
        "clip": ("CartPole-v1", {}),
        "lagrangian-obsnorm": ("CartPole-v1", dict(objective="lagrangian",
                                                   normalize_observations=True)),
        "pendulum": ("Pendulum-v1", {}),
    }
    mesh = parallel.make_mesh(jax.devices(), axis="envs")
    step = jax.jit(ppo.step, static_argnums=2)


    def close(a, b):
        la = jax.tree.leaves(eqx.filter(a, eqx.is_array))
        lb = jax.tree.leaves(eqx.filter(b, eqx.is_array))
        assert len(la) == len(lb)
        for x, y in zip(la, lb):
            x, y = np.asarray(x), np.asarray(y)
            assert x.shape == y.shape, (x.shape, y.shape)
            if np.issubdtype(x.dtype, np.floating):
                np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
            else:
                np.testing.assert_array_equal(x, y)


    results = {}
    for name, (env_id, overrides) in VARIANTS.items():
        try:
            env, env_params = envs.make(env_id)
            config = ppo.Config(**SMALL, **overrides)
            state = ppo.init(jax.random.PRNGKey(5), config, env, env_params)
            want_state, want = state, []
            for _ in range(2):
                want_state, metrics = step(want_state, config, env, env_params)
                want.append(metrics)
            run = parallel.data_parallel(ppo.step, mesh, state, lambda s: s.env, env, length=2)
            got_state, got = run(state, config, env_params)
            for i in range(2):
                for key in ("episodes", "episode_return_sum", "env_steps", "value_loss", "kl",
                            "entropy", "kl_coef"):
                    np.testing.assert_allclose(got[key][i], want[i][key], rtol=1e-4,
                                               atol=1e-6, err_msg=key)
            close(got_state.learner, want_state.learner)
            close(got_state.env, want_state.env)
            results[name] = "ok"
        except Exception:
            results[name] = traceback.format_exc()
    print("RESULTS " + json.dumps(results))
    '''
)


@pytest.fixture(scope="module")
def data_parallel_results():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": root}
    done = subprocess.run([sys.executable, "-c", DATA_PARALLEL_SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=400)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULTS "):])


@pytest.mark.timeout(450)  # the subprocess compiles 3 × 2 programs
@pytest.mark.parametrize("variant", ["clip", "lagrangian-obsnorm", "pendulum"])
def test_data_parallel_over_two_devices_equals_single_device(data_parallel_results, variant):
    """``parallel.data_parallel(ppo.step, …)`` with the environments split over 2 forced CPU
    devices (in a subprocess: XLA reads the device count at start-up) equals two
    single-device steps: metrics, learner and every environment's state."""
    assert data_parallel_results[variant] == "ok", data_parallel_results[variant]


# ----------------------------------------------------------------------------- continuous actions


@pytest.mark.parametrize("squash", [False, True])
def test_continuous_policy_and_action_bounds_from_env_params(squash):
    """The action box is read from ``env_params`` (Pendulum's max_torque), not from the
    env's defaults: every action ``act`` returns lies in [−max_torque, max_torque]."""
    config = small_config(squash=squash, init_log_std=1.0)
    for torque in (2.0, 1.0):  # the gymnax default, and a changed parameter
        env, env_params = envs.make("Pendulum-v1", max_torque=torque)
        state, metrics = TRAIN(jax.random.PRNGKey(0), config, env, env_params)
        assert np.isfinite(np.asarray(metrics["value_loss"])).all()
        params = state.learner.params
        np.testing.assert_array_equal(params.low, [-torque])
        np.testing.assert_array_equal(params.high, [torque])
        dist = ppo.policy(params, state.env.obs[0], config)
        assert isinstance(dist, distributions.TanhNormal if squash else distributions.Normal)
        keys = jax.random.split(jax.random.PRNGKey(1), 200)
        actions = jax.vmap(lambda k, p=params, o=state.env.obs[0]: ppo.act(p, o, k, config))(
            keys
        )
        assert actions.shape == (200, 1)
        largest = float(jnp.max(jnp.abs(actions)))
        assert largest <= torque
        # σ = e: the samples reach the bounds (clipped), or come close to them (tanh).
        if squash:
            assert largest > 0.5 * torque
        else:
            assert largest == torque
        greedy = ppo.act(params, state.env.obs[0], keys[0], config, deterministic=True)
        assert greedy.shape == (1,) and float(jnp.abs(greedy[0])) <= torque


# ----------------------------------------------------------------------------- own networks


def mlp_networks(key, hidden=8, out=2):
    actor_key, critic_key = jax.random.split(key)
    return ppo.ActorCritic(
        actor=eqx.nn.MLP(4, out, hidden, 1, activation=jax.nn.tanh, key=actor_key),
        critic=eqx.nn.MLP(4, "scalar", hidden, 1, key=critic_key),
    )


def test_bring_your_own_networks():
    """An ActorCritic of ``eqx.nn.MLP``s (which hold activation functions, so they are
    closed over in jit, not passed as arguments): the state keeps them wrapped in
    ``nets.Wrapped``, ``.module`` gives the MLP back, the policy and value are the user's
    networks, and training moves their weights."""
    config = small_config()
    network = mlp_networks(jax.random.PRNGKey(7))
    state = ppo.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS, network)
    params = state.learner.params
    assert isinstance(params.actor, nets.Wrapped) and isinstance(params.critic, nets.Wrapped)
    assert isinstance(params.actor.module, eqx.nn.MLP)
    for got, given in ((params.actor.module, network.actor),
                       (params.critic.module, network.critic)):
        for x, y in zip(arrays(got), arrays(given), strict=True):
            np.testing.assert_array_equal(x, y)
    obs = state.env.obs[0]
    np.testing.assert_allclose(ppo.policy(params, obs, config).logits, network.actor(obs),
                               rtol=1e-6)
    np.testing.assert_allclose(ppo.value(params, obs, config), network.critic(obs), rtol=1e-6)

    train = jax.jit(lambda key, config: ppo.train(key, config, ENV, ENV_PARAMS, network))
    trained, metrics = train(jax.random.PRNGKey(0), config)
    assert np.isfinite(np.asarray(metrics["value_loss"])).all()
    module = trained.learner.params.actor.module
    assert isinstance(module, eqx.nn.MLP) and module.activation is jax.nn.tanh
    moved = [float(jnp.max(jnp.abs(x - y)))
             for x, y in zip(arrays(module), arrays(network.actor), strict=True)]
    assert max(moved) > 0.0
    action = ppo.act(trained.learner.params, obs, jax.random.PRNGKey(1), config,
                     deterministic=True)
    assert int(action) == int(jnp.argmax(module(obs)))

    # A factory key -> ActorCritic: every seed of a vmap gets its own initialisation, and
    # the vmapped init equals a loop over the seeds.
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    batched = jax.vmap(lambda k: ppo.init(k, config, ENV, ENV_PARAMS, mlp_networks))(keys)
    actors = [ppo.init(k, config, ENV, ENV_PARAMS, mlp_networks).learner.params.actor
              for k in keys]
    for i, actor in enumerate(actors):
        assert_trees_close(actor, jax.tree.map(lambda x, i=i: x[i],
                                               batched.learner.params.actor), rtol=0, atol=0)
    assert not np.array_equal(arrays(actors[0])[0], arrays(actors[1])[0])


def test_networks_of_the_wrong_shape_are_refused():
    config = small_config()
    with pytest.raises(ConfigError, match="network.actor"):
        ppo.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS,
                 mlp_networks(jax.random.PRNGKey(0), out=3))
    bad = ppo.ActorCritic(actor=mlp_networks(jax.random.PRNGKey(0)).actor,
                          critic=eqx.nn.MLP(4, 2, 8, 1, key=jax.random.PRNGKey(1)))
    with pytest.raises(ConfigError, match="network.critic"):
        ppo.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS, bad)
    with pytest.raises(ConfigError, match="ActorCritic"):
        ppo.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS,
                 eqx.nn.MLP(4, 2, 8, 1, key=jax.random.PRNGKey(1)))


# ----------------------------------------------------------------------------- learn


def on_policy_batch(params: ppo.Agent, config: ppo.Config, key: jax.Array, steps=8, num_envs=4):
    """A constructed ``[T, E]`` batch: random CartPole-shaped observations, actions sampled
    from π_θ (so the first ratio is 1), random advantages; no environment involved."""
    obs_key, action_key, advantage_key = jax.random.split(key, 3)
    obs = jax.random.normal(obs_key, (steps, num_envs, 4))
    dist = ppo.batch_apply(ppo.policy, params, obs, config, batch_dims=2)
    action = dist.sample(action_key)
    advantage = jax.random.normal(advantage_key, (steps, num_envs))
    return ppo.Batch(obs=obs, action=action, log_prob=dist.log_prob(action),
                     value=jnp.zeros_like(advantage), advantage=advantage, target=advantage,
                     policy=dist)


def numpy_logits(actor: nets.MLP, obs) -> np.ndarray:
    """The default actor (tanh hidden layers) evaluated by NumPy in float64."""
    x = np.asarray(obs, np.float64)
    for i, layer in enumerate(actor.layers):
        x = x @ np.asarray(layer.weight, np.float64).T + np.asarray(layer.bias, np.float64)
        if i < len(actor.layers) - 1:
            x = np.tanh(x)
    return x


def numpy_categorical_kl(old_logits: np.ndarray, new_logits: np.ndarray) -> float:
    """Mean over states of KL(π_old ‖ π_new) = Σ_a π_old (log π_old − log π_new)."""

    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    old, new = log_softmax(old_logits), log_softmax(new_logits)
    return float(np.mean(np.sum(np.exp(old) * (old - new), axis=-1)))


def test_learning_rate_follows_the_update_counter():
    """``learn`` at ``updates = u`` takes its Adam steps at lr·(1 + f·(end − 1)),
    f = min(1, (u // (epochs × minibatches)) / num_iterations): checked against plain
    ``optax.adam`` at that rate on full-batch gradients (one minibatch, so the shuffle only
    reorders a mean)."""
    config = small_config(num_epochs=2, num_minibatches=1, learning_rate=1e-2,
                          learning_rate_end_factor=0.1, max_grad_norm=1e9)
    assert config.num_iterations == 3
    learner = ppo.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS).learner
    batch = on_policy_batch(learner.params, config, jax.random.PRNGKey(1))
    flat = flatten(batch)
    loss = lambda p: ppo.loss_fn(p, flat, learner.kl_coef, config)[0]

    @eqx.filter_jit
    def reference(params, learning_rate):
        adam = optax.adam(learning_rate, eps=config.adam_eps)
        opt_state = adam.init(eqx.filter(params, eqx.is_array))
        for _ in range(config.num_epochs):
            grads = eqx.filter(eqx.filter_grad(loss)(params), eqx.is_array)
            steps, opt_state = adam.update(grads, opt_state)
            params = eqx.apply_updates(params, steps)
        return params

    for updates, factor in ((0, 1.0), (2, 0.7), (3, 0.7), (4, 0.4), (50, 0.1)):
        learning_rate = 1e-2 * factor
        start = eqx.tree_at(lambda x: x.updates, learner, jnp.asarray(updates, jnp.int32))
        new, metrics = LEARN(start, batch, config)
        np.testing.assert_allclose(metrics["learning_rate"], learning_rate, rtol=1e-6)
        assert int(new.updates) == updates + 2
        params = reference(learner.params, jnp.float32(learning_rate))
        assert_trees_close(new.params, params, rtol=1e-4, atol=2e-5)


def test_dual_ascent_raises_lambda_above_the_bound_and_decays_it_to_exactly_zero_below():
    """objective="lagrangian": after each ``learn``, λ ← max(0, λ + α(KL − δ)) with KL the
    mean KL(π_old ‖ π_new) of the batch — here computed independently, by NumPy from the
    logits of the old and the returned actor. With δ tiny and a large learning rate the KL
    exceeds δ and λ rises; with δ huge λ falls, reaches exactly 0 and stays there."""
    base = dict(objective="lagrangian", learning_rate=3e-2, learning_rate_end_factor=1.0,
                kl_coef_init=0.5)
    above = small_config(**base, max_kl=1e-6, dual_learning_rate=10.0)
    below = small_config(**base, max_kl=1.0, dual_learning_rate=0.5)
    learner = ppo.init(jax.random.PRNGKey(0), above, ENV, ENV_PARAMS).learner
    np.testing.assert_allclose(learner.kl_coef, 0.5)
    history = []
    for i, config in enumerate([above] * 3 + [below] * 8):
        batch = on_policy_batch(learner.params, config, jax.random.PRNGKey(100 + i))
        new, metrics = LEARN(learner, batch, config)
        old_logits = numpy_logits(learner.params.actor, batch.obs)
        new_logits = numpy_logits(new.params.actor, batch.obs)
        np.testing.assert_allclose(old_logits, batch.policy.logits, rtol=1e-4, atol=1e-6)
        kl = numpy_categorical_kl(old_logits, new_logits)
        before, after = float(learner.kl_coef), float(new.kl_coef)
        unclipped = before + config.dual_learning_rate * (kl - config.max_kl)
        if config is above:
            assert kl > config.max_kl and after > before
        else:
            assert kl < config.max_kl and after <= before
        if unclipped <= 0.0:
            assert after == 0.0  # clipped at exactly zero
        else:
            np.testing.assert_allclose(after - before, unclipped - before, rtol=2e-3, atol=1e-6)
        history.append(after)
        learner = new
    rising, falling = history[:3], history[3:]
    assert rising[-1] > 0.5
    assert all(b < a for a, b in zip(falling, falling[1:]) if a > 0.0)
    first_zero = falling.index(0.0)
    assert 0 < first_zero < len(falling) - 2, history  # positive first, then zero and stays
    assert all(x == 0.0 for x in falling[first_zero:])


def test_first_minibatch_is_on_policy():
    """At θ = θ_old the ratio is 1, so nothing is clipped and the KL is 0."""
    config = small_config(num_epochs=1, num_minibatches=1)
    state = ppo.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS)
    params = state.learner.params
    _, trajectory = ppo.collect(params, state.env, jax.random.PRNGKey(1), config, ENV,
                                ENV_PARAMS)
    batch = ppo.make_batch(params, trajectory, config)
    _, aux = ppo.loss_fn(params, flatten(batch), state.learner.kl_coef, config)
    assert float(aux["clip_fraction"]) == 0.0
    np.testing.assert_allclose(aux["kl"], 0.0, atol=1e-7)


def test_image_observations_use_a_cnn():
    config = small_config()
    env, env_params = envs.make("Breakout-MinAtar")
    state, metrics = TRAIN(jax.random.PRNGKey(0), config, env, env_params)
    assert state.learner.params.actor.__class__.__name__ == "CNN"
    assert np.isfinite(np.asarray(metrics["value_loss"])).all()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(gamma=0.0), "gamma"),
        (dict(lam=1.5), "lam"),
        (dict(clip_epsilon=0.0), "clip_epsilon"),
        (dict(num_minibatches=3), "num_minibatches"),
        (dict(num_epochs=0), "num_epochs"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate=float("inf")), "learning_rate"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(entropy_coef=-0.1), "entropy_coef"),
        (dict(max_kl=0.0), "max_kl"),
        (dict(max_kl=float("inf")), "max_kl"),
        (dict(objective="trust"), "objective"),
        (dict(activation="gelu"), "activation"),
        (dict(total_steps=8), "total_steps"),
        (dict(hidden=()), "hidden"),
        (dict(learning_rate=np.array([1e-3, -1.0])), "learning_rate"),
        (dict(value_clip_epsilon=float("nan")), "value_clip_epsilon"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        small_config(**overrides)


def test_value_clipping_may_be_switched_off_with_inf_and_bad_envs_are_refused():
    assert small_config(value_clip_epsilon=float("inf")).value_clip_epsilon == float("inf")
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        envs.make("NoSuchEnv-v0")
    with pytest.raises(ConfigError, match="reset"):
        ppo.init(jax.random.PRNGKey(0), small_config(), object(), None)


def test_cli_trains_ppo(tmp_path, capsys):
    argv = ["train", "ppo", "--env", "CartPole-v1", "--steps", "256", "--seeds", "2",
            "--chunks", "2", "--out", str(tmp_path), "--set", "num_envs=4",
            "--set", "rollout_steps=16", "--set", "hidden=8", "--set", "env.gravity=3.7"]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["algo"] == "ppo" and summary["steps"] == 256
    assert summary["env_params"] == {"gravity": 3.7}
    assert len(summary["final_returns"]) == 2
    assert cli.main(["eval", str(tmp_path), "--episodes", "2"]) == 0
    assert "median over seeds" in capsys.readouterr().out
    # A bad value is one clear line, exit status 2.
    assert cli.main(["train", "ppo", "--env", "CartPole-v1", "--set", "clip_epsilon=-1",
                     "--out", str(tmp_path / "bad")]) == 2
    assert "clip_epsilon" in capsys.readouterr().err
    assert cli.main(["train", "ppo", "--env", "CartPole-v1", "--set", "env.nope=1",
                     "--out", str(tmp_path / "bad_env")]) == 2
    assert "nope" in capsys.readouterr().err
