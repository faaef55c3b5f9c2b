"""Learning tests for MBPO (4 seeds, median; one jitted program, seeds vmapped:
tests/algos/learning.train_seeds), with the preset the CLI uses. The final return of a seed
is the mean return of its training episodes completed in the last 10% of its real env
steps, as ``minirl train`` reports.

The model-free learners of tests/algos need 20k real steps for −200 on Pendulum (SAC's
preset reaches a 5-episode mean of −200 after about 4k, README benchmarks); MBPO is asked
for −200 within 5k.

Medians measured (4 seeds each; 2026-12-07, 2 shared CPU cores, about 4 minutes a run),
first seeds 100 (tuning), 0 (this test), 1000: sac −141.8, −153.9, −165.7 with the
warm-up's first random actions drawn by a helper of mbpo's own; with rollout.random_policy
drawing them (other bits, same distribution): sac −134.9 [−119.1, −264.4, −150.2, −119.6]
and −172.8 [−128.6, −83.6, −216.9, −308.0], td3 −176.3 [−118.1, −233.4, −234.0, −119.2]
and −187.8 [−124.5, −87.1, −251.0, −276.6] from first seeds 0 and 1000.
"""

import numpy as np
import pytest

from minirl import envs
from minirl.model_based import mbpo
from tests.algos.learning import train_seeds

pytestmark = [pytest.mark.learning, pytest.mark.timeout(900)]


@pytest.mark.parametrize(
    "agent, target", [("sac", -200.0), pytest.param("td3", -250.0, marks=pytest.mark.slow)])
def test_mbpo_learns_pendulum_in_5k_real_steps(agent, target):
    env, env_params = envs.make("Pendulum-v1")
    config = mbpo.Config(**{**mbpo.preset("Pendulum-v1"), "agent": agent})
    assert config.total_steps <= 5_000
    finals = train_seeds(mbpo, config, env, env_params)
    print(f"mbpo {agent} Pendulum-v1 {config.total_steps}: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= target, finals


@pytest.mark.slow
def test_mbpo_with_the_true_env_learns_at_least_as_well_as_its_agent_alone():
    """``model="true"``: the rollouts are exact env transitions, so mbpo is its agent with
    more (and exact) data per real step; in the same 2,500 real steps it must do at least as
    well as that agent alone (SAC with its own Pendulum preset, the best-tuned SAC we have).
    Measured from first seed 100 (2026-12-07): mbpo true −125.0 [−230.4, −11.2, −120.5,
    −129.5], SAC alone −1058.1 [−900.9, −1064.5, −1083.3, −1051.7]; at 5k both are near −160
    (−159.4 / −160.9): by then SAC alone has caught up, so the test compares at 2.5k."""
    from minirl.algos import sac

    env, env_params = envs.make("Pendulum-v1")
    steps = 2_500
    config = mbpo.Config(**{**mbpo.preset("Pendulum-v1"), "model": "true",
                            "total_steps": steps})
    with_model = train_seeds(mbpo, config, env, env_params)
    alone = train_seeds(sac, sac.Config(**{**sac.preset("Pendulum-v1"), "total_steps": steps}),
                        env, env_params)
    print(f"Pendulum-v1 {steps} real steps: mbpo model=true {np.round(with_model, 1)}, "
          f"sac alone {np.round(alone, 1)}")
    assert np.median(with_model) >= np.median(alone), (with_model, alone)


@pytest.mark.slow
def test_mbpo_dqn_learns_cartpole_in_30k_real_steps():
    """``agent=dqn`` with 3-step windows on CartPole-v1 (the preset; DQN alone needs about
    100k real steps for 400, README's learning table)."""
    env, env_params = envs.make("CartPole-v1")
    config = mbpo.Config(**mbpo.preset("CartPole-v1"))
    assert config.agent == "dqn" and config.total_steps <= 30_000
    finals = train_seeds(mbpo, config, env, env_params)
    print(f"mbpo agent=dqn CartPole-v1 {config.total_steps}: final returns "
          f"{np.round(finals, 1)}")
    assert np.median(finals) >= 400.0, finals

