"""Maximising a function of a continuous action over a box by sampling: random search and
the cross-entropy method (CEM). What QT-Opt uses for max_a Q(s, a) when Q is a network of
(s, a) and the maximum is no table lookup.

Both take ``q_fn(action [D]) -> scalar`` (one state's Q with the state closed over) and the
box [low, high] (finite, shape ``[D]``), and return ``(action, value)``: the best action they
evaluated and its value Q(action). So the returned value is Q at the returned action, the
action lies in the box, and value ≤ max_{a ∈ box} Q(a): a sampled maximiser never
overestimates the maximum of the function it is given.

*Random search* evaluates N actions drawn uniformly from the box and keeps the best:

    â = argmax_{a ∈ {a_1 … a_N}} Q(a),      a_i ~ U[low, high].

*CEM* (Rubinstein, 1999; Botev et al., 2013, "The cross-entropy method for optimization")
repeats for ``iterations`` rounds: draw N actions from a diagonal Gaussian N(m, σ²) clipped to
the box (the first sample is the mean m itself), and refit the Gaussian to the M best (the
elites),

    m ← β m + (1 − β) mean(elites),      σ ← β σ + (1 − β) std(elites),

with smoothing β ∈ [0, 1); it starts from the box centre with σ the half-width, and returns
the best action evaluated in any round. N × iterations evaluations in all. The loop itself,
:func:`cross_entropy_method`, works on points of any shape and is also the one
``minirl.planning.shooting.cem`` runs over action sequences. QT-Opt uses two
rounds of 64 samples with 6 elites (Kalashnikov et al., 2018, "QT-Opt: scalable deep RL for
vision-based robotic manipulation", §4.2).

Unbatched and pure: ``vmap`` over states (a batch of Bellman targets) outside. A non-finite
Q counts as −∞, so it is never preferred to a finite one. Sizes are Python ints (static).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .config import ConfigError, check_positive_int, check_range

QFn = Callable[[jax.Array], jax.Array]
"""``q_fn(action [D]) -> scalar``: the function to maximise (one state's Q(s, ·))."""


def evaluate(q_fn: QFn, actions: jax.Array) -> jax.Array:
    """Q at every action of ``actions`` ``[N, D]``: ``[N]``, non-finite values as −∞."""
    values = jax.vmap(q_fn)(actions)
    return jnp.where(jnp.isfinite(values), values, -jnp.inf)


def _box(low: jax.Array, high: jax.Array) -> tuple[jax.Array, jax.Array]:
    check_range("low", low)  # finite (concrete bounds only; traced ones are not checked)
    check_range("high", high)
    low, high = jnp.asarray(low), jnp.asarray(high)
    if jnp.ndim(low) != 1 or jnp.shape(low) != jnp.shape(high):
        raise ConfigError(
            f"low and high have shapes {jnp.shape(low)} and {jnp.shape(high)}; allowed: "
            "one shape [D]"
        )
    try:
        bad = bool(jnp.any(low > high))
    except jax.errors.ConcretizationTypeError:  # traced bounds: nothing to check
        bad = False
    if bad:
        raise ConfigError(f"low={low} exceeds high={high}; allowed: low ≤ high elementwise")
    return low, high


def uniform(key: jax.Array, low: jax.Array, high: jax.Array, num: int) -> jax.Array:
    """``num`` actions drawn uniformly from the box [low, high]: ``[num, D]``."""
    return jax.random.uniform(key, (num, *low.shape), low.dtype, minval=low, maxval=high)


def random_search(
    key: jax.Array, q_fn: QFn, low: jax.Array, high: jax.Array, *, num_samples: int
) -> tuple[jax.Array, jax.Array]:
    """The best of ``num_samples`` uniform actions in [low, high] and its value (module doc).

    Returns ``(action [D], value)``; ties go to the first sample."""
    check_positive_int("num_samples", num_samples)
    low, high = _box(low, high)
    candidates = uniform(key, low, high, num_samples)
    values = evaluate(q_fn, candidates)
    best = jnp.argmax(values)
    return candidates[best], values[best]


def cross_entropy_method(
    key: jax.Array,
    score: Callable[[jax.Array], jax.Array],
    mean: jax.Array,
    std: jax.Array,
    low: jax.Array,
    high: jax.Array,
    *,
    num_samples: int,
    num_elites: int,
    iterations: int,
    smoothing: float | jax.Array = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """The CEM loop (module doc), maximising ``score`` over points shaped like ``mean``: one
    action ``[D]`` here, an action sequence ``[H, m]`` in ``planning.shooting.cem``.

    ``score(samples [N, *mean.shape]) -> [N]`` rates a batch of samples (higher is better;
    map non-finite values to −∞ first). Each of ``iterations`` rounds draws N points from
    N(mean, std²) clipped to [low, high] (which broadcast against ``mean``; ±inf leaves a side
    open), replaces the first by the mean itself, and refits mean and std to the M best,
    smoothed by β = ``smoothing``. Returns the best point scored in any round and its score,
    so the score returned is the score of the point returned and is never below the initial
    mean's. ``mean`` should lie in the box.
    """
    check_positive_int("num_samples", num_samples)
    check_positive_int("num_elites", num_elites)
    check_positive_int("iterations", iterations)
    if num_elites > num_samples:
        raise ConfigError(
            f"num_elites={num_elites} exceeds num_samples={num_samples}; allowed: "
            "1 ≤ num_elites ≤ num_samples"
        )
    check_range("smoothing", smoothing, 0.0, 1.0, high_inclusive=False)
    std = jnp.broadcast_to(jnp.asarray(std, mean.dtype), mean.shape)

    def iteration(carry, key):
        mean, std, best, best_score = carry
        noise = jax.random.normal(key, (num_samples, *mean.shape), mean.dtype)
        samples = jnp.clip(mean + std * noise, low, high).at[0].set(mean)
        elite_scores, elite_index = jax.lax.top_k(score(samples), num_elites)
        elites = samples[elite_index]
        mean = smoothing * mean + (1.0 - smoothing) * jnp.mean(elites, axis=0)
        std = smoothing * std + (1.0 - smoothing) * jnp.std(elites, axis=0)
        better = elite_scores[0] > best_score
        best = jnp.where(better, elites[0], best)
        best_score = jnp.where(better, elite_scores[0], best_score)
        return (mean, std, best, best_score), None

    samples = jax.ShapeDtypeStruct((num_samples, *mean.shape), mean.dtype)
    init = (mean, std, mean, jnp.asarray(-jnp.inf, jax.eval_shape(score, samples).dtype))
    (_, _, best, best_score), _ = jax.lax.scan(
        iteration, init, jax.random.split(key, iterations)
    )
    return best, best_score


def cem(
    key: jax.Array,
    q_fn: QFn,
    low: jax.Array,
    high: jax.Array,
    *,
    num_samples: int,
    num_elites: int,
    iterations: int,
    init_mean: jax.Array | None = None,
    init_std: jax.Array | float | None = None,
    smoothing: float | jax.Array = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """The cross-entropy method over actions in [low, high] (module doc).

    ``init_mean`` defaults to the box centre, ``init_std`` (scalar or ``[D]``) to the
    half-width. Returns the best action evaluated in any of the ``iterations`` rounds of
    ``num_samples`` samples, and its value.
    """
    low, high = _box(low, high)
    mean = 0.5 * (low + high) if init_mean is None else jnp.clip(init_mean, low, high)
    std = 0.5 * (high - low) if init_std is None else init_std
    return cross_entropy_method(
        key, lambda actions: evaluate(q_fn, actions), mean, std, low, high,
        num_samples=num_samples, num_elites=num_elites, iterations=iterations,
        smoothing=smoothing,
    )
