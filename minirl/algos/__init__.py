"""One file per algorithm, each with the contract Config / State / init / learn / step /
train / act (see DESIGN.md)."""

from minirl.algos import dqn

ALGORITHMS = {"dqn": dqn}
