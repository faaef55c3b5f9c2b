"""Exploration policies over Q-values and their schedules. Unbatched: ``q [A]``."""

import jax
import jax.numpy as jnp


def linear_schedule(
    step: jax.Array, start: float | jax.Array, end: float | jax.Array, duration: float | jax.Array
) -> jax.Array:
    """Linear interpolation from ``start`` to ``end`` over ``duration`` steps, then ``end``."""
    fraction = jnp.clip(step / jnp.maximum(duration, 1.0), 0.0, 1.0)
    return start + fraction * (end - start)


def exponential_schedule(
    step: jax.Array, start: float | jax.Array, end: float | jax.Array, duration: float | jax.Array
) -> jax.Array:
    """Geometric interpolation start·(end/start)^(step/duration), then ``end`` (start, end > 0)."""
    fraction = jnp.clip(step / jnp.maximum(duration, 1.0), 0.0, 1.0)
    return start * (end / start) ** fraction


def epsilon_greedy_probs(q: jax.Array, epsilon: float | jax.Array) -> jax.Array:
    """π(a) = ε/|A| + (1 − ε)·𝟙[a = argmax q] (ties go to the first maximiser)."""
    num_actions = q.shape[-1]
    greedy = jax.nn.one_hot(jnp.argmax(q, axis=-1), num_actions, dtype=q.dtype)
    return epsilon / num_actions + (1.0 - epsilon) * greedy


def boltzmann_probs(q: jax.Array, temperature: float | jax.Array) -> jax.Array:
    """π(a) = softmax(q / T)(a) (Sutton & Barto, 2018, eq. 13.2)."""
    return jax.nn.softmax(q / temperature, axis=-1)


def sample_with_prob(key: jax.Array, probs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Draw an action from ``probs`` [A]; return it and its probability (for off-policy
    corrections)."""
    action = jax.random.categorical(key, jnp.log(probs))
    return action, probs[action]


def epsilon_greedy(key: jax.Array, q: jax.Array, epsilon) -> tuple[jax.Array, jax.Array]:
    """An ε-greedy action and its behaviour probability."""
    return sample_with_prob(key, epsilon_greedy_probs(q, epsilon))


def boltzmann(key: jax.Array, q: jax.Array, temperature) -> tuple[jax.Array, jax.Array]:
    """A Boltzmann (softmax) action and its behaviour probability."""
    return sample_with_prob(key, boltzmann_probs(q, temperature))
