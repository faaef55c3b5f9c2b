"""Equinox networks: MLP, a small CNN for image observations, and ensembles; and the check
of a user's network against the shapes an algorithm needs.

Networks act on one unbatched observation (callers ``vmap``); observations of any dtype
(MinAtar's are booleans) are cast to float32 inside.
"""

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from .config import ConfigError


class MLP(eqx.Module):
    """Fully connected network; the input is flattened, hidden layers use ``activation``."""

    layers: tuple[eqx.nn.Linear, ...]
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        hidden: Sequence[int],
        key: jax.Array,
        activation: Callable = jax.nn.relu,
        final_scale: float = 1.0,
    ):
        sizes = (in_size, *hidden, out_size)
        keys = jax.random.split(key, len(sizes) - 1)
        layers = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys)]
        if final_scale != 1.0:
            last = layers[-1]
            layers[-1] = eqx.tree_at(
                lambda layer: (layer.weight, layer.bias),
                last,
                (last.weight * final_scale, last.bias * final_scale),
            )
        self.layers = tuple(layers)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.ravel(x).astype(jnp.float32)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


class CNN(eqx.Module):
    """Conv(3×3, ``channels``) → ReLU → flatten → MLP head, for ``[H, W, C]`` images.

    The MinAtar network of Young & Tian (2019): one 3×3 convolution with 16 channels and a
    128-unit hidden layer.
    """

    conv: eqx.nn.Conv2d
    head: MLP

    def __init__(
        self,
        obs_shape: Sequence[int],
        out_size: int,
        hidden: Sequence[int],
        key: jax.Array,
        channels: int = 16,
    ):
        height, width, in_channels = obs_shape
        conv_key, head_key = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(in_channels, channels, kernel_size=3, key=conv_key)
        flat = channels * (height - 2) * (width - 2)
        self.head = MLP(flat, out_size, hidden, head_key)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.moveaxis(x.astype(jnp.float32), -1, 0)
        return self.head(jax.nn.relu(self.conv(x)))


def make_network(
    obs_shape: Sequence[int], out_size: int, hidden: Sequence[int], kind: str, key: jax.Array
) -> eqx.Module:
    """``kind``: ``"mlp"`` (any observation, flattened), ``"cnn"`` (``[H, W, C]``), or
    ``"auto"`` (CNN for 3-d observations, MLP otherwise)."""
    if kind == "auto":
        kind = "cnn" if len(obs_shape) == 3 else "mlp"
    if kind == "cnn":
        if len(obs_shape) != 3:
            raise ValueError(
                f"network='cnn' needs [H, W, C] observations; got shape {tuple(obs_shape)}"
            )
        return CNN(obs_shape, out_size, hidden, key)
    if kind == "mlp":
        return MLP(math.prod(obs_shape), out_size, hidden, key)
    raise ValueError(f"network={kind!r} is not allowed; choose one of 'auto', 'mlp', 'cnn'")


def apply_batched(network: Callable, x: jax.Array, batch_dims: int = 1) -> jax.Array:
    """``network`` (defined on one input) applied over ``batch_dims`` leading batch axes."""
    fn = network
    for _ in range(batch_dims):
        fn = jax.vmap(fn)
    return fn(x)


def ensemble(make: Callable[[jax.Array], eqx.Module], key: jax.Array, size: int) -> eqx.Module:
    """``size`` independently initialised members (``make(key)`` each), array leaves stacked
    on a leading axis ``[size, ...]``: twin critics are ``size=2``.

    Call with ``eqx.filter_vmap(lambda m, x: m(x), in_axes=(eqx.if_array(0), None))``.
    """
    return eqx.filter_vmap(make)(jax.random.split(key, size))


def check_output(
    name: str, fn: Callable, inputs: Sequence, allowed: Sequence[tuple[int, ...]]
) -> None:
    """Raise :class:`ConfigError` unless ``fn(*inputs)`` has one of the ``allowed`` shapes.

    ``inputs`` are shapes (float32 is assumed) or ``jax.ShapeDtypeStruct``s: ``fn`` is traced
    abstractly and nothing is computed. What ``init`` calls on a user's network, so that a
    wrong output shape is a one-line error naming ``name`` and not a broadcasting error deep
    inside a loss."""
    args = tuple(
        x if isinstance(x, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(tuple(x), jnp.float32)
        for x in inputs
    )
    shapes = ", ".join(str(tuple(a.shape)) for a in args)
    try:
        out = eqx.filter_eval_shape(fn, *args)
    except Exception as error:
        raise ConfigError(
            f"{name} cannot be applied to inputs of shapes {shapes}: {error}"
        ) from None
    shape = getattr(out, "shape", None)
    if shape not in [tuple(s) for s in allowed]:
        raise ConfigError(
            f"{name} returns shape {shape if shape is not None else out} for inputs of shapes "
            f"{shapes}; allowed: " + " or ".join(str(tuple(s)) for s in allowed)
        )


class Wrapped(eqx.Module):
    """A module whose non-array leaves (activation functions, ...) are kept static, so that
    it can live in a ``lax.scan`` carry or a jitted state. ``module`` gives the original
    back; calling the wrapper calls it."""

    arrays: eqx.Module
    static: eqx.Module = eqx.field(static=True)

    @property
    def module(self) -> eqx.Module:
        return eqx.combine(self.arrays, self.static)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def arrays_only(module: eqx.Module) -> eqx.Module:
    """``module`` itself if all its leaves are arrays, else a :class:`Wrapped` of it."""
    if all(eqx.is_array(x) for x in jax.tree.leaves(module)):
        return module
    return Wrapped(*eqx.partition(module, eqx.is_array))


def resolve(network, key: jax.Array, default: Callable[[jax.Array], eqx.Module]) -> eqx.Module:
    """The network to train: ``default(key)`` when ``network`` is None, ``network(key)``
    when it is a factory (a function of a PRNG key, so every seed of a ``vmap`` gets its own
    initialisation), or ``network`` itself when it is already an ``eqx.Module``.

    A module with function fields (activations) cannot be a traced argument of
    ``jax.jit``; close over it, or pass a factory."""
    if network is None:
        return default(key)
    if isinstance(network, eqx.Module):
        return network
    if callable(network):
        return network(key)
    raise TypeError(f"network must be an eqx.Module or a function of a key; got {network!r}")
