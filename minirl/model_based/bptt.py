"""BPTT: a policy trained by gradient ascent on the return of rollouts through a
differentiable model, from start states drawn from real data.

The policy is deterministic, a = μ_θ(s) = mid + half · tanh f_θ(s). From a batch of real
states s_0, an H-step rollout through a differentiable model s_{t+1} = f(s_t, a_t)
(reparameterised noise ε_t where the model is stochastic) makes the return a differentiable
function of θ, and its gradient flows back through every step (Levine, CS 285 lecture 12,
"backpropagate directly into the policy"; PILCO, Deisenroth & Rasmussen, 2011; stochastic
value gradients, SVG(∞), Heess et al., 2015, which backpropagate through a learned model
with the noise reparameterised):

    J(θ) = E_{s_0 ~ D} [ (1/H) Σ_{t<H} w_t G^λ_t ],   w_t = Π_{j<t} γ (1 − terminated_j)

    G^λ_t = r_t + γ (1 − terminated_t) [ (1 − λ) V(s_{t+1}) + λ G^λ_{t+1} ],   G^λ_H = V(s_H)

Dreamer's actor objective (Hafner et al., 2020, "Dream to control", eq. 6–8, with the
weights of their code), ``core.returns.lambda_return``. The value V_φ (``value=True``) is
regressed onto the λ-returns it bootstraps, L(φ) = mean_t w_t ½ (V_φ(s_t) − sg(G^λ_t))², with
the bootstrap taken from a Polyak-averaged copy ``target_value`` (τ): it carries the return
beyond the horizon, so H can stay short. Without the value (``value=False``), V ≡ 0 and
λ = 1: G_t is the discounted return of the rest of the imagined horizon, and the policy
sees nothing beyond H.

Why not simply a long horizon. ∂J/∂θ is a sum over t of products of t Jacobians ∂s_{k+1}/∂s_k;
their product explodes or vanishes with t (the lecture's warning; brax's analytic policy
gradients report gradient norms of 1e18, brax #186). What makes it usable here, as in the
better implementations: short horizons (Dreamer 15, brax APG 32), the value bootstrap beyond
H, global-norm gradient clipping (``max_grad_norm``; brax clips at 1, Dreamer at 100) and
λ-returns that average over bootstrap depths. ``learn`` reports the unclipped gradient
norm (``grad_norm``), the quantity whose growth with H the lecture warns about.

The model (``model``):

``"true"``  the env's own ``step_env`` with its transition gradients switched on (gymnax
    1.x: ``env.with_transition_gradients()``; start states are the real env states stored
    with each transition). gymnax implements them for Pendulum-v1, MountainCarContinuous-v0,
    Reacher-misc, Swimmer-misc and PointRobot-misc (``supports_transition_gradients``); every
    other env is refused with a ConfigError. (MountainCarContinuous's goal bonus is a step
    function of the state, so its gradient is zero: differentiable is not the same as
    learnable by gradient.)
``"learned"``  an ensemble of ``dynamics.py`` refitted on all real data every
    ``refit_every`` real steps; each imagined step uses a uniformly random member and
    reparameterised Gaussian noise; rewards are the env's known function (``rewards.KNOWN``)
    or the learned reward head (``reward="learned"``); terminations are known where they are.

Real data: actions μ(s) plus Gaussian noise (``exploration_noise`` half-widths, clipped to
the box); uniformly random for the first ``learning_starts`` steps. ``act`` is μ(s) (or with
the noise). The learner keeps the env (static, as PETS keeps its known reward function) and
its parameters: with ``model="true"`` the env *is* the model, so ``learn`` still needs
nothing but its learner and a batch of start states.

Contract (docs/design.md): ``Config``, ``Learner``, ``State``, ``init``, ``learn`` (one
actor and value update from a batch of start states), ``step``, ``train``, ``act``.
"""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..core import buffer as replay
from ..core import nets, returns, rollout
from ..core.config import (
    ConfigError,
    check_choice,
    check_hidden,
    check_positive_int,
    check_range,
)
from ..core.optim import adam_step, adam_with_clipping, fresh_copy, polyak_update
from . import dynamics, rewards

ACTION_KIND = "continuous"
OBSERVATIONS = "vectors"
MODELS = ("true", "learned")


