"""DQN throughput benchmark: the environment-only limit, minirl, rejax and Stable-Baselines3
on CartPole-v1 with the same hyperparameters, side by side in one run, and minirl's step
time across replay-buffer capacities. Prints a markdown report and writes it to
its section of benchmarks/RESULTS.md (raw numbers: benchmarks/RESULTS_dqn.json).

    python benchmarks/bench_dqn.py            # the full benchmark (see README.md)
    python benchmarks/bench_dqn.py --quick    # every part with tiny budgets: a smoke test

The peers run in their own virtual environments, which this script creates on first use
(benchmarks/.venv-rejax from requirements-rejax.txt: rejax needs gymnax < 1;
benchmarks/.venv-sb3 from requirements-sb3.txt: CPU PyTorch) and reuses while the
requirements file is unchanged. A peer that cannot be installed or run is reported in the
table with the reason; the rest of the benchmark goes on.
"""

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from minirl import envs
from minirl.algos import dqn
from minirl.core import rollout

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The hyperparameters every library runs with (names are minirl's; peers map them). The
# peers read ``env_id``; minirl's configs name no environment (contract v2): it is passed
# to ``train`` as ``envs.make(env_id)``.
SHARED = dict(
    env_id="CartPole-v1",
    num_envs=1,  # one environment per seed
    rollout_steps=1,  # env steps per iteration (SB3 train_freq)
    gradient_steps=1,  # one update per env step
    batch_size=256,
    buffer_size=10_000,
    learning_starts=1_000,  # env steps before the first update
    hidden=[64, 64],  # MLP widths (rejax's DQN network is fixed at 64×64)
    activation="relu",
    learning_rate=5e-4,  # constant (rejax has no schedule)
    gamma=0.99,
    max_grad_norm=10.0,
    tau=1.0,  # hard target copy …
    target_update_period=500,  # … every 500 updates (= 500 env steps here)
    epsilon_start=1.0,
    epsilon_end=0.05,
    exploration_fraction=0.2,  # ε anneals linearly over this fraction of the run
    double_q=False,  # SB3's DQN has no double Q
    loss="huber",  # minirl and SB3; rejax's loss is fixed at ½x²
)

MODES = {
    # total_steps: env steps per seed for the training runs (all libraries).
    # env_steps / env_batch_steps: scan length of the env-only loops (1 and 4 envs / the
    # big reference batch). chunk: iterations per timed call in the capacity sweep.
    "full": dict(total_steps=100_000, env_steps=1_000_000, env_batch=1024,
                 env_batch_steps=5_000, chunk=5_000, repeats=3, eval_episodes=20),
    "quick": dict(total_steps=3_000, env_steps=20_000, env_batch=1024,
                  env_batch_steps=200, chunk=1_200, repeats=1, eval_episodes=4),
}
CAPACITIES = (1_000, 10_000, 100_000, 1_000_000)
TARGET_SPEEDUP = 10.0  # the bar: ≥ 10× rejax's throughput at 4 seeds
TARGET_FLATNESS = 1.2  # the bar: step time at 10^6 within 1.2× of 10^3


START = time.perf_counter()


def log(message: str) -> None:
    print(f"[bench {time.perf_counter() - START:7.1f}s] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- env-only


def env_only(num_envs: int, num_steps: int, repeats: int, env_id: str | None = None) -> dict:
    """Random actions in ``num_envs`` gymnax envs for ``num_steps`` steps, one jitted scan
    (``env_id``: this benchmark's environment unless another is named)."""
    env, env_params = envs.make(env_id or SHARED["env_id"])
    policy = rollout.random_policy(env, env_params)

    def run(key):
        reset_key, key = jax.random.split(key)
        carry = rollout.reset(reset_key, env, env_params, num_envs)

        def body(inner, _):
            carry, key, total = inner
            key, act_key, step_key = jax.random.split(key, 3)
            action, _ = policy(act_key, carry.obs)
            carry, transition = rollout.env_step(step_key, env, env_params, carry, action)
            return (carry, key, total + jnp.sum(transition.reward)), None

        (_, _, total), _ = jax.lax.scan(body, (carry, key, 0.0), length=num_steps)
        return total

    key = jax.random.PRNGKey(0)
    start = time.perf_counter()
    compiled = jax.jit(run).lower(key).compile()
    compile_s = time.perf_counter() - start
    times = []
    for i in range(repeats):
        key_i = jax.random.fold_in(key, i)
        start = time.perf_counter()
        compiled(key_i).block_until_ready()
        times.append(time.perf_counter() - start)
    run_s = float(np.median(times))
    steps = num_envs * num_steps
    return dict(envs=num_envs, steps=steps, compile_s=compile_s, run_s=run_s,
                steps_per_s=steps / run_s)


# ----------------------------------------------------------------------------- minirl


def minirl_config(hp: dict, **overrides) -> dqn.Config:
    fields = dict(
        total_steps=hp["total_steps"], num_envs=hp["num_envs"],
        rollout_steps=hp["rollout_steps"], gradient_steps=hp["gradient_steps"],
        buffer_size=hp["buffer_size"], batch_size=hp["batch_size"],
        learning_starts=hp["learning_starts"], hidden=tuple(hp["hidden"]), network="mlp",
        double_q=hp["double_q"], n_step=1, loss=hp["loss"],
        learning_rate=hp["learning_rate"], learning_rate_end_factor=1.0,
        max_grad_norm=hp["max_grad_norm"], gamma=hp["gamma"], tau=hp["tau"],
        target_update_period=hp["target_update_period"], epsilon_start=hp["epsilon_start"],
        epsilon_end=hp["epsilon_end"], exploration_fraction=hp["exploration_fraction"],
    )
    if hp["activation"] != "relu":
        raise ValueError("minirl's MLP uses ReLU")
    fields.update(overrides)
    return dqn.Config(**fields)


def greedy_returns(config: dqn.Config, env, env_params, state, episodes: int) -> list[float]:
    from minirl import runner

    # [seeds, episodes]: each seed's greedy policy (state.learner.params, leading seed axis)
    returns = runner.evaluate(dqn, config, env, env_params, state.learner.params, episodes,
                              seed=1)
    return [float(r) for r in np.mean(returns, axis=1)]


def minirl_train(hp: dict, seeds: int, eval_episodes: int) -> dict:
    """Whole runs as one program: ``jit(vmap(dqn.train))`` over ``seeds`` keys (the env
    static, the config and the env parameters traced and shared by every seed)."""
    config = minirl_config(hp)
    env, env_params = envs.make(hp["env_id"])
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    train = jax.jit(jax.vmap(dqn.train, in_axes=(0, None, None, None)), static_argnums=2)
    start = time.perf_counter()
    compiled = train.lower(keys, config, env, env_params).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state, metrics = compiled(keys, config, env_params)  # static env: not passed again
    jax.block_until_ready((state, metrics))
    run_s = time.perf_counter() - start
    steps = int(np.sum(np.asarray(state.env_steps)))
    return dict(
        library="minirl", seeds=seeds, parallelism=f"jax.vmap over {seeds} keys, one program",
        env_steps=steps, compile_s=compile_s, run_s=run_s, steps_per_s=steps / run_s,
        final_return_per_seed=greedy_returns(config, env, env_params, state, eval_episodes),
    )


def minirl_capacity(hp: dict, capacity: int, chunk: int, repeats: int) -> dict:
    """µs per ``dqn.step`` (one env step + one update) with a buffer of ``capacity``.

    A jitted ``lax.scan`` of ``chunk`` steps with the state donated; the first call compiles
    and moves past ``learning_starts``, then ``repeats`` calls are timed (median).
    """
    if chunk <= hp["learning_starts"]:
        raise ValueError("chunk must exceed learning_starts so that timed steps update")
    config = minirl_config(hp, buffer_size=capacity, total_steps=10**9)
    env, env_params = envs.make(hp["env_id"])

    def run(state, config, env_params):
        return jax.lax.scan(lambda s, _: dqn.step(s, config, env, env_params), state,
                            length=chunk)[0]

    # dqn.init copies the target network, so every leaf owns its buffer and can be donated.
    state = dqn.init(jax.random.PRNGKey(0), config, env, env_params)
    run = jax.jit(run, donate_argnums=0)
    start = time.perf_counter()
    compiled = run.lower(state, config, env_params).compile()
    compile_s = time.perf_counter() - start
    state = compiled(state, config, env_params)  # warm-up: fills past learning_starts
    jax.block_until_ready(state)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = compiled(state, config, env_params)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    run_s = float(np.median(times))
    return dict(capacity=capacity, compile_s=compile_s, us_per_step=run_s / chunk * 1e6,
                steps_per_s=chunk / run_s, updates=int(state.learner.updates))


# ----------------------------------------------------------------------------- peers


class PeerError(Exception):
    """A peer could not be installed or run; the message goes into the table."""


def ensure_venv(name: str, requirements: Path, rebuild: bool, timeout: int) -> Path:
    """``benchmarks/.venv-<name>`` with ``requirements`` installed; reused while the
    requirements file (and the Python minor version) are unchanged."""
    venv = HERE / f".venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.sha256"
    digest = hashlib.sha256(
        requirements.read_bytes() + platform.python_version().rsplit(".", 1)[0].encode()
    ).hexdigest()
    if not rebuild and python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    log(f"building {venv.relative_to(ROOT)} from {requirements.name} (one-off, a few minutes)")
    install_log = venv / "install.log"  # inside the (gitignored) venv
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, text=True, timeout=300)
        with open(install_log, "w") as out:
            done = subprocess.run(
                [str(python), "-m", "pip", "install", "--no-input", "-r", str(requirements)],
                stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
            )
    except subprocess.TimeoutExpired as error:
        raise PeerError(f"building the venv timed out after {error.timeout:.0f} s") from error
    except subprocess.CalledProcessError as error:
        raise PeerError(f"python -m venv failed: {last_line(error.stderr)}") from error
    if done.returncode:
        text = install_log.read_text()
        errors = [line for line in text.splitlines() if line.startswith("ERROR")]
        reason = errors[0] if errors else last_line(text)
        raise PeerError(f"pip install -r {requirements.name} failed: {reason} "
                        f"(log: {install_log.relative_to(ROOT)})")
    install_log.unlink(missing_ok=True)
    stamp.write_text(digest)
    return python


def last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def run_peer(python: Path, script: str, hp: dict, seeds: int, extra: list[str],
             timeout: int) -> dict:
    command = [str(python), str(HERE / "peers" / script), "--config", json.dumps(hp),
               "--seeds", str(seeds), *extra]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=HERE)
    except subprocess.TimeoutExpired as error:
        raise PeerError(f"{script} timed out after {error.timeout:.0f} s") from error
    results = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not results:
        raise PeerError(f"{script} exited {done.returncode}: {last_line(done.stderr)}")
    return json.loads(results[-1])


