"""Proximal policy optimisation (PPO) with the clipped objective or a Lagrangian trust region
solved by dual gradient ascent, for discrete (categorical) and continuous (diagonal Gaussian,
optionally tanh-squashed) policies.

Each iteration collects ``num_envs × rollout_steps`` steps with the current policy π_old,
estimates advantages with GAE (Schulman et al., 2016) and then takes ``num_epochs`` passes
over the batch in ``num_minibatches`` shuffled minibatches of Adam steps on

    objective="clip"        L(θ) = E[ min(ρA, clip(ρ, 1 − ε, 1 + ε) A) ]          (Schulman
                            et al., 2017, "Proximal policy optimization algorithms", eq. 7)
    objective="lagrangian"  L(θ, λ) = E[ρA] − λ (E[KL(π_old ‖ π_θ)] − δ)          (ibid. §4,
                            with λ updated by dual gradient ascent instead of halving and
                            doubling: after the epochs λ ← max(0, λ + α (KL − δ)))

with ρ = π_θ(a|s) / π_old(a|s), minus c_V · value loss plus c_H · entropy. The value loss
is ½(V − G)² against the λ-return G = A + V_old, optionally clipped around V_old. Gradients
are clipped by global norm; the learning rate anneals linearly; advantages are normalised
per minibatch; observations are optionally normalised by running statistics.

Episode ends follow gymnax 1.x: ``terminated`` cuts the bootstrap, ``truncated`` bootstraps
from V(final observation) (``minirl.core.returns.gae``).

Data parallelism (``minirl.parallel.data_parallel``): traced inside ``jax.shard_map`` over
a data axis (``core.data_axis``), each shard holds an equal slice of the environments in
``state.env`` and the parameters, optimiser state, key, counters and λ replicated. The
optimiser averages the gradients over the axis; advantage and observation normalisation
statistics and the KL of the dual update are ``data_axis.mean``-s over all shards; action
sampling, environment stepping and the minibatch shuffle use per-environment keys indexed
by the *global* environment index (``data_axis.local_keys``). No argument is threaded
through: outside ``data_parallel`` all of these are plain. So the sharded computation
equals the single-device one up to floating-point reassociation. Minibatches are
stratified: every minibatch holds ``rollout_steps / num_minibatches`` randomly chosen time
steps of every environment.

The lecture notes weight the policy-gradient terms by γ^t; like every practical
implementation (and Schulman et al., 2017) we drop that factor, which would otherwise shrink
the gradient of late steps of long episodes to nothing: the objective is the undiscounted
state distribution's surrogate, a biased but far lower-variance estimator (Thomas, 2014,
"Bias in natural actor-critic algorithms").

Contract (docs/design.md): ``Config``, ``Learner``, ``State``, ``init``, ``learn``,
``step``, ``train``, ``act``; the environment is an argument (``env`` static,
``env_params`` a pytree). ``jax.vmap(train, in_axes=(0, None, None, None))`` sweeps seeds
and ``jax.vmap(train, in_axes=(0, 0, None, None))(keys, minirl.core.config.stack(configs),
env, env_params)`` sweeps learning rate, γ, λ, the clip range, δ, the entropy coefficient
and the other numeric fields without recompiling.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..core import data_axis, distributions, exploration, losses, nets, returns, rollout
from ..core.config import ConfigError, check_choice, check_on_policy, check_range
from ..core.optim import adam_with_clipping, normalize_advantages, set_learning_rate

ACTION_KIND = "both"  # discrete (Categorical) and continuous (Gaussian / tanh-Gaussian)
OBJECTIVES = ("clip", "lagrangian")
ACTIVATIONS = {"tanh": jax.nn.tanh, "relu": jax.nn.relu}


class Config(eqx.Module):
    """PPO hyperparameters. Static fields fix shapes and loop lengths; the rest are leaves."""

    total_steps: int = eqx.field(static=True, default=200_000)  # env steps, all envs together
    num_envs: int = eqx.field(static=True, default=8)  # parallel environments
    rollout_steps: int = eqx.field(static=True, default=128)  # steps per env per iteration
    num_epochs: int = eqx.field(static=True, default=4)  # passes over each batch
    num_minibatches: int = eqx.field(static=True, default=4)  # per pass; divides rollout_steps
    hidden: tuple[int, ...] = eqx.field(static=True, default=(64, 64))  # actor and critic
    network: str = eqx.field(static=True, default="auto")  # "auto" | "mlp" | "cnn"
    activation: str = eqx.field(static=True, default="tanh")  # MLP hidden units: tanh | relu
    objective: str = eqx.field(static=True, default="clip")  # "clip" | "lagrangian"
    squash: bool = eqx.field(static=True, default=False)  # continuous: tanh-Normal, else clip
    normalize_observations: bool = eqx.field(static=True, default=False)  # running mean/std
    normalize_advantages: bool = eqx.field(static=True, default=True)  # per minibatch

    learning_rate: float = 2.5e-4  # Adam step size at the start
    learning_rate_end_factor: float = 0.0  # lr anneals linearly to lr × this at the end
    max_grad_norm: float = 0.5  # global-norm gradient clipping
    adam_eps: float = 1e-5
    gamma: float = 0.99  # discount γ
    lam: float = 0.95  # GAE λ
    clip_epsilon: float = 0.2  # ε of the clipped objective
    value_coef: float = 0.5  # c_V
    value_clip_epsilon: float = float("inf")  # clip V within ±this of V_old (inf: off)
    entropy_coef: float = 0.01  # c_H
    reward_scale: float = 1.0  # rewards are multiplied by this for learning (not for stats)
    init_log_std: float = 0.0  # continuous: initial log σ (state-independent)
    max_kl: float = 0.01  # lagrangian: the trust-region size δ
    kl_coef_init: float = 1.0  # lagrangian: initial multiplier λ
    dual_learning_rate: float = 10.0  # lagrangian: α in λ ← max(0, λ + α (KL − δ))

    def __check_init__(self) -> None:
        check_on_policy(self, "num_epochs", "num_minibatches")  # sizes, hidden, one iteration
        check_choice("network", self.network, ("auto", "mlp", "cnn"))
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("objective", self.objective, OBJECTIVES)
        for name in ("squash", "normalize_observations", "normalize_advantages"):
            check_choice(name, getattr(self, name), (True, False))
        if self.rollout_steps % self.num_minibatches:
            raise ConfigError(
                f"num_minibatches={self.num_minibatches} must divide rollout_steps="
                f"{self.rollout_steps} (each minibatch takes rollout_steps / num_minibatches "
                "time steps of every environment)"
            )
        check_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("learning_rate_end_factor", self.learning_rate_end_factor, 0.0, 1.0)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False)
        check_range("adam_eps", self.adam_eps, 0.0, low_inclusive=False)
        check_range("gamma", self.gamma, 0.0, 1.0, low_inclusive=False)
        check_range("lam", self.lam, 0.0, 1.0)
        check_range("clip_epsilon", self.clip_epsilon, 0.0, low_inclusive=False)
        check_range("value_coef", self.value_coef, 0.0)
        check_range("value_clip_epsilon", self.value_clip_epsilon, 0.0, low_inclusive=False,
                    allow_inf=True)
        check_range("entropy_coef", self.entropy_coef, 0.0)
        check_range("reward_scale", self.reward_scale, 0.0, low_inclusive=False)
        check_range("init_log_std", self.init_log_std, -20.0, 5.0)
        check_range("max_kl", self.max_kl, 0.0, low_inclusive=False)
        check_range("kl_coef_init", self.kl_coef_init, 0.0)
        check_range("dual_learning_rate", self.dual_learning_rate, 0.0)

    @property
    def steps_per_iteration(self) -> int:
        return self.num_envs * self.rollout_steps

    @property
    def num_iterations(self) -> int:
        """Iterations of ``step``; each collects ``num_envs × rollout_steps`` env steps."""
        return self.total_steps // self.steps_per_iteration


PRESETS: dict[str, dict[str, Any]] = {
    # Tuned on this machine (4 seeds, median); anything not listed uses Config defaults.
    # CartPole: 200k steps reach ≥ 475 (tests/algos/test_ppo_learning.py).
    "CartPole-v1": dict(num_envs=8, rollout_steps=128, num_epochs=4, num_minibatches=4,
                        learning_rate=2.5e-3, entropy_coef=0.0),
    # Pendulum: short horizon (γ = 0.9 as in rl-baselines3-zoo), observation normalisation,
    # rewards scaled to ~[−1.6, 0], a large batch and 1M steps.
    "Pendulum-v1": dict(total_steps=1_000_000, num_envs=16, rollout_steps=256, num_epochs=10,
                        num_minibatches=32, learning_rate=1e-3, gamma=0.9, lam=0.95,
                        entropy_coef=0.0, reward_scale=0.1, normalize_observations=True),
    "MountainCarContinuous-v0": dict(normalize_observations=True, total_steps=500_000),
    "Acrobot-v1": dict(total_steps=500_000, learning_rate=1e-3),
    "Catch-bsuite": dict(total_steps=50_000, learning_rate=1e-3),
    "Breakout-MinAtar": dict(total_steps=5_000_000, num_envs=64, rollout_steps=128,
                             num_epochs=4, num_minibatches=8, learning_rate=5e-3,
                             activation="relu", hidden=(128,)),
}
for _minatar in ("Asterix", "Freeway", "Seaquest", "SpaceInvaders"):
    PRESETS[f"{_minatar}-MinAtar"] = PRESETS["Breakout-MinAtar"]


def preset(env_id: str) -> dict[str, Any]:
    """Documented per-environment overrides of the defaults (``{}`` if none)."""
    return dict(PRESETS.get(env_id, {}))


# ----------------------------------------------------------------------------- the agent


class RunningNorm(eqx.Module):
    """Running mean and variance of observations (parallel algorithm of Chan et al., 1979)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    def __call__(self, obs: jax.Array) -> jax.Array:
        obs = obs.astype(jnp.float32)
        normed = (obs - self.mean) * jax.lax.rsqrt(self.var + 1e-8)
        return jnp.clip(jax.lax.stop_gradient(normed), -10.0, 10.0)

    def update(self, batch: jax.Array) -> "RunningNorm":
        """Fold in ``batch`` ``[N, *obs_shape]`` (and, under a data axis, the other
        shards')."""
        batch = batch.astype(jnp.float32)
        mean = data_axis.mean(jnp.mean(batch, axis=0))
        count = data_axis.total(jnp.asarray(batch.shape[0], jnp.float32))
        var = data_axis.mean(jnp.mean(jnp.square(batch - mean), axis=0))
        total = self.count + count
        delta = mean - self.mean
        new_mean = self.mean + delta * count / total
        m2 = self.var * self.count + var * count + jnp.square(delta) * self.count * count / total
        return RunningNorm(new_mean, m2 / total, total)


