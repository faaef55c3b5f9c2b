"""Model-based benchmarks (measured, not asserted); writes the model_based section of
benchmarks/RESULTS.md and the curve benchmarks/model_based_curve.png.

    python benchmarks/bench_model_based.py [--seeds 4] [--quick]

1. Real env steps to reach −200 on Pendulum-v1: ``pets`` (its preset: 5k steps), ``mbpo``
   (SAC inside a learned ensemble, 5k), ``bptt`` through the true env and through a learned
   ensemble (5k each) against SAC (its preset: 20k steps), seeds vmapped in one program
   each, and the wall-clock time per real step of each (all seeds together, compile
   included): what the sample efficiency costs in compute. A seed has reached −200 at the
   env step that completes the first window of 5 consecutive training episodes whose mean
   return is ≥ −200 (5 episodes = 1,000 steps, so one lucky episode does not count). The
   training episodes include each learner's exploration (CEM's sampling noise for PETS,
   the stochastic policy for SAC and MBPO, Gaussian action noise for BPTT).
2. Model-fit throughput of the vmapped ensemble against the member count (1, 5, 10):
   transitions consumed per second (members × updates × batch / time) by
   ``dynamics.fit`` on 5,000 Pendulum transitions, with PETS's network size.
4. BPTT's gradient through the true Pendulum against the horizon H (1 … 200): the norm of
   ∇θ J of the objective ``bptt.objective`` (J = mean over 64 start states of (1/H) Σ_t w_t
   G^λ_t) and the spread of that gradient over 32 batches of random start states (trace
   of its covariance, relative to the squared norm of the mean gradient), with the learned
   value bootstrapping the horizon (λ-returns) and without it (the plain H-step return),
   at the policy and value of a trained ``bptt`` run and at the initial policy.
3. Planning time per env step: one jitted ``pets.act`` (CEM over the ensemble with
   trajectory sampling) per call, and the whole loop's wall time per env step (acting,
   stepping, storing and the amortised refits).

Times are medians of repeated calls after compilation, on whatever device JAX picks.
"""

import argparse
import json
import os
import platform
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from minirl import envs
from minirl.algos import sac
from minirl.model_based import bptt, dynamics, mbpo, pets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results import timeit, update_section  # noqa: E402  (benchmarks/results.py)

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = -200.0
WINDOW = 5


