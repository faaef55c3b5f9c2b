"""Model-based RL: learn the dynamics, plan through them, know when the model does not know.

- ``dynamics.py``: deterministic and probabilistic ensembles and a Bayesian network that
  predict s' − s (and r), fitted in one vmapped program; held-out losses and elites;
- ``model_env.py``: a learned model behind the gymnax interface, so planners and rollout
  code step it unchanged; ``rewards.py``: rewards and terminations known as functions;
- learners with the algorithm contract (``minirl train NAME``): ``pets`` (MPC on an
  ensemble, trajectory sampling; the plain MBRL loop as a special case), ``planet``
  (a latent state-space model learned from pixels, CEM in latent space), ``mbpo``
  (any off-policy learner trained on short model rollouts branched from real states) and
  ``bptt`` (a policy trained by backpropagating the return through a differentiable model:
  the env's own step or a learned ensemble), ``lqr_flm`` (time-varying linear-Gaussian
  controllers improved by LQR on locally fitted dynamics under a KL bound) and ``gps``
  (mirror-descent guided policy search: a global network trained from LQR-FLM controllers).
"""

from . import bptt, gps, lqr_flm, mbpo, pets, planet

LEARNERS = {"pets": pets, "planet": planet, "mbpo": mbpo, "bptt": bptt, "lqr_flm": lqr_flm,
            "gps": gps}