class ActorCritic(eqx.Module):
    """A user's networks for :func:`init`: ``actor(obs)`` gives the logits ``[A]``
    (discrete) or the Gaussian mean ``[D]`` (continuous); ``critic(obs)`` gives V(s) as
    shape ``[1]`` or ``[]``. Both act on one unbatched observation."""

    actor: eqx.Module
    critic: eqx.Module


class Agent(eqx.Module):
    """Separate actor and critic networks, a state-independent log σ for continuous actions
    (``None`` for discrete), the observation normaliser (not trained by gradients) and the
    action box (``None`` for discrete), so that :func:`act` needs nothing but the agent."""

    actor: eqx.Module  # obs → logits [A] or Gaussian mean [D]
    critic: eqx.Module  # obs → [1] or []
    log_std: jax.Array | None
    obs_norm: RunningNorm
    low: jax.Array | None = None  # the action box, shaped like one action
    high: jax.Array | None = None


def _network(obs_shape, out_size: int, key: jax.Array, config, final_scale: float):
    kind = config.network
    if kind == "auto":
        kind = "cnn" if len(obs_shape) == 3 else "mlp"
    if kind == "cnn":
        return nets.make_network(obs_shape, out_size, config.hidden, "cnn", key)
    return nets.MLP(math.prod(obs_shape), out_size, config.hidden, key,
                    ACTIVATIONS[config.activation], final_scale=final_scale)


