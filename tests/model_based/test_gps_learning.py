"""Learning tests for guided policy search (4 seeds, median; one jitted program, seeds
vmapped), with the presets the CLI uses.

What is and is not met (measured 2026-12-07, 2 CPU cores, first seed 100 for tuning):
- From the conditions it was trained on, the global network does what the local LQR-FLM
  controllers do: on Reacher-misc its return is 53.1 where theirs is 52.2 (tested below).
- From the env's own random starts, the issue's bar (Pendulum-v1 ≥ −250, goal −200) is
  **not met**: −1345.9 [−1372.3, −1319.5, −1313.2, −1470.9] (−1361.0 from first seed 0,
  −1322.4 from 1000), because the local controllers
  it learns from do not swing the pendulum up (LQR-FLM's xfail test); the test below is
  xfail(strict). On Reacher-misc (random goals) the global policy scores 22.0 from random
  starts, near the initial policy's 14 to 18: four conditions do not teach it goals it has
  not seen.
"""

import numpy as np
import pytest

from minirl.model_based import gps
from tests.algos.learning import final_returns, train_preset

pytestmark = [pytest.mark.learning, pytest.mark.timeout(600)]


def test_gps_global_policy_follows_the_local_controllers_on_reacher():
    """Reacher-misc, the preset (20 iterations, 40,000 real steps): from the conditions the
    global network's return (mean of the last 2 iterations) is at least 90 % of the local
    controllers', and theirs is 1.5 times the first iteration's. Medians measured
    2026-12-07 (global / local / first iteration / global from random starts): 53.1 / 52.2
    from first seed 100 (tuning), 48.4 / 49.9 / 16.6 / 22.8 from 0, 24.1 / 24.1 / 14.0 /
    23.0 from 1000."""
    config, _, metrics = train_preset(gps, "Reacher-misc")
    last = max(1, config.num_iterations // 10)
    local = np.asarray(metrics["local_return"][:, -last:]).mean(axis=1)
    global_ = np.asarray(metrics["condition_return"][:, -last:]).mean(axis=1)
    first = np.asarray(metrics["condition_return"][:, 0])
    print(f"gps Reacher-misc: global from the conditions {np.round(global_, 1)}, local "
          f"{np.round(local, 1)}, first iteration {np.round(first, 1)}, from random starts "
          f"{np.round(final_returns(metrics, config.num_iterations), 1)}")
    assert np.median(global_) >= 0.9 * np.median(local), (global_, local)
    assert np.median(local) >= 1.5 * np.median(first), (local, first)


@pytest.mark.slow  # a record of an unmet bar (see the module doc), not a guard
@pytest.mark.xfail(strict=True, reason="the local controllers do not swing Pendulum up "
                   "(module doc)")
def test_gps_global_policy_swings_pendulum_up_from_random_starts():
    config, _, metrics = train_preset(gps, "Pendulum-v1")
    finals = final_returns(metrics, config.num_iterations)
    print(f"gps Pendulum-v1 from random starts: {np.round(finals, 1)}")
    assert np.median(finals) >= -250.0, finals
