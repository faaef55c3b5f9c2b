"""Learning tests for BPTT on Pendulum-v1 (4 seeds, median; one jitted program, seeds
vmapped: tests/algos/learning.train_seeds), with the preset the CLI uses (5k real steps).
The final return of a seed is the mean return of its training episodes (μ(s) plus the
exploration noise) completed in the last 10% of its real env steps.

Through the true Pendulum (``model="true"``, the env's own differentiable step) the target
is −200; through a learned ensemble refitted on the real data (``model="learned"``) −250,
within the issue's 10k real steps (the preset uses 5k).

Medians measured (4 seeds each; 2026-12-07, 2 shared CPU cores), first seeds 100 (tuning),
0 (this test), 1000: true −124.5, −116.3 [−62.1, −114.6, −178.4, −117.9], −173.2 (about 1
minute a run); learned −119.2 [−66.2, −118.7, −176.8, −119.7] and −160.4 [−467.7, −198.2,
−122.5, −118.5] from first seeds 0 and 1000 (about 4 minutes a run; from first seed 100 at
10k steps −225.7: the returns peak near 5k).
"""

import numpy as np
import pytest

from minirl import envs
from minirl.model_based import bptt
from tests.algos.learning import train_seeds

pytestmark = [pytest.mark.learning, pytest.mark.timeout(900)]


@pytest.mark.parametrize(
    "model, target", [pytest.param("true", -200.0, marks=pytest.mark.slow), ("learned", -250.0)])
def test_bptt_learns_pendulum(model, target):
    env, env_params = envs.make("Pendulum-v1")
    config = bptt.Config(**{**bptt.preset("Pendulum-v1"), "model": model})
    assert config.total_steps <= 10_000
    finals = train_seeds(bptt, config, env, env_params)
    print(f"bptt model={model} Pendulum-v1 {config.total_steps}: final returns "
          f"{np.round(finals, 1)}")
    assert np.median(finals) >= target, finals
