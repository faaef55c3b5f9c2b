"""Local models and local policies (measured, not asserted); writes the local_policies
section of benchmarks/RESULTS.md.

    python benchmarks/bench_local_policies.py [--seeds 4] [--quick]

For each env (Pendulum-v1, the swing-up; Reacher-misc, reaching), 4 seeds in one program
per learner, each learner's preset:

- ``lqr_flm``: the controllers' noise-free return from their conditions per iteration, the
  real episodes it took to get within 10 % and within 25 % of iLQR's return on the true
  model from the same conditions (``reference_returns``), and the wall-clock time per
  iteration;
- ``gps``: the global network's return from random starts (what it is for) and from the
  conditions, and the time per iteration;
- ``sac`` (its Pendulum preset, 20k steps) and ``pets`` (its preset, Pendulum only: it needs
  a reward of the next observation, which Reacher's ``rewards.KNOWN`` lacks): real episodes
  to a 5-episode mean within 10 % of the same iLQR reference, for the same question asked
  of model-free and model-based learners with random starts.

Episodes are counted as real env episodes of the learning samples (LQR-FLM and GPS: C·N per
iteration; their noise-free evaluation episodes are not counted, as ``--eval-every``'s
are not).
"""

import argparse
import os
import platform
import sys
import time

import jax
import numpy as np

from minirl import envs
from minirl.algos import sac
from minirl.model_based import gps, lqr_flm, pets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results import update_section  # noqa: E402  (benchmarks/results.py)


def train_seeds(algo, config, env, env_params, seeds: int):
    keys = jax.random.split(jax.random.PRNGKey(100), seeds)
    train = jax.jit(jax.vmap(algo.train, in_axes=(0, None, None, None)), static_argnums=2)
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(train(keys, config, env, env_params))
    compiled = time.perf_counter() - start
    start = time.perf_counter()  # the same program again: the time without compiling
    jax.block_until_ready(train(keys, config, env, env_params))
    return state, metrics, compiled, time.perf_counter() - start


def episodes_to(returns: np.ndarray, episodes_per_iteration: int, target: float) -> float:
    """Real episodes until the first iteration whose return is ≥ ``target`` (inf if none)."""
    hits = np.nonzero(returns >= target)[0]
    return float((hits[0] + 1) * episodes_per_iteration) if len(hits) else float("inf")


def within(reference: float, fraction: float) -> float:
    """The return within ``fraction`` of ``reference`` (rewards of either sign)."""
    return reference - fraction * abs(reference)


def fmt(x: float) -> str:
    return "never" if not np.isfinite(x) else f"{x:,.0f}"


def reference_note(env, env_params, state, config) -> str:
    """What the iLQR reference is made of (``lqr_flm.reference_parts``), medians over seeds of
    the conditions' mean: the closed loop, and whole-horizon iLQR from constant plans, which
    is LQR-FLM's own local search with the true model in place of fitted ones."""
    parts = jax.jit(jax.vmap(lambda s: lqr_flm.reference_parts(env, env_params, s, config)))(
        state.env.env_state)
    mpc_return, constant_return, warm_return = (np.median(np.asarray(x).mean(axis=-1))
                                                for x in parts)
    return (f"iLQR on the true model from the same conditions (the reference is the best of"
            f" the three per condition): replanning iLQR-MPC {mpc_return:.1f}; open-loop iLQR"
            f" over the whole horizon from constant plans (LQR-FLM's own local search with a"
            f" perfect model) {constant_return:.1f}; the same from MPC's actions"
            f" {warm_return:.1f}.")


