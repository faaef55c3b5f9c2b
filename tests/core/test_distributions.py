"""Properties of minirl.core.distributions: the score-function identity, KL(π, π) = 0 with
zero gradient, closed-form KL and entropy against Monte Carlo, and the tanh-Normal
change-of-variables term."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl.core import distributions as D

pytestmark = pytest.mark.timeout(180)

SEEDS = st.integers(0, 2**32 - 1)
SIZES = st.sampled_from([2, 3, 5])


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


def random_dist(kind: str, seed: int, size: int):
    rng = np.random.default_rng(seed)
    if kind == "categorical":
        return D.Categorical(jnp.asarray(rng.normal(size=size) * 2.0))
    mean = jnp.asarray(rng.normal(size=size))
    log_std = jnp.asarray(rng.uniform(-1.0, 0.5, size=size))
    return D.Normal(mean, log_std) if kind == "normal" else D.TanhNormal(mean, log_std)


KINDS = st.sampled_from(["categorical", "normal", "tanh_normal"])


@given(SEEDS, SIZES)
def test_score_function_has_zero_mean(seed, size):
    """Σ_a π(a) ∇_θ log π(a) = 0, so subtracting a baseline leaves the gradient unbiased."""
    logits = random_dist("categorical", seed, size).logits
    jac = jax.jacobian(lambda z: D.Categorical(z).log_probs)(logits)  # [A, A]
    expected = jnp.sum(jax.nn.softmax(logits)[:, None] * jac, axis=0)
    np.testing.assert_allclose(expected, 0.0, atol=1e-12)
    # With a baseline b: Σ_a π(a) (Q(a) − b) ∇log π(a) does not depend on b.
    q = jnp.arange(size, dtype=jnp.float64)
    grads = [jnp.sum(jax.nn.softmax(logits)[:, None] * (q - b)[:, None] * jac, axis=0)
             for b in (0.0, 3.7)]
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-12)


def test_gaussian_score_function_has_zero_mean():
    dist = random_dist("normal", 0, 3)
    keys = jax.random.split(jax.random.PRNGKey(0), 200_000)
    samples = jax.vmap(dist.sample)(keys)
    score = jax.vmap(jax.grad(lambda m, a: D.Normal(m, dist.log_std).log_prob(a)),
                     in_axes=(None, 0))(dist.mean, samples)
    np.testing.assert_allclose(jnp.mean(score, axis=0), 0.0, atol=2e-2)


@given(KINDS, SEEDS, SIZES)
def test_kl_with_itself_is_zero_with_zero_gradient(kind, seed, size):
    dist = random_dist(kind, seed, size)
    np.testing.assert_allclose(dist.kl(dist), 0.0, atol=1e-12)
    grad = jax.grad(lambda d: jax.lax.stop_gradient(dist).kl(d))(dist)
    for leaf in jax.tree.leaves(grad):
        np.testing.assert_allclose(leaf, 0.0, atol=1e-12)


@given(KINDS, SEEDS, SEEDS, SIZES)
def test_kl_is_non_negative(kind, seed_a, seed_b, size):
    a, b = random_dist(kind, seed_a, size), random_dist(kind, seed_b, size)
    assert float(a.kl(b)) >= -1e-12


@settings(max_examples=6)
@given(KINDS, SEEDS, SEEDS)
def test_closed_form_kl_and_entropy_agree_with_monte_carlo(kind, seed_a, seed_b):
    size, n = 3, 200_000
    a, b = random_dist(kind, seed_a, size), random_dist(kind, seed_b, size)
    keys = jax.random.split(jax.random.PRNGKey(seed_a % 1000), n)
    samples = jax.vmap(a.sample)(keys)
    log_a = jax.vmap(a.log_prob)(samples)
    log_b = jax.vmap(b.log_prob)(samples)
    mc_kl, mc_entropy = jnp.mean(log_a - log_b), -jnp.mean(log_a)
    scale = float(jnp.std(log_a - log_b)) / np.sqrt(n)
    np.testing.assert_allclose(a.kl(b), mc_kl, atol=6 * scale + 1e-3)
    if kind != "tanh_normal":  # the tanh-Normal's entropy is itself a one-sample estimate
        np.testing.assert_allclose(a.entropy(), mc_entropy,
                                   atol=6 * float(jnp.std(log_a)) / np.sqrt(n) + 1e-3)
    else:
        estimates = jax.vmap(a.entropy)(keys[:20_000])
        np.testing.assert_allclose(jnp.mean(estimates), mc_entropy, atol=0.05)


@given(SEEDS)
def test_tanh_normal_log_prob_includes_change_of_variables(seed):
    dist = random_dist("tanh_normal", seed, 1)
    a = jnp.linspace(-1.0, 1.0, 200_001)[1:-1]
    u = jnp.arctanh(a)
    log_prob = jax.vmap(lambda x: dist.log_prob(x[None]))(a)
    # log π(a) = log N(u) − log(1 − a²): the Jacobian term, checked pointwise …
    np.testing.assert_allclose(
        log_prob, jax.vmap(lambda x: dist.base.log_prob(x[None]))(u) - jnp.log1p(-a * a),
        rtol=1e-6, atol=1e-6,
    )
    # … and as a density: over a = tanh(u), |u| ≤ 7, it integrates to the base Gaussian's
    # mass of [−7, 7] (N(atanh a) alone, without the Jacobian, does not).
    grid = jnp.tanh(jnp.linspace(-7.0, 7.0, 400_001))
    density = jnp.exp(jax.vmap(lambda x: dist.log_prob(x[None]))(grid))
    mean, std = float(dist.mean[0]), float(jnp.exp(dist.log_std[0]))
    mass = jax.scipy.stats.norm.cdf((7.0 - mean) / std) - jax.scipy.stats.norm.cdf(
        (-7.0 - mean) / std)
    np.testing.assert_allclose(jnp.trapezoid(density, grid), mass, atol=1e-4)
    # The sampler's log-prob (from u, no atanh round trip) agrees with log_prob(a).
    action, sampled_log_prob = dist.sample_and_log_prob(jax.random.PRNGKey(seed % 997))
    if float(jnp.max(jnp.abs(action))) < 0.999:
        np.testing.assert_allclose(sampled_log_prob, dist.log_prob(action), rtol=1e-6, atol=1e-6)


def test_modes_and_sample_frequencies():
    cat = D.Categorical(jnp.log(jnp.array([0.2, 0.5, 0.3])))
    assert int(cat.mode()) == 1
    draws = jax.vmap(cat.sample)(jax.random.split(jax.random.PRNGKey(1), 50_000))
    np.testing.assert_allclose(np.bincount(np.asarray(draws), minlength=3) / 50_000,
                               [0.2, 0.5, 0.3], atol=0.01)
    normal = D.Normal(jnp.array([0.5, -1.0]), jnp.array([0.0, -1.0]))
    np.testing.assert_allclose(normal.mode(), [0.5, -1.0])
    np.testing.assert_allclose(D.TanhNormal(normal.mean, normal.log_std).mode(),
                               np.tanh([0.5, -1.0]))
    # Leading batch axes broadcast through every method.
    batch = D.Categorical(jnp.zeros((4, 3)))
    assert batch.log_prob(jnp.zeros(4, jnp.int32)).shape == (4,)
    assert batch.entropy().shape == (4,)
    np.testing.assert_allclose(batch.entropy(), np.log(3.0))
