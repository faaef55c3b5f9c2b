"""A fixed-capacity FIFO replay buffer that is a pytree.

The buffer holds ``capacity`` items (any pytree whose leaves share a leading axis).
``add`` writes a batch at the write position, wrapping around and evicting the oldest
items; it is a scatter into preallocated arrays, so under ``jit`` with the buffer donated
(or carried through ``lax.scan``) it updates in place and costs the same at any capacity.

``sample`` draws uniformly over written slots only. ``sample_sequences`` draws windows of
consecutive items ``i, i + stride, i + 2·stride, ...`` (with ``stride = E`` when each add
writes one time step of ``E`` parallel environments, so a window follows one environment
through time) together with a mask of which window items are written and not yet
overwritten by newer data — what N-step returns need.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PyTree


class ReplayBuffer(eqx.Module):
    data: PyTree  # leaves [capacity, ...]
    position: jax.Array  # int32 scalar: the next slot to write
    size: jax.Array  # int32 scalar: number of written slots (≤ capacity)

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]


def init(capacity: int, example: PyTree) -> ReplayBuffer:
    """An empty buffer for ``capacity`` items shaped like ``example`` (one item, no batch axis)."""
    if capacity < 1:
        raise ValueError(f"capacity={capacity} is out of range; allowed: integers ≥ 1")
    data = jax.tree.map(
        lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example
    )
    return ReplayBuffer(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(buffer: ReplayBuffer, batch: PyTree) -> ReplayBuffer:
    """Write ``batch`` (leaves ``[B, ...]``, B ≤ capacity) after the newest item (FIFO)."""
    capacity = buffer.capacity
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    if batch_size > capacity:
        raise ValueError(
            f"batch of {batch_size} items does not fit a buffer of capacity {capacity}"
        )
    slots = (buffer.position + jnp.arange(batch_size)) % capacity
    data = jax.tree.map(
        lambda store, new: store.at[slots].set(new.astype(store.dtype), unique_indices=True),
        buffer.data,
        batch,
    )
    return ReplayBuffer(
        data,
        (buffer.position + batch_size) % capacity,
        jnp.minimum(buffer.size + batch_size, capacity),
    )


def oldest_slot(buffer: ReplayBuffer) -> jax.Array:
    return (buffer.position - buffer.size) % buffer.capacity


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> PyTree:
    """``batch_size`` items drawn uniformly, with replacement, from the written slots.

    The buffer must hold at least one item (callers start learning after a warm-up).
    """
    offsets = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    slots = (oldest_slot(buffer) + offsets) % buffer.capacity
    return jax.tree.map(lambda store: store[slots], buffer.data)


def sample_sequences(
    buffer: ReplayBuffer, key: jax.Array, batch_size: int, length: int, stride: int = 1
) -> tuple[PyTree, jax.Array]:
    """Windows of ``length`` items ``i, i+stride, ...`` with ``i`` uniform over written slots.

    Returns ``(windows, valid)``: leaves ``[batch_size, length, ...]`` and a bool mask
    ``[batch_size, length]`` that is False for window items past the newest written item
    (their contents are stale and must not be used). ``valid[:, 0]`` is always True.
    """
    offsets = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    steps = offsets[:, None] + stride * jnp.arange(length)[None, :]
    valid = steps < buffer.size
    slots = (oldest_slot(buffer) + steps) % buffer.capacity
    windows = jax.tree.map(lambda store: store[slots], buffer.data)
    return windows, valid
