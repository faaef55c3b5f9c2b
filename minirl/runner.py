"""A run, for any environment object: train, resume, sweep, plan and evaluate, with
progress callbacks, checkpoints and the files a run writes.

Wall-clock time and files live here; algorithms stay pure. A run is S seeds of one
configuration in one environment (``env`` any object with gymnax 1.x's interface: a gymnax
env, a wrapped one, a user's own), trained by ``minirl.programs`` (K-wide programs
dispatched to every device, so the result does not depend on the device count) in chunks
of iterations. After every chunk the host pools episode statistics, flags runs whose
losses or parameters became non-finite, writes an atomic checkpoint and calls
``report(run)``; when the run ends it writes ``summary.json``, ``metrics.csv`` and
``curve.png`` (``minirl.results``). :func:`resume` continues bit for bit as an
uninterrupted run would: the same compiled chunk is applied to the same state.

The environment is not saved: a checkpoint records the env id as metadata (``env_id``,
given by the command line, which rebuilds a gymnax env from it on ``--resume``), and a
user's own env (and network) is passed again to :func:`resume`. A digest of the env
parameters is saved so that a different ``env_params`` is refused.
"""

import dataclasses
import functools
import hashlib
import math
import os
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import checkpoint, configs, distributed, evaluation, programs, results, tracking
from . import sweep as sweeps
from .core.config import ConfigError, check_positive_int
from .planning import mpc

CHECKPOINT = "checkpoint.npz"
Report = Callable[["Run"], None]


def algo_name(algo: types.ModuleType) -> str:
    """The name a checkpoint records for an algorithm module (``minirl.algos.dqn`` → dqn)."""
    return algo.__name__.rsplit(".", 1)[-1]


def env_name(env: Any) -> str:
    return getattr(env, "name", type(env).__name__)


# ----------------------------------------------------------------------------- chunks


