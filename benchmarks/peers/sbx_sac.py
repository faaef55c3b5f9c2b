"""sbx SAC (the JAX port of Stable-Baselines3) on Pendulum-v1 with the benchmark's shared
hyperparameters; prints one JSON line.

Runs inside benchmarks/.venv-sbx (requirements-sbx.txt), started by bench_sac.py:

    python sbx_sac.py --config '<json>' --seeds 4 --threads 1

sbx keeps SB3's interface (a Python loop over env steps, SB3's replay buffer) with jitted
JAX updates, so it runs exactly as sb3_sac.py does (see there): ``--seeds N`` is N
concurrent processes, timed from the first ``learn`` start to the last ``learn`` end. Each
process first compiles sbx's programs by running its model a few steps past one update, then
restores the model as it was built (``warm_up`` in sb3_sac.py; reported as the compile time,
excluded from the run). ``--threads`` sets torch's threads (SB3's buffer); JAX keeps its
default CPU threads.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sb3_sac import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("sbx"))
