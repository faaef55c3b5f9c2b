"""Learned dynamics models: deterministic and probabilistic ensembles, and a Bayesian network.

A model predicts the change of state Δs = s' − s (and, with ``learn_reward``, the reward r)
from (s, a). Inputs x = [s, a] and targets y = [Δs] (or [Δs, r]) are standardised by
normalisers fitted on the data, z = (x − mean) / max(std, min_std), so one learning rate
serves every environment; predictions are mapped back, s' = s + mean_y + std_y · ŷ.

Three kinds (``ModelConfig.kind``):

``"deterministic"``  an MLP ŷ = f_θ(x), trained on the mean squared error in normalised
    units, L(θ) = mean_batch Σ_k (f_θ(x)_k − y_k)².
``"probabilistic"``  an MLP with a Gaussian head N(μ_θ(x), diag σ²_θ(x)) trained on the
    negative log-likelihood (Chua et al., 2018, "Deep reinforcement learning in a handful of
    trials using probabilistic dynamics models", eq. 2),

        NLL = mean_batch Σ_k −log N(y_k; μ_k, σ²_k)
            = mean_batch Σ_k ½ [(y_k − μ_k)² / σ²_k + log σ²_k + log 2π].

    The raw log-variance v is soft-bounded between learnable bounds (their appendix A.1)

        v ← max_logvar − softplus(max_logvar − v),   v ← min_logvar + softplus(v − min_logvar)

    and the bounds are pulled together by a penalty, as in mbrl-lib's GaussianMLP:
    L = NLL + logvar_penalty · (Σ_k max_logvar_k − Σ_k min_logvar_k), logvar_penalty = 0.01.
    (mbrl-lib averages the NLL over output dimensions and drops ½ and log 2π; here the NLL
    is the exact one, summed over dimensions.)
``"bnn"``  a Bayesian network with a mean-field Gaussian posterior q(w) = Π_i N(w_i; m_i,
    s_i²) over every weight and bias and a prior p(w) = N(0, prior_std²), trained by
    variational inference (Blundell et al., 2015, "Weight uncertainty in neural networks"):
    each minibatch draws one set of weights by reparameterisation, w = m + s ⊙ ε, ε ~ N(0, I)
    (their §3.2), and minimises the negative ELBO per datum

        L = mean_batch NLL(y; μ_w(x), σ²_w(x)) + kl_weight · KL(q ‖ p) / N,

    with N the number of valid rows and the KL in closed form (independent Gaussians),
    KL = Σ_i [log(prior_std / s_i) + (s_i² + m_i²) / (2 prior_std²) − ½]. The predictive
    noise is *heteroscedastic*: like the probabilistic kind, the network outputs a mean and
    a soft-bounded log-variance (the bounds are point estimates, not Bayesian, and carry the
    same penalty). So a BNN prediction has both kinds of uncertainty: epistemic from the
    weight draw, aleatoric from σ²_w(x). Blundell et al. regress with a fixed noise; a
    learned heteroscedastic noise is Depeweg et al.'s (2017) choice for dynamics.

Ensembles (Lakshminarayanan et al., 2017; Chua et al., 2018): M members with independent
initialisations, each trained on its own bootstrap resample of the data (``size`` indices
drawn from [0, size) with replacement, fixed for one ``fit`` call); member j's minibatches
are drawn uniformly, with replacement, from its resample. All members are one pytree with a
leading axis M and one ``eqx.filter_vmap``-ed program computes every member's gradient; the
Adam(W) update acts elementwise, so it equals M separate optimisers. A BNN is one network
(stored with a leading axis of 1) trained on the data itself, without a resample; planning
draws ``M`` weight samples from it (``sample_members``).

Everything is jittable and vmappable over seeds: ``fit`` takes a fixed-capacity dataset and
a traced number ``size`` of valid rows (a replay buffer's written prefix), so it runs inside
the ``lax.scan`` / ``lax.cond`` of a training loop. The functions here are what PETS and
MBPO use:

    model = init(key, obs_dim, action_dim, config)
    opt_state = init_optimizer(model, config)            # = optimizer(config).init(model.members)
    model, opt_state, metrics = fit(key, model, opt_state, data, size, config,
                                    num_updates=..., batch_size=...)
    members = sample_members(key, model, M, config)       # leading axis M
    next_obs, reward = jax.vmap(predict, in_axes=(0, None, None, None, 0, None))(
        members, model, obs, action, keys, config)        # or predict per particle group

Actions are flattened to vectors and cast to float (continuous actions; a discrete action
would need a one-hot encoding first).
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..core.config import ConfigError, check_choice, check_positive_int, check_range
from ..core.distributions import Normal

KINDS = ("deterministic", "probabilistic", "bnn")
ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jax.nn.tanh, "silu": jax.nn.silu,
               "elu": jax.nn.elu}


class ModelConfig(eqx.Module):
    """Dynamics-model hyperparameters. Static fields fix shapes; the rest are leaves."""

    kind: str = eqx.field(static=True, default="probabilistic")  # deterministic|probabilistic|bnn
    ensemble_size: int = eqx.field(static=True, default=5)  # M members (bnn: weight samples)
    hidden: tuple[int, ...] = eqx.field(static=True, default=(200, 200, 200))
    activation: str = eqx.field(static=True, default="silu")  # relu | tanh | silu | elu
    learn_reward: bool = eqx.field(static=True, default=False)  # also predict r

    learning_rate: float = 1e-3  # Adam step size
    weight_decay: float = 1e-5  # decoupled weight decay (AdamW; bnn: usually 0, the KL regularises)
    logvar_penalty: float = 0.01  # coefficient of Σ max_logvar − Σ min_logvar
    init_max_logvar: float = 0.5  # initial soft upper bound of log σ² (normalised units)
    init_min_logvar: float = -10.0  # initial soft lower bound of log σ²
    min_std: float = 1e-4  # normalisers' standard deviations are floored here
    prior_std: float = 1.0  # bnn: prior N(0, prior_std²) on every weight and bias
    kl_weight: float = 1.0  # bnn: β in NLL + β KL / N
    posterior_init_std: float = 1e-2  # bnn: initial posterior standard deviation s

    def __check_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_positive_int("ensemble_size", self.ensemble_size)
        if (
            not isinstance(self.hidden, tuple)
            or not self.hidden
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.hidden)
        ):
            raise ConfigError(
                f"hidden={self.hidden!r} is not allowed; give a non-empty tuple of positive ints"
            )
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("learn_reward", self.learn_reward, (True, False))
        check_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("logvar_penalty", self.logvar_penalty, 0.0)
        check_range("init_max_logvar", self.init_max_logvar)
        check_range("init_min_logvar", self.init_min_logvar)
        check_range("min_std", self.min_std, 0.0, low_inclusive=False)
        check_range("prior_std", self.prior_std, 0.0, low_inclusive=False)
        check_range("kl_weight", self.kl_weight, 0.0)
        check_range("posterior_init_std", self.posterior_init_std, 0.0, low_inclusive=False)
        low, high = _concrete(self.init_min_logvar), _concrete(self.init_max_logvar)
        if low is not None and high is not None and not bool(np.all(low < high)):
            raise ConfigError(
                f"init_min_logvar={self.init_min_logvar} must be less than "
                f"init_max_logvar={self.init_max_logvar}"
            )

    @property
    def gaussian(self) -> bool:
        """True when the network has a Gaussian head (probabilistic and bnn)."""
        return self.kind != "deterministic"

    @property
    def num_networks(self) -> int:
        """Networks stored in ``Model.members``: M for ensembles, 1 for a BNN."""
        return 1 if self.kind == "bnn" else self.ensemble_size


def _concrete(value):
    # numpy, not jnp: inside jit every jnp operation is staged out, even on constants
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value, np.float32)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        return None


# ----------------------------------------------------------------------------- normalisers


class Normaliser(eqx.Module):
    """z = (x − mean) / std and back; ``std`` already floored at ``min_std``."""

    mean: jax.Array  # [D]
    std: jax.Array  # [D]

    def normalise(self, x: jax.Array) -> jax.Array:
        return (x - self.mean) / self.std

    def denormalise(self, z: jax.Array) -> jax.Array:
        return z * self.std + self.mean


def identity_normaliser(dim: int) -> Normaliser:
    return Normaliser(jnp.zeros((dim,), jnp.float32), jnp.ones((dim,), jnp.float32))


def fit_normaliser(x: jax.Array, size: jax.Array, min_std: float | jax.Array) -> Normaliser:
    """Mean and standard deviation over the first ``size`` rows of ``x [N, D]`` (rows ≥ size
    ignored; ``size`` may be traced), std = max(√(population variance), min_std)."""
    valid = (jnp.arange(x.shape[0]) < size)[:, None]
    count = jnp.maximum(jnp.sum(valid), 1).astype(x.dtype)
    mean = jnp.sum(jnp.where(valid, x, 0.0), axis=0) / count
    var = jnp.sum(jnp.where(valid, jnp.square(x - mean), 0.0), axis=0) / count
    return Normaliser(mean, jnp.maximum(jnp.sqrt(var), min_std))


# ----------------------------------------------------------------------------- networks


class Network(eqx.Module):
    """One MLP's parameters as plain arrays (the activation comes from the config).

    ``weights[l]`` is ``[in, out]``, ``biases[l]`` is ``[out]``. A Gaussian network's last
    layer has ``2·D`` outputs (mean, raw log-variance) and ``max_logvar``/``min_logvar``
    ``[D]`` are its learnable soft bounds; a deterministic one has ``D`` outputs and no
    bounds (``None``). Stacked, every leaf has a leading member axis.
    """

    weights: tuple[jax.Array, ...]
    biases: tuple[jax.Array, ...]
    max_logvar: jax.Array | None = None
    min_logvar: jax.Array | None = None


class Posterior(eqx.Module):
    """A BNN's mean-field Gaussian posterior q(w): a mean and a log standard deviation for
    every weight and bias of a :class:`Network`, plus the (point-estimated) log-variance
    bounds."""

    weight_mean: tuple[jax.Array, ...]
    weight_log_std: tuple[jax.Array, ...]
    bias_mean: tuple[jax.Array, ...]
    bias_log_std: tuple[jax.Array, ...]
    max_logvar: jax.Array
    min_logvar: jax.Array


class Model(eqx.Module):
    """A dynamics model: the trained parameters and the data normalisers (all arrays).

    ``members``: a :class:`Network` with leaves ``[M, ...]`` (ensembles) or a
    :class:`Posterior` with leaves ``[1, ...]`` (bnn). ``input_norm`` is over
    ``[obs, action]``, ``output_norm`` over ``[Δs]`` or ``[Δs, r]``.
    """

    members: Network | Posterior
    input_norm: Normaliser
    output_norm: Normaliser


def _layer_sizes(in_dim: int, out_dim: int, config: ModelConfig) -> tuple[int, ...]:
    return (in_dim, *config.hidden, out_dim * (2 if config.gaussian else 1))


def _init_network(key: jax.Array, in_dim: int, out_dim: int, config: ModelConfig) -> Network:
    """Weights and biases ~ U(−1/√fan_in, 1/√fan_in) (PyTorch's and Equinox's default)."""
    sizes = _layer_sizes(in_dim, out_dim, config)
    keys = jax.random.split(key, 2 * (len(sizes) - 1))
    weights, biases = [], []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / jnp.sqrt(a)
        weights.append(jax.random.uniform(keys[2 * i], (a, b), jnp.float32, -bound, bound))
        biases.append(jax.random.uniform(keys[2 * i + 1], (b,), jnp.float32, -bound, bound))
    if not config.gaussian:
        return Network(tuple(weights), tuple(biases))
    max_logvar = jnp.full((out_dim,), config.init_max_logvar, jnp.float32)
    min_logvar = jnp.full((out_dim,), config.init_min_logvar, jnp.float32)
    return Network(tuple(weights), tuple(biases), max_logvar, min_logvar)


def _init_posterior(key: jax.Array, in_dim: int, out_dim: int, config: ModelConfig) -> Posterior:
    net = _init_network(key, in_dim, out_dim, config)
    log_s = jnp.log(jnp.asarray(config.posterior_init_std, jnp.float32))
    return Posterior(
        net.weights,
        tuple(jnp.full_like(w, log_s) for w in net.weights),
        net.biases,
        tuple(jnp.full_like(b, log_s) for b in net.biases),
        net.max_logvar,
        net.min_logvar,
    )


def soft_bound_logvar(raw: jax.Array, min_logvar: jax.Array, max_logvar: jax.Array) -> jax.Array:
    """v ← max − softplus(max − v), then v ← min + softplus(v − min) (Chua et al., 2018,
    appendix A.1; mbrl-lib's GaussianMLP): smooth and increasing in v. The result is ≥ min,
    and ≤ max + δ with δ = softplus(min − max) = log(1 + e^{−(max − min)}) (the second
    softplus can lift a value already at max by δ; δ ≈ 3·10⁻⁵ for the default [−10, 0.5]):
    inside [min, max] up to that δ. It tends to max + δ as v → ∞ and to min as v → −∞."""
    v = max_logvar - jax.nn.softplus(max_logvar - raw)
    return min_logvar + jax.nn.softplus(v - min_logvar)


def network_output(
    net: Network, z: jax.Array, config: ModelConfig
) -> tuple[jax.Array, jax.Array | None]:
    """One (unstacked) network on normalised inputs ``z [..., in]``: the normalised mean
    ``[..., D]`` and the soft-bounded log-variance ``[..., D]`` (``None`` if deterministic)."""
    activation = ACTIVATIONS[config.activation]
    h = z
    for w, b in zip(net.weights[:-1], net.biases[:-1]):
        h = activation(h @ w + b)
    out = h @ net.weights[-1] + net.biases[-1]
    if not config.gaussian:
        return out, None
    mean, raw = jnp.split(out, 2, axis=-1)
    return mean, soft_bound_logvar(raw, net.min_logvar, net.max_logvar)


def sample_network(key: jax.Array, posterior: Posterior) -> Network:
    """One weight draw w = m + exp(log s) ⊙ ε, ε ~ N(0, I), from an unstacked posterior
    (Blundell et al., 2015, §3.2: differentiable in m and log s)."""
    leaves = (*posterior.weight_mean, *posterior.bias_mean)
    keys = jax.random.split(key, len(leaves))
    means = (*posterior.weight_mean, *posterior.bias_mean)
    log_stds = (*posterior.weight_log_std, *posterior.bias_log_std)
    draws = [m + jnp.exp(ls) * jax.random.normal(k, m.shape, m.dtype)
             for m, ls, k in zip(means, log_stds, keys)]
    n = len(posterior.weight_mean)
    return Network(tuple(draws[:n]), tuple(draws[n:]), posterior.max_logvar,
                   posterior.min_logvar)


def posterior_mean_network(posterior: Posterior) -> Network:
    """The network at the posterior means (no weight noise)."""
    return Network(posterior.weight_mean, posterior.bias_mean, posterior.max_logvar,
                   posterior.min_logvar)


# ----------------------------------------------------------------------------- init


def init(key: jax.Array, obs_dim: int, action_dim: int, config: ModelConfig) -> Model:
    """A fresh model; identity normalisers until the first ``fit``."""
    check_positive_int("obs_dim", obs_dim)
    check_positive_int("action_dim", action_dim)
    in_dim = obs_dim + action_dim
    out_dim = obs_dim + (1 if config.learn_reward else 0)
    make = _init_posterior if config.kind == "bnn" else _init_network
    keys = jax.random.split(key, config.num_networks)
    members = jax.vmap(lambda k: make(k, in_dim, out_dim, config))(keys)
    return Model(members, identity_normaliser(in_dim), identity_normaliser(out_dim))


def optimizer(config: ModelConfig) -> optax.GradientTransformation:
    """AdamW with the learning rate and weight decay injected as (traceable) state.

    Weight decay acts on the weight matrices only (a BNN: their posterior means), not on
    biases, log-standard-deviations or log-variance bounds (decaying a log σ would pull it
    towards σ = 1). The update is elementwise, so one optimiser over the stacked members
    equals one optimiser per member.
    """

    def chain(learning_rate, weight_decay):
        return optax.adamw(learning_rate, weight_decay=weight_decay, mask=_decay_mask)

    return optax.inject_hyperparams(chain)(
        learning_rate=config.learning_rate, weight_decay=config.weight_decay
    )


def _decay_mask(params: Network | Posterior) -> Network | Posterior:
    """True on weight matrices (posterior means of them), False elsewhere."""
    def flags(leaves, value):
        return tuple(value for _ in leaves)

    def bound(leaf):
        return None if leaf is None else False

    if isinstance(params, Posterior):
        return Posterior(flags(params.weight_mean, True), flags(params.weight_log_std, False),
                         flags(params.bias_mean, False), flags(params.bias_log_std, False),
                         False, False)
    return Network(flags(params.weights, True), flags(params.biases, False),
                   bound(params.max_logvar), bound(params.min_logvar))


def init_optimizer(model: Model, config: ModelConfig) -> optax.OptState:
    """``optimizer(config).init(model.members)``."""
    return optimizer(config).init(model.members)


# ----------------------------------------------------------------------------- losses


def gaussian_nll(mean: jax.Array, logvar: jax.Array, target: jax.Array) -> jax.Array:
    """−log N(y; μ, σ²) = ½ [(y − μ)² e^{−v} + v + log 2π], v = log σ², elementwise."""
    return 0.5 * (jnp.square(target - mean) * jnp.exp(-logvar) + logvar + jnp.log(2 * jnp.pi))


def kl_divergence(posterior: Posterior, prior_std: float | jax.Array) -> jax.Array:
    """KL(q ‖ p) summed over every weight and bias of an unstacked posterior, in closed form:
    q and p factorise into independent Gaussians, so the KL is the sum over weights of
    KL(N(m, s²) ‖ N(0, p²)) = log(p / s) + (s² + m²) / (2p²) − ½ (``core.distributions.Normal``'s
    ``kl``)."""
    means = (*posterior.weight_mean, *posterior.bias_mean)
    log_stds = (*posterior.weight_log_std, *posterior.bias_log_std)
    prior = Normal(jnp.zeros(()), jnp.log(jnp.asarray(prior_std)))
    return sum(jnp.sum(Normal(m, ls).kl(prior)) for m, ls in zip(means, log_stds))


def loss(
    params: Network | Posterior,
    z_in: jax.Array,
    z_target: jax.Array,
    key: jax.Array,
    size: jax.Array,
    config: ModelConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One member's loss on a normalised minibatch ``z_in [B, in]``, ``z_target [B, D]``.

    deterministic: mean_batch Σ_k (μ_k − y_k)²; probabilistic: mean_batch Σ_k NLL_k +
    logvar_penalty (Σ max − Σ min); bnn: the same with weights w ~ q drawn with ``key``
    (one draw per minibatch) plus kl_weight · KL(q ‖ p) / size. Returns the loss and
    ``{"mse", "kl"}`` (mse of the mean in normalised units; kl 0 unless bnn).
    """
    kl = jnp.zeros((), z_in.dtype)
    if config.kind == "bnn":
        kl = kl_divergence(params, config.prior_std)
        net = sample_network(key, params)
    else:
        net = params
    mean, logvar = network_output(net, z_in, config)
    mse = jnp.mean(jnp.sum(jnp.square(mean - z_target), axis=-1))
    if not config.gaussian:
        return mse, {"mse": mse / z_target.shape[-1], "kl": kl}
    nll = jnp.mean(jnp.sum(gaussian_nll(mean, logvar, z_target), axis=-1))
    penalty = config.logvar_penalty * (jnp.sum(net.max_logvar) - jnp.sum(net.min_logvar))
    total = nll + penalty
    if config.kind == "bnn":
        total = total + config.kl_weight * kl / jnp.maximum(size, 1).astype(kl.dtype)
    return total, {"mse": mse / z_target.shape[-1], "kl": kl}


# ----------------------------------------------------------------------------- fitting


def bootstrap_indices(key: jax.Array, size: jax.Array, capacity: int, num: int) -> jax.Array:
    """``[num, capacity]`` indices drawn uniformly from [0, size) with replacement; row j's
    first ``size`` entries are member j's bootstrap resample (the rest are spare draws, never
    read: minibatch positions are drawn from [0, size))."""
    return jax.random.randint(key, (num, capacity), 0, jnp.maximum(size, 1))


def targets(obs: jax.Array, next_obs: jax.Array, reward: jax.Array | None,
            config: ModelConfig) -> jax.Array:
    """y = [s' − s] or [s' − s, r] (rows ``[N, D]``)."""
    delta = next_obs - obs
    if config.learn_reward:
        return jnp.concatenate([delta, reward[..., None].astype(delta.dtype)], axis=-1)
    return delta


def model_inputs(obs: jax.Array, action: jax.Array) -> jax.Array:
    """x = [s, a] with the action flattened and cast to the observation's dtype."""
    action = jnp.reshape(action, (*obs.shape[:-1], -1)).astype(obs.dtype)
    return jnp.concatenate([obs, action], axis=-1)


def fit_step(
    members: Network | Posterior,
    opt_state: optax.OptState,
    z_in: jax.Array,
    z_target: jax.Array,
    keys: jax.Array,
    size: jax.Array,
    config: ModelConfig,
) -> tuple[Network | Posterior, optax.OptState, dict[str, jax.Array]]:
    """One Adam(W) update of every member on its own minibatch, in one vmapped program.

    ``members`` leaves ``[M, ...]``, ``z_in [M, B, in]``, ``z_target [M, B, D]``, ``keys
    [M]`` (each member's weight-sample key; unused unless bnn). Returns the members, the
    optimiser state and per-member ``{"loss", "mse", "kl"}`` ``[M]``.
    """

    def member(params, x, y, key):
        (value, aux), grad = jax.value_and_grad(loss, has_aux=True)(params, x, y, key, size,
                                                                      config)
        return grad, {"loss": value, **aux}

    grads, metrics = eqx.filter_vmap(member)(members, z_in, z_target, keys)
    updates, opt_state = optimizer(config).update(grads, opt_state, members)
    return optax.apply_updates(members, updates), opt_state, metrics


def fit(
    key: jax.Array,
    model: Model,
    opt_state: optax.OptState,
    data: Any,
    size: jax.Array | int,
    config: ModelConfig,
    *,
    num_updates: int,
    batch_size: int,
) -> tuple[Model, optax.OptState, dict[str, jax.Array]]:
    """Refit the normalisers on the valid rows, then ``num_updates`` minibatch updates.

    ``data``: anything with ``obs [N, d]``, ``action [N, m]``, ``next_obs [N, d]`` and
    ``reward [N]`` (``rollout.Transition``, a replay buffer's ``data``, :class:`Data`);
    only rows ``< size`` are used (``size`` may be traced; at least 1 row is assumed).
    Ensemble member j draws its minibatches from its own bootstrap resample of [0, size);
    a BNN draws from [0, size) itself. Returns the model, the optimiser state and the means
    over updates and members of ``{"model_loss", "model_mse", "model_kl"}`` (mse of the
    mean prediction in normalised units; kl only for bnn, else 0).
    """
    check_positive_int("num_updates", num_updates)
    check_positive_int("batch_size", batch_size)
    obs = jnp.asarray(data.obs)
    obs = obs.astype(jnp.promote_types(obs.dtype, jnp.float32))
    capacity = obs.shape[0]
    size = jnp.clip(jnp.asarray(size, jnp.int32), 1, capacity)
    x = model_inputs(obs, jnp.asarray(data.action))
    y = targets(obs, jnp.asarray(data.next_obs).astype(obs.dtype), jnp.asarray(data.reward),
                config)
    input_norm = fit_normaliser(x, size, config.min_std)
    output_norm = fit_normaliser(y, size, config.min_std)
    z_in, z_target = input_norm.normalise(x), output_norm.normalise(y)

    num = config.num_networks
    boot_key, loop_key = jax.random.split(key)
    if config.kind == "bnn":
        boot = jnp.broadcast_to(jnp.arange(capacity), (num, capacity))
    else:
        boot = bootstrap_indices(boot_key, size, capacity, num)

    def update(carry, step_key):
        members, opt_state = carry
        batch_key, weight_key = jax.random.split(step_key)
        positions = jax.random.randint(batch_key, (num, batch_size), 0, size)
        rows = jnp.take_along_axis(boot, positions, axis=1)
        members, opt_state, metrics = fit_step(
            members, opt_state, z_in[rows], z_target[rows],
            jax.random.split(weight_key, num), size, config,
        )
        return (members, opt_state), jax.tree.map(jnp.mean, metrics)

    (members, opt_state), metrics = jax.lax.scan(
        update, (model.members, opt_state), jax.random.split(loop_key, num_updates)
    )
    model = Model(members, input_norm, output_norm)
    return model, opt_state, {
        "model_loss": jnp.mean(metrics["loss"]),
        "model_mse": jnp.mean(metrics["mse"]),
        "model_kl": jnp.mean(metrics["kl"]),
    }


class Data(eqx.Module):
    """A batch of transitions, leaves ``[N, ...]``: what ``fit`` reads."""

    obs: jax.Array
    action: jax.Array
    next_obs: jax.Array
    reward: jax.Array


# ----------------------------------------------------------------------------- prediction


def sample_members(key: jax.Array, model: Model, num: int, config: ModelConfig) -> Network:
    """The ``num`` networks planning propagates particles through, leaves ``[num, ...]``:
    the ensemble itself (``num`` must equal M; ``key`` unused) or, for a BNN, ``num``
    weight draws from q(w)."""
    if config.kind != "bnn":
        if num != config.ensemble_size:
            raise ConfigError(
                f"num={num} must equal ensemble_size={config.ensemble_size} for a "
                f"{config.kind} ensemble"
            )
        return model.members
    posterior = jax.tree.map(lambda leaf: leaf[0], model.members)
    return jax.vmap(sample_network, in_axes=(0, None))(jax.random.split(key, num), posterior)


def predict(
    member: Network,
    model: Model,
    obs: jax.Array,
    action: jax.Array,
    key: jax.Array,
    config: ModelConfig,
    *,
    sample: bool = True,
) -> tuple[jax.Array, jax.Array | None]:
    """One member's prediction for ``obs [..., d]``, ``action [..., m]`` (any leading axes).

    next_obs = obs + denormalise(μ + σ ε) with ε ~ N(0, I) drawn from ``key`` when the model
    is Gaussian and ``sample``, else obs + denormalise(μ). Returns ``(next_obs [..., d],
    reward [...])``, reward ``None`` unless ``learn_reward``. Call under ``jax.vmap`` over
    the members' leading axis (``member`` here is one unstacked :class:`Network`).
    """
    z = model.input_norm.normalise(model_inputs(obs, action))
    mean, logvar = network_output(member, z, config)
    if config.gaussian and sample:
        mean = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
    y = model.output_norm.denormalise(mean)
    d = obs.shape[-1]
    next_obs = obs + y[..., :d]
    return next_obs, (y[..., d] if config.learn_reward else None)


def predict_mean(
    members: Network,
    model: Model,
    obs: jax.Array,
    action: jax.Array,
    key: jax.Array,
    config: ModelConfig,
) -> tuple[jax.Array, jax.Array | None]:
    """The average over stacked ``members`` of each member's mean prediction (no noise;
    ``key`` unused): the ensemble-mean model."""
    next_obs, reward = jax.vmap(
        lambda m: predict(m, model, obs, action, key, config, sample=False)
    )(members)
    return jnp.mean(next_obs, axis=0), (None if reward is None else jnp.mean(reward, axis=0))


def mean_members(model: Model, config: ModelConfig) -> Network:
    """The stacked networks with no weight noise: the ensemble, or the BNN's posterior-mean
    network (leading axis 1)."""
    if config.kind == "bnn":
        return jax.vmap(posterior_mean_network)(model.members)
    return model.members


# ----------------------------------------------------------------------------- MBPO's pieces


def action_features(action: jax.Array, num_actions: int | None = None) -> jax.Array:
    """The model's action input ``[..., m]``: a discrete action (an integer ``[...]``, with
    ``num_actions`` given) as a one-hot vector of length ``num_actions`` (an index is a
    label, not a magnitude: action 2 is not twice action 1); a continuous action ``[..., m]``
    unchanged (``num_actions`` None). ``fit`` and ``predict`` flatten what they are given, so
    a model of a discrete-action env is built with ``action_dim = num_actions`` and always
    fed through here."""
    if num_actions is None:
        return action
    return jax.nn.one_hot(action, num_actions, dtype=jnp.float32)


def holdout_split(
    key: jax.Array, size: jax.Array, capacity: int, fraction: float | jax.Array,
    max_holdout: int,
) -> tuple[jax.Array, jax.Array]:
    """A random split of the valid rows [0, size) into held-out and training rows.

    Returns ``(order [capacity], num_holdout)``: ``order`` lists the valid rows in a uniformly
    random order, then the invalid ones; its first ``num_holdout = min(⌊size · fraction⌋,
    max_holdout)`` entries are held out (never trained on), entries ``num_holdout … size − 1``
    are the training rows. ``size`` and ``fraction`` may be traced."""
    size = jnp.asarray(size, jnp.int32)
    scores = jnp.where(jnp.arange(capacity) < size, jax.random.uniform(key, (capacity,)), 2.0)
    order = jnp.argsort(scores)  # ties (the invalid rows, score 2) keep their order
    num = jnp.floor(size.astype(jnp.float32) * fraction).astype(jnp.int32)
    return order, jnp.clip(num, 0, jnp.minimum(max_holdout, jnp.maximum(size - 1, 0)))


def holdout_mse(
    model: Model, data: Any, rows: jax.Array, mask: jax.Array, config: ModelConfig
) -> jax.Array:
    """Each member's mean squared error of its mean prediction on the rows ``rows [R]`` of
    ``data`` where ``mask [R]``, in normalised target units (the model's own output
    normaliser, so every output dimension counts alike): ``[M]``, the held-out loss that
    ranks the members (MBPO's elite selection; jannerm/mbpo and mbrl-lib rank by the MSE of
    the mean too). Zeros when no row is masked in."""
    obs = jnp.asarray(data.obs)[rows]
    obs = obs.astype(jnp.promote_types(obs.dtype, jnp.float32))
    x = model_inputs(obs, jnp.asarray(data.action)[rows])
    y = targets(obs, jnp.asarray(data.next_obs)[rows].astype(obs.dtype),
                jnp.asarray(data.reward)[rows], config)
    z_in, z_target = model.input_norm.normalise(x), model.output_norm.normalise(y)

    def member(net):
        mean, _ = network_output(net, z_in, config)
        return jnp.mean(jnp.square(mean - z_target), axis=-1)  # [R]

    errors = jax.vmap(member)(mean_members(model, config))  # [M, R]
    weight = mask.astype(errors.dtype)
    return jnp.sum(errors * weight, axis=-1) / jnp.maximum(jnp.sum(weight), 1.0)


def fit_with_holdout(
    key: jax.Array,
    model: Model,
    opt_state: optax.OptState,
    data: Any,
    size: jax.Array | int,
    config: ModelConfig,
    *,
    num_updates: int,
    batch_size: int,
    holdout_fraction: float | jax.Array,
    max_holdout: int,
) -> tuple[Model, optax.OptState, dict[str, jax.Array], jax.Array]:
    """:func:`fit` on the training rows of a random split (:func:`holdout_split`), then each
    member's :func:`holdout_mse` on the held-out rows.

    The held-out rows take no part in the fit: neither in the normalisers nor in any
    minibatch (``fit`` sees the data reordered with the training rows first and ``size −
    num_holdout`` valid rows). Returns the model, the optimiser state, ``fit``'s metrics plus
    ``holdout_mse`` (the members' mean) and the per-member held-out losses ``[M]``.
    """
    check_positive_int("max_holdout", max_holdout)
    split_key, fit_key = jax.random.split(key)
    capacity = jnp.asarray(data.obs).shape[0]
    size = jnp.clip(jnp.asarray(size, jnp.int32), 1, capacity)
    order, num_holdout = holdout_split(split_key, size, capacity, holdout_fraction, max_holdout)
    train_rows = order[(jnp.arange(capacity) + num_holdout) % capacity]
    train = Data(*(jnp.asarray(getattr(data, f))[train_rows]
                   for f in ("obs", "action", "next_obs", "reward")))
    model, opt_state, metrics = fit(fit_key, model, opt_state, train, size - num_holdout, config,
                                    num_updates=num_updates, batch_size=batch_size)
    rows = order[:min(max_holdout, capacity)]
    mask = jnp.arange(rows.shape[0]) < num_holdout
    losses = holdout_mse(model, data, rows, mask, config)
    return model, opt_state, {**metrics, "holdout_mse": jnp.mean(losses)}, losses


def elites(losses: jax.Array, num: int) -> jax.Array:
    """The indices ``[num]`` of the ``num`` members with the lowest held-out losses, best
    first (MBPO's elites; ties go to the lower index)."""
    return jnp.argsort(losses, stable=True)[:num]


def select_members(model: Model, indices: jax.Array) -> Model:
    """The model restricted to the members ``indices [E]`` (same normalisers)."""
    return Model(jax.tree.map(lambda x: x[indices], model.members), model.input_norm,
                 model.output_norm)
