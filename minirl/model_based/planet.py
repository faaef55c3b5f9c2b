"""PlaNet: a recurrent state-space model (RSSM) learned from pixels, and planning with the
cross-entropy method in its latent space (Hafner et al., 2019, "Learning latent dynamics
for planning from pixels").

The belief about the env at control step t is b_t = (h_t, s_t): a deterministic GRU path
h_t and a stochastic Gaussian state s_t. With embeddings e_t = enc(o_t),

    deterministic   h_t = GRU(h_{t−1}, φ([s_{t−1}, a_{t−1}])),        h_0 = 0
    prior           p(s_t | h_t)       = N(μ_p(h_t), σ_p(h_t)²)
    posterior       q(s_t | h_t, o_t)  = N(μ_q(h_t, e_t), σ_q(h_t, e_t)²)
    decoder         p(o_t | h_t, s_t)  = N(dec(h_t, s_t), σ_o² I)
    reward          p(r_t | h_t, s_t)  = N(rew(h_t, s_t), 1)

(σ = softplus(·) + ``min_std``). A window of T control steps (observations o_0 … o_T,
actions a_0 … a_{T−1}, rewards r_1 … r_T, the reward of a_{t−1} attributed to step t)
trains the sequence ELBO, a lower bound on log p(o_{0:T}, r_{1:T} | a_{0:T−1}), with
s_t ~ q reparameterised:

    ELBO = Σ_t E_q[ log p(o_t | h_t, s_t) + log p(r_t | h_t, s_t) ]
           − Σ_t max(KL(q(s_t | h_t, o_t) ‖ p(s_t | h_t)), free_nats)

(paper eq. 3; the KL of two diagonal Gaussians is closed form, ``core.distributions``'
``Normal.kl``; free nats (Kingma et al., 2016): the KL of a step costs at least
``free_nats`` and has zero gradient below it, so the posterior is not squeezed onto the
prior before the model explains the images). ``learn``
takes one Adam step on the negative ELBO averaged over the valid steps of a batch of
windows (steps past an episode end or past the newest data are masked out).

Free nats per step (``free_nats_mode="step"``, the default) is what PlaNet's code does
(google-research/planet, ``compute_losses``: max(free_nats, KL) per step, then the mean over
valid steps); Dreamer's code clips the KL averaged over batch and time instead, max(mean KL,
free_nats) (``"mean"``), so once the mean passes free_nats every step's KL is pushed
towards the prior, also the steps below it. On the pixel-Pendulum learning test (4 seeds,
medians from first seeds 0 and 1) "step" scored −502.8 and −516.0, "mean" −513.8 and −607.1
(the eight seeds' medians −502.8 against −578.3), so "step" stays the default.

Acting (model-predictive control) is one policy with memory, :func:`act_with_memory`, which
training runs with exploration and ``minirl eval`` / the in-program evaluation run greedily
(``docs/design.md`` §1, policies with memory). Its memory is the filtering belief b_t, the
shifted previous plan and the last action; at each control step it folds in the new
observation, h_{t+1} = GRU(h_t, φ([s_t, a_t])), s_{t+1} = μ_q(h_{t+1}, e_{t+1}) (the
posterior mean; a new episode restarts from h = 0), then CEM
(``minirl.planning.shooting.cem``, unchanged) searches action sequences a_{t:t+H} in the
latent space, stepping the prior's mean, s_{k+1} = μ_p(h_{k+1}), with cost −rew(h, s),
warm-started by the previous plan shifted; the first action is taken (plus Gaussian
exploration noise in training). Each action is held for ``action_repeat`` env steps by
acting in ``acting_env(env, config)`` = ``rollout.ActionRepeat(env, action_repeat)``, whose
one step is a control step (rewards summed). Env steps are counted as ``action_repeat``
per control step (as PlaNet and Dreamer report them; an episode's last control step may
hold fewer). The first ``learning_starts`` env steps take uniform random actions (the
paper's seed episodes).

Sizes are scaled far down from the paper (stochastic 30, deterministic 200, 64×64 RGB, CEM
12 × 1000 × 10, conv encoder/decoder) to fit a CPU: grayscale images of a few hundred
pixels, MLP encoder and decoder, a 64-unit GRU, CEM 12 × 200 × 4. Observations are the
images of ``minirl.envs.PixelObservations`` in [0, 1], shifted by −½.

``act(params, obs, key, config)`` is the same policy from one observation and no history
(the belief filtered from h = 0 on that single image: it cannot see a pendulum's velocity).

Contract (docs/design.md): ``Config``, ``Learner``, ``State``, ``init``, ``learn``,
``step``, ``train``, ``act``, and the optional ``acting_env``, ``initial_memory`` and
``act_with_memory``; ``learn`` needs no env (posterior samples come from the learner's
key). The env is a pixel env, e.g. ``minirl.envs.make("Pendulum-v1-pixels")``,
which is ``PixelObservations(gymnax Pendulum-v1, size=16, grayscale=True)``.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..core import buffer as replay
from ..core import nets, off_policy, rollout
from ..core.config import ConfigError, check_choice, check_positive_int, check_range
from ..core.distributions import Normal
from ..core.optim import adam_with_clipping
from ..planning import shooting

ACTION_KIND = "continuous"
OBSERVATIONS = "pixels"  # images [H, W, C] (e.g. "Pendulum-v1-pixels")
ACTIVATIONS = {"relu": jax.nn.relu, "elu": jax.nn.elu, "silu": jax.nn.silu}


class Config(eqx.Module):
    """PlaNet hyperparameters. Static fields fix shapes, loop lengths and switches; the rest
    are leaves. Steps count env steps; one control step is ``action_repeat`` env steps."""

    total_steps: int = eqx.field(static=True, default=10_000)  # env steps, all envs together
    num_envs: int = eqx.field(static=True, default=1)  # parallel environments
    action_repeat: int = eqx.field(static=True, default=4)  # env steps per control step
    rollout_steps: int = eqx.field(static=True, default=50)  # control steps per iteration
    gradient_steps: int = eqx.field(static=True, default=50)  # ELBO updates per iteration
    batch_size: int = eqx.field(static=True, default=16)  # windows per update
    sequence_length: int = eqx.field(static=True, default=16)  # control steps per window
    buffer_size: int = eqx.field(static=True, default=100_000)  # control steps kept
    learning_starts: int = eqx.field(static=True, default=1_000)  # random env steps first
    deterministic_size: int = eqx.field(static=True, default=64)  # |h|
    stochastic_size: int = eqx.field(static=True, default=16)  # |s|
    hidden: int = eqx.field(static=True, default=128)  # width of every MLP layer
    embedding_size: int = eqx.field(static=True, default=128)  # |enc(o)|
    activation: str = eqx.field(static=True, default="elu")  # relu | elu | silu
    horizon: int = eqx.field(static=True, default=12)  # CEM: H control steps
    num_samples: int = eqx.field(static=True, default=200)  # CEM: sequences per iteration
    num_elites: int = eqx.field(static=True, default=20)  # CEM: elites
    cem_iterations: int = eqx.field(static=True, default=4)  # CEM: iterations
    # free nats on each step's KL ("step": Σ_t max(KL_t, F), PlaNet's code) or on the KL
    # averaged over the valid steps of the batch ("mean": max(mean KL, F), Dreamer's code)
    free_nats_mode: str = eqx.field(static=True, default="step")

    learning_rate: float = 1e-3  # Adam step size
    max_grad_norm: float = 100.0  # global-norm gradient clipping (inf: off)
    adam_eps: float = 1e-4
    free_nats: float = 3.0  # the KL costs at least this (per step, or its mean: below)
    kl_scale: float = 1.0  # β on the KL term
    decoder_std: float = 1.0  # σ_o of the Gaussian image model
    reward_scale: float = 1.0  # rewards are modelled (and planned) times this
    min_std: float = 0.1  # floor of the prior's and posterior's σ
    exploration_noise: float = 0.3  # σ of the behaviour's Gaussian noise (unit box)
    cem_init_std: float = 1.0  # CEM's initial σ (unit box)
    cem_smoothing: float = 0.0  # CEM's β

    def __check_init__(self) -> None:
        for name in ("total_steps", "num_envs", "action_repeat", "rollout_steps",
                     "gradient_steps", "batch_size", "sequence_length", "buffer_size",
                     "deterministic_size", "stochastic_size", "hidden", "embedding_size",
                     "horizon", "cem_iterations"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("learning_starts", self.learning_starts, minimum=0)
        check_positive_int("num_samples", self.num_samples, minimum=2)
        check_positive_int("num_elites", self.num_elites)
        if self.num_elites > self.num_samples:
            raise ConfigError(
                f"num_elites={self.num_elites} exceeds num_samples={self.num_samples}; "
                "allowed: 1 ≤ num_elites ≤ num_samples"
            )
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("free_nats_mode", self.free_nats_mode, ("step", "mean"))
        if self.buffer_size % self.num_envs:
            raise ConfigError(
                f"buffer_size={self.buffer_size} must be a multiple of num_envs={self.num_envs}"
            )
        if self.sequence_length * self.num_envs > self.buffer_size:
            raise ConfigError(
                f"sequence_length={self.sequence_length} (× num_envs) exceeds "
                f"buffer_size={self.buffer_size}"
            )
        if self.total_steps < self.steps_per_iteration:
            raise ConfigError(
                f"total_steps={self.total_steps} is less than one iteration (num_envs × "
                f"rollout_steps × action_repeat = {self.steps_per_iteration})"
            )
        check_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False,
                    allow_inf=True)
        check_range("adam_eps", self.adam_eps, 0.0, low_inclusive=False)
        check_range("free_nats", self.free_nats, 0.0)
        check_range("kl_scale", self.kl_scale, 0.0)
        check_range("decoder_std", self.decoder_std, 0.0, low_inclusive=False)
        check_range("reward_scale", self.reward_scale, 0.0, low_inclusive=False)
        check_range("min_std", self.min_std, 0.0, low_inclusive=False)
        check_range("exploration_noise", self.exploration_noise, 0.0)
        check_range("cem_init_std", self.cem_init_std, 0.0, low_inclusive=False)
        check_range("cem_smoothing", self.cem_smoothing, 0.0, 1.0, high_inclusive=False)

    @property
    def steps_per_iteration(self) -> int:
        """Env steps per iteration: ``num_envs × rollout_steps × action_repeat``."""
        return self.num_envs * self.rollout_steps * self.action_repeat

    @property
    def num_iterations(self) -> int:
        """Iterations of ``step``; each collects ``steps_per_iteration`` env steps."""
        return self.total_steps // self.steps_per_iteration


PRESETS: dict[str, dict[str, Any]] = {
    # Pixel Pendulum, ``envs.make("Pendulum-v1-pixels")`` = PixelObservations(Pendulum-v1,
    # size=16, grayscale=True). Checked by tests/model_based/test_planet_learning.py (10k env
    # steps, median of 4 seeds ≥ −700; numbers there). Rewards ×0.3: a control step's reward
    # (4 env steps) is in [−20, 0]. Anything not listed uses the defaults.
    "Pendulum-v1-pixels": dict(total_steps=10_000, gradient_steps=100, learning_rate=2e-3,
                               reward_scale=0.3, decoder_std=0.2, exploration_noise=0.2),
}

def preset(env_id: str) -> dict[str, Any]:
    """Documented per-environment overrides of the defaults (``{}`` if none); the pixel id
    and the id of the env it draws share one preset."""
    if not env_id.endswith("-pixels"):
        env_id += "-pixels"
    return dict(PRESETS.get(env_id, {}))


# ----------------------------------------------------------------------------- the model


def free_nats_kl(kl: jax.Array, free_nats: float | jax.Array) -> jax.Array:
    """max(KL, free_nats): a step's KL costs at least ``free_nats``; below it the gradient
    is zero."""
    return jnp.maximum(kl, free_nats)


def gaussian_log_prob(x, mean, std) -> jax.Array:
    """log N(x; μ, σ² I) summed over the last axis (``core.distributions.Normal``)."""
    return Normal(mean, jnp.log(std)).log_prob(x)


class Belief(eqx.Module):
    """b = (h, s): the deterministic and stochastic parts of the latent state."""

    h: jax.Array  # [..., deterministic_size]
    s: jax.Array  # [..., stochastic_size]


class RSSM(eqx.Module):
    """Encoder, recurrent transition (GRU and prior), posterior, decoder and reward model.
    Every function acts on one unbatched item (callers ``vmap``)."""

    encoder: nets.MLP  # image → e
    pre_gru: eqx.nn.Linear  # [s, a] → GRU input
    gru: eqx.nn.GRUCell
    prior_net: nets.MLP  # h → (μ_p, σ_p)
    posterior_net: nets.MLP  # [h, e] → (μ_q, σ_q)
    decoder: nets.MLP  # [h, s] → image mean
    reward_net: nets.MLP  # [h, s] → reward mean
    obs_shape: tuple[int, ...] = eqx.field(static=True)
    activation: Any = eqx.field(static=True)

    def __init__(self, key, obs_shape, action_dim: int, config: Config):
        keys = jax.random.split(key, 7)
        act = ACTIVATIONS[config.activation]
        obs_size = 1
        for d in obs_shape:
            obs_size *= d
        D, S, W = config.deterministic_size, config.stochastic_size, config.hidden
        self.encoder = nets.MLP(obs_size, config.embedding_size, (W,), keys[0], act)
        self.pre_gru = eqx.nn.Linear(S + action_dim, W, key=keys[1])
        self.gru = eqx.nn.GRUCell(W, D, key=keys[2])
        self.prior_net = nets.MLP(D, 2 * S, (W,), keys[3], act)
        self.posterior_net = nets.MLP(D + config.embedding_size, 2 * S, (W,), keys[4], act)
        self.decoder = nets.MLP(D + S, obs_size, (W,), keys[5], act)
        self.reward_net = nets.MLP(D + S, 1, (W,), keys[6], act)
        self.obs_shape = tuple(obs_shape)
        self.activation = act

    def embed(self, obs: jax.Array) -> jax.Array:
        return self.encoder(jnp.ravel(obs).astype(jnp.float32) - 0.5)

    def transition(self, belief: Belief, action: jax.Array) -> jax.Array:
        """h' = GRU(h, φ([s, a]))."""
        x = self.activation(self.pre_gru(jnp.concatenate([belief.s, action])))
        return self.gru(x, belief.h)

    def prior(self, h: jax.Array, min_std) -> tuple[jax.Array, jax.Array]:
        mean, raw = jnp.split(self.prior_net(h), 2)
        return mean, jax.nn.softplus(raw) + min_std

    def posterior(self, h, embedding, min_std) -> tuple[jax.Array, jax.Array]:
        mean, raw = jnp.split(self.posterior_net(jnp.concatenate([h, embedding])), 2)
        return mean, jax.nn.softplus(raw) + min_std

    def decode(self, belief: Belief) -> jax.Array:
        """The image mean, shifted back to [0, 1] coordinates, shape ``obs_shape``."""
        out = self.decoder(jnp.concatenate([belief.h, belief.s])) + 0.5
        return out.reshape(self.obs_shape)

    def reward(self, belief: Belief) -> jax.Array:
        return self.reward_net(jnp.concatenate([belief.h, belief.s]))[0]