def _action_size(env: Any, env_params: Any) -> int:
    if rollout.action_kind(env, env_params) == "discrete":
        return rollout.num_actions(env, env_params)
    return math.prod(rollout.action_shape(env, env_params))


def init_agent(key: jax.Array, config, env: Any, env_params: Any, network: Any = None) -> Agent:
    """The actor-critic for ``env``: ``network`` (an :class:`ActorCritic`, or a factory
    ``key -> ActorCritic``; see ``core.nets.resolve``), or separate MLPs/CNNs with the policy
    head scaled by 0.01 (Andrychowicz et al., 2021, "What matters in on-policy RL", §3.2)."""
    obs_shape = rollout.observation_shape(env, env_params)
    out_size = _action_size(env, env_params)

    def default(key):
        actor_key, critic_key = jax.random.split(key)
        return ActorCritic(
            _network(obs_shape, out_size, actor_key, config, final_scale=0.01),
            _network(obs_shape, 1, critic_key, config, final_scale=1.0),
        )

    network = nets.resolve(network, key, default)
    if not isinstance(network, ActorCritic):
        raise ConfigError(
            f"network must be a ppo.ActorCritic(actor, critic); got {type(network).__name__}"
        )
    nets.check_output("network.actor", network.actor, [obs_shape], [(out_size,)])
    nets.check_output("network.critic", network.critic, [obs_shape], [(1,), ()])
    if rollout.action_kind(env, env_params) == "discrete":
        log_std = low = high = None
    else:
        log_std = jnp.full((out_size,), config.init_log_std, jnp.float32)
        low, high = rollout.action_bounds(env, env_params)
    return Agent(  # function fields of a user's modules become static: they ride in scan
        actor=nets.arrays_only(network.actor),
        critic=nets.arrays_only(network.critic),
        log_std=log_std,
        obs_norm=RunningNorm(
            jnp.zeros(obs_shape, jnp.float32), jnp.ones(obs_shape, jnp.float32),
            jnp.zeros((), jnp.float32),
        ),
        low=low,
        high=high,
    )


