"""Deep Q-learning: fitted Q-iteration with replay and a target network, DQN, double DQN and
N-step returns with three treatments of off-policy data, in one file.

The action value Q_θ(s, a) is regressed onto a bootstrapped target built from transitions
drawn uniformly from a replay buffer (Mnih et al., 2015, "Human-level control through deep
reinforcement learning"):

    L(θ) = E_{(s, a, …) ~ D} [ ℓ(G − Q_θ(s, a)) ],      ℓ = Huber or ½x²

The target evaluates a *target policy* π with the target network θ̄. π is ε_π-greedy
(``target_epsilon``; 0 = greedy) in a selector network: the online network θ for double
DQN (van Hasselt et al., 2016), the target network θ̄ itself otherwise; its value is

    V̄(s) = Σ_a π(a|s) Q_θ̄(s, a)        = Q_θ̄(s, argmax_a Q_θ(s, a))   double DQN, ε_π = 0
                                        = max_a Q_θ̄(s, a)               DQN, ε_π = 0.

For a window of N stored steps of one environment (k = 0 … N−1) the target is the
off-policy return of Munos et al. (2016, "Safe and efficient off-policy RL", eq. 3):

    G_k = r_k + d_k [ V̄(s_{k+1}) + c_k (G_{k+1} − q̄_k) ],    G_{N−1} = r_{N−1} + d_{N−1} V̄(s_N)

    d_k = γ (1 − terminated_k)          only termination cuts the bootstrap; a truncated step
                                        bootstraps from V̄ of the *final* observation.

The window also stops (c_k = 0) at an episode end and at the newest item in the buffer.
Within it the trace c_k and the control variate q̄_k set how off-policy data are treated
(λ = ``trace_lambda``, 1 by default; a' = a_{k+1}, s' = s_{k+1}; μ the behaviour policy,
whose probabilities are stored in the buffer):

    "none"        c_k = λ,  q̄_k = V̄(s')           the uncorrected N-step return (Hessel et
                                                  al., 2018, "Rainbow"); biased towards the
                                                  behaviour policy's value;
    "cut"         c_k = λ 𝟙[a' = argmax_a Q_sel(s', a)],  q̄_k = V̄(s')   the return stops at
                  the first stored action the greedy policy would not take: Watkins's Q(λ)
                  (Sutton & Barto, 2018, §12.10) when ε_π = 0. With ε_π > 0 it evaluates
                  neither π nor the greedy policy: the window continues only along greedy
                  actions g = argmax_a Q_sel(s', a) while V̄ bootstraps ε_π-greedily, so in
                  expectation over μ a step backs up (1 − λμ(g|s')) V̄(s') + λμ(g|s')
                  E[G_{k+1} | s', g], and Q^π is not its fixed point (a continued step adds
                  λμ(g|s') (Q^π(s', g) − V^π(s')), zero only for greedy π). "importance"
                  handles an ε_π-greedy π;
    "importance"  c_k = λ min(ρ̄, π(a'|s') / μ(a'|s')),  q̄_k = Q_θ̄(s', a')   Retrace(λ) with
                  ρ̄ = ``importance_ratio_clip`` = 1 (Munos et al., 2016); ρ̄ = ∞ and λ = 1 is
                  per-decision importance sampling with control variates (Precup et al., 2000;
                  Sutton & Barto, 2018, eq. 7.14), unbiased: E_μ[G_0] = (T^π)^N Q_θ̄ (s_0, a_0).
                  For any ρ̄, Q^π is the fixed point: E_μ[G_0] = Q^π(s_0, a_0) when Q_θ̄ = Q^π.

N = 1 gives one-step Q-learning for all three. The lecture notes' "importance sampling"
correction is the untruncated ratio; we default to Retrace's truncated traces because the
untruncated product reaches |A|^(N−1) at ε = 1 (a variance the notes warn about), and keep
``importance_ratio_clip=inf`` for the notes' form.

The target network follows one of two rules (``target_update``): ``"hard"`` copies θ̄ ← θ
every ``target_update_period`` updates (Mnih et al., 2015); ``"polyak"`` averages
θ̄ ← τθ + (1 − τ)θ̄ after every update (Lillicrap et al., 2016), τ ≈ 0.005. The notes write
Polyak averaging as φ' ← τ'φ' + (1 − τ')φ with τ' ≈ 0.999, so our τ = 1 − τ'.
Exploration is ε-greedy or Boltzmann with linearly annealed ε or temperature.

Contract (docs/design.md): ``Config``, ``Learner``, ``State``, ``init``, ``learn``,
``step``, ``train``, ``act``. The environment is an argument (``env`` static, ``env_params``
a pytree); static config fields set shapes and loop lengths, numeric hyperparameters are
leaves, so one compiled program serves every learning rate, γ or env parameter.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..core import buffer as replay
from ..core import exploration, losses, nets, off_policy, returns, rollout
from ..core.config import check_choice, check_off_policy, check_range
from ..core.optim import (
    adam_step,
    adam_with_clipping,
    fresh_copy,
    hard_target_update,
    polyak_update,
)

ACTION_KIND = "discrete"
OFF_POLICY_CORRECTIONS = ("none", "cut", "importance")
EXPLORATIONS = ("epsilon_greedy", "boltzmann")
TARGET_UPDATES = ("hard", "polyak")


class Config(eqx.Module):
    """DQN hyperparameters. Static fields fix shapes and loop lengths; the rest are leaves."""

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
    target_update: str = eqx.field(static=True, default="hard")  # "hard" | "polyak"

    learning_rate: float = 5e-4  # Adam step size at the start
    learning_rate_end_factor: float = 1.0  # lr anneals linearly to lr × this at the end
    max_grad_norm: float = 10.0  # global-norm gradient clipping
    adam_eps: float = 1e-8
    gamma: float = 0.99  # discount γ
    target_update_period: int = 500  # "hard": θ̄ ← θ every this many updates
    tau: float = 0.005  # "polyak": θ̄ ← τθ + (1 − τ)θ̄ after every update
    epsilon_start: float = 1.0  # ε-greedy: ε anneals linearly from start …
    epsilon_end: float = 0.05  # … to end …
    exploration_fraction: float = 0.2  # … over this fraction of total_steps
    temperature_start: float = 1.0  # Boltzmann: temperature anneals likewise
    temperature_end: float = 0.05
    huber_delta: float = 1.0  # Huber threshold δ
    target_epsilon: float = 0.0  # ε_π of the target policy π (0: greedy)
    trace_lambda: float = 1.0  # λ of the traces c_k (all three corrections)
    importance_ratio_clip: float = 1.0  # ρ̄ of "importance" (1: Retrace; inf: plain IS)

    def __check_init__(self) -> None:
        check_off_policy(self, "n_step")  # sizes, hidden, buffer, batch, one iteration
        check_choice("network", self.network, ("auto", "mlp", "cnn"))
        check_choice("off_policy_correction", self.off_policy_correction, OFF_POLICY_CORRECTIONS)
        check_choice("loss", self.loss, ("huber", "squared"))
        check_choice("exploration", self.exploration, EXPLORATIONS)
        check_choice("target_update", self.target_update, TARGET_UPDATES)
        check_choice("double_q", self.double_q, (True, False))
        check_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("learning_rate_end_factor", self.learning_rate_end_factor, 0.0, 1.0)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False)
        check_range("adam_eps", self.adam_eps, 0.0, low_inclusive=False)
        check_range("gamma", self.gamma, 0.0, 1.0, low_inclusive=False)
        check_range("target_update_period", self.target_update_period, 1.0)
        check_range("tau", self.tau, 0.0, 1.0, low_inclusive=False)
        check_range("epsilon_start", self.epsilon_start, 0.0, 1.0)
        check_range("epsilon_end", self.epsilon_end, 0.0, 1.0)
        check_range("exploration_fraction", self.exploration_fraction, 0.0, 1.0)
        check_range("temperature_start", self.temperature_start, 0.0, low_inclusive=False)
        check_range("temperature_end", self.temperature_end, 0.0, low_inclusive=False)
        check_range("huber_delta", self.huber_delta, 0.0, low_inclusive=False)
        check_range("target_epsilon", self.target_epsilon, 0.0, 1.0)
        check_range("trace_lambda", self.trace_lambda, 0.0, 1.0)
        check_range("importance_ratio_clip", self.importance_ratio_clip, 0.0,
                    low_inclusive=False, allow_inf=True)

    @property
    def steps_per_iteration(self) -> int:
        return self.num_envs * self.rollout_steps

    @property
    def num_iterations(self) -> int:
        """Iterations of ``step``; each collects ``num_envs × rollout_steps`` env steps."""
        return self.total_steps // self.steps_per_iteration

    @property
    def num_updates(self) -> int:
        """Gradient updates in a whole run: K per iteration once ``learning_starts`` env steps
        are in the buffer (the horizon of the learning-rate schedule)."""
        first = max(1, -(-self.learning_starts // self.steps_per_iteration))
        return max(1, self.num_iterations - first + 1) * self.gradient_steps


PRESETS: dict[str, dict[str, Any]] = {
    # Tuned on this machine; see README "Presets". Anything not listed uses Config defaults.
    # CartPole: 3-step returns propagate the end-of-episode signal faster, and annealing the
    # learning rate to 0 with ε → 0.01 stops late collapses; tuned on seeds other than the
    # learning test's (8 variants × 4 seeds at 100k steps: all 8 medians ≥ 497). Tuned for
    # double DQN (the default); plain DQN (double_q=False) is steadier at learning_rate=2.5e-4
    # (1 of 32 seeds below 475 against 5 of 24 at 5e-4; tests/algos/test_learning.py).
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


# ----------------------------------------------------------------------------- state


class Learner(eqx.Module):
    """What ``learn`` reads and writes: nothing about acting or the environment."""

    params: eqx.Module  # online Q-network θ: obs → Q(obs, ·) [A]
    target_params: eqx.Module  # target network θ̄
    opt_state: optax.OptState
    updates: jax.Array  # int32: gradient updates done so far (drives the lr schedule)


class State(eqx.Module):
    learner: Learner
    buffer: replay.ReplayBuffer  # Transition items, time-major across num_envs streams
    env: rollout.EnvCarry
    key: jax.Array
    env_steps: jax.Array  # int32: env steps collected so far (all envs)


class Batch(eqx.Module):
    """N-step windows: ``transitions`` leaves ``[B, N, ...]``, ``valid`` ``[B, N]`` (False
    for window items past the newest one written); ``policy_info`` is μ(a|s)."""

    transitions: rollout.Transition
    valid: jax.Array


def _optimizer(config: Config) -> optax.GradientTransformation:
    return adam_with_clipping(config.learning_rate, config.max_grad_norm, config.adam_eps)


def default_network(key: jax.Array, config: Config, env: Any, env_params: Any) -> eqx.Module:
    """An MLP (or, for ``[H, W, C]`` observations, the MinAtar CNN) from obs to Q-values."""
    obs_shape = rollout.observation_shape(env, env_params)
    return nets.make_network(
        obs_shape, rollout.num_actions(env, env_params), config.hidden, config.network, key
    )


def init(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> State:
    """A fresh run: the Q-network, a copied target, Adam, an empty buffer and ``num_envs``
    reset envs. ``network`` is a user's ``eqx.Module`` mapping one observation to Q-values
    ``[A]``, or a factory ``key -> module`` (see ``core.nets.resolve``); default: an
    MLP, or the MinAtar CNN for ``[H, W, C]`` observations."""
    rollout.require_action_kind(env, env_params, ACTION_KIND, "dqn")
    net_key, env_key, key = jax.random.split(key, 3)
    network = nets.resolve(
        network, net_key, lambda k: default_network(k, config, env, env_params)
    )
    nets.check_output("network (obs → Q-values)", network,
                      [rollout.observation_shape(env, env_params)],
                      [(rollout.num_actions(env, env_params),)])
    network = nets.arrays_only(network)  # function fields become static: it rides in scan
    env_carry = rollout.reset(env_key, env, env_params, config.num_envs)
    # policy_info: the behaviour probability μ(a|s), for the off-policy corrections
    example = rollout.example_transition(env_carry.obs[0], jnp.zeros((), jnp.int32),
                                         policy_info=jnp.zeros((), jnp.float32))
    learner = Learner(
        params=network,
        target_params=fresh_copy(network),
        opt_state=_optimizer(config).init(eqx.filter(network, eqx.is_array)),
        updates=jnp.zeros((), jnp.int32),
    )
    return State(
        learner=learner,
        buffer=replay.init(config.buffer_size, example),
        env=env_carry,
        key=key,
        env_steps=jnp.zeros((), jnp.int32),
    )


# ----------------------------------------------------------------------------- the target


def target_policy(q_select: jax.Array, config: Config) -> jax.Array:
    """π(·|s) ``[..., A]``: ε_π-greedy in the selector network's Q-values."""
    return exploration.epsilon_greedy_probs(q_select, config.target_epsilon)


