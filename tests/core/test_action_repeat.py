"""``rollout.ActionRepeat`` against a Python loop of the wrapped env's steps: rewards summed,
the state held once an episode ends, gymnax 1.x's episode ends and final observation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirl import envs
from minirl.core import rollout
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(300)


def loop(env, key, state, action, params, repeat):
    """The reference: step the env up to ``repeat`` times, stop at the episode's end."""
    total, steps = 0.0, 0
    for k in jax.random.split(key, repeat):
        obs, state, reward, terminated, truncated, info = env.step(k, state, action, params)
        total, steps = total + float(reward), steps + 1
        if bool(terminated) or bool(truncated):
            return obs, state, total, bool(terminated), bool(truncated), info, steps
    return obs, state, total, False, False, info, steps


@pytest.mark.parametrize("env_id, action, start", [
    ("Pendulum-v1", jnp.array([1.3]), 0),  # no episode end within the repeat
    ("Pendulum-v1", jnp.array([-0.7]), 198),  # truncated after 2 of the 4 steps
    ("CartPole-v1", jnp.array(1), 0),  # pushed one way: terminates within the repeats
])
def test_action_repeat_equals_a_loop_of_env_steps(env_id, action, start):
    env, params = envs.make(env_id)
    repeat = 4 if env_id == "Pendulum-v1" else 40
    wrapped = rollout.ActionRepeat(env, repeat)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    state = state.replace(time=start)
    key = jax.random.PRNGKey(1)
    obs, new_state, reward, terminated, truncated, info = jax.jit(
        wrapped.step, static_argnums=())(key, state, action, params)
    want = loop(env, key, state, action, params, repeat)
    np.testing.assert_allclose(obs, want[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(want[1])):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert float(reward) == pytest.approx(want[2], rel=1e-5)
    assert (bool(terminated), bool(truncated)) == (want[3], want[4])
    np.testing.assert_allclose(info["final_observation"], want[5]["final_observation"],
                               rtol=1e-6)
    assert int(info["env_steps"]) == want[6]
    if env_id != "Pendulum-v1" or start:
        assert want[6] < repeat  # the case really ends the episode inside the repeat


def test_action_repeat_is_an_env_of_the_same_spaces_and_refuses_bad_repeats():
    env, params = envs.make("Pendulum-v1")
    wrapped = envs.ActionRepeat(env, 3)
    assert wrapped.observation_space(params).shape == env.observation_space(params).shape
    assert wrapped.action_space(params).shape == env.action_space(params).shape
    assert wrapped == rollout.ActionRepeat(env, 3) and hash(wrapped) == hash(
        rollout.ActionRepeat(env, 3))
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigError, match="repeat"):
            rollout.ActionRepeat(env, bad)
