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


@pytest.mark.parametrize(
    "variant",
    [
        dict(double_q=False),
        dict(double_q=True),
        dict(off_policy_correction="cut"),
        dict(off_policy_correction="importance"),
    ],
    ids=["dqn", "double-dqn", "3-step-cut", "3-step-retrace"],
)
def test_dqn_solves_cartpole_in_100k_steps(variant):
    env, env_params = envs.make("CartPole-v1")
    config = dqn.Config(**{**dqn.preset("CartPole-v1"), "total_steps": 100_000, **variant})
    assert config.n_step == 3
    finals = train_seeds(dqn, config, env, env_params)
    print(f"{variant}: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= 475, finals


@pytest.mark.parametrize(
    "env_id, target",
    [
        ("Catch-bsuite", 0.5),  # return in [−1, 1]: catching ≥ 75% of the balls
        ("Acrobot-v1", -100.0),  # gym's "solved" threshold for Acrobot
    ],
)
def test_dqn_preset_learns(env_id, target):
    """The documented presets learn without extra flags (budget: the preset's total_steps)."""
    env, env_params = envs.make(env_id)
    config = dqn.Config(**dqn.preset(env_id))
    finals = train_seeds(dqn, config, env, env_params)
    print(f"{env_id}: final returns {np.round(finals, 2)}")
    assert np.median(finals) >= target, finals
