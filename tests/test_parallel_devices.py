"""Sharded sweeps and data-parallel training on several forced CPU devices.

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

pytestmark = pytest.mark.timeout(420)

SCRIPT = textwrap.dedent(
    '''
    import json, sys, traceback

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import PartitionSpec as P

    from minirl import parallel
    from minirl.algos import dqn, ppo

    assert jax.device_count() == 4, jax.devices()
    results = {}


    def check(name):
        def wrap(fn):
            try:
                fn()
                results[name] = "ok"
            except Exception:
                results[name] = traceback.format_exc()
            return fn
        return wrap


    def assert_runs_equal(a, b, rtol=1e-5, atol=1e-6):
        """Integer leaves (episode counts, steps, actions) exactly; floats to tolerance: XLA
        may pick other kernels for another per-device batch size (float reassociation)."""
        la = jax.tree.leaves(eqx.filter(a, eqx.is_array))
        lb = jax.tree.leaves(eqx.filter(b, eqx.is_array))
        assert len(la) == len(lb)
        for x, y in zip(la, lb):
            x, y = np.asarray(x), np.asarray(y)
            assert x.shape == y.shape, (x.shape, y.shape)
            if np.issubdtype(x.dtype, np.floating):
                np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)
            else:
                np.testing.assert_array_equal(x, y)


    BASE = dqn.Config(env_id="CartPole-v1", total_steps=800, hidden=(16,), buffer_size=400,
                      learning_starts=200, batch_size=16)
    ONE = parallel.make_mesh(jax.devices()[:1])
    FOUR = parallel.make_mesh()


    @check("sharded_sweep")
    def _():
        # 3 configurations × 2 seeds = 6 runs: padded to 8 on 4 devices; 4 runs: no padding.
        configs = parallel.configs_for(BASE, parallel.grid(lr=[1e-3, 3e-4, 1e-4], gamma=[0.95]))
        keys, batched, rows = parallel.expand(configs, 2)
        sharded = parallel.sweep(dqn.train, keys, batched, mesh=FOUR)
        single = parallel.sweep(dqn.train, keys, batched, mesh=ONE)
        assert jax.tree.leaves(sharded[1])[0].shape[0] == 6
        assert_runs_equal(sharded, single)
        four = parallel.sweep(dqn.train, keys[:4], jax.tree.map(lambda x: x[:4], batched))
        assert_runs_equal(four, jax.tree.map(lambda x: x[:4], single))
        # The work really is split: one block of rows per device, padding dropped.
        padded = parallel._run_padded(dqn.train, keys, batched, FOUR)
        loss = padded[1]["loss"]
        assert loss.shape[0] == 8 and len(loss.addressable_shards) == 4
        assert {s.data.shape[0] for s in loss.addressable_shards} == {2}
        rows_here, local = parallel.local_rows(padded, 6)
        np.testing.assert_array_equal(rows_here, np.arange(6))
        np.testing.assert_array_equal(local[1]["loss"], np.asarray(sharded[1]["loss"]))


    @check("chunked_sweep")
    def _():
        # The chunked trainer (minirl sweep) on 4 devices equals one train call per run.
        configs = parallel.configs_for(BASE, parallel.grid(lr=[1e-3, 1e-4], gamma=[0.9, 0.99]))
        keys, batched, rows = parallel.expand(configs, 1, seed=3)
        summarise = lambda m: {"loss": m["loss"], "episodes": m["episodes"]}
        iters = BASE.num_iterations
        run = parallel.train_chunked(dqn.init, dqn.step, keys, batched, [iters // 2, iters // 2],
                                     summarise, mesh=FOUR)
        _, metrics = jax.jit(jax.vmap(dqn.train))(keys, batched)
        np.testing.assert_array_equal(run.rows, np.arange(4))
        chunked_loss = np.concatenate([np.asarray(h["loss"]) for h in run.history], axis=1)
        np.testing.assert_allclose(chunked_loss, metrics["loss"], rtol=1e-5, atol=1e-6)
        episodes = np.concatenate([np.asarray(h["episodes"]) for h in run.history], axis=1)
        np.testing.assert_array_equal(episodes, metrics["episodes"])


    # A small self-contained data-parallel learner: linear regression on data that each
    # environment draws from its own key (indexed by the global environment index), with
    # Adam on the mean loss over all environments: gradients pmean-ed over the axis.
    class Toy(eqx.Module):
        w: jax.Array
        opt_state: optax.OptState
        x: jax.Array  # [E, 3] one "observation" per environment
        key: jax.Array

    TRUE_W = jnp.array([1.0, -2.0, 0.5])
    opt = optax.adam(0.05)

    def toy_init(key, num_envs):
        w = jnp.zeros(3)
        return Toy(w, opt.init(w), jax.random.normal(key, (num_envs, 3)), key)

    def toy_step(state, config, axis_name=None):
        num_local = state.x.shape[0]
        key, data_key = jax.random.split(state.key)
        shards = 1 if axis_name is None else jax.lax.psum(1, axis_name)
        keys = jax.random.split(data_key, num_local * shards)
        if axis_name is not None:
            first = jax.lax.axis_index(axis_name) * num_local
            keys = jax.lax.dynamic_slice_in_dim(keys, first, num_local)
        noise = jax.vmap(lambda k: jax.random.normal(k, (3,)))(keys)
        x = state.x + config["drift"] * noise
        y = x @ TRUE_W + 0.1 * noise[:, 0]
        loss, grad = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(state.w)
        if axis_name is not None:
            grad, loss = jax.lax.pmean((grad, loss), axis_name)
        updates, opt_state = opt.update(grad, state.opt_state)
        return Toy(state.w + updates, opt_state, x, key), {"loss": loss}


    @check("data_parallel_toy")
    def _():
        state = toy_init(jax.random.PRNGKey(0), 8)
        config = {"drift": jnp.float32(0.3)}
        single_state, single_metrics = jax.jit(
            lambda s, c: jax.lax.scan(lambda s, _: toy_step(s, c), s, length=25)
        )(state, config)
        run = parallel.data_parallel(toy_step, FOUR, state, lambda s: s.x, length=25)
        dp_state, dp_metrics = run(state, config)
        assert len(dp_state.x.sharding.device_set) == 4
        np.testing.assert_allclose(dp_state.w, single_state.w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dp_state.x, single_state.x, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(dp_metrics["loss"], single_metrics["loss"], rtol=1e-5)
        assert float(single_metrics["loss"][-1]) < float(single_metrics["loss"][0])


    @check("data_parallel_ppo")
    def _():
        config = ppo.Config(env_id="CartPole-v1", total_steps=8 * 16 * 50, num_envs=8,
                            rollout_steps=16, num_epochs=2, num_minibatches=2, hidden=(16,),
                            normalize_observations=True)
        state = ppo.init(jax.random.PRNGKey(1), config)
        steps = 3
        single_state, single_metrics = jax.jit(
            lambda s, c: jax.lax.scan(lambda s, _: ppo.step(s, c), s, length=steps)
        )(state, config)
        run = parallel.data_parallel(ppo.step, FOUR, state, lambda s: s.env, length=steps)
        dp_state, dp_metrics = run(state, config)
        assert len(dp_state.env.obs.sharding.device_set) == 4
        for name in ("episodes", "env_steps"):
            np.testing.assert_array_equal(dp_metrics[name], single_metrics[name])
        for a, b in zip(
            jax.tree.leaves(eqx.filter(dp_state.params, eqx.is_array)),
            jax.tree.leaves(eqx.filter(single_state.params, eqx.is_array)),
        ):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dp_state.env.obs, single_state.env.obs, rtol=1e-4, atol=1e-5)


    json.dump(results, open(sys.argv[1], "w"))
    '''
)

CHECKS = ["sharded_sweep", "chunked_sweep", "data_parallel_toy", "data_parallel_ppo"]


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
        timeout=360,
    )
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", CHECKS)
def test_on_four_forced_cpu_devices(device_checks, name):
    """sharded_sweep: sharded == single-device sweep (6 runs, padded to 8; and 4 runs);
    chunked_sweep: `minirl sweep`'s chunked trainer on 4 devices == one train per run;
    data_parallel_*: environments split over 4 devices with pmean-ed gradients == one
    device, for a small regression learner and for PPO."""
    assert device_checks[name] == "ok", device_checks[name]
