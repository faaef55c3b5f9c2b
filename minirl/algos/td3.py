"""Twin delayed DDPG (TD3): DDPG with clipped double Q, target-policy smoothing and a delayed
actor (Fujimoto et al., 2018, "Addressing function approximation error in actor-critic
methods").

The algorithm is ``minirl.algos.ddpg`` (the equations are in its docstring); this module only
changes the defaults of its three switches:

    clipped_double_q = True     y = r + γ(1 − terminated) min(Q_φ̄1, Q_φ̄2)(s', ã')   (eq. 10)
    target_noise = 0.2          ã' = clip(μ_θ̄(s') + clip(ε, −0.5, 0.5), −1, 1)      (eq. 14)
    policy_delay = 2            actor and targets move every second update

Every function is DDPG's; ``Config`` is DDPG's with these defaults, so a config written for
one trains with the other's code and the CLI lists both names.
"""

from typing import Any

import equinox as eqx

from . import ddpg
from .ddpg import ACTION_KIND, Actor, Learner, State, act, init, learn, step, train

__all__ = ["ACTION_KIND", "Actor", "Config", "Learner", "PRESETS", "State", "act", "init",
           "learn", "preset", "step", "train"]


class Config(ddpg.Config):
    """DDPG's hyperparameters with TD3's defaults for the three switches."""

    clipped_double_q: bool = eqx.field(static=True, default=True)
    target_noise: float = 0.2
    policy_delay: int = 2


PRESETS: dict[str, dict[str, Any]] = {
    # Checked by tests/algos/test_continuous_learning.py (Pendulum, 20k, ≥ −200: medians
    # −148.4 / −154.2 / −145.9 from first seeds 1 (tuning), 0 (the test) and 1000).
    # Anything not listed uses Config defaults.
    # Pendulum: γ = 0.98 as in rl-baselines3-zoo; 64×64 networks keep the 20k-step learning
    # test within minutes on a CPU (4 variants × 4 seeds: median −148 with γ = 0.98, −175
    # with 0.99, −168 with lr 3e-4, −150 with exploration noise 0.2).
    "Pendulum-v1": dict(total_steps=20_000, hidden=(64, 64), gamma=0.98),
}


def preset(env_id: str) -> dict[str, Any]:
    """Documented per-environment overrides of the defaults (``{}`` if none)."""
    return dict(PRESETS.get(env_id, {}))


CANNOT_LEARN: dict[str, str] = {
    # MountainCarContinuous is an exploration problem: +100 at the flag, −0.1 a² per step,
    # and a policy that holds still earns about 0. Measured with 4 seeds from first seed
    # 100 at 50k steps, 64×64 networks, as a user would run it (no preset): the default
    # noise left every seed holding still (median −1.04; DDPG −1.01, and with σ = 1.0 one
    # seed of 4 at the flag). PPO's and TRPO's presets learn it (90.3 and 93.9 from first
    # seed 1000).
    "MountainCarContinuous-v0": "exploration: Gaussian action noise finds the flag on 0 of "
                                "4 seeds in 50k steps; use ppo or trpo",
}
"""Environments this learner was measured not to learn, and why (``minirl list`` marks them)."""
