"""Independent runs (seeds × hyperparameters × env parameters) over devices and hosts, and
one agent trained data-parallel.

**Runs.** A sweep is a batch of independent runs: one PRNG key, one config and one set of
env parameters per run. ``expand`` builds that batch from a base config, a grid of values
(config fields, or ``env.FIELD`` for env parameters) and a number of seeds::

    env, env_params = envs.make("CartPole-v1")
    base = ppo.Config(**ppo.preset("CartPole-v1"))
    runs = expand(base, env, env_params, grid(lr=[1e-3, 3e-3], **{"env.gravity": [9.8, 3.7]}),
                  seeds=8)                                         # 4 configs × 8 seeds
    rows, (state, metrics) = sweep(ppo.train, runs, env)          # leaves [32, ...]

**The same bits on any cluster.** The runs are cut into groups of ``runs_per_program`` = K
(the last group padded by repeating its last run; the padding is dropped). Every group is
computed by the same compiled K-wide ``jax.vmap`` of the algorithm, and the groups are
dispatched round-robin to the devices (and processes): JAX's dispatch is asynchronous, so
the devices run concurrently. A run's bits therefore depend on K and on nothing else: not
on how many devices or hosts there are, nor on which one computed it. (XLA picks kernels
by shape, so one partitioned program over all devices, or a vmap of another width, can
differ in the last bits, and training amplifies them.) K is a function of the number of
runs only (:func:`default_runs_per_program`), or set explicitly. The price: one compile per
device used, measured in ``benchmarks/RESULTS.md``.

**Several hosts.** After ``minirl.distributed.initialize`` every process makes the same call;
each computes the groups with ``g % process_count == process_index`` on its local devices.
:func:`sweep` and :func:`train_chunked` return this process's rows; the CLI writes them
as slices and merges them (``minirl.distributed``).

**Data parallelism.** :func:`data_parallel` trains one agent whose environments are split
over devices (``jax.shard_map``; the algorithm ``pmean``-s its gradients over the axis).
"""

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from .core.config import ConfigError, stack
from .envs import replace_params, stack_params

ENV_PREFIX = "env."  # grid names that refer to env parameters: env.gravity, ...
ALIASES = {"lr": "learning_rate"}  # short names accepted for config fields
TARGET_GROUPS = 8  # default: spread the runs over up to this many programs (devices)


# ----------------------------------------------------------------------------- grids


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


def sweepable_field(config_cls: type, name: str) -> str:
    """The config field a grid name refers to (aliases such as ``lr`` resolved).

    Raises :class:`ConfigError` for an unknown field, and for a static field (one that sets
    a shape, a loop length or a switch): those would need one compiled program per value.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    field = ALIASES.get(name, name) if name not in fields else name
    algo = config_cls.__module__.rsplit(".", 1)[-1]
    if field not in fields:
        raise ConfigError(
            f"unknown field {name!r} for {algo}; fields: {', '.join(fields)} "
            f"(env parameters are named {ENV_PREFIX}FIELD)"
        )
    if fields[field].metadata.get("static", False):
        raise ConfigError(
            f"field {field!r} of {algo} is static (it sets shapes, loop lengths or a switch) "
            "and cannot be swept in one program; sweep numeric fields, or set it with --set"
        )
    return field


def split_assignment(assignment: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{"lr": 1e-3, "env.gravity": 3.7}`` → ``({"lr": 1e-3}, {"gravity": 3.7})``."""
    config, env = {}, {}
    for name, value in assignment.items():
        if name.startswith(ENV_PREFIX):
            env[name[len(ENV_PREFIX):]] = value
        else:
            config[name] = value
    return config, env


def configs_for(
    base: eqx.Module, env: Any, env_params: Any, assignments: Sequence[dict[str, Any]]
) -> list[tuple[eqx.Module, Any]]:
    """``(config, env_params)`` for each assignment, each validated as it is built (a bad
    value names its field; a static config field is rejected)."""
    out = []
    for assignment in assignments:
        config_changes, env_changes = split_assignment(assignment)
        changes = {sweepable_field(type(base), k): v for k, v in config_changes.items()}
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
    configs = stack([c for c, _ in pairs for _ in range(seeds)])
    params = stack_params([p for _, p in pairs for _ in range(seeds)])
    rows = np.arange(len(pairs) * seeds).reshape(len(pairs), seeds)
    return Runs(keys, configs, params, rows)


def seeds_of(config: eqx.Module, env: Any, env_params: Any, seeds: int, seed: int = 0) -> Runs:
    """``seeds`` runs of one configuration (what ``minirl train --seeds S`` trains)."""
    return expand(config, env, env_params, [{}], seeds, seed)


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


def _take(tree: Any, rows: np.ndarray) -> Any:
    return jax.tree.map(lambda x: np.asarray(x)[rows], tree)


def _put(tree: Any, device: Any) -> Any:
    return jax.device_put(tree, device)


