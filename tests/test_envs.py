"""minirl.envs: ids to (env, env_params), parameter changes validated, derived fields kept
consistent, and stacked parameters for vmap."""

import jax
import numpy as np
import pytest

from minirl import envs
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(120)


def test_make_returns_the_env_and_changed_parameters():
    env, params = envs.make("CartPole-v1", gravity=3.7, max_steps_in_episode=100)
    assert env.name == "CartPole-v1"
    assert params.gravity == 3.7 and params.max_steps_in_episode == 100
    assert isinstance(params.max_steps_in_episode, int)
    assert envs.make("CartPole-v1")[0] is env  # one object per id: jit's cache is reused


def test_cartpole_derived_fields_follow_their_factors():
    _, params = envs.make("CartPole-v1", length=1.0, masspole=0.2)
    assert params.polemass_length == pytest.approx(0.2)
    assert params.total_mass == pytest.approx(1.2)


@pytest.mark.parametrize(
    "env_id, changes, message",
    [
        ("NoSuchEnv-v9", {}, "NoSuchEnv-v9' is not a gymnax environment; choose one of"),
        ("CartPole-v1", {"gravty": 1.0}, "unknown env parameter 'gravty'.*gravity"),
        ("CartPole-v1", {"total_mass": 2.0}, "derived from the others"),
        ("CartPole-v1", {"max_steps_in_episode": 2.5}, "must be an integer"),
        ("CartPole-v1", {"max_steps_in_episode": 0}, "allowed: integers ≥ 1"),
        ("CartPole-v1", {"gravity": float("nan")}, "allowed: a finite number"),
        ("CartPole-v1", {"gravity": "heavy"}, "is not a number"),
        ("Acrobot-v1", {"available_torque": 1.0}, "array of shape"),
    ],
)
def test_bad_parameters_name_the_field(env_id, changes, message):
    with pytest.raises(ConfigError, match=message):
        envs.make(env_id, **changes)


def test_stacked_parameters_vmap():
    params = envs.stack_params(envs.make("Pendulum-v1", g=g)[1] for g in (9.8, 3.7, 1.6))
    assert params.g.dtype == np.float32 and params.g.shape == (3,)
    env, _ = envs.make("Pendulum-v1")
    obs, _ = jax.vmap(env.reset, in_axes=(None, 0))(jax.random.PRNGKey(0), params)
    assert obs.shape == (3, 3)


def test_kind_says_which_envs_cannot_be_built_here():
    assert envs.kind("CartPole-v1") == "discrete"
    assert envs.kind("Pendulum-v1") == "continuous"
    assert envs.kind("MNISTBandit-bsuite") in ("discrete", "unavailable")  # needs a download


def test_pixel_observations_draw_the_state_and_keep_gymnax_semantics():
    env, params = envs.make("Pendulum-v1", max_steps_in_episode=3)
    pixels = envs.PixelObservations(env, size=24)
    obs, state = pixels.reset(jax.random.PRNGKey(0), params)
    assert obs.shape == (24, 24, 3) and pixels.observation_space(params).shape == (24, 24, 3)
    # Upright vs hanging: the rod's pixels are in the top or the bottom half.
    up = np.asarray(pixels.render(state.replace(theta=jax.numpy.array(0.0)), params))
    down = np.asarray(pixels.render(state.replace(theta=jax.numpy.array(np.pi)), params))
    ink = lambda image: image.mean(-1) < 0.9  # noqa: E731
    assert ink(up)[:10].sum() > ink(up)[14:].sum() and ink(down)[14:].sum() > ink(down)[:10].sum()
    step = jax.jit(pixels.step)
    for i in range(3):
        obs, state, reward, terminated, truncated, info = step(
            jax.random.PRNGKey(i), state, jax.numpy.array([1.0]), params)
    assert bool(truncated) and not bool(terminated)
    # final_observation is the image of the state before the reset, not of the reset state.
    assert not np.allclose(info["final_observation"], obs)
    assert envs.PixelObservations(env, size=24) == pixels  # jit's static argument: equal


def test_pixel_observations_refuse_an_env_without_a_renderer():
    env, _ = envs.make("Catch-bsuite")
    with pytest.raises(ConfigError, match="no renderer; pixel observations exist for"):
        envs.PixelObservations(env)
