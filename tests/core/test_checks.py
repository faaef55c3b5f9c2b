"""The helpers every algorithm file shares, written once in ``minirl/core``: the on- and
off-policy config checks (each error names the field, the value and what is allowed), the
check of a user's network output shape, one optimiser step, the target's fresh copy and the
example transition a replay buffer is built from."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl.core import buffer as replay
from minirl.core import nets, optim, rollout
from minirl.core.config import (
    ConfigError,
    check_hidden,
    check_off_policy,
    check_on_policy,
    check_one_iteration,
)


@dataclasses.dataclass
class OffPolicy:
    total_steps: int = 100
    num_envs: int = 2
    rollout_steps: int = 5
    gradient_steps: int = 1
    buffer_size: int = 20
    batch_size: int = 8
    learning_starts: int = 0
    hidden: tuple = (4,)
    n_step: int = 3


def test_a_good_off_policy_config_passes():
    check_off_policy(OffPolicy(), "n_step")
    check_on_policy(OffPolicy(), "n_step")


@pytest.mark.parametrize("field, value, message", [
    ("total_steps", 0, r"total_steps=0 is out of range; allowed: integers ≥ 1"),
    ("num_envs", 1.5, r"num_envs=1.5 must be an integer ≥ 1"),
    ("rollout_steps", -1, r"rollout_steps=-1"),
    ("gradient_steps", 0, r"gradient_steps=0"),
    ("buffer_size", 0, r"buffer_size=0"),
    ("batch_size", True, r"batch_size=True must be an integer"),
    ("learning_starts", -1, r"learning_starts=-1 is out of range; allowed: integers ≥ 0"),
    ("hidden", (), r"hidden=\(\) must be a non-empty tuple of positive ints"),
    ("hidden", (4, 0), r"hidden=\(4, 0\)"),
    ("hidden", 64, r"hidden=64"),
    ("buffer_size", 21, r"buffer_size=21 must be a multiple of num_envs=2"),
    ("batch_size", 22, r"batch_size=22 is larger than buffer_size=20; allowed: batch_size ≤"),
    ("total_steps", 9, r"total_steps=9 is less than one iteration .* = 10\)"),
])
def test_each_bad_off_policy_field_is_named_with_its_value(field, value, message):
    with pytest.raises(ConfigError, match=message):
        check_off_policy(dataclasses.replace(OffPolicy(), **{field: value}))


@pytest.mark.parametrize("check", [check_on_policy, check_off_policy])
def test_the_extra_sizes_a_learner_names_are_checked_too(check):
    config = dataclasses.replace(OffPolicy(), n_step=0)
    check(config)  # not named: not checked
    with pytest.raises(ConfigError, match=r"n_step=0 is out of range"):
        check(config, "n_step")


@pytest.mark.parametrize("field, value", [
    ("total_steps", 0), ("num_envs", 0), ("rollout_steps", 2.0), ("hidden", (0,)),
    ("total_steps", 9),
])
def test_on_policy_checks_the_rollout_sizes_and_not_the_buffer(field, value):
    with pytest.raises(ConfigError, match=f"{field}="):
        check_on_policy(dataclasses.replace(OffPolicy(), **{field: value}))
    check_on_policy(dataclasses.replace(OffPolicy(), buffer_size=0, batch_size=99))


@given(st.lists(st.integers(-2, 5), max_size=4))
def test_check_hidden_accepts_exactly_non_empty_positive_widths(widths):
    if widths and all(w >= 1 for w in widths):
        check_hidden("hidden", tuple(widths))
    else:
        with pytest.raises(ConfigError, match="hidden="):
            check_hidden("hidden", tuple(widths))


@given(st.integers(1, 50), st.integers(1, 8), st.integers(1, 8))
def test_one_iteration_is_num_envs_times_rollout_steps(total, envs, steps):
    if total >= envs * steps:
        check_one_iteration(total, envs, steps)
    else:
        with pytest.raises(ConfigError, match=f"total_steps={total} is less than one iteration"):
            check_one_iteration(total, envs, steps)


# ----------------------------------------------------------------------------- networks


def test_check_output_takes_shapes_or_shape_structs_and_names_the_network():
    network = nets.MLP(3, 2, (4,), jax.random.PRNGKey(0))
    nets.check_output("network", network, [(3,)], [(2,)])
    nets.check_output("network", network, [jax.ShapeDtypeStruct((3,), jnp.float32)], [(2,)])
    nets.check_output("two", lambda o, a: network(o) + a, [(3,), (2,)], [(1,), (2,)])
    with pytest.raises(ConfigError, match=r"network returns shape \(2,\) for inputs of shapes "
                                          r"\(3,\); allowed: \(5,\) or \(\)"):
        nets.check_output("network", network, [(3,)], [(5,), ()])
    with pytest.raises(ConfigError, match=r"network cannot be applied to inputs of shapes \(7,\)"):
        nets.check_output("network", network, [(7,)], [(2,)])
    with pytest.raises(ConfigError, match=r"returns shape \(\(2,\), \(2,\)\)|returns shape \("):
        nets.check_output("pair", lambda o: (network(o), network(o)), [(3,)], [(2,)])


# ----------------------------------------------------------------------------- optimisation


class Scaled(eqx.Module):
    weight: jax.Array
    activation: object = eqx.field(static=True)

    def __call__(self, x):
        return self.activation(self.weight * x)


@settings(max_examples=10)
@given(st.integers(0, 2**16), st.floats(1e-4, 1e-1))
def test_adam_step_is_set_learning_rate_then_update_then_apply(seed, learning_rate):
    optimizer = optim.adam_with_clipping(1e-3, 0.5)
    rng = np.random.default_rng(seed)
    params = Scaled(jnp.asarray(rng.normal(size=3), jnp.float32), jax.nn.relu)
    grads = Scaled(jnp.asarray(rng.normal(size=3), jnp.float32), jax.nn.relu)
    opt_state = optimizer.init(eqx.filter(params, eqx.is_array))
    new, new_state = optim.adam_step(optimizer, params, grads, opt_state, learning_rate)
    state = optim.set_learning_rate(opt_state, learning_rate)
    updates, want_state = optimizer.update(
        eqx.filter(grads, eqx.is_array), state, eqx.filter(params, eqx.is_array))
    np.testing.assert_array_equal(new.weight, eqx.apply_updates(params, updates).weight)
    assert new.activation is jax.nn.relu
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(want_state), strict=True):
        np.testing.assert_array_equal(a, b)
    # with a fresh optimiser state Adam's first step is −lr·sign(g) (up to ε), after clipping
    clipped = optax.clip_by_global_norm(0.5).update(grads.weight, None)[0]
    np.testing.assert_allclose(new.weight - params.weight, -learning_rate * np.sign(clipped),
                               rtol=1e-3, atol=1e-6)  # float32 rounding of w − lr near |w| ≈ 1


def test_fresh_copy_has_equal_values_in_new_buffers_and_keeps_static_parts():
    params = Scaled(jnp.arange(3.0), jax.nn.relu)
    copy = optim.fresh_copy(params)
    np.testing.assert_array_equal(copy.weight, params.weight)
    assert copy.activation is params.activation
    assert copy.weight.unsafe_buffer_pointer() != params.weight.unsafe_buffer_pointer()


# ----------------------------------------------------------------------------- the buffer's item


def test_example_transition_sets_the_buffer_item_shapes_and_dtypes():
    obs, action = jnp.ones((4, 4, 2), jnp.uint8), jnp.zeros((2,), jnp.float32)
    example = rollout.example_transition(obs, action, policy_info=jnp.zeros((), jnp.float32))
    buffer = replay.init(7, example)
    data = buffer.data
    assert data.obs.shape == data.next_obs.shape == (7, 4, 4, 2) and data.obs.dtype == jnp.uint8
    assert data.action.shape == (7, 2) and data.action.dtype == jnp.float32
    assert data.reward.shape == (7,) and data.reward.dtype == jnp.float32
    assert data.terminated.dtype == data.truncated.dtype == jnp.bool_
    assert data.policy_info.shape == (7,)
    assert data.episode_return is None and data.episode_length is None
    assert rollout.example_transition(obs, action).policy_info is None