class Config(eqx.Module):
    """BPTT hyperparameters. Static fields fix shapes, loop lengths and switches; the rest
    are leaves."""

    model: str = eqx.field(static=True, default="true")  # true | learned
    value: bool = eqx.field(static=True, default=True)  # bootstrap with V(s_H), λ-returns
    total_steps: int = eqx.field(static=True, default=10_000)  # real env steps, all envs
    num_envs: int = eqx.field(static=True, default=1)  # parallel real environments
    refit_every: int = eqx.field(static=True, default=200)  # real steps per env per iteration
    horizon: int = eqx.field(static=True, default=20)  # H imagined steps
    batch_size: int = eqx.field(static=True, default=64)  # start states per update
    updates_per_step: int = eqx.field(static=True, default=1)  # updates per real step
    learning_starts: int = eqx.field(static=True, default=200)  # uniform random real steps
    buffer_size: int = eqx.field(static=True, default=100_000)  # real transitions kept
    hidden: tuple[int, ...] = eqx.field(static=True, default=(64, 64))  # policy and value
    reward: str = eqx.field(static=True, default="known")  # learned model: known | learned
    ensemble_size: int = eqx.field(static=True, default=5)  # learned model: M members
    model_hidden: tuple[int, ...] = eqx.field(static=True, default=(200, 200, 200))
    fit_updates: int = eqx.field(static=True, default=500)  # model minibatch updates per fit
    model_batch_size: int = eqx.field(static=True, default=256)

    learning_rate: float = 1e-3  # actor Adam step size
    value_learning_rate: float = 1e-3  # value Adam step size
    max_grad_norm: float = 10.0  # global-norm clipping of each gradient (inf: off)
    gamma: float = 0.99  # discount γ
    lam: float = 0.95  # λ of the λ-returns (with value=True)
    tau: float = 0.01  # Polyak weight of the value's target copy
    exploration_noise: float = 0.1  # real-env action noise, in half-widths of the box
    model_learning_rate: float = 1e-3  # learned model's Adam(W) step size
    model_weight_decay: float = 1e-5
    logvar_penalty: float = 0.01

    def __check_init__(self) -> None:
        for name in ("total_steps", "num_envs", "refit_every", "horizon", "batch_size",
                     "updates_per_step", "buffer_size", "ensemble_size", "fit_updates",
                     "model_batch_size"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("learning_starts", self.learning_starts, minimum=0)
        check_choice("model", self.model, MODELS)
        check_choice("value", self.value, (True, False))
        check_choice("reward", self.reward, ("known", "learned"))
        check_hidden("hidden", self.hidden)
        if self.model == "true" and self.reward == "learned":
            raise ConfigError("reward='learned' needs model='learned'; model='true' steps the "
                              "env, which gives its own reward")
        if self.total_steps < self.steps_per_iteration:
            raise ConfigError(f"total_steps={self.total_steps} is less than one iteration "
                              f"(num_envs × refit_every = {self.steps_per_iteration})")
        if self.buffer_size % self.num_envs:
            raise ConfigError(f"buffer_size={self.buffer_size} must be a multiple of "
                              f"num_envs={self.num_envs}")
        for name in ("learning_rate", "value_learning_rate", "model_learning_rate"):
            check_range(name, getattr(self, name), 0.0, low_inclusive=False)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False,
                    allow_inf=True)
        check_range("gamma", self.gamma, 0.0, 1.0, low_inclusive=False)
        check_range("lam", self.lam, 0.0, 1.0)
        check_range("tau", self.tau, 0.0, 1.0, low_inclusive=False)
        check_range("exploration_noise", self.exploration_noise, 0.0)
        check_range("model_weight_decay", self.model_weight_decay, 0.0)
        check_range("logvar_penalty", self.logvar_penalty, 0.0)
        if self.model == "learned":
            _ = self.model_config

    @property
    def model_config(self) -> dynamics.ModelConfig:
        # evaluated eagerly: dynamics.ModelConfig's check uses jnp on its constant bounds
        with jax.ensure_compile_time_eval():
            return dynamics.ModelConfig(
                kind="probabilistic", ensemble_size=self.ensemble_size,
                hidden=self.model_hidden, learn_reward=self.reward == "learned",
                learning_rate=self.model_learning_rate, weight_decay=self.model_weight_decay,
                logvar_penalty=self.logvar_penalty)

    @property
    def steps_per_iteration(self) -> int:
        return self.num_envs * self.refit_every

    @property
    def num_iterations(self) -> int:
        """Iterations of ``step``; each collects ``refit_every`` real steps in each env,
        with ``updates_per_step`` updates after each, then refits a learned model."""
        return self.total_steps // self.steps_per_iteration