def _features(params: Agent, obs: jax.Array, config) -> jax.Array:
    return params.obs_norm(obs) if config.normalize_observations else obs


def policy(params: Agent, obs: jax.Array, config):
    """π(·|s) for one observation: Categorical, Normal or TanhNormal."""
    out = params.actor(_features(params, obs, config))
    if params.log_std is None:
        return distributions.Categorical(out)
    if config.squash:
        return distributions.TanhNormal(out, params.log_std)
    return distributions.Normal(out, params.log_std)


def value(params: Agent, obs: jax.Array, config) -> jax.Array:
    """V(s) for one observation."""
    return jnp.reshape(params.critic(_features(params, obs, config)), ())


def batch_apply(fn, params, obs: jax.Array, config, batch_dims: int = 1):
    """``fn(params, obs, config)`` over ``batch_dims`` leading axes of ``obs``."""
    for _ in range(batch_dims):
        fn = jax.vmap(fn, in_axes=(None, 0, None))
    return fn(params, obs, config)


def env_action(params: Agent, action: jax.Array, config) -> jax.Array:
    """What the environment receives: discrete actions as they are; Gaussian samples clipped
    to the action bounds; tanh samples in (−1, 1) mapped affinely onto the bounds."""
    if params.low is None:
        return action
    low, high = params.low, params.high
    action = action.reshape(*action.shape[:-1], *low.shape)
    if config.squash:
        return low + 0.5 * (action + 1.0) * (high - low)
    return jnp.clip(action, low, high)


