"""Comparing runs: final returns with interquartile means and stratified-bootstrap confidence
intervals, and the runs' learning curves on one figure (``minirl compare``).

With a handful of seeds, a median or mean of final returns says little about how sure a
difference is. Agarwal et al. (2021, "Deep Reinforcement Learning at the Edge of the
Statistical Precipice", NeurIPS) recommend the **interquartile mean** (IQM: the mean of the
middle 50 % of the scores, robust to an outlying seed yet using half of them) with a
**stratified bootstrap** confidence interval: resample the runs with replacement within
each task (environment) separately, recompute the statistic, and take the percentile
interval of the resampled values. Their ``rliable`` package implements it; minirl does it
here in NumPy (about 30 lines) rather than depend on rliable, which pulls in ``arch``,
``statsmodels``, ``pandas``, ``seaborn`` and ``absl-py`` for this one computation. The
statistics are checked against scipy's trimmed mean and an exact enumeration of the
bootstrap distribution (``tests/test_compare.py``).

A run directory (``minirl train``) gives one line: its seeds' final returns from
``summary.json`` (and greedy ``final_eval_returns`` where it evaluated) and their curves from
``metrics.csv``; a sweep directory (``minirl sweep``) gives one line per configuration.
The curves are drawn as the mean over seeds with a 95 % bootstrap interval of the mean.
"""

import csv
import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import results
from .core.config import ConfigError

CONFIDENCE = 0.95
REPS = 10_000  # bootstrap resamples for the final-return intervals
CURVE_REPS = 2_000  # per point of a curve


# ----------------------------------------------------------------------------- statistics


def iqm(scores: Any, axis: int | None = None) -> np.ndarray:
    """Interquartile mean: the mean of the scores left after removing the lowest and the
    highest ⌊n/4⌋ (over all scores, or along ``axis``): ``scipy.stats.trim_mean(x, 0.25)``,
    the aggregate rliable reports (Agarwal et al., 2021)."""
    x = np.asarray(scores, np.float64)
    if axis is None:
        x, axis = x.reshape(-1), -1
    x = np.sort(x, axis=axis)
    n = x.shape[axis]
    cut = int(0.25 * n)
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_bootstrap(
    scores: Any, statistic: Callable[..., np.ndarray] = iqm, reps: int = REPS,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``reps`` bootstrap replicates of ``statistic`` over scores ``[runs, tasks]``: each
    task's runs are resampled with replacement independently of the other tasks (the
    stratified bootstrap of Agarwal et al., 2021), and ``statistic(x, axis=-1)`` is taken
    over all resampled scores of a replicate. A 1-D array is one task."""
    x = np.asarray(scores, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    runs, tasks = x.shape
    rng = np.random.default_rng(0) if rng is None else rng
    index = rng.integers(0, runs, size=(reps, runs, tasks))
    resampled = np.take_along_axis(np.broadcast_to(x, (reps, runs, tasks)), index, axis=1)
    return statistic(resampled.reshape(reps, runs * tasks), axis=-1)


class Interval(NamedTuple):
    point: float
    low: float
    high: float


def interval(
    scores: Any, statistic: Callable[..., np.ndarray] = iqm, confidence: float = CONFIDENCE,
    reps: int = REPS, seed: int = 0,
) -> Interval:
    """The statistic of ``scores`` ``[runs, tasks]`` (or ``[runs]``) and its percentile
    stratified-bootstrap interval at ``confidence``; NaN scores (a seed that finished no
    episode) are left out, and no scores give NaNs."""
    x = np.asarray(scores, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    x = x[np.all(np.isfinite(x), axis=1)]
    if not x.size:
        return Interval(float("nan"), float("nan"), float("nan"))
    replicates = stratified_bootstrap(x, statistic, reps, np.random.default_rng(seed))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(float(statistic(x)), float(low), float(high))


def mean_band(
    curves: np.ndarray, confidence: float = CONFIDENCE, reps: int = CURVE_REPS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per point of ``curves`` ``[seeds, points]``: the mean over seeds and a percentile
    bootstrap interval of that mean (seeds resampled with replacement; NaNs ignored)."""
    curves = np.asarray(curves, np.float64)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, curves.shape[0], size=(reps, curves.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(curves, axis=0)
        replicates = np.nanmean(curves[index], axis=1)
        tail = 100 * (1 - confidence) / 2
        low, high = np.nanpercentile(replicates, [tail, 100 - tail], axis=0)
    return mean, low, high


# ----------------------------------------------------------------------------- runs


@dataclasses.dataclass
class Line:
    """One run (or one configuration of a sweep): per-seed final returns (greedy ones where
    it evaluated) and curves ``[seeds, points]`` at ``steps``."""

    label: str
    finals: np.ndarray
    eval_finals: np.ndarray | None = None
    steps: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    curves: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    eval_steps: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    eval_curves: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))


def _floats(values: Sequence[Any] | None) -> np.ndarray | None:
    return None if values is None else np.array([results.nan(v) for v in values], np.float64)


