"""Host-level training runs: jitted chunks of iterations, progress, checkpoints, outputs.

This is where printing, files and wall-clock time live; algorithms stay pure. A run is
``init`` vmapped over seeds, then ``step`` scanned for a fixed number of iterations per
chunk, jitted once with the state donated (the replay buffer is updated in place). After
every chunk the host pools episode statistics, reports progress, and writes an atomic
checkpoint, so ``resume`` continues bit-for-bit as an uninterrupted run would: the same
compiled chunk is applied to the same state.
"""

import csv
import dataclasses
import json
import math
import os
import sys
import time
import types
from collections.abc import Callable
from typing import Any, get_args, get_origin

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from minirl import checkpoint
from minirl.core import rollout

CHECKPOINT = "checkpoint.npz"
FINAL_WINDOW = 0.1  # the final return pools episodes completed in the last 10% of the run


# ----------------------------------------------------------------------------- configs


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_cls)}


def parse_value(config_cls: type, name: str, text: str) -> Any:
    """Parse ``text`` as the type of field ``name`` of ``config_cls``."""
    fields = config_fields(config_cls)
    if name not in fields:
        raise ValueError(
            f"unknown field {name!r} for {config_cls.__module__.rsplit('.', 1)[-1]}; "
            f"fields: {', '.join(fields)}"
        )
    annotation = fields[name].type
    try:
        if annotation is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
        if get_origin(annotation) is tuple:
            item = get_args(annotation)[0]
            parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
            return tuple(item(p) for p in parts)
        return text
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a valid {_type_name(annotation)}") from None


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is tuple:
        return "comma-separated list of " + get_args(annotation)[0].__name__
    return getattr(annotation, "__name__", str(annotation))


def parse_sets(config_cls: type, assignments: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "hidden=64,64"]`` → typed overrides; errors name the field."""
    overrides = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"--set {assignment!r} must look like field=value")
        name, text = assignment.split("=", 1)
        overrides[name.strip()] = parse_value(config_cls, name.strip(), text.strip())
    return overrides


def config_to_json(config: eqx.Module) -> dict[str, Any]:
    out = {}
    for name in config_fields(type(config)):
        value = getattr(config, name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.ndarray | jax.Array):
            value = np.asarray(value).tolist()
        elif isinstance(value, float) and math.isinf(value):
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
    rollout.make_env(env_id)  # a clear error for an unknown id before anything else
    kwargs = {**algo.preset(env_id), **overrides, "env_id": env_id}
    if steps is not None:
        kwargs["total_steps"] = steps
    return algo.Config(**kwargs)


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


def _chunk_fn(algo: types.ModuleType, length: int) -> Callable:
    def run(state, config):
        def one(state):
            return jax.lax.scan(lambda s, _: algo.step(s, config), state, length=length)

        state, metrics = jax.vmap(one)(state)
        return state, summarise_chunk(metrics)

    return jax.jit(run, donate_argnums=0)


def summarise_chunk(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Per seed: pooled episode sums over the chunk, and means of the learner diagnostics."""
    pooled = ("episodes", "episode_return_sum", "episode_length_sum")
    out = {name: jnp.sum(metrics[name], axis=1) for name in pooled}
    out["env_steps"] = metrics["env_steps"][:, -1]
    for name, value in metrics.items():
        if name not in out:
            out[name] = jnp.mean(value, axis=1)
    return out


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Run:
    """Everything a run writes: config, per-chunk history, wall time."""

    algo_name: str
    config: Any
    seeds: int
    seed: int
    chunks: list[int]
    history: list[dict[str, list[float]]]  # one entry per finished chunk, values per seed
    wall_seconds: float = 0.0

    @property
    def done_chunks(self) -> int:
        return len(self.history)

    def metadata(self) -> dict[str, Any]:
        return {
            "algo": self.algo_name,
            "config": config_to_json(self.config),
            "seeds": self.seeds,
            "seed": self.seed,
            "chunks": self.chunks,
            "history": self.history,
            "wall_seconds": self.wall_seconds,
        }


def _state_template(algo: types.ModuleType, config: Any, seeds: int) -> Any:
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    return jax.eval_shape(jax.vmap(algo.init, in_axes=(0, None)), keys, config)


