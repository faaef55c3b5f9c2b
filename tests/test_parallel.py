"""Sweeps on one device: grids, configs, `parallel.sweep` against separate runs, and the
`minirl sweep` command. (Several devices and hosts: test_parallel_devices.py and
test_parallel_multihost.py, in subprocesses.)"""

import json

import equinox as eqx
import jax
import numpy as np
import pytest

from minirl import cli, parallel
from minirl.algos import dqn
from minirl.core.config import stack

pytestmark = pytest.mark.timeout(300)

BASE = dqn.Config(
    env_id="CartPole-v1", total_steps=800, hidden=(16,), buffer_size=400, learning_starts=200,
    batch_size=16,
)


def test_grid_is_every_combination_first_name_slowest():
    assert parallel.grid(lr=[1, 2], gamma=[0.9, 0.99]) == [
        {"lr": 1, "gamma": 0.9},
        {"lr": 1, "gamma": 0.99},
        {"lr": 2, "gamma": 0.9},
        {"lr": 2, "gamma": 0.99},
    ]
    assert parallel.zip_values(lr=[1, 2], gamma=[0.9, 0.99]) == [
        {"lr": 1, "gamma": 0.9},
        {"lr": 2, "gamma": 0.99},
    ]
    with pytest.raises(ValueError, match="equal lengths"):
        parallel.zip_values(lr=[1, 2], gamma=[0.9])


def test_grid_names_aliases_and_static_fields():
    assert parallel.sweepable_field(dqn.Config, "lr") == "learning_rate"
    assert parallel.sweepable_field(dqn.Config, "gamma") == "gamma"
    with pytest.raises(ValueError, match=r"field 'hidden' of dqn is static"):
        parallel.sweepable_field(dqn.Config, "hidden")
    with pytest.raises(ValueError, match="unknown field 'nope'"):
        parallel.sweepable_field(dqn.Config, "nope")
    configs = parallel.configs_for(BASE, parallel.grid(lr=[1e-3, 1e-4]))
    assert [c.learning_rate for c in configs] == [1e-3, 1e-4]
    with pytest.raises(ValueError, match="gamma"):  # validated as built
        parallel.configs_for(BASE, [{"gamma": 1.5}])
    assert parallel.parse_grid(dqn.Config, ["lr=1e-3,3e-4", "target_update_period=10,20"]) == {
        "learning_rate": [1e-3, 3e-4],
        "target_update_period": [10, 20],
    }


def test_expand_is_configuration_major_with_common_seeds():
    configs = parallel.configs_for(BASE, parallel.grid(lr=[1e-3, 1e-4, 3e-4]))
    keys, batched, rows = parallel.expand(configs, seeds=2, seed=5)
    assert keys.shape[0] == 6 and rows.tolist() == [[0, 1], [2, 3], [4, 5]]
    np.testing.assert_allclose(batched.learning_rate, np.repeat([1e-3, 1e-4, 3e-4], 2))
    np.testing.assert_array_equal(keys[0], keys[2])  # same seed keys for every config
    np.testing.assert_array_equal(keys[:2], jax.random.split(jax.random.PRNGKey(5), 2))


def test_sweep_equals_vmap_bitwise_and_separate_runs():
    configs = parallel.configs_for(BASE, parallel.zip_values(lr=[1e-3, 1e-4], gamma=[0.9, 0.99]))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    state, metrics = parallel.sweep(dqn.train, keys, configs)  # a list is stacked
    # On one device the sweep *is* the vmapped program: bit for bit.
    ref_state, ref_metrics = jax.jit(jax.vmap(dqn.train))(keys, stack(configs))
    for a, b in zip(jax.tree.leaves(metrics), jax.tree.leaves(ref_metrics)):
        np.testing.assert_array_equal(a, b)
    # Against separate runs: every integer output (steps, episodes, episode lengths) is
    # identical; float outputs agree to float reassociation (XLA's CPU backend picks other
    # reduction / vectorised kernels for batched and unbatched shapes).
    single = jax.jit(dqn.train)
    for i, config in enumerate(configs):
        one_state, one_metrics = single(keys[i], config)
        for name, value in one_metrics.items():
            if np.issubdtype(np.asarray(value).dtype, np.integer):
                np.testing.assert_array_equal(value, metrics[name][i], err_msg=name)
            else:
                np.testing.assert_allclose(value, metrics[name][i], rtol=1e-5, atol=1e-6)
        for a, b in zip(
            jax.tree.leaves(eqx.filter(one_state.params, eqx.is_array)),
            jax.tree.leaves(eqx.filter(state.params, eqx.is_array)),
        ):
            np.testing.assert_allclose(a, b[i], rtol=1e-5, atol=1e-6)


def test_sweep_rejects_unbatched_configs():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match="batched along a leading axis of 3"):
        parallel.sweep(dqn.train, keys, BASE)


def test_merge_slices_checks_every_row(tmp_path):
    parallel.write_slice(str(tmp_path), [0, 1, 2], ["a", "b", "c"])
    assert parallel.merge_slices(str(tmp_path), 3) == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"runs \[3\] are in no slice"):
        parallel.merge_slices(str(tmp_path), 4)
    with pytest.raises(ValueError, match="slice .* of process 1 is missing"):
        parallel.merge_slices(str(tmp_path), 3, process_count=2)


TINY = [
    "--steps", "1000", "--seeds", "2", "--chunks", "2", "--set", "hidden=16",
    "--set", "buffer_size=500", "--set", "learning_starts=200", "--set", "batch_size=16",
]


def test_sweep_command_writes_summary_table_and_plot(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = cli.main(
        ["sweep", "dqn", "--env", "CartPole-v1", "--grid", "lr=1e-3,1e-4",
         "--grid", "gamma=0.9,0.99", "--out", str(out), *TINY]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["swept"] == {"learning_rate": [1e-3, 1e-4], "gamma": [0.9, 0.99]}
    assert summary["seeds"] == 2 and summary["runs"] == 8 and summary["steps"] == 1000
    configurations = summary["configurations"]
    assert [c["values"] for c in configurations] == [
        {"learning_rate": lr, "gamma": g} for lr in (1e-3, 1e-4) for g in (0.9, 0.99)
    ]
    for c in configurations:
        assert len(c["final_returns"]) == 2
        assert c["median_final_return"] == pytest.approx(np.median(c["final_returns"]))
    medians = [configurations[c]["median_final_return"] for c in summary["ranking"]]
    assert medians == sorted(medians, reverse=True)
    assert sorted(c["rank"] for c in configurations) == [1, 2, 3, 4]
    assert (out / "sweep.png").stat().st_size > 0
    printed = capsys.readouterr()
    assert "ranked by median final return" in printed.out and "learning_rate" in printed.out
    assert "env steps/run" in printed.err  # progress


@pytest.mark.parametrize(
    "grid, message",
    [
        (["hidden=16,32"], "field 'hidden' of dqn is static"),
        (["lr=fast"], "learning_rate='fast' is not a valid float"),
        (["nope=1,2"], "unknown field 'nope'"),
        (["gamma=0.9,1.5"], "gamma=1.5 is out of range"),
        ([], "give at least one --grid"),
    ],
)
def test_sweep_command_bad_grid_is_one_line_error(tmp_path, capsys, grid, message):
    args = ["sweep", "dqn", "--env", "CartPole-v1", "--out", str(tmp_path)]
    for g in grid:
        args += ["--grid", g]
    assert cli.main(args) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