# ----------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}"


def fmt_return(values: list[float] | None) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def cli_header(report: dict) -> str:
    """The throughput tables' column for what the command line gives by default."""
    return f"minirl CLI default, every core ({report['nproc']} devices): env steps/s"


def cli_row(report: dict, seeds: int) -> dict | None:
    return next((r for r in report.get("cli", []) if r["seeds"] == seeds), None)


def cli_cell(report: dict, row: dict) -> str:
    """The CLI-default cell of a throughput-table row (minirl's rows only)."""
    cli = cli_row(report, row["seeds"]) if row["library"] == "minirl" else None
    if cli is None:
        return "—"
    return f"failed: {cli['error']}" if "error" in cli else fmt_rate(cli["rate"])


def cli_note(report: dict) -> list[str]:
    """The note under a throughput table that says what its CLI-default column is."""
    if not report.get("cli"):
        return []
    return [
        "",
        f"*{cli_header(report)}*: what `minirl train --seeds S` gives by default, beside "
        "the single-program figure of the same row: `minirl.runner.train` with the same "
        "config and seeds, in a worker process with one CPU device per core "
        f"(`XLA_FLAGS=--xla_force_host_platform_device_count={report['nproc']}`, as the "
        "command line asks), K = ⌈S/8⌉ runs per program dispatched round-robin to the "
        "devices, trained in chunks with host summaries and a checkpoint after each "
        "(`bench_cores.cli_default`). Compile excluded as in `bench_cores.py`: env steps / "
        "the wall time of a second `runner.train` call that finds every program compiled "
        "(its compile time, first call − second, and its greedy returns are in the ratios "
        "below).",
    ]