PRESETS: dict[str, dict[str, Any]] = {
    # Checked by tests/model_based/test_bptt_learning.py (Pendulum, 5k real steps, 4 seeds):
    # model="true" (≥ −200) medians −124.5 / −116.3 / −173.2 from first seeds 100 (tuning),
    # 0 (the test) and 1000, about 1 minute per 4-seed run; model="learned" (≥ −250) −119.2
    # / −160.4 from first seeds 0 and 1000, about 4 minutes on 2 shared CPU cores (from
    # first seed 100 at 10k steps −225.7: the returns peak near 5k, so the preset stops
    # there). The 64×64 model fitted 300 × 64 rows per refit keeps the refits cheap.
    "Pendulum-v1": dict(total_steps=5_000, model_hidden=(64, 64), model_batch_size=64,
                        fit_updates=300),
}


def preset(env_id: str) -> dict[str, Any]:
    """Documented per-environment overrides of the defaults (``{}`` if none)."""
    return dict(PRESETS.get(env_id, {}))


# ----------------------------------------------------------------------------- the policy


class Policy(eqx.Module):
    """What ``act`` needs: ``net(obs)`` gives the pre-tanh action ``[D]``, and the box."""

    net: eqx.Module
    low: jax.Array  # [D]
    high: jax.Array  # [D]


def mean_action(params: Policy, obs: jax.Array) -> jax.Array:
    """μ(s) = mid + half · tanh f(s), on the env's box."""
    mid, half = (params.high + params.low) / 2, (params.high - params.low) / 2
    return mid + half * jnp.tanh(params.net(obs).astype(mid.dtype))


# ----------------------------------------------------------------------------- state


class Learner(eqx.Module):
    """What ``learn`` reads and writes: the policy, the value and its target, a learned
    model (``None`` with ``model="true"``), their Adam states, the env (static) and its
    parameters (the true model, or the known reward's inputs), a counter and a key."""

    params: Policy
    value: eqx.Module  # V(s) → [1]
    target_value: eqx.Module
    model: dynamics.Model | None
    env_params: Any
    actor_opt_state: optax.OptState
    value_opt_state: optax.OptState
    model_opt_state: optax.OptState | None
    updates: jax.Array  # int32: actor/value updates done so far
    key: jax.Array  # the imagined noise and the model fits
    env: Any = eqx.field(static=True, default=None)  # the real env (module docstring)


class Starts(eqx.Module):
    """Start states of imagined rollouts, leaves ``[B, ...]``: the env states
    (``model="true"``) or the observations (a learned model's state), and the
    observations."""

    state: Any
    obs: jax.Array


class RealStep(eqx.Module):
    """One stored real step: the transition (the model's data) and where it starts."""

    transition: rollout.Transition
    start: Starts


class State(eqx.Module):
    learner: Learner
    buffer: replay.ReplayBuffer  # RealStep items
    env: rollout.EnvCarry
    key: jax.Array
    env_steps: jax.Array  # int32: real env steps collected so far (all envs)


def _check_env(env: Any, env_params: Any, config: Config) -> None:
    rollout.require_action_kind(env, env_params, ACTION_KIND, "bptt")
    obs_shape = rollout.observation_shape(env, env_params)
    if len(obs_shape) != 1:
        raise ConfigError(f"env observation shape {obs_shape}: bptt needs vector observations")
    if config.model == "true" and not getattr(env, "supports_transition_gradients", False):
        raise ConfigError(
            f"env={rewards.env_name(env)!r} has no differentiable transitions; bptt "
            "model='true' needs them (gymnax implements them for Pendulum-v1, "
            "MountainCarContinuous-v0, Reacher-misc, Swimmer-misc, PointRobot-misc); use "
            "model='learned' to backpropagate through a learned model instead")
    if config.model == "learned" and config.reward == "known":
        rewards.known(env)  # ConfigError for an env without a known reward


