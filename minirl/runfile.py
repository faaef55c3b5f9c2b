"""A run described in a file: what ``minirl train --config FILE`` reads.

A run file is YAML or JSON with the fields of the command line (rl-baselines3-zoo keeps its
hyperparameters in YAML files the same way)::

    algo: sac
    env: Pendulum-v1
    env_params: {max_steps_in_episode: 200}   # as --set env.FIELD=VALUE
    config: {tau: 0.01, learning_rate: 1.0e-3}  # as --set FIELD=VALUE
    seeds: 4
    first_seed: 0          # or seed
    steps: 20000           # total_steps, unless config gives total_steps
    eval_every: 2000       # optional, as --eval-every
    eval_episodes: 10      # optional, as --eval-episodes
    chunks: 50             # optional, as --chunks
    runs_per_program: 1    # optional, as --runs-per-program (it fixes the bits)

A run's own ``summary.json`` is such a file: it records every one of these (the full config
included), so ``--config runs/x/summary.json`` trains the same run again, bit for bit on the
same machine. The keys a summary holds about results (``final_returns``, ``wall_seconds``,
...) are ignored in a summary; in any other file an unknown key is an error naming the
allowed ones, and config fields and env parameters are checked as ``--set`` checks them.
"""

import dataclasses
import json
import os
from typing import Any

from . import configs
from .core.config import ConfigError

INTEGERS = ("seeds", "first_seed", "steps", "chunks", "runs_per_program", "eval_every",
            "eval_episodes")
KEYS = ("algo", "env", "env_params", "config", *INTEGERS, "seed")
SUMMARY_ONLY = (  # what a run's summary.json says about its results: ignored there
    "final_returns", "median_final_return", "diverged_seeds", "wall_seconds",
    "env_steps_per_second", "devices", "final_eval_returns", "median_final_eval_return",
)


@dataclasses.dataclass
class RunFile:
    """A run file's fields; None where the file does not give one."""

    path: str
    algo: str | None = None
    env: str | None = None
    env_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    seeds: int | None = None
    first_seed: int | None = None
    steps: int | None = None
    chunks: int | None = None
    runs_per_program: int | None = None
    eval_every: int | None = None
    eval_episodes: int | None = None

    def config_changes(self, config_cls: type) -> dict[str, Any]:
        """The ``config`` fields typed as ``config_cls`` declares them; an unknown field is
        the same :class:`ConfigError` as ``--set``'s."""
        return {configs.field(config_cls, name).name: configs.coerce(config_cls, name, value)
                for name, value in self.config.items()}


def _load(path: str) -> Any:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist")
    with open(path) as f:
        text = f.read()
    if path.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config file {path} is not valid JSON: {error}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(f"config file {path} is not valid YAML{line}: {problem}") from None


def parse(data: Any, path: str = "<config>") -> RunFile:
    """A run file's fields from its parsed content; :class:`ConfigError` (one line, naming
    the key, the value and what is allowed) for anything else."""
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of {', '.join(KEYS)}; "
                          f"got {type(data).__name__}")
    if "configurations" in data:
        raise ConfigError(f"config file {path} is a sweep's summary; --config takes one run's "
                          "(a run directory's summary.json)")
    summary = "final_returns" in data
    out = RunFile(path)
    for key, value in data.items():
        if summary and key in SUMMARY_ONLY:
            continue
        if key not in KEYS:
            raise ConfigError(f"unknown key {key!r} in config file {path}; allowed: "
                              f"{', '.join(KEYS)}")
        if key in ("algo", "env"):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key}={value!r} in config file {path} must be a name")
            setattr(out, key, value)
        elif key in ("env_params", "config"):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{key} in config file {path} must be a mapping of "
                                  f"{'env parameters' if key == 'env_params' else 'fields'} "
                                  f"to values; got {value!r}")
            setattr(out, key, dict(value))
        else:
            name = "first_seed" if key == "seed" else key
            low = 0 if name == "first_seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{key}={value!r} in config file {path} is out of range; "
                                  f"allowed: integers ≥ {low}")
            if getattr(out, name) is not None and getattr(out, name) != value:
                raise ConfigError(f"config file {path} gives both seed and first_seed")
            setattr(out, name, value)
    for name, value in out.env_params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"env.{name}={value!r} in config file {path} is not a number")
    return out


def read(path: str) -> RunFile:
    """Parse the YAML (or, for ``.json``, JSON) run file at ``path``."""
    return parse(_load(path), path)