def cli_ratio(report: dict, seeds: int, theirs: float, digits: int, bar: float | None = None
              ) -> str:
    """``; CLI default (every core): R×`` for a minirl / peer ratio line, or ''."""
    cli = cli_row(report, seeds)
    if cli is None or "error" in cli:
        return ""
    ratio = cli["rate"] / theirs
    verdict = ""
    if bar is not None:
        verdict = f" ({'meets' if ratio >= bar else 'misses'} the bar)"
    return f"; CLI default (every core): {ratio:.{digits}f}×{verdict}"


def cli_lines(report: dict, single: dict[int, dict]) -> list[str]:
    """Ratio lines: the CLI default against the single program, per seed count (``single``:
    minirl's single-program rows by seed count)."""
    lines = []
    for cli in report.get("cli", []):
        seeds = cli["seeds"]
        plural = f"{seeds} seed{'s' * (seeds != 1)}"
        if "error" in cli:
            lines.append(f"minirl CLI default at {plural}: failed ({cli['error']})")
            continue
        text = (f"minirl CLI default (every core) at {plural}: {fmt_rate(cli['rate'])} env "
                f"steps/s ({cli['k']} run{'s' * (cli['k'] != 1)} per program × "
                f"{cli['programs']} program{'s' * (cli['programs'] != 1)} on "
                f"{cli['devices_used']} of {cli['devices']} devices, {cli['chunks']} chunks, "
                f"compile {cli['compile_seconds']:.1f} s)")
        mine = single.get(seeds)
        if mine:
            text += f", {cli['rate'] / mine['steps_per_s']:.2f}× the single program"
        greedy = cli.get("greedy_return_per_seed")
        if greedy:
            text += f"; greedy return {fmt_return(greedy)}"
            if mine and mine.get("final_return_per_seed"):
                text += f" (single program {fmt_return(mine['final_return_per_seed'])})"
        lines.append(text)
    return lines


