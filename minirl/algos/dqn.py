"""Deep Q-learning: fitted Q-iteration with replay and a target network, DQN, double DQN and
N-step returns with three treatments of off-policy data, in one file.

The action value Q_θ(s, a) is regressed onto a bootstrapped target built from transitions
drawn uniformly from a replay buffer (Mnih et al., 2015, "Human-level control through deep
reinforcement learning"):

    L(θ) = E_{(s, a, …) ~ D} [ ℓ(G − Q_θ(s, a)) ],      ℓ = Huber or ½x²

with, for a window of N stored steps of one environment (k = 0 … N−1),

    G_k = r_k + d_k [ V̄(s_{k+1}) + c_k (G_{k+1} − q̄_k) ],    G_{N−1} = r_{N−1} + d_{N−1} V̄(s_N)

    d_k  = γ (1 − terminated_k)                   only termination cuts the bootstrap;
    V̄(s) = max_a Q_θ̄(s, a)                        DQN (target network θ̄), or
    V̄(s) = Q_θ̄(s, argmax_a Q_θ(s, a))             double DQN (van Hasselt et al., 2016).

The window stops at an episode end (a truncated step bootstraps from V̄ of the *final*
observation) and at the newest item in the buffer; within it the trace c_k and the control
variate q̄_k set how off-policy data are treated (Munos et al., 2016, eq. 3):

    "none"        c_k = 1, q̄_k = V̄(s_{k+1})        the uncorrected N-step return
                                                    (Hessel et al., 2018, "Rainbow");
    "cut"         c_k = 𝟙[a_{k+1} = argmax Q_θ(s_{k+1}, ·)]: the return is cut at the first
                  stored action that the current greedy policy would not take
                  (Watkins's Q(λ), Sutton & Barto, 2018, §12.10);
    "importance"  c_k = min(ρ̄, π(a_{k+1}|s_{k+1}) / μ(a_{k+1}|s_{k+1})), q̄_k =
                  Q_θ̄(s_{k+1}, a_{k+1}): per-decision importance sampling with control
                  variates (Precup et al., 2000; Sutton & Barto, 2018, eq. 7.14) with π
                  greedy in Q_θ and the behaviour probabilities μ stored in the buffer.

N = 1 gives one-step Q-learning for all three. The target network follows
θ̄ ← τθ + (1 − τ)θ̄ every ``target_update_period`` updates (τ = 1: DQN's hard copy).
Exploration is ε-greedy or Boltzmann with linearly annealed ε or temperature.

Contract (minirl/DESIGN.md): ``Config``, ``State``, ``init``, ``learn``, ``step``,
``train``, ``act``. Static fields set shapes and loop lengths; numeric hyperparameters are
leaves, so ``jax.vmap(train, in_axes=(0, None))(keys, config)`` sweeps seeds and
``jax.vmap(train)(keys, minirl.core.config.stack(configs))`` sweeps hyperparameters.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from minirl.core import buffer as replay
from minirl.core import exploration, losses, nets, returns, rollout
from minirl.core.config import check_choice, check_positive_int, check_range
from minirl.core.optim import adam_with_clipping, periodic_target_update, set_learning_rate

OFF_POLICY_CORRECTIONS = ("none", "cut", "importance")
EXPLORATIONS = ("epsilon_greedy", "boltzmann")


class Config(eqx.Module):
    """DQN hyperparameters. Static fields fix shapes and loop lengths; the rest are leaves."""

    env_id: str = eqx.field(static=True, default="CartPole-v1")
    total_steps: int = eqx.field(static=True, default=100_000)  # env steps, all envs together
    num_envs: int = eqx.field(static=True, default=1)  # parallel environments
    rollout_steps: int = eqx.field(static=True, default=1)  # env steps per env per iteration
    gradient_steps: int = eqx.field(static=True, default=1)  # K updates per iteration
    buffer_size: int = eqx.field(static=True, default=100_000)  # transitions kept
    batch_size: int = eqx.field(static=True, default=64)  # windows per update
    learning_starts: int = eqx.field(static=True, default=1_000)  # env steps before updates
    hidden: tuple[int, ...] = eqx.field(static=True, default=(128, 128))  # layer widths
    network: str = eqx.field(static=True, default="auto")  # "auto" | "mlp" | "cnn"
    double_q: bool = eqx.field(static=True, default=True)  # van Hasselt et al. (2016)
    n_step: int = eqx.field(static=True, default=1)  # length N of the return window
    off_policy_correction: str = eqx.field(static=True, default="none")  # see module doc
    loss: str = eqx.field(static=True, default="huber")  # "huber" | "squared"
    exploration: str = eqx.field(static=True, default="epsilon_greedy")  # or "boltzmann"

    learning_rate: float = 5e-4  # Adam step size at the start
    learning_rate_end_factor: float = 1.0  # lr anneals linearly to lr × this at the end
    max_grad_norm: float = 10.0  # global-norm gradient clipping
    adam_eps: float = 1e-8
    gamma: float = 0.99  # discount γ
    tau: float = 1.0  # target update θ̄ ← τθ + (1 − τ)θ̄ …
    target_update_period: int = 500  # … every this many updates
    epsilon_start: float = 1.0  # ε-greedy: ε anneals linearly from start …
    epsilon_end: float = 0.05  # … to end …
    exploration_fraction: float = 0.2  # … over this fraction of total_steps
    temperature_start: float = 1.0  # Boltzmann: temperature anneals likewise
    temperature_end: float = 0.05
    huber_delta: float = 1.0  # Huber threshold δ
    importance_ratio_clip: float = float("inf")  # ρ̄ for off_policy_correction="importance"

    def __check_init__(self) -> None:
        if rollout.action_kind(self.env_id) != "discrete":
            raise ValueError(
                f"env={self.env_id!r} has continuous actions; dqn needs a discrete action space"
            )
        for name in (
            "total_steps",
            "num_envs",
            "rollout_steps",
            "gradient_steps",
            "buffer_size",
            "batch_size",
            "n_step",
        ):
            check_positive_int(name, getattr(self, name))
        check_positive_int("learning_starts", self.learning_starts, minimum=0)
        if not self.hidden or any(not isinstance(w, int) or w < 1 for w in self.hidden):
            raise ValueError(f"hidden={self.hidden!r} must be a non-empty tuple of positive ints")
        check_choice("network", self.network, ("auto", "mlp", "cnn"))
        check_choice("off_policy_correction", self.off_policy_correction, OFF_POLICY_CORRECTIONS)
        check_choice("loss", self.loss, ("huber", "squared"))
        check_choice("exploration", self.exploration, EXPLORATIONS)
        check_choice("double_q", self.double_q, (True, False))
        if self.buffer_size % self.num_envs:
            raise ValueError(
                f"buffer_size={self.buffer_size} must be a multiple of num_envs={self.num_envs}"
            )
        if self.batch_size > self.buffer_size:
            raise ValueError(
                f"batch_size={self.batch_size} is larger than buffer_size={self.buffer_size}"
            )
        if self.total_steps < self.num_envs * self.rollout_steps:
            raise ValueError(
                f"total_steps={self.total_steps} is less than one iteration "
                f"(num_envs × rollout_steps = {self.num_envs * self.rollout_steps})"
            )
        check_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("learning_rate_end_factor", self.learning_rate_end_factor, 0.0, 1.0)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False)
        check_range("adam_eps", self.adam_eps, 0.0, low_inclusive=False)
        check_range("gamma", self.gamma, 0.0, 1.0, low_inclusive=False)
        check_range("tau", self.tau, 0.0, 1.0, low_inclusive=False)
        check_range("target_update_period", self.target_update_period, 1.0)
        check_range("epsilon_start", self.epsilon_start, 0.0, 1.0)
        check_range("epsilon_end", self.epsilon_end, 0.0, 1.0)
        check_range("exploration_fraction", self.exploration_fraction, 0.0, 1.0)
        check_range("temperature_start", self.temperature_start, 0.0, low_inclusive=False)
        check_range("temperature_end", self.temperature_end, 0.0, low_inclusive=False)
        check_range("huber_delta", self.huber_delta, 0.0, low_inclusive=False)
        check_range("importance_ratio_clip", self.importance_ratio_clip, 0.0, low_inclusive=False)

    @property
    def num_iterations(self) -> int:
        """Iterations of ``step``; each collects ``num_envs × rollout_steps`` env steps."""
        return self.total_steps // (self.num_envs * self.rollout_steps)


PRESETS: dict[str, dict[str, Any]] = {
    # Tuned on this machine; see README "Presets". Anything not listed uses Config defaults.
    # CartPole: 3-step returns propagate the end-of-episode signal faster, and annealing the
    # learning rate to 0 with ε → 0.01 stops late collapses; tuned on seeds other than the
    # learning test's (8 variants × 4 seeds at 100k steps: all 8 medians ≥ 497).
    "CartPole-v1": dict(n_step=3, learning_rate_end_factor=0.0, epsilon_end=0.01),
    "Acrobot-v1": dict(learning_rate_end_factor=0.0),
    "MountainCar-v0": dict(
        total_steps=300_000, exploration_fraction=0.3, n_step=3, learning_rate_end_factor=0.0
    ),
    "Catch-bsuite": dict(total_steps=30_000, learning_starts=500, exploration_fraction=0.3),
    "Asterix-MinAtar": dict(
        total_steps=2_000_000,
        num_envs=8,
        buffer_size=200_000,
        batch_size=64,
        learning_rate=2.5e-4,
        exploration_fraction=0.1,
        target_update_period=1000,
        learning_starts=10_000,
        n_step=3,
    ),
}
for _minatar in ("Breakout", "Freeway", "Seaquest", "SpaceInvaders"):
    PRESETS[f"{_minatar}-MinAtar"] = PRESETS["Asterix-MinAtar"]


def preset(env_id: str) -> dict[str, Any]:
    """Documented per-environment overrides of the defaults (``{}`` if none)."""
    return dict(PRESETS.get(env_id, {}))


class State(eqx.Module):
    params: eqx.Module  # online Q-network θ
    target_params: eqx.Module  # target network θ̄
    opt_state: optax.OptState
    buffer: replay.ReplayBuffer  # Transition items, time-major across num_envs streams
    env: rollout.EnvCarry
    key: jax.Array
    env_steps: jax.Array  # int32: env steps collected so far (all envs)
    updates: jax.Array  # int32: gradient updates done so far


class Batch(eqx.Module):
    """N-step windows: ``transitions`` leaves ``[B, N, ...]``, ``valid`` ``[B, N]``."""

    transitions: rollout.Transition
    valid: jax.Array


def _optimizer(config: Config) -> optax.GradientTransformation:
    return adam_with_clipping(config.learning_rate, config.max_grad_norm, config.adam_eps)


def init(key: jax.Array, config: Config) -> State:
    env, env_params = rollout.make_env(config.env_id)
    net_key, env_key, key = jax.random.split(key, 3)
    obs_shape = rollout.observation_shape(config.env_id)
    params = nets.make_network(
        obs_shape, rollout.num_actions(config.env_id), config.hidden, config.network, net_key
    )
    env_carry = rollout.reset(env_key, env, env_params, config.num_envs)
    example = rollout.Transition(
        obs=env_carry.obs[0],
        action=jnp.zeros((), jnp.int32),
        reward=jnp.zeros((), jnp.float32),
        next_obs=env_carry.obs[0],
        terminated=jnp.zeros((), bool),
        truncated=jnp.zeros((), bool),
        policy_info=jnp.zeros((), jnp.float32),  # behaviour probability μ(a|s)
    )
    return State(
        params=params,
        # A copy, not the same arrays: donating a fresh state must not donate a buffer twice.
        target_params=jax.tree.map(lambda x: jnp.copy(x) if eqx.is_array(x) else x, params),
        opt_state=_optimizer(config).init(eqx.filter(params, eqx.is_array)),
        buffer=replay.init(config.buffer_size, example),
        env=env_carry,
        key=key,
        env_steps=jnp.zeros((), jnp.int32),
        updates=jnp.zeros((), jnp.int32),
    )


def _q(params: eqx.Module, obs: jax.Array, batch_dims: int = 1) -> jax.Array:
    """Q-values ``[..., A]`` for observations with ``batch_dims`` leading batch axes."""
    q_fn = params
    for _ in range(batch_dims):
        q_fn = jax.vmap(q_fn)
    return q_fn(obs)


def n_step_targets(
    params: eqx.Module, target_params: eqx.Module, batch: Batch, config: Config
) -> jax.Array:
    """The N-step targets G_0 of a batch of windows (module docstring), ``[B]``."""
    tr = batch.transitions
    q_next_target = _q(target_params, tr.next_obs, 2)  # [B, N, A]
    q_next_online = _q(params, tr.next_obs, 2) if config.double_q else q_next_target
    next_values = losses.q_learning_target_value(q_next_target, q_next_online, config.double_q)
    discounts = config.gamma * (1.0 - tr.terminated.astype(jnp.float32))

    # Continuing from step k to k+1 needs step k+1 in the buffer and no episode end at k.
    continues = batch.valid[:, 1:] & ~tr.done[:, :-1]  # [B, N-1]
    next_actions = tr.action[:, 1:]
    if config.off_policy_correction == "none":
        traces, q_taken = continues.astype(jnp.float32), next_values[:, :-1]
    else:
        greedy = jnp.argmax(_q(params, tr.obs[:, 1:], 2), axis=-1)  # π(·|s_{k+1}) is greedy in θ
        on_policy = (next_actions == greedy).astype(jnp.float32)
        if config.off_policy_correction == "cut":
            traces, q_taken = continues * on_policy, next_values[:, :-1]
        else:
            ratio = on_policy / jnp.maximum(tr.policy_info[:, 1:], 1e-8)
            traces = continues * jnp.minimum(ratio, config.importance_ratio_clip)
            q_next_taken = _q(target_params, tr.obs[:, 1:], 2)
            q_taken = jnp.take_along_axis(q_next_taken, next_actions[..., None], -1)[..., 0]
    pad = jnp.zeros_like(tr.reward[:, :1])
    traces = jnp.concatenate([traces, pad], axis=1)
    q_taken = jnp.concatenate([q_taken, pad], axis=1)
    targets = jax.vmap(returns.off_policy_n_step_return)(
        tr.reward, discounts, next_values, q_taken, traces
    )
    return jax.lax.stop_gradient(targets)


def loss_fn(
    params: eqx.Module, target_params: eqx.Module, batch: Batch, config: Config
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean TD loss of the first step of each window, and diagnostics."""
    targets = n_step_targets(params, target_params, batch, config)
    first = batch.transitions.obs[:, 0]
    q_values = _q(params, first)
    q_taken = jnp.take_along_axis(q_values, batch.transitions.action[:, 0, None], -1)[:, 0]
    td_error = targets - q_taken
    loss = jnp.mean(losses.td_loss(td_error, config.loss, config.huber_delta))
    return loss, {"q_mean": jnp.mean(q_taken), "td_abs": jnp.mean(jnp.abs(td_error))}


