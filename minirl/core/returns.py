"""Discounted, N-step, off-policy and λ-returns, and GAE, with gymnax 1.x episode ends.

Conventions (time-major, leading axis ``T``; any trailing batch axes broadcast):
``terminated[t]`` cuts the bootstrap (continuation value 0); ``truncated[t]`` ends the
episode without cutting it: the value to bootstrap from is ``next_values[t]`` =
V(true next observation), i.e. V(``final_observation``), never V(reset observation).
"""

import jax
import jax.numpy as jnp


def _reverse_scan(fn, init, xs):
    return jax.lax.scan(fn, init, xs, reverse=True)[1]


def discounted_return(
    rewards: jax.Array, discounts: jax.Array, bootstrap_value: jax.Array
) -> jax.Array:
    """G_t = r_t + d_t G_{t+1}, G_T = ``bootstrap_value``; returns ``[T, ...]``.

    ``discounts[t]`` = γ(1 − terminated_t) (Sutton & Barto, 2018, eq. 3.9).
    """

    def backward(carry, inputs):
        reward, discount = inputs
        carry = reward + discount * carry
        return carry, carry

    return _reverse_scan(backward, bootstrap_value, (rewards, discounts))


def n_step_return(
    rewards: jax.Array, discounts: jax.Array, next_values: jax.Array, continues: jax.Array
) -> jax.Array:
    """The N-step return of the first step of a window of ``N`` transitions.

    G = Σ_{k<m} (Π_{j<k} d_j) r_k + (Π_{j<m} d_j) v_{m-1}, where ``m`` is the first ``k+1``
    with ``continues[k]`` False (or ``N``): the window is followed while ``continues``
    holds and bootstraps from ``next_values[m-1]`` = V(s_m). ``continues[k]`` is False at an
    episode end (terminated or truncated) or where step ``k+1`` must not be used.
    ``d_k`` = γ(1 − terminated_k). With N = 1 this is the TD target r + d·V(s');
    with N ≥ the episode's remaining length it is the full discounted return
    (Sutton & Barto, 2018, eq. 7.1). Unbatched: ``[N]`` arrays.
    """
    traces = continues.astype(rewards.dtype)
    return off_policy_n_step_return(rewards, discounts, next_values, next_values, traces)


def off_policy_n_step_return(
    rewards: jax.Array,
    discounts: jax.Array,
    next_values: jax.Array,
    next_q_taken: jax.Array,
    traces: jax.Array,
) -> jax.Array:
    """General off-policy N-step return of the first step of a window (``[N]`` arrays).

    G_k = r_k + d_k [ v_k + c_k (G_{k+1} − q_k) ],   G_{N-1} = r_{N-1} + d_{N-1} v_{N-1},

    with ``v_k`` = V̄(s_{k+1}) = E_π Q(s_{k+1}, ·), ``q_k`` = Q(s_{k+1}, a_{k+1}) and trace
    coefficient ``c_k`` for continuing from step k to k+1 (Munos et al., 2016, "Safe and
    efficient off-policy RL", eq. 3; Sutton & Barto, 2018, eq. 7.14 with control variates).
    Special cases: c = ρ_{k+1} = π/μ gives per-decision importance sampling; c = 1 with
    q = v gives the uncorrected N-step return; c = 𝟙[a_{k+1} = argmax] cuts the window at
    the first off-policy action; c = 0 gives the one-step TD target.
    """

    def backward(carry, inputs):
        reward, discount, value, q_taken, trace = inputs
        g = reward + discount * (value + trace * (carry - q_taken))
        return g, g

    last = rewards[-1] + discounts[-1] * next_values[-1]
    if rewards.shape[0] == 1:
        return last
    xs = (rewards[:-1], discounts[:-1], next_values[:-1], next_q_taken[:-1], traces[:-1])
    return _reverse_scan(backward, last, xs)[0]


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: float | jax.Array,
    lam: float | jax.Array,
) -> jax.Array:
    """Generalised advantage estimation over ``[T, ...]`` (Schulman et al., 2016, eq. 16).

    δ_t = r_t + γ(1 − terminated_t) next_values_t − values_t,
    A_t = δ_t + γλ(1 − (terminated_t ∨ truncated_t)) A_{t+1},   A_T = 0.

    ``next_values[t]`` is V of the true next observation (``final_observation`` at an
    episode end), so a truncated step bootstraps correctly and nothing of the next episode
    leaks backwards. λ = 0 gives δ_t; λ = 1 gives the Monte Carlo return minus V.
    """
    not_terminated = 1.0 - terminated.astype(rewards.dtype)
    not_done = 1.0 - (terminated | truncated).astype(rewards.dtype)
    deltas = rewards + gamma * not_terminated * next_values - values

    def backward(advantage, inputs):
        delta, continues = inputs
        advantage = delta + gamma * lam * continues * advantage
        return advantage, advantage

    return _reverse_scan(backward, jnp.zeros_like(deltas[0]), (deltas, not_done))


def lambda_return(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: float | jax.Array,
    lam: float | jax.Array,
) -> jax.Array:
    """The λ-return G^λ_t = A_t + V(s_t) with A from :func:`gae` (Sutton & Barto, 2018, §12.1)."""
    return gae(rewards, values, next_values, terminated, truncated, gamma, lam) + values