def _concat_real(groups: Sequence[Group], outputs: Sequence[Any]) -> tuple[np.ndarray, Any]:
    rows = np.concatenate([g.rows[: g.real] for g in groups]) if groups else np.arange(0)
    if not groups:
        return rows, None
    arrays = [eqx.filter(o, eqx.is_array) for o in outputs]
    static = eqx.filter(outputs[0], eqx.is_array, inverse=True)
    merged = jax.tree.map(
        lambda *xs: np.concatenate([np.asarray(x)[: g.real] for x, g in zip(xs, groups)]),
        *arrays,
    )
    return rows, eqx.combine(merged, static)


_PROGRAMS: dict[Any, Callable] = {}


def _program(kind: str, fn: Callable, static_config: Any, env: Any, extra: Any = None) -> Callable:
    """One jitted function per (what, algorithm, static config, env): every value of the
    numeric leaves, every group and every call hits jit's cache (one compile per device)."""
    key = (kind, fn, jax.tree.structure(static_config), tuple(jax.tree.leaves(static_config)),
           id(env), extra)
    return _PROGRAMS.get(key)


def _store(kind: str, fn: Callable, static_config: Any, env: Any, extra: Any,
           program: Callable) -> Callable:
    key = (kind, fn, jax.tree.structure(static_config), tuple(jax.tree.leaves(static_config)),
           id(env), extra)
    _PROGRAMS[key] = program
    return program


def _partition_config(configs: eqx.Module) -> tuple[Any, Any]:
    return eqx.partition(configs, eqx.is_array_like)


def _check_runs(runs: Runs) -> None:
    n = runs.num_runs
    for leaf in jax.tree.leaves(_partition_config(runs.configs)[0]) + jax.tree.leaves(
        runs.env_params
    ):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != n:
            raise ConfigError(
                f"configs and env_params must be batched along a leading axis of {n} runs "
                f"(one per key); got a leaf of shape {np.shape(leaf)} — use sweep.expand"
            )


def sweep(
    train_fn: Callable,
    runs: Runs,
    env: Any,
    *,
    runs_per_program: int | None = None,
    devices: Sequence[Any] | None = None,
) -> tuple[np.ndarray, Any]:
    """``train_fn(key, config, env, env_params)`` for every run, as K-wide programs spread
    over ``devices`` (default: this process's devices) and processes.

    Returns ``(rows, outputs)``: the indices of the runs this process computed (all of
    them with one process) and their outputs as NumPy arrays, leaves ``[len(rows), ...]``.
    """
    _check_runs(runs)
    k = runs_per_program or default_runs_per_program(runs.num_runs)
    arrays, static = _partition_config(runs.configs)
    program = _program("sweep", train_fn, static, env)
    if program is None:

        def one(key, arrays, env_params):
            return train_fn(key, eqx.combine(arrays, static), env, env_params)

        program = _store("sweep", train_fn, static, env, None, jax.jit(jax.vmap(one)))
    groups = plan_groups(runs.num_runs, k, devices)
    inputs = (runs.keys, arrays, runs.env_params)
    outputs = [program(*_put(_take(inputs, g.rows), g.device)) for g in groups]
    return _concat_real(groups, outputs)


# ----------------------------------------------------------------------------- chunked runs


@dataclasses.dataclass
class ChunkedRun:
    """Runs trained in chunks: this process's rows, their per-chunk summaries, and the
    states (one per group, on its device) to continue from."""

    rows: np.ndarray  # run indices this process holds (padding excluded)
    history: list[dict[str, list[float]]]  # per chunk: name → one value per local row
    groups: list[Group]
    states: list[Any]  # per group: the state pytree, leaves [K, ...] on the group's device

    def host_state(self) -> Any:
        """The local rows' states as NumPy arrays, leaves ``[len(rows), ...]``."""
        return _concat_real(self.groups, self.states)[1]


def init_chunked(
    init_fn: Callable,
    runs: Runs,
    env: Any,
    *,
    runs_per_program: int | None = None,
    devices: Sequence[Any] | None = None,
    state: Any = None,
) -> ChunkedRun:
    """The initial states of every local group (``init_fn(key, config, env, env_params)``),
    or ``state`` (host arrays for this process's rows, from a checkpoint) put back in groups."""
    _check_runs(runs)
    k = runs_per_program or default_runs_per_program(runs.num_runs)
    groups = plan_groups(runs.num_runs, k, devices)
    arrays, static = _partition_config(runs.configs)
    rows = np.concatenate([g.rows[: g.real] for g in groups]) if groups else np.arange(0)
    if state is None:
        program = _program("init", init_fn, static, env)
        if program is None:

            def one(key, arrays, env_params):
                return init_fn(key, eqx.combine(arrays, static), env, env_params)

            program = _store("init", init_fn, static, env, None, jax.jit(jax.vmap(one)))
        inputs = (runs.keys, arrays, runs.env_params)
        states = [program(*_put(_take(inputs, g.rows), g.device)) for g in groups]
    else:
        position = {int(r): i for i, r in enumerate(rows)}
        state_arrays, state_static = eqx.partition(state, eqx.is_array_like)
        states = []
        for g in groups:
            local = np.array([position[int(r)] for r in g.rows])
            states.append(eqx.combine(_put(_take(state_arrays, local), g.device), state_static))
    return ChunkedRun(rows=rows, history=[], groups=groups, states=states)


