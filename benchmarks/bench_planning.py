"""Planning benchmarks (measured, not asserted); writes the planning section of
benchmarks/RESULTS.md.

    pip install mctx && python benchmarks/bench_planning.py [--quick]

Without mctx the MCTS table has minirl's column only (the mctx column says so).

1. Time per LQR solve against horizon T (sequential scan vs parallel associative scan), and
   per iLQR solve (10 iterations, fixed) on a pendulum.
2. MCTS simulations per second, minirl's UCT against mctx's own search (muzero_policy) on the
   same CartPole model, the same number of simulations and the same rollout leaf evaluation.
3. CEM plans per second on Pendulum-v1 against the batch of initial states.

Times are medians of repeated calls after compilation, on whatever device JAX picks.
"""

import argparse
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

from minirl import envs
from minirl.planning import lqr, mcts, mpc, shooting

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results import timeit, update_section  # noqa: E402  (benchmarks/results.py)


def lq_problem(T, n=4, m=2, seed=0):
    rng = np.random.default_rng(seed)
    A = np.eye(n) + 0.05 * rng.normal(size=(n, n))
    B = 0.1 * rng.normal(size=(n, m))
    F = jnp.asarray(np.broadcast_to(np.concatenate([A, B], 1), (T, n, n + m)), jnp.float32)
    C = jnp.asarray(np.broadcast_to(np.eye(n + m), (T, n + m, n + m)), jnp.float32)
    return F, jnp.zeros((T, n)), C, jnp.zeros((T, n + m)), jnp.ones(n)


def bench_lqr(horizons):
    rows = []
    seq, par = jax.jit(lqr.lqr), jax.jit(lqr.lqr_parallel)

    def pendulum(x, u, t):
        return jnp.stack([x[0] + 0.05 * x[1], x[1] + 0.05 * (10 * jnp.sin(x[0]) + u[0])])

    cost = lambda x, u, t: (1 - jnp.cos(x[0])) + 0.1 * x[1] ** 2 + 0.01 * u[0] ** 2
    solve = jax.jit(lambda x0, U0: lqr.ilqr(pendulum, cost, x0, U0, max_iterations=10, tol=0.0))
    for T in horizons:
        problem = lq_problem(T)
        t_seq, t_par = timeit(seq, *problem), timeit(par, *problem)
        t_ilqr = timeit(solve, jnp.array([1.0, 0.0]), jnp.zeros((T, 1)), repeats=3)
        rows.append((T, t_seq * 1e3, t_par * 1e3, t_ilqr * 1e3))
    return rows


def bench_mcts(batches, num_simulations=64, rollout_depth=50):
    """Rows (batch, minirl sims/s, mctx sims/s or None when mctx is not installed)."""
    try:
        import mctx
    except ImportError:
        mctx = None
        print("mctx is not installed (pip install mctx): its column is left empty",
              file=sys.stderr)

    env, params = envs.make("CartPole-v1")
    model = mcts.gymnax_model(env, params)
    uniform = mcts.uniform_policy(2)

    def ours(keys, states):
        search = lambda key, state: (
            mcts.search(
                key,
                model,
                state,
                num_actions=2,
                num_simulations=num_simulations,
                c=0.5,
                rollout_depth=rollout_depth,
            ).action
        )
        return jax.vmap(search)(keys, states)

    def leaf_value(key, state):
        return mcts.rollout_return(key, model, uniform, state, rollout_depth, 1.0)

    def recurrent_fn(_, key, action, states):
        keys = jax.random.split(key, action.shape[0])
        step_keys, value_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
        next_states, reward, terminated = jax.vmap(model)(step_keys, states, action)
        value = jax.vmap(leaf_value)(value_keys, next_states)
        out = mctx.RecurrentFnOutput(
            reward=reward,
            discount=1.0 - terminated.astype(jnp.float32),
            prior_logits=jnp.zeros((action.shape[0], 2)),
            value=value,
        )
        return out, next_states

    def theirs(keys, states):
        batch = keys.shape[0]
        root = mctx.RootFnOutput(
            prior_logits=jnp.zeros((batch, 2)),
            value=jax.vmap(leaf_value)(keys, states),
            embedding=states,
        )
        return mctx.muzero_policy(
            None, keys[0], root, recurrent_fn, num_simulations=num_simulations
        ).action

    rows = []
    for batch in batches:
        keys = jax.random.split(jax.random.PRNGKey(0), batch)
        _, states = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
        t_ours = timeit(jax.jit(ours), keys, states)
        sims = batch * num_simulations
        if mctx is None:
            rows.append((batch, sims / t_ours, None))
            continue
        t_theirs = timeit(jax.jit(theirs), keys, states)
        rows.append((batch, sims / t_ours, sims / t_theirs))
    return rows


