"""Three small action distributions: Categorical, diagonal Normal and tanh-Normal.

Each is an ``eqx.Module`` (a pytree) holding the parameters a policy network outputs, with
``sample``, ``log_prob``, ``entropy``, ``kl`` and ``mode``. Unbatched: the last axis is the
event axis (actions ``[A]`` logits for a Categorical, ``[D]`` means for a Normal); callers
``vmap`` over batches, or rely on broadcasting over leading axes, which every method allows.

- ``Categorical(logits)``: π(a) = softmax(logits)_a.
- ``Normal(mean, log_std)``: a diagonal Gaussian, log-prob and entropy summed over ``D``.
- ``TanhNormal(mean, log_std)``: a = tanh(u), u ~ Normal(mean, exp(log_std)), so a ∈ (−1, 1)
  (Haarnoja et al., 2018, "Soft actor-critic", appendix C):
  log π(a) = log N(u) − Σ_d log(1 − tanh²(u_d)).
  Its KL equals the Normal KL of the pre-squash variables (an invertible map preserves KL);
  its entropy has no closed form and is estimated from one reparameterised sample.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


class Categorical(eqx.Module):
    """π(a) = softmax(logits)_a over the last axis."""

    logits: jax.Array  # [..., A]

    @property
    def log_probs(self) -> jax.Array:
        return jax.nn.log_softmax(self.logits, axis=-1)

    @property
    def probs(self) -> jax.Array:
        return jax.nn.softmax(self.logits, axis=-1)

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.categorical(key, self.logits, axis=-1)

    def log_prob(self, action: jax.Array) -> jax.Array:
        """log π(a) for integer actions ``[...]``."""
        action = jnp.asarray(action).astype(jnp.int32)
        return jnp.take_along_axis(self.log_probs, action[..., None], axis=-1)[..., 0]

    def entropy(self, key: jax.Array | None = None) -> jax.Array:
        """H = −Σ_a π(a) log π(a) (exact; ``key`` is ignored)."""
        return -jnp.sum(self.probs * self.log_probs, axis=-1)

    def kl(self, other: "Categorical") -> jax.Array:
        """KL(self ‖ other) = Σ_a π(a) (log π(a) − log π'(a))."""
        return jnp.sum(self.probs * (self.log_probs - other.log_probs), axis=-1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1)


class Normal(eqx.Module):
    """A diagonal Gaussian N(mean, diag(exp(2·log_std))) over the last axis."""

    mean: jax.Array  # [..., D]
    log_std: jax.Array  # [..., D] (broadcast against mean)

    def sample(self, key: jax.Array) -> jax.Array:
        noise = jax.random.normal(key, jnp.broadcast_shapes(self.mean.shape, self.log_std.shape))
        return self.mean + jnp.exp(self.log_std) * noise

    def log_prob(self, action: jax.Array) -> jax.Array:
        """log N(a; μ, σ²) = −Σ_d [½((a − μ)/σ)² + log σ + ½ log 2π]."""
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return -jnp.sum(0.5 * jnp.square(z) + self.log_std + 0.5 * _LOG_2PI, axis=-1)

    def entropy(self, key: jax.Array | None = None) -> jax.Array:
        """H = Σ_d (log σ_d + ½ log 2πe) (exact; ``key`` is ignored)."""
        log_std = jnp.broadcast_to(self.log_std, jnp.broadcast_shapes(self.mean.shape,
                                                                      self.log_std.shape))
        return jnp.sum(log_std + 0.5 * (_LOG_2PI + 1.0), axis=-1)

    def kl(self, other: "Normal") -> jax.Array:
        """KL(N₀ ‖ N₁) = Σ_d [log σ₁/σ₀ + (σ₀² + (μ₀ − μ₁)²) / (2σ₁²) − ½]."""
        var_ratio = jnp.exp(2.0 * (self.log_std - other.log_std))
        mean_term = jnp.square((self.mean - other.mean) * jnp.exp(-other.log_std))
        return jnp.sum(0.5 * (var_ratio + mean_term - 1.0) - (self.log_std - other.log_std),
                       axis=-1)

    def mode(self) -> jax.Array:
        return self.mean


def _log_one_minus_tanh_squared(u: jax.Array) -> jax.Array:
    """log(1 − tanh²(u)) = 2 (log 2 − u − softplus(−2u)), stable for large |u|."""
    return 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))


