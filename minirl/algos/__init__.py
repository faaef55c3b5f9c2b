"""One file per algorithm, each with the contract Config / State / init / learn / step /
train / act (see DESIGN.md)."""

from minirl.algos import dqn, ppo, trpo

ALGORITHMS = {"dqn": dqn, "ppo": ppo, "trpo": trpo}
