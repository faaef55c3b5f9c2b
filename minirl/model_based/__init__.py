"""Model-based RL: learn the dynamics, plan through them, know when the model does not know.

- ``dynamics.py``: deterministic and probabilistic ensembles and a Bayesian network that
  predict s' − s (and r), fitted in one vmapped program;
- ``model_env.py``: a learned model behind the gymnax interface, so planners and rollout
  code step it unchanged; ``rewards.py``: rewards and terminations known as functions;
- learners with the algorithm contract (``minirl train NAME``): ``pets`` (MPC on an
  ensemble, trajectory sampling; the plain MBRL loop as a special case) and ``planet``
  (a latent state-space model learned from pixels, CEM in latent space).
"""

from . import pets, planet

LEARNERS = {"pets": pets, "planet": planet}
