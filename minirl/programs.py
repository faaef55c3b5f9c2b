"""Batches of independent runs as compiled programs over devices and processes.

**The same bits on any cluster.** The N runs of a batch (:class:`minirl.sweep.Runs`: one
key, one config and one set of env parameters per run) are cut into groups of
``runs_per_program`` = K, the last group padded by repeating its last run (the padding is
dropped). Every group is computed by the same compiled K-wide ``jax.vmap`` of the
algorithm, and the groups are dispatched round-robin to the devices (and processes): JAX's
dispatch is asynchronous, so the devices run concurrently. A run's bits therefore depend on
K and on nothing else: not on how many devices or hosts there are, nor on which one
computed it. (XLA picks kernels by shape, so one partitioned program over all devices, or a
vmap of another width, can differ in the last bits, and training amplifies them.) K is a
function of the number of runs only (:func:`default_runs_per_program`), or set explicitly.
The price: one compile per device used, measured in ``benchmarks/RESULTS.md``.

**Several hosts.** After ``minirl.distributed.initialize`` every process makes the same call;
each computes the groups with ``g % process_count == process_index`` on its local devices
and returns only its own rows (``minirl.runner.sweep`` merges them).

Two engines share the grouping: :func:`run_whole` (``train`` per run, one call) and
:class:`Chunks` (``init``, then ``step`` scanned in chunks of iterations, with a summary of
each chunk brought to the host: what progress lines, checkpoints and resume need).
"""

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import evaluation
from .core.config import ConfigError

TARGET_GROUPS = 8  # default: spread the runs over up to this many programs (devices)


# ----------------------------------------------------------------------------- groups


def default_runs_per_program(num_runs: int, target_groups: int = TARGET_GROUPS) -> int:
    """K = ⌈N / 8⌉: enough groups to keep up to 8 devices busy, as wide as that allows.

    A function of the number of runs only, so that the bits of a run never depend on the
    hardware it meets."""
    return max(1, math.ceil(num_runs / target_groups))


@dataclasses.dataclass(frozen=True)
class Group:
    """One program call: ``rows`` [K] (the last real row repeated as padding)."""

    index: int
    rows: np.ndarray
    real: int  # how many of ``rows`` are real runs
    device: Any