def learn(state: State, batch: Batch, config: Config) -> tuple[State, dict[str, jax.Array]]:
    """One gradient step on ``batch``, then the target-network update. Pure."""
    learning_rate = config.learning_rate * exploration.linear_schedule(
        state.env_steps, 1.0, config.learning_rate_end_factor, config.total_steps
    )
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.target_params, batch, config
    )
    opt_state = set_learning_rate(state.opt_state, learning_rate)
    updates, opt_state = _optimizer(config).update(
        eqx.filter(grads, eqx.is_array), opt_state, eqx.filter(state.params, eqx.is_array)
    )
    params = eqx.apply_updates(state.params, updates)
    update_count = state.updates + 1
    target_params = periodic_target_update(
        params, state.target_params, update_count, config.target_update_period, config.tau
    )
    state = eqx.tree_at(
        lambda s: (s.params, s.target_params, s.opt_state, s.updates),
        state,
        (params, target_params, opt_state, update_count),
    )
    return state, {"loss": loss, "learning_rate": learning_rate, **aux}


def sample_batch(state: State, key: jax.Array, config: Config) -> Batch:
    """``batch_size`` windows of ``n_step`` consecutive steps of one environment each."""
    transitions, valid = replay.sample_sequences(
        state.buffer, key, config.batch_size, config.n_step, stride=config.num_envs
    )
    return Batch(transitions, valid)