def load_run(out_dir: str, algorithms: dict[str, types.ModuleType]) -> tuple[Run, Any]:
    path = os.path.join(out_dir, CHECKPOINT)
    meta = checkpoint.read_metadata(path)
    if meta.get("algo") not in algorithms:
        raise checkpoint.CheckpointError(
            f"checkpoint {path} is for algorithm {meta.get('algo')!r}, which minirl does not know"
        )
    algo = algorithms[meta["algo"]]
    config = config_from_json(algo.Config, meta["config"])
    state, _ = checkpoint.load(path, _state_template(algo, config, meta["seeds"]))
    run = Run(
        meta["algo"],
        config,
        meta["seeds"],
        meta["seed"],
        meta["chunks"],
        meta["history"],
        meta["wall_seconds"],
    )
    return run, state


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


def train(
    algo_name: str,
    algorithms: dict[str, types.ModuleType],
    out_dir: str,
    *,
    config: Any = None,
    seeds: int = 1,
    seed: int = 0,
    resume: bool = False,
    stop_after_chunks: int | None = None,
    report: Callable[[Run, float], None] | None = None,
    target_chunks: int = 50,
) -> Run:
    """Run (or resume) training, checkpointing after every chunk; returns the run record."""
    algo = algorithms[algo_name]
    clock = time.perf_counter()
    if resume:
        run, state = load_run(out_dir, algorithms)
        if run.algo_name != algo_name:
            raise ValueError(f"--resume {out_dir} holds a {run.algo_name} run, not {algo_name}")
    else:
        keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
        run = Run(
            algo_name, config, seeds, seed, chunk_plan(config.num_iterations, target_chunks), []
        )
        state = jax.jit(jax.vmap(algo.init, in_axes=(0, None)))(keys, config)
    os.makedirs(out_dir, exist_ok=True)
    compiled: dict[int, Callable] = {}
    start = clock - run.wall_seconds
    stop_at = (
        len(run.chunks)
        if stop_after_chunks is None
        else min(len(run.chunks), run.done_chunks + stop_after_chunks)
    )
    while run.done_chunks < stop_at:
        length = run.chunks[run.done_chunks]
        if length not in compiled:
            compiled[length] = _chunk_fn(algo, length)
        state, summary = compiled[length](state, run.config)
        run.history.append({k: np.asarray(v, np.float64).tolist() for k, v in summary.items()})
        run.wall_seconds = time.perf_counter() - start
        checkpoint.save(os.path.join(out_dir, CHECKPOINT), state, run.metadata())
        if report is not None:
            report(run, run.wall_seconds)
    if run.done_chunks == len(run.chunks):
        write_outputs(run, out_dir)
    return run


# ----------------------------------------------------------------------------- outputs


def env_steps_done(run: Run) -> int:
    return int(run.history[-1]["env_steps"][0]) if run.history else 0


def summary(run: Run) -> dict[str, Any]:
    finals = final_returns(run.history, run.seeds)
    steps = env_steps_done(run)
    return {
        "algo": run.algo_name,
        "env": run.config.env_id,
        "steps": steps,
        "seeds": run.seeds,
        "final_returns": finals,
        "median_final_return": float(np.nanmedian(finals)) if finals else float("nan"),
        "wall_seconds": run.wall_seconds,
        "env_steps_per_second": steps * run.seeds / max(run.wall_seconds, 1e-9),
        "config": config_to_json(run.config),
    }


