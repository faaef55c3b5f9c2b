"""SAC throughput benchmark on Pendulum-v1: minirl, rejax, sbx (the JAX port of
Stable-Baselines3) and Stable-Baselines3 (CPU PyTorch) with the same hyperparameters (batch
256, one update per env step, 256×256 networks) at 1 and 4 seeds, side by side in one run,
and minirl's whole run against its own floor (env only + learner only). Prints a markdown
report and writes it to its section of benchmarks/RESULTS.md (raw numbers:
benchmarks/RESULTS_sac.json).

    python benchmarks/bench_sac.py            # the full benchmark
    python benchmarks/bench_sac.py --quick    # every part with tiny budgets: a smoke test

The peers run in their own virtual environments, built on first use by the machinery of
bench_dqn.py (benchmarks/.venv-rejax and .venv-sb3, shared with the DQN and PPO benchmarks;
benchmarks/.venv-sbx from requirements-sbx.txt). A peer that cannot be installed or run is
reported in the table with the reason; the rest goes on.

minirl's floor (per seed count S, each part a separately compiled program timed after
compilation, seeds vmapped like the whole run):
  env only      random actions in S envs for the run's env steps (no buffer, no learning);
  learner only  ``sac.learn`` scanned over the run's number of updates, on batches of the
                right shapes drawn ahead (a pool of random batches, cycled);
  whole run     ``jax.vmap(sac.train)``.
The floor is env only + learner only: what the run would cost if acting, storing and
sampling were free. The bar: whole / floor ≤ 1.25, and minirl the fastest of the four at
both seed counts.
"""

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dqn  # noqa: E402  (the shared venv / peer / report machinery)
from bench_dqn import (  # noqa: E402
    cli_cell,
    cli_header,
    cli_lines,
    cli_note,
    cli_ratio,
    cli_row,
    cpu_model,
    fmt_rate,
    fmt_return,
    last_line,
    log,
    measure_cli,
    memory_gib,
    minirl_rows,
    run_peers,
    version,
    write_report,
)
from bench_ppo import timed  # noqa: E402

