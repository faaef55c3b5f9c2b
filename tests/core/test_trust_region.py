"""Properties of the trust-region tools in minirl.core.optim: the Fisher-vector product
against the dense Hessian of the KL, conjugate gradient on SPD systems, the scaled natural
step, the backtracking line search and advantage normalisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl.core import data_axis, distributions, optim

pytestmark = pytest.mark.timeout(180)

SEEDS = st.integers(0, 2**32 - 1)
DIMS = st.sampled_from([2, 3, 5, 8])


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


def linear_policy_kl(seed: int, continuous: bool):
    """θ = (W, b) of a linear policy over 6 random states; mean KL(π_θ0 ‖ π_θ) and θ0."""
    rng = np.random.default_rng(seed)
    states = jnp.asarray(rng.normal(size=(6, 3)))
    theta0 = {"w": jnp.asarray(rng.normal(size=(3, 2))), "b": jnp.asarray(rng.normal(size=2))}
    if continuous:
        theta0["log_std"] = jnp.asarray(rng.uniform(-0.5, 0.5, size=2))

    def dist(theta):
        out = states @ theta["w"] + theta["b"]
        if continuous:
            return distributions.Normal(out, theta["log_std"])
        return distributions.Categorical(out)

    old = jax.lax.stop_gradient(dist(theta0))
    return (lambda theta: jnp.mean(old.kl(dist(theta)))), theta0


@settings(max_examples=10)
@given(SEEDS, st.booleans())
def test_fisher_vector_product_is_dense_hessian_times_v_and_symmetric_psd(seed, continuous):
    kl, theta0 = linear_policy_kl(seed, continuous)
    flat, unravel = jax.flatten_util.ravel_pytree(theta0)
    dense = jax.hessian(lambda x: kl(unravel(x)))(flat)
    v = jnp.asarray(np.random.default_rng(seed + 1).normal(size=flat.shape))
    fvp = optim.fisher_vector_product(kl, theta0, unravel(v))
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(fvp)[0], dense @ v,
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(dense, dense.T, atol=1e-10)
    assert np.linalg.eigvalsh(np.asarray(dense)).min() > -1e-9
    # Damping adds damping·v.
    damped = optim.fisher_vector_product(kl, theta0, unravel(v), 0.3)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(damped)[0], dense @ v + 0.3 * v,
                               rtol=1e-8, atol=1e-10)


@settings(max_examples=10)
@given(SEEDS, st.booleans())
def test_kl_to_itself_is_zero_with_zero_gradient(seed, continuous):
    """KL(π_θ0 ‖ π_θ) is minimal (0) at θ = θ0, so the trust region is centred on θ_old and
    a KL penalty does not change the policy gradient there."""
    kl, theta0 = linear_policy_kl(seed, continuous)
    np.testing.assert_allclose(kl(theta0), 0.0, atol=1e-14)
    for leaf in jax.tree.leaves(jax.grad(kl)(theta0)):
        np.testing.assert_allclose(leaf, 0.0, atol=1e-12)
    # Elsewhere it is positive (a random move changes the policy: not a logit shift).
    rng = np.random.default_rng(seed + 3)
    moved = jax.tree.map(lambda x: x + 0.1 * rng.normal(size=x.shape), theta0)
    assert float(kl(moved)) > 0.0


def random_spd(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, n))
    return m @ m.T + 0.1 * np.eye(n)


@given(SEEDS, DIMS)
def test_conjugate_gradient_solves_spd_systems_in_at_most_n_iterations(seed, n):
    a = jnp.asarray(random_spd(seed, n))
    b = jnp.asarray(np.random.default_rng(seed + 1).normal(size=n))
    x = optim.conjugate_gradient(lambda v: a @ v, b, iterations=n, tolerance=1e-24)
    np.testing.assert_allclose(a @ x, b, rtol=1e-6, atol=1e-6 * float(jnp.linalg.norm(b)))
    # Pytree right-hand sides work the same.
    tree = optim.conjugate_gradient(
        lambda v: {"x": a @ v["x"]}, {"x": b}, iterations=n, tolerance=1e-24
    )
    np.testing.assert_allclose(tree["x"], x, rtol=1e-10, atol=1e-12)


@given(SEEDS, DIMS, st.floats(1e-4, 0.5))
def test_scaled_step_satisfies_half_sFs_equals_delta(seed, n, delta):
    f = jnp.asarray(random_spd(seed, n))
    g = jnp.asarray(np.random.default_rng(seed + 2).normal(size=n))
    x = jnp.linalg.solve(f, g)
    s = optim.trust_region_step(x, f @ x, delta)
    np.testing.assert_allclose(0.5 * s @ f @ s, delta, rtol=1e-10)
    # It is √(2δ / gᵀF⁻¹g) F⁻¹g.
    np.testing.assert_allclose(s, jnp.sqrt(2 * delta / (g @ x)) * x, rtol=1e-10)


@jax.jit
def search(a, c, theta0, direction, delta, overshoot):
    """Line search on a non-quadratic KL ½dᵀAd + 0.3Σd⁴ and a curved objective."""

    def objective_and_kl(theta):
        d = theta - theta0
        kl = 0.5 * d @ a @ d + 0.3 * jnp.sum(d**4)
        return c @ theta - 0.5 * jnp.sum(theta**2), kl

    step = optim.trust_region_step(direction, a @ direction, delta) * overshoot
    new, info = optim.backtracking_line_search(objective_and_kl, theta0, step, delta)
    return new, info, objective_and_kl(theta0)[0], objective_and_kl(new)


@given(SEEDS, DIMS, st.floats(1e-3, 0.2), st.floats(0.1, 10.0))
def test_line_search_never_breaks_the_kl_bound(seed, n, delta, overshoot):
    """Whatever the full step, the result satisfies KL ≤ δ and improves the objective, or
    it is the starting point."""
    rng = np.random.default_rng(seed)
    a = jnp.asarray(random_spd(seed, n))
    c, theta0, direction = (jnp.asarray(rng.normal(size=n)) for _ in range(3))
    new, info, obj0, (obj, kl) = search(a, c, theta0, direction, delta, overshoot)
    assert float(kl) <= delta * (1 + 1e-12)
    if bool(info["accepted"]):
        assert float(obj) > float(obj0)
        k = np.log(float(info["step_fraction"])) / np.log(0.5)
        assert abs(k - round(k)) < 1e-9 and round(k) < 10
    else:
        np.testing.assert_array_equal(new, theta0)


def test_line_search_takes_the_full_step_when_it_is_acceptable():
    objective_and_kl = lambda t: (jnp.sum(t), 0.5 * jnp.sum(t**2))
    new, info = optim.backtracking_line_search(objective_and_kl, jnp.zeros(2),
                                               jnp.array([0.1, 0.1]), 0.05)
    np.testing.assert_allclose(new, [0.1, 0.1])
    assert bool(info["accepted"]) and float(info["step_fraction"]) == 1.0


def _normalize_as_a_shard(x):
    with data_axis.over("shards"):  # what data_parallel declares while tracing a step
        return optim.normalize_advantages(x)


sharded_normalize = jax.jit(jax.vmap(_normalize_as_a_shard, axis_name="shards"))


@given(SEEDS, st.sampled_from([(8,), (4, 6)]))
def test_normalize_advantages_and_across_an_axis(seed, shape):
    adv = jnp.asarray(np.random.default_rng(seed).normal(size=shape) * 3 + 1)
    out = optim.normalize_advantages(adv)
    np.testing.assert_allclose(jnp.mean(out), 0.0, atol=1e-10)
    np.testing.assert_allclose(jnp.std(out), 1.0, rtol=1e-6)
    # Split into 2 shards along the first axis, normalised over the data axis = whole batch.
    shards = adv.reshape(2, -1, *shape[1:])
    sharded = sharded_normalize(shards)
    np.testing.assert_allclose(sharded.reshape(shape), out, rtol=1e-10, atol=1e-12)
