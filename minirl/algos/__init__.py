"""One file per algorithm, each with the contract Config / Learner / State / init / learn /
step / train / act (see docs/design.md)."""

from . import dqn, ppo, trpo

ALGORITHMS = {"dqn": dqn, "ppo": ppo, "trpo": trpo}