def n_step_targets(
    params: eqx.Module, target_params: eqx.Module, batch: Batch, config: Config
) -> jax.Array:
    """The off-policy N-step targets G_0 of a batch of windows (module docstring), ``[B]``."""
    tr = batch.transitions
    q_target = nets.apply_batched(target_params, tr.next_obs, 2)  # Q_θ̄(s_{k+1}, ·)  [B, N, A]
    q_select = nets.apply_batched(params, tr.next_obs, 2) if config.double_q else q_target
    pi = target_policy(q_select, config)
    next_values = jnp.sum(pi * q_target, axis=-1)  # V̄(s_{k+1})  [B, N]
    dtype = tr.reward.dtype
    discounts = config.gamma * (1.0 - tr.terminated.astype(dtype))

    # Continuing from step k to k+1 needs step k+1 in the buffer and no episode end at k;
    # then s_{k+1} = next_obs[k], so its Q-values above serve for the traces too.
    continues = (batch.valid[:, 1:] & ~tr.done[:, :-1]).astype(dtype)  # [B, N-1]
    next_action = tr.action[:, 1:, None]  # a_{k+1}
    if config.off_policy_correction == "none":
        traces, control = continues, next_values[:, :-1]
    elif config.off_policy_correction == "cut":
        greedy = jnp.argmax(q_select[:, :-1], axis=-1)
        traces = continues * (tr.action[:, 1:] == greedy)
        control = next_values[:, :-1]
    else:
        pi_taken = jnp.take_along_axis(pi[:, :-1], next_action, -1)[..., 0]
        ratio = pi_taken / jnp.maximum(tr.policy_info[:, 1:], 1e-8)
        traces = continues * jnp.minimum(ratio, config.importance_ratio_clip)
        control = jnp.take_along_axis(q_target[:, :-1], next_action, -1)[..., 0]
    traces = config.trace_lambda * traces
    pad = jnp.zeros_like(tr.reward[:, :1])
    targets = jax.vmap(returns.off_policy_n_step_return)(
        tr.reward,
        discounts,
        next_values,
        jnp.concatenate([control, pad], axis=1),
        jnp.concatenate([traces, pad], axis=1),
    )
    return jax.lax.stop_gradient(targets)