def imagine(model: RSSM, belief: Belief, actions: jax.Array, min_std) -> tuple[Belief, jax.Array]:
    """The prior's mean rollout from ``belief`` under ``actions`` [H, m]: beliefs b_1 … b_H
    (leaves [H, ...]) and predicted rewards [H] (what the planner sees)."""

    def one(b, a):
        h = model.transition(b, a)
        mean, _ = model.prior(h, min_std)
        nb = Belief(h, mean)
        return nb, (nb, model.reward(nb))

    _, (beliefs, rewards) = jax.lax.scan(one, belief, actions)
    return beliefs, rewards


def filter_step(model: RSSM, belief: Belief, action, obs, first, min_std) -> Belief:
    """The acting belief after ``action`` and the next observation: h' = GRU(h, φ([s, a]))
    (h' = 0 where ``first``: a new episode), s' = μ_q(h', enc(obs))."""
    h = model.transition(belief, action)
    h = jnp.where(first, jnp.zeros_like(h), h)
    mean, _ = model.posterior(h, model.embed(obs), min_std)
    return Belief(h, mean)


def initial_belief(model: RSSM, obs, min_std) -> Belief:
    """The belief from one observation and no history: h = 0, s = μ_q(0, enc(obs))."""
    h = jnp.zeros(model.gru.hidden_size)
    mean, _ = model.posterior(h, model.embed(obs), min_std)
    return Belief(h, mean)


