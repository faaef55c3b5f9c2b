"""The command line as a user runs it: outputs, resume, eval, and one-line errors."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from minirl import checkpoint, cli, envs, runner
from minirl.algos import ALGORITHMS, dqn
from minirl.cli import commands
from minirl.model_based import LEARNERS

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


def saved_state(out):
    return runner.load(str(out), dqn, *envs.make("CartPole-v1"))[1]


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
        "diverged_seeds",
        "wall_seconds",
        "env_steps_per_second",
        "runs_per_program",
    ):
        assert key in summary
    assert summary["diverged_seeds"] == []
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
    state_a, state_b = saved_state(tmp_path), saved_state(finished_run)
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
    for line in out.splitlines():
        if line.startswith("  dqn ") or line.startswith("  ppo "):
            assert line.rstrip().endswith("."), line  # one whole sentence
    mnist = next(line for line in out.splitlines() if "MNISTBandit" in line)
    assert "?" not in mnist and "unavailable" in mnist


def test_every_algorithm_of_the_issues_is_on_the_command_line(capsys):
    names = {"dqn", "ppo", "trpo", "qt_opt", "naf", "ddpg", "td3", "soft_q", "sac"}
    assert set(ALGORITHMS) == names
    assert set(LEARNERS) == {"pets", "planet", "mbpo", "bptt", "lqr_flm", "gps"}
    assert cli.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in names | set(LEARNERS))
    # PlaNet learns from pixels only, PETS from state vectors only
    pendulum = next(line for line in listed.splitlines() if line.startswith("  Pendulum-v1 "))
    pixels = next(line for line in listed.splitlines()
                  if line.startswith("  Pendulum-v1-pixels "))
    assert "pets" in pendulum and "planet" not in pendulum
    assert "planet" in pixels and "pets" not in pixels


def test_first_sentence_is_whole():
    doc = "Deep Q-learning: fitted Q-iteration, DQN and\ndouble DQN. More text. Even more."
    want = "Deep Q-learning: fitted Q-iteration, DQN and double DQN."
    assert commands.first_sentence(doc) == want


def test_env_parameters_from_the_command_line(tmp_path):
    out = tmp_path / "short"
    assert train(out, "--set", "env.max_steps_in_episode=20") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_params"] == {"max_steps_in_episode": 20}
    rows = [r.split(",") for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert max(float(r[5]) for r in rows if r[5]) <= 20  # mean episode length


def test_a_diverging_seed_is_reported(tmp_path, capsys):
    out = tmp_path / "nan"
    assert train(out, "--set", "learning_rate=1e30", "--set", "max_grad_norm=1e30") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged_seeds"] == [0, 1]
    captured = capsys.readouterr()
    assert "DIVERGED" in captured.out and "DIVERGED" in captured.err


def test_too_many_seeds_are_refused_before_allocating(capsys):
    code = cli.main(["train", "dqn", "--env", "CartPole-v1", "--seeds", "100000"])
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GiB" in err and "--seeds" in err
    assert "buffer_size" in err  # and names what else reduces it


def test_a_library_bug_keeps_its_traceback(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(runner, "train", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        train("/tmp/never-written")


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
        (["train", "dqn", "--env", "CartPole-v1", "--set", "learning_rate=inf"],
         "learning_rate=inf is not a finite number"),
        (["train", "dqn", "--env", "CartPole-v1", "--set", "env.gravty=1"],
         "unknown env parameter 'gravty'"),
        (["train", "dqn", "--env", "CartPole-v1", "--set", "env.max_steps_in_episode=0.5"],
         "env.max_steps_in_episode=0.5 must be an integer"),
        (["train", "dqn", "--env", "CartPole-v1", "--set", "env.total_mass=3"],
         "derived"),
        (["train", "dqn", "--env", "CartPole-v1", "--set", "env.gravity=abc"],
         "env.gravity='abc' is not a number"),
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
    state = saved_state(finished_run)
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
        (["plan", "cem", "--env", "CartPole-v1"], "env='CartPole-v1' has discrete actions"),
        (["plan", "ilqr", "--env", "MountainCarContinuous-v0"], "not supported by ilqr"),
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


SWEEP_TINY = [
    "--steps", "1000", "--seeds", "2", "--chunks", "2", "--set", "hidden=16",
    "--set", "buffer_size=500", "--set", "learning_starts=200", "--set", "batch_size=16",
]


def test_sweep_command_writes_summary_table_and_plot(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = cli.main(
        ["sweep", "dqn", "--env", "CartPole-v1", "--grid", "lr=1e-3,1e-4",
         "--grid", "gamma=0.9,0.99", "--out", str(out), *SWEEP_TINY]
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
        assert len(c["final_returns"]) == 2 and c["diverged_seeds"] == []
        assert c["median_final_return"] == pytest.approx(np.median(c["final_returns"]))
    medians = [configurations[c]["median_final_return"] for c in summary["ranking"]]
    assert medians == sorted(medians, reverse=True)
    assert sorted(c["rank"] for c in configurations) == [1, 2, 3, 4]
    assert (out / "sweep.png").stat().st_size > 0
    printed = capsys.readouterr()
    assert "ranked by median final return" in printed.out and "learning_rate" in printed.out
    assert "env steps/run" in printed.err  # progress


def test_sweep_over_an_env_parameter_caps_the_episodes(tmp_path):
    """--grid env.max_steps_in_episode=100,500: returns capped at 100 for the first and well
    above it for the second (PPO's CartPole preset, 100k steps)."""
    out = tmp_path / "limits"
    code = cli.main(["sweep", "ppo", "--env", "CartPole-v1", "--grid",
                     "env.max_steps_in_episode=100,500", "--seeds", "2", "--steps", "100000",
                     "--chunks", "4", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    short, long = summary["configurations"]
    assert short["values"] == {"env.max_steps_in_episode": 100}
    assert max(short["final_returns"]) <= 100
    assert min(long["final_returns"]) > 150, long["final_returns"]


@pytest.mark.parametrize(
    "grid, message",
    [
        (["hidden=16,32"], "field 'hidden' of dqn is static"),
        (["lr=fast"], "learning_rate='fast' is not a valid float"),
        (["nope=1,2"], "unknown field 'nope'"),
        (["gamma=0.9,1.5"], "gamma=1.5 is out of range"),
        (["env.nope=1,2"], "unknown env parameter 'nope'"),
        (["env.max_steps_in_episode=10,0"], "env.max_steps_in_episode=0 is out of range"),
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


def test_eval_writes_a_gif_of_a_greedy_episode(finished_run, tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "episode.gif"
    assert cli.main(["eval", str(finished_run), "--episodes", "1", "--gif", str(path)]) == 0
    frames = Image.open(path).n_frames
    assert frames >= 5 and f"wrote {path} ({frames} frames" in capsys.readouterr().out


def test_gif_of_an_env_without_a_visualiser_is_refused():
    from minirl import envs
    from minirl.algos import dqn
    from minirl.cli import animation
    from minirl.core.config import ConfigError

    env, params = envs.make("DeepSea-bsuite")
    with pytest.raises(ConfigError, match="no visualiser; --gif supports: Pendulum-v1"):
        animation.write_gif(dqn, dqn.Config(), env, params, None, "DeepSea-bsuite", "x.gif")


@pytest.mark.parametrize("algo_name", ["sac", "ddpg"])
def test_no_gradient_clipping_is_not_divergence_but_nan_parameters_are(algo_name):
    """max_grad_norm = inf (no clipping) lives in the optimiser state as a hyperparameter;
    the divergence flag must look at parameters and metrics, not at settings."""
    import equinox as eqx
    import jax.numpy as jnp

    from minirl import envs

    algo = ALGORITHMS[algo_name]
    env, env_params = envs.make("Pendulum-v1")
    config = algo.Config(max_grad_norm=float("inf"))
    state = algo.init(jax.random.PRNGKey(0), config, env, env_params)
    metrics = {"env_steps": jnp.array([1]), "episodes": jnp.array([0.0]),
               "episode_return_sum": jnp.array([0.0]), "episode_length_sum": jnp.array([0.0])}
    assert float(runner.summarise_chunk(state, metrics)["nonfinite"]) == 0.0
    nan_params = jax.tree.map(lambda x: x * jnp.nan if eqx.is_inexact_array(x) else x,
                              state.learner.params)
    poisoned = eqx.tree_at(lambda s: s.learner.params, state, nan_params)
    assert float(runner.summarise_chunk(poisoned, metrics)["nonfinite"]) == 1.0


@pytest.mark.parametrize(
    "algo, env_id, settings",
    [
        ("pets", "Pendulum-v1", ["hidden=16", "horizon=3", "num_samples=8", "num_elites=2",
                                 "iterations=2", "particles=5", "fit_updates=5",
                                 "batch_size=16", "refit_every=100", "random_steps=100"]),
        ("planet", "Pendulum-v1-pixels", ["learning_starts=200", "gradient_steps=2",
                                          "batch_size=4", "sequence_length=8", "horizon=3",
                                          "num_samples=8", "num_elites=2", "cem_iterations=2",
                                          "buffer_size=1000", "action_repeat=2",
                                          "hidden=16", "deterministic_size=8",
                                          "stochastic_size=4", "embedding_size=8"]),
    ],
    ids=["pets", "planet"],
)
def test_model_based_learners_train_resume_and_eval_from_the_command_line(
        tmp_path, algo, env_id, settings):
    """`minirl train pets|planet` with tiny settings: summary, bit-exact resume, eval, GIF."""
    extra = [arg for setting in settings for arg in ("--set", setting)]
    steps = "400"
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    base = ["train", algo, "--env", env_id, "--steps", steps, "--seeds", "2", "--chunks", "2"]
    assert cli.main([*base, "--out", str(whole), *extra]) == 0
    assert cli.main([*base, "--out", str(parts), *extra, "--stop-after-chunks", "1"]) == 0
    assert cli.main(["train", algo, "--resume", str(parts)]) == 0
    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((parts / "summary.json").read_text())
    assert a["final_returns"] == b["final_returns"] and a["algo"] == algo
    assert cli.main(["eval", str(whole), "--episodes", "1", "--gif",
                     str(tmp_path / "episode.gif")]) == 0
    assert (tmp_path / "episode.gif").read_bytes()[:3] == b"GIF"



@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--eval-every", "0"], "--eval-every=0 is out of range"),
        (["--eval-every", "5000"], "eval_every=5000 is out of range; allowed: integers 1 … 1200"),
        (["--eval-every", "x"], "argument --eval-every: invalid int value: 'x'"),
        (["--eval-episodes", "3"], "--eval-episodes needs --eval-every"),
        (["--eval-every", "600", "--eval-episodes", "0"], "--eval-episodes=0 is out of range"),
        (["--log", "tensorbord"], "log='tensorbord' is not a tracker; allowed: tensorboard"),
    ],
)
def test_bad_eval_and_log_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, needle):
    assert train(tmp_path / "x", *flags) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_resume_refuses_flags_that_would_change_the_run(finished_run, capsys):
    code = cli.main(["train", "--resume", str(finished_run), "--eval-every", "300"])
    assert code == cli.EXIT_USAGE
    assert "drop --eval-every" in capsys.readouterr().err


def test_list_marks_what_a_learner_cannot_learn(capsys, monkeypatch):
    # every measured CANNOT_LEARN entry is marked with * on its env's line and explained
    entries = [(name, env_id, why) for name, module in {**ALGORITHMS, **LEARNERS}.items()
               for env_id, why in getattr(module, "CANNOT_LEARN", {}).items()]
    monkeypatch.setattr(ALGORITHMS["dqn"], "CANNOT_LEARN",
                        {"DeepSea-bsuite": "exploration: a test note"}, raising=False)
    entries.append(("dqn", "DeepSea-bsuite", "exploration: a test note"))
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, env_id, why in entries:
        env_line = next(line for line in lines if line.startswith(f"  {env_id} "))
        assert f"{name}*" in [word.strip(",") for word in env_line.split()], env_line
        assert f"  {name} on {env_id}: {why}" in lines
    catch = next(line for line in lines if line.startswith("  Catch-bsuite "))
    assert "dqn" in [word.strip(",") for word in catch.split()]  # only the env named
