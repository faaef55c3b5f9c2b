"""One file per algorithm, each with the contract Config / Learner / State / init / learn /
step / train / act (see docs/design.md)."""

from . import ddpg, dqn, naf, ppo, qt_opt, sac, soft_q, td3, trpo

ALGORITHMS = {
    "dqn": dqn,
    "ppo": ppo,
    "trpo": trpo,
    "qt_opt": qt_opt,
    "naf": naf,
    "ddpg": ddpg,
    "td3": td3,
    "soft_q": soft_q,
    "sac": sac,
}
