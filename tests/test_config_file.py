"""``minirl train --config FILE``: a YAML or JSON run file, a run's own summary.json (which
trains the same run again, bit for bit), flags that override the file, and one-line errors
for bad files."""

import json

import numpy as np
import pytest

from minirl import cli, runfile
from minirl.algos import dqn
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(300)

TINY = ["--set", "hidden=8", "--set", "buffer_size=300", "--set", "learning_starts=100",
        "--set", "batch_size=8"]
YAML = """\
# a run file: the fields of the command line
algo: dqn
env: CartPole-v1
env_params: {max_steps_in_episode: 50}
config:
  hidden: [8]
  buffer_size: 300
  learning_starts: 100
  batch_size: 8
  learning_rate: 1e-3   # PyYAML reads this as text; it is parsed as the field's type
seeds: 2
first_seed: 3
steps: 600
chunks: 4
eval_every: 300
eval_episodes: 2
"""


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    out = tmp_path_factory.mktemp("original")
    code = cli.main(["train", "dqn", "--env", "CartPole-v1", "--out", str(out), "--steps", "600",
                     "--seeds", "2", "--seed", "5", "--chunks", "4", "--eval-every", "300",
                     "--eval-episodes", "2", "--set", "env.max_steps_in_episode=50", *TINY])
    assert code == 0
    return out


def test_a_runs_summary_reproduces_it_exactly(original, tmp_path):
    again = tmp_path / "again"
    assert cli.main(["train", "--config", str(original / "summary.json"), "--out",
                     str(again)]) == 0
    a = json.loads((original / "summary.json").read_text())
    b = json.loads((again / "summary.json").read_text())
    for key in ("final_returns", "final_eval_returns", "config", "env_params", "seeds",
                "first_seed", "steps", "chunks", "eval_every", "eval_episodes",
                "runs_per_program"):
        assert a[key] == b[key], key
    assert (original / "metrics.csv").read_text() == (again / "metrics.csv").read_text()


def test_a_yaml_run_file_sets_every_field(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(YAML)
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(path), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "dqn" and summary["env"] == "CartPole-v1"
    assert summary["env_params"] == {"max_steps_in_episode": 50}
    assert summary["seeds"] == 2 and summary["first_seed"] == 3 and summary["steps"] == 600
    assert summary["chunks"] == 4 and summary["eval_every"] == 300
    assert summary["eval_episodes"] == 2 and len(summary["final_eval_returns"]) == 2
    assert summary["config"]["learning_rate"] == 1e-3 and summary["config"]["hidden"] == [8]
    assert summary["config"]["total_steps"] == 600


def test_a_summary_parses_to_its_fields():
    """A summary's result keys are skipped; ``seed`` is ``first_seed``; the config fields
    are typed by the algorithm's Config."""
    spec = runfile.parse(json.loads(json.dumps({
        "algo": "dqn", "env": "CartPole-v1", "config": {"gamma": 0.9, "total_steps": 800},
        "steps": 600, "seeds": 3, "seed": 2, "final_returns": [1.0]})), "s.json")
    assert (spec.seeds, spec.first_seed, spec.steps) == (3, 2, 600)
    assert spec.config_changes(dqn.Config) == {"gamma": 0.9, "total_steps": 800}


def test_flags_override_the_file_in_a_run(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(YAML)
    out = tmp_path / "run"
    # (values that keep the compiled programs of the other runs here)
    assert cli.main(["train", "--config", str(path), "--out", str(out), "--seeds", "1",
                     "--set", "gamma=0.9", "--set", "env.max_steps_in_episode=40"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == 1 and summary["first_seed"] == 3  # the file's first seed
    assert summary["config"]["gamma"] == 0.9 and summary["config"]["buffer_size"] == 300
    assert summary["config"]["learning_rate"] == 1e-3  # from the file
    assert summary["env_params"] == {"max_steps_in_episode": 40}
    assert summary["steps"] == 600 and summary["eval_every"] == 300
    assert np.isfinite(summary["final_eval_returns"]).all()


@pytest.mark.parametrize(
    "content, name, needle",
    [
        ("algo: dqn\nenv: CartPole-v1\nlearning_rate: 1e-3\n", "a.yaml",
         "unknown key 'learning_rate' in config file"),
        ("algo: dqn\nenv: CartPole-v1\nconfig: {colour: red}\n", "a.yaml",
         "unknown field 'colour' for dqn; fields:"),  # as --set says it
        ("algo: dqn\nenv: CartPole-v1\nconfig: {batch_size: big}\n", "a.yaml",
         "batch_size='big' is not a valid int"),
        ("algo: dqn\nenv: CartPole-v1\nenv_params: {gravty: 1}\n", "a.yaml",
         "unknown env parameter 'gravty'"),
        ("algo: dqn\nenv: CartPole-v1\nseeds: -1\n", "a.yaml",
         "seeds=-1 in config file"),
        ("algo: dqn\nenv: CartPole-v1\nseeds: [1\n", "a.yaml", "is not valid YAML"),
        ('{"algo": "dqn",}', "a.json", "is not valid JSON"),
        ("- dqn\n", "a.yaml", "must hold a mapping"),
        ('{"algo": "sac", "env": "Pendulum-v1"}', "a.json",
         "describes a sac run; the command line names dqn"),
        ('{"algo": "dqn", "configurations": [], "final_returns": []}', "a.json",
         "is a sweep's summary"),
        ("algo: nosuch\nenv: CartPole-v1\n", "a.yaml", "unknown algorithm 'nosuch'"),
    ],
    ids=["unknown-key", "unknown-field", "bad-value", "unknown-env-param", "bad-seeds",
         "bad-yaml", "bad-json", "not-a-mapping", "other-algo", "sweep-summary",
         "unknown-algo"],
)
def test_bad_config_files_fail_with_one_line_and_exit_2(tmp_path, capsys, content, name,
                                                        needle):
    path = tmp_path / name
    path.write_text(content)
    argv = ["train", *(["dqn"] if "sac" in content else []), "--config", str(path),
            "--out", str(tmp_path / "x")]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_a_missing_file_and_a_missing_algorithm(tmp_path, capsys):
    assert cli.main(["train", "--config", str(tmp_path / "nope.yaml")]) == cli.EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["train", "--env", "CartPole-v1"]) == cli.EXIT_USAGE
    assert "name an algorithm" in capsys.readouterr().err


def test_unknown_keys_name_the_allowed_ones():
    with pytest.raises(ConfigError) as error:
        runfile.parse({"algo": "dqn", "steps_total": 5}, "f.yaml")
    message = str(error.value)
    assert "unknown key 'steps_total'" in message
    for key in runfile.KEYS:
        assert key in message
    # a summary's result keys are accepted (and ignored) in a summary only
    runfile.parse({"algo": "dqn", "final_returns": [1.0], "wall_seconds": 3.0}, "s.json")
    with pytest.raises(ConfigError, match="unknown key 'wall_seconds'"):
        runfile.parse({"algo": "dqn", "wall_seconds": 3.0}, "f.yaml")
