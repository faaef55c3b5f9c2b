"""The command line as a user runs it: outputs, resume, eval, and one-line errors."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from minirl import checkpoint, cli, runner

pytestmark = pytest.mark.timeout(600)

TINY = [
    "--steps",
    "1200",
    "--seeds",
    "2",
    "--chunks",
    "4",
    "--set",
    "hidden=16",
    "--set",
    "buffer_size=1000",
    "--set",
    "learning_starts=200",
    "--set",
    "batch_size=16",
]


def train(out, *extra):
    return cli.main(["train", "dqn", "--env", "CartPole-v1", "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert train(out) == 0
    return out


def test_train_writes_summary_metrics_curve_and_checkpoint(finished_run, capsys):
    summary = json.loads((finished_run / "summary.json").read_text())
    for key in (
        "algo",
        "env",
        "steps",
        "seeds",
        "final_returns",
        "median_final_return",
        "wall_seconds",
        "env_steps_per_second",
    ):
        assert key in summary
    assert summary["algo"] == "dqn" and summary["env"] == "CartPole-v1"
    assert summary["steps"] == 1200 and summary["seeds"] == 2
    assert len(summary["final_returns"]) == 2
    assert summary["median_final_return"] == pytest.approx(np.median(summary["final_returns"]))
    lines = (finished_run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("chunk,seed,env_steps") and len(lines) == 1 + 4 * 2
    assert (finished_run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (finished_run / runner.CHECKPOINT).exists()


def test_resume_equals_uninterrupted(finished_run, tmp_path):
    assert train(tmp_path, "--stop-after-chunks", "1") == 0
    assert not (tmp_path / "summary.json").exists()
    assert cli.main(["train", "dqn", "--resume", str(tmp_path)]) == 0
    assert (tmp_path / "metrics.csv").read_text() == (finished_run / "metrics.csv").read_text()
    a = json.loads((tmp_path / "summary.json").read_text())
    b = json.loads((finished_run / "summary.json").read_text())
    assert a["final_returns"] == b["final_returns"]
    state_a = runner.load_run(str(tmp_path), cli._algorithms())[1]
    state_b = runner.load_run(str(finished_run), cli._algorithms())[1]
    for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_eval_reports_greedy_returns(finished_run, capsys):
    assert cli.main(["eval", str(finished_run), "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "seed 0" in out and "seed 1" in out and "median over seeds" in out


def test_list_shows_algorithms_and_envs(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "dqn" in out and "CartPole-v1" in out and "Breakout-MinAtar" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "nosuch", "--env", "CartPole-v1"], "unknown algorithm 'nosuch'"),
        (["train", "dqn", "--env", "NoSuchEnv-v9"], "NoSuchEnv-v9"),
        (["train", "dqn", "--env", "Pendulum-v1"], "continuous actions"),
        (["train", "dqn", "--env", "CartPole-v1", "--set", "gamma=2"], "gamma=2"),
        (["train", "dqn", "--env", "CartPole-v1", "--set", "colour=red"], "unknown field 'colour'"),
        (["train", "dqn", "--env", "CartPole-v1", "--set", "batch_size=big"], "batch_size='big'"),
        (["train", "dqn", "--env", "CartPole-v1", "--seeds", "0"], "--seeds=0"),
        (["train", "dqn"], "--env is required"),
        (["eval", "/nonexistent/run"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_subprocess_error_has_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "minirl", "train", "dqn", "--env", "Pendulum-v1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "continuous actions" in result.stderr


def test_corrupt_and_foreign_checkpoints_are_refused(finished_run, tmp_path, capsys):
    # Truncated copy.
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    data = (finished_run / runner.CHECKPOINT).read_bytes()
    (truncated / runner.CHECKPOINT).write_bytes(data[: len(data) // 2])
    assert cli.main(["eval", str(truncated)]) == cli.EXIT_USAGE
    assert "corrupt or truncated" in capsys.readouterr().err
    # A foreign file (not a checkpoint at all).
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    np.savez(foreign / runner.CHECKPOINT, weights=np.zeros(3))
    assert cli.main(["train", "dqn", "--resume", str(foreign)]) == cli.EXIT_USAGE
    assert "not a minirl checkpoint" in capsys.readouterr().err
    # A checkpoint of a different shape of state (another config) cannot load into this one.
    state = runner.load_run(str(finished_run), cli._algorithms())[1]
    meta = checkpoint.read_metadata(finished_run / runner.CHECKPOINT)
    meta["config"]["hidden"] = [32]
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    checkpoint.save(mismatched / runner.CHECKPOINT, state, meta)
    assert cli.main(["eval", str(mismatched)]) == cli.EXIT_USAGE
    assert "different algorithm or config" in capsys.readouterr().err


def test_existing_checkpoint_survives_a_failed_save(finished_run, tmp_path, monkeypatch):
    path = tmp_path / runner.CHECKPOINT
    path.write_bytes((finished_run / runner.CHECKPOINT).read_bytes())
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(OSError):
        checkpoint.save(path, {"x": np.ones(3)}, {})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [runner.CHECKPOINT]  # no temp file left


def test_refuses_to_overwrite_an_existing_run(finished_run, capsys):
    assert train(finished_run) == cli.EXIT_USAGE
    assert "--resume" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "minirl",
            "train",
            "dqn",
            "--env",
            "CartPole-v1",
            "--out",
            str(out),
            *TINY,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    assert "median" in result.stdout and "env steps/s" in result.stderr
    assert (out / "summary.json").exists()


def test_plan_writes_the_train_summary_files(tmp_path, capsys):
    out = tmp_path / "plan"
    code = cli.main(
        ["plan", "cem", "--env", "Pendulum-v1", "--seeds", "2", "--steps", "20", "--out", str(out),
         "--set", "horizon=8", "--set", "num_samples=32", "--set", "num_elites=4"]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("algo", "env", "steps", "seeds", "final_returns", "median_final_return",
                "wall_seconds", "env_steps_per_second"):
        assert key in summary
    assert summary["algo"] == "cem" and summary["env"] == "Pendulum-v1"
    assert summary["steps"] == 20 and len(summary["final_returns"]) == 2
    assert summary["options"]["horizon"] == 8
    assert np.median(summary["final_returns"]) == pytest.approx(summary["median_final_return"])
    assert (out / "curve.png").stat().st_size > 0
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 20
    # the last return_so_far of each seed is its final return
    last = [float(r.split(",")[3]) for r in rows[1:] if r.split(",")[1] == "20"]
    np.testing.assert_allclose(last, summary["final_returns"], rtol=1e-5)
    assert "median" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["plan", "nope", "--env", "Pendulum-v1"], "planner='nope'"),
        (["plan", "cem", "--env", "CartPole-v1"], "env='CartPole-v1'"),
        (["plan", "cem", "--env", "Pendulum-v1", "--set", "bogus=1"], "unknown option 'bogus'"),
        (["plan", "cem", "--env", "Pendulum-v1", "--set", "horizon=x"], "horizon='x'"),
        (["plan", "cem", "--env", "Pendulum-v1", "--set", "horizon=0"], "horizon=0"),
        (["plan", "cem", "--env", "Pendulum-v1", "--seeds", "0"], "--seeds=0"),
    ],
)
def test_plan_bad_input_is_one_line(tmp_path, capsys, argv, message):
    assert cli.main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("minirl: error:") and message in err[-1]
    assert not (tmp_path / "x").exists()
