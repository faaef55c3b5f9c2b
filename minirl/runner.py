"""Host-level training runs: jitted chunks, progress callbacks, checkpoints and resume.

Wall-clock time and files live here; algorithms stay pure. A run is S seeds of one
configuration in one environment, trained by ``minirl.sweep``'s engine (K-wide programs
dispatched to every device, so the result does not depend on the device count) in chunks
of iterations. After every chunk the host pools episode statistics, flags runs whose
losses or parameters became non-finite, calls ``report`` and writes an atomic checkpoint,
so ``resume`` continues bit-for-bit as an uninterrupted run would: the same compiled chunk
is applied to the same state. Tables, CSV files and plots are the CLI's business.
"""

import dataclasses
import math
import os
import time
import types
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import checkpoint, envs, sweep
from .core import rollout
from .core.config import ConfigError

CHECKPOINT = "checkpoint.npz"
FINAL_WINDOW = 0.1  # the final return pools episodes completed in the last 10% of the run
POOLED = ("episodes", "episode_return_sum", "episode_length_sum")


# ----------------------------------------------------------------------------- configs


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_cls)}


def config_to_json(config: eqx.Module) -> dict[str, Any]:
    out = {}
    for name in config_fields(type(config)):
        value = getattr(config, name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.ndarray | jax.Array):
            value = np.asarray(value).tolist()
        if isinstance(value, float) and math.isinf(value):
            value = "inf" if value > 0 else "-inf"
        out[name] = value
    return out


def config_from_json(config_cls: type, data: dict[str, Any]) -> eqx.Module:
    fields = config_fields(config_cls)
    kwargs = {}
    for name, value in data.items():
        if name not in fields:
            raise checkpoint.CheckpointError(f"checkpoint config has unknown field {name!r}")
        if isinstance(value, list):
            value = tuple(value)
        elif value in ("inf", "-inf"):
            value = float(value)
        kwargs[name] = value
    return config_cls(**kwargs)


def make_config(algo: types.ModuleType, env_id: str, steps: int | None, overrides: dict) -> Any:
    """The algorithm's defaults, then its documented preset for ``env_id``, then overrides."""
    envs.check_id(env_id)
    kwargs = {**algo.preset(env_id), **overrides}
    if steps is not None:
        kwargs["total_steps"] = steps
    return algo.Config(**kwargs)


def check_compatible(algo: types.ModuleType, algo_name: str, env: Any, env_params: Any) -> None:
    """Where config meets env: the algorithm's action-space type (``ConfigError`` if not)."""
    rollout.require_action_kind(env, env_params, getattr(algo, "ACTION_KIND", "both"), algo_name)


# ----------------------------------------------------------------------------- chunks


