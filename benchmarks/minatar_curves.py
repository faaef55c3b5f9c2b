"""Breakout-MinAtar: minirl's presets beside a published curve.

    python benchmarks/minatar_curves.py RUN_DIR [RUN_DIR ...] --out docs/minatar_breakout.png

Each RUN_DIR is a finished ``minirl train ... --env Breakout-MinAtar`` run (its
``metrics.csv``: the mean training return of each chunk, per seed). The published curve is
gymnax-blines' PPO agent for Breakout-MinAtar (R. T. Lange, github.com/RobertTLange/
gymnax-blines, ``agents/Breakout-MinAtar/ppo.pkl``, commit 3f029d6, April 2023): its
``log_steps`` / ``log_return``, the mean return of 164 evaluation episodes of the
stochastic policy every 320k steps, one seed, trained with 64 envs × 128 steps, 4 epochs,
8 minibatches, γ = 0.999, learning rate 5e-4, for 10M steps. The values below are read from
that file (every other point; the full series has 31). The two are not measured the same way:
minirl's curve is the return of the training episodes (ε-greedy for DQN, sampled actions for
PPO), gymnax-blines' is separate evaluation episodes; both are of the acting policy.
"""

import argparse
import sys

import numpy as np

from minirl import results
from minirl.compare import load

GYMNAX_BLINES_PPO = (  # (env steps, mean return), agents/Breakout-MinAtar/ppo.pkl
    (0.32e6, 8.4), (0.96e6, 16.6), (1.60e6, 16.0), (2.24e6, 16.3), (2.88e6, 15.6),
    (3.52e6, 14.9), (4.16e6, 17.9), (4.80e6, 22.0), (5.44e6, 22.5), (6.08e6, 23.0),
    (6.72e6, 23.0), (7.36e6, 22.9), (8.00e6, 23.3), (8.64e6, 23.0), (9.28e6, 23.5),
    (9.92e6, 22.9),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="minirl run directories")
    parser.add_argument("--out", default="minatar_breakout.png")
    args = parser.parse_args(argv)
    plt = results.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.4), dpi=120)
    for directory in args.runs:
        for line in load(directory):
            mean = np.nanmean(line.curves, axis=0)
            drawn = ax.plot(line.steps, mean, lw=2.0,
                            label=f"minirl {line.label} (mean of {len(line.curves)} seeds)")
            for curve in line.curves:
                ax.plot(line.steps, curve, lw=0.6, alpha=0.45, color=drawn[0].get_color())
            print(f"{line.label}: final returns {np.round(line.finals, 1).tolist()} "
                  f"at {int(line.steps[-1]):,} steps")
    steps, returns = np.array(GYMNAX_BLINES_PPO).T
    ax.plot(steps, returns, "k--", lw=1.6, label="gymnax-blines PPO (published, 1 seed)")
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("episode return")
    ax.set_title("Breakout-MinAtar")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    results.save_figure(fig, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
