"""Loss terms. Unbatched elementwise functions; callers reduce (mean) over a batch."""

import jax
import jax.numpy as jnp


def squared_loss(error: jax.Array) -> jax.Array:
    """½ x², the squared TD error."""
    return 0.5 * jnp.square(error)


def huber_loss(error: jax.Array, delta: float | jax.Array = 1.0) -> jax.Array:
    """Huber (1964): ½x² for |x| ≤ δ, δ(|x| − ½δ) outside; its gradient is clip(x, −δ, δ)."""
    abs_error = jnp.abs(error)
    quadratic = jnp.minimum(abs_error, delta)
    linear = abs_error - quadratic
    return 0.5 * jnp.square(quadratic) + delta * linear


def td_loss(error: jax.Array, kind: str, huber_delta: float | jax.Array = 1.0) -> jax.Array:
    """``kind`` is ``"huber"`` or ``"squared"``."""
    if kind == "huber":
        return huber_loss(error, huber_delta)
    if kind == "squared":
        return squared_loss(error)
    raise ValueError(f"loss={kind!r} is not allowed; choose one of 'huber', 'squared'")


def q_learning_target_value(
    next_q_target: jax.Array, next_q_online: jax.Array, double_q: bool
) -> jax.Array:
    """V̄(s') used by Q-learning targets, over the last (action) axis.

    DQN (Mnih et al., 2015): max_a Q_target(s', a).
    Double DQN (van Hasselt et al., 2016, eq. 4): Q_target(s', argmax_a Q_online(s', a)),
    which is ≤ the max pointwise and equal to it when online == target.
    """
    if double_q:
        greedy = jnp.argmax(next_q_online, axis=-1)
        return jnp.take_along_axis(next_q_target, greedy[..., None], axis=-1)[..., 0]
    return jnp.max(next_q_target, axis=-1)
