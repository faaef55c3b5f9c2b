"""What a run leaves behind: its numbers reduced from the per-chunk history, and the files
``summary.json``, ``metrics.csv``, ``curve.png`` (and ``sweep.png`` for a sweep).

The history of a run is a list with one row per chunk: ``{name: [one value per seed]}``,
holding the pooled episode statistics of the chunk (``episodes``, ``episode_return_sum``,
``episode_length_sum``), the env steps done so far and the means of the learner's
diagnostics; with evaluation on, ``eval_return`` holds the mean return of the greedy
episodes played at the end of the chunk (NaN for a chunk that did not evaluate).
Everything here is host-side NumPy and Matplotlib; files are written to a
temporary name and renamed into place, so a crash never leaves a half-written file.
"""

import csv
import json
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

FINAL_WINDOW = 0.1  # the final return pools episodes completed in the last 10% of the run
POOLED = ("episodes", "episode_return_sum", "episode_length_sum")
EVAL = "eval_return"  # minirl.programs.EVAL_RETURN

History = list[dict[str, list[float]]]


# ----------------------------------------------------------------------------- numbers


def env_steps_done(history: History) -> int:
    return int(history[-1]["env_steps"][0]) if history else 0


def final_returns(history: History, seeds: int) -> list[float]:
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