class Sequences(eqx.Module):
    """A batch of windows of consecutive control steps: transitions with leaves [B, T, ...]
    and ``valid`` [B, T] (False past the newest data; ``buffer.sample_sequences``)."""

    data: rollout.Transition
    valid: jax.Array


def step_mask(batch: Sequences) -> jax.Array:
    """[B, T]: window item k counts if it is valid and no episode ended at an item < k."""
    done = batch.data.terminated | batch.data.truncated
    ended_before = jnp.cumsum(done, axis=1) - done
    return batch.valid & (ended_before == 0)


def observe(model: RSSM, key, obs0, actions, next_obs, min_std):
    """Posterior filtering of one window: from h_0 = 0 and o_0, then o'_k after a_k.

    Returns per step t = 0 … T (leaves [T+1, ...]): the posterior belief samples, and the
    posterior and prior (mean, std)."""
    keys = jax.random.split(key, actions.shape[0] + 1)
    h0 = jnp.zeros(model.gru.hidden_size)
    pm0, ps0 = model.prior(h0, min_std)
    qm0, qs0 = model.posterior(h0, model.embed(obs0), min_std)
    s0 = qm0 + qs0 * jax.random.normal(keys[0], qm0.shape)
    b0 = Belief(h0, s0)

    def one(b, inputs):
        a, o, k = inputs
        h = model.transition(b, a)
        pm, ps = model.prior(h, min_std)
        qm, qs = model.posterior(h, model.embed(o), min_std)
        s = qm + qs * jax.random.normal(k, qm.shape)
        nb = Belief(h, s)
        return nb, (nb, qm, qs, pm, ps)

    _, (bs, qm, qs, pm, ps) = jax.lax.scan(one, b0, (actions, next_obs, keys[1:]))
    cat = lambda first, rest: jnp.concatenate([first[None], rest])  # noqa: E731
    beliefs = jax.tree.map(cat, b0, bs)
    return beliefs, (cat(qm0, qm), cat(qs0, qs)), (cat(pm0, pm), cat(ps0, ps))