# ----------------------------------------------------------------------------- state


class Learner(eqx.Module):
    """What ``learn`` reads and writes: the agent, Adam's state, λ, a counter and the key of
    the minibatch shuffles."""

    params: Agent
    opt_state: optax.OptState
    kl_coef: jax.Array  # λ of the Lagrangian (objective="lagrangian"; carried otherwise)
    updates: jax.Array  # int32: gradient steps done so far (drives the lr schedule)
    key: jax.Array


class State(eqx.Module):
    learner: Learner
    env: rollout.EnvCarry
    key: jax.Array
    env_steps: jax.Array  # int32: env steps collected so far (all envs, all shards)


def _optimizer(config: Config) -> optax.GradientTransformation:
    return adam_with_clipping(config.learning_rate, config.max_grad_norm, config.adam_eps)


def init(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> State:
    """A fresh run: the agent (``network`` or the default MLPs), Adam, λ and reset envs."""
    rollout.require_action_kind(env, env_params, ACTION_KIND, "ppo")
    net_key, env_key, learn_key, key = jax.random.split(key, 4)
    params = init_agent(net_key, config, env, env_params, network)
    learner = Learner(
        params=params,
        opt_state=_optimizer(config).init(eqx.filter(params, eqx.is_array)),
        kl_coef=jnp.asarray(config.kl_coef_init, jnp.float32),
        updates=jnp.zeros((), jnp.int32),
        key=learn_key,
    )
    return State(
        learner=learner,
        env=rollout.reset(env_key, env, env_params, config.num_envs),
        key=key,
        env_steps=jnp.zeros((), jnp.int32),
    )


# ----------------------------------------------------------------------------- the batch


class Batch(eqx.Module):
    """One iteration's data, leaves ``[T, E, ...]``; ``policy`` is π_old(·|s) per step."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array  # log π_old(a|s)
    value: jax.Array  # V_old(s)
    advantage: jax.Array  # GAE
    target: jax.Array  # λ-return A + V_old
    policy: Any  # a distribution with [T, E, ...] parameters


def collect(
    params: Agent,
    carry: rollout.EnvCarry,
    key: jax.Array,
    config,
    env: Any,
    env_params: Any,
) -> tuple[rollout.EnvCarry, rollout.Transition]:
    """``rollout_steps`` steps of every env with π_θ; ``policy_info`` = (log π(a|s), V(s)).

    As ``rollout.collect`` (gymnax 1.x, ``next_obs`` = final observation at episode ends)
    but with per-environment keys (``data_axis.local_keys``), so sharding changes nothing.
    """
    num_local = carry.obs.shape[0]

    def one_step(carry: rollout.EnvCarry, step_key: jax.Array):
        act_key, env_key = jax.random.split(step_key)
        dist = batch_apply(policy, params, carry.obs, config)
        action = jax.vmap(lambda d, k: d.sample(k))(dist, data_axis.local_keys(act_key, num_local))
        log_prob = dist.log_prob(action)
        v = batch_apply(value, params, carry.obs, config)
        obs, env_state, reward, terminated, truncated, info = jax.vmap(
            env.step, in_axes=(0, 0, 0, None)
        )(data_axis.local_keys(env_key, num_local), carry.env_state,
          env_action(params, action, config),
          env_params)
        terminated, truncated = terminated.astype(bool), truncated.astype(bool)
        reward = reward.astype(jnp.float32)
        stats, ep_return, ep_length = carry.stats.update(reward, terminated | truncated)
        transition = rollout.Transition(
            obs=carry.obs, action=action, reward=reward, next_obs=info["final_observation"],
            terminated=terminated, truncated=truncated, episode_return=ep_return,
            episode_length=ep_length, policy_info=(log_prob, v),
        )
        return rollout.EnvCarry(env_state, obs, stats), transition

    return jax.lax.scan(one_step, carry, jax.random.split(key, config.rollout_steps))


def make_batch(params: Agent, trajectory: rollout.Transition, config) -> Batch:
    """GAE on a ``[T, E]`` trajectory; V(next_obs) bootstraps truncated steps."""
    log_prob, values = trajectory.policy_info
    next_values = batch_apply(value, params, trajectory.next_obs, config, batch_dims=2)
    advantage = returns.gae(
        trajectory.reward * config.reward_scale, values, next_values,
        trajectory.terminated, trajectory.truncated, config.gamma, config.lam,
    )
    return Batch(
        obs=trajectory.obs, action=trajectory.action, log_prob=log_prob, value=values,
        advantage=advantage, target=advantage + values,
        policy=batch_apply(policy, params, trajectory.obs, config, batch_dims=2),
    )


# ----------------------------------------------------------------------------- the loss


def entropy(dist) -> jax.Array:
    """H(π(·|s)); for a tanh-Normal the pre-squash Gaussian's (closed form, the usual choice)."""
    if isinstance(dist, distributions.TanhNormal):
        return dist.base.entropy()
    return dist.entropy()


def loss_fn(
    params: Agent, minibatch: Batch, kl_coef: jax.Array, config: Config
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """−(policy objective + c_H·H) + c_V·value loss on a flat minibatch ``[N, ...]``."""
    dist = batch_apply(policy, params, minibatch.obs, config)
    v = batch_apply(value, params, minibatch.obs, config)
    advantage = minibatch.advantage
    if config.normalize_advantages:
        advantage = normalize_advantages(advantage)
    log_ratio = dist.log_prob(minibatch.action) - minibatch.log_prob
    ratio = jnp.exp(log_ratio)
    kl = jnp.mean(minibatch.policy.kl(dist))
    if config.objective == "clip":
        objective = jnp.mean(losses.clipped_surrogate(ratio, advantage, config.clip_epsilon))
    else:
        surrogate = jnp.mean(losses.importance_weighted_surrogate(ratio, advantage))
        objective = surrogate - kl_coef * (kl - config.max_kl)
    entropy_mean = jnp.mean(entropy(dist))
    value_loss = jnp.mean(
        losses.value_loss(v, minibatch.target, minibatch.value, config.value_clip_epsilon)
    )
    loss = (
        -objective
        - losses.entropy_bonus(entropy_mean, config.entropy_coef)
        + config.value_coef * value_loss
    )
    aux = {
        "policy_objective": objective,
        "value_loss": value_loss,
        "entropy": entropy_mean,
        "kl": kl,
        "clip_fraction": jnp.mean((jnp.abs(ratio - 1.0) > config.clip_epsilon).astype(jnp.float32)),
    }
    return loss, aux


def minibatches(batch: Batch, key: jax.Array, config: Config) -> Batch:
    """``[M, N/M, ...]``: per env, a random permutation of its T steps split into M parts."""
    num_steps, num_local = batch.advantage.shape
    per_minibatch = num_steps // config.num_minibatches
    keys = data_axis.local_keys(key, num_local)
    perms = jax.vmap(lambda k: jax.random.permutation(k, num_steps))(keys)  # [E, T]
    time_index = perms.T.reshape(config.num_minibatches, per_minibatch, num_local)
    env_index = jnp.arange(num_local)[None, None, :]

    def gather(x):
        picked = x[time_index, env_index]  # [M, T/M, E, ...]
        return picked.reshape(config.num_minibatches, per_minibatch * num_local, *x.shape[2:])

    return jax.tree.map(gather, batch)


def learn(
    learner: Learner, batch: Batch, config: Config
) -> tuple[Learner, dict[str, jax.Array]]:
    """``num_epochs`` × ``num_minibatches`` Adam steps on ``batch``, then (lagrangian) the
    dual step on λ. Pure; needs no env. Under a data axis the optimiser averages the
    gradients and the statistics are taken over all shards (see the module docstring)."""
    key, shuffle_key = jax.random.split(learner.key)
    per_iteration = config.num_epochs * config.num_minibatches
    iteration = learner.updates // per_iteration
    learning_rate = config.learning_rate * exploration.linear_schedule(
        iteration, 1.0, config.learning_rate_end_factor, config.num_iterations
    )
    optimizer = _optimizer(config)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def minibatch_step(carry, minibatch):
        params, opt_state = carry
        (_, aux), grads = grad_fn(params, minibatch, learner.kl_coef, config)
        grads = eqx.filter(grads, eqx.is_array)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(params, eqx.is_array))
        return (eqx.apply_updates(params, updates), opt_state), aux

    def epoch(carry, key):
        return jax.lax.scan(minibatch_step, carry, minibatches(batch, key, config))

    opt_state = set_learning_rate(learner.opt_state, learning_rate)
    (params, opt_state), aux = jax.lax.scan(
        epoch, (learner.params, opt_state), jax.random.split(shuffle_key, config.num_epochs)
    )
    metrics = jax.tree.map(jnp.mean, aux)

    kl_coef = learner.kl_coef
    if config.objective == "lagrangian":
        # Dual gradient ascent on λ with the KL of the whole batch after the update.
        new_policy = batch_apply(policy, params, batch.obs, config, batch_dims=2)
        kl = data_axis.mean(jnp.mean(batch.policy.kl(new_policy)))
        kl_coef = jnp.maximum(0.0, kl_coef + config.dual_learning_rate * (kl - config.max_kl))
        metrics["kl_after"] = kl
    metrics["kl_coef"] = kl_coef
    metrics["learning_rate"] = learning_rate
    learner = Learner(params, opt_state, kl_coef, learner.updates + per_iteration, key)
    return learner, metrics


# ----------------------------------------------------------------------------- step / train


def step(
    state: State, config: Config, env: Any, env_params: Any
) -> tuple[State, dict[str, jax.Array]]:
    """Collect ``num_envs × rollout_steps`` env steps with π_θ, compute GAE, learn on them,
    then fold the batch's observations into the running normaliser."""
    key, collect_key = jax.random.split(state.key)
    params = state.learner.params
    env_carry, trajectory = collect(params, state.env, collect_key, config, env, env_params)
    batch = make_batch(params, trajectory, config)
    learner, learn_metrics = learn(state.learner, batch, config)
    if config.normalize_observations:
        flat_obs = batch.obs.reshape(-1, *batch.obs.shape[2:])
        obs_norm = learner.params.obs_norm.update(flat_obs)
        learner = eqx.tree_at(lambda s: s.params.obs_norm, learner, obs_norm)
    env_steps = state.env_steps + config.steps_per_iteration  # all envs, all shards
    state = State(learner, env_carry, key, env_steps)
    return state, {**rollout.episode_metrics(trajectory), **learn_metrics,
                   "env_steps": env_steps}


def train(
    key: jax.Array,
    config: Config,
    env: Any,
    env_params: Any,
    network: Any = None,
) -> tuple[State, dict[str, jax.Array]]:
    """A whole run: ``init`` then ``lax.scan`` of ``step``; metrics stacked per iteration."""
    state = init(key, config, env, env_params, network)
    return jax.lax.scan(
        lambda s, _: step(s, config, env, env_params), state, length=config.num_iterations
    )


def act(
    params: Agent,
    obs: jax.Array,
    key: jax.Array,
    config: Config,
    deterministic: bool = False,
) -> jax.Array:
    """An environment action for one observation: the mode of π(·|s), or a sample."""
    dist = policy(params, obs, config)
    action = dist.mode() if deterministic else dist.sample(key)
    return env_action(params, action, config)
