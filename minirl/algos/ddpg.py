"""Deep deterministic policy gradient (DDPG) and, by three switches, twin delayed DDPG (TD3):
a deterministic actor trained through the critic, with target actor and target critics.

The actor is a deterministic policy on the env's box, μ_θ(s) = mid + half·tanh(f_θ(s)); the
critics see actions in the unit box, (a − mid)/half. From transitions drawn uniformly from a
replay buffer, each update takes

    critics   L(φ_j) = E[ ½ (Q_φj(s, a) − y)² ],  j = 1 … M
              y = r + γ (1 − terminated) min_j Q_φ̄j(s', ã'),
              ã' = clip(μ_θ̄(s') + clip(ε, −c, c), −1, 1) (unit box),  ε ~ N(0, σ̃²)
    actor     ∇_θ J = E[ ∇_a Q_φ1(s, a)|_{a = μ_θ(s)} ∇_θ μ_θ(s) ]     every d-th update
    targets   θ̄ ← τθ + (1 − τ)θ̄,  φ̄ ← τφ + (1 − τ)φ̄                  with the actor

The actor's gradient is the deterministic policy gradient (Silver et al., 2014), taken by
autodiff of −E[Q_φ1(s, μ_θ(s))] with the critic held fixed. DDPG (Lillicrap et al., 2016,
"Continuous control with deep reinforcement learning") is M = 1, σ̃ = 0, d = 1. TD3
(Fujimoto et al., 2018, "Addressing function approximation error in actor-critic methods")
switches on clipped double Q (``clipped_double_q``: M = 2 and the minimum, eq. 10),
target-policy smoothing (``target_noise`` σ̃ = 0.2, ``target_noise_clip`` c = 0.5, eq. 14)
and a delayed actor (``policy_delay`` d = 2; targets move only with the actor, as in the
authors' code). ``minirl.algos.td3`` is this file with TD3's defaults.

Exploration adds Gaussian noise in the unit box, a = mid + half·clip(tanh f_θ(s) + σε, −1, 1),
ε ~ N(0, 1) (σ = ``exploration_noise``), as Fujimoto et al. do (Lillicrap et al. used an
Ornstein-Uhlenbeck process); before ``learning_starts`` env steps actions are uniform.
All noise scales are fractions of the half-range of each action dimension.

Episode ends follow gymnax 1.x: only ``terminated`` cuts the bootstrap; a truncated step
bootstraps from the target critics at the final observation (stored as ``next_obs``).
Peers built on gymnax 0.0.x (rejax, Stoix) bootstrap nothing at time limits.

Contract (docs/design.md): ``Config``, ``Learner``, ``State``, ``init``, ``learn``,
``step``, ``train``, ``act``; ``learn`` needs no env (target-noise samples come from the
learner's key); numeric hyperparameters (including ``policy_delay``) are leaves.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..core import buffer as replay
from ..core import critics as critic_nets
from ..core import exploration, losses, nets, off_policy, rollout
from ..core.config import ConfigError, check_choice, check_off_policy, check_range
from ..core.optim import adam_step, adam_with_clipping, fresh_copy, polyak_update

ACTION_KIND = "continuous"
ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jax.nn.tanh, "silu": jax.nn.silu}


class Config(eqx.Module):
    """DDPG hyperparameters (TD3 is three switches). Static fields fix shapes, loop lengths
    and switches; the rest are leaves."""

    total_steps: int = eqx.field(static=True, default=100_000)  # env steps, all envs together
    num_envs: int = eqx.field(static=True, default=1)  # parallel environments
    rollout_steps: int = eqx.field(static=True, default=1)  # env steps per env per iteration
    gradient_steps: int = eqx.field(static=True, default=1)  # K updates per iteration
    buffer_size: int = eqx.field(static=True, default=1_000_000)  # transitions kept
    batch_size: int = eqx.field(static=True, default=256)  # transitions per update
    learning_starts: int = eqx.field(static=True, default=100)  # random env steps first
    hidden: tuple[int, ...] = eqx.field(static=True, default=(256, 256))  # actor and critics
    activation: str = eqx.field(static=True, default="relu")  # relu | tanh | silu
    clipped_double_q: bool = eqx.field(static=True, default=False)  # TD3: two critics, min

    learning_rate: float = 1e-3  # Adam step size (actor and critics)
    learning_rate_end_factor: float = 1.0  # lr anneals linearly to lr × this at the end
    max_grad_norm: float = float("inf")  # global-norm gradient clipping (inf: off)
    adam_eps: float = 1e-8
    gamma: float = 0.99  # discount γ
    tau: float = 0.005  # Polyak weight of the online networks
    exploration_noise: float = 0.1  # σ of the behaviour's Gaussian noise (unit box)
    target_noise: float = 0.0  # σ̃ of target-policy smoothing (TD3: 0.2; 0 = off)
    target_noise_clip: float = 0.5  # c: the smoothing noise is clipped to ±c
    policy_delay: int = 1  # d: actor and targets move every d-th update (TD3: 2)

    def __check_init__(self) -> None:
        check_off_policy(self)  # sizes, hidden, buffer, batch, one iteration
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("clipped_double_q", self.clipped_double_q, (True, False))
        check_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("learning_rate_end_factor", self.learning_rate_end_factor, 0.0, 1.0)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False,
                    allow_inf=True)
        check_range("adam_eps", self.adam_eps, 0.0, low_inclusive=False)
        check_range("gamma", self.gamma, 0.0, 1.0, low_inclusive=False)
        check_range("tau", self.tau, 0.0, 1.0, low_inclusive=False)
        check_range("exploration_noise", self.exploration_noise, 0.0)
        check_range("target_noise", self.target_noise, 0.0)
        check_range("target_noise_clip", self.target_noise_clip, 0.0)
        check_range("policy_delay", self.policy_delay, 1.0)

    @property
    def num_critics(self) -> int:
        return 2 if self.clipped_double_q else 1

    @property
    def steps_per_iteration(self) -> int:
        return self.num_envs * self.rollout_steps

    @property
    def num_iterations(self) -> int:
        """Iterations of ``step``; each collects ``num_envs × rollout_steps`` env steps."""
        return self.total_steps // self.steps_per_iteration

    @property
    def num_updates(self) -> int:
        """Gradient updates in a whole run (the horizon of the learning-rate schedule)."""
        first = max(1, -(-self.learning_starts // self.steps_per_iteration))
        return max(1, self.num_iterations - first + 1) * self.gradient_steps


PRESETS: dict[str, dict[str, Any]] = {
    # Checked by tests/algos/test_continuous_learning.py (Pendulum, 20k, ≥ −200: medians
    # −140.4 / −151.3 / −143.9 from first seeds 1 (tuning), 0 (the test) and 1000).
    # Anything not listed uses Config defaults.
    "Pendulum-v1": dict(total_steps=20_000, hidden=(64, 64)),
}


def preset(env_id: str) -> dict[str, Any]:
    """Documented per-environment overrides of the defaults (``{}`` if none)."""
    return dict(PRESETS.get(env_id, {}))


CANNOT_LEARN: dict[str, str] = {
    # MountainCarContinuous is an exploration problem: +100 at the flag, −0.1 a² per step,
    # and a policy that holds still earns about 0. Measured with 4 seeds from first seed
    # 100 at 50k steps, 64×64 networks, as a user would run it (no preset):
    # the default noise σ = 0.1 left every seed holding still (median −1.01, no episode
    # reached the flag); σ = 1.0 found it on 1 seed of 4 (88.1; median −51.9). PPO's and
    # TRPO's presets learn it (90.3 and 93.9 from first seed 1000).
    "MountainCarContinuous-v0": "exploration: Gaussian action noise finds the flag on 0 of "
                                "4 seeds in 50k steps (σ = 1.0: 1 of 4); use ppo or trpo",
}
"""Environments this learner was measured not to learn, and why (``minirl list`` marks them)."""


# ----------------------------------------------------------------------------- the actor


class Actor(eqx.Module):
    """What ``act`` needs: ``net(obs)`` gives the pre-tanh action ``[D]``; the box bounds
    come from the env at ``init``."""

    net: eqx.Module
    low: jax.Array  # [D]
    high: jax.Array  # [D]


def unit_policy(params: Actor, obs: jax.Array) -> jax.Array:
    """μ(s) in the unit box, tanh f_θ(s) ``[D]``, for one observation."""
    return jnp.tanh(params.net(obs))


def to_box(params: Actor, unit: jax.Array) -> jax.Array:
    """mid + half·x: a unit-box action on the env's box."""
    return 0.5 * (params.high + params.low) + 0.5 * (params.high - params.low) * unit