def bench_env(env_id: str, seeds: int, quick: bool) -> tuple[list[str], str]:
    env, env_params = envs.make(env_id)
    rows = []
    overrides = {"total_steps": 8_000} if quick else {}
    references = None
    for name, algo in (("lqr_flm", lqr_flm), ("gps", gps)):
        config = algo.Config(**{**algo.preset(env_id), **overrides})
        state, metrics, compiled, seconds = train_seeds(algo, config, env, env_params, seeds)
        if algo is lqr_flm:
            references = np.asarray(state.reference).mean(axis=-1)  # [S]
            note = reference_note(env, env_params, state, config)
            # the controllers' noise-free return from their conditions, per iteration
            curve = np.asarray(metrics["episode_return_sum"] / metrics["episodes"])
            final = f"{np.median(curve[:, -1]):.1f} (iLQR {np.median(references):.1f})"
        else:
            curve = np.asarray(metrics["condition_return"])  # the network, conditions
            random_starts = np.asarray(metrics["episode_return_sum"] / metrics["episodes"])
            name = "gps (from the conditions; from random starts)"
            final = f"{np.median(curve[:, -1]):.1f}; {np.median(random_starts[:, -1]):.1f}"
        per_iteration = config.num_conditions * config.samples
        near, close = ([episodes_to(curve[s], per_iteration, within(references[s], fraction))
                        for s in range(seeds)] for fraction in (0.1, 0.25))
        rows.append(f"| {name} | {config.num_iterations * per_iteration:,} | {final} | "
                    f"{', '.join(fmt(x) for x in near)} | {', '.join(fmt(x) for x in close)}"
                    f" | {1e3 * seconds / config.num_iterations:.0f} | {compiled:.0f} |")

    if env_id == "Pendulum-v1":
        for name, algo in (("sac", sac), ("pets", pets)):
            config = algo.Config(**{**algo.preset(env_id),
                                    **({"total_steps": 2_000} if quick else {})})
            _, metrics, compiled, seconds = train_seeds(algo, config, env, env_params, seeds)
            near, close, finals = [], [], []
            for s in range(seeds):
                counts = np.asarray(metrics["episodes"][s]).astype(int)
                sums = np.asarray(metrics["episode_return_sum"][s])
                episode_returns = np.repeat(sums / np.maximum(counts, 1), counts)
                windows = np.convolve(episode_returns, np.ones(5) / 5, mode="valid")
                target = np.median(references)
                near.append(episodes_to(windows, 1, within(target, 0.1)) + 4)
                close.append(episodes_to(windows, 1, within(target, 0.25)) + 4)
                finals.append(episode_returns[-5:].mean())
            rows.append(f"| {name} (random starts, 5-episode mean) | "
                        f"{config.total_steps // 200:,} | {np.median(finals):.1f} | "
                        f"{', '.join(fmt(x) for x in near)} | "
                        f"{', '.join(fmt(x) for x in close)} | "
                        f"{1e3 * seconds / config.num_iterations:.1f} | {compiled:.0f} |")
    return rows, note


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test")
    args = parser.parse_args()
    lines = [
        "## Local models and local policies: LQR-FLM and GPS",
        "",
        f"Made by `python benchmarks/bench_local_policies.py{' --quick' if args.quick else ''}`"
        f" on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores; jax {jax.__version__},"
        f" Python {platform.python_version()}. {args.seeds} seeds (first seed 100), each"
        " learner's preset. Real episodes until the first iteration (LQR-FLM, GPS: C·N = 20"
        " episodes each) or 5-episode window (SAC, PETS) within 10 % / 25 % of iLQR on the"
        " true model from the same conditions (SAC and PETS start at random states: the"
        " median reference); `never`: not in the budget. ms per iteration: the second run of"
        " the compiled program, all seeds together; an iteration is C·N episodes for"
        " LQR-FLM and GPS, one env step for SAC, one episode (a refit) for PETS.",
        "",
    ]
    for env_id in ("Pendulum-v1", "Reacher-misc"):
        lines += [f"**{env_id}**", "",
                  "| learner | real episodes (budget) | final return (median) | episodes to "
                  "within 10 % of iLQR, per seed | within 25 % | ms per iteration | compile + "
                  "first run (s) |",
                  "|---|---:|---|---|---|---:|---:|"]
        rows, note = bench_env(env_id, args.seeds, args.quick)
        lines += rows + ["", note, ""]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        print(f"wrote {update_section('local_policies', text)}", file=sys.stderr)


if __name__ == "__main__":
    main()