def bench_cem(batches):
    env, params = envs.make("Pendulum-v1")
    step = mpc.cost_model(env, params)
    low, high = mpc._box(env, params)
    options = mpc.PLANNERS["cem"][1]

    def plan(key, state):
        return shooting.cem(
            key,
            step,
            (state, jnp.array(False)),
            jnp.zeros((options["horizon"], 1)),
            num_samples=options["num_samples"],
            num_elites=options["num_elites"],
            iterations=options["iterations"],
            low=low,
            high=high,
            init_std=options["init_std"] * 2.0,
            smoothing=options["smoothing"],
        ).actions[0]

    rows = []
    for batch in batches:
        keys = jax.random.split(jax.random.PRNGKey(0), batch)
        _, states = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
        t = timeit(jax.jit(jax.vmap(plan)), keys, states)
        rows.append((batch, batch / t))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument(
        "--out", help="write a standalone markdown file instead of the RESULTS.md section"
    )
    args = parser.parse_args()
    horizons = [10, 100, 1000] if args.quick else [10, 100, 1000, 10_000]
    batches = [1, 16] if args.quick else [1, 16, 64]
    command = "python benchmarks/bench_planning.py" + (" --quick" if args.quick else "")
    device = f"{jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} CPU cores"
    lines = [
        "## Planning",
        "",
        f"Made by `{command}` on {device}; jax {jax.__version__}, Python "
        f"{platform.python_version()}. Medians after compilation, float32.",
        "",
        "**LQR and iLQR solve time against horizon** (n = 4, m = 2 for LQR; iLQR: pendulum "
        "n = 2, m = 1, at most 10 iterations (tol = 0: it stops earlier only when the gradient "
        "is exactly zero or no step lowers the cost) with an 8-step vectorised line search)",
        "",
        "| T | LQR sequential (ms) | LQR parallel (ms) | iLQR, ≤ 10 iterations (ms) |",
        "|---:|---:|---:|---:|",
    ]
    for T, a, b, c in bench_lqr(horizons):
        lines.append(f"| {T} | {a:.3f} | {b:.3f} | {c:.2f} |")
    lines += [
        "",
        "**MCTS simulations per second**, CartPole-v1 as the model, 64 simulations per search, "
        "each new leaf valued by one 50-step uniform rollout; batch = independent searches",
        "",
        "| batch | minirl UCT (sims/s) | mctx muzero_policy (sims/s) |",
        "|---:|---:|---:|",
    ]
    for batch, a, b in bench_mcts(batches):
        theirs = "mctx not installed" if b is None else f"{b:,.0f}"
        lines.append(f"| {batch} | {a:,.0f} | {theirs} |")
    lines += [
        "",
        "**CEM plans per second** on Pendulum-v1 (horizon 30, 200 samples, 20 elites, 4 "
        "iterations: 24,000 model steps per plan); batch = initial states planned at once",
        "",
        "| batch | plans/s |",
        "|---:|---:|",
    ]
    for batch, rate in bench_cem(batches):
        lines.append(f"| {batch} | {rate:,.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)
        written = args.out
    elif args.quick:  # a smoke test: never into RESULTS.md
        quick_dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), "minirl-bench-quick")
        os.makedirs(quick_dir, exist_ok=True)
        written = os.path.join(quick_dir, "RESULTS_planning.md")
        with open(written, "w") as handle:
            handle.write(text)
    else:
        written = update_section("planning", text)
    print(f"wrote {written}", file=sys.stderr)


if __name__ == "__main__":
    main()