def elbo_terms(model: RSSM, key, batch: Sequences, config: Config) -> dict[str, jax.Array]:
    """Per step t = 0 … T of every window ([B, T+1] each): image log-likelihood, reward
    log-likelihood (0 at t = 0), KL(q ‖ p), and the step weights (mask)."""
    data = batch.data
    B, T = data.reward.shape
    keys = jax.random.split(key, B)
    beliefs, (qm, qs), (pm, ps) = jax.vmap(observe, in_axes=(None, 0, 0, 0, 0, None))(
        model, keys, data.obs[:, 0], data.action, data.next_obs, config.min_std
    )
    images = jnp.concatenate([data.obs[:, :1], data.next_obs], axis=1)  # [B, T+1, ...]
    decoded = jax.vmap(jax.vmap(model.decode))(beliefs)
    flat = lambda x: x.reshape(B, T + 1, -1)  # noqa: E731
    image_ll = gaussian_log_prob(flat(images), flat(decoded), config.decoder_std)
    predicted = jax.vmap(jax.vmap(model.reward))(beliefs)[:, 1:]
    target = data.reward * config.reward_scale
    reward_ll = -0.5 * (target - predicted) ** 2 - 0.5 * jnp.log(2.0 * jnp.pi)
    reward_ll = jnp.concatenate([jnp.zeros((B, 1)), reward_ll], axis=1)
    kl = Normal(qm, jnp.log(qs)).kl(Normal(pm, jnp.log(ps)))  # KL(q ‖ p), summed over s
    mask = jnp.concatenate([jnp.ones((B, 1), bool), step_mask(batch)], axis=1)
    return {"image_ll": image_ll, "reward_ll": reward_ll, "kl": kl,
            "mask": mask.astype(jnp.float32)}