def write_outputs(run: Run, out_dir: str) -> dict[str, Any]:
    result = summary(run)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(result, f, indent=2)
    names = [
        k
        for k in run.history[0]
        if k not in ("episodes", "episode_return_sum", "episode_length_sum", "env_steps")
    ]
    with open(os.path.join(out_dir, "metrics.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["chunk", "seed", "env_steps", "episodes", "mean_return", "mean_length", *names]
        )
        for i, row in enumerate(run.history):
            for s in range(run.seeds):
                episodes = row["episodes"][s]
                writer.writerow(
                    [
                        i,
                        s + run.seed,
                        int(row["env_steps"][s]),
                        int(episodes),
                        row["episode_return_sum"][s] / episodes if episodes else "",
                        row["episode_length_sum"][s] / episodes if episodes else "",
                        *(row[n][s] for n in names),
                    ]
                )
    plot_curve(run, os.path.join(out_dir, "curve.png"))
    return result


def learning_curve(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """Env steps ``[C]`` and per-seed mean return of episodes completed per chunk ``[S, C]``
    (carried forward through chunks in which no episode ended)."""
    steps = np.array([row["env_steps"][0] for row in run.history])
    curve = np.full((run.seeds, len(run.history)), np.nan)
    for i, row in enumerate(run.history):
        for s in range(run.seeds):
            if row["episodes"][s]:
                curve[s, i] = row["episode_return_sum"][s] / row["episodes"][s]
            elif i:
                curve[s, i] = curve[s, i - 1]
    return steps, curve


def plot_curve(run: Run, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, curve = learning_curve(run)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    with np.errstate(all="ignore"):
        mean = np.nanmean(curve, axis=0)
        low, high = np.nanmin(curve, axis=0), np.nanmax(curve, axis=0)
    ax.fill_between(steps, low, high, alpha=0.25, label=f"min–max over {run.seeds} seeds")
    for s in range(run.seeds):
        ax.plot(steps, curve[s], lw=0.6, alpha=0.5)
    ax.plot(steps, mean, lw=2.2, color="black", label="mean")
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("episode return")
    ax.set_title(f"minirl {run.algo_name} on {run.config.env_id}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- evaluation


def evaluate(
    algo: types.ModuleType, config: Any, state: Any, episodes: int, seed: int = 0
) -> np.ndarray:
    """Greedy returns ``[seeds, episodes]``: each seed's policy plays ``episodes`` fresh
    episodes (one per env, vmapped) until each first ends."""
    env, env_params = rollout.make_env(config.env_id)
    max_steps = int(env_params.max_steps_in_episode)

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

    keys = jax.random.split(jax.random.PRNGKey(seed), state.key.shape[0])
    return np.asarray(jax.jit(jax.vmap(one_seed))(state.params, keys))


def eprint(message: str) -> None:
    print(message, file=sys.stderr)


# ----------------------------------------------------------------------------- planning


def parse_options(assignments: list[str]) -> dict[str, float]:
    """``["horizon=30", "c=0.5"]`` → ``{"horizon": 30, "c": 0.5}`` for ``minirl plan``."""
    options: dict[str, float] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or not name:
            raise ValueError(f"--set {assignment!r} must look like field=value")
        try:
            options[name] = int(text)
        except ValueError:
            try:
                options[name] = float(text)
            except ValueError:
                raise ValueError(
                    f"--set {name}={text!r} is not a number; planner options are numeric"
                ) from None
    return options


def plan_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The ``summary.json`` of ``minirl plan``: the keys of ``train``'s, per-seed returns of
    one closed-loop MPC episode as ``final_returns``."""
    returns = [float(r) for r in result["returns"]]
    return {
        "algo": result["planner"],
        "env": result["env"],
        "steps": int(result["rewards"].shape[1]),
        "seeds": len(returns),
        "final_returns": returns,
        "median_final_return": float(np.median(returns)),
        "wall_seconds": result["wall_time_s"],
        "env_steps_per_second": result["env_steps"] / max(result["wall_time_s"], 1e-9),
        "episode_lengths": [int(n) for n in result["lengths"]],
        "options": result["options"],
    }


def write_plan_outputs(result: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """``summary.json``, ``metrics.csv`` (reward and return so far per step and seed) and
    ``curve.png`` (return so far against env steps, mean and spread over seeds)."""
    os.makedirs(out_dir, exist_ok=True)
    summary_data = plan_summary(result)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary_data, f, indent=2)
    rewards = np.asarray(result["rewards"])
    cumulative = np.cumsum(rewards, axis=1)
    with open(os.path.join(out_dir, "metrics.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "env_step", "reward", "return_so_far"])
        for s in range(rewards.shape[0]):
            for t in range(rewards.shape[1]):
                writer.writerow([s, t + 1, rewards[s, t], cumulative[s, t]])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, rewards.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.fill_between(
        steps, cumulative.min(0), cumulative.max(0), alpha=0.25,
        label=f"min–max over {rewards.shape[0]} seeds",
    )
    ax.plot(steps, cumulative.mean(0), lw=2.2, color="black", label="mean")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return so far")
    ax.set_title(f"minirl plan {result['planner']} on {result['env']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "curve.png"))
    plt.close(fig)
    return summary_data
