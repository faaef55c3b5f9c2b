"""Properties of minirl.core.losses: the Huber and squared losses and their gradients,
the loss switch, and the DQN / Double DQN target values against the expected maximum and
the argmax probabilities of noisy estimates (quadrature)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

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


def expected_max(q: np.ndarray, sigma: float) -> float:
    """E[max_a (q_a + σ z_a)], z independent standard normals, by quadrature of the CDF
    F(x) = Π_a Φ((x − q_a)/σ): E = ∫_0^∞ (1 − F) dx − ∫_−∞^0 F dx."""

    def cdf(x):
        return np.prod(stats.norm.cdf((x - q) / sigma))

    upper = integrate.quad(lambda x: 1.0 - cdf(x), 0.0, np.inf, epsabs=1e-12)[0]
    return upper - integrate.quad(cdf, -np.inf, 0.0, epsabs=1e-12)[0]


def argmax_probabilities(q: np.ndarray, sigma: float) -> np.ndarray:
    """P(a = argmax_b (q_b + σ z_b)) = ∫ φ(z) Π_{b≠a} Φ(z + (q_a − q_b)/σ) dz, by quadrature."""

    def density(z, a):
        others = np.delete(q, a)
        return stats.norm.pdf(z) * np.prod(stats.norm.cdf(z + (q[a] - others) / sigma))

    return np.array([integrate.quad(density, -np.inf, np.inf, args=(a,), epsabs=1e-12)[0]
                     for a in range(len(q))])


@settings(max_examples=10)
@given(SEEDS, st.sampled_from([2, 3, 5]))
def test_max_overestimates_and_double_q_underestimates_with_noisy_estimates(seed, A):
    """Two independent noisy estimates Q̂ = q + σz (target) and Q̂' = q + σz' (online) of true
    values q (van Hasselt, 2010, "Double Q-learning", §2–3): over 10⁵ draws the DQN value
    max_a Q̂ averages to E[max of normals] ≥ max q, and the double-Q value Q̂(argmax Q̂') to
    Σ_a P(a = argmax Q̂') q_a ≤ max q (z is independent of the argmax of Q̂'), both
    references by quadrature; tolerance 5 standard errors. Pointwise, double ≤ max, with
    equality when the online estimate is the target's."""
    rng = np.random.default_rng(seed)
    q, sigma, n = rng.normal(size=A) * 0.5, 1.0, 100_000
    q_target = q + sigma * rng.normal(size=(n, A))
    q_online = q + sigma * rng.normal(size=(n, A))
    dqn = np.asarray(target_value(q_target, q_online, False))
    double = np.asarray(target_value(q_target, q_online, True))

    over, under = expected_max(q, sigma), argmax_probabilities(q, sigma) @ q
    assert over >= q.max() >= under
    assert abs(dqn.mean() - over) < 5 * dqn.std() / np.sqrt(n), (dqn.mean(), over)
    assert abs(double.mean() - under) < 5 * double.std() / np.sqrt(n), (double.mean(), under)
    assert np.all(double <= dqn)
    np.testing.assert_array_equal(target_value(q_target, q_target, True), dqn)
