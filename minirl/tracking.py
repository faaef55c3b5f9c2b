"""Watching a run in TensorBoard or Weights & Biases, written from the host between chunks.

A tracker is a report callback: ``minirl.runner`` calls ``tracker(run)`` once the run is set
up and after every chunk (as it calls the progress line), and the tracker writes what the
new rows of ``run.history`` hold. Nothing here enters the compiled program, so a run's bits
are the same with logging on or off (tested). A user points the runner at their own tracker
by passing any callable as ``log=`` (or ``report=``); :func:`scalars` turns history rows into
the ``(series, tag, value, step)`` points this module writes, for such a tracker to reuse.

What is written, at x = env steps per seed, as one series per seed (``seed_N``) and their
mean over seeds (``mean``):

- ``train/episode_return``, ``train/episode_length``: means over the training episodes that
  ended in the chunk (a seed with none has no point there);
- ``eval/return``: the mean greedy return, where the run evaluated (``--eval-every``);
- ``learner/NAME``: every diagnostic the learner reports (losses, Q-values, entropy, ...),
  averaged over the chunk;
- ``train/nonfinite``: 1 once a seed's losses or parameters are no longer finite;
- ``perf/env_steps_per_second`` (``mean`` only): env steps of all seeds per wall second.

The config and the run's description go in as text (TensorBoard) or as the run's config
(W&B). The conventions follow CleanRL (``--track``: W&B with TensorBoard's tags), Stoix and
SB3's ``tensorboard_log``.

- **TensorBoard** (tensorboardX, a small writer without TensorFlow): event files in
  ``DIR/tensorboard/SERIES/``; ``tensorboard --logdir DIR/tensorboard`` overlays the seeds.
- **W&B** (``pip install 'minirl[wandb]'``): one W&B run, keys ``TAG/SERIES``. ``WANDB_MODE``
  is respected; without it the run is online when credentials are configured
  (``wandb login``) and offline otherwise (``wandb sync DIR/wandb/offline-run-*`` uploads it
  later), and an online start that fails (no network) falls back to offline.
"""

import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import configs, results
from .core.config import ConfigError

KINDS = ("tensorboard", "wandb")
MEAN = "mean"
_NOT_LEARNER = {*results.POOLED, "env_steps", results.EVAL, "nonfinite"}


class Scalar(NamedTuple):
    series: str  # "seed_N" or "mean"
    tag: str  # e.g. "train/episode_return"
    value: float
    step: int  # env steps per seed


def series_name(seed: int) -> str:
    return f"seed_{seed}"


