"""What every replay-based learner does between collecting and learning: store the collected
steps in the buffer, then run K updates once the warm-up is over.

``store`` writes a ``[T, E]`` trajectory as ``T·E`` transitions in time-major order, so item
``i + E`` is the same environment one step later (what ``buffer.sample_sequences`` needs for
N-step windows). ``updates_after_warmup`` is one ``lax.cond``: before ``learning_starts`` the
K updates are skipped, not computed and masked, and the metrics are zeros of the same
structure, so every iteration of ``lax.scan`` has the same output shape.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import PyTree

from . import buffer as replay
from .rollout import Transition


def store(
    buffer: replay.ReplayBuffer, trajectory: Transition, keep_policy_info: bool = False
) -> replay.ReplayBuffer:
    """Append a collected trajectory (leaves ``[T, E, ...]``) as ``T·E`` transitions: obs,
    action, reward, the true next observation (``final_observation`` at an episode end),
    terminated and truncated; the behaviour policy's ``policy_info`` only if asked for."""
    stored = Transition(
        obs=trajectory.obs,
        action=trajectory.action,
        reward=trajectory.reward,
        next_obs=trajectory.next_obs,
        terminated=trajectory.terminated,
        truncated=trajectory.truncated,
        policy_info=trajectory.policy_info if keep_policy_info else None,
    )
    return replay.add(buffer, jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), stored))


def minibatches(
    buffer: replay.ReplayBuffer, key: jax.Array, num_batches: int, batch_size: int
) -> PyTree:
    """``num_batches`` uniform minibatches of ``batch_size`` items, drawn in one sample:
    leaves ``[num_batches, batch_size, ...]``."""
    items = replay.sample(buffer, key, num_batches * batch_size)
    return jax.tree.map(lambda x: x.reshape(num_batches, batch_size, *x.shape[1:]), items)


def updates_after_warmup(
    ready: jax.Array,
    learner: Any,
    update: Callable[[Any, PyTree], tuple[Any, dict[str, jax.Array]]],
    inputs: Callable[[], PyTree],
) -> tuple[Any, dict[str, jax.Array]]:
    """If ``ready``: ``lax.scan`` of ``update(learner, x)`` over ``inputs()`` (one update per
    leading index: K minibatches, or K keys to draw them with), metrics averaged over the K
    updates. Otherwise the learner unchanged and zero metrics. ``inputs`` is called inside
    the taken branch, so nothing is sampled during the warm-up."""

    def updates(learner: Any) -> tuple[Any, dict[str, jax.Array]]:
        learner, metrics = jax.lax.scan(update, learner, inputs())
        return learner, jax.tree.map(jnp.mean, metrics)

    def no_updates(learner: Any) -> tuple[Any, dict[str, jax.Array]]:
        return learner, jax.tree.map(jnp.zeros_like, jax.eval_shape(updates, learner)[1])

    return jax.lax.cond(ready, updates, no_updates, learner)
