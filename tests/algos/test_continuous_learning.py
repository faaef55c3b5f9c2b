"""Learning tests for the continuous-action learners on Pendulum-v1: the stated return on a
small budget, median over 4 seeds (one jitted program, seeds vmapped), with the
configuration the CLI uses (defaults + the documented preset). The final return of a seed is
the mean return of the training episodes completed in the last 10% of its env steps —
exploration noise included — what ``minirl train`` reports as ``final_returns``.

rl-baselines3-zoo's agents reach −152 (DDPG), −152 (TD3) and −157 (SAC) after 20k steps
(deterministic evaluation); we ask ≥ −200 from the noisy training episodes of the last 2k of
20k steps. NAF and the sampled maximiser (QT-Opt) have no actor to follow the critic's
gradient and get 50k steps and ≥ −300. A random policy scores about −1200.
"""

import numpy as np
import pytest

from minirl import envs
from minirl.algos import ddpg, naf, qt_opt, sac, td3
from tests.algos.learning import train_seeds

pytestmark = [pytest.mark.learning, pytest.mark.timeout(1800)]


@pytest.mark.parametrize(
    "algo, steps, target",
    [(sac, 20_000, -200.0), (td3, 20_000, -200.0), (ddpg, 20_000, -200.0),
     (naf, 50_000, -300.0), (qt_opt, 50_000, -300.0)],
    ids=["sac", "td3", "ddpg", "naf", "qt_opt"],
)
def test_learns_pendulum(algo, steps, target):
    env, env_params = envs.make("Pendulum-v1")
    config = algo.Config(**{**algo.preset("Pendulum-v1"), "total_steps": steps})
    finals = train_seeds(algo, config, env, env_params)
    print(f"{algo.__name__} Pendulum-v1 {steps}: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= target, finals
