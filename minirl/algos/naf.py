"""Normalised advantage functions (NAF): Q-learning with continuous actions, where the
maximum over actions is in closed form because the advantage is quadratic in the action.

One network maps a state to a value V(s), an action μ(s) and a lower-triangular L(s) with a
positive diagonal, and defines (Gu et al., 2016, "Continuous deep Q-learning with
model-based acceleration", eq. 2–4)

    Q(s, a) = V(s) + A(s, a),      A(s, a) = −½ (u − μ_u(s))ᵀ P(s) (u − μ_u(s)),
    P(s) = L(s) L(s)ᵀ  (positive definite),

so A ≤ 0 with equality only at u = μ_u: max_a Q(s, a) = V(s) and argmax_a Q(s, a) = μ(s).
Here u = (a − c) / h is the action normalised to [−1, 1]^D (c the centre of the box, h its
half-width) and μ_u = tanh(·) of the network's output, so μ(s) = c + h μ_u(s) lies inside
the box; in the env's units the same Q has precision H⁻¹ P H⁻¹ with H = diag(h). (The paper
writes the quadratic in the raw action; normalising first makes one network scale serve any
box.) L's diagonal is exp (the paper) or softplus of the network's output.

The critic is regressed onto a bootstrapped target with a Polyak-averaged target network θ̄
(θ̄ ← τθ + (1 − τ)θ̄ after every update), on transitions drawn uniformly from a replay
buffer:

    L(θ) = E[ ℓ(y − Q_θ(s, a)) ],      y = r + γ (1 − terminated) V_θ̄(s'),

ℓ = ½x² or Huber, plus c·E[x_μ²] on μ's pre-tanh output x_μ (``mu_penalty``). That term is
ours, not the paper's (c = 0 gives its loss): where the best stored actions lie on a bound
of the box (bang-bang control, as on Pendulum), the fit pushes μ towards the bound and Adam,
which ignores the size of the gradient, keeps pushing x_μ outwards until tanh saturates and
μ stops responding to the data. In our tuning 2 of 4 seeds were stuck at a constant torque
(return ≈ −1400 on Pendulum) without it and none with c = 10⁻³.

Only ``terminated`` cuts the bootstrap; a truncated step bootstraps from V_θ̄ of the final
observation, which the buffer stores as ``next_obs`` (gymnax 1.x). The behaviour policy is
μ(s) plus Gaussian noise of standard deviation σ·h, clipped to the box (the paper uses
Ornstein–Uhlenbeck noise); before ``learning_starts`` env steps actions are uniform in the
box.

Bring your own network: any module mapping one observation to a vector of
1 + D + D(D+1)/2 numbers, laid out as [V, μ pre-tanh (D), L's diagonal pre-exp/softplus
(D), L's strictly lower triangle (D(D−1)/2, row by row)] (:func:`heads`).

Contract (docs/design.md): ``Config``, ``Learner``, ``State``, ``init``, ``learn``,
``step``, ``train``, ``act``. The action box is read from the env at ``init`` and kept in
the parameters, so ``act`` needs no env.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..core import buffer as replay
from ..core import exploration, losses, nets, off_policy, rollout
from ..core.config import check_choice, check_off_policy, check_range
from ..core.optim import adam_step, adam_with_clipping, fresh_copy, polyak_update

ACTION_KIND = "continuous"
DIAGONALS = ("exp", "softplus")


class Config(eqx.Module):
    """NAF hyperparameters. Static fields fix shapes and loop lengths; the rest are leaves."""

    total_steps: int = eqx.field(static=True, default=50_000)  # env steps, all envs together
    num_envs: int = eqx.field(static=True, default=1)  # parallel environments
    rollout_steps: int = eqx.field(static=True, default=1)  # env steps per env per iteration
    gradient_steps: int = eqx.field(static=True, default=1)  # K updates per iteration
    buffer_size: int = eqx.field(static=True, default=50_000)  # transitions kept
    batch_size: int = eqx.field(static=True, default=128)  # transitions per update
    learning_starts: int = eqx.field(static=True, default=1_000)  # uniform actions until then
    hidden: tuple[int, ...] = eqx.field(static=True, default=(64, 64))  # layer widths
    diagonal: str = eqx.field(static=True, default="exp")  # L_ii = exp(x) | softplus(x)
    loss: str = eqx.field(static=True, default="squared")  # "squared" | "huber"

    learning_rate: float = 1e-3  # Adam step size at the start
    learning_rate_end_factor: float = 1.0  # lr anneals linearly to lr × this at the end
    max_grad_norm: float = 10.0  # global-norm gradient clipping
    adam_eps: float = 1e-8
    gamma: float = 0.99  # discount γ
    tau: float = 0.005  # θ̄ ← τθ + (1 − τ)θ̄ after every update
    reward_scale: float = 1.0  # rewards are multiplied by this for learning (not for stats)
    huber_delta: float = 1.0  # Huber threshold δ
    exploration_noise: float = 0.1  # σ of the Gaussian noise, in half-widths of the box
    mu_penalty: float = 1e-3  # c of the penalty c·E[x²] on μ's pre-tanh output x (0: paper)

    def __check_init__(self) -> None:
        check_off_policy(self)  # sizes, hidden, buffer, batch, one iteration
        check_choice("diagonal", self.diagonal, DIAGONALS)
        check_choice("loss", self.loss, ("squared", "huber"))
        check_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("learning_rate_end_factor", self.learning_rate_end_factor, 0.0, 1.0)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False)
        check_range("adam_eps", self.adam_eps, 0.0, low_inclusive=False)
        check_range("gamma", self.gamma, 0.0, 1.0, low_inclusive=False)
        check_range("tau", self.tau, 0.0, 1.0, low_inclusive=False)
        check_range("reward_scale", self.reward_scale, 0.0, low_inclusive=False)
        check_range("huber_delta", self.huber_delta, 0.0, low_inclusive=False)
        check_range("exploration_noise", self.exploration_noise, 0.0)
        check_range("mu_penalty", self.mu_penalty, 0.0)

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
    # Checked by tests/algos/test_continuous_learning.py (Pendulum, 50k, ≥ −300: medians
    # −156.7 / −152.1 / −162.7 from first seeds 1, 0 (the test) and 1000).
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
    # (median −0.99, no episode reached the flag). PPO's and TRPO's presets learn it (90.3
    # and 93.9 from first seed 1000).
    "MountainCarContinuous-v0": "exploration: Gaussian action noise finds the flag on 0 of "
                                "4 seeds in 50k steps; use ppo or trpo",
}
"""Environments this learner was measured not to learn, and why (``minirl list`` marks them)."""


# ----------------------------------------------------------------------------- the network


class Params(eqx.Module):
    """What acting needs: the network and the action box."""

    network: eqx.Module  # obs → [V, μ pre-tanh, L diagonal, L lower] (module doc)
    low: jax.Array  # the box, shaped like one action
    high: jax.Array


def output_size(action_size: int) -> int:
    """1 + D + D(D+1)/2: V, μ and the D(D+1)/2 entries of L."""
    return 1 + action_size + action_size * (action_size + 1) // 2


def heads(
    out: jax.Array, action_size: int, config: Config
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """V(s) (scalar), μ_u(s) ∈ (−1, 1)^D and L(s) ``[D, D]`` (lower-triangular, positive
    diagonal) in normalised action units, from the network's output for one observation."""
    out = jnp.ravel(out)
    d = action_size
    value, mu, diagonal, lower = out[0], out[1:1 + d], out[1 + d:1 + 2 * d], out[1 + 2 * d:]
    positive = jnp.exp if config.diagonal == "exp" else jax.nn.softplus
    rows, cols = jnp.tril_indices(d, -1)
    chol = jnp.diag(positive(diagonal)).at[rows, cols].set(lower)
    return value, jnp.tanh(mu), chol