def _read_csv(path: str) -> list[dict[str, str]]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _curves(rows: list[dict[str, str]], column: str, seeds: list[int], carry: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """``(steps [C], values [len(seeds), C])`` of ``column`` from metrics.csv rows, only the
    chunks where some seed has a value (``carry``: a seed without one keeps its last)."""
    chunks = sorted({int(r["chunk"]) for r in rows})
    position = {c: i for i, c in enumerate(chunks)}
    steps = np.zeros(len(chunks))
    values = np.full((len(seeds), len(chunks)), np.nan)
    seed_index = {s: i for i, s in enumerate(seeds)}
    for r in rows:
        i = position[int(r["chunk"])]
        steps[i] = float(r["env_steps"])
        if r.get(column, "") not in ("", None) and int(r["seed"]) in seed_index:
            values[seed_index[int(r["seed"])], i] = float(r[column])
    if carry:
        for s in range(len(seeds)):
            for i in range(1, len(chunks)):
                if np.isnan(values[s, i]):
                    values[s, i] = values[s, i - 1]
    keep = ~np.all(np.isnan(values), axis=0)
    return steps[keep], values[:, keep]


def _line(label: str, finals: Any, eval_finals: Any, rows: list[dict[str, str]], seeds: list[int]
          ) -> Line:
    line = Line(label, _floats(finals), _floats(eval_finals))
    if rows and "chunk" in rows[0] and "mean_return" in rows[0]:
        line.steps, line.curves = _curves(rows, "mean_return", seeds, carry=True)
        if "eval_return" in rows[0]:
            line.eval_steps, line.eval_curves = _curves(rows, "eval_return", seeds, carry=False)
    return line


def load(directory: str) -> list[Line]:
    """The lines of a run or sweep directory (``summary.json`` and ``metrics.csv``);
    :class:`ConfigError` for a directory without a summary."""
    path = os.path.join(directory, "summary.json")
    if not os.path.exists(path):
        raise ConfigError(f"{directory} has no summary.json: give a finished run or sweep "
                          "directory (minirl train / minirl sweep --out)")
    try:
        with open(path) as f:
            summary = json.load(f)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error})") from None
    name = os.path.basename(os.path.normpath(directory))
    rows = _read_csv(os.path.join(directory, "metrics.csv"))
    first = int(summary.get("first_seed", 0))
    seeds = list(range(first, first + int(summary.get("seeds", 0))))
    if "configurations" not in summary:
        if "final_returns" not in summary:
            raise ConfigError(f"{path} holds no final_returns: not a minirl run's summary")
        return [_line(name, summary["final_returns"], summary.get("final_eval_returns"),
                      rows, seeds)]
    lines = []
    for c, configuration in enumerate(summary["configurations"]):
        values = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in configuration["values"].items())
        mine = [r for r in rows if int(r.get("configuration", -1)) == c]
        lines.append(_line(f"{name}: {values}", configuration["final_returns"],
                           configuration.get("final_eval_returns"), mine, seeds))
    return lines


def table(lines: Sequence[Line], reps: int = REPS, seed: int = 0) -> list[dict[str, Any]]:
    """Per line: seeds, median and the IQM with its 95 % stratified-bootstrap interval of
    the final returns, and of the greedy final returns where every line evaluated."""
    evaluated = all(line.eval_finals is not None for line in lines)
    out = []
    for line in lines:
        row: dict[str, Any] = {"label": line.label, "seeds": int(np.isfinite(line.finals).sum())}
        columns = [("", line.finals)] + ([("eval_", line.eval_finals)] if evaluated else [])
        for prefix, finals in columns:
            finite = finals[np.isfinite(finals)]
            estimate = interval(finite, reps=reps, seed=seed)
            row[prefix + "median"] = float(np.median(finite)) if finite.size else float("nan")
            row[prefix + "iqm"] = estimate.point
            row[prefix + "low"], row[prefix + "high"] = estimate.low, estimate.high
        out.append(row)
    return out


def plot(lines: Sequence[Line], path: str, title: str = "minirl compare") -> None:
    """The lines' curves on one figure (training returns; greedy evaluation returns beside
    them where any line evaluated): mean over seeds and its 95 % bootstrap interval."""
    plt = results.pyplot()
    panels = [("training episodes", "steps", "curves")]
    if any(line.eval_steps.size for line in lines):
        panels.append(("greedy evaluation", "eval_steps", "eval_curves"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.4), dpi=120,
                             squeeze=False)
    for ax, (name, steps_field, curves_field) in zip(axes[0], panels):
        for i, line in enumerate(lines):
            steps, curves = getattr(line, steps_field), getattr(line, curves_field)
            if not steps.size:
                continue
            mean, low, high = mean_band(curves)
            colour = f"C{i % 10}"
            ax.fill_between(steps, low, high, color=colour, alpha=0.2)
            ax.plot(steps, mean, color=colour, lw=2,
                    label=f"{line.label} ({curves.shape[0]} seeds)")
        ax.set_xlabel("environment steps (per seed)")
        ax.set_ylabel("episode return")
        ax.set_title(f"{name}: mean, 95 % bootstrap interval")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="best", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    results.save_figure(fig, path)


def compare(directories: Sequence[str], out: str | None = None, reps: int = REPS
            ) -> tuple[list[Line], list[dict[str, Any]]]:
    """Load every directory, tabulate the final returns and, with ``out``, draw the
    figure. Returns the lines and the table rows."""
    if not directories:
        raise ConfigError("give at least one run or sweep directory to compare")
    lines = [line for directory in directories for line in load(directory)]
    rows = table(lines, reps=reps)
    if out is not None:
        plot(lines, out)
    return lines, rows
