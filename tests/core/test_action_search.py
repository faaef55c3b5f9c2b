"""Sampled maximisers over an action box (random search, CEM) against closed forms: they
never exceed the true maximum of a concave quadratic (max over the box in closed form),
the value returned is Q at the action returned and the action is in the box; random
search's expected error matches its exact rate 1/(2(N+1)(N+2)) and falls with N; CEM's
error falls with N; CEM beats random search at equal numbers of evaluations on a narrow
Gaussian bump; the CEM loop (shared with planning.shooting.cem) equals a Python loop of its
docstring on actions and on action sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl.core import action_search
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(300)


def concave_quadratic(peak, curvature, top):
    """Q(a) = top − Σ_i h_i (a_i − a*_i)²: separable, so over a box its maximum is at
    clip(a*, low, high) (each coordinate on its own)."""

    def q(action):
        return top - jnp.sum(curvature * jnp.square(action - peak))

    return q


def maximise(kind, key, q, low, high, num_samples):
    if kind == "random":
        return action_search.random_search(key, q, low, high, num_samples=num_samples)
    return action_search.cem(key, q, low, high, num_samples=num_samples,
                             num_elites=max(1, num_samples // 4), iterations=3)


@settings(max_examples=20)
@given(seed=st.integers(0, 2**16), dim=st.sampled_from([1, 2, 3]),
       kind=st.sampled_from(["random", "cem"]), num_samples=st.sampled_from([4, 32]))
def test_never_above_the_true_max_and_the_value_is_q_at_the_action(seed, dim, kind, num_samples):
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        low = jnp.asarray(rng.uniform(-3.0, 0.0, dim))
        high = low + jnp.asarray(rng.uniform(0.1, 3.0, dim))
        peak = jnp.asarray(rng.uniform(-4.0, 4.0, dim))  # inside or outside the box
        q = concave_quadratic(peak, jnp.asarray(rng.uniform(0.1, 5.0, dim)), rng.normal())
        true_max = float(q(jnp.clip(peak, low, high)))
        action, value = maximise(kind, jax.random.PRNGKey(seed), q, low, high, num_samples)
        action, value = np.asarray(action), float(value)
        assert value <= true_max + 1e-12
        np.testing.assert_allclose(value, float(q(jnp.asarray(action))), rtol=1e-12, atol=1e-12)
        assert np.all(action >= np.asarray(low)) and np.all(action <= np.asarray(high))
        assert action.shape == (dim,)


def _mean_error(kind, num_samples, peak=(0.5,), runs=4000, seed=1):
    """Mean of max Q − returned value over ``runs`` keys, for Q = −‖a − peak‖² on [0, 1]^D."""
    dim = len(peak)
    low, high = jnp.zeros(dim), jnp.ones(dim)
    q = concave_quadratic(jnp.asarray(peak), jnp.ones(dim), 0.0)

    def error(key):
        return -maximise(kind, key, q, low, high, num_samples)[1]

    keys = jax.random.split(jax.random.PRNGKey(seed), runs)
    errors = np.asarray(jax.jit(jax.vmap(error))(keys), np.float64)
    return errors.mean(), errors.std() / np.sqrt(runs)


def test_random_search_error_matches_its_closed_form_and_falls_with_n():
    """Best of N uniform samples on [0, 1] for Q = −(a − ½)²: the error is d² with d the
    distance of the nearest sample to ½, P(d > x) = (1 − 2x)^N, so
    E[error] = ∫₀^½ 2x (1 − 2x)^N dx = 1 / (2 (N + 1)(N + 2))."""
    means = []
    for n in (4, 16, 64, 256):
        mean, stderr = _mean_error("random", n)
        exact = 1.0 / (2 * (n + 1) * (n + 2))
        assert abs(mean - exact) < 4 * stderr + 1e-3 * exact, (n, mean, exact, stderr)
        means.append(mean)
    assert all(a > b for a, b in zip(means, means[1:])), means


def test_cem_error_falls_with_n():
    # Off the box centre: CEM's first sample is the centre, which would be exact.
    means = [_mean_error("cem", n, peak=(0.23, 0.71), runs=1000)[0] for n in (4, 16, 64)]
    assert all(a > b for a, b in zip(means, means[1:])), means
    assert means[-1] < 1e-3, means


def test_cem_beats_random_search_at_equal_evaluations_on_a_narrow_bump():
    """Q(a) = exp(−‖a − c‖² / (2·0.1²)) in [−1, 1]³, c random: 128 uniform samples rarely land
    on the bump; 4 CEM rounds of 32 samples (6 elites) climb it. Float64, so that the tails
    keep their order far from the bump."""
    dim, sigma = 3, 0.1
    with jax.enable_x64(True):
        low, high = -jnp.ones(dim), jnp.ones(dim)

        def both(key):
            centre_key, random_key, cem_key = jax.random.split(key, 3)
            centre = jax.random.uniform(centre_key, (dim,), jnp.float64, -0.9, 0.9)

            def q(action):
                return jnp.exp(-jnp.sum(jnp.square(action - centre)) / (2 * sigma**2))

            _, random_value = action_search.random_search(random_key, q, low, high,
                                                          num_samples=128)
            _, cem_value = action_search.cem(cem_key, q, low, high, num_samples=32,
                                             num_elites=6, iterations=4)
            return random_value, cem_value

        keys = jax.random.split(jax.random.PRNGKey(0), 200)
        random_values, cem_values = map(np.asarray, jax.jit(jax.vmap(both))(keys))
    assert cem_values.mean() > random_values.mean() + 0.3, (cem_values.mean(),
                                                            random_values.mean())
    assert np.median(cem_values) > 0.9 > np.median(random_values)
    assert np.mean(cem_values > random_values) > 0.8


def test_cem_starts_from_a_given_mean_and_never_loses_it():
    """The mean is the first sample of every round, so CEM returns at least Q(init_mean)."""
    q = concave_quadratic(jnp.array([0.3, -0.2]), jnp.array([1.0, 4.0]), 1.0)
    low, high = -jnp.ones(2), jnp.ones(2)
    start = jnp.array([0.29, -0.21])
    _, value = action_search.cem(jax.random.PRNGKey(0), q, low, high, num_samples=2,
                                 num_elites=1, iterations=1, init_mean=start, init_std=2.0)
    assert float(value) >= float(q(start)) - 1e-6


def test_non_finite_values_are_never_chosen():
    def q(action):  # NaN on the right half of the box, finite on the left
        return jnp.where(action[0] > 0.0, jnp.nan, -jnp.square(action[0] + 0.5))

    low, high = -jnp.ones(1), jnp.ones(1)
    for kind in ("random", "cem"):
        action, value = maximise(kind, jax.random.PRNGKey(3), q, low, high, 16)
        assert np.isfinite(value) and float(action[0]) <= 0.0


def test_vmap_over_states_equals_a_loop_and_jit_equals_eager():
    centres = jnp.array([[0.1, 0.2], [-0.5, 0.7], [0.9, -0.9]])
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    low, high = -jnp.ones(2), jnp.ones(2)

    def search(key, centre):
        q = concave_quadratic(centre, jnp.ones(2), 0.0)
        return action_search.cem(key, q, low, high, num_samples=16, num_elites=4,
                                 iterations=2)

    batched = jax.jit(jax.vmap(search))(keys, centres)
    for i in range(3):
        with jax.disable_jit():
            eager = search(keys[i], centres[i])
        np.testing.assert_allclose(batched[0][i], eager[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batched[1][i], eager[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(num_samples=0), "num_samples"),
        (dict(num_samples=4, num_elites=5), "num_elites"),
        (dict(num_elites=0), "num_elites"),
        (dict(iterations=0), "iterations"),
        (dict(smoothing=1.0), "smoothing"),
        (dict(low=jnp.ones(1), high=-jnp.ones(1)), "low"),
        (dict(low=jnp.array([-jnp.inf]), high=jnp.ones(1)), "low"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    args = dict(low=-jnp.ones(1), high=jnp.ones(1), num_samples=8, num_elites=2, iterations=2)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=field):
        action_search.cem(jax.random.PRNGKey(0), lambda a: -jnp.sum(a**2), **args)


# ----------------------------------------------------------------------------- the CEM loop


def reference_cem(key, score, mean, std, low, high, num_samples, num_elites, iterations,
                  smoothing):
    """The module docstring's CEM as a Python loop over rounds."""
    std = jnp.broadcast_to(jnp.asarray(std, mean.dtype), mean.shape)
    best, best_score = mean, -jnp.inf
    for round_key in jax.random.split(key, iterations):
        noise = jax.random.normal(round_key, (num_samples, *mean.shape), mean.dtype)
        samples = jnp.clip(mean + std * noise, low, high).at[0].set(mean)
        scores = score(samples)
        order = np.argsort(-np.asarray(scores), kind="stable")[:num_elites]
        elites = samples[order]
        if float(scores[order[0]]) > best_score:
            best, best_score = elites[0], float(scores[order[0]])
        mean = smoothing * mean + (1.0 - smoothing) * jnp.mean(elites, axis=0)
        std = smoothing * std + (1.0 - smoothing) * jnp.std(elites, axis=0)
    return best, best_score


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), shape=st.sampled_from([(2,), (3, 2)]),
       smoothing=st.sampled_from([0.0, 0.3]))