def _centre_and_half_width(params: Params) -> tuple[jax.Array, jax.Array]:
    low, high = jnp.ravel(params.low), jnp.ravel(params.high)
    return 0.5 * (high + low), 0.5 * (high - low)


def quadratic(params: Params, obs: jax.Array, config: Config):
    """(V(s), μ(s), P_a(s)) in the env's units: Q(s, a) = V − ½(a − μ)ᵀ P_a (a − μ), with μ
    flattened ``[D]`` inside the box and P_a = H⁻¹ L Lᵀ H⁻¹ ``[D, D]`` positive definite."""
    centre, half = _centre_and_half_width(params)
    value, mu_u, chol = heads(params.network(obs), centre.shape[0], config)
    precision = (chol @ chol.T) / (half[:, None] * half[None, :])
    return value, centre + half * mu_u, precision


def _q_from_output(params: Params, out: jax.Array, action: jax.Array, config: Config):
    centre, half = _centre_and_half_width(params)
    value, mu_u, chol = heads(out, centre.shape[0], config)
    u = (jnp.ravel(action) - centre) / half
    return value - 0.5 * jnp.sum(jnp.square(chol.T @ (u - mu_u)))


def q_value(params: Params, obs: jax.Array, action: jax.Array, config: Config) -> jax.Array:
    """Q(s, a) = V(s) − ½‖L(s)ᵀ(u − μ_u(s))‖² for one observation and action."""
    return _q_from_output(params, params.network(obs), action, config)


