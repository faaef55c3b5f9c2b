"""The real limit: each learner's FLOP rate against the machine's measured matmul peak, and
where the rest of the learner's time goes.

    python benchmarks/bench_flops.py            # full run → RESULTS.md (flops section)
    python benchmarks/bench_flops.py --quick    # tiny sizes, a smoke test; writes to
                                                # $TMPDIR/minirl-bench-quick/

- **Peak**: FLOP/s of one jitted float32 matmul ``[n, n] @ [n, n]`` (n = 2048: 2·n³ FLOPs),
  the median of repeated calls after compiling, on the default device.
- **Learners** (the configs of bench_ppo.py and bench_dqn.py):
  PPO: ``ppo.learn`` (8 epochs × 16 minibatches of 256) on one fixed batch of 64 envs × 64
  steps, ``jax.vmap``-ed over 16 seeds; DQN: ``dqn.learn`` (one update at batch 256, Adam,
  target update), ``jax.vmap``-ed over 4 seeds, timed as a ``lax.scan`` of many updates on
  batches sampled ahead from a filled replay buffer.
- **FLOPs** come from XLA's cost analysis (``jax.jit(f).lower(...).compile()
  .cost_analysis()["flops"]``; a dict or a list of dicts depending on the JAX version).
  XLA counts the body of a loop once, whatever its trip count, so each learner's FLOPs are
  assembled from loop-free pieces: PPO = epochs × shuffle + epochs × minibatches × one
  minibatch step (loss, gradient, clipping and Adam), each piece its own program; DQN's
  update has no loop. The cost analysis of the whole ``learn`` program (loops counted once)
  is reported beside it as a check: it should be close to shuffle + one minibatch step.
- **Rate** = FLOPs / measured time; **% of peak** = rate / peak.
- **Where the time goes**: the learner timed as cumulative variants of the same loop
  structure (PPO: shuffle alone; + forward; + backward; the full ``ppo.learn`` with Adam.
  DQN: forward; + backward; the full ``dqn.learn`` with Adam and the target update; the
  replay sampling alone; sampling + ``learn`` as ``dqn.step`` does). The difference between
  consecutive variants is the time of the part added, and that part's FLOPs over its time
  is its own rate: the part far from peak is where the time goes.
"""

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench_dqn  # noqa: E402
import bench_ppo  # noqa: E402

from minirl import envs  # noqa: E402
from minirl.algos import dqn, ppo  # noqa: E402
from minirl.core import optim  # noqa: E402

MODES = {
    "full": dict(matmul=2048, matmul_repeats=10, ppo_seeds=16, dqn_seeds=4, dqn_updates=500,
                 repeats=5),
    "quick": dict(matmul=512, matmul_repeats=3, ppo_seeds=2, dqn_seeds=2, dqn_updates=20,
                  repeats=1),
}
ISSUE = ("the issue's numbers: PPO's bench config ≈ 0.43 MFLOP per env step, ≈ 35 % of peak "
         "today (rejax ≈ 30 %); the aim is ≥ 60 %")
TARGET = 0.60

START = time.perf_counter()


