"""Images of classic-control states, drawn with array operations so they run inside ``jit``.

Each renderer maps one env state (and the env parameters) to an ``[H, W, 3]`` float32 image
in [0, 1]: shapes are rasterised by their distance fields (a pixel is inside a rod when its
distance to the rod's segment is below the half-width), so an image costs a few
elementwise operations per pixel, vmaps over batches and differentiates nowhere it should
not matter. They serve two purposes: pixel observations for latent models
(``minirl.envs.PixelObservations``) and animations (``minirl eval --gif``).

Supported: Pendulum-v1, CartPole-v1, Acrobot-v1, MountainCar-v0, MountainCarContinuous-v0.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

BACKGROUND = jnp.array([1.0, 1.0, 1.0])
INK = jnp.array([0.20, 0.25, 0.35])
ACCENT = jnp.array([0.85, 0.35, 0.20])
PALE = jnp.array([0.70, 0.72, 0.75])


def _grid(size: int, extent: float) -> tuple[jax.Array, jax.Array]:
    """Pixel centres in world coordinates: x to the right, y up, the image spans
    [−extent, extent]² (row 0 at the top)."""
    centres = (jnp.arange(size) + 0.5) / size * 2.0 * extent - extent
    return jnp.meshgrid(centres, -centres)


def _segment_distance(x, y, start, end) -> jax.Array:
    """Distance of every pixel to the segment start–end."""
    d = end - start
    t = jnp.clip(((x - start[0]) * d[0] + (y - start[1]) * d[1]) / jnp.maximum(d @ d, 1e-12),
                 0.0, 1.0)
    return jnp.hypot(x - start[0] - t * d[0], y - start[1] - t * d[1])


def _paint(image, mask, colour):
    return jnp.where(mask[..., None], colour, image)


def _soft(distance, half_width, pixel):
    """1 inside, 0 outside, with one pixel of anti-aliasing: smoother images for models."""
    return jnp.clip(0.5 - (distance - half_width) / pixel, 0.0, 1.0)


def _blend(image, coverage, colour):
    return image * (1.0 - coverage[..., None]) + coverage[..., None] * colour


def pendulum(state: Any, params: Any, size: int = 64) -> jax.Array:
    """A rod of the pendulum's length from the centre; θ = 0 points up."""
    extent = 1.25 * params.l
    x, y = _grid(size, extent)
    pixel = 2.0 * extent / size
    tip = params.l * jnp.stack([jnp.sin(state.theta), jnp.cos(state.theta)])
    image = jnp.broadcast_to(BACKGROUND, (size, size, 3))
    image = _blend(image, _soft(_segment_distance(x, y, jnp.zeros(2), tip), 0.1 * params.l,
                                pixel), ACCENT)
    return _blend(image, _soft(jnp.hypot(x, y), 0.06 * params.l, pixel), INK)


def cartpole(state: Any, params: Any, size: int = 64) -> jax.Array:
    """The track, the cart at x and the pole at angle θ (0 upright) from the cart's top."""
    extent = params.x_threshold * 1.1
    x, y = _grid(size, extent)
    pixel = 2.0 * extent / size
    pole = 2.0 * params.length * (extent / 2.4)  # the pole's full length, drawn to scale
    cart_w, cart_h = 0.25 * extent, 0.12 * extent
    base = jnp.stack([state.x, -0.2 * extent + cart_h / 2])
    tip = base + pole * jnp.stack([jnp.sin(state.theta), jnp.cos(state.theta)])
    image = jnp.broadcast_to(BACKGROUND, (size, size, 3))
    image = _paint(image, jnp.abs(y + 0.2 * extent) < pixel * 0.5, PALE)
    cart = (jnp.abs(x - state.x) < cart_w / 2) & (jnp.abs(y - (-0.2 * extent)) < cart_h / 2)
    image = _paint(image, cart, INK)
    return _blend(image, _soft(_segment_distance(x, y, base, tip), 0.04 * extent, pixel),
                  ACCENT)


def acrobot(state: Any, params: Any, size: int = 64) -> jax.Array:
    """Two links from the pivot at the centre; both angles 0 hang straight down."""
    l1, l2 = params.link_length_1, params.link_length_2
    extent = 1.1 * (l1 + l2)
    x, y = _grid(size, extent)
    pixel = 2.0 * extent / size
    a1, a2 = state.joint_angle1, state.joint_angle1 + state.joint_angle2
    elbow = l1 * jnp.stack([jnp.sin(a1), -jnp.cos(a1)])
    tip = elbow + l2 * jnp.stack([jnp.sin(a2), -jnp.cos(a2)])
    image = jnp.broadcast_to(BACKGROUND, (size, size, 3))
    image = _paint(image, jnp.abs(y - l1) < pixel * 0.5, PALE)  # the goal height
    image = _blend(image, _soft(_segment_distance(x, y, jnp.zeros(2), elbow), 0.08 * extent,
                                pixel), INK)
    return _blend(image, _soft(_segment_distance(x, y, elbow, tip), 0.08 * extent, pixel),
                  ACCENT)


def mountain_car(state: Any, params: Any, size: int = 64) -> jax.Array:
    """The hill y = sin(3x) over [min_position, max_position], the flag and the car."""
    low, high = params.min_position, params.max_position
    mid, half = (low + high) / 2, (high - low) / 2
    x, y = _grid(size, 1.0)
    pixel = 2.0 / size
    world_x = mid + x * half
    hill = 0.45 * jnp.sin(3.0 * world_x) - 0.2
    image = jnp.broadcast_to(BACKGROUND, (size, size, 3))
    image = _paint(image, y < hill, PALE)
    goal = (params.goal_position - mid) / half
    flag = jnp.stack([goal, 0.45 * jnp.sin(3.0 * params.goal_position) - 0.2])
    image = _blend(image, _soft(_segment_distance(x, y, flag, flag + jnp.array([0.0, 0.25])),
                                pixel, pixel), INK)
    car = jnp.stack([(state.position - mid) / half,
                     0.45 * jnp.sin(3.0 * state.position) - 0.2 + 0.06])
    return _blend(image, _soft(jnp.hypot(x - car[0], y - car[1]), 0.07, pixel), ACCENT)


RENDERERS: dict[str, Callable[..., jax.Array]] = {
    "Pendulum-v1": pendulum,
    "CartPole-v1": cartpole,
    "Acrobot-v1": acrobot,
    "MountainCar-v0": mountain_car,
    "MountainCarContinuous-v0": mountain_car,
}
"""env name → renderer(state, params, size) → ``[size, size, 3]`` in [0, 1]."""


def renderer(env: Any) -> Callable[..., jax.Array] | None:
    """The renderer for ``env`` (by its ``name``; a pixel env by the env it wraps), or
    None."""
    draw = RENDERERS.get(getattr(env, "name", None))
    if draw is None and hasattr(env, "env") and hasattr(env, "render"):  # PixelObservations
        return renderer(env.env)
    return draw
