"""Properties of minirl.core.losses: the Huber and squared losses and their gradients,
the loss switch, and the DQN / Double DQN target values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minirl.core import losses

pytestmark = pytest.mark.timeout(120)

ERRORS = st.floats(-20.0, 20.0, allow_subnormal=False)
DELTAS = st.floats(0.05, 5.0)
SEEDS = st.integers(0, 2**32 - 1)

huber = jax.jit(losses.huber_loss)
huber_grad = jax.jit(jax.grad(losses.huber_loss))
squared_grad = jax.jit(jax.grad(losses.squared_loss))
target_value = jax.jit(losses.q_learning_target_value, static_argnums=2)


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


@given(ERRORS, DELTAS)
def test_huber_is_quadratic_inside_and_linear_outside(x, delta):
    expected = 0.5 * x * x if abs(x) <= delta else delta * (abs(x) - 0.5 * delta)
    np.testing.assert_allclose(huber(x, delta), expected, rtol=1e-12, atol=1e-15)


@given(ERRORS, DELTAS)
def test_huber_gradient_is_clipped_error(x, delta):
    np.testing.assert_allclose(huber_grad(x, delta), np.clip(x, -delta, delta), rtol=1e-12)


@given(DELTAS, st.sampled_from([-1.0, 1.0]))
def test_huber_is_continuous_at_the_threshold(delta, sign):
    eps = 1e-7
    inside = float(huber(sign * (delta - eps), delta))
    outside = float(huber(sign * (delta + eps), delta))
    assert abs(outside - inside) <= 2.5 * delta * eps
    np.testing.assert_allclose(huber(sign * delta, delta), 0.5 * delta**2, rtol=1e-12)


@given(ERRORS, DELTAS)
def test_huber_bounded_by_squared_and_symmetric(x, delta):
    assert float(huber(x, delta)) <= float(losses.squared_loss(x)) + 1e-12
    assert float(huber(x, delta)) == float(huber(-x, delta))


@given(ERRORS)
def test_squared_loss_and_gradient(x):
    np.testing.assert_allclose(losses.squared_loss(x), 0.5 * x * x, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(squared_grad(x), x, rtol=1e-12)


def test_td_loss_dispatch():
    x = jnp.asarray([-3.0, 0.5, 2.0])
    np.testing.assert_allclose(losses.td_loss(x, "huber", 1.0), losses.huber_loss(x, 1.0))
    np.testing.assert_allclose(losses.td_loss(x, "squared"), losses.squared_loss(x))
    with pytest.raises(ValueError, match="loss='l1'"):
        losses.td_loss(x, "l1")


@given(SEEDS, st.sampled_from([(2,), (4, 3)]), st.sampled_from([1, 2, 5]))
def test_double_q_value_at_most_max_and_equal_when_online_is_target(seed, batch, A):
    rng = np.random.default_rng(seed)
    q_target = rng.normal(size=(*batch, A))
    q_online = rng.normal(size=(*batch, A))
    dqn = np.asarray(target_value(q_target, q_online, False))
    double = np.asarray(target_value(q_target, q_online, True))
    np.testing.assert_allclose(dqn, q_target.max(-1), rtol=1e-12)
    # Double DQN evaluates the online argmax with the target network.
    greedy = q_online.argmax(-1)
    np.testing.assert_allclose(
        double, np.take_along_axis(q_target, greedy[..., None], -1)[..., 0], rtol=1e-12
    )
    assert (double <= dqn).all()
    np.testing.assert_allclose(target_value(q_target, q_target, True), dqn, rtol=1e-12)