def minirl_rows(report: dict) -> dict[int, dict]:
    return {r["seeds"]: r for r in report["train"]
            if r["library"] == "minirl" and "error" not in r}


def render(report: dict) -> str:
    hp, mode = report["hp"], report["mode"]
    out = ["# DQN benchmark: minirl, rejax and Stable-Baselines3 on CartPole-v1", ""]
    if mode["name"] == "quick":
        out += ["> **Quick mode (smoke test).** Tiny budgets, numbers are noisy and dominated",
                "> by start-up effects: do not quote them.", ""]
    out += [
        f"- command: `{report['command']}`",
        f"- date: {report['date']}",
        f"- machine: {report['cpu']}, nproc {report['nproc']}, {report['memory']} memory, "
        f"JAX backend `{report['backend']}`; load average {report['load_start']} at the start, "
        f"{report['load_end']} at the end",
        f"- wall time of this run: {report['wall_s']:.0f} s",
        f"- minirl environment: Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
    ]
    for peer in ("rejax", "sb3"):
        versions = report["peer_versions"].get(peer)
        if versions:
            out.append(f"- {peer} environment (`benchmarks/.venv-{peer}`): "
                       + ", ".join(f"{k} {v}" for k, v in versions.items()))
    out += [
        "",
        "## Shared hyperparameters",
        "",
        f"CartPole-v1, {hp['total_steps']:,} env steps per seed, {hp['num_envs']} env per seed, "
        f"batch {hp['batch_size']}, one update per env step, buffer {hp['buffer_size']:,}, "
        f"learning starts at {hp['learning_starts']:,} steps, MLP {hp['hidden'][0]}×"
        f"{hp['hidden'][1]} ({hp['activation']}), Adam lr {hp['learning_rate']:g} (constant), "
        f"γ {hp['gamma']}, gradient clip {hp['max_grad_norm']:g}, hard target copy every "
        f"{hp['target_update_period']} updates, ε {hp['epsilon_start']} → {hp['epsilon_end']} "
        f"over {hp['exploration_fraction']:.0%} of the run, plain (not double) DQN, "
        f"{hp['loss']} loss (rejax: ½x², fixed). See README.md for what differs.",
        "",
        "## Environment only (random actions, one jitted `lax.scan`): the physical limit",
        "",
        "| envs | env steps/s | µs per scan iteration | compile (s) |",
        "|---:|---:|---:|---:|",
    ]
    for row in report["env_only"]:
        if "error" in row:
            out.append(f"| {row['envs']} | failed: {row['error']} | | |")
            continue
        us = row["run_s"] / (row["steps"] / row["envs"]) * 1e6
        out.append(f"| {row['envs']} | {fmt_rate(row['steps_per_s'])} | {us:.2f} | "
                   f"{row['compile_s']:.1f} |")
    out += [
        "",
        "## DQN training throughput (compile excluded)",
        "",
        f"| library | seeds | env steps/s (all seeds) | {cli_header(report)} | per seed | "
        "µs per step of a seed | run (s) | compile (s) | greedy return | how seeds run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["train"]:
        if "error" in row:
            out.append(f"| {row['library']} | {row['seeds']} | failed: {row['error']} "
                       f"| {cli_cell(report, row)} | | | | | | |")
            continue
        per_seed = row["steps_per_s"] / row["seeds"]
        out.append(
            f"| {row['library']} | {row['seeds']} | {fmt_rate(row['steps_per_s'])} | "
            f"{cli_cell(report, row)} | "
            f"{fmt_rate(per_seed)} | {1e6 / per_seed:.0f} | {row['run_s']:.1f} | "
            f"{row['compile_s']:.1f} | {fmt_return(row.get('final_return_per_seed'))} | "
            f"{row['parallelism']} |"
        )
    out += cli_note(report)
    out += [
        "",
        "## minirl step time vs replay-buffer capacity (1 seed)",
        "",
        "| capacity | µs per step (env step + update) | steps/s | vs 10^3 | compile (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    base = next((r["us_per_step"] for r in report["capacity"]
                 if r.get("capacity") == CAPACITIES[0] and "error" not in r), None)
    for row in report["capacity"]:
        if "error" in row:
            out.append(f"| {row['capacity']:,} | failed: {row['error']} | | | |")
            continue
        ratio = f"{row['us_per_step'] / base:.2f}×" if base else "—"
        out.append(f"| {row['capacity']:,} | {row['us_per_step']:.1f} | "
                   f"{fmt_rate(row['steps_per_s'])} | {ratio} | {row['compile_s']:.1f} |")
    out += ["", "## Ratios and the bar", ""]
    out += [f"- {line}" for line in report["ratios"]]
    out.append("")
    return "\n".join(out)


