"""Sweeps: grids of hyperparameters and env parameters × seeds, as one batch of runs.

A sweep is a batch of independent runs: one PRNG key, one config and one set of env
parameters per run. :func:`expand` builds that batch from a base config, a grid of values
(config fields, or ``env.FIELD`` for env parameters) and a number of seeds; :func:`run`
trains every run and returns the outputs::

    env, env_params = envs.make("CartPole-v1")
    base = ppo.Config(**ppo.preset("CartPole-v1"))
    runs = expand(base, env, env_params, grid(lr=[1e-3, 3e-3], **{"env.gravity": [9.8, 3.7]}),
                  seeds=8)                                       # 4 configs × 8 seeds
    rows, (state, metrics) = run(ppo.train, runs, env)          # leaves [32, ...]

How the runs become compiled programs over devices and hosts (and why a run's bits depend
only on ``runs_per_program``) is ``minirl.programs``; the same sweep with progress, files
and a ranking is ``minirl.runner.sweep``.
"""

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import configs, programs
from .core.config import ConfigError, stack
from .envs import replace_params, stack_params


def grid(**values: Sequence[Any]) -> list[dict[str, Any]]:
    """Every combination of the values, the first name varying slowest.

    ``grid(lr=[1, 2], gamma=[.9, .99])`` → ``[{lr: 1, gamma: .9}, {lr: 1, gamma: .99}, …]``.
    Env parameters are named ``env.FIELD`` (pass them as ``**{"env.gravity": [...]}``).
    """
    for name, vals in values.items():
        if len(vals) == 0:
            raise ConfigError(f"grid {name}= has no values")
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*values.values())]


def zip_values(**values: Sequence[Any]) -> list[dict[str, Any]]:
    """The i-th value of every name together: ``zip_values(lr=[1, 2], gamma=[.9, .99])`` →
    ``[{lr: 1, gamma: .9}, {lr: 2, gamma: .99}]``. All lists must have the same length."""
    lengths = {name: len(v) for name, v in values.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{n}: {k}" for n, k in lengths.items())
        raise ConfigError(f"zipped values need equal lengths; got {shown}")
    names = list(values)
    return [dict(zip(names, combo)) for combo in zip(*values.values())]


def configs_for(
    base: eqx.Module, env: Any, env_params: Any, assignments: Sequence[dict[str, Any]]
) -> list[tuple[eqx.Module, Any]]:
    """``(config, env_params)`` for each assignment, each validated as it is built (a bad
    value names its field; a static config field is rejected)."""
    out = []
    for assignment in assignments:
        config_changes, env_changes = configs.split_assignment(assignment)
        changes = {configs.sweepable_field(type(base), k): v for k, v in config_changes.items()}
        out.append(
            (dataclasses.replace(base, **changes), replace_params(env, env_params, **env_changes))
        )
    return out


@dataclasses.dataclass
class Runs:
    """A batch of independent runs: leaves ``[N, ...]``."""

    keys: jax.Array  # [N] PRNG keys
    configs: eqx.Module  # numeric leaves [N]
    env_params: Any  # leaves [N]
    rows: np.ndarray  # [C, S]: the run index of configuration c, seed s

    @property
    def num_runs(self) -> int:
        return int(np.shape(self.keys)[0])


def expand(
    base: eqx.Module,
    env: Any,
    env_params: Any,
    assignments: Sequence[dict[str, Any]] = ({},),
    seeds: int = 1,
    seed: int = 0,
) -> Runs:
    """Configurations × seeds as one batch of runs, configuration-major.

    Every configuration gets the same ``seeds`` keys (common random numbers), so
    configurations differ only in their values.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds={seeds!r} is out of range; allowed: integers ≥ 1")
    pairs = configs_for(base, env, env_params, assignments)
    seed_keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    keys = jnp.tile(seed_keys, (len(pairs), 1))
    batched = stack([c for c, _ in pairs for _ in range(seeds)])
    params = stack_params([p for _, p in pairs for _ in range(seeds)])
    rows = np.arange(len(pairs) * seeds).reshape(len(pairs), seeds)
    return Runs(keys, batched, params, rows)


def seeds_of(config: eqx.Module, env: Any, env_params: Any, seeds: int, seed: int = 0) -> Runs:
    """``seeds`` runs of one configuration (what ``minirl train --seeds S`` trains)."""
    return expand(config, env, env_params, [{}], seeds, seed)


def run(
    train_fn: Callable,
    runs: Runs,
    env: Any,
    *,
    runs_per_program: int | None = None,
    devices: Sequence[Any] | None = None,
) -> tuple[np.ndarray, Any]:
    """``train_fn(key, config, env, env_params)`` for every run, as K-wide programs spread
    over ``devices`` (default: this process's devices) and processes (``minirl.programs``).

    Returns ``(rows, outputs)``: the indices of the runs this process computed (all of
    them with one process) and their outputs as NumPy arrays, leaves ``[len(rows), ...]``.
    """
    return programs.run_whole(train_fn, runs.keys, runs.configs, env, runs.env_params,
                              runs_per_program=runs_per_program, devices=devices)