def init(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> State:
    """A fresh run: the policy (``network`` replaces its MLP: obs → pre-tanh action
    ``[D]``), the value and its copy, a learned model if asked for, their optimisers, an
    empty buffer and ``num_envs`` reset envs."""
    _check_env(env, env_params, config)
    obs_dim = rollout.observation_shape(env, env_params)[0]
    low, high = rollout.action_bounds(env, env_params)
    low, high = low.reshape(-1), high.reshape(-1)
    actor_key, value_key, model_key, env_key, learn_key, key = jax.random.split(key, 6)
    net = nets.resolve(network, actor_key,
                       lambda k: nets.MLP(obs_dim, low.shape[0], config.hidden, k, jax.nn.tanh))
    nets.check_output("network (obs → pre-tanh action)", net, [(obs_dim,)], [low.shape])
    params = Policy(nets.arrays_only(net), low, high)
    value = nets.arrays_only(nets.MLP(obs_dim, 1, config.hidden, value_key, jax.nn.tanh))
    optimizer = _optimizer(config.learning_rate, config)
    model = model_opt_state = None
    if config.model == "learned":
        action_dim = math.prod(rollout.action_shape(env, env_params))
        model = dynamics.init(model_key, obs_dim, action_dim, config.model_config)
        model_opt_state = dynamics.init_optimizer(model, config.model_config)
    learner = Learner(params, value, fresh_copy(value), model, env_params,
                      optimizer.init(eqx.filter(params.net, eqx.is_array)),
                      optimizer.init(eqx.filter(value, eqx.is_array)), model_opt_state,
                      jnp.zeros((), jnp.int32), learn_key, env)
    env_carry = rollout.reset(env_key, env, env_params, config.num_envs)
    obs0 = env_carry.obs[0]
    example = RealStep(rollout.example_transition(obs0, jnp.zeros_like(low)),
                       Starts(_start_state(jax.tree.map(lambda x: x[0], env_carry.env_state),
                                           obs0, config), obs0))
    return State(learner, replay.init(config.buffer_size, example), env_carry, key,
                 jnp.zeros((), jnp.int32))


def _start_state(env_state: Any, obs: jax.Array, config: Config) -> Any:
    return env_state if config.model == "true" else obs


def _optimizer(learning_rate: Any, config: Config) -> optax.GradientTransformation:
    return adam_with_clipping(learning_rate, config.max_grad_norm)


# ----------------------------------------------------------------------------- imagination


Step = Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any, jax.Array, jax.Array]]
"""``step(key, state, action) -> (next_obs, next_state, reward, terminated)``, differentiable
in the state and the action."""


def model_step(learner: Learner, config: Config) -> Step:
    """The differentiable step imagination takes: the env's own ``step_env`` with its
    transition gradients on, or a learned ensemble (a uniformly random member per step,
    reparameterised noise; the known reward and termination, or the learned reward)."""
    env, env_params = learner.env, learner.env_params
    if config.model == "true":
        differentiable = env.with_transition_gradients()

        def true_step(key, state, action):
            obs, state, reward, terminated, _ = differentiable.step_env(key, state, action,
                                                                        env_params)
            return obs, state, reward, terminated

        return true_step
    mc, model = config.model_config, learner.model
    known = rewards.KNOWN.get(rewards.env_name(env))
    done_fn = (known.terminated if known is not None else None) or rewards.never_terminated

    def learned_step(key, obs, action):
        member_key, noise_key = jax.random.split(key)
        j = jax.random.randint(member_key, (), 0, mc.ensemble_size)
        # Every member predicts and member j's prediction is kept: under the batch's vmap
        # this is one batched matmul per layer, where gathering member j's weights for each
        # rollout would copy them B times (10× slower on CPU, same result).
        next_obs, reward = jax.vmap(lambda member: dynamics.predict(
            member, model, obs, action, noise_key, mc))(model.members)
        next_obs, reward = next_obs[j], (None if reward is None else reward[j])
        if config.reward == "known":
            reward = known.reward(obs, action, next_obs, env_params)
        return next_obs, next_obs, reward, done_fn(obs, action, next_obs, env_params)

    return learned_step


class Imagined(eqx.Module):
    """H imagined steps of B rollouts: ``obs [H+1, B, d]`` (s_0 … s_H), ``reward [H, B]``,
    ``terminated [H, B]``."""

    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array


def imagine(params: Policy, step_fn: Step, starts: Starts, key: jax.Array, horizon: int
            ) -> Imagined:
    """Roll the policy μ through ``step_fn`` for ``horizon`` steps from ``starts``
    (leaves ``[B, ...]``); differentiable in the policy's parameters."""
    batch = starts.obs.shape[0]

    def one(carry, step_key):
        state, obs = carry
        action = jax.vmap(mean_action, in_axes=(None, 0))(params, obs)
        next_obs, state, reward, terminated = jax.vmap(step_fn)(
            jax.random.split(step_key, batch), state, action)
        next_obs = next_obs.astype(obs.dtype)
        return (state, next_obs), (next_obs, reward.astype(obs.dtype), terminated.astype(bool))

    _, (obs, reward, terminated) = jax.lax.scan(one, (starts.state, starts.obs),
                                                jax.random.split(key, horizon))
    return Imagined(jnp.concatenate([starts.obs[None], obs]), reward, terminated)