def test_cross_entropy_method_is_the_loop_of_the_docstring_on_points_of_any_shape(
        seed, shape, smoothing):
    """Actions ``[D]`` (QT-Opt's search) and sequences ``[H, m]`` (planning.shooting.cem)
    run one loop: it returns the best point scored in any round, and that point's score."""
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        target = jnp.asarray(rng.uniform(-1.0, 1.0, shape))
        weights = jnp.asarray(rng.uniform(0.5, 2.0, shape))

        def score(samples):  # distinct scores: no ties for the elite order
            return -jnp.sum(weights * jnp.square(samples - target),
                            axis=tuple(range(1, samples.ndim)))

        low, high = -jnp.ones(shape[-1]), jnp.ones(shape[-1])
        mean, key = jnp.zeros(shape), jax.random.PRNGKey(seed)
        args = dict(num_samples=12, num_elites=3, iterations=3, smoothing=smoothing)
        best, best_score = action_search.cross_entropy_method(key, score, mean, 0.5, low,
                                                              high, **args)
        want, want_score = reference_cem(key, score, mean, 0.5, low, high, **args)
        np.testing.assert_allclose(best, want, rtol=1e-12)
        np.testing.assert_allclose(best_score, want_score, rtol=1e-12)
        np.testing.assert_allclose(best_score, score(best[None])[0], rtol=1e-12)
        assert float(best_score) >= float(score(mean[None])[0])  # the mean is sample 0
