"""Sweeps, ``minirl train`` and data-parallel training on several forced CPU devices.

JAX reads ``XLA_FLAGS`` once, when it starts, so these checks run in a subprocess with
``--xla_force_host_platform_device_count=4``; it runs every check and reports each one,
and the tests below assert on them one by one.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(600)

SCRIPT = textwrap.dedent(
    '''
    import json, sys, tempfile, traceback

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from minirl import envs, parallel, programs, runner, sweep
    from minirl.algos import dqn, ppo

    assert jax.device_count() == 4, jax.devices()
    DEVICES = jax.devices()
    results = {}
    ENV, PARAMS = envs.make("CartPole-v1")


    def check(name):
        def wrap(fn):
            try:
                fn()
                results[name] = "ok"
            except Exception:
                results[name] = traceback.format_exc()
            return fn
        return wrap


    def assert_bits_equal(a, b):
        la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
        assert len(la) == len(lb)
        for x, y in zip(la, lb):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


    DQN = dqn.Config(total_steps=800, hidden=(16,), buffer_size=400, learning_starts=200,
                     batch_size=16)
    PPO = ppo.Config(total_steps=2048, num_envs=4, rollout_steps=32, hidden=(16,),
                     num_minibatches=2)


    @check("same_bits_on_1_2_4_devices")
    def _():
        # 3 configurations × 2 seeds = 6 runs in groups of 2: 3 programs, spread over 1, 2
        # and 4 devices (on 4, one device idles). Every output is identical, bit for bit.
        for algo, base in ((dqn, DQN), (ppo, PPO)):
            runs = sweep.expand(base, ENV, PARAMS, sweep.grid(lr=[1e-3, 3e-4, 1e-4]), seeds=2)
            outs = [sweep.run(algo.train, runs, ENV, runs_per_program=2, devices=DEVICES[:d])
                    for d in (1, 2, 4)]
            for rows, out in outs:
                assert rows.tolist() == list(range(6))
            assert_bits_equal(outs[0][1], outs[1][1])
            assert_bits_equal(outs[0][1], outs[2][1])


    @check("groups_run_on_distinct_devices")
    def _():
        runs = sweep.seeds_of(DQN, ENV, PARAMS, seeds=4)
        chunks = programs.start(dqn.init, runs.keys, runs.configs, ENV, runs.env_params,
                                runs_per_program=1, devices=DEVICES)
        placed = [next(iter(jax.tree.leaves(s)[0].devices())) for s in chunks.states]
        assert placed == DEVICES, placed


    @check("chunked_runs_on_1_and_4_devices")
    def _():
        runs = sweep.expand(DQN, ENV, PARAMS, sweep.grid(gamma=[0.9, 0.99]), seeds=3)
        n = DQN.num_iterations
        out = []
        for d in (1, 4):
            chunks = programs.start(dqn.init, runs.keys, runs.configs, ENV, runs.env_params,
                                    runs_per_program=2, devices=DEVICES[:d])
            history = [programs.advance(dqn.step, chunks, ENV, length, runner.summarise_chunk)
                       for length in (n // 2, n - n // 2)]
            out.append((history, chunks.host_state()))
        assert out[0][0] == out[1][0]  # every summary, every run, every chunk
        assert_bits_equal(out[0][1], out[1][1])


    @check("train_and_resume_across_device_counts")
    def _():
        with tempfile.TemporaryDirectory() as tmp:
            kw = dict(seeds=3, target_chunks=4, runs_per_program=1)
            whole = runner.train(dqn, DQN, ENV, PARAMS, out_dir=f"{tmp}/a",
                                 devices=DEVICES[:1], **kw)
            split = runner.train(dqn, DQN, ENV, PARAMS, out_dir=f"{tmp}/b", devices=DEVICES,
                                 stop_after_chunks=2, **kw)
            assert split.done_chunks == 2
            resumed = runner.resume(f"{tmp}/b", dqn, ENV, PARAMS, devices=DEVICES[:2])
            assert resumed.finished and whole.history == resumed.history
            assert_bits_equal(whole.state, resumed.state)
            assert_bits_equal(runner.load(f"{tmp}/a", dqn, ENV, PARAMS)[1], resumed.state)


    # A small self-contained data-parallel learner: linear regression on data that each
    # environment draws from its own key (indexed by the global environment index), with
    # minirl's Adam on the mean loss over all environments: no axis argument anywhere, the
    # optimiser averages the gradients over the data axis that data_parallel declares.
    from minirl.core import data_axis
    from minirl.core.optim import adam_with_clipping

    class Toy(eqx.Module):
        w: jax.Array
        opt_state: optax.OptState
        x: jax.Array  # [E, 3] one "observation" per environment
        key: jax.Array

    TRUE_W = jnp.array([1.0, -2.0, 0.5])
    opt = adam_with_clipping(0.05, float("inf"))

    def toy_init(key, num_envs):
        w = jnp.zeros(3)
        return Toy(w, opt.init(w), jax.random.normal(key, (num_envs, 3)), key)

    def toy_step(state, config, env, env_params):
        key, data_key = jax.random.split(state.key)
        keys = data_axis.local_keys(data_key, state.x.shape[0])
        noise = jax.vmap(lambda k: jax.random.normal(k, (3,)))(keys)
        x = state.x + config["drift"] * noise
        y = x @ TRUE_W + 0.1 * noise[:, 0]
        loss, grad = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(state.w)
        updates, opt_state = opt.update(grad, state.opt_state)
        return Toy(state.w + updates, opt_state, x, key), {"loss": loss}

    FOUR = parallel.make_mesh(DEVICES)


    @check("data_parallel_toy")
    def _():
        state = toy_init(jax.random.PRNGKey(0), 8)
        config = {"drift": jnp.float32(0.3)}
        single_state, single_metrics = jax.jit(
            lambda s, c: jax.lax.scan(lambda s, _: toy_step(s, c, None, None), s, length=25)
        )(state, config)
        run = parallel.data_parallel(toy_step, FOUR, state, lambda s: s.x, None, length=25)
        dp_state, dp_metrics = run(state, config, None)
        assert len(dp_state.x.sharding.device_set) == 4
        np.testing.assert_allclose(dp_state.w, single_state.w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dp_state.x, single_state.x, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(dp_metrics["loss"], single_metrics["loss"], rtol=1e-5)
        assert float(single_metrics["loss"][-1]) < float(single_metrics["loss"][0])


    @check("data_parallel_ppo")
    def _():
        config = ppo.Config(total_steps=8 * 16 * 50, num_envs=8, rollout_steps=16,
                            num_epochs=2, num_minibatches=2, hidden=(16,),
                            normalize_observations=True)
        state = ppo.init(jax.random.PRNGKey(1), config, ENV, PARAMS)
        steps = 3
        single_state, single_metrics = jax.jit(
            lambda s, c, p: jax.lax.scan(lambda s, _: ppo.step(s, c, ENV, p), s, length=steps)
        )(state, config, PARAMS)
        run = parallel.data_parallel(ppo.step, FOUR, state, lambda s: s.env, ENV, length=steps)
        dp_state, dp_metrics = run(state, config, PARAMS)
        assert len(dp_state.env.obs.sharding.device_set) == 4
        for name in ("episodes", "env_steps"):
            np.testing.assert_array_equal(dp_metrics[name], single_metrics[name])
        for a, b in zip(
            jax.tree.leaves(eqx.filter(dp_state.learner.params, eqx.is_array)),
            jax.tree.leaves(eqx.filter(single_state.learner.params, eqx.is_array)),
        ):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dp_state.env.obs, single_state.env.obs, rtol=1e-4, atol=1e-5)


    @check("data_parallel_trpo_policy_step")
    def _():
        # TRPO's policy step (CG on averaged Fisher-vector products, line search on
        # whole-batch surrogates) equals one device's; its value regression shuffles each
        # shard's part of the batch, so the critic is compared only through its loss.
        from minirl.algos import trpo

        env, env_params = envs.make("Pendulum-v1")
        config = trpo.Config(total_steps=8 * 16 * 10, num_envs=8, rollout_steps=16,
                             hidden=(16,), normalize_observations=True)
        state = trpo.init(jax.random.PRNGKey(2), config, env, env_params)
        single_state, single_metrics = jax.jit(trpo.step, static_argnums=2)(
            state, config, env, env_params)
        run = parallel.data_parallel(trpo.step, FOUR, state, lambda s: s.env, env, length=1)
        dp_state, dp_metrics = run(state, config, env_params)
        for name in ("episodes", "env_steps", "accepted"):
            np.testing.assert_allclose(dp_metrics[name][0], single_metrics[name], rtol=1e-6)
        for name in ("kl", "expected_improvement", "step_fraction"):
            np.testing.assert_allclose(dp_metrics[name][0], single_metrics[name], rtol=1e-3,
                                       atol=1e-6)
        for a, b in zip(jax.tree.leaves(eqx.filter(dp_state.learner.params.actor, eqx.is_array)),
                        jax.tree.leaves(eqx.filter(single_state.learner.params.actor,
                                                   eqx.is_array))):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(dp_state.learner.params.obs_norm.mean,
                                   single_state.learner.params.obs_norm.mean, rtol=1e-5)


    json.dump(results, open(sys.argv[1], "w"))
    '''
)

CHECKS = [
    "same_bits_on_1_2_4_devices",
    "groups_run_on_distinct_devices",
    "chunked_runs_on_1_and_4_devices",
    "train_and_resume_across_device_counts",
    "data_parallel_toy",
    "data_parallel_ppo",
    "data_parallel_trpo_policy_step",
]


@pytest.fixture(scope="module")
def device_checks(tmp_path_factory):
    directory = tmp_path_factory.mktemp("devices")
    script, out = directory / "checks.py", directory / "results.json"
    script.write_text(SCRIPT)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env.pop("JAX_PLATFORMS", None)
    proc = subprocess.run(
        [sys.executable, str(script), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=560,
    )
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", CHECKS)
def test_on_four_forced_cpu_devices(device_checks, name):
    """same_bits_*: a sweep on 1, 2 and 4 devices is the same, bit for bit (DQN and PPO);
    groups_*: the groups really run on different devices; chunked_*: `minirl sweep`'s
    chunked trainer on 1 and 4 devices agrees exactly; train_and_resume_*: `minirl train`
    on 1 device equals a run stopped on 4 devices and resumed on 2; data_parallel_*:
    environments split over 4 devices, the optimiser averaging the gradients over the data
    axis == one device (one agent: equal up to float reassociation), for a regression
    learner, for PPO and for TRPO's policy step."""
    assert device_checks[name] == "ok", device_checks[name]
