"""The data axis: reductions over the devices that share one agent's batch.

When one agent trains data-parallel (``minirl.parallel.data_parallel``), its environments
are split over devices inside ``jax.shard_map`` and every device computes on its own slice
of the batch. Only a handful of numbers then need the whole batch: the gradient, and the
statistics a learner takes over the batch (advantage and observation normalisers, TRPO's
Fisher-vector products and line-search losses). Rather than thread an axis name through
every learner's ``step`` and ``learn``, ``data_parallel`` declares the mesh axis here while
it traces the step (:func:`over`), and those few reductions read it at trace time:

    with data_axis.over("envs"):          # what data_parallel does around the trace
        ... data_axis.mean(x) ...         # = jax.lax.pmean(x, "envs")

Outside such a block every function here is the identity (one device, or a vmap over
independent runs), so a learner's code is the same in both settings. The gradient average
is the first transformation of ``core.optim.adam_with_clipping``, so it belongs to the
optimiser, not to the algorithm.
"""

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import jax
import optax

_AXIS: contextvars.ContextVar[str | None] = contextvars.ContextVar("minirl_data_axis",
                                                                  default=None)


@contextlib.contextmanager
def over(axis: str) -> Iterator[None]:
    """Trace inside this block as one shard of a batch split over the named mesh axis."""
    token = _AXIS.set(axis)
    try:
        yield
    finally:
        _AXIS.reset(token)


def name() -> str | None:
    """The data axis being traced over, or None."""
    return _AXIS.get()


def mean(tree: Any) -> Any:
    """The mean over the data axis of per-shard values (equal-sized shards: the mean of the
    whole batch is the mean of the shards' means); the identity without one."""
    axis = _AXIS.get()
    return tree if axis is None else jax.lax.pmean(tree, axis)


def total(tree: Any) -> Any:
    """The sum over the data axis; the identity without one."""
    axis = _AXIS.get()
    return tree if axis is None else jax.lax.psum(tree, axis)


def shards() -> int | jax.Array:
    """How many shards the batch is split into (1 without a data axis)."""
    axis = _AXIS.get()
    return 1 if axis is None else jax.lax.psum(1, axis)


def local_keys(key: jax.Array, num_local: int) -> jax.Array:
    """One key per local environment ``[num_local]``, the same keys whether the environments
    sit on one device or are split over the data axis: the keys of all ``num_local ×
    shards`` environments, this shard's slice of them."""
    axis = _AXIS.get()
    if axis is None:
        return jax.random.split(key, num_local)
    keys = jax.random.split(key, num_local * jax.lax.psum(1, axis))
    return jax.lax.dynamic_slice_in_dim(keys, jax.lax.axis_index(axis) * num_local, num_local)


def mean_gradients() -> optax.GradientTransformation:
    """A gradient transformation that averages the updates over the data axis (when the
    optimiser's update is traced inside :func:`over`; the identity otherwise). Put it first
    in a chain, so that clipping and Adam see the gradient of the whole batch."""

    def init(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates: Any, state: optax.EmptyState, params: Any = None):
        del params
        return mean(updates), state

    return optax.GradientTransformation(init, update)
