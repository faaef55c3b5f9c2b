"""Learning test for PlaNet on pixel Pendulum-v1 (``envs.make("Pendulum-v1-pixels")``:
16×16 grayscale images, what ``minirl train planet --env Pendulum-v1-pixels`` trains on):
median over 4 seeds (one jitted program, seeds vmapped) of the final
return — the mean return of the training episodes completed in the last 10% of the env
steps, exploration noise included — with the configuration the CLI uses (defaults + the
documented preset). A random policy scores about −1200; we ask ≥ −700 after 10k env steps
(the issue's goal is −400, not reached at this size on a CPU budget).

Measured with the preset (4 seeds, 2 CPU cores shared with other jobs): first seed 0 (this
test) median −502.8 [−485.2, −520.4, −553.3, −462.7], 252 s wall. Before the Gaussian terms
moved to ``core.distributions.Normal`` (the same mathematics, other float rounding): first
seed 0 −510.4, first seed 2 (tuning) −528.6 [−606.7, −450.5, −431.2, −610.1], first seed
1000 −527.7 [−622.4, −700.8, −433.0, −411.4]. With learning_rate 1e-3 instead of 2e-3 the
medians were −686 (first seed 0) and −712 (first seeds 1, 1000). With the action repeat
as ``rollout.ActionRepeat`` and the policy's memory (2026-12-07; other random numbers, the
same algorithm): first seed 0 −565.9 [−636.2, −641.1, −450.3, −495.5], first seed 1000
−528.5 [−444.3, −741.6, −491.1, −565.8] (it was −527.7).
"""

import numpy as np
import pytest

from minirl import envs
from minirl.model_based import planet
from tests.algos.learning import train_seeds

pytestmark = [pytest.mark.learning, pytest.mark.timeout(1800)]


def test_planet_learns_pixel_pendulum():
    env, env_params = envs.make("Pendulum-v1-pixels")
    config = planet.Config(**planet.preset("Pendulum-v1-pixels"))
    finals = train_seeds(planet, config, env, env_params)
    print(f"planet pixel Pendulum-v1 {config.total_steps}: final returns {np.round(finals, 1)}")
    assert np.median(finals) >= -700.0, finals
