"""``minirl eval DIR --gif FILE``: one greedy episode of the first seed's policy as a GIF.

Classic-control envs are drawn by minirl's own renderers (``minirl.envs.render``, the same
images the pixel wrapper observes); Catch, the MinAtar games, FourRooms, MetaMaze,
PointRobot and Pong by gymnax's visualiser (matplotlib). Other envs have no picture and
get a one-line error naming the ones that do.
"""

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from minirl import evaluation
from minirl.core.config import ConfigError
from minirl.envs import render

GYMNAX_VISUALISED = (
    "Catch-bsuite", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar",
    "Seaquest-MinAtar", "SpaceInvaders-MinAtar", "Pong-misc", "PointRobot-misc",
    "MetaMaze-misc", "FourRooms-misc",
)
SUPPORTED = (*render.RENDERERS, *(f"{env_id}-pixels" for env_id in render.RENDERERS),
             *GYMNAX_VISUALISED)


def greedy_episode(algo: Any, config: Any, env: Any, env_params: Any, params: Any,
                   seed: int, max_steps: int) -> tuple[list[Any], np.ndarray]:
    """The env states of one greedy episode (until it ends) and the rewards: the episode
    ``minirl.evaluation`` would play with this key, step by step."""
    trajectory = jax.jit(evaluation.trajectory, static_argnums=(1, 4, 6))
    states, rewards, alive = trajectory(jax.random.PRNGKey(seed), algo, params, config, env,
                                        env_params, max_steps)
    length = int(np.sum(np.asarray(alive)))
    states = jax.tree.map(lambda x: x[:length], states)
    return [jax.tree.map(lambda x, i=i: x[i], states) for i in range(length)], np.asarray(
        rewards
    )[:length]


def write_gif(algo: Any, config: Any, env: Any, env_params: Any, params: Any, env_id: str,
              path: str, seed: int = 0, size: int = 160) -> int:
    """Write the GIF atomically; returns the number of frames."""
    if env_id not in SUPPORTED:
        raise ConfigError(
            f"env={env_id!r} has no visualiser; --gif supports: {', '.join(SUPPORTED)}"
        )
    first = jax.tree.map(lambda x: x[0], params)  # the first seed's policy
    max_steps = int(getattr(env_params, "max_steps_in_episode", 1000))
    states, rewards = greedy_episode(algo, config, env, env_params, first, seed, max_steps)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp.gif"
    draw = render.renderer(env)
    if draw is not None:
        from PIL import Image

        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
        images = jax.jit(jax.vmap(lambda s: draw(s, env_params, size)))(stacked)
        frames = [Image.fromarray((np.asarray(im) * 255).astype(np.uint8)) for im in images]
        frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=40, loop=0)
    else:
        import matplotlib

        matplotlib.use("Agg")
        from gymnax.visualize import Visualizer

        Visualizer(env, env_params, states, np.cumsum(rewards)).animate(tmp)
    os.replace(tmp, path)
    return len(states)
