"""State-action critics Q(s, a) for continuous actions, and ensembles of them.

Unbatched: one observation ``[*obs_shape]`` and one action ``[D]`` in, a scalar out; callers
``vmap`` over batches. An ensemble of M critics is one module whose array leaves carry a
leading axis ``[M, ...]`` (built by ``nets.ensemble``, ``jax.vmap`` over M keys; also
reachable here as ``critics.ensemble``), applied with ``jax.vmap`` over that axis: twin
critics (Fujimoto et al., 2018) are ``size=2``.
"""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from .nets import MLP
from .nets import ensemble as ensemble  # one definition, in nets; re-exported for critics


class StateActionMLP(eqx.Module):
    """Q(s, a) = MLP([flatten(s), a]) → scalar."""

    net: MLP

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        hidden: Sequence[int],
        key: jax.Array,
        activation: Callable = jax.nn.relu,
    ):
        self.net = MLP(obs_size + action_size, 1, hidden, key, activation)

    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([jnp.ravel(obs).astype(jnp.float32), jnp.ravel(action)])
        return self.net(x)[0]


def apply_ensemble(critics: eqx.Module, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Every member's Q(s, a) for one (s, a): ``[size]``."""
    return eqx.filter_vmap(lambda c: c(obs, action))(critics)


def clipped_double_q(values: jax.Array) -> jax.Array:
    """min over the ensemble axis (first): Fujimoto et al. (2018, eq. 10), SAC's target."""
    return jnp.min(values, axis=0)


def apply_ensemble_batch(critics: eqx.Module, *inputs: jax.Array) -> jax.Array:
    """Every member on a batch: inputs with a leading batch axis ``[B, ...]`` in, ``[M, B, ...]``
    out. One call evaluates all M members (twin critics in one pass, members vmapped over
    their stacked weights). Works for Q(s, a) critics (``inputs = (obs, action)``) and for
    discrete critics s → Q(s, ·) (``inputs = (obs,)``, out ``[M, B, A]``)."""
    return eqx.filter_vmap(lambda member: jax.vmap(member)(*inputs))(critics)


def ensemble_size(critics: eqx.Module) -> int:
    """M, the leading axis of the ensemble's array leaves."""
    return jax.tree.leaves(eqx.filter(critics, eqx.is_array))[0].shape[0]


class ActorCritics(eqx.Module):
    """A user's networks for the actor-critic algorithms (SAC, DDPG/TD3): ``actor`` maps one
    observation to what the algorithm's docstring says, and ``critics`` is an ensemble built
    by ``nets.ensemble`` (array leaves ``[M, ...]``, M = the number of critics the algorithm's
    config asks for), each member mapping ``(obs, action)`` (continuous) or ``obs``
    (discrete) to Q-values."""

    actor: eqx.Module
    critics: eqx.Module