def episodes_of(metrics: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(env step at which each completed episode ended, its return) for one seed; where an
    iteration completes several episodes, each gets that iteration's mean return."""
    counts = np.asarray(metrics["episodes"][seed]).astype(int)
    sums = np.asarray(metrics["episode_return_sum"][seed])
    steps = np.asarray(metrics["env_steps"][seed])
    ends, returns = [], []
    for count, total, step in zip(counts, sums, steps):
        for _ in range(count):
            ends.append(step)
            returns.append(total / count)
    return np.asarray(ends), np.asarray(returns)


def steps_to_target(ends: np.ndarray, returns: np.ndarray) -> float:
    """The env step completing the first WINDOW-episode window with mean ≥ TARGET (inf if
    none)."""
    for i in range(WINDOW, len(returns) + 1):
        if returns[i - WINDOW:i].mean() >= TARGET:
            return float(ends[i - 1])
    return float("inf")


def train_seeds(algo, config, env, env_params, seeds: int):
    keys = jax.random.split(jax.random.PRNGKey(100), seeds)
    train = jax.jit(jax.vmap(algo.train, in_axes=(0, None, None, None)), static_argnums=2)
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(train(keys, config, env, env_params))
    return state, metrics, time.perf_counter() - start


def bench_sample_efficiency(seeds: int, quick: bool):
    env, env_params = envs.make("Pendulum-v1")
    rows, curves, pets_state, pets_config, pets_seconds = [], {}, None, None, None
    learners = (("pets", pets, {}), ("mbpo", mbpo, {}), ("bptt", bptt, {}),
                ("bptt learned", bptt, {"model": "learned"}), ("sac", sac, {}))
    for name, algo, options in learners:
        overrides = dict(options)
        if quick:
            overrides["total_steps"] = 2_000 if algo is sac else 1_000
        config = algo.Config(**{**algo.preset("Pendulum-v1"), **overrides})
        state, metrics, seconds = train_seeds(algo, config, env, env_params, seeds)
        reached, finals, curve = [], [], []
        for seed in range(seeds):
            ends, returns = episodes_of(metrics, seed)
            reached.append(steps_to_target(ends, returns))
            finals.append(returns[-WINDOW:].mean() if len(returns) else float("nan"))
            curve.append((ends, returns))
        curves[name] = curve
        rows.append(dict(algo=name, total_steps=config.total_steps, seeds=seeds,
                         steps_to_target=reached, median_steps=float(np.median(reached)),
                         final_window_returns=finals, wall_seconds=seconds,
                         ms_per_real_step=1e3 * seconds / config.total_steps))
        if name == "pets":
            pets_state, pets_config, pets_seconds = state, config, seconds
    return rows, curves, (pets_state, pets_config, pets_seconds)


def plot(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = ("tab:blue", "tab:green", "tab:red", "tab:purple", "tab:orange")
    for (name, curve), colour in zip(curves.items(), colours):
        for i, (ends, returns) in enumerate(curve):
            ax.plot(ends, returns, color=colour, alpha=0.35, lw=1,
                    label=name if i == 0 else None)
    ax.axhline(TARGET, color="k", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("real env steps")
    ax.set_ylabel("training episode return")
    ax.set_title("Pendulum-v1: model-based learners against SAC (one line per seed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def bench_model_fit(member_counts, hidden, updates: int, batch: int):
    rng = np.random.default_rng(0)
    n = 5_000
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    action = rng.uniform(-2, 2, size=(n, 1)).astype(np.float32)
    data = dynamics.Data(jnp.asarray(obs), jnp.asarray(action),
                         jnp.asarray(obs + 0.05 * rng.normal(size=(n, 3)).astype(np.float32)),
                         jnp.zeros(n))
    rows = []
    for members in member_counts:
        config = dynamics.ModelConfig(kind="probabilistic", ensemble_size=members,
                                      hidden=hidden)
        model = dynamics.init(jax.random.PRNGKey(0), 3, 1, config)
        opt_state = dynamics.init_optimizer(model, config)
        fit = jax.jit(lambda key, model, opt_state, config=config: dynamics.fit(
            key, model, opt_state, data, n, config, num_updates=updates, batch_size=batch))
        seconds = timeit(fit, jax.random.PRNGKey(1), model, opt_state)
        rows.append(dict(members=members, seconds=seconds,
                         samples_per_second=members * updates * batch / seconds))
    return rows


def bench_bptt_gradients(horizons, batches: int, quick: bool):
    """Per H: mean ‖∇J‖ over ``batches`` batches of 64 random start states, and the relative
    spread E‖g − ḡ‖² / ‖ḡ‖², with and without the value, at a trained and the initial
    policy."""
    env, env_params = envs.make("Pendulum-v1")
    base = bptt.Config(**{**bptt.preset("Pendulum-v1"),
                          **({"total_steps": 1_000} if quick else {})})
    trained = jax.jit(bptt.train, static_argnums=2)(jax.random.PRNGKey(100), base, env,
                                                     env_params)[0].learner
    initial = bptt.init(jax.random.PRNGKey(100), base, env, env_params).learner
    reset = jax.vmap(env.reset, in_axes=(0, None))
    rows = []
    for when, learner in (("trained", trained), ("initial", initial)):
        for value in (True, False):
            for horizon in horizons:
                config = bptt.Config(**{**bptt.preset("Pendulum-v1"), "horizon": horizon,
                                        "value": value})
                step_fn = bptt.model_step(learner, config)

                def gradient(key, learner=learner, config=config, step_fn=step_fn):
                    start_key, noise_key = jax.random.split(key)
                    obs, state = reset(jax.random.split(start_key, 64), env_params)
                    starts = bptt.Starts(state, obs)

                    def j(net):
                        policy = bptt.Policy(net, learner.params.low, learner.params.high)
                        return bptt.objective(policy, learner.target_value, step_fn, starts,
                                              noise_key, config)[0]

                    grads = jax.grad(j)(learner.params.net)
                    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_array))
                    return jnp.concatenate([jnp.ravel(x) for x in leaves])

                g = np.asarray(jax.jit(jax.vmap(gradient))(
                    jax.random.split(jax.random.PRNGKey(7), batches)), np.float64)
                mean = g.mean(axis=0)
                norms = np.linalg.norm(g, axis=1)
                spread = float(np.mean(np.sum((g - mean) ** 2, axis=1)))
                rows.append(dict(policy=when, value=value, horizon=horizon,
                                 norm=float(norms.mean()), norm_std=float(norms.std()),
                                 relative_spread=spread / max(float(mean @ mean), 1e-30),
                                 finite=bool(np.all(np.isfinite(g)))))
    return rows


def bench_planning(state, config, seconds: float, seeds: int):
    params = jax.tree.map(lambda x: x[0], state.learner.params)
    act = jax.jit(lambda params, obs, key: pets.act(params, obs, key, config))
    obs = jnp.array([1.0, 0.0, 0.0])
    per_act = timeit(act, params, obs, jax.random.PRNGKey(0), repeats=20)
    return dict(act_seconds=per_act, loop_seconds_per_step=seconds / config.total_steps,
                seeds_in_loop=seeds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test")
    args = parser.parse_args()
    command = "python benchmarks/bench_model_based.py" + (" --quick" if args.quick else "") + (
        f" --seeds {args.seeds}" if args.seeds != 4 else "")
    device = f"{jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} CPU cores"

    efficiency, curves, (pets_state, pets_config, pets_seconds) = bench_sample_efficiency(
        args.seeds, args.quick)
    fits = bench_model_fit((1, 5, 10), pets_config.hidden, 20 if args.quick else 200, 256)
    planning = bench_planning(pets_state, pets_config, pets_seconds, args.seeds)
    horizons = (1, 5, 20, 50) if args.quick else (1, 2, 5, 10, 20, 50, 100, 200)
    gradients = bench_bptt_gradients(horizons, 4 if args.quick else 32, args.quick)

    lines = [
        "## Model-based RL: PETS, MBPO and BPTT against SAC",
        "",
        f"Made by `{command}` on {device}; jax {jax.__version__}, Python "
        f"{platform.python_version()}.",
        "",
        f"**Real env steps to reach {TARGET:.0f}** on Pendulum-v1 (first window of {WINDOW} "
        f"training episodes with mean return ≥ {TARGET:.0f}; {args.seeds} seeds, each "
        "learner's preset; `inf`: not reached in the budget). Curve: "
        "`benchmarks/model_based_curve.png`.",
        "",
        "| learner | budget | steps to −200, per seed | median | last 5 episodes, per seed "
        "| wall (s, all seeds) | ms per real step (all seeds) |",
        "|---|---:|---|---:|---|---:|---:|",
    ]
    for row in efficiency:
        per_seed = ", ".join(f"{s:,.0f}" if np.isfinite(s) else "inf"
                             for s in row["steps_to_target"])
        finals = ", ".join(f"{r:.0f}" for r in row["final_window_returns"])
        median = row["median_steps"]
        shown = f"{median:,.0f}" if np.isfinite(median) else "inf"
        lines.append(f"| {row['algo']} | {row['total_steps']:,} | {per_seed} | {shown} | "
                     f"{finals} | {row['wall_seconds']:.0f} | {row['ms_per_real_step']:.1f} |")
    lines += [
        "",
        "**Model fit throughput** of the vmapped probabilistic ensemble (hidden "
        f"{pets_config.hidden}, batch 256, 5,000 transitions)",
        "",
        "| members | time per fit (s) | transitions per second (all members) |",
        "|---:|---:|---:|",
    ]
    for row in fits:
        lines.append(f"| {row['members']} | {row['seconds']:.3f} | "
                     f"{row['samples_per_second']:,.0f} |")
    lines += [
        "",
        "**Planning time per env step** (PETS preset: CEM over the ensemble, trajectory "
        "sampling)",
        "",
        f"- one jitted `pets.act` (1 seed): {1e3 * planning['act_seconds']:.1f} ms",
        f"- the whole training loop, per env step of all {args.seeds} seeds together: "
        f"{1e3 * planning['loop_seconds_per_step']:.1f} ms (compile included)",
    ]
    lines += [
        "",
        "**BPTT's gradient through the true Pendulum against the horizon H**: ‖∇θ J‖ (mean ±"
        " std over batches of 64 random start states) and its relative spread "
        "E‖g − ḡ‖² / ‖ḡ‖² over those batches (above 1: one batch's gradient is mostly noise), "
        "with the learned value (λ-returns, λ = 0.95) and without (the plain H-step return); "
        "J is normalised by H as the learner uses it.",
        "",
        "| policy | value | H | ‖∇J‖ | relative spread | finite |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in gradients:
        lines.append(f"| {row['policy']} | {'yes' if row['value'] else 'no'} | "
                     f"{row['horizon']} | {row['norm']:.3g} ± {row['norm_std']:.2g} | "
                     f"{row['relative_spread']:.3g} | {row['finite']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.quick:  # a smoke test: never into RESULTS.md
        out_dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), "minirl-bench-quick")
        os.makedirs(out_dir, exist_ok=True)
        written = os.path.join(out_dir, "RESULTS_model_based.md")
        with open(written, "w") as handle:
            handle.write(text)
        plot(curves, os.path.join(out_dir, "model_based_curve.png"))
    else:
        written = update_section("model_based", text)
        plot(curves, os.path.join(HERE, "model_based_curve.png"))
        with open(os.path.join(HERE, "RESULTS_model_based.json"), "w") as handle:
            json.dump(dict(command=command, device=device, efficiency=efficiency, fits=fits,
                           planning=planning, bptt_gradients=gradients), handle, indent=1,
                      default=float)
    print(f"wrote {written}", file=sys.stderr)


if __name__ == "__main__":
    main()