def loss(model: RSSM, key, batch: Sequences, config: Config):
    """The negative ELBO per valid step, averaged over the valid steps of the batch:
    mean(−log p(o) − log p(r)) + β mean(max(KL, free_nats)) (``free_nats_mode="step"``) or
    + β max(mean(KL), free_nats) (``"mean"``); and the mean terms."""
    terms = elbo_terms(model, key, batch, config)
    mask = terms["mask"]
    count = jnp.maximum(jnp.sum(mask), 1.0)
    mean = lambda x: jnp.sum(x * mask) / count  # noqa: E731
    if config.free_nats_mode == "mean":
        total = (mean(-terms["image_ll"] - terms["reward_ll"])
                 + config.kl_scale * free_nats_kl(mean(terms["kl"]), config.free_nats))
    else:
        kl_cost = config.kl_scale * free_nats_kl(terms["kl"], config.free_nats)
        total = mean(-terms["image_ll"] - terms["reward_ll"] + kl_cost)
    return total, {"image_nll": -mean(terms["image_ll"]),
                   "reward_nll": -jnp.sum(terms["reward_ll"] * mask) / jnp.maximum(
                       jnp.sum(mask[:, 1:]), 1.0),
                   "kl": mean(terms["kl"])}


# ----------------------------------------------------------------------------- state