def log(message: str) -> None:
    print(f"[flops {time.perf_counter() - START:7.1f}s] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- tools


def xla_flops(fn, *args) -> float:
    """FLOPs of ``jax.jit(fn)(*args)`` by XLA's cost analysis (loop bodies counted once)."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, list | tuple):  # older JAX: one dict per program
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def timed(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile seconds, median seconds of ``repeats`` calls after one warm-up call)."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return compile_s, float(np.median(times))


def leaf_sum(tree) -> jax.Array:
    """Σ of every array leaf (a cheap use of every value, so that nothing is left out)."""
    leaves = [jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(eqx.filter(
        tree, eqx.is_array))]
    return jnp.sum(jnp.stack(leaves)) if leaves else jnp.zeros(())


def matmul_peak(n: int, repeats: int) -> dict:
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    _, seconds = timed(jnp.matmul, a, b, repeats=repeats)
    flops = 2.0 * n**3
    return dict(n=n, seconds=seconds, flops=flops, xla_flops=xla_flops(jnp.matmul, a, b),
                rate=flops / seconds)


# ----------------------------------------------------------------------------- PPO


def ppo_learner(seeds: int, repeats: int) -> dict:
    hp = dict(bench_ppo.SHARED, total_steps=bench_ppo.MODES["full"]["total_steps"])
    config, states, batches = bench_ppo.fixed_batches(hp, seeds)
    learners = states.learner
    epochs, minibatches = config.num_epochs, config.num_minibatches
    # ppo.learn's optimiser (ppo._optimizer): global-norm clipping then Adam.
    optimizer = optim.adam_with_clipping(config.learning_rate, config.max_grad_norm,
                                         config.adam_eps)
    grad_fn = jax.value_and_grad(ppo.loss_fn, has_aux=True)

    # The pieces of one minibatch step (what ppo.learn's inner scan does).
    def forward(learner, mb):
        return ppo.loss_fn(learner.params, mb, learner.kl_coef, config)[0]

    def forward_backward(learner, mb):
        (loss, _), grads = grad_fn(learner.params, mb, learner.kl_coef, config)
        return loss + leaf_sum(grads)

    def update(learner, mb):
        (_, _), grads = grad_fn(learner.params, mb, learner.kl_coef, config)
        grads = eqx.filter(grads, eqx.is_array)
        updates, opt_state = optimizer.update(grads, learner.opt_state,
                                              eqx.filter(learner.params, eqx.is_array))
        return eqx.apply_updates(learner.params, updates), opt_state

    def shuffle(batch, key):  # [M, N/M, ...]; ppo.learn's per-epoch gather (private)
        return ppo.minibatches(batch, key, config, None)

    log(f"PPO learner, {seeds} seeds: XLA cost analysis of the pieces")
    keys = jax.random.split(jax.random.PRNGKey(1), seeds)
    minibatch = jax.jit(jax.vmap(lambda b, k: jax.tree.map(lambda x: x[0], shuffle(b, k))))(
        batches, keys)
    piece = dict(
        shuffle=xla_flops(jax.vmap(shuffle), batches, keys),
        forward=xla_flops(jax.vmap(forward), learners, minibatch),
        forward_backward=xla_flops(jax.vmap(forward_backward), learners, minibatch),
        update=xla_flops(jax.vmap(update), learners, minibatch),
    )
    learn = jax.vmap(lambda learner, batch: ppo.learn(learner, batch, config))
    learn_once = xla_flops(learn, learners, batches)  # loops counted once: the check

    # Timing variants: ppo.learn's loop structure with less inside.
    def looped(step):
        def run(learner, batch):
            def epoch(acc, key):
                def inner(acc, mb):
                    return acc + step(learner, mb), None
                return jax.lax.scan(inner, acc, shuffle(batch, key))[0], None
            keys = jax.random.split(learner.key, epochs)
            return jax.lax.scan(epoch, jnp.zeros(()), keys)[0]
        return jax.vmap(run)

    shuffle_flops = epochs * piece["shuffle"]
    steps = epochs * minibatches
    # kind: "base" (the first of a chain), "adds" (the previous variant + one part),
    # "learner" (the chain's last: the learner itself).
    variants = [
        ("shuffle alone (the minibatch gather)", "base", looped(lambda lr, mb: leaf_sum(mb)),
         shuffle_flops),
        ("+ forward (loss)", "adds", looped(forward), shuffle_flops + steps * piece["forward"]),
        ("+ backward (gradient)", "adds", looped(forward_backward),
         shuffle_flops + steps * piece["forward_backward"]),
        ("+ clipping and Adam = `ppo.learn`", "learner", learn,
         shuffle_flops + steps * piece["update"]),
    ]
    rows = []
    for label, kind, fn, flops in variants:
        log(f"PPO learner, {seeds} seeds: {label}")
        compile_s, seconds = timed(fn, learners, batches, repeats=repeats)
        rows.append(dict(variant=label, kind=kind, seconds=seconds, compile_s=compile_s,
                         flops=flops))
    env_steps = seeds * config.num_envs * config.rollout_steps
    return dict(
        name="PPO", seeds=seeds, rows=rows, pieces=piece, learn_flops_once=learn_once,
        per="env step", units=env_steps,
        program=f"`ppo.learn` ({epochs} epochs × {minibatches} minibatches of "
                f"{config.num_envs * config.rollout_steps // minibatches}) on one "
                f"{config.num_envs}×{config.rollout_steps} batch, vmapped over {seeds} seeds",
        check=f"cost analysis of the `ppo.learn` program itself (loops counted once): "
              f"{learn_once / 1e6:,.2f} MFLOP; shuffle + one minibatch step: "
              f"{(piece['shuffle'] + piece['update']) / 1e6:,.2f} MFLOP",
    )


# ----------------------------------------------------------------------------- DQN


def dqn_learner(seeds: int, updates: int, repeats: int) -> dict:
    hp = dict(bench_dqn.SHARED, total_steps=bench_dqn.MODES["full"]["total_steps"])
    config = bench_dqn.minirl_config(hp)
    env, env_params = envs.make(hp["env_id"])
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    states = jax.jit(jax.vmap(dqn.init, in_axes=(0, None, None, None)), static_argnums=2)(
        keys, config, env, env_params)

    def fill(state, env_params):  # learning_starts env steps (no updates before them)
        return jax.lax.scan(lambda s, _: dqn.step(s, config, env, env_params), state,
                            length=config.learning_starts)[0]

    log(f"DQN: filling {seeds} replay buffers with {config.learning_starts:,} steps")
    states = jax.jit(jax.vmap(fill, in_axes=(0, None)))(states, env_params)
    learners, buffers = states.learner, states.buffer
    sample_keys = jax.vmap(lambda k: jax.random.split(k, updates))(
        jax.random.split(jax.random.PRNGKey(1), seeds))  # [S, U]
    batches = jax.jit(jax.vmap(jax.vmap(lambda buf, k: dqn.sample_batch(buf, k, config),
                                        in_axes=(None, 0))))(buffers, sample_keys)
    one_batch = jax.tree.map(lambda x: x[:, 0], batches)
    grad_fn = jax.value_and_grad(dqn.loss_fn, has_aux=True)

    def forward(learner, batch):
        return dqn.loss_fn(learner.params, learner.target_params, batch, config)[0]

    def forward_backward(learner, batch):
        (loss, _), grads = grad_fn(learner.params, learner.target_params, batch, config)
        return loss + leaf_sum(grads)

    def learn(learner, batch):
        return dqn.learn(learner, batch, config)

    def sample(buffer, key):
        return dqn.sample_batch(buffer, key, config)

    log(f"DQN learner, {seeds} seeds: XLA cost analysis of the pieces")
    piece = dict(
        forward=xla_flops(jax.vmap(forward), learners, one_batch),
        forward_backward=xla_flops(jax.vmap(forward_backward), learners, one_batch),
        learn=xla_flops(jax.vmap(learn), learners, one_batch),
        sample=xla_flops(jax.vmap(sample), buffers, sample_keys[:, 0]),
    )

    def over_batches(step):  # U steps with a fixed learner, one sampled batch each
        def run(learner, batches):
            return jax.lax.scan(lambda acc, b: (acc + step(learner, b), None), jnp.zeros(()),
                                batches)[0]
        return jax.vmap(run)

    def learn_scan(learner, batches):  # U updates, the learner carried
        return jax.lax.scan(lambda lr, b: learn(lr, b), learner, batches)

    def sample_scan(buffer, keys):
        return jax.lax.scan(lambda acc, k: (acc + leaf_sum(sample(buffer, k)), None),
                            jnp.zeros(()), keys)[0]

    def sample_learn_scan(learner, buffer, keys):  # what dqn.step's update does
        return jax.lax.scan(lambda lr, k: learn(lr, sample(buffer, k)), learner, keys)

    # kind: as in ppo_learner, and "alone" (a part timed by itself), "total" (the sum of
    # the learner and the parts alone, timed together)
    variants = [
        ("forward (loss, online and target networks)", "base", over_batches(forward),
         (learners, batches), piece["forward"]),
        ("+ backward (gradient)", "adds", over_batches(forward_backward), (learners, batches),
         piece["forward_backward"]),
        ("+ clipping, Adam, target update = `dqn.learn`", "learner", jax.vmap(learn_scan),
         (learners, batches), piece["learn"]),
        ("replay sampling alone (`dqn.sample_batch`)", "alone", jax.vmap(sample_scan),
         (buffers, sample_keys), piece["sample"]),
        ("sampling + `dqn.learn` (an update of `dqn.step`)", "total",
         jax.vmap(sample_learn_scan), (learners, buffers, sample_keys),
         piece["sample"] + piece["learn"]),
    ]
    rows = []
    for label, kind, fn, args, flops in variants:
        log(f"DQN learner, {seeds} seeds × {updates} updates: {label}")
        compile_s, seconds = timed(fn, *args, repeats=repeats)
        rows.append(dict(variant=label, kind=kind, seconds=seconds / updates,
                         compile_s=compile_s, flops=flops))
    return dict(
        name="DQN", seeds=seeds, rows=rows, pieces=piece, per="update of one seed",
        units=seeds,
        program=f"`dqn.learn` (one update, batch {config.batch_size}), vmapped over {seeds} "
                f"seeds; times per update, from a `lax.scan` of {updates} updates",
        check=None,
    )


# ----------------------------------------------------------------------------- report


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def the_learner(result: dict) -> dict:
    return next(r for r in result["rows"] if r["kind"] == "learner")


def parts(result: dict) -> list[dict]:
    """Per variant: the part it adds (time, FLOPs) — the difference to the previous variant
    of its chain for "adds" and "learner", itself for "base" and "alone", none for "total"."""
    out, previous = [], None
    for r in result["rows"]:
        if r["kind"] in ("adds", "learner") and previous is not None:
            out.append(dict(seconds=r["seconds"] - previous["seconds"],
                            flops=r["flops"] - previous["flops"]))
        elif r["kind"] == "total":
            out.append(None)
        else:
            out.append(dict(seconds=r["seconds"], flops=r["flops"]))
        if r["kind"] in ("base", "adds", "learner"):
            previous = r
    return out


def learner_table(result: dict, peak: float) -> list[str]:
    """The variants with their time, the time of the part each adds, and the rates."""
    unit = "per learn call" if result["name"] == "PPO" else "per update (all seeds)"
    learner_s = the_learner(result)["seconds"]
    lines = [
        f"| variant | ms {unit} | part added (ms) | part's share of the learner | MFLOP | "
        "GFLOP/s | % of peak | part's GFLOP/s | part's % of peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r, part in zip(result["rows"], parts(result)):
        rate = r["flops"] / r["seconds"]
        part_cells = ["—", "—", "—", "—"]
        if part is not None:
            part_cells[0] = f"{part['seconds'] * 1e3:,.3f}"
            if part["seconds"] > 0:
                part_rate = part["flops"] / part["seconds"]
                part_cells[1:] = [pct(part["seconds"] / learner_s), f"{part_rate / 1e9:,.2f}",
                                  pct(part_rate / peak)]
        cells = [r["variant"], f"{r['seconds'] * 1e3:,.3f}", *part_cells[:2],
                 f"{r['flops'] / 1e6:,.2f}", f"{rate / 1e9:,.2f}", pct(rate / peak),
                 *part_cells[2:]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(report: dict) -> str:
    peak = report["peak"]
    out = ["# The real limit: learner FLOP rates against the matmul peak", ""]
    if report["quick"]:
        out += ["> **Quick mode (smoke test).** Small sizes, numbers are noise: do not quote "
                "them.", ""]
    out += [
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; {report['cpu']}, nproc {report['nproc']}, JAX backend "
        f"`{report['backend']}`, jax {jax.__version__}; load average {report['load_start']} "
        f"at the start, {report['load_end']} at the end; this run took "
        f"{report['wall_s']:.0f} s",
        "",
        "## Peak",
        "",
        f"One jitted float32 matmul {peak['n']}×{peak['n']} @ {peak['n']}×{peak['n']}: "
        f"2·n³ = {peak['flops'] / 1e9:,.2f} GFLOP (XLA's cost analysis says "
        f"{peak['xla_flops'] / 1e9:,.2f}) in {peak['seconds'] * 1e3:,.1f} ms (median): "
        f"**{peak['rate'] / 1e9:,.2f} GFLOP/s**.",
        "",
        "## Learners",
        "",
        "| learner | program | MFLOP per call | ms per call | GFLOP/s | % of peak | "
        "FLOPs per … |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for result in report["learners"]:
        if "error" in result:
            out.append(f"| {result['name']} | failed: {result['error']} | | | | | |")
            continue
        full = the_learner(result)
        rate = full["flops"] / full["seconds"]
        per = full["flops"] / result["units"]
        out.append(
            f"| {result['name']} | {result['program']} | {full['flops'] / 1e6:,.2f} "
            f"| {full['seconds'] * 1e3:,.3f} | {rate / 1e9:,.2f} | **{pct(rate / peak['rate'])}** "
            f"| {per / 1e6:,.3f} MFLOP per {result['per']} |"
        )
    out += ["", f"For comparison, {ISSUE}.", ""]
    for line in report["verdicts"]:
        out.append(f"- {line}")
    for result in report["learners"]:
        if "error" in result:
            continue
        out += [
            "",
            f"## Where the {result['name']} learner's time goes",
            "",
            *learner_table(result, peak["rate"]),
            "",
            "*part added*: this variant's time minus the previous one's (forward, backward, "
            "the optimiser); its FLOPs over that time is the part's own rate. Noise can make "
            "a small part negative (shown as —).",
        ]
        if result.get("check"):
            out += ["", f"Check: {result['check']}."]
    out.append("")
    return "\n".join(out)


def verdicts(report: dict) -> list[str]:
    lines = []
    peak = report["peak"]["rate"]
    for result in report["learners"]:
        if "error" in result:
            continue
        full = the_learner(result)
        share = full["flops"] / full["seconds"] / peak
        text = f"{result['name']} learner at {pct(share)} of peak"
        if result["name"] == "PPO":
            per = full["flops"] / result["units"] / 1e6
            verdict = "meets" if share >= TARGET else "misses"
            text += (f" ({verdict} the ≥ {TARGET:.0%} aim; {per:.2f} MFLOP per env step "
                     "against the issue's ≈ 0.43)")
        candidates = [
            (part["seconds"] / full["seconds"], r["variant"].lstrip("+ ").split(" = ")[0],
             part["flops"] / part["seconds"] / peak)
            for r, part in zip(result["rows"], parts(result))
            if part is not None and part["seconds"] > 0
            and r["kind"] in ("base", "adds", "learner")
        ]
        if candidates:
            share_t, name, part_peak = max(candidates)
            text += (f"; its largest part is {name}: {pct(share_t)} of the learner's time, "
                     f"at {pct(part_peak)} of peak")
        lines.append(text)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: ppo,dqn")
    parser.add_argument("--output", type=Path,
                        help="markdown file to write (default: the flops section of "
                             "benchmarks/RESULTS.md; with --quick a file in the temporary "
                             "directory)")
    args = parser.parse_args()
    mode = MODES["quick" if args.quick else "full"]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    output = args.output or (
        Path(os.environ.get("TMPDIR", "/tmp")) / "minirl-bench-quick" / "RESULTS_flops.md"
        if args.quick else HERE / "RESULTS.md"
    )
    started = time.perf_counter()
    report = dict(
        quick=args.quick, mode=mode,
        command=shlex.join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=bench_dqn.cpu_model(), nproc=os.cpu_count(),
        backend=f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
        load_start=" ".join(f"{x:.2f}" for x in os.getloadavg()), learners=[],
    )
    log(f"peak: {mode['matmul']}² float32 matmul")
    report["peak"] = matmul_peak(mode["matmul"], mode["matmul_repeats"])
    if "ppo" not in skip:
        try:
            report["learners"].append(ppo_learner(mode["ppo_seeds"], mode["repeats"]))
        except Exception as error:  # keep going: the table says what failed
            report["learners"].append(dict(name="PPO", error=bench_dqn.last_line(repr(error))))
    if "dqn" not in skip:
        try:
            report["learners"].append(
                dqn_learner(mode["dqn_seeds"], mode["dqn_updates"], mode["repeats"]))
        except Exception as error:
            report["learners"].append(dict(name="DQN", error=bench_dqn.last_line(repr(error))))
    report["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report["wall_s"] = time.perf_counter() - started
    report["verdicts"] = verdicts(report)
    bench_dqn.write_report(report, render(report), output, "flops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