def value(params: Params, obs: jax.Array, config: Config) -> jax.Array:
    """V(s) = max_a Q(s, a)."""
    return jnp.ravel(params.network(obs))[0]


def greedy_action(params: Params, obs: jax.Array, config: Config) -> jax.Array:
    """μ(s) = argmax_a Q(s, a), shaped like one env action."""
    centre, half = _centre_and_half_width(params)
    mu_u = heads(params.network(obs), centre.shape[0], config)[1]
    return (centre + half * mu_u).reshape(params.low.shape)


# ----------------------------------------------------------------------------- state


class Learner(eqx.Module):
    """What ``learn`` reads and writes: nothing about acting or the environment."""

    params: Params  # online network θ (and the action box)
    target_params: Params  # target network θ̄ (Polyak-averaged) and the same box
    opt_state: optax.OptState
    updates: jax.Array  # int32: gradient updates done so far (drives the lr schedule)


class State(eqx.Module):
    learner: Learner
    buffer: replay.ReplayBuffer  # Transition items
    env: rollout.EnvCarry
    key: jax.Array
    env_steps: jax.Array  # int32: env steps collected so far (all envs)


def _optimizer(config: Config) -> optax.GradientTransformation:
    return adam_with_clipping(config.learning_rate, config.max_grad_norm, config.adam_eps)


def default_network(key: jax.Array, config: Config, env: Any, env_params: Any) -> eqx.Module:
    """An MLP from the flattened observation to the 1 + D + D(D+1)/2 outputs."""
    obs_size = math.prod(rollout.observation_shape(env, env_params))
    action_size = math.prod(rollout.action_shape(env, env_params))
    return nets.MLP(obs_size, output_size(action_size), config.hidden, key)