def exploration_parameter(env_steps: jax.Array, config: Config) -> jax.Array:
    """ε (ε-greedy) or the temperature (Boltzmann) after ``env_steps`` env steps."""
    duration = config.exploration_fraction * config.total_steps
    if config.exploration == "epsilon_greedy":
        return exploration.linear_schedule(
            env_steps, config.epsilon_start, config.epsilon_end, duration
        )
    return exploration.linear_schedule(
        env_steps, config.temperature_start, config.temperature_end, duration
    )


def _explore(key: jax.Array, q_values: jax.Array, parameter: jax.Array, config: Config):
    if config.exploration == "epsilon_greedy":
        return exploration.epsilon_greedy(key, q_values, parameter)
    return exploration.boltzmann(key, q_values, parameter)


def step(state: State, config: Config) -> tuple[State, dict[str, jax.Array]]:
    """Collect ``num_envs × rollout_steps`` env steps, store them, then K updates."""
    env, env_params = rollout.make_env(config.env_id)
    key, collect_key, learn_key = jax.random.split(state.key, 3)
    parameter = exploration_parameter(state.env_steps, config)

    def policy(key: jax.Array, obs: jax.Array):
        keys = jax.random.split(key, obs.shape[0])
        q_values = _q(state.params, obs)
        return jax.vmap(_explore, in_axes=(0, 0, None, None))(keys, q_values, parameter, config)

    env_carry, trajectory = rollout.collect(
        collect_key, env, env_params, state.env, policy, config.rollout_steps
    )
    stored = rollout.Transition(
        obs=trajectory.obs,
        action=trajectory.action,
        reward=trajectory.reward,
        next_obs=trajectory.next_obs,
        terminated=trajectory.terminated,
        truncated=trajectory.truncated,
        policy_info=trajectory.policy_info,
    )
    # [T, E] → [T·E] in time-major order, so item i + E is the same env one step later.
    stored = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), stored)
    env_steps = state.env_steps + config.num_envs * config.rollout_steps
    state = eqx.tree_at(
        lambda s: (s.buffer, s.env, s.key, s.env_steps),
        state,
        (replay.add(state.buffer, stored), env_carry, key, env_steps),
    )

    def update(state: State, key: jax.Array):
        return learn(state, sample_batch(state, key, config), config)

    def updates(state: State) -> tuple[State, dict[str, jax.Array]]:
        state, metrics = jax.lax.scan(
            update, state, jax.random.split(learn_key, config.gradient_steps)
        )
        return state, jax.tree.map(jnp.mean, metrics)

    def no_updates(state: State) -> tuple[State, dict[str, jax.Array]]:
        return state, jax.tree.map(jnp.zeros_like, jax.eval_shape(updates, state)[1])

    state, learn_metrics = jax.lax.cond(
        env_steps >= config.learning_starts, updates, no_updates, state
    )
    metrics = {
        **rollout.episode_metrics(trajectory),
        **learn_metrics,
        "exploration": parameter,
        "env_steps": env_steps,
    }
    return state, metrics


def train(key: jax.Array, config: Config) -> tuple[State, dict[str, jax.Array]]:
    """A whole run: ``init`` then ``lax.scan`` of ``step``; metrics stacked per iteration."""
    state = init(key, config)
    return jax.lax.scan(lambda s, _: step(s, config), state, length=config.num_iterations)


def act(
    params: eqx.Module,
    obs: jax.Array,
    key: jax.Array,
    config: Config,
    deterministic: bool = False,
) -> jax.Array:
    """An action for one observation: greedy, or ε-greedy / Boltzmann at the final ε / T."""
    q_values = params(obs)
    if deterministic:
        return jnp.argmax(q_values)
    final = config.epsilon_end if config.exploration == "epsilon_greedy" else config.temperature_end
    return _explore(key, q_values, final, config)[0]