def to_unit(params: Actor, action: jax.Array) -> jax.Array:
    """(a − mid)/half: an env action in the unit box (what the critics see)."""
    return (action - 0.5 * (params.high + params.low)) / (0.5 * (params.high - params.low))


# ----------------------------------------------------------------------------- state


class Learner(eqx.Module):
    """What ``learn`` reads and writes: actor and critics, their Polyak targets, two Adam
    states, an update counter and the key of the target-policy noise."""

    params: Actor  # the actor (+ action box): what act needs
    target_params: Actor
    critics: eqx.Module  # ensemble, array leaves [M, ...]
    target_critics: eqx.Module
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    updates: jax.Array  # int32: gradient updates done so far
    key: jax.Array


class State(eqx.Module):
    learner: Learner
    buffer: replay.ReplayBuffer  # Transition items, time-major across num_envs streams
    env: rollout.EnvCarry
    key: jax.Array
    env_steps: jax.Array  # int32: env steps collected so far (all envs)


def _optimizer(config: Config) -> optax.GradientTransformation:
    return adam_with_clipping(config.learning_rate, config.max_grad_norm, config.adam_eps)


def default_networks(
    key: jax.Array, config: Config, env: Any, env_params: Any
) -> critic_nets.ActorCritics:
    """MLPs with ``hidden`` layers: the actor obs → ``[D]``, M critics (obs, unit action) → Q."""
    obs_size = math.prod(rollout.observation_shape(env, env_params))
    dim = math.prod(rollout.action_shape(env, env_params))
    activation = ACTIVATIONS[config.activation]
    actor_key, critic_key = jax.random.split(key)
    actor = nets.MLP(obs_size, dim, config.hidden, actor_key, activation)
    critics = nets.ensemble(
        lambda k: critic_nets.StateActionMLP(obs_size, dim, config.hidden, k, activation),
        critic_key,
        config.num_critics,
    )
    return critic_nets.ActorCritics(actor, critics)


