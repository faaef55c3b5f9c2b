"""Loss terms. Unbatched elementwise functions; callers reduce (mean) over a batch."""

import jax
import jax.numpy as jnp


def squared_loss(error: jax.Array) -> jax.Array:
    """½ x², the squared TD error."""
    return 0.5 * jnp.square(error)


def huber_loss(error: jax.Array, delta: float | jax.Array = 1.0) -> jax.Array:
    """Huber (1964): ½x² for |x| ≤ δ, δ(|x| − ½δ) outside; its gradient is clip(x, −δ, δ)."""
    # Two branches under ``where`` rather than ½q² + δ(|x| − q) with q = min(|x|, δ): there the
    # gradient inside is computed as δ + (q − δ), which cancels to 0 for |x| ≪ δ.
    abs_error = jnp.abs(error)
    quadratic = 0.5 * jnp.square(error)
    linear = delta * (abs_error - 0.5 * delta)
    return jnp.where(abs_error <= delta, quadratic, linear)


def td_loss(error: jax.Array, kind: str, huber_delta: float | jax.Array = 1.0) -> jax.Array:
    """``kind`` is ``"huber"`` or ``"squared"``."""
    if kind == "huber":
        return huber_loss(error, huber_delta)
    if kind == "squared":
        return squared_loss(error)
    raise ValueError(f"loss={kind!r} is not allowed; choose one of 'huber', 'squared'")


def q_learning_target_value(
    next_q_target: jax.Array, next_q_online: jax.Array, double_q: bool
) -> jax.Array:
    """V̄(s') used by Q-learning targets, over the last (action) axis.

    DQN (Mnih et al., 2015): max_a Q_target(s', a).
    Double DQN (van Hasselt et al., 2016, eq. 4): Q_target(s', argmax_a Q_online(s', a)),
    which is ≤ the max pointwise and equal to it when online == target.
    """
    if double_q:
        greedy = jnp.argmax(next_q_online, axis=-1)
        return jnp.take_along_axis(next_q_target, greedy[..., None], axis=-1)[..., 0]
    return jnp.max(next_q_target, axis=-1)


# ----------------------------------------------------------------------------- policy gradients
#
# Objectives are written to be *maximised* (callers negate them in a loss); ``ratio`` is
# π_θ(a|s) / π_old(a|s) = exp(log π_θ − log π_old).


def importance_weighted_surrogate(ratio: jax.Array, advantage: jax.Array) -> jax.Array:
    """L(θ) = ρ A, ρ = π_θ/π_old (Kakade & Langford, 2002; Schulman et al., 2015, eq. 14).

    At θ = θ_old its gradient is the policy gradient A ∇log π_θ(a|s).
    """
    return ratio * advantage


def clipped_surrogate(
    ratio: jax.Array, advantage: jax.Array, epsilon: float | jax.Array
) -> jax.Array:
    """L^CLIP = min(ρA, clip(ρ, 1 − ε, 1 + ε) A) (Schulman et al., 2017, eq. 7).

    A pessimistic bound: L^CLIP ≤ ρA everywhere, equal (with equal gradient) at ρ = 1, and
    flat (zero gradient) where ρ > 1 + ε with A > 0 or ρ < 1 − ε with A < 0.
    """
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
    return jnp.minimum(ratio * advantage, clipped * advantage)


def value_loss(
    value: jax.Array,
    target: jax.Array,
    old_value: jax.Array | None = None,
    clip_epsilon: float | jax.Array | None = None,
) -> jax.Array:
    """½(V − G)², or with clipping max(½(V − G)², ½(V_old + clip(V − V_old, ±ε) − G)²).

    The clipped form keeps the new value within ε of the one used to collect the data
    (PPO's reference implementation; Andrychowicz et al., 2021, §3.5). ``clip_epsilon=inf``
    is the same as no clipping.
    """
    loss = 0.5 * jnp.square(value - target)
    if clip_epsilon is None or old_value is None:
        return loss
    clipped = old_value + jnp.clip(value - old_value, -clip_epsilon, clip_epsilon)
    return jnp.maximum(loss, 0.5 * jnp.square(clipped - target))


def entropy_bonus(entropy: jax.Array, coefficient: float | jax.Array) -> jax.Array:
    """c·H(π(·|s)), added to the objective to keep the policy stochastic (Williams & Peng,
    1991; Mnih et al., 2016)."""
    return coefficient * entropy


# ----------------------------------------------------------------------------- maximum entropy
#
# Soft (entropy-regularised) RL maximises E[Σ_t γ^t (r_t + α H(π(·|s_t)))] (Ziebart, 2010;
# Haarnoja et al., 2017, 2018). α > 0 is the temperature; α → 0 recovers the hard case.


def soft_value(q: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """V(s) = α log Σ_a exp(Q(s, a)/α) over the last axis (Haarnoja et al., 2017, "RL with
    deep energy-based policies", eq. 9; Schulman et al., 2017, "Equivalence between policy
    gradients and soft Q-learning", eq. 7).

    It is max_a Σ_a π(a)Q(a) + αH(π), attained by π ∝ exp(Q/α); it lies in
    [max Q, max Q + α log|A|] and tends to max Q as α → 0 (α must be > 0).
    """
    return alpha * jax.nn.logsumexp(q / alpha, axis=-1)


def policy_soft_value(
    probs: jax.Array, log_probs: jax.Array, q: jax.Array, alpha: float | jax.Array
) -> jax.Array:
    """V^π(s) = Σ_a π(a|s) [Q(s, a) − α log π(a|s)] over the last axis: the soft value of a
    discrete policy, computed exactly instead of from a sampled action (Christodoulou, 2019,
    "Soft actor-critic for discrete action settings", eq. 10). Equals :func:`soft_value`
    when π = softmax(Q/α), and is below it for any other π."""
    return jnp.sum(probs * (q - alpha * log_probs), axis=-1)


def bellman_target(
    reward: jax.Array,
    terminated: jax.Array,
    next_value: jax.Array,
    gamma: float | jax.Array,
) -> jax.Array:
    """y = r + γ (1 − terminated) V(s'), with V(s') the soft value of the *true* next
    observation (``final_observation`` on truncation): only termination cuts the bootstrap.
    Soft Q-learning uses V = :func:`soft_value` of the target network; SAC uses
    V = min_j Q̄_j(s', a') − α log π(a'|s'), a' ~ π (Haarnoja et al., 2018, eq. 3)."""
    continuation = 1.0 - jnp.asarray(terminated).astype(jnp.result_type(next_value))
    return reward + gamma * continuation * next_value


def temperature_loss(
    log_alpha: jax.Array, entropy: jax.Array, target_entropy: float | jax.Array
) -> jax.Array:
    """J(α) = α (H − H̄), minimised over log α (Haarnoja et al., 2018, "Soft actor-critic
    algorithms and applications", eq. 18: J(α) = E[−α log π(a|s) − α H̄], with H = −log π
    the entropy estimate; ``entropy`` is held fixed). Its gradient α(H − H̄) lowers α when
    the policy's entropy is above the target H̄ and raises it when below."""
    return jnp.exp(log_alpha) * jax.lax.stop_gradient(entropy - target_entropy)