def plan_groups(
    num_runs: int,
    runs_per_program: int,
    devices: Sequence[Any] | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> list[Group]:
    """This process's groups: global group g goes to process ``g % process_count`` and, there,
    to local device ``(g // process_count) % len(devices)``."""
    if isinstance(runs_per_program, bool) or not isinstance(runs_per_program, int):
        raise ConfigError(f"runs_per_program={runs_per_program!r} must be an integer ≥ 1")
    if runs_per_program < 1:
        raise ConfigError(f"runs_per_program={runs_per_program} is out of range; allowed: ≥ 1")
    devices = list(devices or jax.local_devices())
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    groups = []
    for g in range(math.ceil(num_runs / runs_per_program)):
        if g % process_count != process_index:
            continue
        rows = np.arange(g * runs_per_program, min((g + 1) * runs_per_program, num_runs))
        real = len(rows)
        rows = np.concatenate([rows, np.repeat(rows[-1:], runs_per_program - real)])
        device = devices[(g // process_count) % len(devices)]
        groups.append(Group(g, rows, real, device))
    return groups


def local_rows(groups: Sequence[Group]) -> np.ndarray:
    """The run indices the groups compute, padding excluded."""
    return np.concatenate([g.rows[: g.real] for g in groups]) if groups else np.arange(0)


def _take(tree: Any, rows: np.ndarray) -> Any:
    return jax.tree.map(lambda x: np.asarray(x)[rows], tree)


def _put(tree: Any, device: Any) -> Any:
    return jax.device_put(tree, device)


def _concat_real(groups: Sequence[Group], outputs: Sequence[Any]) -> Any:
    """The groups' outputs (leaves ``[K, ...]``) as NumPy arrays of the real rows only."""
    if not groups:
        return None
    arrays = [eqx.filter(o, eqx.is_array) for o in outputs]
    static = eqx.filter(outputs[0], eqx.is_array, inverse=True)
    merged = jax.tree.map(
        lambda *xs: np.concatenate([np.asarray(x)[: g.real] for x, g in zip(xs, groups)]),
        *arrays,
    )
    return eqx.combine(merged, static)


# ----------------------------------------------------------------------------- memory


def state_template(init_fn: Callable, config: Any, env: Any, env_params: Any, runs: int) -> Any:
    """Shapes and dtypes of the states of ``runs`` runs of one config (nothing is
    allocated): ``jax.eval_shape`` of ``init_fn(key, config, env, env_params)`` vmapped."""
    keys = jax.random.split(jax.random.PRNGKey(0), runs)
    batched = jax.vmap(lambda key, config, params: init_fn(key, config, env, params),
                       in_axes=(0, None, None))
    return jax.eval_shape(batched, keys, config, env_params)


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
    init_fn: Callable, config: Any, env: Any, env_params: Any, runs: int,
    available: int | None = None,
) -> int:
    """Raise :class:`ConfigError` when the states of ``runs`` runs cannot fit in memory;
    returns the need.

    The need is twice the states' size (the states on the devices, and the host copy a
    checkpoint writes), read off ``jax.eval_shape`` of ``init``: nothing is allocated. A
    config that does not fit the env (a continuous-action algorithm on a discrete env, a
    network of the wrong shape) raises its ``ConfigError`` here, before anything runs."""
    need = 2 * state_bytes(state_template(init_fn, config, env, env_params, runs))
    available = available_memory_bytes() if available is None else available
    if available is not None and need > available:
        per_run = need / runs
        fits = int(available // per_run)
        fields = [f for f in ("buffer_size", "num_envs") if hasattr(config, f)]
        raise ConfigError(
            f"{runs} seeds need about {_gib(need)} of memory (the states and a checkpoint "
            f"copy, {_gib(per_run)} per seed) but {_gib(available)} are available; use "
            f"--seeds {max(fits, 1)} or fewer"
            + (f", or a smaller {' or '.join(fields)} (--set)" if fields else "")
        )
    return need


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**26 else f"{n / 2**20:.1f} MiB"


# ----------------------------------------------------------------------------- programs

_PROGRAMS: dict[Any, Callable] = {}


def _program(kind: str, fn: Callable, static_config: Any, env: Any, extra: Any,
             build: Callable[[], Callable]) -> Callable:
    """One jitted function per (what, algorithm, static config, env): every value of the
    numeric leaves, every group and every call hits jit's cache (one compile per device)."""
    key = (kind, fn, jax.tree.structure(static_config), tuple(jax.tree.leaves(static_config)),
           id(env), extra)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = build()
    return _PROGRAMS[key]


def split_configs(configs: eqx.Module) -> tuple[Any, Any]:
    """(numeric leaves, static rest) of a batched config."""
    return eqx.partition(configs, eqx.is_array_like)


def check_batched(keys: jax.Array, configs: eqx.Module, env_params: Any) -> int:
    """The number of runs N; :class:`ConfigError` unless every numeric leaf of the configs
    and env parameters has a leading axis of N."""
    n = int(np.shape(keys)[0])
    for leaf in jax.tree.leaves(split_configs(configs)[0]) + jax.tree.leaves(env_params):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != n:
            raise ConfigError(
                f"configs and env_params must be batched along a leading axis of {n} runs "
                f"(one per key); got a leaf of shape {np.shape(leaf)} — use sweep.expand"
            )
    return n


def run_whole(
    train_fn: Callable,
    keys: jax.Array,
    configs: eqx.Module,
    env: Any,
    env_params: Any,
    *,
    runs_per_program: int | None = None,
    devices: Sequence[Any] | None = None,
) -> tuple[np.ndarray, Any]:
    """``train_fn(key, config, env, env_params)`` for every run (leaves ``[N, ...]``) as
    K-wide programs spread over the devices and processes. Returns ``(rows, outputs)``: the
    run indices this process computed and their outputs, NumPy leaves ``[len(rows), ...]``."""
    n = check_batched(keys, configs, env_params)
    arrays, static = split_configs(configs)

    def build():
        def one(key, arrays, params):
            return train_fn(key, eqx.combine(arrays, static), env, params)

        return jax.jit(jax.vmap(one))

    program = _program("whole", train_fn, static, env, None, build)
    groups = plan_groups(n, runs_per_program or default_runs_per_program(n), devices)
    inputs = (keys, arrays, env_params)
    outputs = [program(*_put(_take(inputs, g.rows), g.device)) for g in groups]
    return local_rows(groups), _concat_real(groups, outputs)


# ----------------------------------------------------------------------------- chunks

Summarise = Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]
"""``summarise(state, metrics)``: one run's chunk (metrics leaves ``[chunk]``) → scalars."""


@dataclasses.dataclass
class Chunks:
    """Runs trained in chunks: the states of this process's groups (one pytree per group,
    leaves ``[K, ...]`` on the group's device) and the inputs that stay fixed."""

    groups: list[Group]
    states: list[Any]
    configs: Any  # numeric leaves [N, ...]
    static: Any  # the configs' static rest
    env_params: Any  # leaves [N, ...]
    eval_keys: Any = None  # [N]: the roots of each run's evaluation keys (evaluation.root)

    @property
    def rows(self) -> np.ndarray:
        """Run indices this process holds (padding excluded)."""
        return local_rows(self.groups)

    def host_state(self) -> Any:
        """The local rows' states as NumPy arrays, leaves ``[len(rows), ...]``."""
        return _concat_real(self.groups, self.states)


def start(
    init_fn: Callable,
    keys: jax.Array,
    configs: eqx.Module,
    env: Any,
    env_params: Any,
    *,
    runs_per_program: int | None = None,
    devices: Sequence[Any] | None = None,
    state: Any = None,
) -> Chunks:
    """The initial states of every local group (``init_fn(key, config, env, env_params)``),
    or ``state`` (host arrays of this process's rows, from a checkpoint) put back in groups.
    Each run's evaluation keys descend from its key (``evaluation.root``), never from its
    state's, so evaluating changes nothing in training."""
    n = check_batched(keys, configs, env_params)
    eval_keys = np.asarray(jax.vmap(evaluation.root)(keys))
    groups = plan_groups(n, runs_per_program or default_runs_per_program(n), devices)
    arrays, static = split_configs(configs)
    if state is None:

        def build():
            def one(key, arrays, params):
                return init_fn(key, eqx.combine(arrays, static), env, params)

            return jax.jit(jax.vmap(one))

        program = _program("init", init_fn, static, env, None, build)
        inputs = (keys, arrays, env_params)
        states = [program(*_put(_take(inputs, g.rows), g.device)) for g in groups]
    else:
        position = {int(r): i for i, r in enumerate(local_rows(groups))}
        state_arrays, state_static = eqx.partition(state, eqx.is_array_like)
        states = [
            eqx.combine(_put(_take(state_arrays, np.array([position[int(r)] for r in g.rows])),
                             g.device), state_static)
            for g in groups
        ]
    return Chunks(groups, states, arrays, static, env_params, eval_keys)


EVAL_RETURN = "eval_return"  # the summary entry of an evaluation: mean return of its episodes


def advance(
    step_fn: Callable, chunks: Chunks, env: Any, length: int, summarise: Summarise,
    evaluator: Callable | None = None, evaluate_at: int | None = None,
) -> dict[str, list[float]]:
    """``length`` iterations of ``step_fn(state, config, env, env_params)`` for every local
    group (states donated, updated in place), then ``summarise(state, metrics)`` per run,
    brought to the host: ``{name: [one value per local row]}``.

    With an ``evaluator`` (``evaluation.Evaluator``: ``(state, config, env, env_params, key)
    -> returns [E]``) the same compiled program ends by evaluating each run's new state when
    ``evaluate_at`` (an evaluation index: the iterations done) is given, with the key
    ``fold_in(eval_key, evaluate_at)``, and adds the mean return as ``eval_return`` (NaN
    when the chunk does not evaluate). Whether a chunk evaluates is an argument of the
    program (a ``lax.cond``), so every chunk of one length shares one compile."""
    static = chunks.static

    def build():
        def one(state, arrays, params, eval_key, evaluate, index):
            config = eqx.combine(arrays, static)
            state, metrics = jax.lax.scan(
                lambda s, _: step_fn(s, config, env, params), state, length=length
            )
            summary = summarise(state, metrics)
            if evaluator is not None:
                returns = jax.lax.cond(
                    evaluate,
                    lambda: evaluator(state, config, env, params,
                                      jax.random.fold_in(eval_key, index)),
                    lambda: jnp.full((evaluator.episodes,), jnp.nan, jnp.float32),
                )
                summary = {**summary, EVAL_RETURN: jnp.mean(returns)}
            return state, summary

        return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None)), donate_argnums=0)

    program = _program("chunk", step_fn, static, env, (length, summarise, evaluator), build)
    inputs = (chunks.configs, chunks.env_params, chunks.eval_keys)
    evaluate = np.asarray(evaluate_at is not None)
    index = np.asarray(evaluate_at or 0, np.uint32)
    results = [
        program(state, *_put(_take(inputs, g.rows), g.device), evaluate, index)
        for g, state in zip(chunks.groups, chunks.states)
    ]
    chunks.states = [state for state, _ in results]
    summary = _concat_real(chunks.groups, [summary for _, summary in results])
    return {k: np.asarray(v, np.float64).tolist() for k, v in (summary or {}).items()}
