"""One agent trained data-parallel: its environments split over devices.

:func:`data_parallel` runs an algorithm's ``step`` inside ``jax.shard_map``: the arrays the
caller names (every environment's state, leading axis ``[E]``) are split over a device mesh,
everything else (parameters, optimiser state, counters, keys) is replicated, and each device
steps its ``E / devices`` environments. The step is traced with the mesh axis declared as
the data axis (``core.data_axis.over``): the optimiser averages the gradients over it and
the learner's batch statistics are taken over all shards, so the replicated parameters stay
equal on every device, with no argument threaded through the learner. The episode
statistics are summed over the devices and the other metrics averaged. (Seeds and
hyperparameters are a different kind of parallelism: independent runs, ``minirl.programs``.)
"""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from .core import data_axis
from .results import POOLED


def make_mesh(devices: Sequence[Any] | None = None, axis: str = "envs") -> Mesh:
    """A one-dimensional mesh over ``devices`` (default: every device)."""
    devices = list(devices or jax.devices())
    return Mesh(np.asarray(devices), (axis,))


def shard_specs(state: Any, split: Callable[[Any], Any], axis: str) -> Any:
    """Partition specs for ``state``'s arrays: ``P(axis)`` (split on the leading axis) for
    the arrays inside ``split(state)``, ``P()`` (replicated) for all others."""
    arrays = eqx.filter(state, eqx.is_array)
    sharded = {id(x) for x in jax.tree.leaves(eqx.filter(split(state), eqx.is_array))}
    return jax.tree.map(lambda x: P(axis) if id(x) in sharded else P(), arrays)


def data_parallel(
    step_fn: Callable,
    mesh: Mesh,
    state: Any,
    split: Callable[[Any], Any],
    env: Any,
    *,
    length: int = 1,
    donate: bool = False,
) -> Callable:
    """Data-parallel ``step_fn(state, config, env, env_params) -> (state, metrics)``: any
    learner's ``step``.

    The arrays in ``split(state)`` (e.g. ``lambda s: s.env``: every environment's state,
    leading axis ``[E]``) are split over the mesh axis; the rest of the state (parameters,
    optimiser state, keys, counters), the config and the env parameters are replicated.
    Inside ``jax.shard_map`` each device runs ``step_fn`` on its ``E / devices``
    environments, traced under ``core.data_axis.over(axis)``; the episode statistics are
    summed over the devices and the other metrics averaged. ``state`` is a template; the
    result is a jitted ``run(state, config, env_params) -> (state, metrics)`` doing
    ``length`` steps (metrics stacked ``[length, ...]``). For PPO it equals the single-device
    step up to float reassociation (one agent: the reduction order of its gradients changes
    with the device count).
    """
    axis = mesh.axis_names[0]
    specs = shard_specs(state, split, axis)
    _, static = eqx.partition(state, eqx.is_array)

    def run(arrays, config, env_params):
        def body(arrays, _):
            with data_axis.over(axis):
                new_state, metrics = step_fn(eqx.combine(arrays, static), config, env,
                                             env_params)
            metrics = {name: jax.lax.psum(value, axis) if name in POOLED
                       else jax.lax.pmean(value, axis) for name, value in metrics.items()}
            return eqx.filter(new_state, eqx.is_array), metrics

        return jax.lax.scan(body, arrays, length=length)

    def outer(arrays, config, env_params):
        sharded = jax.shard_map(
            run, mesh=mesh, in_specs=(specs, P(), P()), out_specs=(specs, P()), check_vma=False
        )
        return sharded(arrays, config, env_params)

    program = jax.jit(outer, donate_argnums=0 if donate else ())

    def call(state, config, env_params):
        arrays, _ = eqx.partition(state, eqx.is_array)
        arrays, metrics = program(arrays, config, env_params)
        return eqx.combine(arrays, static), metrics

    return call