def ratios(report: dict) -> list[str]:
    def rate(library: str, seeds: int) -> float | None:
        for row in report["train"]:
            if row["library"] == library and row["seeds"] == seeds and "error" not in row:
                return row["steps_per_s"]
        return None

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'s' * (n != 1)}"

    lines = []
    for seeds in report["seeds"]:
        mine = rate("minirl", seeds)
        for peer in ("rejax", "sb3"):
            theirs = rate(peer, seeds)
            text = f"minirl / {peer} throughput at {plural(seeds, 'seed')}: "
            if mine and theirs:
                text += f"{mine / theirs:.1f}×"
                bar = TARGET_SPEEDUP if peer == "rejax" and seeds == 4 else None
                if bar:
                    verdict = "meets" if mine / theirs >= TARGET_SPEEDUP else "misses"
                    text += f" ({verdict} the ≥ {TARGET_SPEEDUP:.0f}× bar)"
                lines.append(text + cli_ratio(report, seeds, theirs, 1, bar))
            elif any(row["library"] in ("minirl", peer) for row in report["train"]):
                lines.append(text + "not available (a run failed or was skipped)")
        limit = next((r["steps_per_s"] for r in report["env_only"]
                      if r["envs"] == seeds and "error" not in r), None)
        if mine and limit:
            lines.append(f"minirl at {plural(seeds, 'seed')} runs at {mine / limit:.2%} of the "
                         f"env-only limit for {plural(seeds, 'env')}")
    lines += cli_lines(report, minirl_rows(report))
    by_cap = {r["capacity"]: r["us_per_step"] for r in report["capacity"] if "error" not in r}
    if CAPACITIES[0] in by_cap and CAPACITIES[-1] in by_cap:
        flat = by_cap[CAPACITIES[-1]] / by_cap[CAPACITIES[0]]
        spread = max(by_cap.values()) / min(by_cap.values())
        verdict = "meets" if flat <= TARGET_FLATNESS else "misses"
        lines.append(f"step time at capacity 10^6 / 10^3: {flat:.2f}× (max/min over all "
                     f"capacities {spread:.2f}×; {verdict} the ≤ {TARGET_FLATNESS}× bar)")
    return lines