def chunk_plan(num_iterations: int, target_chunks: int = 50, align: int | None = None
               ) -> list[int]:
    """Chunk lengths summing to ``num_iterations``: equal chunks where a divisor allows
    (one compiled program), otherwise equal chunks and one shorter remainder.

    With ``align`` = A, every multiple of A iterations is a chunk boundary (the points where
    a run is evaluated): segments of A iterations (and a last, shorter one), each cut the
    same way into chunks no longer than the plain plan's, so at most four chunk lengths (and
    compiles) and at least one chunk per evaluation."""
    if align is None or align >= num_iterations:
        target = max(1, math.ceil(num_iterations / target_chunks))
        for length in range(target, max(1, target // 2) - 1, -1):
            if num_iterations % length == 0:
                return [length] * (num_iterations // length)
        full, rest = divmod(num_iterations, target)
        return [target] * full + ([rest] if rest else [])
    plain = max(1, math.ceil(num_iterations / target_chunks))
    full, rest = divmod(num_iterations, align)
    segment = chunk_plan(align, math.ceil(align / plain))
    return segment * full + (chunk_plan(rest, math.ceil(rest / plain)) if rest else [])


def steps_per_iteration(config: Any) -> int:
    """Env steps one ``step`` collects (over all of a run's envs): the config's
    ``steps_per_iteration`` where it has one, else ``num_envs × rollout_steps`` (PPO, TRPO),
    else ``total_steps // num_iterations``."""
    value = getattr(config, "steps_per_iteration", None)
    if value is None and hasattr(config, "num_envs") and hasattr(config, "rollout_steps"):
        value = config.num_envs * config.rollout_steps
    if value is None:
        value = config.total_steps // max(1, config.num_iterations)
    return max(1, int(value))


def eval_iterations(config: Any, eval_every: int) -> int:
    """Iterations between evaluations: ``eval_every`` env steps rounded to whole iterations
    (at least one, at most the run's); :class:`ConfigError` unless 1 ≤ ``eval_every`` ≤
    ``total_steps``."""
    total = int(config.total_steps)
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or not (
            1 <= eval_every <= total):
        raise ConfigError(
            f"eval_every={eval_every!r} is out of range; allowed: integers 1 … {total} "
            "(env steps between evaluations, at most total_steps)"
        )
    rounded = max(1, round(eval_every / steps_per_iteration(config)))
    return min(rounded, max(1, int(config.num_iterations)))


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


REFERENCE = "reference_return"  # a learner's reference return, per seed (lqr_flm)


def summarise_chunk(state: Any, metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """One run's chunk (metrics leaves ``[chunk]``): pooled episode sums, the last env-step
    count, means of the learner diagnostics, and ``nonfinite`` = 1 when a metric or the
    learner's parameters (``state.learner``) are no longer finite."""
    out = {name: jnp.sum(metrics[name]) for name in results.POOLED}
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
    """What a run is and has done: what was trained, per-chunk history, wall time; and, once
    it stops, its seeds' states (``state``, host arrays, leaves ``[seeds, ...]``)."""

    algo_name: str
    config: Any
    seeds: int
    seed: int
    chunks: list[int]
    runs_per_program: int
    env_id: str | None = None  # the gymnax id the command line rebuilds the env from
    env_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    env_name: str = ""
    history: results.History = dataclasses.field(default_factory=list)
    wall_seconds: float = 0.0
    devices: int = 1
    env_params_digest: str | None = None
    state: Any = None
    target_chunks: int | None = None  # the --chunks the plan was made from
    eval_every: int | None = None  # env steps between greedy evaluations (None: off)
    eval_episodes: int = 10  # episodes per evaluation

    @property
    def evaluates(self) -> bool:
        return self.eval_every is not None

    def evaluate_at(self, chunk: int) -> int | None:
        """The evaluation index of chunk ``chunk`` (the iterations done at its end) when the
        run evaluates there: every ``eval_every`` env steps and at the end; else None."""
        if not self.evaluates:
            return None
        done = sum(self.chunks[: chunk + 1])
        every = max(1, self.eval_every // steps_per_iteration(self.config))
        return done if done % every == 0 or chunk == len(self.chunks) - 1 else None

    @property
    def done_chunks(self) -> int:
        return len(self.history)

    @property
    def finished(self) -> bool:
        return self.done_chunks == len(self.chunks)

    @property
    def total_steps(self) -> int:
        return int(self.config.total_steps)

    def metadata(self) -> dict[str, Any]:
        return {
            "algo": self.algo_name,
            "env": self.env_id,
            "env_name": self.env_name,
            "env_overrides": self.env_overrides,
            "env_params_digest": self.env_params_digest,
            "config": configs.to_json(self.config),
            "seeds": self.seeds,
            "seed": self.seed,
            "chunks": self.chunks,
            "runs_per_program": self.runs_per_program,
            "history": self.history,
            "wall_seconds": self.wall_seconds,
            "devices": self.devices,
            "target_chunks": self.target_chunks,
            "eval_every": self.eval_every,
            "eval_episodes": self.eval_episodes,
        }

    def summary(self) -> dict[str, Any]:
        """What ``summary.json`` holds."""
        finals = results.final_returns(self.history, self.seeds)
        steps = results.env_steps_done(self.history)
        return {
            "algo": self.algo_name,
            "env": self.env_id or self.env_name,
            "env_params": self.env_overrides,
            "steps": steps,
            "seeds": self.seeds,
            "first_seed": self.seed,
            "final_returns": [results.json_float(x) for x in finals],
            "median_final_return": results.json_float(results.nanmedian(finals)),
            "diverged_seeds": [self.seed + s for s in results.diverged(self.history,
                                                                       self.seeds)],
            "wall_seconds": self.wall_seconds,
            "env_steps_per_second": steps * self.seeds / max(self.wall_seconds, 1e-9),
            "runs_per_program": self.runs_per_program,
            "devices": self.devices,
            "chunks": self.target_chunks or len(self.chunks),
            **self._evaluation_summary(),
            **self._reference_summary(),
            "config": configs.to_json(self.config),
        }

    def _reference_summary(self) -> dict[str, Any]:
        """``reference_returns``: per seed, the learner's own ``reference_return`` metric (a
        planner's return on the true model from the same conditions, e.g. lqr_flm's iLQR),
        for learners that report one."""
        if not self.history or REFERENCE not in self.history[-1]:
            return {}
        return {"reference_returns": [results.json_float(x)
                                      for x in self.history[-1][REFERENCE]]}

    def _evaluation_summary(self) -> dict[str, Any]:
        if not self.evaluates:
            return {}
        finals = results.final_eval_returns(self.history, self.seeds)
        return {
            "eval_every": self.eval_every,
            "eval_episodes": self.eval_episodes,
            "final_eval_returns": [results.json_float(x) for x in finals],
            "median_final_eval_return": results.json_float(results.nanmedian(finals)),
        }


def write_files(run: Run, out_dir: str) -> dict[str, Any]:
    """``summary.json``, ``metrics.csv`` (per chunk and seed) and ``curve.png``; returns the
    summary."""
    os.makedirs(out_dir, exist_ok=True)
    summary = run.summary()
    results.write_json(os.path.join(out_dir, "summary.json"), summary)
    results.write_metrics_csv(os.path.join(out_dir, "metrics.csv"), run.history, run.seeds,
                              run.seed)
    results.plot_curve(run.history, run.seeds, f"minirl {run.algo_name} on {summary['env']}",
                       os.path.join(out_dir, "curve.png"))
    return summary


def _typed(env_params: Any, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The changed env parameters as the env holds them (``--set env.max_steps=20.0`` was
    parsed as a number; the env made it an int), for the record."""
    return {name: np.asarray(getattr(env_params, name)).item() for name in overrides or {}}


def _params_digest(env_params: Any) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(env_params):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()[:16]


def _init_fn(algo: types.ModuleType, network: Any) -> Callable:
    return algo.init if network is None else functools.partial(algo.init, network=network)


def _devices(devices: Sequence[Any] | None, algo: types.ModuleType | None = None
             ) -> list[Any]:
    """The devices a run's programs go to: ``devices`` or all local ones, but only the
    first for a learner that sets ``SERIAL_ON_CPU`` when they are CPU devices (its programs
    deadlocked XLA:CPU when two ran at once on the host's forced devices: LQR-FLM and GPS,
    every thread waiting). The bits do not change: the programs' width does not depend on
    the device count."""
    found = list(devices or jax.local_devices())
    if getattr(algo, "SERIAL_ON_CPU", False) and found and found[0].platform == "cpu":
        return found[:1]
    return found


def train(
    algo: types.ModuleType,
    config: Any,
    env: Any,
    env_params: Any,
    *,
    seeds: int = 1,
    seed: int = 0,
    out_dir: str | None = None,
    network: Any = None,
    env_id: str | None = None,
    env_overrides: dict[str, Any] | None = None,
    report: Report | None = None,
    stop_after_chunks: int | None = None,
    target_chunks: int = 50,
    runs_per_program: int | None = None,
    devices: Sequence[Any] | None = None,
    eval_every: int | None = None,
    eval_episodes: int = 10,
    log: Any = None,
) -> Run:
    """Train ``seeds`` seeds of ``algo`` (a learner's module, e.g. ``minirl.algos.dqn``) with
    ``config`` on any ``env``; returns the run record, whose ``state`` holds the seeds'
    states (leaves ``[seeds, ...]``).

    With ``out_dir``, a checkpoint is written after every chunk and, at the end,
    ``summary.json``, ``metrics.csv`` and ``curve.png``; continue an interrupted run with
    :func:`resume` (passing the same env, env parameters and network again).
    ``report(run)`` is called once the run is set up and after every chunk (a progress
    line, a tracker).
    ``runs_per_program`` (default :func:`minirl.programs.default_runs_per_program`) fixes
    how the seeds are grouped into programs, and so the bits; ``devices`` only where they
    run. ``env_id``/``env_overrides`` are recorded for the command line's ``--resume``.

    ``eval_every`` = N plays ``eval_episodes`` greedy episodes (``minirl.evaluation``) every N
    env steps (rounded to whole iterations) and at the end, inside the same compiled
    program, with keys of their own: training's bits do not change. Chunk boundaries are
    placed at the evaluation points. The evaluations go to ``metrics.csv`` (``eval_return``),
    ``curve.png`` and ``summary.json`` (``final_eval_returns``).

    ``log`` watches the run from the host at chunk boundaries (the compiled program is the
    same with or without it): ``"tensorboard"`` (event files in ``out_dir/tensorboard``),
    ``"wandb"``, a list of these, or any callable ``tracker(run)`` (``minirl.tracking``).
    """
    check_positive_int("seeds", seeds)
    check_positive_int("target_chunks", target_chunks)
    check_positive_int("eval_episodes", eval_episodes)
    align = None if eval_every is None else eval_iterations(config, eval_every)
    if out_dir is not None and os.path.exists(os.path.join(out_dir, CHECKPOINT)):
        raise ConfigError(
            f"{out_dir} already holds a run; continue it with resume (minirl train --resume "
            f"{out_dir}) or choose another output directory"
        )
    programs.check_memory(_init_fn(algo, network), config, env, env_params, seeds)
    devices = _devices(devices, algo)
    k = runs_per_program or programs.default_runs_per_program(seeds)
    run = Run(
        algo_name(algo), config, seeds, seed,
        chunk_plan(config.num_iterations, target_chunks, align), k, env_id=env_id,
        env_overrides=_typed(env_params, env_overrides), env_name=env_name(env),
        devices=min(len(devices), math.ceil(seeds / k)),
        env_params_digest=_params_digest(env_params), target_chunks=target_chunks,
        eval_every=None if align is None else align * steps_per_iteration(config),
        eval_episodes=eval_episodes,
    )
    tracking.check(log, out_dir)
    runs = sweeps.seeds_of(config, env, env_params, seeds, seed)
    chunks = programs.start(_init_fn(algo, network), runs.keys, runs.configs, env,
                            runs.env_params, runs_per_program=k, devices=devices)
    trackers = tracking.make(log, run, out_dir)
    return _advance(algo, run, chunks, env, out_dir, report, stop_after_chunks, trackers)


def resume(
    out_dir: str,
    algo: types.ModuleType,
    env: Any,
    env_params: Any,
    *,
    network: Any = None,
    report: Report | None = None,
    stop_after_chunks: int | None = None,
    devices: Sequence[Any] | None = None,
    log: Any = None,
) -> Run:
    """Continue the run checkpointed in ``out_dir`` to its end (or for
    ``stop_after_chunks`` more chunks), bit for bit as if it had never stopped (its
    evaluations too). The env, its parameters and a user's network are not in the
    checkpoint: pass the ones the run started with (the command line rebuilds a gymnax env
    from the recorded ``env_id``). ``log`` as in :func:`train`, from the next chunk on."""
    tracking.check(log, out_dir)
    run, state = load(out_dir, algo, env, env_params, network=network)
    devices = _devices(devices, algo)
    run.devices = min(len(devices), math.ceil(run.seeds / run.runs_per_program))
    runs = sweeps.seeds_of(run.config, env, env_params, run.seeds, run.seed)
    chunks = programs.start(_init_fn(algo, network), runs.keys, runs.configs, env,
                            runs.env_params, runs_per_program=run.runs_per_program,
                            devices=devices, state=state)
    trackers = tracking.make(log, run, out_dir)
    return _advance(algo, run, chunks, env, out_dir, report, stop_after_chunks, trackers)


def _advance(
    algo: types.ModuleType, run: Run, chunks: programs.Chunks, env: Any,
    out_dir: str | None, report: Report | None, stop_after_chunks: int | None,
    trackers: Sequence[Report] = (),
) -> Run:
    start = time.perf_counter() - run.wall_seconds
    stop_at = len(run.chunks)
    if stop_after_chunks is not None:
        check_positive_int("stop_after_chunks", stop_after_chunks)
        stop_at = min(stop_at, run.done_chunks + stop_after_chunks)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
    reports = [r for r in (report, *trackers) if r is not None]
    evaluator = (evaluation.Evaluator(algo, run.eval_episodes) if run.evaluates else None)
    try:
        for r in reports:
            r(run)  # set up: every check passed, the states exist
        while run.done_chunks < stop_at:
            length = run.chunks[run.done_chunks]
            run.history.append(programs.advance(
                algo.step, chunks, env, length, summarise_chunk, evaluator,
                run.evaluate_at(run.done_chunks)))
            run.wall_seconds = time.perf_counter() - start
            if out_dir is not None:
                checkpoint.save(os.path.join(out_dir, CHECKPOINT), chunks.host_state(),
                                run.metadata())
            for r in reports:
                r(run)
        run.state = chunks.host_state()
        if out_dir is not None and run.finished:
            write_files(run, out_dir)
    finally:
        for tracker in trackers:
            tracking.close(tracker)
    return run


def read_metadata(out_dir: str) -> dict[str, Any]:
    """What the checkpoint in ``out_dir`` records about its run (algorithm name, env id and
    overrides, config, seeds, history), without loading any array."""
    meta = checkpoint.read_metadata(os.path.join(out_dir, CHECKPOINT))
    for name in ("algo", "config", "seeds", "seed", "chunks", "history"):
        if name not in meta:
            raise checkpoint.CheckpointError(
                f"checkpoint in {out_dir} lacks {name!r}: it was written by another minirl "
                "version"
            )
    return meta


def load(
    out_dir: str, algo: types.ModuleType, env: Any, env_params: Any, *, network: Any = None
) -> tuple[Run, Any]:
    """The run record and the seeds' states (host arrays) checkpointed in ``out_dir``."""
    path = os.path.join(out_dir, CHECKPOINT)
    meta = read_metadata(out_dir)
    if meta["algo"] != algo_name(algo):
        raise ConfigError(f"{out_dir} holds a {meta['algo']} run, not {algo_name(algo)}")
    digest = meta.get("env_params_digest")
    if digest is not None and digest != _params_digest(env_params):
        raise ConfigError(
            f"env_params differ from those the run in {out_dir} started with "
            f"(env {meta.get('env') or meta.get('env_name')}, overrides "
            f"{meta.get('env_overrides', {})}); pass the same env parameters to resume"
        )
    try:
        config = configs.from_json(algo.Config, meta["config"])
    except ConfigError as error:
        raise checkpoint.CheckpointError(f"checkpoint {path}: {error}") from None
    template = programs.state_template(_init_fn(algo, network), config, env, env_params,
                                       meta["seeds"])
    state, _ = checkpoint.load(path, template)
    run = Run(
        meta["algo"], config, meta["seeds"], meta["seed"], meta["chunks"],
        meta.get("runs_per_program", programs.default_runs_per_program(meta["seeds"])),
        env_id=meta.get("env"), env_overrides=meta.get("env_overrides", {}),
        env_name=meta.get("env_name") or env_name(env), history=meta["history"],
        wall_seconds=meta.get("wall_seconds", 0.0), devices=meta.get("devices", 1),
        env_params_digest=digest or _params_digest(env_params), state=state,
        target_chunks=meta.get("target_chunks"), eval_every=meta.get("eval_every"),
        eval_episodes=meta.get("eval_episodes", 10),
    )
    return run, state


# ----------------------------------------------------------------------------- sweep


def sweep(
    algo: types.ModuleType,
    base: Any,
    env: Any,
    env_params: Any,
    grid: dict[str, Sequence[Any]] | Sequence[dict[str, Any]],
    *,
    zipped: bool = False,
    seeds: int = 1,
    seed: int = 0,
    out_dir: str | None = None,
    network: Any = None,
    env_id: str | None = None,
    env_overrides: dict[str, Any] | None = None,
    report: Report | None = None,
    target_chunks: int = 20,
    runs_per_program: int | None = None,
    devices: Sequence[Any] | None = None,
    eval_every: int | None = None,
    eval_episodes: int = 10,
) -> dict[str, Any] | None:
    """Train every configuration × ``seeds`` seeds from ``base`` and return the summary:
    per configuration its values, per-seed final returns, median, diverged seeds and rank.

    ``grid`` is ``{field or env.FIELD: [values]}``, every combination (or, ``zipped``, the
    i-th values together), or an explicit list of assignments ``[{name: value}, ...]``
    (``minirl.sweep.grid``, ``minirl.sweep.zip_values``). ``report(run)`` is called once set
    up and after every chunk with a :class:`Run` of this process's runs. With ``out_dir`` the
    summary is written as ``summary.json`` with ``sweep.png``. Under several processes
    (``minirl.distributed``) each process trains its groups and writes its slice to
    ``out_dir`` (a filesystem all processes share); process 0 merges the slices and returns
    the summary, the others return ``None``. ``metrics.csv`` holds every run's curve (the
    mean return per chunk, and the greedy evaluations with ``eval_every`` as in
    :func:`train`): what ``minirl compare`` plots, one line per configuration.
    """
    devices = _devices(devices, algo)
    check_positive_int("eval_episodes", eval_episodes)
    align = None if eval_every is None else eval_iterations(base, eval_every)
    run = Run(algo_name(algo), base, 0, seed,
              chunk_plan(base.num_iterations, target_chunks, align), 0, env_id=env_id,
              env_overrides=_typed(env_params, env_overrides), env_name=env_name(env),
              devices=len(devices), target_chunks=target_chunks,
              eval_every=None if align is None else align * steps_per_iteration(base),
              eval_episodes=eval_episodes)
    if isinstance(grid, dict):
        assignments = (sweeps.zip_values if zipped else sweeps.grid)(**grid)
    else:
        assignments = list(grid)
    runs = sweeps.expand(base, env, env_params, assignments, seeds, seed)
    config_json = configs.to_json(base)
    k = runs_per_program or programs.default_runs_per_program(runs.num_runs)
    local = -(-runs.num_runs // (k * jax.process_count())) * k
    init_fn = _init_fn(algo, network)
    programs.check_memory(init_fn, base, env, env_params, min(local, runs.num_runs))
    state = programs.start(init_fn, runs.keys, runs.configs, env, runs.env_params,
                           runs_per_program=k, devices=devices)
    rows = state.rows
    run.seeds, run.runs_per_program = len(rows), k
    start = time.perf_counter()
    if report is not None and rows.size:
        report(run)
    evaluator = evaluation.Evaluator(algo, eval_episodes) if run.evaluates else None
    for chunk, length in enumerate(run.chunks):
        run.history.append(programs.advance(algo.step, state, env, length, summarise_chunk,
                                            evaluator, run.evaluate_at(chunk)))
        run.wall_seconds = time.perf_counter() - start
        if report is not None and rows.size:
            report(run)
    merged = distributed.gather(out_dir, rows, results.run_records(run.history, len(rows)),
                                runs.num_runs)
    if merged is None:  # another process merges
        return None
    summary = results.sweep_summary(
        merged, runs.rows, assignments, algo=run.algo_name, env=env_id or run.env_name,
        env_params=run.env_overrides, first_seed=seed, mode="zip" if zipped else "grid",
        runs_per_program=k, devices=len(devices) * jax.process_count(),
        processes=jax.process_count(), chunks=target_chunks,
        **({"eval_every": run.eval_every, "eval_episodes": eval_episodes}
           if run.evaluates else {}),
        config=config_json, wall_seconds=time.perf_counter() - start,
    )
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        results.write_json(os.path.join(out_dir, "summary.json"), summary)
        results.plot_sweep(summary, os.path.join(out_dir, "sweep.png"))
        steps = np.cumsum(run.chunks) * steps_per_iteration(base)
        results.write_sweep_csv(os.path.join(out_dir, "metrics.csv"), merged, runs.rows,
                                steps, seed)
    return summary


# ----------------------------------------------------------------------------- plan


def plan(
    planner: str,
    env: Any,
    env_params: Any,
    *,
    seeds: int = 4,
    seed: int = 0,
    steps: int | None = None,
    options: dict[str, Any] | None = None,
    out_dir: str | None = None,
    env_id: str | None = None,
    env_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One closed-loop MPC episode per seed with the named planner (``minirl.planning.mpc``)
    and the env as its model, all seeds in one jitted, vmapped program; returns the summary
    (``final_returns``: each seed's episode return) and, with ``out_dir``, writes
    ``summary.json``, ``metrics.csv`` (reward and return so far per step and seed) and
    ``curve.png``. ``steps`` defaults to the env's episode limit."""
    check_positive_int("seeds", seeds)
    planner_fn = mpc.make_planner(planner, env, env_params, options)
    if steps is None:
        steps = int(getattr(env_params, "max_steps_in_episode", 200))
    check_positive_int("steps", steps)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    episodes = jax.jit(jax.vmap(lambda key: mpc.mpc(key, env, env_params, planner_fn, steps)))
    start = time.perf_counter()
    result = jax.block_until_ready(episodes(keys))
    wall = time.perf_counter() - start
    returns = [float(r) for r in np.asarray(result.episode_return)]
    rewards = np.asarray(result.rewards)
    summary = {
        "algo": planner,
        "env": env_id or env_name(env),
        "env_params": _typed(env_params, env_overrides),
        "steps": steps,
        "seeds": seeds,
        "first_seed": seed,
        "final_returns": returns,
        "median_final_return": float(np.median(returns)),
        "diverged_seeds": [],
        "wall_seconds": wall,  # compilation included
        "env_steps_per_second": seeds * steps / max(wall, 1e-9),
        "episode_lengths": [int(n) for n in np.asarray(result.episode_length)],
        "options": mpc.planner_options(planner, options),
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        results.write_json(os.path.join(out_dir, "summary.json"), summary)
        results.write_episode_csv(os.path.join(out_dir, "metrics.csv"), rewards)
        results.plot_episode(rewards, f"minirl plan {planner} on {summary['env']}",
                             os.path.join(out_dir, "curve.png"))
    return summary


# ----------------------------------------------------------------------------- evaluate


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
    over seeds) plays ``episodes`` fresh episodes (one per env, vmapped) until each ends
    (``minirl.evaluation.returns``, the function training's evaluations use too)."""
    check_positive_int("episodes", episodes)

    def one_seed(params, key):
        return evaluation.returns(key, algo, params, config, env, env_params, episodes,
                                  max_steps)

    num_seeds = jax.tree.leaves(eqx.filter(params, eqx.is_array))[0].shape[0]
    keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    return np.asarray(jax.jit(jax.vmap(one_seed))(params, keys))


def evaluate_run(
    out_dir: str, algo: types.ModuleType, env: Any, env_params: Any, episodes: int,
    seed: int = 0, *, network: Any = None,
) -> tuple[Run, np.ndarray]:
    """The run checkpointed in ``out_dir`` and its greedy returns ``[seeds, episodes]``."""
    check_positive_int("episodes", episodes)
    run, state = load(out_dir, algo, env, env_params, network=network)
    returns = evaluate(algo, run.config, env, env_params, state.learner.params, episodes, seed)
    return run, returns
