"""What the command line shows and writes: the live progress line, result tables,
``summary.json``, ``metrics.csv`` and the plots, for ``train``, ``sweep`` and ``plan``.

Files are written to a temporary name and renamed into place, so a crash never leaves a
half-written summary behind.
"""

import csv
import json
import os
import sys
import time
import warnings
from typing import Any

import numpy as np

from minirl import distributed, runner, sweep

# ----------------------------------------------------------------------------- files


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        write(f)
    os.replace(tmp, path)


def _write_json(path: str, data: Any) -> None:
    _atomic_write(path, lambda f: json.dump(data, f, indent=2))


def _json_float(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _nanmedian(x: np.ndarray) -> float:
    return float(np.nanmedian(x)) if np.any(np.isfinite(x)) else float("nan")


def _jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# ----------------------------------------------------------------------------- progress


class Progress:
    """A live progress line between chunks (a plain line every 5 s when not on a terminal).

    Shows env steps per seed, throughput, the mean return of recent episodes and, once any
    seed's loss or parameters are non-finite, which seeds diverged."""

    def __init__(self, total_steps: int, seeds: int, stream=None, unit: str = "seed"):
        self.total = total_steps
        self.seeds = seeds
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.unit = unit
        self.last_print = 0.0

    def line(self, history: list[dict[str, list[float]]], wall: float) -> str:
        steps = runner.env_steps_done(history)
        rate = steps * self.seeds / max(wall, 1e-9)
        recent = runner.final_returns(history[-max(1, len(history) // 10):], self.seeds)
        recent_mean = np.nanmean(recent) if not np.all(np.isnan(recent)) else float("nan")
        width = 28
        filled = int(width * steps / max(self.total, 1))
        text = (
            f"[{'#' * filled}{'.' * (width - filled)}] {steps:>9,}/{self.total:,} env steps/"
            f"{self.unit} | {rate:>10,.0f} steps/s | recent return {recent_mean:8.1f}"
            f" | {wall:6.1f}s"
        )
        bad = runner.diverged(history, self.seeds)
        if bad:
            text += f" | DIVERGED: {len(bad)} {self.unit}(s) {_short(bad)}"
        return text

    def __call__(self, run: "runner.Run") -> None:
        self.show(run.history, run.wall_seconds)

    def show(self, history: list[dict[str, list[float]]], wall: float) -> None:
        text = self.line(history, wall)
        done = runner.env_steps_done(history) >= self.total
        if self.live:
            self.stream.write("\r" + text + ("\n" if done else ""))
            self.stream.flush()
        elif done or time.perf_counter() - self.last_print > 5.0:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last_print = time.perf_counter()


def _short(indices: list[int]) -> str:
    shown = ", ".join(map(str, indices[:6]))
    return f"[{shown}{', …' if len(indices) > 6 else ''}]"


# ----------------------------------------------------------------------------- train


def run_summary(run: "runner.Run") -> dict[str, Any]:
    finals = runner.final_returns(run.history, run.seeds)
    steps = runner.env_steps_done(run.history)
    bad = runner.diverged(run.history, run.seeds)
    return {
        "algo": run.algo_name,
        "env": run.env_id,
        "env_params": run.env_overrides,
        "steps": steps,
        "seeds": run.seeds,
        "first_seed": run.seed,
        "final_returns": [_json_float(x) for x in finals],
        "median_final_return": _json_float(_nanmedian(np.array(finals, np.float64))),
        "diverged_seeds": [run.seed + s for s in bad],
        "wall_seconds": run.wall_seconds,
        "env_steps_per_second": steps * run.seeds / max(run.wall_seconds, 1e-9),
        "runs_per_program": run.runs_per_program,
        "devices": run.devices,
        "config": runner.config_to_json(run.config),
    }


def write_run_outputs(run: "runner.Run", out_dir: str) -> dict[str, Any]:
    """``summary.json``, ``metrics.csv`` (per chunk and seed) and ``curve.png``."""
    result = run_summary(run)
    _write_json(os.path.join(out_dir, "summary.json"), result)
    names = [k for k in run.history[0] if k not in (*runner.POOLED, "env_steps")]

    def write_csv(f):
        writer = csv.writer(f)
        writer.writerow(
            ["chunk", "seed", "env_steps", "episodes", "mean_return", "mean_length", *names]
        )
        for i, row in enumerate(run.history):
            for s in range(run.seeds):
                episodes = row["episodes"][s]
                writer.writerow([
                    i,
                    s + run.seed,
                    int(row["env_steps"][s]),
                    int(episodes),
                    row["episode_return_sum"][s] / episodes if episodes else "",
                    row["episode_length_sum"][s] / episodes if episodes else "",
                    *(row[n][s] for n in names),
                ])

    _atomic_write(os.path.join(out_dir, "metrics.csv"), write_csv)
    plot_curve(run, os.path.join(out_dir, "curve.png"))
    return result


def learning_curve(run: "runner.Run") -> tuple[np.ndarray, np.ndarray]:
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curve(run: "runner.Run", path: str) -> None:
    plt = _pyplot()
    steps, curve = learning_curve(run)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    with warnings.catch_warnings():  # chunks in which no seed finished an episode: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(curve, axis=0)
        low, high = np.nanmin(curve, axis=0), np.nanmax(curve, axis=0)
    ax.fill_between(steps, low, high, alpha=0.25, label=f"min–max over {run.seeds} seeds")
    for s in range(run.seeds):
        ax.plot(steps, curve[s], lw=0.6, alpha=0.5)
    ax.plot(steps, mean, lw=2.2, color="black", label="mean")
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("episode return")
    ax.set_title(f"minirl {run.algo_name} on {run.env_id}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def print_table(result: dict[str, Any], stream=None) -> None:
    """Per-seed final returns and their median; diverged seeds are marked."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['algo']} on {result['env']}")
    table.add_column("seed", justify="right")
    table.add_column("final return", justify="right")
    diverged = set(result.get("diverged_seeds", []))
    first = result.get("first_seed", 0)
    for i, value in enumerate(result["final_returns"]):
        shown = "nan" if value is None else f"{value:.1f}"
        if first + i in diverged:
            shown += "  DIVERGED (non-finite loss or parameters)"
        table.add_row(str(first + i), shown)
    table.add_section()
    median = result["median_final_return"]
    table.add_row("median", "nan" if median is None else f"{median:.1f}")
    console = Console(file=stream or sys.stdout, width=100)
    console.print(table)
    if diverged:
        console.print(f"{len(diverged)} seed(s) diverged: {sorted(diverged)}")
    console.print(
        f"{result['steps']:,} env steps × {result['seeds']} seeds in "
        f"{result['wall_seconds']:.1f}s ({result['env_steps_per_second']:,.0f} env steps/s)"
    )


# ----------------------------------------------------------------------------- sweep


def run_sweep(
    algo_name: str,
    algo: Any,
    base: Any,
    env: Any,
    env_params: Any,
    env_id: str,
    values: dict[str, list[Any]],
    assignments: list[dict[str, Any]],
    runs: "sweep.Runs",
    *,
    seeds: int,
    seed: int,
    zipped: bool,
    target_chunks: int,
    runs_per_program: int,
    devices: list,
    out_dir: str,
    lead: bool,
    env_overrides: dict[str, Any],
) -> dict[str, Any]:
    """Train every configuration × seed and return the summary: per configuration its
    values, per-seed final returns and their median, ranked.

    Under several processes each process trains its groups and writes its slice to
    ``out_dir`` (a filesystem all processes share); after a barrier process 0 merges the
    slices, and the other processes return only their row indices."""
    import jax

    chunks = runner.chunk_plan(base.num_iterations, target_chunks)
    start = time.perf_counter()
    progress = Progress(base.total_steps, 1, unit="run")

    def report(run: "sweep.ChunkedRun") -> None:
        if lead and run.rows.size:
            progress.seeds = len(run.rows)
            progress.show(run.history, time.perf_counter() - start)

    run = sweep.train_chunked(
        algo.init, algo.step, runs, env, chunks, runner.summarise_chunk,
        runs_per_program=runs_per_program, devices=devices, report=report,
    )
    wall = time.perf_counter() - start
    finals = runner.final_returns(run.history, len(run.rows))
    bad = set(runner.diverged(run.history, len(run.rows)))
    steps = runner.env_steps_done(run.history) if run.rows.size else 0
    records = [
        {"final_return": _json_float(f), "env_steps": steps, "diverged": i in bad}
        for i, f in enumerate(finals)
    ]
    num_runs = runs.num_runs
    if jax.process_count() > 1:
        distributed.write_slice(out_dir, run.rows, records)
        distributed.barrier("minirl-sweep-slices")
        if not lead:  # process 0 merges (out_dir on a shared filesystem)
            return {"process_index": jax.process_index(), "rows": run.rows.tolist()}
        merged = distributed.merge_slices(out_dir, num_runs)
    else:
        by_row = dict(zip(run.rows.tolist(), records))
        merged = [by_row[i] for i in range(num_runs)]
    finals_all = np.array([_nan(r["final_return"]) for r in merged], np.float64)
    steps = max(int(r["env_steps"]) for r in merged)
    per_config = []
    for c, assignment in enumerate(assignments):
        rows = runs.rows[c]
        returns_c = finals_all[rows]
        per_config.append({
            "values": {k: _jsonable(v) for k, v in assignment.items()},
            "final_returns": [_json_float(x) for x in returns_c],
            "median_final_return": _json_float(_nanmedian(returns_c)),
            "diverged_seeds": [seed + s for s, r in enumerate(rows) if merged[r]["diverged"]],
        })
    ranking = sorted(
        range(len(per_config)),
        key=lambda c: -np.nan_to_num(_nan(per_config[c]["median_final_return"]), nan=-np.inf),
    )
    for rank, c in enumerate(ranking, 1):
        per_config[c]["rank"] = rank
    return {
        "algo": algo_name,
        "env": env_id,
        "env_params": env_overrides,
        "steps": steps,
        "seeds": seeds,
        "first_seed": seed,
        "mode": "zip" if zipped else "grid",
        "swept": {k: [_jsonable(v) for v in vs] for k, vs in values.items()},
        "configurations": per_config,
        "ranking": ranking,
        "runs": num_runs,
        "runs_per_program": runs_per_program,
        "devices": len(devices) * jax.process_count(),
        "processes": jax.process_count(),
        "wall_seconds": wall,
        "env_steps_per_second": steps * num_runs / max(wall, 1e-9),
        "config": runner.config_to_json(base),
    }


def write_sweep_outputs(result: dict[str, Any], out_dir: str) -> None:
    """``summary.json`` and ``sweep.png`` (final return against each swept value)."""
    os.makedirs(out_dir, exist_ok=True)
    _write_json(os.path.join(out_dir, "summary.json"), result)
    plot_sweep(result, os.path.join(out_dir, "sweep.png"))


def plot_sweep(result: dict[str, Any], path: str) -> None:
    plt = _pyplot()
    names = list(result["swept"])
    fig, axes = plt.subplots(
        1, len(names), figsize=(4.2 * len(names) + 1, 3.8), dpi=120, squeeze=False
    )
    for ax, name in zip(axes[0], names):
        xs = result["swept"][name]
        medians = []
        for x in xs:
            pooled = [
                _nan(r)
                for c in result["configurations"]
                if c["values"][name] == x
                for r in c["final_returns"]
            ]
            ax.scatter([x] * len(pooled), pooled, s=10, alpha=0.4, color="tab:blue")
            medians.append(_nanmedian(np.array(pooled, np.float64)))
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
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def print_ranking(result: dict[str, Any], stream: Any = None) -> None:
    """The configurations ranked by median final return, as a table."""
    from rich.console import Console
    from rich.table import Table

    names = list(result["swept"])
    table = Table()
    table.add_column("rank", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for column in ("median", "min", "max", "diverged"):
        table.add_column(column, justify="right")
    for c in result["ranking"]:
        config = result["configurations"][c]
        returns = np.array([_nan(r) for r in config["final_returns"]], np.float64)
        finite = returns[np.isfinite(returns)]
        low, high = (f"{finite.min():.1f}", f"{finite.max():.1f}") if finite.size else ("-", "-")
        median = _nan(config["median_final_return"])
        table.add_row(
            str(config["rank"]),
            *(
                f"{config['values'][n]:g}"
                if isinstance(config["values"][n], float)
                else str(config["values"][n])
                for n in names
            ),
            f"{median:.1f}",
            low,
            high,
            str(len(config["diverged_seeds"])) if config["diverged_seeds"] else "",
        )
    console = Console(file=stream or sys.stdout, width=120)
    console.print(
        f"{result['algo']} on {result['env']}: {len(result['configurations'])} "
        f"configurations × {result['seeds']} seeds, ranked by median final return",
        soft_wrap=True,
    )
    console.print(table)
    console.print(
        f"{result['steps']:,} env steps × {result['runs']} runs on {result['devices']} "
        f"device(s), {result['processes']} process(es) in {result['wall_seconds']:.1f}s "
        f"({result['env_steps_per_second']:,.0f} env steps/s)"
    )


# ----------------------------------------------------------------------------- plan


def plan_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The ``summary.json`` of ``minirl plan``: the keys of ``train``'s, per-seed returns of
    one closed-loop MPC episode as ``final_returns``."""
    returns = [float(r) for r in result["returns"]]
    return {
        "algo": result["planner"],
        "env": result["env"],
        "env_params": result.get("env_overrides", {}),
        "steps": int(result["rewards"].shape[1]),
        "seeds": len(returns),
        "final_returns": returns,
        "median_final_return": float(np.median(returns)),
        "diverged_seeds": [],
        "wall_seconds": result["wall_time_s"],
        "env_steps_per_second": result["env_steps"] / max(result["wall_time_s"], 1e-9),
        "episode_lengths": [int(n) for n in result["lengths"]],
        "options": result["options"],
    }


def write_plan_outputs(result: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """``summary.json``, ``metrics.csv`` (reward and return so far per step and seed) and
    ``curve.png`` (return so far against env steps, mean and spread over seeds)."""
    os.makedirs(out_dir, exist_ok=True)
    summary = plan_summary(result)
    _write_json(os.path.join(out_dir, "summary.json"), summary)
    rewards = np.asarray(result["rewards"])
    cumulative = np.cumsum(rewards, axis=1)

    def write_csv(f):
        writer = csv.writer(f)
        writer.writerow(["seed", "env_step", "reward", "return_so_far"])
        for s in range(rewards.shape[0]):
            for t in range(rewards.shape[1]):
                writer.writerow([s, t + 1, rewards[s, t], cumulative[s, t]])

    _atomic_write(os.path.join(out_dir, "metrics.csv"), write_csv)
    plt = _pyplot()
    steps = np.arange(1, rewards.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.fill_between(steps, cumulative.min(0), cumulative.max(0), alpha=0.25,
                    label=f"min–max over {rewards.shape[0]} seeds")
    ax.plot(steps, cumulative.mean(0), lw=2.2, color="black", label="mean")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return so far")
    ax.set_title(f"minirl plan {result['planner']} on {result['env']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    path = os.path.join(out_dir, "curve.png")
    fig.savefig(f"{path}.tmp.png")
    plt.close(fig)
    os.replace(f"{path}.tmp.png", path)
    return summary
