"""Tracking (``minirl.tracking``): TensorBoard event files read back by TensorBoard's own
reader, W&B through a stand-in module (no network), a user's tracker, and training bits
that do not depend on logging."""

import csv
import sys
import types

import jax
import numpy as np
import pytest

from minirl import cli, envs, runner, tracking
from minirl.algos import dqn
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(300)

TINY = dqn.Config(total_steps=600, hidden=(8,), buffer_size=300, learning_starts=100,
                  batch_size=8)


def train(**kwargs):
    env, env_params = envs.make("CartPole-v1")
    return runner.train(dqn, TINY, env, env_params, seeds=2, target_chunks=4, **kwargs)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    out = tmp_path_factory.mktemp("logged")
    return out, train(out_dir=str(out), log="tensorboard", eval_every=300, eval_episodes=2)


def read_scalars(directory, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory))
    accumulator.Reload()
    if tag not in accumulator.Tags()["scalars"]:
        return {}
    return {e.step: e.value for e in accumulator.Scalars(tag)}


def test_event_files_hold_each_seeds_returns_and_their_mean(logged):
    """TensorBoard's reader gives back, per seed, the mean training return of every chunk
    as metrics.csv has it, the greedy returns where the run evaluated, the learner's loss,
    and the mean over seeds."""
    out, run = logged
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for seed in (0, 1):
        series = out / "tensorboard" / f"seed_{seed}"
        want = {int(r["env_steps"]): float(r["mean_return"]) for r in rows
                if int(r["seed"]) == seed and r["mean_return"]}
        got = read_scalars(series, "train/episode_return")
        assert got.keys() == want.keys() and len(want) == 4
        for step, value in want.items():
            assert got[step] == pytest.approx(value, rel=1e-6)
        evals = {int(r["env_steps"]): float(r["eval_return"]) for r in rows
                 if int(r["seed"]) == seed and r["eval_return"]}
        got_eval = read_scalars(series, "eval/return")
        assert sorted(got_eval) == sorted(evals) == [300, 600]
        for step, value in evals.items():
            assert got_eval[step] == pytest.approx(value, rel=1e-6)
        assert len(read_scalars(series, "learner/loss")) == 4
    mean = read_scalars(out / "tensorboard" / "mean", "train/episode_return")
    for step, value in mean.items():
        per_seed = [float(r["mean_return"]) for r in rows
                    if int(r["env_steps"]) == step and r["mean_return"]]
        assert value == pytest.approx(np.mean(per_seed), rel=1e-6)
    assert len(read_scalars(out / "tensorboard" / "mean", "perf/env_steps_per_second")) == 4