# ----------------------------------------------------------------------------- main



def measure_cli(report: dict, name: str, hp: dict, seeds_list: list[int],
                eval_episodes: int) -> list[dict]:
    """minirl's CLI default (every core) at each seed count: ``bench_cores.cli_default``."""
    from bench_cores import cli_default

    log(f"minirl {name.upper()}, CLI default: runner.train on {report['nproc']} CPU devices, "
        f"seeds {','.join(str(s) for s in seeds_list)} × {hp['total_steps']:,} steps "
        "(a worker process; each seed count twice: compiling, then compiled)")
    return cli_default(name, hp, seeds_list, eval_episodes)


def run_peers(report: dict, peers: list, algo: str, hp: dict, seeds_list: list[int],
              skip: set[str], args: argparse.Namespace) -> None:
    """Run each peer (name, runner script, extra args) in its venv at every seed count;
    a peer that cannot be built or fails gets an error row, and the rest still runs."""
    for name, script, extra in peers:
        if name in skip:
            continue
        try:
            python = ensure_venv(name, HERE / f"requirements-{name}.txt", args.rebuild_venvs,
                                 timeout=1800)
        except PeerError as error:
            log(f"{name}: {error}")
            report["train"] += [dict(library=name, seeds=s, error=str(error))
                                for s in seeds_list]
            continue
        for seeds in seeds_list:
            log(f"{name} {algo}, {seeds} seed(s) × {hp['total_steps']:,} steps")
            try:
                row = run_peer(python, script, hp, seeds, extra, args.peer_timeout)
                report["peer_versions"][name] = row.pop("versions", {})
                report["train"].append(row)
            except PeerError as error:
                log(f"{name}: {error}")
                report["train"].append(dict(library=name, seeds=seeds, error=str(error)))