def lambda_targets(imagined: Imagined, value: eqx.Module, config: Config
                   ) -> tuple[jax.Array, jax.Array]:
    """G^λ_t ``[H, B]`` (module docstring; V ≡ 0 and λ = 1 without the value) and the
    weights w_t = Π_{j<t} γ(1 − terminated_j) ``[H, B]`` (no gradient)."""
    rewards_ = imagined.reward
    if config.value:
        values = nets.apply_batched(value, imagined.obs, 2)[..., 0]  # [H+1, B]
        lam = config.lam
    else:
        values, lam = jnp.zeros(imagined.obs.shape[:2], rewards_.dtype), 1.0
    no = jnp.zeros_like(imagined.terminated)
    targets = returns.lambda_return(rewards_, values[:-1], values[1:], imagined.terminated, no,
                                    config.gamma, lam)
    discount = config.gamma * (1.0 - imagined.terminated.astype(rewards_.dtype))
    weights = jnp.concatenate([jnp.ones_like(discount[:1]),
                               jnp.cumprod(discount, axis=0)[:-1]])
    return targets, jax.lax.stop_gradient(weights)


def objective(params: Policy, target_value: eqx.Module, step_fn: Step, starts: Starts,
              key: jax.Array, config: Config) -> tuple[jax.Array, tuple[Imagined, jax.Array,
                                                                           jax.Array]]:
    """J(θ) = mean_B (1/H) Σ_t w_t G^λ_t (module docstring), and the imagined rollouts,
    the λ-returns and the weights (for the value's regression)."""
    imagined = imagine(params, step_fn, starts, key, config.horizon)
    targets, weights = lambda_targets(imagined, target_value, config)
    return jnp.mean(jnp.sum(weights * targets, axis=0)) / config.horizon, (imagined, targets,
                                                                          weights)


def value_loss(value: eqx.Module, obs: jax.Array, targets: jax.Array, weights: jax.Array
               ) -> jax.Array:
    """mean_{t,B} w_t ½ (V(s_t) − G^λ_t)² on ``obs [H, B, d]`` with fixed targets."""
    predictions = nets.apply_batched(value, obs, 2)[..., 0]
    return jnp.mean(weights * 0.5 * jnp.square(predictions - targets))


def global_norm(tree: Any) -> jax.Array:
    return optax.tree.norm(eqx.filter(tree, eqx.is_array))


# ----------------------------------------------------------------------------- learn


def learn(learner: Learner, batch: Starts, config: Config
          ) -> tuple[Learner, dict[str, jax.Array]]:
    """One update from a batch of start states (leaves ``[B, ...]``): the actor ascends J
    by the gradient backpropagated through the imagined rollouts (clipped to
    ``max_grad_norm``); the value regresses onto the λ-returns; its target follows by
    Polyak averaging."""
    key, imagine_key = jax.random.split(learner.key)
    step_fn = model_step(learner, config)
    params = learner.params

    def negative(net):
        value, aux = objective(Policy(net, params.low, params.high), learner.target_value,
                               step_fn, batch, imagine_key, config)
        return -value, aux

    (loss, (imagined, targets, weights)), grads = jax.value_and_grad(negative, has_aux=True)(
        params.net)
    net, actor_opt_state = adam_step(_optimizer(config.learning_rate, config), params.net,
                                     grads, learner.actor_opt_state, config.learning_rate)
    value, value_opt_state = learner.value, learner.value_opt_state
    metrics = {"objective": -loss, "grad_norm": global_norm(grads),
               "imagined_reward": jnp.mean(imagined.reward)}
    if config.value:
        obs = jax.lax.stop_gradient(imagined.obs[:-1])
        v_loss, v_grads = jax.value_and_grad(value_loss)(
            value, obs, jax.lax.stop_gradient(targets), weights)
        value, value_opt_state = adam_step(_optimizer(config.value_learning_rate, config),
                                           value, v_grads, value_opt_state,
                                           config.value_learning_rate)
        metrics["value_loss"] = v_loss
    learner = Learner(Policy(net, params.low, params.high), value,
                      polyak_update(value, learner.target_value, config.tau), learner.model,
                      learner.env_params, actor_opt_state, value_opt_state,
                      learner.model_opt_state, learner.updates + 1, key, learner.env)
    return learner, metrics


