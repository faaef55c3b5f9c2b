"""PPO throughput benchmark on CartPole-v1: minirl, rejax and Stable-Baselines3 with the same
hyperparameters (64 envs × 64 steps, 8 epochs, 16 minibatches, 64×64 tanh networks) at 1
and 16 seeds, side by side in one run, and minirl's own time split — environment stepping,
acting and learning — against an environment-only run and a learner-only run (the floor).
Prints a markdown report and writes it to its section of benchmarks/RESULTS.md.

    python benchmarks/bench_ppo.py            # the full benchmark
    python benchmarks/bench_ppo.py --quick    # every part with tiny budgets: a smoke test

The peers run in their own virtual environments (benchmarks/.venv-rejax, .venv-sb3), built
on first use by the machinery of bench_dqn.py and shared with it. A peer that cannot be
installed or run is reported in the table with the reason; the rest goes on.

The time split (minirl, per seed count S, each a separately compiled program timed after
compilation, seeds vmapped):
  env only      random actions in S × 64 envs for the run's number of env steps;
  collect       PPO's rollout with a fixed policy (env + acting: sampling, log-probs,
                values, GAE), so acting = collect − env only;
  learner only  PPO's ``learn`` (8 epochs × 16 minibatches) repeated on a fixed batch;
  whole run     ``jax.vmap(ppo.train)``.
The floor is env only + learner only: what the run would cost if acting were free.
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

from minirl import envs  # noqa: E402
from minirl.algos import ppo  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The hyperparameters every library runs with (names are minirl's; peers map them). The
# peers read ``env_id``; minirl's configs name no environment (contract v2).
SHARED = dict(
    env_id="CartPole-v1",
    num_envs=64,  # per seed
    rollout_steps=64,  # steps per env per iteration (SB3 n_steps, rejax num_steps)
    num_epochs=8,
    num_minibatches=16,  # 4096 / 16 = 256 transitions per minibatch
    hidden=[64, 64],  # separate actor and critic MLPs
    activation="tanh",
    learning_rate=3e-4,  # constant (rejax has no schedule)
    gamma=0.99,
    lam=0.95,
    clip_epsilon=0.2,
    value_coef=0.5,
    entropy_coef=0.0,
    max_grad_norm=0.5,
)

MODES = {
    "full": dict(total_steps=64 * 4096, repeats=3, eval_episodes=20),
    "quick": dict(total_steps=2 * 4096, repeats=1, eval_episodes=2),
}
TARGET_SPEEDUP = 2.0  # the bar: aggregate throughput ≥ 2× rejax's at 16 seeds
TARGET_FLOOR = 1.25  # the bar: a whole run within 1.25× of env only + learner only


# ----------------------------------------------------------------------------- minirl


def minirl_config(hp: dict, **overrides) -> ppo.Config:
    fields = dict(
        total_steps=hp["total_steps"], num_envs=hp["num_envs"],
        rollout_steps=hp["rollout_steps"], num_epochs=hp["num_epochs"],
        num_minibatches=hp["num_minibatches"], hidden=tuple(hp["hidden"]), network="mlp",
        activation=hp["activation"], learning_rate=hp["learning_rate"],
        learning_rate_end_factor=1.0, gamma=hp["gamma"], lam=hp["lam"],
        clip_epsilon=hp["clip_epsilon"], value_coef=hp["value_coef"],
        entropy_coef=hp["entropy_coef"], max_grad_norm=hp["max_grad_norm"],
    )
    fields.update(overrides)
    return ppo.Config(**fields)


def timed(fn, *args, repeats: int) -> tuple[float, float, object]:
    """(compile seconds, median run seconds, last output) of ``jax.jit(fn)(*args)``."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    return compile_s, float(np.median(times)), out


def minirl_train(hp: dict, seeds: int, eval_episodes: int, repeats: int) -> dict:
    """Whole runs as one program: ``jit(vmap(ppo.train))`` over ``seeds`` keys (the env
    static, the config and the env parameters traced and shared by every seed)."""
    from minirl import runner

    config = minirl_config(hp)
    env, env_params = envs.make(hp["env_id"])
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    train = jax.jit(jax.vmap(ppo.train, in_axes=(0, None, None, None)), static_argnums=2)
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
    returns = runner.evaluate(ppo, config, env, env_params, state.learner.params, eval_episodes,
                              seed=1)
    return dict(
        library="minirl", seeds=seeds, parallelism=f"jax.vmap over {seeds} keys, one program",
        env_steps=steps, compile_s=compile_s, run_s=run_s, steps_per_s=steps / run_s,
        final_return_per_seed=[float(r) for r in np.mean(returns, axis=1)],
    )


