"""Comparing runs (``minirl.compare``): the interquartile mean against scipy's trimmed mean,
the stratified bootstrap against an exact enumeration of its distribution, the coverage of
the intervals in a seeded simulation, and ``minirl compare`` on synthetic runs and on a
sweep."""

import itertools
import json
import os

import numpy as np
import pytest
from scipy import stats

from minirl import cli, compare, envs, results, runner
from minirl.algos import dqn

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 10, 13])
def test_iqm_is_scipys_trimmed_mean(n):
    x = np.random.default_rng(n).normal(size=(n, 3))
    assert compare.iqm(x) == pytest.approx(stats.trim_mean(x, 0.25, axis=None))
    np.testing.assert_allclose(compare.iqm(x.T, axis=-1), stats.trim_mean(x, 0.25, axis=0))


def exact_distribution(columns, statistic):
    """Every stratified resample (each task's runs drawn with replacement, each ordered
    draw equally likely): the values of the statistic, all equally probable."""
    per_task = [list(itertools.product(column, repeat=len(column))) for column in columns]
    return np.array([statistic(np.concatenate(draw)) for draw in itertools.product(*per_task)])


@pytest.mark.parametrize(
    "scores",
    [np.array([[1.0], [2.0], [4.0], [8.0]]),  # one task, 4 runs: 4^4 resamples
     np.array([[0.0, 10.0], [1.0, 30.0], [5.0, 20.0]])],  # two tasks of 3 runs: 27 × 27
)
def test_the_bootstrap_distribution_is_the_exact_stratified_one(scores):
    """The empirical CDF of 40,000 replicates against the exact CDF of every stratified
    resample, at every point of its support (a resample that mixed tasks would have other
    values)."""
    replicates = compare.stratified_bootstrap(scores, reps=40_000,
                                              rng=np.random.default_rng(1))
    exact = exact_distribution(scores.T, compare.iqm)
    for value in np.unique(exact):
        assert np.mean(replicates <= value + 1e-9) == pytest.approx(
            np.mean(exact <= value + 1e-9), abs=0.012)


def test_intervals_cover_the_true_iqm_at_their_level():
    """200 seeded data sets of 20 scores from N(3, 2²) (whose IQM is 3 by symmetry): the
    95 % interval covers 3 in about 95 % of them (the percentile bootstrap runs a little
    short at n = 20)."""
    rng = np.random.default_rng(0)
    covered = []
    for i in range(200):
        estimate = compare.interval(rng.normal(3.0, 2.0, 20), reps=2000, seed=i)
        covered.append(estimate.low <= 3.0 <= estimate.high)
    assert 0.88 <= np.mean(covered) <= 0.99


def write_run(directory, finals, evals=None, chunks=5, first_seed=0):
    """A synthetic run directory as ``minirl train`` writes it: the history ends at each
    seed's final return (one episode per chunk), evaluated at the last two chunks."""
    os.makedirs(directory, exist_ok=True)
    seeds = len(finals)
    history = []
    for c in range(chunks):
        scale = (c + 1) / chunks
        row = {"episodes": [1] * seeds, "episode_return_sum": [scale * f for f in finals],
               "episode_length_sum": [200] * seeds, "env_steps": [(c + 1) * 100] * seeds,
               "loss": [0.1] * seeds}
        if evals is not None:
            row["eval_return"] = ([float("nan")] * seeds if c < chunks - 2
                                  else [scale * e for e in evals])
        history.append(row)
    summary = {"algo": "sac", "env": "Pendulum-v1", "seeds": seeds, "first_seed": first_seed,
               "final_returns": list(finals), "median_final_return": float(np.median(finals))}
    if evals is not None:
        summary["final_eval_returns"] = list(evals)
    results.write_json(os.path.join(directory, "summary.json"), summary)
    results.write_metrics_csv(os.path.join(directory, "metrics.csv"), history, seeds,
                              first_seed)


def test_compare_two_synthetic_runs(tmp_path, capsys):
    """Two runs of 30 seeds drawn from N(−150, 10²) and N(−200, 10²): the table's IQM is
    the trimmed mean of each run's final returns, and each interval covers its run's true
    IQM (−150, −200)."""
    rng = np.random.default_rng(42)
    a, b = rng.normal(-150, 10, 30), rng.normal(-200, 10, 30)
    write_run(tmp_path / "a", a.tolist(), evals=(a + 5).tolist())
    write_run(tmp_path / "b", b.tolist(), evals=(b + 5).tolist(), first_seed=100)
    out = tmp_path / "compare.png"
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                     str(out)]) == 0
    lines, rows = compare.compare([str(tmp_path / "a"), str(tmp_path / "b")])
    for row, scores, truth in zip(rows, (a, b), (-150, -200)):
        assert row["seeds"] == 30
        assert row["iqm"] == pytest.approx(stats.trim_mean(scores, 0.25))
        assert row["median"] == pytest.approx(np.median(scores))
        assert row["low"] < truth < row["high"] and row["high"] - row["low"] < 15
        assert row["eval_iqm"] == pytest.approx(stats.trim_mean(scores + 5, 0.25))
    # the curves: per seed, the mean return of each chunk; evaluations at the last two
    np.testing.assert_allclose(lines[0].curves[:, -1], a)
    np.testing.assert_allclose(lines[0].steps, [100, 200, 300, 400, 500])
    np.testing.assert_allclose(lines[1].eval_steps, [400, 500])
    np.testing.assert_allclose(lines[1].eval_curves[:, -1], b + 5, rtol=1e-12)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "IQM" in printed and f"{stats.trim_mean(a, 0.25):.1f}" in printed
    assert "greedy" in printed


def test_compare_a_sweep_gives_a_line_per_configuration(tmp_path):
    """A real (tiny) sweep with evaluation: its summary has greedy final returns per
    configuration, its metrics.csv every run's curve, and compare draws one line per
    configuration."""
    env, env_params = envs.make("CartPole-v1")
    base = dqn.Config(total_steps=600, hidden=(8,), buffer_size=300, learning_starts=100,
                      batch_size=8)
    out = tmp_path / "sweep"
    summary = runner.sweep(dqn, base, env, env_params, {"learning_rate": [1e-3, 1e-4]},
                           seeds=2, out_dir=str(out), target_chunks=4, eval_every=300,
                           eval_episodes=2)
    assert summary["eval_every"] == 300
    for configuration in summary["configurations"]:
        assert len(configuration["final_eval_returns"]) == 2
    lines, rows = compare.compare([str(out)], out=str(tmp_path / "c.png"))
    assert [line.label for line in lines] == ["sweep: learning_rate=0.001",
                                              "sweep: learning_rate=0.0001"]
    for line, configuration in zip(lines, summary["configurations"]):
        assert line.curves.shape == (2, 4) and line.eval_curves.shape == (2, 2)
        np.testing.assert_allclose(line.eval_curves[:, -1], configuration["final_eval_returns"])
        np.testing.assert_allclose(line.finals, configuration["final_returns"])
    assert {"eval_iqm", "iqm"} <= rows[0].keys()


def test_compare_refuses_a_directory_without_a_summary(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no summary.json" in err and len(err.splitlines()) == 1
    (tmp_path / "summary.json").write_text(json.dumps({"algo": "x"}))
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert "not a minirl run's summary" in capsys.readouterr().err