from minirl import envs  # noqa: E402
from minirl.algos import sac  # noqa: E402
from minirl.core import rollout  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The hyperparameters every library runs with (names are minirl's; peers map them). The
# peers read ``env_id``; minirl's configs name no environment (contract v2). No library
# clips gradients (minirl's max_grad_norm = inf, rejax's default, SB3's and sbx's SAC have
# no clipping).
SHARED = dict(
    env_id="Pendulum-v1",
    num_envs=1,  # one environment per seed
    rollout_steps=1,  # env steps per iteration (SB3 train_freq)
    gradient_steps=1,  # one update per env step
    batch_size=256,
    buffer_size=100_000,
    learning_starts=1_000,  # env steps before the first update
    hidden=[256, 256],  # actor and each critic
    activation="relu",
    num_critics=2,  # clipped double Q
    learning_rate=3e-4,  # constant, actor, critics and temperature
    gamma=0.99,
    tau=0.005,  # Polyak weight: θ̄ ← τθ + (1 − τ)θ̄ after every update
    alpha_init=1.0,  # initial temperature (SB3 / sbx "auto", rejax log α = 0)
    target_entropy_per_dim=-1.0,  # automatic temperature, target entropy −|A|
)

MODES = {
    # total_steps: env steps per seed for every run. pool: distinct random batches cycled
    # by the learner-only timing.
    "full": dict(total_steps=20_000, repeats=3, eval_episodes=10, pool=100),
    "quick": dict(total_steps=1_500, repeats=1, eval_episodes=2, pool=8),
}
TARGET_FLOOR = 1.25  # the bar: a whole run within 1.25× of env only + learner only
PEERS = ("rejax", "sbx", "sb3")


# ----------------------------------------------------------------------------- minirl


def minirl_config(hp: dict, **overrides) -> sac.Config:
    fields = dict(
        total_steps=hp["total_steps"], num_envs=hp["num_envs"],
        rollout_steps=hp["rollout_steps"], gradient_steps=hp["gradient_steps"],
        buffer_size=hp["buffer_size"], batch_size=hp["batch_size"],
        learning_starts=hp["learning_starts"], hidden=tuple(hp["hidden"]),
        activation=hp["activation"], num_critics=hp["num_critics"], learn_alpha=True,
        learning_rate=hp["learning_rate"], learning_rate_end_factor=1.0,
        max_grad_norm=float("inf"), gamma=hp["gamma"], tau=hp["tau"],
        alpha_init=hp["alpha_init"], target_entropy_per_dim=hp["target_entropy_per_dim"],
    )
    fields.update(overrides)
    return sac.Config(**fields)


def minirl_train(hp: dict, seeds: int, eval_episodes: int, repeats: int) -> dict:
    """Whole runs as one program: ``jit(vmap(sac.train))`` over ``seeds`` keys (the env
    static, the config and the env parameters traced and shared by every seed)."""
    from minirl import runner

    config = minirl_config(hp)
    env, env_params = envs.make(hp["env_id"])
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    train = jax.jit(jax.vmap(sac.train, in_axes=(0, None, None, None)), static_argnums=2)
    start = time.perf_counter()
    compiled = train.lower(keys, config, env, env_params).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = compiled(keys, config, env_params)  # static env: not passed again
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    run_s = float(np.median(times))
    steps = int(np.sum(np.asarray(state.env_steps)))
    returns = runner.evaluate(sac, config, env, env_params, state.learner.params, eval_episodes,
                              seed=1)
    return dict(
        library="minirl", seeds=seeds, parallelism=f"jax.vmap over {seeds} keys, one program",
        env_steps=steps, updates=int(np.sum(np.asarray(state.learner.updates))),
        compile_s=compile_s, run_s=run_s, steps_per_s=steps / run_s,
        final_return_per_seed=[float(r) for r in np.mean(returns, axis=1)],
    )


def random_batches(key: jax.Array, config: sac.Config, env, env_params, seeds: int,
                   pool: int) -> rollout.Transition:
    """``[seeds, pool, batch, ...]`` transitions of the right shapes and plausible ranges:
    observations N(0, 1), actions uniform in the box, rewards uniform in [−16, 0] (Pendulum's
    range), nothing terminated."""
    obs_shape = rollout.observation_shape(env, env_params)
    low, high = rollout.action_bounds(env, env_params)
    lead = (seeds, pool, config.batch_size)
    obs_key, next_key, action_key, reward_key = jax.random.split(key, 4)
    return rollout.Transition(
        obs=jax.random.normal(obs_key, (*lead, *obs_shape)),
        action=jax.random.uniform(action_key, (*lead, *low.shape), minval=low, maxval=high),
        reward=jax.random.uniform(reward_key, lead, minval=-16.0, maxval=0.0),
        next_obs=jax.random.normal(next_key, (*lead, *obs_shape)),
        terminated=jnp.zeros(lead, bool),
        truncated=jnp.zeros(lead, bool),
    )


def minirl_floor(hp: dict, seeds: int, repeats: int, pool: int, train: dict | None) -> dict:
    """Seconds of env only and learner only for the whole run's env steps and updates."""
    config = minirl_config(hp)
    env, env_params = envs.make(hp["env_id"])
    iterations = config.num_iterations
    env_row = bench_dqn.env_only(seeds * config.num_envs, iterations * config.rollout_steps,
                                 repeats, env_id=hp["env_id"])

    # The updates the whole run makes (learning_starts onwards), on one learner per seed.
    updates = config.num_updates
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    states = jax.jit(jax.vmap(sac.init, in_axes=(0, None, None, None)), static_argnums=2)(
        keys, config, env, env_params)
    batches = random_batches(jax.random.PRNGKey(1), config, env, env_params, seeds, pool)

    def learn_only(learners, batches):
        def one(learner, pool_batches):
            def body(learner, i):
                batch = jax.tree.map(
                    lambda x: jax.lax.dynamic_index_in_dim(x, i % pool, keepdims=False),
                    pool_batches)
                learner, metrics = sac.learn(learner, batch, config)
                return learner, metrics["critic_loss"]

            learner, losses = jax.lax.scan(body, learner, jnp.arange(updates))
            return learner.log_alpha, jnp.sum(losses)
        return jax.vmap(one)(learners, batches)

    learn_compile_s, learn_s, _ = timed(learn_only, states.learner, batches, repeats=repeats)
    env_s = env_row["run_s"]
    train_s = train["run_s"] if train else None
    return dict(seeds=seeds, env_steps=env_row["steps"], updates=updates * seeds,
                env_s=env_s, env_steps_per_s=env_row["steps_per_s"],
                env_compile_s=env_row["compile_s"], learn_s=learn_s,
                learn_compile_s=learn_compile_s, updates_per_s=updates * seeds / learn_s,
                floor_s=env_s + learn_s, train_s=train_s)


# ----------------------------------------------------------------------------- report


def render(report: dict) -> str:
    hp, mode = report["hp"], report["mode"]
    out = ["# SAC benchmark: minirl, rejax, sbx and Stable-Baselines3 on Pendulum-v1", ""]
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
    for peer in PEERS:
        versions = report["peer_versions"].get(peer)
        if versions:
            out.append(f"- {peer} environment (`benchmarks/.venv-{peer}`): "
                       + ", ".join(f"{k} {v}" for k, v in versions.items()))
    out += [
        "",
        "## Shared hyperparameters",
        "",
        f"Pendulum-v1, {hp['total_steps']:,} env steps per seed, {hp['num_envs']} env per seed, "
        f"batch {hp['batch_size']}, one update per env step, buffer {hp['buffer_size']:,}, "
        f"updates from {hp['learning_starts']:,} env steps on, actor and "
        f"{hp['num_critics']} critics MLP {'×'.join(str(h) for h in hp['hidden'])} "
        f"({hp['activation']}), Adam lr {hp['learning_rate']:g} (constant) for actor, critics "
        f"and temperature, γ {hp['gamma']}, Polyak τ {hp['tau']} after every update, automatic "
        f"temperature from α = {hp['alpha_init']:g} with target entropy −|A|, no gradient "
        "clipping. What the peers do not match: before `learning_starts` minirl, SB3 and sbx "
        "act uniformly at random, rejax with its (untrained) policy; rejax (gymnax 0.0.x) "
        "treats the time limit as a termination (no bootstrap; every Pendulum episode ends "
        "by truncation), the others bootstrap from the final observation; rejax samples "
        "minibatches without replacement over the whole capacity (its sampling cost grows "
        "with the buffer), the others with replacement; rejax clips log σ at −10 (the others "
        "−20) and feeds its critics the unscaled action. Returns: each seed's deterministic "
        "policy (tanh of the mean), mean over the evaluation episodes, then mean ± std over "
        "seeds: a sanity check, not a learning benchmark.",
        "",
        "## SAC training throughput (compile excluded)",
        "",
        f"| library | seeds | env steps/s (all seeds) | {cli_header(report)} | per seed | "
        "µs per step of a seed | run (s) | compile (s) | final return | how seeds run |",
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
        "## minirl whole run against its floor (seconds per whole run, compile excluded)",
        "",
        "| seeds | env only | env-only steps/s | learner only | updates/s | floor (env + "
        "learner) | whole run | whole − floor | whole / floor |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["floor"]:
        if "error" in row:
            out.append(f"| {row['seeds']} | failed: {row['error']} | | | | | | | |")
            continue
        whole = row["train_s"]
        out.append(
            f"| {row['seeds']} | {row['env_s']:.2f} | {fmt_rate(row['env_steps_per_s'])} | "
            f"{row['learn_s']:.2f} | {fmt_rate(row['updates_per_s'])} | {row['floor_s']:.2f} | "
            + (f"{whole:.2f} | {whole - row['floor_s']:.2f} | {whole / row['floor_s']:.2f}× |"
               if whole else "— | — | — |")
        )
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

    lines = []
    for seeds in report["seeds"]:
        plural = f"{seeds} seed{'s' * (seeds != 1)}"
        mine = rate("minirl", seeds)
        measured = {}
        for peer in PEERS:
            theirs = rate(peer, seeds)
            text = f"minirl / {peer} throughput at {plural}: "
            if mine and theirs:
                measured[peer] = theirs
                lines.append(text + f"{mine / theirs:.2f}×" + cli_ratio(report, seeds, theirs, 2))
            elif any(row["library"] in ("minirl", peer) for row in report["train"]):
                lines.append(text + "not available (a run failed or was skipped)")
        if mine and measured:
            best = max(measured, key=measured.get)
            missing = [p for p in PEERS if p not in measured]
            verdict = ("meets" if mine > measured[best] else f"misses ({best} is faster)")
            cli, cli_verdict = cli_row(report, seeds), ""
            if cli and "error" not in cli:
                cli_verdict = ("; CLI default (every core): "
                               + ("meets it" if cli["rate"] > measured[best]
                                  else f"misses it ({best} is faster)"))
            lines.append(f"fastest at {plural}: {verdict} the bar" + cli_verdict
                         + (f"; not compared with {', '.join(missing)} (not measured)"
                            if missing else ""))
    lines += cli_lines(report, minirl_rows(report))
    for row in report["floor"]:
        if "error" not in row and row.get("train_s"):
            ratio = row["train_s"] / row["floor_s"]
            verdict = "meets" if ratio <= TARGET_FLOOR else "misses"
            lines.append(f"whole run / floor at {row['seeds']} seed{'s' * (row['seeds'] != 1)}: "
                         f"{ratio:.2f}× ({verdict} the ≤ {TARGET_FLOOR}× bar); the rest "
                         f"(acting, storing, sampling) is "
                         f"{(row['train_s'] - row['floor_s']) / row['train_s']:.0%} of the run")
    return lines


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny budgets to check that every part runs (numbers are noise)")
    parser.add_argument("--total-steps", type=int,
                        help="env steps per seed for every run (default: 20000, quick 1500)")
    parser.add_argument("--seeds", default="1,4", help="comma-separated seed counts")
    parser.add_argument("--repeats", type=int,
                        help="timed repeats of each minirl program, median kept (default 3)")
    parser.add_argument("--sb3-threads", type=int, default=1,
                        help="torch.set_num_threads in each SB3 / sbx process (default 1)")
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to skip: minirl,floor,cli,rejax,sbx,sb3 "
                             "(cli: minirl's CLI default, every core)")
    parser.add_argument("--rebuild-venvs", action="store_true",
                        help="recreate the peer virtual environments")
    parser.add_argument("--peer-timeout", type=int, default=3600,
                        help="seconds allowed for one peer run")
    parser.add_argument("--output", type=Path,
                        help="markdown file to write (default: the sac section of "
                             "benchmarks/RESULTS.md; with --quick a file in the temporary "
                             "directory)")
    args = parser.parse_args()

    mode = dict(MODES["quick" if args.quick else "full"], name="quick" if args.quick else "full")
    if args.total_steps:
        mode["total_steps"] = args.total_steps
    if args.repeats:
        mode["repeats"] = args.repeats
    seeds_list = [int(s) for s in args.seeds.split(",") if s]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    output = args.output or (
        Path(os.environ.get("TMPDIR", "/tmp")) / "minirl-bench-quick" / "RESULTS_sac.md"
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
        peer_versions={}, train=[], floor=[], cli=[],
    )

    for seeds in seeds_list:
        train = None
        if "minirl" not in skip:
            log(f"minirl SAC, {seeds} seed(s) × {hp['total_steps']:,} steps")
            try:
                train = minirl_train(hp, seeds, mode["eval_episodes"], mode["repeats"])
                report["train"].append(train)
            except Exception as error:  # keep going: the table says what failed
                report["train"].append(dict(library="minirl", seeds=seeds,
                                            error=last_line(repr(error))))
        if "floor" not in skip:
            log(f"minirl SAC floor (env only, learner only), {seeds} seed(s)")
            try:
                report["floor"].append(
                    minirl_floor(hp, seeds, mode["repeats"], mode["pool"], train))
            except Exception as error:
                report["floor"].append(dict(seeds=seeds, error=last_line(repr(error))))

    if "cli" not in skip:
        report["cli"] = measure_cli(report, "sac", hp, seeds_list, mode["eval_episodes"])

    eval_args = ["--eval-episodes", str(mode["eval_episodes"])]
    peers = [
        ("rejax", "rejax_sac.py", eval_args),
        ("sbx", "sbx_sac.py", [*eval_args, "--threads", str(args.sb3_threads)]),
        ("sb3", "sb3_sac.py", [*eval_args, "--threads", str(args.sb3_threads)]),
    ]
    run_peers(report, peers, "SAC", hp, seeds_list, skip, args)
    report["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report["wall_s"] = time.perf_counter() - started
    report["ratios"] = ratios(report)
    write_report(report, render(report), output, "sac")
    return 0


if __name__ == "__main__":
    sys.exit(main())
