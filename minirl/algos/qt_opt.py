"""QT-Opt: Q-learning with continuous actions, where max_a Q(s, a) is found by sampling.

A state-action critic Q_θ(s, a) (a network of the pair; no closed-form maximum) is
regressed onto a bootstrapped target built from transitions drawn uniformly from a replay
buffer (Kalashnikov et al., 2018, "QT-Opt: scalable deep reinforcement learning for
vision-based robotic manipulation", §4):

    L(θ) = E_{(s, a, r, s') ~ D} [ ℓ(y − Q_θ(s, a)) ],      ℓ = ½x² or Huber
    y    = r + γ (1 − terminated) V̄(s'),                  V̄(s') = Q_θ̄(s', â(s')),
    â(s') ≈ argmax_{a ∈ [low, high]} Q_sel(s', a),

where the argmax is approximated by a sampled maximiser (``minirl.core.action_search``):
``maximiser="random"`` keeps the best of N uniform actions in the box; ``"cem"`` runs a few
rounds of the cross-entropy method (N Gaussian samples clipped to the box, refit to the
best M; QT-Opt uses 2 rounds × 64 samples, 6 elites). The maximiser sees the selector
network Q_sel: the target network θ̄ itself (then V̄ is the value the search found), or the
online network θ with ``double_q`` (van Hasselt et al., 2016), the target network then
evaluating the selected action. With ``clipped_double_q`` there are two critics, both
regressed onto one target that takes the smaller of the two target critics at the action
that maximises the first: V̄(s') = min_i Q_θ̄_i(s', â) (Fujimoto et al., 2018, eq. 10; QT-Opt
§4 takes the minimum of two target networks likewise).

A sampled maximiser returns the value of an action it evaluated, so V̄ never exceeds the
true max_a Q_θ̄(s', a): the search error biases the target downwards, against the upward
bias of maximising a noisy Q.

The target network follows Polyak averaging θ̄ ← τθ + (1 − τ)θ̄ after every update. The
behaviour policy is the maximiser of the (first) online critic at s, explored either with
ε-uniform actions (with probability ε, ε annealed linearly, a uniform action in the box) or
with Gaussian noise of standard deviation σ·(high − low)/2 added to it, clipped to the
box; before ``learning_starts`` env steps actions are uniform in the box.

Episode ends follow gymnax 1.x: a transition stores the true next observation
(``final_observation`` at an episode end); only ``terminated`` cuts the bootstrap, a
truncated step bootstraps from V̄(final observation).

Contract (docs/design.md): ``Config``, ``Learner``, ``State``, ``init``, ``learn``,
``step``, ``train``, ``act``. The action box is read from the env at ``init`` and kept in
the parameters, so ``act`` needs no env. The maximiser in ``learn`` draws its samples from
the learner's own key.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..core import action_search, exploration, losses, nets, off_policy, rollout
from ..core import buffer as replay
from ..core import critics as critic_nets
from ..core.config import ConfigError, check_choice, check_off_policy, check_range
from ..core.optim import adam_step, adam_with_clipping, fresh_copy, polyak_update

ACTION_KIND = "continuous"
MAXIMISERS = ("random", "cem")
EXPLORATIONS = ("gaussian", "epsilon_uniform")


class Config(eqx.Module):
    """QT-Opt hyperparameters. Static fields fix shapes and loop lengths; the rest are leaves."""

    total_steps: int = eqx.field(static=True, default=50_000)  # env steps, all envs together
    num_envs: int = eqx.field(static=True, default=1)  # parallel environments
    rollout_steps: int = eqx.field(static=True, default=1)  # env steps per env per iteration
    gradient_steps: int = eqx.field(static=True, default=1)  # K updates per iteration
    buffer_size: int = eqx.field(static=True, default=50_000)  # transitions kept
    batch_size: int = eqx.field(static=True, default=128)  # transitions per update
    learning_starts: int = eqx.field(static=True, default=1_000)  # uniform actions until then
    hidden: tuple[int, ...] = eqx.field(static=True, default=(64, 64))  # critic layer widths
    maximiser: str = eqx.field(static=True, default="cem")  # "random" | "cem"
    num_samples: int = eqx.field(static=True, default=16)  # N: actions per search round
    num_elites: int = eqx.field(static=True, default=4)  # cem: M elites per round
    cem_iterations: int = eqx.field(static=True, default=2)  # cem: rounds (N × rounds evals)
    double_q: bool = eqx.field(static=True, default=False)  # select â with the online critic
    clipped_double_q: bool = eqx.field(static=True, default=False)  # two critics, min target
    loss: str = eqx.field(static=True, default="squared")  # "squared" | "huber"
    exploration: str = eqx.field(static=True, default="gaussian")  # or "epsilon_uniform"

    learning_rate: float = 1e-3  # Adam step size at the start
    learning_rate_end_factor: float = 1.0  # lr anneals linearly to lr × this at the end
    max_grad_norm: float = 10.0  # global-norm gradient clipping
    adam_eps: float = 1e-8
    gamma: float = 0.99  # discount γ
    tau: float = 0.005  # θ̄ ← τθ + (1 − τ)θ̄ after every update
    reward_scale: float = 1.0  # rewards are multiplied by this for learning (not for stats)
    huber_delta: float = 1.0  # Huber threshold δ
    exploration_noise: float = 0.1  # "gaussian": σ in half-widths of the box
    epsilon_start: float = 1.0  # "epsilon_uniform": ε anneals linearly from start …
    epsilon_end: float = 0.05  # … to end …
    exploration_fraction: float = 0.2  # … over this fraction of total_steps

    def __check_init__(self) -> None:
        # sizes, hidden, buffer, batch, one iteration
        check_off_policy(self, "num_samples", "num_elites", "cem_iterations")
        check_choice("maximiser", self.maximiser, MAXIMISERS)
        check_choice("double_q", self.double_q, (True, False))
        check_choice("clipped_double_q", self.clipped_double_q, (True, False))
        check_choice("loss", self.loss, ("squared", "huber"))
        check_choice("exploration", self.exploration, EXPLORATIONS)
        if self.maximiser == "cem" and self.num_elites > self.num_samples:
            raise ConfigError(
                f"num_elites={self.num_elites} exceeds num_samples={self.num_samples}; "
                "allowed: 1 ≤ num_elites ≤ num_samples"
            )
        check_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("learning_rate_end_factor", self.learning_rate_end_factor, 0.0, 1.0)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False)
        check_range("adam_eps", self.adam_eps, 0.0, low_inclusive=False)
        check_range("gamma", self.gamma, 0.0, 1.0, low_inclusive=False)
        check_range("tau", self.tau, 0.0, 1.0, low_inclusive=False)
        check_range("reward_scale", self.reward_scale, 0.0, low_inclusive=False)
        check_range("huber_delta", self.huber_delta, 0.0, low_inclusive=False)
        check_range("exploration_noise", self.exploration_noise, 0.0)
        check_range("epsilon_start", self.epsilon_start, 0.0, 1.0)
        check_range("epsilon_end", self.epsilon_end, 0.0, 1.0)
        check_range("exploration_fraction", self.exploration_fraction, 0.0, 1.0)

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

    @property
    def num_critics(self) -> int:
        return 2 if self.clipped_double_q else 1


PRESETS: dict[str, dict[str, Any]] = {
    # Checked by tests/algos/test_continuous_learning.py (Pendulum, 50k, ≥ −300: medians
    # −150.6 / −144.6 / −161.0 from first seeds 1, 0 (the test) and 1000).
    # Anything not listed uses Config defaults.
    "Pendulum-v1": dict(),
}


def preset(env_id: str) -> dict[str, Any]:
    """Documented per-environment overrides of the defaults (``{}`` if none)."""
    return dict(PRESETS.get(env_id, {}))


CANNOT_LEARN: dict[str, str] = {
    # MountainCarContinuous is an exploration problem: +100 at the flag, −0.1 a² per step,
    # and a policy that holds still earns about 0. Measured with 4 seeds from first seed
    # 100 at 50k steps with the defaults, as a user would run it: every seed held still
    # (median −1.02, no episode reached the flag). PPO's and TRPO's presets learn it (90.3
    # and 93.9 from first seed 1000).
    "MountainCarContinuous-v0": "exploration: Gaussian action noise finds the flag on 0 of "
                                "4 seeds in 50k steps; use ppo or trpo",
}
"""Environments this learner was measured not to learn, and why (``minirl list`` marks them)."""


# ----------------------------------------------------------------------------- state


class Params(eqx.Module):
    """What acting needs: the critics and the action box."""

    critics: eqx.Module  # ensemble of Q(s, a), array leaves [num_critics, ...]
    low: jax.Array  # the box, shaped like one action
    high: jax.Array


class Learner(eqx.Module):
    """What ``learn`` reads and writes: nothing about acting or the environment."""

    params: Params  # online critics θ (and the action box)
    target_params: Params  # target critics θ̄ (Polyak-averaged) and the same box
    opt_state: optax.OptState
    updates: jax.Array  # int32: gradient updates done so far (drives the lr schedule)
    key: jax.Array  # the maximiser's samples in the targets


class State(eqx.Module):
    learner: Learner
    buffer: replay.ReplayBuffer  # Transition items
    env: rollout.EnvCarry
    key: jax.Array
    env_steps: jax.Array  # int32: env steps collected so far (all envs)


def _optimizer(config: Config) -> optax.GradientTransformation:
    return adam_with_clipping(config.learning_rate, config.max_grad_norm, config.adam_eps)


def default_network(key: jax.Array, config: Config, env: Any, env_params: Any) -> eqx.Module:
    """One critic: an MLP of the flattened observation and action to Q(s, a)."""
    obs_size = math.prod(rollout.observation_shape(env, env_params))
    action_size = math.prod(rollout.action_shape(env, env_params))
    return critic_nets.StateActionMLP(obs_size, action_size, config.hidden, key)


def member(critics: eqx.Module, index: int) -> eqx.Module:
    """Critic ``index`` of an ensemble (array leaves ``[num_critics, ...]``)."""
    return jax.tree.map(lambda x: x[index], critics)


def _critics(key: jax.Array, config: Config, env: Any, env_params: Any, network: Any):
    """``num_critics`` critics stacked on a leading axis, function fields static."""
    if isinstance(network, eqx.Module):
        if config.num_critics > 1:
            raise ConfigError(
                "clipped_double_q=True needs two independently initialised critics; pass "
                "network as a factory key -> module instead of one module"
            )
        return jax.tree.map(lambda x: x[None], nets.arrays_only(network))

    def make(key):
        return nets.arrays_only(
            nets.resolve(network, key, lambda k: default_network(k, config, env, env_params))
        )

    return nets.ensemble(make, key, config.num_critics)


def init(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> State:
    """A fresh run: the critic(s), a copied target, Adam, an empty buffer and ``num_envs``
    reset envs. ``network`` is a user's ``eqx.Module`` mapping one observation and one
    action to Q(s, a) (shape ``()`` or ``(1,)``), or a factory ``key -> module`` (needed
    for ``clipped_double_q``: each critic gets its own initialisation); default: an MLP."""
    rollout.require_action_kind(env, env_params, ACTION_KIND, "qt_opt")
    net_key, env_key, learn_key, key = jax.random.split(key, 4)
    critics = _critics(net_key, config, env, env_params, network)
    nets.check_output("network (obs, action → Q(s, a))", member(critics, 0),
                      [rollout.observation_shape(env, env_params),
                       rollout.action_shape(env, env_params)],
                      [(), (1,)])
    low, high = rollout.action_bounds(env, env_params)
    env_carry = rollout.reset(env_key, env, env_params, config.num_envs)
    example = rollout.example_transition(env_carry.obs[0], jnp.zeros(low.shape, jnp.float32))
    params = Params(critics, low, high)
    learner = Learner(
        params=params,
        target_params=fresh_copy(params),
        opt_state=_optimizer(config).init(eqx.filter(critics, eqx.is_array)),
        updates=jnp.zeros((), jnp.int32),
        key=learn_key,
    )
    return State(
        learner=learner,
        buffer=replay.init(config.buffer_size, example),
        env=env_carry,
        key=key,
        env_steps=jnp.zeros((), jnp.int32),
    )


# ----------------------------------------------------------------------------- the target


def q_value(critic: eqx.Module, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Q(s, a) of one (non-ensemble) critic for one observation and action: a scalar."""
    return jnp.reshape(critic(obs, action), ())