def loss_fn(
    params: eqx.Module, target_params: eqx.Module, batch: Batch, config: Config
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean TD loss of the first step of each window, and diagnostics."""
    targets = n_step_targets(params, target_params, batch, config)
    q_all = nets.apply_batched(params, batch.transitions.obs[:, 0])
    q_taken = jnp.take_along_axis(q_all, batch.transitions.action[:, 0, None], -1)[:, 0]
    td_error = targets - q_taken
    loss = jnp.mean(losses.td_loss(td_error, config.loss, config.huber_delta))
    return loss, {"q_mean": jnp.mean(q_taken), "td_abs": jnp.mean(jnp.abs(td_error))}


# ----------------------------------------------------------------------------- learn


def learn(learner: Learner, batch: Batch, config: Config) -> tuple[Learner, dict[str, jax.Array]]:
    """One Adam step on ``batch``, then the target-network update. Pure; needs no env."""
    learning_rate = config.learning_rate * exploration.linear_schedule(
        learner.updates, 1.0, config.learning_rate_end_factor, config.num_updates
    )
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        learner.params, learner.target_params, batch, config
    )
    params, opt_state = adam_step(
        _optimizer(config), learner.params, grads, learner.opt_state, learning_rate
    )
    count = learner.updates + 1
    if config.target_update == "hard":
        target = hard_target_update(params, learner.target_params, count,
                                    config.target_update_period)
    else:
        target = polyak_update(params, learner.target_params, config.tau)
    metrics = {"loss": loss, "learning_rate": learning_rate, **aux}
    return Learner(params, target, opt_state, count), metrics


# ----------------------------------------------------------------------------- step / train


def sample_batch(buffer: replay.ReplayBuffer, key: jax.Array, config: Config) -> Batch:
    """``batch_size`` windows of ``n_step`` consecutive steps of one environment each."""
    transitions, valid = replay.sample_sequences(
        buffer, key, config.batch_size, config.n_step, stride=config.num_envs
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


def _explore(key: jax.Array, q: jax.Array, parameter: jax.Array, config: Config):
    if config.exploration == "epsilon_greedy":
        return exploration.epsilon_greedy(key, q, parameter)
    return exploration.boltzmann(key, q, parameter)


def step(
    state: State, config: Config, env: Any, env_params: Any
) -> tuple[State, dict[str, jax.Array]]:
    """Collect ``num_envs × rollout_steps`` env steps, store them, then K updates."""
    key, collect_key, learn_key = jax.random.split(state.key, 3)
    parameter = exploration_parameter(state.env_steps, config)
    params = state.learner.params

    def policy(key: jax.Array, obs: jax.Array):
        keys = jax.random.split(key, obs.shape[0])
        q = nets.apply_batched(params, obs)
        return jax.vmap(_explore, in_axes=(0, 0, None, None))(keys, q, parameter, config)

    env_carry, trajectory = rollout.collect(
        collect_key, env, env_params, state.env, policy, config.rollout_steps
    )
    # The behaviour probabilities μ(a|s) go with each transition (off-policy corrections).
    buffer = off_policy.store(state.buffer, trajectory, keep_policy_info=True)
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
    params: eqx.Module,
    obs: jax.Array,
    key: jax.Array,
    config: Config,
    deterministic: bool = False,
) -> jax.Array:
    """An action for one observation: greedy, or ε-greedy / Boltzmann at the final ε / T."""
    q = params(obs)
    if deterministic:
        return jnp.argmax(q)
    final = config.epsilon_end if config.exploration == "epsilon_greedy" else config.temperature_end
    return _explore(key, q, final, config)[0]