def chunk_plan(num_iterations: int, target_chunks: int = 50) -> list[int]:
    """Chunk lengths summing to ``num_iterations``: equal chunks where a divisor allows
    (one compiled program), otherwise equal chunks and one shorter remainder."""
    target = max(1, math.ceil(num_iterations / target_chunks))
    for length in range(target, max(1, target // 2) - 1, -1):
        if num_iterations % length == 0:
            return [length] * (num_iterations // length)
    full, rest = divmod(num_iterations, target)
    return [target] * full + ([rest] if rest else [])


def _is_hyperparameter(path: tuple) -> bool:
    # optax.inject_hyperparams keeps the optimiser's settings in its state, and
    # max_grad_norm = inf (no clipping) is a legitimate one: not a sign of divergence.
    return any(getattr(entry, "name", None) == "hyperparams" for entry in path)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for path, x in jax.tree_util.tree_leaves_with_path(eqx.filter(tree, eqx.is_inexact_array))
        if not _is_hyperparameter(path)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def summarise_chunk(state: Any, metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """One run's chunk (metrics leaves ``[chunk]``): pooled episode sums, the last env-step
    count, means of the learner diagnostics, and ``nonfinite`` = 1 when a metric or the
    learner's parameters (``state.learner``) are no longer finite."""
    out = {name: jnp.sum(metrics[name]) for name in POOLED}
    out["env_steps"] = metrics["env_steps"][-1]
    for name, value in metrics.items():
        if name not in out:
            out[name] = jnp.mean(value)
    finite = _all_finite(metrics) & _all_finite(getattr(state, "learner", state))
    out["nonfinite"] = (~finite).astype(jnp.float32)
    return out


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Run:
    """Everything a run is and has done: what was trained, per-chunk history, wall time."""

    algo_name: str
    env_id: str
    env_overrides: dict[str, Any]
    config: Any
    seeds: int
    seed: int
    chunks: list[int]
    runs_per_program: int
    history: list[dict[str, list[float]]] = dataclasses.field(default_factory=list)
    wall_seconds: float = 0.0
    devices: int = 1

    @property
    def done_chunks(self) -> int:
        return len(self.history)

    @property
    def finished(self) -> bool:
        return self.done_chunks == len(self.chunks)

    def metadata(self) -> dict[str, Any]:
        return {
            "algo": self.algo_name,
            "env": self.env_id,
            "env_overrides": self.env_overrides,
            "config": config_to_json(self.config),
            "seeds": self.seeds,
            "seed": self.seed,
            "chunks": self.chunks,
            "runs_per_program": self.runs_per_program,
            "history": self.history,
            "wall_seconds": self.wall_seconds,
            "devices": self.devices,
        }


def state_template(
    algo: types.ModuleType, config: Any, env: Any, env_params: Any, seeds: int
) -> Any:
    """Shapes and dtypes of the states of ``seeds`` runs (nothing is allocated)."""
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    init = jax.vmap(lambda key, config, params: algo.init(key, config, env, params),
                    in_axes=(0, None, None))
    return jax.eval_shape(init, keys, config, env_params)


def state_bytes(template: Any) -> int:
    return sum(
        math.prod(x.shape) * np.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(template)
        if hasattr(x, "shape") and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
    )


def available_memory_bytes() -> int | None:
    """What the operating system says can still be allocated (``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(
    algo: types.ModuleType, config: Any, env: Any, env_params: Any, seeds: int,
    available: int | None = None,
) -> int:
    """Raise :class:`ConfigError` when ``seeds`` runs cannot fit in memory; returns the need.

    The need is twice the states' size (the states on the devices, and the host copy a
    checkpoint writes), read off ``jax.eval_shape`` of ``init``: nothing is allocated."""
    need = 2 * state_bytes(state_template(algo, config, env, env_params, seeds))
    available = available_memory_bytes() if available is None else available
    if available is not None and need > available:
        per_seed = need / seeds
        fits = int(available // per_seed)
        fields = [f for f in ("buffer_size", "num_envs") if hasattr(config, f)]
        raise ConfigError(
            f"{seeds} seeds need about {_gib(need)} of memory (the states and a checkpoint "
            f"copy, {_gib(per_seed)} per seed) but {_gib(available)} are available; use "
            f"--seeds {max(fits, 1)} or fewer"
            + (f", or a smaller {' or '.join(fields)} (--set)" if fields else "")
        )
    return need


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**26 else f"{n / 2**20:.1f} MiB"


def train(
    algo_name: str,
    algorithms: dict[str, types.ModuleType],
    out_dir: str,
    *,
    config: Any = None,
    env_id: str | None = None,
    env_overrides: dict[str, Any] | None = None,
    seeds: int = 1,
    seed: int = 0,
    resume: bool = False,
    stop_after_chunks: int | None = None,
    report: Callable[[Run], None] | None = None,
    target_chunks: int = 50,
    runs_per_program: int | None = None,
    devices: list[Any] | None = None,
) -> Run:
    """Run (or resume) training, checkpointing after every chunk; returns the run record.

    ``runs_per_program`` (default :func:`minirl.sweep.default_runs_per_program`) fixes how
    the seeds are grouped into programs, and so the bits; ``devices`` only where they run.
    """
    algo = algorithms[algo_name]
    clock = time.perf_counter()
    devices = list(devices or jax.local_devices())
    if resume:
        run, host_state = load_run(out_dir, algorithms)
        if run.algo_name != algo_name:
            raise ConfigError(f"--resume {out_dir} holds a {run.algo_name} run, not {algo_name}")
    else:
        run = Run(
            algo_name, env_id, dict(env_overrides or {}), config, seeds, seed,
            chunk_plan(config.num_iterations, target_chunks),
            runs_per_program or sweep.default_runs_per_program(seeds),
        )
        host_state = None
    run.devices = min(len(devices), math.ceil(run.seeds / run.runs_per_program))
    env, env_params = envs.make(run.env_id, **run.env_overrides)
    check_compatible(algo, algo_name, env, env_params)
    runs = sweep.seeds_of(run.config, env, env_params, run.seeds, run.seed)
    chunked = sweep.init_chunked(
        algo.init, runs, env, runs_per_program=run.runs_per_program, devices=devices,
        state=host_state,
    )
    chunked.history = run.history
    os.makedirs(out_dir, exist_ok=True)
    start = clock - run.wall_seconds
    stop_at = len(run.chunks)
    if stop_after_chunks is not None:
        stop_at = min(stop_at, run.done_chunks + stop_after_chunks)
    while run.done_chunks < stop_at:
        length = run.chunks[run.done_chunks]
        sweep.run_chunk(algo.step, chunked, runs, env, length, summarise_chunk)
        run.wall_seconds = time.perf_counter() - start
        checkpoint.save(os.path.join(out_dir, CHECKPOINT), chunked.host_state(), run.metadata())
        if report is not None:
            report(run)
    return run


def load_run(out_dir: str, algorithms: dict[str, types.ModuleType]) -> tuple[Run, Any]:
    """The run record and the seeds' states (host arrays) checkpointed in ``out_dir``."""
    path = os.path.join(out_dir, CHECKPOINT)
    meta = checkpoint.read_metadata(path)
    if meta.get("algo") not in algorithms:
        raise checkpoint.CheckpointError(
            f"checkpoint {path} is for algorithm {meta.get('algo')!r}, which minirl does not know"
        )
    for field in ("env", "config", "seeds", "seed", "chunks", "history"):
        if field not in meta:
            raise checkpoint.CheckpointError(
                f"checkpoint {path} lacks {field!r}: it was written by another minirl version"
            )
    algo = algorithms[meta["algo"]]
    config = config_from_json(algo.Config, meta["config"])
    env, env_params = envs.make(meta["env"], **meta.get("env_overrides", {}))
    template = state_template(algo, config, env, env_params, meta["seeds"])
    state, _ = checkpoint.load(path, template)
    run = Run(
        meta["algo"], meta["env"], meta.get("env_overrides", {}), config, meta["seeds"],
        meta["seed"], meta["chunks"],
        meta.get("runs_per_program", sweep.default_runs_per_program(meta["seeds"])),
        meta["history"], meta.get("wall_seconds", 0.0), meta.get("devices", 1),
    )
    return run, state


# ----------------------------------------------------------------------------- results


def env_steps_done(history: list[dict[str, list[float]]]) -> int:
    return int(history[-1]["env_steps"][0]) if history else 0


def final_returns(history: list[dict[str, list[float]]], seeds: int) -> list[float]:
    """Per seed: mean return of the episodes completed in the last 10% of the run (widened
    backwards chunk by chunk until at least one episode has completed)."""
    window = max(1, round(FINAL_WINDOW * len(history)))
    out = []
    for s in range(seeds):
        episodes = returns = 0.0
        for i, row in enumerate(reversed(history)):
            if i >= window and episodes > 0:
                break
            episodes += row["episodes"][s]
            returns += row["episode_return_sum"][s]
        out.append(returns / episodes if episodes else float("nan"))
    return out


def diverged(history: list[dict[str, list[float]]], seeds: int) -> list[int]:
    """Indices (0-based, among the run's seeds) whose losses or parameters became non-finite
    in some chunk."""
    return [s for s in range(seeds) if any(row.get("nonfinite", [0] * seeds)[s]
                                           for row in history)]


def evaluate(
    algo: types.ModuleType,
    config: Any,
    env: Any,
    env_params: Any,
    params: Any,
    episodes: int,
    seed: int = 0,
    max_steps: int | None = None,
) -> np.ndarray:
    """Greedy returns ``[seeds, episodes]``: each seed's policy (``params``, leading axis
    over seeds) plays ``episodes`` fresh episodes (one per env, vmapped) until each ends."""
    if max_steps is None:
        max_steps = int(getattr(env_params, "max_steps_in_episode", 1000))

    def one_seed(params, key):
        reset_key, run_key = jax.random.split(key)
        carry = rollout.reset(reset_key, env, env_params, episodes)

        def policy(key, obs):
            keys = jax.random.split(key, obs.shape[0])
            act = jax.vmap(lambda o, k: algo.act(params, o, k, config, deterministic=True))
            return act(obs, keys), None

        def body(inner, key):
            carry, total, alive = inner
            carry, transition = rollout.collect(key, env, env_params, carry, policy, 1)
            total = total + alive * transition.reward[0]
            alive = alive * (1.0 - transition.done[0])
            return (carry, total, alive), None

        init = (carry, jnp.zeros(episodes), jnp.ones(episodes))
        (_, total, _), _ = jax.lax.scan(body, init, jax.random.split(run_key, max_steps))
        return total

    num_seeds = jax.tree.leaves(eqx.filter(params, eqx.is_array))[0].shape[0]
    keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    return np.asarray(jax.jit(jax.vmap(one_seed))(params, keys))