def fit_model(learner: Learner, buffer: replay.ReplayBuffer, config: Config
              ) -> tuple[Learner, dict[str, jax.Array]]:
    """Refit the learned ensemble on every stored real transition (``dynamics.fit``)."""
    key, fit_key = jax.random.split(learner.key)
    model, opt_state, metrics = dynamics.fit(
        fit_key, learner.model, learner.model_opt_state, buffer.data.transition, buffer.size,
        config.model_config, num_updates=config.fit_updates,
        batch_size=config.model_batch_size)
    learner = eqx.tree_at(lambda x: (x.model, x.model_opt_state, x.key), learner,
                          (model, opt_state, key), is_leaf=lambda x: x is None)
    return learner, metrics


# ----------------------------------------------------------------------------- step / train


def step(
    state: State, config: Config, env: Any, env_params: Any
) -> tuple[State, dict[str, jax.Array]]:
    """K = ``refit_every`` real steps in each env (noisy μ, uniform during the first
    ``learning_starts``), each followed (past the warm-up, and once a learned model has been
    fitted) by ``updates_per_step`` updates on start states drawn from the buffer; then a
    learned model is refitted on everything stored."""
    key, collect_key = jax.random.split(state.key)
    ready = state.env_steps >= config.learning_starts  # a learned model was fitted by now
    E = config.num_envs

    def updates(learner, buffer, key):
        starts = replay.sample(buffer, key, config.updates_per_step * config.batch_size).start
        starts = jax.tree.map(
            lambda x: x.reshape(config.updates_per_step, config.batch_size, *x.shape[1:]),
            starts)
        learner, metrics = jax.lax.scan(lambda learner, b: learn(learner, b, config), learner,
                                        starts)
        return learner, jax.tree.map(jnp.mean, metrics)

    def no_updates(learner, buffer, key):
        shapes = jax.eval_shape(updates, learner, buffer, key)[1]
        return learner, jax.tree.map(jnp.zeros_like, shapes)

    def one(carry, step_key):
        learner, buffer, env_carry, env_steps = carry
        act_key, random_key, env_key, learn_key = jax.random.split(step_key, 4)
        params = learner.params
        action = jax.vmap(lambda o, k: act(params, o, k, config))(
            env_carry.obs, jax.random.split(act_key, E))
        random = jax.random.uniform(random_key, action.shape, minval=params.low,
                                    maxval=params.high)
        action = jnp.where(env_steps < config.learning_starts, random, action)
        starts = Starts(_start_state(env_carry.env_state, env_carry.obs, config), env_carry.obs)
        env_carry, transition = rollout.env_step(
            env_key, env, env_params, env_carry,
            action.reshape(E, *rollout.action_shape(env, env_params)))
        stored = rollout.Transition(transition.obs, action, transition.reward,
                                    transition.next_obs, transition.terminated,
                                    transition.truncated)
        buffer = replay.add(buffer, RealStep(stored, starts))
        learner, metrics = jax.lax.cond(ready, updates, no_updates, learner, buffer, learn_key)
        return (learner, buffer, env_carry, env_steps + E), (transition, metrics)

    carry = (state.learner, state.buffer, state.env, state.env_steps)
    (learner, buffer, env_carry, env_steps), (trajectory, learn_metrics) = jax.lax.scan(
        one, carry, jax.random.split(collect_key, config.refit_every))
    fit_metrics = {}
    if config.model == "learned":
        def refit(learner):
            return fit_model(learner, buffer, config)

        def no_refit(learner):
            return learner, jax.tree.map(jnp.zeros_like, jax.eval_shape(refit, learner)[1])

        learner, fit_metrics = jax.lax.cond(env_steps >= config.learning_starts, refit,
                                            no_refit, learner)
    state = State(learner, buffer, env_carry, key, env_steps)
    metrics = {**rollout.episode_metrics(trajectory), **jax.tree.map(jnp.mean, learn_metrics),
               **fit_metrics, "env_steps": env_steps}
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
    params: Policy, obs: jax.Array, key: jax.Array, config: Config, deterministic: bool = False
) -> jax.Array:
    """μ(s), or μ(s) plus Gaussian noise of ``exploration_noise`` half-widths, clipped to
    the box."""
    action = mean_action(params, obs)
    if deterministic:
        return action
    half = (params.high - params.low) / 2
    noise = config.exploration_noise * half * jax.random.normal(key, action.shape, action.dtype)
    return jnp.clip(action + noise, params.low, params.high)