def eval_curve(history: History, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Env steps ``[M]`` of the chunks that evaluated and each seed's mean greedy return
    there ``[S, M]`` (empty when the run did not evaluate)."""
    rows = [row for row in history if EVAL in row and np.isfinite(row[EVAL]).any()]
    steps = np.array([row["env_steps"][0] for row in rows], np.float64)
    curve = np.array([[row[EVAL][s] for row in rows] for s in range(seeds)], np.float64)
    return steps, curve.reshape(seeds, len(rows))


def final_eval_returns(history: History, seeds: int) -> list[float]:
    """Per seed: the mean return of the greedy episodes of the last evaluation (the one at
    the end of the run); NaN when there was none."""
    _, curve = eval_curve(history, seeds)
    return [float(c[-1]) if c.size else float("nan") for c in curve]


def diverged(history: History, seeds: int) -> list[int]:
    """Indices (0-based, among the run's seeds) whose losses or parameters became non-finite
    in some chunk."""
    return [s for s in range(seeds) if any(row.get("nonfinite", [0] * seeds)[s]
                                           for row in history)]


def learning_curve(history: History, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Env steps ``[C]`` and per-seed mean return of episodes completed per chunk ``[S, C]``
    (carried forward through chunks in which no episode ended)."""
    steps = np.array([row["env_steps"][0] for row in history])
    curve = np.full((seeds, len(history)), np.nan)
    for i, row in enumerate(history):
        for s in range(seeds):
            if row["episodes"][s]:
                curve[s, i] = row["episode_return_sum"][s] / row["episodes"][s]
            elif i:
                curve[s, i] = curve[s, i - 1]
    return steps, curve


def json_float(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def nanmedian(x: Sequence[float]) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmedian(x)) if np.any(np.isfinite(x)) else float("nan")


def jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def run_records(history: History, runs: int) -> list[dict[str, Any]]:
    """Per run: its final return, env steps, whether it diverged, its learning curve (mean
    return per chunk) and, where it evaluated, its final greedy return and evaluation
    curve: what a sweep merges (JSON, so that processes can exchange them)."""
    finals = final_returns(history, runs)
    bad = set(diverged(history, runs))
    steps = env_steps_done(history)
    _, curve = learning_curve(history, runs)
    evaluated = bool(history) and EVAL in history[0]
    eval_finals = final_eval_returns(history, runs)
    records = []
    for i, f in enumerate(finals):
        record = {"final_return": json_float(f), "env_steps": steps, "diverged": i in bad,
                  "curve": [json_float(x) for x in curve[i]]}
        if evaluated:  # per chunk, None where the chunk did not evaluate
            record["final_eval_return"] = json_float(eval_finals[i])
            record["eval_curve"] = [json_float(row[EVAL][i]) for row in history]
        records.append(record)
    return records


def sweep_values(assignments: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The values each name takes over the assignments, in order of first appearance."""
    values: dict[str, list[Any]] = {}
    for assignment in assignments:
        for name, value in assignment.items():
            seen = values.setdefault(name, [])
            if value not in seen:
                seen.append(value)
    return values


def sweep_summary(
    records: Sequence[dict[str, Any]], rows: np.ndarray, assignments: Sequence[dict[str, Any]],
    *, first_seed: int, wall_seconds: float, **meta: Any,
) -> dict[str, Any]:
    """A sweep's ``summary.json``: per configuration (``rows[c]``: its runs, one per seed) the
    values, per-seed final returns, median, diverged seeds and rank by median; ``meta``
    (algo, env, config, ...) is copied in."""
    finals = np.array([nan(r["final_return"]) for r in records], np.float64)
    evaluated = all("final_eval_return" in r for r in records)
    per_config = []
    for c, assignment in enumerate(assignments):
        runs = rows[c]
        per_config.append({
            "values": {k: jsonable(v) for k, v in assignment.items()},
            "final_returns": [json_float(x) for x in finals[runs]],
            "median_final_return": json_float(nanmedian(finals[runs])),
            "diverged_seeds": [first_seed + s for s, r in enumerate(runs)
                               if records[r]["diverged"]],
        })
        if evaluated:
            evals = [nan(records[r]["final_eval_return"]) for r in runs]
            per_config[-1]["final_eval_returns"] = [json_float(x) for x in evals]
            per_config[-1]["median_final_eval_return"] = json_float(nanmedian(evals))
    ranking = sorted(range(len(per_config)), key=lambda c: -np.nan_to_num(
        nan(per_config[c]["median_final_return"]), nan=-np.inf))
    for rank, c in enumerate(ranking, 1):
        per_config[c]["rank"] = rank
    steps = max(int(r["env_steps"]) for r in records)
    return {
        **{k: meta[k] for k in ("algo", "env", "env_params") if k in meta},
        "steps": steps,
        "seeds": int(rows.shape[1]),
        "first_seed": first_seed,
        "swept": {k: [jsonable(v) for v in vs] for k, vs in sweep_values(assignments).items()},
        "configurations": per_config,
        "ranking": ranking,
        "runs": len(records),
        **{k: v for k, v in meta.items() if k not in ("algo", "env", "env_params")},
        "wall_seconds": wall_seconds,
        "env_steps_per_second": steps * len(records) / max(wall_seconds, 1e-9),
    }


# ----------------------------------------------------------------------------- files


def atomic_write(path: str, write: Callable[[Any], None]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        write(f)
    os.replace(tmp, path)


def write_json(path: str, data: Any) -> None:
    atomic_write(path, lambda f: json.dump(data, f, indent=2))


def _cell(value: float) -> Any:
    return value if np.isfinite(value) else ""


def write_metrics_csv(path: str, history: History, seeds: int, first_seed: int) -> None:
    """One row per chunk and seed: env steps, episodes, mean return and length, and the
    means of every other metric (``eval_return`` empty where the chunk did not evaluate)."""
    names = [k for k in history[0] if k not in (*POOLED, "env_steps")] if history else []

    def write(f):
        writer = csv.writer(f)
        writer.writerow(
            ["chunk", "seed", "env_steps", "episodes", "mean_return", "mean_length", *names]
        )
        for i, row in enumerate(history):
            for s in range(seeds):
                episodes = row["episodes"][s]
                writer.writerow([
                    i,
                    s + first_seed,
                    int(row["env_steps"][s]),
                    int(episodes),
                    row["episode_return_sum"][s] / episodes if episodes else "",
                    row["episode_length_sum"][s] / episodes if episodes else "",
                    *(_cell(row[n][s]) if n == EVAL else row[n][s] for n in names),
                ])

    atomic_write(path, write)


def write_sweep_csv(path: str, records: Sequence[dict[str, Any]], rows: np.ndarray,
                    steps: Sequence[float], first_seed: int) -> None:
    """A sweep's curves: one row per chunk, configuration and seed with the env steps, the
    mean training return (carried forward through chunks without a finished episode) and,
    where the sweep evaluated, the greedy return (``minirl compare`` reads this)."""
    evaluated = all("eval_curve" in r for r in records)

    def write(f):
        writer = csv.writer(f)
        writer.writerow(["chunk", "configuration", "seed", "env_steps", "mean_return",
                         *(["eval_return"] if evaluated else [])])
        for c, runs in enumerate(rows):
            for s, r in enumerate(runs):
                record = records[r]
                for i, x in enumerate(record["curve"]):
                    extra = [_cell(nan(record["eval_curve"][i]))] if evaluated else []
                    writer.writerow([i, c, s + first_seed, int(steps[i]),
                                     _cell(nan(x)), *extra])

    atomic_write(path, write)


def pyplot():
    """Matplotlib's pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str) -> None:
    """Save a Matplotlib figure atomically (a temporary file renamed into place) and close it."""
    plt = pyplot()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def plot_curve(history: History, seeds: int, title: str, path: str) -> None:
    """Return against env steps: every seed, their mean and the min–max band; where the run
    evaluated, a second line: the mean over seeds of the greedy evaluation returns."""
    plt = pyplot()
    steps, curve = learning_curve(history, seeds)
    eval_steps, evals = eval_curve(history, seeds)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    with warnings.catch_warnings():  # chunks in which no seed finished an episode: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(curve, axis=0)
        low, high = np.nanmin(curve, axis=0), np.nanmax(curve, axis=0)
    ax.fill_between(steps, low, high, alpha=0.25, label=f"min–max over {seeds} seeds")
    for s in range(seeds):
        ax.plot(steps, curve[s], lw=0.6, alpha=0.5)
    ax.plot(steps, mean, lw=2.2, color="black",
            label="mean" if not eval_steps.size else "training episodes, mean")
    if eval_steps.size:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.plot(eval_steps, np.nanmean(evals, axis=0), "o-", lw=1.8, ms=3,
                    color="tab:red", label="greedy evaluation, mean")
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def plot_sweep(result: dict[str, Any], path: str) -> None:
    """Final return against each swept value: every run, and the median per value."""
    plt = pyplot()
    names = list(result["swept"])
    fig, axes = plt.subplots(
        1, len(names), figsize=(4.2 * len(names) + 1, 3.8), dpi=120, squeeze=False
    )
    for ax, name in zip(axes[0], names):
        xs = result["swept"][name]
        medians = []
        for x in xs:
            pooled = [
                nan(r)
                for c in result["configurations"]
                if c["values"][name] == x
                for r in c["final_returns"]
            ]
            ax.scatter([x] * len(pooled), pooled, s=10, alpha=0.4, color="tab:blue")
            medians.append(nanmedian(pooled))
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
        if numeric:
            order = np.argsort(xs)
            ax.plot(np.asarray(xs)[order], np.asarray(medians)[order], "o-", color="black",
                    lw=2, label="median over seeds (and the other swept values)")
            if min(xs) > 0 and max(xs) / min(xs) >= 3:
                ax.set_xscale("log")
            ax.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))])
            ax.minorticks_off()
        ax.set_xlabel(name)
        ax.set_ylabel("final return")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=7)
    fig.suptitle(
        f"minirl sweep {result['algo']} on {result['env']}: "
        f"{len(result['configurations'])} configurations × {result['seeds']} seeds"
    )
    fig.tight_layout()
    save_figure(fig, path)


def plot_episode(rewards: np.ndarray, title: str, path: str) -> None:
    """Return so far against env steps of one episode per seed (``rewards [S, T]``)."""
    plt = pyplot()
    cumulative = np.cumsum(rewards, axis=1)
    steps = np.arange(1, rewards.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.fill_between(steps, cumulative.min(0), cumulative.max(0), alpha=0.25,
                    label=f"min–max over {rewards.shape[0]} seeds")
    ax.plot(steps, cumulative.mean(0), lw=2.2, color="black", label="mean")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return so far")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    save_figure(fig, path)


def write_episode_csv(path: str, rewards: np.ndarray, first_seed: int = 0) -> None:
    """Reward and return so far per step and seed of one episode per seed."""
    cumulative = np.cumsum(rewards, axis=1)

    def write(f):
        writer = csv.writer(f)
        writer.writerow(["seed", "env_step", "reward", "return_so_far"])
        for s in range(rewards.shape[0]):
            for t in range(rewards.shape[1]):
                writer.writerow([s + first_seed, t + 1, rewards[s, t], cumulative[s, t]])

    atomic_write(path, write)