def test_training_bits_are_the_same_with_and_without_logging(logged):
    """The tracker runs on the host between chunks: a run without ``log`` (and without
    evaluation) has the same states and training history."""
    _, run = logged
    plain = train()
    for a, b in zip(jax.tree.leaves(run.state), jax.tree.leaves(plain.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(run.history, plain.history, strict=True):
        assert {k: v for k, v in a.items() if k != "eval_return"} == b


def test_a_users_tracker_is_called_with_the_run_and_closed():
    calls, closed = [], []

    class Mine:
        def __call__(self, run):
            calls.append(len(run.history))

        def close(self):
            closed.append(True)

    train(log=Mine())  # the programs the other tests compiled
    assert calls == [0, 1, 2, 3, 4] and closed == [True]


def test_scalars_of_history_rows():
    """Per seed where it has a value, and the mean over the seeds that do."""
    history = [{"episodes": [2, 0], "episode_return_sum": [10.0, 0.0],
                "episode_length_sum": [8, 0], "env_steps": [100, 100], "loss": [0.5, 1.5],
                "nonfinite": [0.0, 0.0], "eval_return": [float("nan"), float("nan")]}]
    points = {(p.series, p.tag): (p.value, p.step)
              for p in tracking.scalars(history, 2, 7, [0])}
    assert points[("seed_7", "train/episode_return")] == (5.0, 100)
    assert ("seed_8", "train/episode_return") not in points  # no episode ended
    assert points[("mean", "train/episode_return")] == (5.0, 100)
    assert points[("mean", "learner/loss")] == (1.0, 100)
    assert points[("seed_8", "learner/loss")] == (1.5, 100)
    assert not any(tag == "eval/return" for _, tag in points)


class FakeWandb(types.ModuleType):
    """Stands in for ``wandb``: records init and log calls; no network, no files."""

    def __init__(self, credentials=False, online_fails=False):
        super().__init__("wandb")
        self.credentials, self.online_fails = credentials, online_fails
        self.inits, self.logged, self.finished = [], [], 0

    def login(self, prompt=True, verify=True):
        assert prompt is False and verify is False  # never asks, never calls the server
        return self.credentials

    def init(self, **kwargs):
        self.inits.append(kwargs)
        if kwargs["mode"] == "online" and self.online_fails:
            raise RuntimeError("no network")
        fake = self

        class Run:
            def log(self, data, step):
                fake.logged.append((step, data))

            def finish(self):
                fake.finished += 1

        return Run()


@pytest.mark.parametrize(
    "credentials, online_fails, environ, modes",
    [
        (False, False, {}, ["offline"]),  # no credentials: offline
        (True, False, {}, ["online"]),
        (True, True, {}, ["online", "offline"]),  # no network: falls back to offline
        (True, False, {"WANDB_MODE": "disabled"}, ["disabled"]),  # WANDB_MODE respected
        (False, False, {"WANDB_MODE": "online"}, ["online"]),
    ],
)
def test_wandb_modes_and_what_is_logged(monkeypatch, credentials, online_fails, environ,
                                        modes):
    fake = FakeWandb(credentials, online_fails)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    tracker = tracking.make("wandb", types.SimpleNamespace(), None)[0]
    history = [{"episodes": [1], "episode_return_sum": [-3.0], "episode_length_sum": [4],
                "env_steps": [50], "loss": [0.25]}]
    run = types.SimpleNamespace(algo_name="dqn", env_id="CartPole-v1", env_name="", seeds=1,
                                seed=0, env_overrides={}, eval_every=None, eval_episodes=10,
                                config=TINY, history=[], wall_seconds=0.0)
    tracker(run)
    run.history, run.wall_seconds = history, 2.0
    tracker(run)
    tracking.close(tracker)
    assert [i["mode"] for i in fake.inits] == modes
    assert fake.inits[0]["config"]["config"]["hidden"] == [8]
    ((step, data),) = fake.logged
    assert step == 50 and data["train/episode_return/seed_0"] == -3.0
    assert data["train/episode_return/mean"] == -3.0 and data["learner/loss/seed_0"] == 0.25
    assert data["perf/env_steps_per_second/mean"] == pytest.approx(25.0)
    assert fake.finished == 1


def test_bad_log_values_are_one_line_errors(monkeypatch):
    with pytest.raises(ConfigError, match="log='tensorbord' is not a tracker; allowed: "
                                          "tensorboard, wandb"):
        tracking.check("tensorbord", "/tmp/x")
    with pytest.raises(ConfigError, match="give out_dir"):
        tracking.check("tensorboard", None)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs the wandb package: pip install 'minirl\[wandb"):
        tracking.check(["wandb"], "/tmp/x")


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--log", "tensorbord"], "log='tensorbord' is not a tracker; allowed: tensorboard"),
        (["--log", "tensorboard,mlflow"], "log='mlflow' is not a tracker"),
    ],
)
def test_bad_log_flags_exit_2_with_one_line(tmp_path, capsys, flags, needle):
    code = cli.main(["train", "dqn", "--env", "CartPole-v1", "--out", str(tmp_path / "x"),
                     *flags])
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()
