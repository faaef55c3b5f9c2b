"""Learning tests: each algorithm reaches a stated return on a small budget, median over
seeds, with the same configuration the CLI uses (defaults + the documented preset).

The final return of a seed is the mean return of the training episodes completed in the
last 10% of its env steps — the number ``minirl train`` reports as ``final_returns``.
"""

import jax
import numpy as np
import pytest

from minirl.algos import dqn

pytestmark = [pytest.mark.learning, pytest.mark.timeout(1500)]


def final_returns(metrics, num_iterations: int) -> np.ndarray:
    last = max(1, num_iterations // 10)
    episodes = np.asarray(metrics["episodes"][:, -last:]).sum(axis=1)
    returns = np.asarray(metrics["episode_return_sum"][:, -last:]).sum(axis=1)
    return returns / np.maximum(episodes, 1)


def train_seeds(config, seeds: int, first_seed: int = 0) -> np.ndarray:
    keys = jax.random.split(jax.random.PRNGKey(first_seed), seeds)
    _, metrics = jax.jit(jax.vmap(dqn.train, in_axes=(0, None)))(keys, config)
    return final_returns(metrics, config.num_iterations)


@pytest.mark.parametrize("double_q", [False, True], ids=["dqn", "double-dqn"])
def test_dqn_solves_cartpole_in_100k_steps(double_q):
    config = dqn.Config(
        **{**dqn.preset("CartPole-v1"), "env_id": "CartPole-v1", "total_steps": 100_000,
           "double_q": double_q}
    )
    finals = train_seeds(config, seeds=4)
    print(f"double_q={double_q}: final returns {np.round(finals, 1)}")
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
    config = dqn.Config(**{**dqn.preset(env_id), "env_id": env_id})
    finals = train_seeds(config, seeds=4)
    print(f"{env_id}: final returns {np.round(finals, 2)}")
    assert np.median(finals) >= target, finals
