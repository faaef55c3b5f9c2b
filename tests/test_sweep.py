"""Sweeps on one device: grids over config fields and env parameters, the grouping of runs
into K-wide programs (``minirl.programs``), ``sweep.run`` and chunked training against the
plain vmapped program, and one compile for every learning rate. (Several devices and
hosts: test_sweep_devices.py and test_sweep_multihost.py, in subprocesses.)"""

import dataclasses

import jax
import numpy as np
import pytest

from minirl import configs, distributed, envs, programs, runner, sweep
from minirl.algos import dqn, ppo
from minirl.core.config import ConfigError, stack

pytestmark = pytest.mark.timeout(300)

BASE = dqn.Config(total_steps=800, hidden=(16,), buffer_size=400, learning_starts=200,
                  batch_size=16)
ENV, PARAMS = envs.make("CartPole-v1")


def test_grid_is_every_combination_first_name_slowest():
    assert sweep.grid(lr=[1, 2], gamma=[0.9, 0.99]) == [
        {"lr": 1, "gamma": 0.9},
        {"lr": 1, "gamma": 0.99},
        {"lr": 2, "gamma": 0.9},
        {"lr": 2, "gamma": 0.99},
    ]
    assert sweep.zip_values(lr=[1, 2], gamma=[0.9, 0.99]) == [
        {"lr": 1, "gamma": 0.9},
        {"lr": 2, "gamma": 0.99},
    ]
    with pytest.raises(ConfigError, match="equal lengths"):
        sweep.zip_values(lr=[1, 2], gamma=[0.9])


def test_grid_names_aliases_static_fields_and_env_parameters():
    assert configs.sweepable_field(dqn.Config, "lr") == "learning_rate"
    with pytest.raises(ConfigError, match=r"field 'hidden' of dqn is static"):
        configs.sweepable_field(dqn.Config, "hidden")
    with pytest.raises(ConfigError, match="unknown field 'nope'"):
        configs.sweepable_field(dqn.Config, "nope")
    pairs = sweep.configs_for(BASE, ENV, PARAMS, sweep.grid(lr=[1e-3], **{"env.gravity": [3.7]}))
    (config, params), = pairs
    assert config.learning_rate == 1e-3 and params.gravity == 3.7
    with pytest.raises(ConfigError, match="gamma"):  # validated as built
        sweep.configs_for(BASE, ENV, PARAMS, [{"gamma": 1.5}])
    with pytest.raises(ConfigError, match="unknown env parameter 'gravty'"):
        sweep.configs_for(BASE, ENV, PARAMS, [{"env.gravty": 1.0}])


def test_expand_is_configuration_major_with_common_seeds():
    runs = sweep.expand(BASE, ENV, PARAMS,
                        sweep.grid(lr=[1e-3, 1e-4], **{"env.max_steps_in_episode": [50, 100]}),
                        seeds=2, seed=5)
    assert runs.num_runs == 8 and runs.rows.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    np.testing.assert_allclose(runs.configs.learning_rate, np.repeat([1e-3, 1e-4], 4))
    np.testing.assert_array_equal(runs.env_params.max_steps_in_episode,
                                  [50, 50, 100, 100, 50, 50, 100, 100])
    np.testing.assert_array_equal(runs.keys[0], runs.keys[2])  # the same seeds everywhere
    np.testing.assert_array_equal(runs.keys[:2], jax.random.split(jax.random.PRNGKey(5), 2))


def test_groups_pad_the_last_and_share_groups_out_over_processes_and_devices():
    groups = programs.plan_groups(5, 2, devices=["d0", "d1"], process_index=0, process_count=1)
    assert [g.rows.tolist() for g in groups] == [[0, 1], [2, 3], [4, 4]]
    assert [g.real for g in groups] == [2, 2, 1]
    assert [g.device for g in groups] == ["d0", "d1", "d0"]
    mine = programs.plan_groups(5, 2, devices=["d0"], process_index=1, process_count=2)
    assert [g.index for g in mine] == [1]
    assert programs.default_runs_per_program(4) == 1
    assert programs.default_runs_per_program(16) == 2
    assert programs.default_runs_per_program(1000) == 125
    with pytest.raises(ConfigError, match="runs_per_program=0"):
        programs.plan_groups(5, 0)


def _groupwise_vmap(train_fn, runs, k):
    """The reference: jit(vmap(train)) on each K-wide group, padded like the sweep."""
    program = jax.jit(jax.vmap(train_fn, in_axes=(0, 0, None, 0)), static_argnums=2)
    outs = []
    for g in programs.plan_groups(runs.num_runs, k, process_index=0, process_count=1):
        rows, real = g.rows, g.real

        def take(tree, rows=rows):
            return jax.tree.map(lambda x: np.asarray(x)[rows], tree)

        out = program(take(runs.keys), take(runs.configs), ENV, take(runs.env_params))
        outs.append(jax.tree.map(lambda x, real=real: np.asarray(x)[:real], out))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


