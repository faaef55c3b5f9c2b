"""Properties of minirl.core.optim: Polyak averaging, hard target copies, and the
clipped Adam chain whose learning rate and clipping norm are injected (traced) state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minirl.core import optim

pytestmark = pytest.mark.timeout(120)

SEEDS = st.integers(0, 2**32 - 1)
TAUS = st.floats(0.0, 1.0)

polyak = jax.jit(optim.polyak_update)
hard = jax.jit(optim.hard_target_update)
ADAM = optim.adam_with_clipping(1.0, 1e6, eps=1e-12)
adam_update = jax.jit(ADAM.update)


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


def params(rng):
    return {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=(2,)), "s": np.asarray(rng.normal())}


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@given(SEEDS, TAUS)
def test_polyak_is_a_convex_combination(seed, tau):
    rng = np.random.default_rng(seed)
    online, target = params(rng), params(rng)
    new = polyak(online, target, tau)
    for n, o, t in zip(leaves(new), leaves(online), leaves(target)):
        assert (n >= np.minimum(o, t) - 1e-12).all() and (n <= np.maximum(o, t) + 1e-12).all()
        np.testing.assert_allclose(n, tau * o + (1 - tau) * t, rtol=1e-12, atol=1e-12)
    for n, o in zip(leaves(polyak(online, target, 1.0)), leaves(online)):
        np.testing.assert_array_equal(n, o)
    for n, t in zip(leaves(polyak(online, target, 0.0)), leaves(target)):
        np.testing.assert_array_equal(n, t)


@given(SEEDS, TAUS, st.integers(0, 20))
def test_k_polyak_steps_shrink_the_gap_geometrically(seed, tau, k):
    rng = np.random.default_rng(seed)
    online, target = params(rng), params(rng)
    new = target
    for _ in range(k):
        new = polyak(online, new, tau)
    for n, o, t in zip(leaves(new), leaves(online), leaves(target)):
        np.testing.assert_allclose(n - o, (1 - tau) ** k * (t - o), rtol=1e-9, atol=1e-12)


@given(SEEDS, st.integers(1, 6))
def test_hard_update_copies_only_on_multiples_of_the_period(seed, period):
    rng = np.random.default_rng(seed)
    online, target = params(rng), params(rng)
    for count in range(1, 13):
        new = hard(online, target, jnp.int32(count), period)
        expected = online if count % period == 0 else target
        for n, e in zip(leaves(new), leaves(expected)):
            np.testing.assert_array_equal(n, e)


@jax.jit
def first_update(grads, learning_rate, max_grad_norm):
    """The first update of ``adam_with_clipping`` and the gradient its Adam saw."""
    opt = optim.adam_with_clipping(learning_rate, max_grad_norm, eps=1e-12)
    state = opt.init(grads)
    updates, state = opt.update(grads, state)
    adam_state = state.inner_state[1][0]
    # After one step Adam's first moment is (1 − β1)·g: recover the clipped gradient.
    clipped = jax.tree.map(lambda m: m / 0.1, adam_state.mu)
    return updates, clipped, state


@given(SEEDS, st.floats(0.05, 10.0), st.floats(1e-4, 1.0))
def test_adam_with_clipping_clips_to_the_global_norm(seed, max_grad_norm, learning_rate):
    rng = np.random.default_rng(seed)
    grads = jax.tree.map(lambda x: x * rng.uniform(0.0, 5.0), params(rng))
    norm = float(optax.global_norm(grads))
    updates, clipped, _ = first_update(grads, learning_rate, max_grad_norm)
    scale = min(1.0, max_grad_norm / norm)
    assert float(optax.global_norm(clipped)) <= max_grad_norm * (1 + 1e-9)
    for c, g in zip(leaves(clipped), leaves(grads)):
        np.testing.assert_allclose(c, scale * g, rtol=1e-9, atol=1e-12)
    # Adam's first step is −lr·ĝ/(|ĝ| + ε): every coordinate moves by the learning rate.
    for u, c in zip(leaves(updates), leaves(clipped)):
        np.testing.assert_allclose(u, -learning_rate * c / (np.abs(c) + 1e-12), rtol=1e-6)


@given(SEEDS, st.floats(1e-4, 1.0), st.floats(0.05, 10.0))
def test_hyperparameters_can_be_changed_in_the_state(seed, learning_rate, max_grad_norm):
    rng = np.random.default_rng(seed)
    grads = params(rng)
    state = jax.jit(ADAM.init)(grads)
    state = optim.set_learning_rate(state, learning_rate)
    state.hyperparams["max_grad_norm"] = jnp.asarray(max_grad_norm)
    assert state.hyperparams["learning_rate"].dtype == jnp.asarray(1.0).dtype
    np.testing.assert_allclose(state.hyperparams["learning_rate"], learning_rate, rtol=1e-12)
    updates, new_state = adam_update(grads, state)
    expected_updates, clipped, _ = first_update(grads, learning_rate, max_grad_norm)
    for u, e in zip(leaves(updates), leaves(expected_updates)):
        np.testing.assert_allclose(u, e, rtol=1e-9, atol=1e-15)
    assert float(optax.global_norm(new_state.inner_state[1][0].mu)) / 0.1 <= max_grad_norm * (
        1 + 1e-9
    )


def test_learning_rate_is_traced_so_vmap_sweeps_it():
    grads = {"w": jnp.asarray([3.0, -4.0])}
    learning_rates = jnp.asarray([0.1, 0.01, 0.001])

    def one(learning_rate):
        opt = optim.adam_with_clipping(learning_rate, 1.0, eps=1e-12)
        return opt.update(grads, opt.init(grads))[0]["w"]

    swept = jax.jit(jax.vmap(one))(learning_rates)
    np.testing.assert_allclose(swept, -learning_rates[:, None] * jnp.sign(grads["w"]), rtol=1e-9)