def write_report(report: dict, text: str, output: Path, section: str) -> None:
    """Print the markdown; write it as ``section`` of RESULTS.md (or to ``output`` itself
    when another file was asked for) and the raw numbers beside it as JSON."""
    print(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output == HERE / "RESULTS.md":
        sys.path.insert(0, str(HERE))
        from results import update_section

        update_section(section, text, output)
        raw = HERE / f"RESULTS_{section}.json"
    else:
        output.write_text(text)
        raw = output.with_suffix(".json")
    raw.write_text(json.dumps(report, indent=1, default=str))
    log(f"wrote {output} (and {raw.name})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny budgets to check that every part runs (numbers are noise)")
    parser.add_argument("--total-steps", type=int,
                        help="env steps per seed for every training run (default: 100000, "
                             "quick 3000)")
    parser.add_argument("--seeds", default="1,4", help="comma-separated seed counts")
    parser.add_argument("--sb3-threads", type=int, default=1,
                        help="torch.set_num_threads in each SB3 process (default 1)")
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to skip: env,minirl,capacity,cli,rejax,"
                             "sb3 (cli: minirl's CLI default, every core)")
    parser.add_argument("--rebuild-venvs", action="store_true",
                        help="recreate the peer virtual environments")
    parser.add_argument("--peer-timeout", type=int, default=3600,
                        help="seconds allowed for one peer run")
    parser.add_argument("--output", type=Path,
                        help="markdown file to write (default benchmarks/RESULTS.md; with "
                             "--quick a file in the temporary directory)")
    args = parser.parse_args()

    mode = dict(MODES["quick" if args.quick else "full"], name="quick" if args.quick else "full")
    if args.total_steps:
        mode["total_steps"] = args.total_steps
    seeds_list = [int(s) for s in args.seeds.split(",") if s]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    output = args.output or (
        Path(os.environ.get("TMPDIR", "/tmp")) / "minirl-bench-quick" / "RESULTS.md"
        if args.quick else HERE / "RESULTS.md"
    )
    hp = dict(SHARED, total_steps=mode["total_steps"])
    started = time.perf_counter()
    report = dict(
        mode=mode, hp=hp, seeds=seeds_list,
        command=shlex.join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=cpu_model(), nproc=os.cpu_count(), memory=memory_gib(),
        backend=f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
        load_start=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        versions={name: version(name) for name in
                  ("minirl", "jax", "jaxlib", "gymnax", "equinox", "optax")},
        peer_versions={}, env_only=[], train=[], capacity=[], cli=[],
    )

    if "env" not in skip:
        for envs, steps in [*((n, mode["env_steps"]) for n in seeds_list),
                            (mode["env_batch"], mode["env_batch_steps"])]:
            log(f"env-only, {envs} envs × {steps:,} steps")
            try:
                report["env_only"].append(env_only(envs, steps, mode["repeats"]))
            except Exception as error:  # keep going: the table says what failed
                report["env_only"].append(dict(envs=envs, error=last_line(repr(error))))

    if "minirl" not in skip:
        for seeds in seeds_list:
            log(f"minirl DQN, {seeds} seed(s) × {hp['total_steps']:,} steps")
            try:
                report["train"].append(minirl_train(hp, seeds, mode["eval_episodes"]))
            except Exception as error:
                report["train"].append(dict(library="minirl", seeds=seeds,
                                            error=last_line(repr(error))))

    if "capacity" not in skip:
        for capacity in CAPACITIES:
            log(f"minirl step time, capacity {capacity:,}")
            try:
                report["capacity"].append(
                    minirl_capacity(hp, capacity, mode["chunk"], mode["repeats"]))
            except Exception as error:
                report["capacity"].append(dict(capacity=capacity, error=last_line(repr(error))))

    if "cli" not in skip:
        report["cli"] = measure_cli(report, "dqn", hp, seeds_list, mode["eval_episodes"])

    peers = [
        ("rejax", "rejax_dqn.py", ["--eval-episodes", str(mode["eval_episodes"])]),
        ("sb3", "sb3_dqn.py", ["--eval-episodes", str(mode["eval_episodes"]),
                               "--threads", str(args.sb3_threads)]),
    ]
    run_peers(report, peers, "DQN", hp, seeds_list, skip, args)
    report["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report["wall_s"] = time.perf_counter() - started
    report["ratios"] = ratios(report)
    write_report(report, render(report), output, "dqn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
