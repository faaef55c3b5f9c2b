"""TRPO learning test: ≥ 475 on CartPole-v1 within 300k env steps, median over 4 seeds,
with the configuration the CLI uses (defaults + the documented preset)."""

import numpy as np
import pytest

from minirl import envs
from minirl.algos import trpo
from tests.algos.learning import train_seeds

pytestmark = pytest.mark.learning


@pytest.mark.timeout(900)
def test_trpo_solves_cartpole_in_300k_steps():
    env, env_params = envs.make("CartPole-v1")
    config = trpo.Config(**{**trpo.preset("CartPole-v1"), "total_steps": 300_000})
    finals = train_seeds(trpo, config, env, env_params)
    print(f"trpo CartPole-v1: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= 475, finals
