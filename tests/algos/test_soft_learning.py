"""Learning tests for the discrete maximum-entropy learners on CartPole-v1 within 200k env
steps, median over 4 seeds with the preset the CLI uses. The final return is the mean of the
training episodes of the last 10% of the run, sampled from the stochastic policy
(``minirl train``'s ``final_returns``). A random policy scores about 22.

Discrete SAC asserts the issue's target, ≥ 400: its preset (lr 1e-3) scored medians 500 from
first seeds 2 (tuning), 0 (this test), 1000 and 1 — all 16 seeds at 500.
Soft Q-learning asserts the issue's target, ≥ 475: its preset (double soft Q, 128×128,
soft 3-step returns) scored 500 in all 16 seeds of tuning first seeds 5 and 6 (8 seeds each)
and medians 500 from first seeds 0 (this test), 1 and 1000 — all 12 seeds at 500. With
one-step targets the medians were 456.8 from first seed 0 and 462.5 from 5 (8 seeds): Q
was still far from its fixed point (≈ 99.3) at 200k steps.
"""

import numpy as np
import pytest

from minirl import envs
from minirl.algos import sac, soft_q
from tests.algos.learning import train_seeds

pytestmark = [pytest.mark.learning, pytest.mark.timeout(1800)]


@pytest.mark.slow
@pytest.mark.parametrize("algo, target", [(soft_q, 475.0), (sac, 400.0)],
                         ids=["soft_q", "discrete-sac"])
def test_learns_cartpole_in_200k_steps(algo, target):
    env, env_params = envs.make("CartPole-v1")
    config = algo.Config(**{**algo.preset("CartPole-v1"), "total_steps": 200_000})
    finals = train_seeds(algo, config, env, env_params)
    print(f"{algo.__name__} CartPole-v1: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= target, finals


def test_soft_q_learns_acrobot_in_100k_steps():
    # The defaults (α = 1 throughout) scored −500 on every seed; the Acrobot preset (CartPole's
    # recipe: α annealed to 0.003, double Q, soft 3-step returns) scored medians −82.9 and
    # −86.5 from first seeds 100 (tuning) and 1000, and −90.0 here (first seed 0, 2026-12-07).
    env, env_params = envs.make("Acrobot-v1")
    config = soft_q.Config(**{**soft_q.preset("Acrobot-v1"), "total_steps": 100_000})
    finals = train_seeds(soft_q, config, env, env_params)
    print(f"soft_q Acrobot-v1: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= -100.0, finals