def _check_networks(network: Any, config: Config, env: Any, env_params: Any) -> None:
    if not isinstance(network, critic_nets.ActorCritics):
        raise ConfigError(
            "network must be a minirl.core.critics.ActorCritics(actor, critics); got "
            f"{type(network).__name__}"
        )
    obs = rollout.observation_shape(env, env_params)
    dim = math.prod(rollout.action_shape(env, env_params))
    m = config.num_critics
    nets.check_output("network.actor", network.actor, [obs], [(dim,)])
    nets.check_output(
        f"network.critics (an ensemble of {m})",
        lambda o, a: critic_nets.apply_ensemble(network.critics, o, a), [obs, (dim,)],
        [(m,), (m, 1)],
    )


def init(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> State:
    """A fresh run: actor and critics with copied targets, two Adam states, an empty buffer
    and ``num_envs`` reset envs.

    ``network`` (optional) is a ``core.critics.ActorCritics(actor, critics)`` or a factory
    ``key -> ActorCritics``: ``actor(obs)`` gives the pre-tanh action ``[D]``; ``critics`` is
    ``core.nets.ensemble(make, key, M)`` (M = 2 with ``clipped_double_q``, else 1) of
    modules ``(obs, unit_action[D]) -> Q`` with actions in (−1, 1)^D."""
    rollout.require_action_kind(env, env_params, ACTION_KIND, "ddpg/td3")
    if len(rollout.action_shape(env, env_params)) != 1:
        raise ConfigError(
            f"env action shape {rollout.action_shape(env, env_params)}: ddpg/td3 need a "
            "one-dimensional action box"
        )
    net_key, env_key, learn_key, key = jax.random.split(key, 4)
    network = nets.resolve(
        network, net_key, lambda k: default_networks(k, config, env, env_params)
    )
    _check_networks(network, config, env, env_params)
    low, high = rollout.action_bounds(env, env_params)
    params = Actor(nets.arrays_only(network.actor), low, high)  # function fields → static
    critics = nets.arrays_only(network.critics)
    optimizer = _optimizer(config)
    learner = Learner(
        params=params,
        target_params=fresh_copy(params),
        critics=critics,
        target_critics=fresh_copy(critics),
        actor_opt_state=optimizer.init(eqx.filter(params.net, eqx.is_array)),
        critic_opt_state=optimizer.init(eqx.filter(critics, eqx.is_array)),
        updates=jnp.zeros((), jnp.int32),
        key=learn_key,
    )
    env_carry = rollout.reset(env_key, env, env_params, config.num_envs)
    example = rollout.example_transition(env_carry.obs[0], jnp.zeros_like(low))
    return State(
        learner=learner,
        buffer=replay.init(config.buffer_size, example),
        env=env_carry,
        key=key,
        env_steps=jnp.zeros((), jnp.int32),
    )


# ----------------------------------------------------------------------------- the losses


def critic_values(critics: eqx.Module, obs: jax.Array, unit_action: jax.Array) -> jax.Array:
    """Every critic on a batch ``[B]`` of (obs, unit-box action), in one call: ``[M, B]``."""
    q = critic_nets.apply_ensemble_batch(critics, obs, unit_action)
    return q.reshape(q.shape[:2])


def td_targets(
    target_params: Actor,
    target_critics: eqx.Module,
    batch: rollout.Transition,
    key: jax.Array,
    config: Config,
) -> jax.Array:
    """y = r + γ(1 − terminated) min_j Q_φ̄j(s', ã') for a batch ``[B]``, ã' the target
    actor's smoothed action (module docstring; σ̃ = 0 gives ã' = μ_θ̄(s'))."""
    next_unit = jax.vmap(unit_policy, in_axes=(None, 0))(target_params, batch.next_obs)
    noise = config.target_noise * jax.random.normal(key, next_unit.shape)
    noise = jnp.clip(noise, -config.target_noise_clip, config.target_noise_clip)
    next_unit = jnp.clip(next_unit + noise, -1.0, 1.0)
    q = critic_values(target_critics, batch.next_obs, next_unit)
    next_value = critic_nets.clipped_double_q(q)
    targets = losses.bellman_target(batch.reward, batch.terminated, next_value, config.gamma)
    return jax.lax.stop_gradient(targets)


def critic_loss(
    critics: eqx.Module, params: Actor, batch: rollout.Transition, targets: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Σ_j E[½(Q_φj(s, a) − y)²] and the mean Q(s, a)."""
    q = critic_values(critics, batch.obs, to_unit(params, batch.action))
    return jnp.sum(jnp.mean(losses.squared_loss(q - targets), axis=1)), jnp.mean(q)


def actor_loss(net: eqx.Module, params: Actor, critics: eqx.Module, obs: jax.Array) -> jax.Array:
    """−E[Q_φ1(s, μ_θ(s))]: its gradient is the deterministic policy gradient."""
    unit = jax.vmap(unit_policy, in_axes=(None, 0))(Actor(net, params.low, params.high), obs)
    first = jax.tree.map(lambda x: x[:1], critics)  # the ensemble's first member only
    return -jnp.mean(critic_values(first, obs, unit))


# ----------------------------------------------------------------------------- learn


def learn(
    learner: Learner, batch: rollout.Transition, config: Config
) -> tuple[Learner, dict[str, jax.Array]]:
    """One update on a batch of transitions (leaves ``[B, ...]``): a critic step; on every
    d-th update an actor step and the Polyak updates of both targets. Pure; needs no env.
    ``actor_loss`` is reported as 0 on the updates that skip the actor."""
    key, noise_key = jax.random.split(learner.key)
    learning_rate = config.learning_rate * exploration.linear_schedule(
        learner.updates, 1.0, config.learning_rate_end_factor, config.num_updates
    )
    optimizer = _optimizer(config)
    targets = td_targets(learner.target_params, learner.target_critics, batch, noise_key, config)
    (loss, q_mean), grads = jax.value_and_grad(critic_loss, has_aux=True)(
        learner.critics, learner.params, batch, targets
    )
    critics, critic_opt_state = adam_step(
        optimizer, learner.critics, grads, learner.critic_opt_state, learning_rate
    )
    count = learner.updates + 1

    def actor_and_targets(_):
        params = learner.params
        value, net_grads = jax.value_and_grad(actor_loss)(params.net, params, critics, batch.obs)
        net, opt_state = adam_step(
            optimizer, params.net, net_grads, learner.actor_opt_state, learning_rate
        )
        params = Actor(net, params.low, params.high)
        return (
            params,
            opt_state,
            polyak_update(params, learner.target_params, config.tau),
            polyak_update(critics, learner.target_critics, config.tau),
            value,
        )

    def critics_only(_):
        return (learner.params, learner.actor_opt_state, learner.target_params,
                learner.target_critics, jnp.zeros_like(loss))

    due = (count % config.policy_delay) == 0
    params, actor_opt_state, target_params, target_critics, policy_loss = jax.lax.cond(
        due, actor_and_targets, critics_only, None
    )
    learner = Learner(params, target_params, critics, target_critics, actor_opt_state,
                      critic_opt_state, count, key)
    metrics = {"critic_loss": loss, "actor_loss": policy_loss, "q_mean": q_mean,
               "learning_rate": learning_rate}
    return learner, metrics


# ----------------------------------------------------------------------------- step / train


def step(
    state: State, config: Config, env: Any, env_params: Any
) -> tuple[State, dict[str, jax.Array]]:
    """Collect ``num_envs × rollout_steps`` env steps (uniform until ``learning_starts``,
    then μ(s) plus Gaussian noise), store them, then K updates on minibatches drawn once for
    all K."""
    key, collect_key, sample_key = jax.random.split(state.key, 3)
    params = state.learner.params
    warmup = state.env_steps < config.learning_starts

    def behaviour(key: jax.Array, obs: jax.Array):
        policy_key, random_key = jax.random.split(key)
        keys = jax.random.split(policy_key, obs.shape[0])
        action = jax.vmap(lambda o, k: act(params, o, k, config))(obs, keys)
        random = jax.random.uniform(
            random_key, action.shape, minval=params.low, maxval=params.high
        )
        return jnp.where(warmup, random, action), None

    env_carry, trajectory = rollout.collect(
        collect_key, env, env_params, state.env, behaviour, config.rollout_steps
    )
    buffer = off_policy.store(state.buffer, trajectory)
    env_steps = state.env_steps + config.steps_per_iteration

    learner, learn_metrics = off_policy.updates_after_warmup(
        env_steps >= config.learning_starts,
        state.learner,
        lambda learner, batch: learn(learner, batch, config),
        lambda: off_policy.minibatches(buffer, sample_key, config.gradient_steps,
                                       config.batch_size),
    )
    state = State(learner, buffer, env_carry, key, env_steps)
    metrics = {**rollout.episode_metrics(trajectory), **learn_metrics, "env_steps": env_steps}
    return state, metrics


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
    params: Actor,
    obs: jax.Array,
    key: jax.Array,
    config: Config,
    deterministic: bool = False,
) -> jax.Array:
    """μ(s) on the env's box, or with the exploration noise (clipped to the box)."""
    unit = unit_policy(params, obs)
    if not deterministic:
        noise = config.exploration_noise * jax.random.normal(key, unit.shape)
        unit = jnp.clip(unit + noise, -1.0, 1.0)
    return to_box(params, unit)
