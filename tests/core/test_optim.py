"""Properties of minirl.core.optim: target networks by what they do over many updates
(Polyak averaging trails a moving online network by (1 − τ)/τ updates and is its geometric
moving average; a hard copy holds the online network of the last multiple of the period),
and the clipped Adam chain whose learning rate and clipping norm are injected (traced)
state."""

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


def track(online_sequence, target, tau):
    """θ̄_k = polyak_update(θ_k, θ̄_{k−1}, τ) along a stacked sequence θ_1 … θ_K (leaves
    [K, ...]); every θ̄_k, stacked."""

    def body(target, online):
        target = optim.polyak_update(online, target, tau)
        return target, target

    return jax.lax.scan(body, target, online_sequence)[1]


@given(SEEDS, st.floats(0.05, 1.0))
def test_polyak_target_trails_a_ramp_by_one_minus_tau_over_tau_updates(seed, tau):
    """Online θ_k = θ_0 + a·k followed by Polyak steps: the gap e_k = θ̄_k − θ_k obeys
    e_k = (1 − τ)(e_{k−1} − a), solved by hand as e_k = e* + (1 − τ)^k (e_0 − e*) with
    e* = −a(1 − τ)/τ: the target converges at rate 1 − τ to a copy of the online network
    (1 − τ)/τ updates old, the lag the notes give for τ = 1 − τ'."""
    rng = np.random.default_rng(seed)
    start, slope, target = params(rng), params(rng), params(rng)
    steps = np.arange(1, 401)
    online = jax.tree.map(lambda s, a: s + a * steps.reshape(-1, *[1] * np.ndim(a)), start,
                          slope)
    got = jax.jit(track)(online, target, tau)
    for g, o, s, a, t in zip(*(leaves(x) for x in (got, online, start, slope, target))):
        lag = -a * (1 - tau) / tau
        decay = (1 - tau) ** steps.reshape(-1, *[1] * np.ndim(a))
        np.testing.assert_allclose(g - o, lag + decay * (t - s - lag), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(g[-1] - o[-1], lag, rtol=1e-6, atol=1e-9)


@given(SEEDS, TAUS, st.sampled_from([1, 5, 30]))
def test_polyak_target_is_the_exponential_moving_average_of_the_online_networks(seed, tau, k):
    """After k updates towards any online sequence θ_1 … θ_k, θ̄_k = (1 − τ)^k θ̄_0 +
    Σ_j τ(1 − τ)^(k − j) θ_j: the geometric weights applied directly (they sum to one)."""
    rng = np.random.default_rng(seed)
    target = params(rng)
    online = jax.tree.map(lambda x: np.cumsum(rng.normal(size=(k, *np.shape(x))), axis=0),
                          params(rng))  # a random walk
    got = jax.jit(track)(online, target, tau)
    weights = tau * (1 - tau) ** (k - np.arange(1, k + 1))
    np.testing.assert_allclose(weights.sum() + (1 - tau) ** k, 1.0, rtol=1e-12)
    for g, o, t in zip(*(leaves(x) for x in (got, online, target))):
        want = (1 - tau) ** k * t + np.tensordot(weights, o, axes=1)
        np.testing.assert_allclose(g[-1], want, rtol=1e-9, atol=1e-12)


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
def test_hard_target_is_the_online_network_from_the_last_multiple_of_the_period(seed, period):
    """Online networks θ_1 … θ_12 (update k leaves θ_k) and hard updates with counts 1 … 12:
    after update k the target is θ_m with m = period·⌊k/period⌋, the online network as it was
    k − (k mod period) updates in, or the initial target while k < period."""
    rng = np.random.default_rng(seed)
    initial = params(rng)
    online = [params(rng) for _ in range(12)]
    target = initial
    for k in range(1, 13):
        target = hard(online[k - 1], target, jnp.int32(k), period)
        m = period * (k // period)
        for got, want in zip(leaves(target), leaves(online[m - 1] if m else initial)):
            np.testing.assert_array_equal(got, want)


@jax.jit
def first_update(grads, learning_rate, max_grad_norm):
    """The first update of ``adam_with_clipping`` and the gradient its Adam saw."""
    opt = optim.adam_with_clipping(learning_rate, max_grad_norm, eps=1e-12)
    state = opt.init(grads)
    updates, state = opt.update(grads, state)
    adam_state = state.inner_state[2][0]
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
    assert float(optax.global_norm(new_state.inner_state[2][0].mu)) / 0.1 <= max_grad_norm * (
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