def scalars(history: results.History, seeds: int, first_seed: int, rows: Iterable[int]
            ) -> list[Scalar]:
    """The points of history rows ``rows``: per seed and the mean over seeds (of the seeds
    that have a finite value there) of every tag in this module's docstring, except the
    throughput (which needs wall times)."""
    out = []
    for i in rows:
        row = history[i]
        step = int(row["env_steps"][0])
        per_tag: dict[str, list[float]] = {}
        episodes = np.asarray(row["episodes"], np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_tag["train/episode_return"] = list(
                np.asarray(row["episode_return_sum"], np.float64) / episodes)
            per_tag["train/episode_length"] = list(
                np.asarray(row["episode_length_sum"], np.float64) / episodes)
        if results.EVAL in row:
            per_tag["eval/return"] = list(row[results.EVAL])
        for name, values in row.items():
            if name not in _NOT_LEARNER:
                per_tag[f"learner/{name}"] = list(values)
        if "nonfinite" in row:
            per_tag["train/nonfinite"] = list(row["nonfinite"])
        for tag, values in per_tag.items():
            finite = [float(v) for v in values if math.isfinite(v)]
            if not finite:
                continue
            for s, value in enumerate(values):
                if math.isfinite(value):
                    out.append(Scalar(series_name(first_seed + s), tag, float(value), step))
            out.append(Scalar(MEAN, tag, float(np.mean(finite)), step))
    return out


# ----------------------------------------------------------------------------- writers


class TensorBoard:
    """tensorboardX event files, one directory per series under ``logdir``."""

    def __init__(self, logdir: str):
        from tensorboardX import SummaryWriter

        self._make = SummaryWriter
        self.logdir = logdir
        self.writers: dict[str, Any] = {}

    def _writer(self, series: str) -> Any:
        if series not in self.writers:
            self.writers[series] = self._make(os.path.join(self.logdir, series))
        return self.writers[series]

    def start(self, name: str, config: dict[str, Any]) -> None:
        text = "```\n" + json.dumps(config, indent=2) + "\n```"
        self._writer(MEAN).add_text("config", text, 0)
        self._writer(MEAN).add_text("run", name, 0)

    def write(self, points: Sequence[Scalar]) -> None:
        for p in points:
            self._writer(p.series).add_scalar(p.tag, p.value, p.step)

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def wandb_mode(wandb: Any, environ: dict[str, str] | None = None) -> str:
    """``WANDB_MODE`` when set; otherwise ``"online"`` if W&B credentials are configured
    (read locally, without the network) and ``"offline"`` if not."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_MODE"):
        return environ["WANDB_MODE"]
    try:
        logged_in = bool(wandb.login(prompt=False, verify=False))
    except Exception:  # an unreadable netrc or settings file: no credentials
        logged_in = False
    return "online" if logged_in else "offline"


class Wandb:
    """One W&B run; points of one step are sent together, keys ``TAG/SERIES``."""

    def __init__(self, directory: str | None, project: str | None = None):
        import wandb

        self.wandb = wandb
        self.directory = directory
        self.project = project or os.environ.get("WANDB_PROJECT", "minirl")
        self.run: Any = None

    def start(self, name: str, config: dict[str, Any]) -> None:
        mode = wandb_mode(self.wandb)
        kwargs = dict(project=self.project, name=name, config=config, dir=self.directory)
        try:
            self.run = self.wandb.init(mode=mode, **kwargs)
        except Exception as error:  # no network, a server that refuses: keep the log locally
            if mode != "online":
                raise
            print(f"minirl: W&B online start failed ({type(error).__name__}); logging offline",
                  file=sys.stderr)
            self.run = self.wandb.init(mode="offline", **kwargs)

    def write(self, points: Sequence[Scalar]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for p in points:
            by_step.setdefault(p.step, {})[f"{p.tag}/{p.series}"] = p.value
        for step in sorted(by_step):
            self.run.log(by_step[step], step=step)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


# ----------------------------------------------------------------------------- tracker


class Tracker:
    """A report callback writing a run's new history rows to a writer (:class:`TensorBoard`,
    :class:`Wandb`, or any object with ``start(name, config)``, ``write(points)``,
    ``flush()`` and ``close()``).

    Its first call (the runner's, once the run is set up) writes the config; every later
    call writes the rows added since. Rows that were already in the history at the first
    call (a resumed run's earlier chunks) are not written again."""

    def __init__(self, writer: Any):
        self.writer = writer
        self.logged: int | None = None
        self.last: tuple[int, float] = (0, 0.0)  # env steps and wall seconds at last write

    def __call__(self, run: Any) -> None:
        if self.logged is None:
            name = f"{run.algo_name}-{run.env_id or run.env_name}"
            self.writer.start(name, {
                "algo": run.algo_name, "env": run.env_id or run.env_name,
                "env_params": run.env_overrides, "seeds": run.seeds, "first_seed": run.seed,
                "eval_every": run.eval_every, "eval_episodes": run.eval_episodes,
                "config": configs.to_json(run.config),
            })
            self.logged = len(run.history)
            self.last = (results.env_steps_done(run.history), run.wall_seconds)
        if len(run.history) <= self.logged:
            return
        points = scalars(run.history, run.seeds, run.seed, range(self.logged, len(run.history)))
        steps = results.env_steps_done(run.history)
        elapsed = run.wall_seconds - self.last[1]
        if elapsed > 0:
            rate = (steps - self.last[0]) * run.seeds / elapsed
            points.append(Scalar(MEAN, "perf/env_steps_per_second", rate, steps))
        self.writer.write(points)
        self.writer.flush()
        self.logged = len(run.history)
        self.last = (steps, run.wall_seconds)

    def close(self) -> None:
        self.writer.close()


def entries(log: Any) -> list[Any]:
    """``log`` as a list: tracker names (``"tensorboard,wandb"`` split) and callables."""
    if log is None:
        return []
    if isinstance(log, str):
        return [part.strip() for part in log.split(",") if part.strip()]
    if callable(log):
        return [log]
    return [e for item in log for e in entries(item)]


def check(log: Any, out_dir: str | None) -> None:
    """:class:`ConfigError` (one line) for a ``log`` the runner cannot honour: an unknown
    tracker name, TensorBoard without an output directory, or a tracker whose package is
    not installed."""
    for entry in entries(log):
        if callable(entry):
            continue
        if entry not in KINDS:
            raise ConfigError(
                f"log={entry!r} is not a tracker; allowed: {', '.join(KINDS)} (or, from "
                "Python, a callable tracker(run))"
            )
        if entry == "tensorboard" and out_dir is None:
            raise ConfigError("log='tensorboard' writes event files into the run directory; "
                              "give out_dir")
        package, hint = {"tensorboard": ("tensorboardX", "pip install tensorboardX"),
                         "wandb": ("wandb", "pip install 'minirl[wandb]'")}[entry]
        try:
            __import__(package)
        except ImportError:
            raise ConfigError(f"log={entry!r} needs the {package} package: {hint}") from None


def make(log: Any, run: Any, out_dir: str | None) -> list[Callable[[Any], None]]:
    """The report callbacks ``log`` asks for (see :func:`check`); callables pass through."""
    check(log, out_dir)
    trackers: list[Callable[[Any], None]] = []
    for entry in entries(log):
        if callable(entry):
            trackers.append(entry)
        elif entry == "tensorboard":
            trackers.append(Tracker(TensorBoard(os.path.join(out_dir, "tensorboard"))))
        else:
            trackers.append(Tracker(Wandb(out_dir)))
    return trackers


def close(tracker: Any) -> None:
    """Close a tracker that has a ``close`` method (a user's callable may not)."""
    method = getattr(tracker, "close", None)
    if callable(method):
        method()
