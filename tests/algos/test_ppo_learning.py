"""PPO learning tests: the stated return on a small budget, median over 4 seeds (one jitted
program, seeds vmapped), with the configuration the CLI uses (defaults + the documented
preset). The final return of a seed is the mean return of the training episodes completed
in the last 10% of its env steps — what ``minirl train`` reports as ``final_returns``."""

import numpy as np
import pytest

from minirl import envs
from minirl.algos import ppo
from tests.algos.learning import train_seeds

pytestmark = pytest.mark.learning


def preset_config(env_id: str, total_steps: int, **overrides) -> ppo.Config:
    return ppo.Config(**{**ppo.preset(env_id), "total_steps": total_steps, **overrides})


@pytest.mark.timeout(600)
def test_ppo_solves_cartpole_in_200k_steps():
    env, env_params = envs.make("CartPole-v1")
    finals = train_seeds(ppo, preset_config("CartPole-v1", 200_000), env, env_params)
    print(f"ppo CartPole-v1: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= 475, finals


@pytest.mark.timeout(900)
def test_ppo_gaussian_reaches_minus_200_on_pendulum_in_1m_steps():
    env, env_params = envs.make("Pendulum-v1")
    finals = train_seeds(ppo, preset_config("Pendulum-v1", 1_000_000), env, env_params)
    print(f"ppo Pendulum-v1: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= -200, finals


@pytest.mark.timeout(600)
def test_dual_ascent_solves_cartpole_in_300k_steps():
    env, env_params = envs.make("CartPole-v1")
    config = preset_config("CartPole-v1", 300_000, objective="lagrangian")
    finals = train_seeds(ppo, config, env, env_params)
    print(f"ppo (lagrangian, dual ascent) CartPole-v1: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= 475, finals