def init(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> State:
    """A fresh run: the network, a copied target, Adam, an empty buffer and ``num_envs``
    reset envs. ``network`` is a user's ``eqx.Module`` mapping one observation to the
    1 + D + D(D+1)/2 outputs of :func:`heads`, or a factory ``key -> module``; default: an
    MLP."""
    rollout.require_action_kind(env, env_params, ACTION_KIND, "naf")
    net_key, env_key, key = jax.random.split(key, 3)
    network = nets.resolve(
        network, net_key, lambda k: default_network(k, config, env, env_params)
    )
    nets.check_output("network (obs → 1 + D + D(D+1)/2 outputs: V, μ, L)", network,
                      [rollout.observation_shape(env, env_params)],
                      [(output_size(math.prod(rollout.action_shape(env, env_params))),)])
    network = nets.arrays_only(network)  # function fields become static: it rides in scan
    low, high = rollout.action_bounds(env, env_params)
    env_carry = rollout.reset(env_key, env, env_params, config.num_envs)
    example = rollout.example_transition(env_carry.obs[0], jnp.zeros(low.shape, jnp.float32))
    params = Params(network, low, high)
    learner = Learner(
        params=params,
        target_params=fresh_copy(params),
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


def td_targets(
    target_params: Params, batch: rollout.Transition, config: Config
) -> jax.Array:
    """y = r + γ(1 − terminated) V_θ̄(s') for a batch of transitions ``[B]``."""
    next_values = jax.vmap(value, in_axes=(None, 0, None))(target_params, batch.next_obs, config)
    discounts = config.gamma * (1.0 - batch.terminated.astype(next_values.dtype))
    return jax.lax.stop_gradient(config.reward_scale * batch.reward + discounts * next_values)


def loss_fn(
    network: eqx.Module, params: Params, targets: jax.Array, batch: rollout.Transition,
    config: Config,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean TD loss of Q_θ(s, a) against the targets, plus c·mean(pre-tanh μ²), and
    diagnostics."""
    params = Params(network, params.low, params.high)
    out = jax.vmap(network)(batch.obs)  # [B, 1 + D + D(D+1)/2]
    q = jax.vmap(_q_from_output, in_axes=(None, 0, 0, None))(params, out, batch.action, config)
    td_error = targets - q
    loss = jnp.mean(losses.td_loss(td_error, config.loss, config.huber_delta))
    pre_tanh = out[:, 1:1 + params.low.size]
    penalty = config.mu_penalty * jnp.mean(jnp.square(pre_tanh))
    metrics = {"q_mean": jnp.mean(q), "td_abs": jnp.mean(jnp.abs(td_error)),
               "mu_pre_tanh_abs": jnp.mean(jnp.abs(pre_tanh))}
    return loss + penalty, metrics


# ----------------------------------------------------------------------------- learn


def learn(
    learner: Learner, batch: rollout.Transition, config: Config
) -> tuple[Learner, dict[str, jax.Array]]:
    """One Adam step on a batch of transitions (leaves ``[B, ...]``), then the Polyak
    target update of the network (the box is not averaged). Pure; needs no env."""
    learning_rate = config.learning_rate * exploration.linear_schedule(
        learner.updates, 1.0, config.learning_rate_end_factor, config.num_updates
    )
    params, target_params = learner.params, learner.target_params
    targets = td_targets(target_params, batch, config)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params.network, params, targets, batch, config
    )
    network, opt_state = adam_step(
        _optimizer(config), params.network, grads, learner.opt_state, learning_rate
    )
    target = polyak_update(network, target_params.network, config.tau)
    metrics = {"loss": loss, "learning_rate": learning_rate,
               "target_mean": jnp.mean(targets), **aux}
    learner = Learner(
        params=Params(network, params.low, params.high),
        target_params=Params(target, target_params.low, target_params.high),
        opt_state=opt_state,
        updates=learner.updates + 1,
    )
    return learner, metrics


# ----------------------------------------------------------------------------- step / train


def sample_batch(buffer: replay.ReplayBuffer, key: jax.Array, config: Config):
    """``batch_size`` transitions drawn uniformly from the buffer."""
    return replay.sample(buffer, key, config.batch_size)


def explore(key: jax.Array, params: Params, action: jax.Array, noise) -> jax.Array:
    """``action`` plus Gaussian noise of std ``noise`` half-widths, clipped to the box."""
    low, high = params.low, params.high
    scale = noise * 0.5 * (high - low)
    return jnp.clip(action + scale * jax.random.normal(key, low.shape, low.dtype), low, high)


def step(
    state: State, config: Config, env: Any, env_params: Any
) -> tuple[State, dict[str, jax.Array]]:
    """Collect ``num_envs × rollout_steps`` env steps, store them, then K updates."""
    key, collect_key, learn_key = jax.random.split(state.key, 3)
    params = state.learner.params
    uniform_phase = state.env_steps < config.learning_starts

    def behaviour(key: jax.Array, obs: jax.Array) -> jax.Array:
        noise_key, uniform_key = jax.random.split(key)
        low, high = params.low, params.high
        action = explore(noise_key, params, greedy_action(params, obs, config),
                         config.exploration_noise)
        uniform = jax.random.uniform(uniform_key, low.shape, low.dtype, low, high)
        return jnp.where(uniform_phase, uniform, action)

    def policy(key: jax.Array, obs: jax.Array):
        return jax.vmap(behaviour)(jax.random.split(key, obs.shape[0]), obs), None

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
    """An action for one observation: μ(s), or μ(s) with the exploration noise."""
    action = greedy_action(params, obs, config)
    if deterministic:
        return action
    return explore(key, params, action, config.exploration_noise)