def fixed_batches(hp: dict, seeds: int) -> tuple[ppo.Config, ppo.State, ppo.Batch]:
    """``seeds`` fresh states and one iteration's batch each (collected by the initial
    policy): the learner's input for the learner-only timings (here and bench_flops.py)."""
    config = minirl_config(hp)
    env, env_params = envs.make(hp["env_id"])
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    states = jax.jit(jax.vmap(ppo.init, in_axes=(0, None, None, None)), static_argnums=2)(
        keys, config, env, env_params)

    def one_batch(state, env_params):
        params = state.learner.params
        _, trajectory = ppo.collect(params, state.env, state.key, config, env, env_params)
        return ppo.make_batch(params, trajectory, config)

    batches = jax.jit(jax.vmap(one_batch, in_axes=(0, None)))(states, env_params)
    return config, states, batches


def minirl_split(hp: dict, seeds: int, repeats: int, train_s: float | None) -> dict:
    """Seconds of env only, collect (env + acting), learner only, and the whole run."""
    config, states, batches = fixed_batches(hp, seeds)
    env, env_params = envs.make(hp["env_id"])
    iterations = config.num_iterations

    env_s = bench_dqn.env_only(seeds * config.num_envs, iterations * config.rollout_steps,
                               repeats)["run_s"]

    def collect_only(states, env_params):
        def one(state):
            params = state.learner.params

            def body(carry, _):
                env_carry, key = carry
                key, collect_key = jax.random.split(key)
                env_carry, trajectory = ppo.collect(params, env_carry, collect_key, config,
                                                    env, env_params)
                batch = ppo.make_batch(params, trajectory, config)
                return (env_carry, key), jnp.sum(batch.advantage)
            return jax.lax.scan(body, (state.env, state.key), length=iterations)[1]
        return jax.vmap(one)(states)

    _, collect_s, _ = timed(collect_only, states, env_params, repeats=repeats)

    def learn_only(learners, batches):
        def one(learner, batch):
            def body(learner, _):
                learner, metrics = ppo.learn(learner, batch, config)
                return learner, metrics["value_loss"]
            return jax.lax.scan(body, learner, length=iterations)[1]
        return jax.vmap(one)(learners, batches)

    _, learn_s, _ = timed(learn_only, states.learner, batches, repeats=repeats)
    return dict(seeds=seeds, env_s=env_s, collect_s=collect_s, acting_s=collect_s - env_s,
                learn_s=learn_s, floor_s=env_s + learn_s, train_s=train_s,
                steps=seeds * iterations * config.num_envs * config.rollout_steps)


# ----------------------------------------------------------------------------- report