class Params(eqx.Module):
    """What ``act`` needs: the model and the action box."""

    model: RSSM
    low: jax.Array  # [m]
    high: jax.Array  # [m]


class Learner(eqx.Module):
    """What ``learn`` reads and writes: the model (in ``params``), Adam's state, an update
    counter and the key of the posterior samples."""

    params: Params
    opt_state: optax.OptState
    updates: jax.Array  # int32
    key: jax.Array


class Memory(eqx.Module):
    """What the policy carries from one control step to the next (leaves ``[E, ...]`` in
    ``State``): the belief filtered through the last observation, the last plan shifted
    (CEM's warm start, unit box) and the action taken after it."""

    belief: Belief
    plan: jax.Array  # [H, m]
    action: jax.Array  # [m], box units


class State(eqx.Module):
    learner: Learner
    buffer: replay.ReplayBuffer  # control-step transitions, time-major across num_envs
    env: rollout.EnvCarry  # the envs as planet acts in them (acting_env)
    memory: Memory  # [E, ...]: each env's policy memory
    first: jax.Array  # [E] bool: the current observation starts an episode
    key: jax.Array
    env_steps: jax.Array  # int32: env steps (action_repeat per control step)


def _optimizer(config: Config) -> optax.GradientTransformation:
    return adam_with_clipping(config.learning_rate, config.max_grad_norm, config.adam_eps)


def acting_env(env: Any, config: Config) -> Any:
    """The env as planet acts in it: each action held for ``action_repeat`` steps
    (``rollout.ActionRepeat``), so one step of it is one control step."""
    return env if config.action_repeat == 1 else rollout.ActionRepeat(env, config.action_repeat)


def _check_model(model: Any, obs_shape: tuple[int, ...], action_dim: int,
                 config: Config) -> None:
    for method in ("embed", "transition", "prior", "posterior", "decode", "reward"):
        if not callable(getattr(model, method, None)):
            raise ConfigError(f"network has no method {method!r}; planet needs an RSSM-like "
                              "module (embed, transition, prior, posterior, decode, reward)")
    obs = jax.ShapeDtypeStruct(obs_shape, jnp.float32)
    nets.check_output("network.embed", model.embed, (obs,), [(config.embedding_size,)])
    h, s = (config.deterministic_size,), (config.stochastic_size,)
    nets.check_output("network.decode", lambda h, s: model.decode(Belief(h, s)), (h, s),
                      [obs_shape])
    nets.check_output("network.reward", lambda h, s: model.reward(Belief(h, s)), (h, s), [()])
    nets.check_output("network.transition",
                      lambda h, s, a: model.transition(Belief(h, s), a), (h, s, (action_dim,)),
                      [h])