def maximise(
    critic: eqx.Module, obs: jax.Array, key: jax.Array, low: jax.Array, high: jax.Array,
    config: Config,
) -> tuple[jax.Array, jax.Array]:
    """â(s) ≈ argmax_a Q(s, a) of one critic over the box by the configured maximiser, and
    Q(s, â). The search runs on the flattened action; â comes back shaped like ``low``."""

    def q_fn(action):
        return q_value(critic, obs, action.reshape(low.shape))

    flat_low, flat_high = jnp.ravel(low), jnp.ravel(high)
    if config.maximiser == "random":
        action, value = action_search.random_search(
            key, q_fn, flat_low, flat_high, num_samples=config.num_samples
        )
    else:
        action, value = action_search.cem(
            key, q_fn, flat_low, flat_high, num_samples=config.num_samples,
            num_elites=config.num_elites, iterations=config.cem_iterations,
        )
    return action.reshape(low.shape), value


def ensemble_q(critics: eqx.Module, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Every critic's Q(s, a) for one (s, a): ``[num_critics]``."""
    return eqx.filter_vmap(lambda c: q_value(c, obs, action))(critics)


def td_targets(
    params: Params, target_params: Params, batch: rollout.Transition, key: jax.Array,
    config: Config,
) -> jax.Array:
    """y = r + γ(1 − terminated) V̄(s') for a batch of transitions ``[B]`` (module doc)."""
    low, high = target_params.low, target_params.high
    selector = member((params if config.double_q else target_params).critics, 0)
    keys = jax.random.split(key, batch.reward.shape[0])
    actions, values = jax.vmap(lambda k, o: maximise(selector, o, k, low, high, config))(
        keys, batch.next_obs
    )
    if config.double_q or config.clipped_double_q:
        q_target = jax.vmap(ensemble_q, in_axes=(None, 0, 0))(
            target_params.critics, batch.next_obs, actions
        )
        values = jnp.min(q_target, axis=-1)  # V̄(s') = min_i Q_θ̄_i(s', â)
    discounts = config.gamma * (1.0 - batch.terminated.astype(values.dtype))
    return jax.lax.stop_gradient(config.reward_scale * batch.reward + discounts * values)


def loss_fn(
    critics: eqx.Module, targets: jax.Array, batch: rollout.Transition, config: Config
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean TD loss over the batch, summed over the critics, and diagnostics."""
    q = jax.vmap(ensemble_q, in_axes=(None, 0, 0))(critics, batch.obs, batch.action)  # [B, M]
    td_error = targets[:, None] - q
    loss = jnp.sum(jnp.mean(losses.td_loss(td_error, config.loss, config.huber_delta), axis=0))
    return loss, {"q_mean": jnp.mean(q), "td_abs": jnp.mean(jnp.abs(td_error))}


# ----------------------------------------------------------------------------- learn


def learn(
    learner: Learner, batch: rollout.Transition, config: Config
) -> tuple[Learner, dict[str, jax.Array]]:
    """One Adam step on a batch of transitions (leaves ``[B, ...]``), then the Polyak
    target update of the critics (the box is not averaged). Pure; needs no env."""
    key, target_key = jax.random.split(learner.key)
    learning_rate = config.learning_rate * exploration.linear_schedule(
        learner.updates, 1.0, config.learning_rate_end_factor, config.num_updates
    )
    params, target_params = learner.params, learner.target_params
    targets = td_targets(params, target_params, batch, target_key, config)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params.critics, targets, batch, config
    )
    critics, opt_state = adam_step(
        _optimizer(config), params.critics, grads, learner.opt_state, learning_rate
    )
    target_critics = polyak_update(critics, target_params.critics, config.tau)
    metrics = {"loss": loss, "learning_rate": learning_rate,
               "target_mean": jnp.mean(targets), **aux}
    learner = Learner(
        params=Params(critics, params.low, params.high),
        target_params=Params(target_critics, target_params.low, target_params.high),
        opt_state=opt_state,
        updates=learner.updates + 1,
        key=key,
    )
    return learner, metrics


# ----------------------------------------------------------------------------- step / train


def sample_batch(buffer: replay.ReplayBuffer, key: jax.Array, config: Config):
    """``batch_size`` transitions drawn uniformly from the buffer."""
    return replay.sample(buffer, key, config.batch_size)


def exploration_parameter(env_steps: jax.Array, config: Config) -> jax.Array:
    """ε ("epsilon_uniform", annealed) or σ ("gaussian") after ``env_steps`` env steps."""
    if config.exploration == "epsilon_uniform":
        duration = config.exploration_fraction * config.total_steps
        return exploration.linear_schedule(
            env_steps, config.epsilon_start, config.epsilon_end, duration
        )
    return jnp.asarray(config.exploration_noise, jnp.float32)


def explore(
    key: jax.Array, action: jax.Array, low: jax.Array, high: jax.Array, parameter: jax.Array,
    config: Config,
) -> jax.Array:
    """The maximiser's ``action`` with ε-uniform or Gaussian exploration, in the box."""
    choice_key, noise_key = jax.random.split(key)
    if config.exploration == "epsilon_uniform":
        uniform = jax.random.uniform(noise_key, low.shape, low.dtype, low, high)
        return jnp.where(jax.random.uniform(choice_key) < parameter, uniform, action)
    noise = parameter * 0.5 * (high - low) * jax.random.normal(noise_key, low.shape, low.dtype)
    return jnp.clip(action + noise, low, high)


def _behaviour(params: Params, obs, key, parameter, uniform_phase, config: Config):
    search_key, explore_key, uniform_key = jax.random.split(key, 3)
    low, high = params.low, params.high
    action, _ = maximise(member(params.critics, 0), obs, search_key, low, high, config)
    action = explore(explore_key, action, low, high, parameter, config)
    uniform = jax.random.uniform(uniform_key, low.shape, low.dtype, low, high)
    return jnp.where(uniform_phase, uniform, action)


def step(
    state: State, config: Config, env: Any, env_params: Any
) -> tuple[State, dict[str, jax.Array]]:
    """Collect ``num_envs × rollout_steps`` env steps, store them, then K updates."""
    key, collect_key, learn_key = jax.random.split(state.key, 3)
    parameter = exploration_parameter(state.env_steps, config)
    params = state.learner.params
    uniform_phase = state.env_steps < config.learning_starts

    def policy(key: jax.Array, obs: jax.Array):
        keys = jax.random.split(key, obs.shape[0])
        act = jax.vmap(lambda k, o: _behaviour(params, o, k, parameter, uniform_phase, config))
        return act(keys, obs), None

    env_carry, trajectory = rollout.collect(
        collect_key, env, env_params, state.env, policy, config.rollout_steps
    )
    buffer = off_policy.store(state.buffer, trajectory)
    env_steps = state.env_steps + config.steps_per_iteration

    learner, learn_metrics = off_policy.updates_after_warmup(
        env_steps >= config.learning_starts,
        state.learner,
        lambda learner, key: learn(learner, sample_batch(buffer, key, config), config),
        lambda: jax.random.split(learn_key, config.gradient_steps),  # one draw per update
    )
    state = State(learner, buffer, env_carry, key, env_steps)
    metrics = {
        **rollout.episode_metrics(trajectory),
        **learn_metrics,
        "exploration": parameter,
        "env_steps": env_steps,
    }
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
    params: Params,
    obs: jax.Array,
    key: jax.Array,
    config: Config,
    deterministic: bool = False,
) -> jax.Array:
    """An action for one observation: the maximiser's (which samples with ``key``), or that
    with exploration at its final ε or σ."""
    search_key, explore_key = jax.random.split(key)
    low, high = params.low, params.high
    action, _ = maximise(member(params.critics, 0), obs, search_key, low, high, config)
    if deterministic:
        return action
    final = config.epsilon_end if config.exploration == "epsilon_uniform" else (
        config.exploration_noise)
    return explore(explore_key, action, low, high, jnp.asarray(final, low.dtype), config)
