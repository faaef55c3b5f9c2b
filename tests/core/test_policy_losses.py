"""Properties of the policy-gradient terms in minirl.core.losses: the importance-weighted and
clipped surrogates (value, gradient, clipped regions), the value loss with clipping and the
entropy bonus."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minirl.core import losses

pytestmark = pytest.mark.timeout(120)

RATIOS = st.floats(0.01, 5.0)
ADVANTAGES = st.floats(-10.0, 10.0, allow_subnormal=False)
EPSILONS = st.floats(0.01, 0.5)

clipped = jax.jit(losses.clipped_surrogate)
# Gradients with respect to log π_θ(a|s), through ρ = exp(log π_θ − log π_old).
clipped_grad = jax.jit(jax.grad(lambda lp, a, e: losses.clipped_surrogate(jnp.exp(lp), a, e)))
plain_grad = jax.jit(jax.grad(lambda lp, a: losses.importance_weighted_surrogate(jnp.exp(lp), a)))


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


@given(ADVANTAGES, EPSILONS)
def test_at_ratio_one_clipped_equals_plain_surrogate_and_its_gradient(advantage, epsilon):
    np.testing.assert_allclose(clipped(1.0, advantage, epsilon), advantage, atol=1e-300)
    # ∇ log π of ρA at ρ = 1 is A: the policy gradient A ∇log π.
    np.testing.assert_allclose(clipped_grad(0.0, advantage, epsilon), advantage, rtol=1e-12,
                               atol=1e-300)
    np.testing.assert_allclose(plain_grad(0.0, advantage), advantage, rtol=1e-12, atol=1e-300)


@given(RATIOS, ADVANTAGES, EPSILONS)
def test_clipped_is_a_lower_bound_of_the_plain_surrogate(ratio, advantage, epsilon):
    assert float(clipped(ratio, advantage, epsilon)) <= ratio * advantage + 1e-12


@given(RATIOS, ADVANTAGES, EPSILONS)
def test_zero_gradient_exactly_in_the_clipped_regions(ratio, advantage, epsilon):
    if min(abs(ratio - 1 - epsilon), abs(ratio - 1 + epsilon)) < 1e-6:
        return  # at a kink of min/clip the gradient is either one-sided value
    grad = float(clipped_grad(np.log(ratio), advantage, epsilon))
    if (ratio > 1 + epsilon and advantage > 0) or (ratio < 1 - epsilon and advantage < 0):
        assert grad == 0.0
    elif 1 - epsilon < ratio < 1 + epsilon or (ratio - 1) * advantage < 0:
        np.testing.assert_allclose(grad, ratio * advantage, rtol=1e-12, atol=1e-300)


@given(st.floats(-5, 5), st.floats(-5, 5), st.floats(-5, 5), st.floats(0.01, 2.0))
def test_value_loss_clipping(value, target, old_value, epsilon):
    plain = float(losses.value_loss(value, target))
    np.testing.assert_allclose(plain, 0.5 * (value - target) ** 2, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(losses.value_loss(value, target, old_value, jnp.inf), plain,
                               rtol=1e-6, atol=1e-12)
    clipped_loss = float(losses.value_loss(value, target, old_value, epsilon))
    assert clipped_loss >= plain - 1e-12
    if abs(value - old_value) <= epsilon:
        np.testing.assert_allclose(clipped_loss, plain, rtol=1e-12, atol=1e-12)


def test_entropy_bonus():
    np.testing.assert_allclose(losses.entropy_bonus(jnp.array([0.5, 1.0]), 0.1), [0.05, 0.1])