def init(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> State:
    """A fresh run: a random RSSM, Adam, an empty buffer and ``num_envs`` reset envs.
    ``network`` is a user's RSSM-like module (the methods of :class:`RSSM`, e.g. a subclass
    with a convolutional encoder) or a factory ``key -> module``."""
    rollout.require_action_kind(env, env_params, ACTION_KIND, "planet")
    action_shape = rollout.action_shape(env, env_params)
    if len(action_shape) != 1:
        raise ConfigError(f"env action shape {action_shape}: planet needs a 1-d action box")
    obs_shape = rollout.observation_shape(env, env_params)
    if len(obs_shape) != 3:
        raise ConfigError(
            f"env observation shape {obs_shape}: planet learns from images [H, W, C]; use a "
            "pixel env, e.g. envs.make('Pendulum-v1-pixels')"
        )
    model_key, env_key, learn_key, key = jax.random.split(key, 4)
    model = nets.resolve(network, model_key,
                         lambda k: RSSM(k, obs_shape, action_shape[0], config))
    _check_model(model, obs_shape, action_shape[0], config)
    model = nets.arrays_only(model)
    low, high = rollout.action_bounds(env, env_params)
    params = Params(model, low, high)
    learner = Learner(
        params=params,
        opt_state=_optimizer(config).init(eqx.filter(model, eqx.is_array)),
        updates=jnp.zeros((), jnp.int32),
        key=learn_key,
    )
    env_carry = rollout.reset(env_key, acting_env(env, config), env_params, config.num_envs)
    memory = jax.vmap(initial_memory, in_axes=(None, 0, None))(params, env_carry.obs, config)
    return State(
        learner=learner,
        buffer=replay.init(config.buffer_size,
                           rollout.example_transition(env_carry.obs[0], jnp.zeros_like(low))),
        env=env_carry,
        memory=memory,
        first=jnp.ones((config.num_envs,), bool),
        key=key,
        env_steps=jnp.zeros((), jnp.int32),
    )


# ----------------------------------------------------------------------------- learn


def learn(
    learner: Learner, batch: Sequences, config: Config
) -> tuple[Learner, dict[str, jax.Array]]:
    """One Adam step on the negative sequence ELBO of a batch of windows. Pure; no env."""
    key, loss_key = jax.random.split(learner.key)
    model = learner.params.model
    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(model, loss_key, batch, config)
    updates, opt_state = _optimizer(config).update(
        eqx.filter(grads, eqx.is_array), learner.opt_state, eqx.filter(model, eqx.is_array)
    )
    model = eqx.apply_updates(model, updates)
    params = Params(model, learner.params.low, learner.params.high)
    learner = Learner(params, opt_state, learner.updates + 1, key)
    return learner, {"loss": value, **aux}


# ----------------------------------------------------------------------------- the policy


def _to_box(params: Params, unit):
    return 0.5 * (params.high + params.low) + 0.5 * (params.high - params.low) * unit


def plan(params: Params, belief: Belief, key, init_mean, config: Config) -> shooting.Plan:
    """CEM over unit-box action sequences [H, m] from ``belief`` in latent space, cost
    −(predicted reward) per step of the prior's mean rollout."""
    model = params.model

    def latent_step(b: Belief, unit_action):
        h = model.transition(b, _to_box(params, unit_action))
        mean, _ = model.prior(h, config.min_std)
        nb = Belief(h, mean)
        return nb, -model.reward(nb)

    return shooting.cem(
        key, latent_step, belief, init_mean,
        num_samples=config.num_samples, num_elites=config.num_elites,
        iterations=config.cem_iterations, low=-1.0, high=1.0,
        init_std=config.cem_init_std, smoothing=config.cem_smoothing,
    )


def explore(key: jax.Array, unit: jax.Array, config: Config) -> jax.Array:
    """A unit-box action plus Gaussian noise of std ``exploration_noise``, clipped to the
    box."""
    noise = config.exploration_noise * jax.random.normal(key, unit.shape)
    return jnp.clip(unit + noise, -1, 1)


def initial_memory(params: Params, obs: jax.Array, config: Config) -> Memory:
    """The memory at an episode's first observation: the belief filtered from h = 0 and
    that image, no plan yet (zeros in the unit box), no action."""
    dim = params.low.shape[0]
    return Memory(initial_belief(params.model, obs, config.min_std),
                  jnp.zeros((config.horizon, dim)), jnp.zeros((dim,)))


def act_with_memory(
    params: Params, memory: Memory, obs: jax.Array, first: jax.Array, key: jax.Array,
    config: Config, deterministic: bool = False,
) -> tuple[jax.Array, Memory]:
    """One control step of the policy that training runs and evaluation scores: fold the
    new observation into the belief, h' = GRU(h, φ([s, a])), s' = μ_q(h', enc(o)) (from
    h = 0 where ``first``), plan with CEM warm-started by the shifted previous plan, and
    take its first action, plus exploration noise unless ``deterministic`` (which also fixes
    CEM's key, so the action is a function of the history alone)."""
    fresh = initial_memory(params, obs, config)
    filtered = filter_step(params.model, memory.belief, memory.action, obs, False,
                           config.min_std)
    belief = jax.tree.map(lambda a, b: jnp.where(first, a, b), fresh.belief, filtered)
    warm = jnp.where(first, fresh.plan, memory.plan)
    plan_key, noise_key = jax.random.split(key)
    if deterministic:
        plan_key = jax.random.PRNGKey(0)
    result = plan(params, belief, plan_key, warm, config)
    unit = result.actions[0]
    if not deterministic:
        unit = explore(noise_key, unit, config)
    action = _to_box(params, unit)
    return action, Memory(belief, shooting.shift(result.actions), action)


# ----------------------------------------------------------------------------- step / train


def step(
    state: State, config: Config, env: Any, env_params: Any
) -> tuple[State, dict[str, jax.Array]]:
    """Collect ``rollout_steps`` control steps in each env (uniform actions until
    ``learning_starts`` env steps, then the policy: CEM in latent space plus Gaussian noise),
    each held for ``action_repeat`` env steps (``acting_env``); store them; then K ELBO
    updates on windows of ``sequence_length`` control steps."""
    key, collect_key, sample_key = jax.random.split(state.key, 3)
    params = state.learner.params
    acting = acting_env(env, config)
    per_control_step = config.num_envs * config.action_repeat

    def control(carry, k):
        env_carry, memory, first, steps = carry
        policy_key, random_key, env_key = jax.random.split(k, 3)
        E = env_carry.obs.shape[0]
        action, memory = jax.vmap(
            lambda m, o, f, pk: act_with_memory(params, m, o, f, pk, config)
        )(memory, env_carry.obs, first, jax.random.split(policy_key, E))
        random = _to_box(params, jax.random.uniform(random_key, action.shape, minval=-1.0,
                                                    maxval=1.0))
        action = jnp.where(steps < config.learning_starts, random, action)
        memory = Memory(memory.belief, memory.plan, action)  # the action actually taken
        env_carry, transition = rollout.env_step(env_key, acting, env_params, env_carry,
                                                 action)
        return (env_carry, memory, transition.done, steps + per_control_step), transition

    (env_carry, memory, first, env_steps), trajectory = jax.lax.scan(
        control, (state.env, state.memory, state.first, state.env_steps),
        jax.random.split(collect_key, config.rollout_steps))
    buffer = off_policy.store(state.buffer, trajectory)

    def windows(k):
        data, valid = replay.sample_sequences(
            buffer, k, config.batch_size, config.sequence_length, stride=config.num_envs)
        return Sequences(data, valid)

    learner, learn_metrics = off_policy.updates_after_warmup(
        env_steps >= config.learning_starts,
        state.learner,
        lambda learner, k: learn(learner, windows(k), config),
        lambda: jax.random.split(sample_key, config.gradient_steps),
    )
    state = State(learner, buffer, env_carry, memory, first, key, env_steps)
    metrics = {**rollout.episode_metrics(trajectory), **learn_metrics, "env_steps": env_steps}
    return state, metrics


def train(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> tuple[State, dict[str, jax.Array]]:
    """A whole run: ``init`` then ``lax.scan`` of ``step``; metrics stacked per iteration."""
    state = init(key, config, env, env_params, network)
    return jax.lax.scan(
        lambda s, _: step(s, config, env, env_params), state, length=config.num_iterations
    )


def act(
    params: Params,
    obs: jax.Array,
    key: jax.Array,
    config: Config,
    deterministic: bool = False,
) -> jax.Array:
    """An action from one observation and no history: :func:`act_with_memory` from the
    belief filtered from that image alone (no velocity). The trained policy, which
    ``minirl eval`` and the in-program evaluation run, carries its memory instead."""
    return act_with_memory(params, initial_memory(params, obs, config), obs, jnp.array(True),
                           key, config, deterministic)[0]