def test_sweep_is_the_groupwise_vmapped_program_bit_for_bit():
    runs = sweep.expand(BASE, ENV, PARAMS, sweep.grid(lr=[1e-3, 1e-4, 3e-4]), seeds=1)
    rows, (state, metrics) = sweep.run(dqn.train, runs, ENV, runs_per_program=2)
    assert rows.tolist() == [0, 1, 2]
    ref_state, ref_metrics = _groupwise_vmap(dqn.train, runs, 2)
    for a, b in zip(jax.tree.leaves((state, metrics)), jax.tree.leaves((ref_state, ref_metrics))):
        np.testing.assert_array_equal(a, b)


def test_chunked_training_equals_the_whole_run_bit_for_bit():
    runs = sweep.expand(BASE, ENV, PARAMS, sweep.grid(lr=[1e-3, 1e-4]), seeds=2)
    iterations = BASE.num_iterations
    chunks = programs.start(dqn.init, runs.keys, runs.configs, ENV, runs.env_params,
                            runs_per_program=2)
    history = [programs.advance(dqn.step, chunks, ENV, length, runner.summarise_chunk)
               for length in (iterations // 4, iterations // 2, iterations // 4)]
    _, (_, metrics) = sweep.run(dqn.train, runs, ENV, runs_per_program=2)
    episodes = np.stack([np.asarray(h["episodes"]) for h in history], axis=1)
    quarters = np.split(np.asarray(metrics["episodes"]), [iterations // 4, 3 * iterations // 4],
                        axis=1)
    np.testing.assert_array_equal(episodes, np.stack([q.sum(1) for q in quarters], axis=1))
    loss = np.stack([np.asarray(h["loss"]) for h in history], axis=1)
    want = np.stack([q.mean(1) for q in np.split(np.asarray(metrics["loss"]),
                                                  [iterations // 4, 3 * iterations // 4],
                                                  axis=1)], axis=1)
    np.testing.assert_allclose(loss, want, rtol=1e-6)  # the same numbers, summed in float64
    assert [row["nonfinite"] for row in history] == [[0.0] * 4] * 3


def test_three_learning_rates_through_the_readme_api_compile_once():
    # A fresh function: jax shares one compilation cache among every jit of the same
    # function object, so other tests' calls of jax.jit(ppo.train) would be counted here.
    train = jax.jit(lambda *args: ppo.train(*args), static_argnums=2)
    config = ppo.Config(total_steps=1024, num_envs=4, rollout_steps=32, hidden=(8,))
    for lr in (1e-3, 3e-4, 1e-4):
        train(jax.random.PRNGKey(0), dataclasses.replace(config, learning_rate=lr), ENV, PARAMS)
    assert train._cache_size() == 1


def test_vmap_over_env_parameters_equals_separate_runs():
    """One agent per pole length in one program; each row equals its own run (integers
    exactly, floats to reassociation)."""
    config = ppo.Config(total_steps=2048, num_envs=4, rollout_steps=32, hidden=(8,))
    lengths = [0.25, 1.0]
    params = [envs.make("CartPole-v1", length=x)[1] for x in lengths]
    assert params[0].polemass_length == pytest.approx(0.025)  # derived fields follow
    train = jax.jit(ppo.train, static_argnums=2)
    vmapped = jax.jit(jax.vmap(ppo.train, in_axes=(None, None, None, 0)), static_argnums=2)
    _, batched = vmapped(jax.random.PRNGKey(0), config, ENV, envs.stack_params(params))
    for i, p in enumerate(params):
        _, single = train(jax.random.PRNGKey(0), config, ENV, p)
        np.testing.assert_array_equal(single["episodes"][:3], batched["episodes"][i][:3])
        np.testing.assert_allclose(single["value_loss"][:3], batched["value_loss"][i][:3],
                                   rtol=1e-4, atol=1e-5)


def test_sweep_rejects_unbatched_configs():
    runs = sweep.Runs(jax.random.split(jax.random.PRNGKey(0), 3), BASE, PARAMS,
                      np.arange(3)[None])
    with pytest.raises(ConfigError, match="batched along a leading axis of 3"):
        sweep.run(dqn.train, runs, ENV)
    assert stack([BASE, BASE]).learning_rate.shape == (2,)


def test_merge_slices_checks_every_row(tmp_path):
    distributed.write_slice(str(tmp_path), [0, 1, 2], ["a", "b", "c"])
    assert distributed.merge_slices(str(tmp_path), 3) == ["a", "b", "c"]
    with pytest.raises(ConfigError, match=r"runs \[3\] are in no slice"):
        distributed.merge_slices(str(tmp_path), 4)
    with pytest.raises(ConfigError, match="slice .* of process 1 is missing"):
        distributed.merge_slices(str(tmp_path), 3, process_count=2)