def render(report: dict) -> str:
    hp, mode = report["hp"], report["mode"]
    out = ["# PPO benchmark: minirl, rejax and Stable-Baselines3 on CartPole-v1", ""]
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
        f"CartPole-v1, {hp['total_steps']:,} env steps per seed, {hp['num_envs']} envs × "
        f"{hp['rollout_steps']} steps per iteration, {hp['num_epochs']} epochs × "
        f"{hp['num_minibatches']} minibatches, separate actor and critic MLPs "
        f"{hp['hidden'][0]}×{hp['hidden'][1]} ({hp['activation']}), Adam lr "
        f"{hp['learning_rate']:g} (constant), γ {hp['gamma']}, GAE λ {hp['lam']}, clip ε "
        f"{hp['clip_epsilon']}, value coefficient {hp['value_coef']}, entropy coefficient "
        f"{hp['entropy_coef']}, gradient clip {hp['max_grad_norm']} (global norm). rejax clips "
        "the value loss with ε and has separate actor / critic optimisers; SB3 and minirl "
        "share one loss. Returns: minirl and SB3 greedy (mode), rejax sampling.",
        "",
        "## PPO training throughput (compile excluded)",
        "",
        f"| library | seeds | env steps/s (all seeds) | {cli_header(report)} | per seed | "
        "run (s) | compile (s) | final return | how seeds run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["train"]:
        if "error" in row:
            out.append(f"| {row['library']} | {row['seeds']} | failed: {row['error']} "
                       f"| {cli_cell(report, row)} | | | | | |")
            continue
        out.append(
            f"| {row['library']} | {row['seeds']} | {fmt_rate(row['steps_per_s'])} | "
            f"{cli_cell(report, row)} | "
            f"{fmt_rate(row['steps_per_s'] / row['seeds'])} | {row['run_s']:.1f} | "
            f"{row['compile_s']:.1f} | {fmt_return(row.get('final_return_per_seed'))} | "
            f"{row['parallelism']} |"
        )
    out += cli_note(report)
    out += [
        "",
        "## minirl time split (seconds per whole run, compile excluded)",
        "",
        "| seeds | env only | acting (collect − env) | learner only | floor (env + learner) "
        "| whole run | whole / floor |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["split"]:
        if "error" in row:
            out.append(f"| {row['seeds']} | failed: {row['error']} | | | | | |")
            continue
        whole = row["train_s"]
        ratio = f"{whole / row['floor_s']:.2f}×" if whole else "—"
        out.append(
            f"| {row['seeds']} | {row['env_s']:.2f} | {row['acting_s']:.2f} | "
            f"{row['learn_s']:.2f} | {row['floor_s']:.2f} | "
            f"{'—' if whole is None else f'{whole:.2f}'} | {ratio} |"
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
        mine = rate("minirl", seeds)
        for peer in ("rejax", "sb3"):
            theirs = rate(peer, seeds)
            text = f"minirl / {peer} throughput at {seeds} seed{'s' * (seeds != 1)}: "
            if mine and theirs:
                text += f"{mine / theirs:.2f}×"
                bar = TARGET_SPEEDUP if peer == "rejax" and seeds == 16 else None
                if bar:
                    verdict = "meets" if mine / theirs >= TARGET_SPEEDUP else "misses"
                    text += f" ({verdict} the ≥ {TARGET_SPEEDUP:.0f}× bar)"
                lines.append(text + cli_ratio(report, seeds, theirs, 2, bar))
            else:
                lines.append(text + "not available (a run failed or was skipped)")
    lines += cli_lines(report, minirl_rows(report))
    for row in report["split"]:
        if "error" not in row and row.get("train_s"):
            ratio = row["train_s"] / row["floor_s"]
            verdict = "meets" if ratio <= TARGET_FLOOR else "misses"
            lines.append(f"whole run / floor at {row['seeds']} seeds: {ratio:.2f}× ({verdict} "
                         f"the ≤ {TARGET_FLOOR}× bar); acting is "
                         f"{row['acting_s'] / row['train_s']:.0%} of the whole run")
    return lines


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny budgets to check that every part runs (numbers are noise)")
    parser.add_argument("--total-steps", type=int,
                        help="env steps per seed for every run (multiple of 4096)")
    parser.add_argument("--seeds", default="1,16", help="comma-separated seed counts")
    parser.add_argument("--sb3-threads", type=int, default=1,
                        help="torch.set_num_threads in each SB3 process (default 1)")
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to skip: minirl,split,cli,rejax,sb3 "
                             "(cli: minirl's CLI default, every core)")
    parser.add_argument("--rebuild-venvs", action="store_true",
                        help="recreate the peer virtual environments")
    parser.add_argument("--peer-timeout", type=int, default=3600,
                        help="seconds allowed for one peer run")
    parser.add_argument("--output", type=Path,
                        help="markdown file to write (default: the ppo section of "
                             "benchmarks/RESULTS.md; with --quick a file in the temporary "
                             "directory)")
    args = parser.parse_args()

    mode = dict(MODES["quick" if args.quick else "full"], name="quick" if args.quick else "full")
    if args.total_steps:
        mode["total_steps"] = args.total_steps
    seeds_list = [int(s) for s in args.seeds.split(",") if s]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    output = args.output or (
        Path(os.environ.get("TMPDIR", "/tmp")) / "minirl-bench-quick" / "RESULTS_ppo.md"
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
        peer_versions={}, train=[], split=[], cli=[],
    )

    for seeds in seeds_list:
        train_s = None
        if "minirl" not in skip:
            log(f"minirl PPO, {seeds} seed(s) × {hp['total_steps']:,} steps")
            try:
                row = minirl_train(hp, seeds, mode["eval_episodes"], mode["repeats"])
                report["train"].append(row)
                train_s = row["run_s"]
            except Exception as error:  # keep going: the table says what failed
                report["train"].append(dict(library="minirl", seeds=seeds,
                                            error=last_line(repr(error))))
        if "split" not in skip:
            log(f"minirl PPO time split, {seeds} seed(s)")
            try:
                report["split"].append(minirl_split(hp, seeds, mode["repeats"], train_s))
            except Exception as error:
                report["split"].append(dict(seeds=seeds, error=last_line(repr(error))))

    if "cli" not in skip:
        report["cli"] = measure_cli(report, "ppo", hp, seeds_list, mode["eval_episodes"])

    peers = [
        ("rejax", "rejax_ppo.py", ["--eval-episodes", str(mode["eval_episodes"])]),
        ("sb3", "sb3_ppo.py", ["--eval-episodes", str(mode["eval_episodes"]),
                               "--threads", str(args.sb3_threads)]),
    ]
    run_peers(report, peers, "PPO", hp, seeds_list, skip, args)
    report["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report["wall_s"] = time.perf_counter() - started
    report["ratios"] = ratios(report)
    write_report(report, render(report), output, "ppo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
