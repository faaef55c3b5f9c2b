"""What the command line prints: the live progress line and the result tables of
``train``, ``plan``, ``sweep`` and ``compare``. The files a run writes are ``minirl.results``'.
"""

import sys
import time
from typing import Any

import numpy as np

from minirl import results

# ----------------------------------------------------------------------------- progress


class Progress:
    """A live progress line between chunks (a plain line every 5 s when not on a terminal),
    called as ``report(run)`` by ``minirl.runner``.

    Shows env steps per seed (or per run, for a sweep), throughput, the mean return of
    recent episodes, the last greedy evaluation (mean over seeds) where the run evaluates
    and, once any seed's loss or parameters are non-finite, which diverged."""

    def __init__(self, header: str = "", stream=None, unit: str = "seed"):
        self.header = header  # printed at the first call, once the run is set up
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.unit = unit
        self.last_print = 0.0

    def line(self, history: results.History, wall: float, seeds: int, total: int) -> str:
        steps = results.env_steps_done(history)
        rate = steps * seeds / max(wall, 1e-9)
        recent = results.final_returns(history[-max(1, len(history) // 10):], seeds)
        recent_mean = np.nanmean(recent) if not np.all(np.isnan(recent)) else float("nan")
        width = 28
        filled = int(width * steps / max(total, 1))
        text = (
            f"[{'#' * filled}{'.' * (width - filled)}] {steps:>9,}/{total:,} env steps/"
            f"{self.unit} | {rate:>10,.0f} steps/s | recent return {recent_mean:8.1f}"
            f" | {wall:6.1f}s"
        )
        _, evals = results.eval_curve(history, seeds)
        if evals.size and np.isfinite(evals[:, -1]).any():
            text += f" | eval {np.nanmean(evals[:, -1]):8.1f}"
        bad = results.diverged(history, seeds)
        if bad:
            text += f" | DIVERGED: {len(bad)} {self.unit}(s) {_short(bad)}"
        return text

    def __call__(self, run: Any) -> None:
        """``run``: a ``minirl.runner.Run`` (history, wall_seconds, seeds, total_steps)."""
        if self.header:
            self.stream.write(self.header + "\n")
            self.stream.flush()
            self.header = ""
        if not run.history:
            return
        text = self.line(run.history, run.wall_seconds, run.seeds, run.total_steps)
        done = run.finished
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


# ----------------------------------------------------------------------------- tables


def print_table(result: dict[str, Any], stream=None) -> None:
    """Per-seed final returns and their median; diverged seeds are marked."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['algo']} on {result['env']}")
    table.add_column("seed", justify="right")
    table.add_column("final return", justify="right")
    evaluated = "final_eval_returns" in result
    if evaluated:
        table.add_column(f"greedy ({result['eval_episodes']} episodes)", justify="right")
    diverged = set(result.get("diverged_seeds", []))
    first = result.get("first_seed", 0)
    for i, value in enumerate(result["final_returns"]):
        shown = _number(value)
        if first + i in diverged:
            shown += "  DIVERGED (non-finite loss or parameters)"
        table.add_row(str(first + i), shown,
                      *([_number(result["final_eval_returns"][i])] if evaluated else []))
    table.add_section()
    table.add_row("median", _number(result["median_final_return"]),
                  *([_number(result["median_final_eval_return"])] if evaluated else []))
    console = Console(file=stream or sys.stdout, width=100)
    console.print(table)
    if diverged:
        console.print(f"{len(diverged)} seed(s) diverged: {sorted(diverged)}")
    console.print(
        f"{result['steps']:,} env steps × {result['seeds']} seeds in "
        f"{result['wall_seconds']:.1f}s ({result['env_steps_per_second']:,.0f} env steps/s)"
    )


def _number(value: float | None) -> str:
    return "nan" if value is None or not np.isfinite(value) else f"{value:.1f}"


def print_comparison(rows: list[dict[str, Any]], stream: Any = None) -> None:
    """``minirl compare``'s table: per run (or configuration) the seeds, the median and the
    interquartile mean of the final returns with its 95 % stratified-bootstrap interval
    (Agarwal et al., 2021), and the same for the greedy returns where every run evaluated."""
    from rich.console import Console
    from rich.table import Table

    evaluated = bool(rows) and "eval_iqm" in rows[0]
    table = Table()
    table.add_column("run", overflow="fold")
    table.add_column("seeds", justify="right")
    prefixes = ["", "eval_"] if evaluated else [""]
    for prefix in prefixes:
        name = "greedy" if prefix else "final return"
        table.add_column(f"{name} median", justify="right")
        table.add_column(f"{name} IQM [95% CI]", justify="right")
    for row in rows:
        cells = [row["label"], str(row["seeds"])]
        for prefix in prefixes:
            cells += [_number(row[prefix + "median"]),
                      f"{_number(row[prefix + 'iqm'])} [{_number(row[prefix + 'low'])}, "
                      f"{_number(row[prefix + 'high'])}]"]
        table.add_row(*cells)
    console = Console(file=stream or sys.stdout, width=140)
    console.print(table)
    console.print("IQM: mean of the middle 50% of seeds; CI: percentile stratified bootstrap "
                  "over seeds (Agarwal et al., 2021)", soft_wrap=True)


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
        returns = np.array([results.nan(r) for r in config["final_returns"]], np.float64)
        finite = returns[np.isfinite(returns)]
        low, high = (f"{finite.min():.1f}", f"{finite.max():.1f}") if finite.size else ("-", "-")
        median = results.nan(config["median_final_return"])
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