class TanhNormal(eqx.Module):
    """a = tanh(u) with u ~ Normal(mean, exp(log_std)); actions in (−1, 1)."""

    mean: jax.Array  # [..., D] of the pre-squash Gaussian
    log_std: jax.Array

    @property
    def base(self) -> Normal:
        return Normal(self.mean, self.log_std)

    def sample(self, key: jax.Array) -> jax.Array:
        return jnp.tanh(self.base.sample(key))

    def sample_and_log_prob(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A sample and its log-prob, computed from the pre-squash u (no atanh round trip)."""
        u = self.base.sample(key)
        log_prob = self.base.log_prob(u) - jnp.sum(_log_one_minus_tanh_squared(u), axis=-1)
        return jnp.tanh(u), log_prob

    def log_prob(self, action: jax.Array, eps: float = 1e-6) -> jax.Array:
        """log π(a) = log N(atanh a) − Σ_d log(1 − a_d²) (change of variables).

        ``a`` is clipped to ±(1 − eps) so that atanh stays finite.
        """
        action = jnp.clip(action, -1.0 + eps, 1.0 - eps)
        u = jnp.arctanh(action)
        return self.base.log_prob(u) - jnp.sum(_log_one_minus_tanh_squared(u), axis=-1)

    def entropy(self, key: jax.Array) -> jax.Array:
        """A one-sample estimate of H = −E log π(a) (no closed form); needs ``key``."""
        return -self.sample_and_log_prob(key)[1]

    def kl(self, other: "TanhNormal") -> jax.Array:
        """KL of the pre-squash Normals, which equals the KL of the squashed variables."""
        return self.base.kl(other.base)

    def mode(self) -> jax.Array:
        """tanh(mean), the image of the Gaussian's mode (the usual deterministic action)."""
        return jnp.tanh(self.mean)


class ScaledTanhNormal(eqx.Module):
    """a = mid + half·tanh(u), u ~ Normal(mean, exp(log_std)): a tanh-Normal stretched onto
    the box (low, high), with mid = (high + low)/2 and half = (high − low)/2.

    The affine map adds its log-determinant to the change of variables (Haarnoja et al., 2018,
    "Soft actor-critic algorithms and applications", appendix C, with the scale term):

        log π(a) = log N(u; μ, σ²) − Σ_d log(1 − tanh²(u_d)) − Σ_d log half_d.

    rejax's SAC omits the last sum; it is a constant in the actor's loss but shifts the
    entropy that automatic temperature tuning compares with its target. ``low`` and ``high``
    broadcast against ``mean`` (one box for every leading axis).
    """

    mean: jax.Array  # [..., D] of the pre-squash Gaussian
    log_std: jax.Array
    low: jax.Array  # [D]
    high: jax.Array  # [D]

    @property
    def unit(self) -> TanhNormal:
        """The same policy on (−1, 1)^D, before the affine map."""
        return TanhNormal(self.mean, self.log_std)

    @property
    def mid(self) -> jax.Array:
        return 0.5 * (self.high + self.low)

    @property
    def half(self) -> jax.Array:
        return 0.5 * (self.high - self.low)

    def to_unit(self, action: jax.Array) -> jax.Array:
        """(a − mid) / half: a box action in (−1, 1)^D."""
        return (action - self.mid) / self.half

    def from_unit(self, unit_action: jax.Array) -> jax.Array:
        """mid + half·x: a unit action on the box."""
        return self.mid + self.half * unit_action

    def _log_scale(self) -> jax.Array:
        return jnp.sum(jnp.broadcast_to(jnp.log(self.half), self.mean.shape), axis=-1)

    def sample(self, key: jax.Array) -> jax.Array:
        return self.from_unit(self.unit.sample(key))

    def sample_and_log_prob(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A (reparameterised) sample and its log-prob, from the pre-squash u."""
        unit_action, log_prob = self.unit.sample_and_log_prob(key)
        return self.from_unit(unit_action), log_prob - self._log_scale()

    def log_prob(self, action: jax.Array, eps: float = 1e-6) -> jax.Array:
        """log π(a) by the change of variables above; the unit action is clipped to
        ±(1 − eps) so that atanh stays finite."""
        return self.unit.log_prob(self.to_unit(action), eps) - self._log_scale()

    def entropy(self, key: jax.Array) -> jax.Array:
        """A one-sample estimate of H = −E log π(a) (no closed form); needs ``key``."""
        return -self.sample_and_log_prob(key)[1]

    def kl(self, other: "ScaledTanhNormal") -> jax.Array:
        """KL of the pre-squash Normals (an invertible map preserves KL; same box assumed)."""
        return self.unit.kl(other.unit)

    def mode(self) -> jax.Array:
        """mid + half·tanh(mean), the image of the Gaussian's mode."""
        return self.from_unit(jnp.tanh(self.mean))