def run_chunk(
    step_fn: Callable,
    run: ChunkedRun,
    runs: Runs,
    env: Any,
    length: int,
    summarise: Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]],
) -> dict[str, list[float]]:
    """``length`` iterations of ``step_fn(state, config, env, env_params)`` for every local
    group (states donated, updated in place), then ``summarise(state, metrics)`` per run
    (metrics leaves ``[chunk]``) brought to the host and appended to ``run.history``."""
    arrays, static = _partition_config(runs.configs)
    program = _program("chunk", step_fn, static, env, (length, summarise))
    if program is None:

        def one(state, arrays, env_params):
            config = eqx.combine(arrays, static)
            state, metrics = jax.lax.scan(
                lambda s, _: step_fn(s, config, env, env_params), state, length=length
            )
            return state, summarise(state, metrics)

        program = _store("chunk", step_fn, static, env, (length, summarise),
                         jax.jit(jax.vmap(one), donate_argnums=0))
    inputs = (arrays, runs.env_params)
    results = [
        program(state, *_put(_take(inputs, g.rows), g.device))
        for g, state in zip(run.groups, run.states)
    ]
    run.states = [state for state, _ in results]
    _, summary = _concat_real(run.groups, [summary for _, summary in results])
    row = {k: np.asarray(v, np.float64).tolist() for k, v in (summary or {}).items()}
    run.history.append(row)
    return row


def train_chunked(
    init_fn: Callable,
    step_fn: Callable,
    runs: Runs,
    env: Any,
    chunks: Sequence[int],
    summarise: Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]],
    *,
    runs_per_program: int | None = None,
    devices: Sequence[Any] | None = None,
    report: Callable[[ChunkedRun], None] | None = None,
) -> ChunkedRun:
    """``init`` then ``step`` scanned in chunks of the given lengths; equals one ``train``
    call per run of the same K-wide program, chunked. ``report(run)`` after every chunk."""
    run = init_chunked(init_fn, runs, env, runs_per_program=runs_per_program, devices=devices)
    for length in chunks:
        run_chunk(step_fn, run, runs, env, length, summarise)
        if report is not None:
            report(run)
    return run


# ----------------------------------------------------------------------------- data parallel


def make_mesh(devices: Sequence[Any] | None = None, axis: str = "envs") -> Mesh:
    """A one-dimensional mesh over ``devices`` (default: every device)."""
    devices = list(devices or jax.devices())
    return Mesh(np.asarray(devices), (axis,))


def shard_specs(state: Any, split: Callable[[Any], Any], axis: str) -> Any:
    """Partition specs for ``state``'s arrays: ``P(axis)`` (split on the leading axis) for
    the arrays inside ``split(state)``, ``P()`` (replicated) for all others."""
    arrays = eqx.filter(state, eqx.is_array)
    sharded = {id(x) for x in jax.tree.leaves(eqx.filter(split(state), eqx.is_array))}
    return jax.tree.map(lambda x: P(axis) if id(x) in sharded else P(), arrays)


def data_parallel(
    step_fn: Callable,
    mesh: Mesh,
    state: Any,
    split: Callable[[Any], Any],
    env: Any,
    *,
    length: int = 1,
    donate: bool = False,
) -> Callable:
    """Data-parallel ``step_fn(state, config, env, env_params, axis_name) -> (state,
    metrics)``.

    The arrays in ``split(state)`` (e.g. ``lambda s: s.env``: every environment's state,
    leading axis ``[E]``) are split over the mesh axis; the rest of the state (parameters,
    optimiser state, keys, counters), the config and the env parameters are replicated.
    Inside ``jax.shard_map`` each device runs ``step_fn`` on its ``E / devices``
    environments with ``axis_name`` set to the mesh axis; the step averages gradients (and
    any statistics) with ``jax.lax.pmean`` over that axis and returns replicated metrics.
    ``state`` is a template; the result is a jitted ``run(state, config, env_params) ->
    (state, metrics)`` doing ``length`` steps (metrics stacked ``[length, ...]``). It equals
    the single-device step up to float reassociation (one agent: the reduction order of its
    gradients changes with the device count).
    """
    axis = mesh.axis_names[0]
    specs = shard_specs(state, split, axis)
    _, static = eqx.partition(state, eqx.is_array)

    def run(arrays, config, env_params):
        def body(arrays, _):
            new_state, metrics = step_fn(eqx.combine(arrays, static), config, env, env_params,
                                         axis)
            return eqx.filter(new_state, eqx.is_array), metrics

        return jax.lax.scan(body, arrays, length=length)

    def outer(arrays, config, env_params):
        sharded = jax.shard_map(
            run, mesh=mesh, in_specs=(specs, P(), P()), out_specs=(specs, P()), check_vma=False
        )
        return sharded(arrays, config, env_params)

    program = jax.jit(outer, donate_argnums=0 if donate else ())

    def call(state, config, env_params):
        arrays, _ = eqx.partition(state, eqx.is_array)
        arrays, metrics = program(arrays, config, env_params)
        return eqx.combine(arrays, static), metrics

    return call
