"""What the command line prints: the live progress line and the result tables of
``train``, ``plan`` and ``sweep``. The files a run writes are ``minirl.results``'.
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
    recent episodes and, once any seed's loss or parameters are non-finite, which diverged."""

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
