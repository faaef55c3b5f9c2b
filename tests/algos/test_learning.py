"""DQN learning tests: each variant reaches a stated return on a small budget, median over
4 seeds, with the configuration the CLI uses (defaults + the documented preset).

The final return of a seed is the mean return of the training episodes completed in the
last 10% of its env steps — the number ``minirl train`` reports as ``final_returns``.
"""

import numpy as np
import pytest

from minirl import envs
from minirl.algos import dqn
from tests.algos.learning import train_seeds

pytestmark = [pytest.mark.learning, pytest.mark.timeout(1500)]


# Plain DQN (the max over the target network) is less steady than double DQN: at the
# preset's learning rate (5e-4, tuned for double DQN) 5 of 24 seeds ended below 475, late
# collapses (first seeds 1, 2, 3, 1000 and 0; from first seed 0 the median was 467.0). At
# 2.5e-4, 1 of 32 seeds did (first seeds 1, 2, 3, 4 for tuning; then 0 and 1000: medians 500
# and 500). Double DQN keeps 5e-4: at 2.5e-4 it lost 2 of 16 seeds.
@pytest.mark.parametrize(
    "variant",
    [pytest.param(dict(double_q=False, learning_rate=2.5e-4), marks=pytest.mark.slow),
     dict(double_q=True)],
    ids=["dqn", "double-dqn"],
)
def test_dqn_solves_cartpole_in_100k_steps(variant):
    env, env_params = envs.make("CartPole-v1")
    config = dqn.Config(**{**dqn.preset("CartPole-v1"), "total_steps": 100_000, **variant})
    assert config.n_step == 3
    finals = train_seeds(dqn, config, env, env_params)
    print(f"{variant}: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= 475, finals


# The off-policy corrections of the 3-step return learn CartPole but do not solve it
# (≥ 475) from every first seed in these budgets, so their thresholds are lower; the
# medians measured (4 seeds each, first seeds 1 = tuning, 0 = this test, 1000):
#   Retrace, ε_π = 0.05, 100k:              500,   500,   462.7
#   Watkins's cut, 150k, 20k buffer:        485.4, 396.6, 495.6
# (2026-11-25; with the packages of 2026-12-03 first seed 0 gave 500 and 464.9).
# A random policy scores about 22; a broken target fails these thresholds.
@pytest.mark.parametrize(
    "variant, steps, target",
    [
        # Retrace with an ε-greedy target policy (ε_π = 0.05): with a greedy π its traces
        # min(1, π/μ) are exactly Watkins's cut.
        pytest.param(dict(off_policy_correction="importance", target_epsilon=0.05), 100_000,
                     400.0, marks=pytest.mark.slow),
        # The cuts make the target closer to a one-step one, so it gets 150k steps, and a
        # 20k buffer keeps the stored actions close to the current greedy ones.
        pytest.param(dict(off_policy_correction="cut", buffer_size=20_000), 150_000, 350.0,
                     marks=pytest.mark.slow),
    ],
    ids=["3-step-retrace", "3-step-cut"],
)
def test_off_policy_corrected_3_step_dqn_learns_cartpole(variant, steps, target):
    env, env_params = envs.make("CartPole-v1")
    config = dqn.Config(**{**dqn.preset("CartPole-v1"), "total_steps": steps, **variant})
    assert config.n_step == 3
    finals = train_seeds(dqn, config, env, env_params)
    print(f"{variant}: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= target, finals


@pytest.mark.parametrize(
    "env_id, target",
    [
        ("Catch-bsuite", 0.5),  # return in [−1, 1]: catching ≥ 75% of the balls
        # gym's "solved" threshold for Acrobot; outside the default suite, where the DQN
        # teacher of tests/test_distill_learning.py is this preset at 100k steps (one seed, ≥ −100)
        pytest.param("Acrobot-v1", -100.0, marks=pytest.mark.slow),
    ],
)
def test_dqn_preset_learns(env_id, target):
    """The documented presets learn without extra flags (budget: the preset's total_steps)."""
    env, env_params = envs.make(env_id)
    config = dqn.Config(**dqn.preset(env_id))
    finals = train_seeds(dqn, config, env, env_params)
    print(f"{env_id}: final returns {np.round(finals, 2)}")
    assert np.median(finals) >= target, finals
