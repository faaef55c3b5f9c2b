"""LQR-FLM: LQR with fitted local linear-Gaussian models under a KL trust region.

Episodic tasks with a known cost c(x, u) = −r(x, u) (``rewards.STATE_ACTION``; expanded to
second order by autodiff) and unknown dynamics (Levine & Abbeel, 2014, "Learning neural
network policies with guided policy search under unknown dynamics", NIPS; Levine, CS 285
lecture 12, "LQR with fitted local models"). One time-varying linear-Gaussian controller
per *condition* (a fixed reset key, so any gymnax env with a known cost can be used), in
the action variable v with u = mid + half·tanh(v) so that actions stay in the box (as
``planning.mpc.vector_model`` does for iLQR):

    p(v_t | x_t) = N(K_t x_t + k_t, S_t),   t = 0 … T−1,   x = the observation.

Every iteration (one ``step``), for every condition:

1. N rollouts of the current controller p̄ on the real env from the condition's reset;
2. per-time-step dynamics p(x_{t+1} | x_t, v_t) = N(F_t [x_t; v_t] + f_t, W_t) by regression
   with a normal-inverse-Wishart prior from all T steps' samples, so that N can be smaller
   than dim x + dim v (``planning.linear_gaussian.fit``), and the cost's quadratic expansion
   averaged over the samples (``linear_gaussian.expand_cost``), each sample's Hessian
   replaced by its nearest positive semi-definite matrix (``psd_cost``): the costs of GPS
   are convex by construction, but the autodiff Hessian of a reward need not be (Pendulum's
   θ² with θ = atan2(sin, cos) is indefinite off the axis), and LQR then drives the
   controller along the negative curvature, bounded only by the KL (on Pendulum-v1 with
   max_torque 10, horizon 100: expected costs of −193,554 against true costs near 500, and a
   median return of −481 where the projection gives −299, first seed 1);
3. the step size (cbfinn/gps ``algorithm_traj_opt._update_step_size``): with the expected
   costs under the local models (``linear_gaussian.expected_cost``) J_prev = J(p_prev;
   model_prev), J_pred = J(p̄; model_prev) predicted at the last update and J_act =
   J(p̄; model_now),

       mult ← clip(mult · clip(pred / (2 max(1e-4, pred − act)), 0.1, 5), mult_min, mult_max)

   with pred = J_prev − J_pred and act = J_prev − J_act: the model of the improvement
   I(KL) = pred·KL − (pred − act)·KL² maximised in KL;
4. the KL-constrained update: min_p E_p[c] s.t. D_KL(p(τ) ‖ p̄(τ)) ≤ ε = ``kl_step``·mult·T,
   by LQR on the surrogate cost c/η − log p̄ with S_t = Q̃_uu⁻¹ and η found by bisection on
   the dual (``linear_gaussian.kl_step``).

**What is reported.** The policy being learned is the mean controller, v_t = K_t x_t + k_t.
Every iteration plays it once from each condition after the update (C·T more env steps,
not counted in ``env_steps`` and never used for fitting, as ``--eval-every``'s greedy
episodes are not), and those are the ``episodes`` of the metrics, so ``final_returns`` in
``summary.json`` is the returned controllers' return from their conditions. The N noisy
rollouts are reported as ``sample_return``; ``env_steps`` counts them (C·N·T per iteration).
``reference_return`` (``reference_iterations`` > 0, envs with a vector model in
``planning.mpc.VECTOR_FIELDS``: Pendulum-v1, Reacher-misc) is iLQR on the true,
differentiable model from the same conditions over the same horizon (the best of iLQR-MPC
and whole-horizon iLQR from four starts, :func:`reference_returns`), i.e. what a planner
that knows the dynamics achieves; it is computed once in ``init`` (``State.reference``) and
reported as the metric ``reference_return``.

**What it reaches.** Reacher-misc: 53–81 % of the reference's return, by first seed
(tests/model_based/test_lqr_flm_learning.py). Pendulum-v1 (torque ≤ 2): no swing-up,
about −1290 against the reference's −156, an xfail(strict) test that lists what was
tried; whole-horizon iLQR on the *true* model from the same constant starts, the same
local search with a perfect model (:func:`reference_parts`), also stops far from the
reference (benchmarks/RESULTS.md). It converges to the LQR solution on linear-quadratic
systems (tests/model_based/test_lqr_flm.py).

**Acting.** The controller is time-varying: ``act_with_memory`` carries (condition, t),
the condition chosen at an episode's first observation as the one whose initial
observation is nearest (the controllers are local: far from every condition they are not
meant to work); ``act`` starts a fresh memory (t = 0).

Contract (docs/design.md): ``Config``, ``Learner``, ``State``, ``init``, ``learn`` (the
local fits, the step size and the KL step on a batch of rollouts), ``step``, ``train``,
``act``. :func:`fit_local`, :func:`adjust_step`, :func:`rollouts` and :func:`local_controllers`
are the pieces ``gps.py`` reuses.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ..core import rollout
from ..core.config import ConfigError, check_positive_int, check_range
from ..planning import linear_gaussian as lg
from ..planning import lqr, mpc
from . import rewards

ACTION_KIND = "continuous"
OBSERVATIONS = "vectors"
ENVS = tuple(rewards.STATE_ACTION)  # the registered envs with a known reward of (obs, action)
# Two of its programs at once on the host's forced CPU devices deadlocked XLA:CPU (every
# thread waiting, reproducibly with 2 seeds): the runner keeps its programs on one CPU device.
SERIAL_ON_CPU = True


class Config(eqx.Module):
    """LQR-FLM hyperparameters. Static fields fix shapes and loop lengths; the rest are
    leaves."""

    total_steps: int = eqx.field(static=True, default=80_000)  # real env steps (samples)
    num_conditions: int = eqx.field(static=True, default=4)  # C fixed initial states
    samples: int = eqx.field(static=True, default=5)  # N rollouts per condition and iteration
    horizon: int = eqx.field(static=True, default=200)  # T, at most the episode limit
    dual_iterations: int = eqx.field(static=True, default=60)  # bisection steps on η
    psd_cost: bool = eqx.field(static=True, default=True)  # each sample's Hessian made PSD
    reference_iterations: int = eqx.field(static=True, default=0)  # iLQR reference (0: off)

    kl_step: float = 0.2  # ε per time step (the bound is kl_step · mult · T)
    min_step_mult: float = 0.01  # bounds of the step-size multiplier
    max_step_mult: float = 10.0
    init_var: float = 1.0  # variance of the initial controller's v
    prior_strength: float = 1.0  # n₀: the NIW prior counts as n₀ samples
    # added to each step's input covariance in the fit: GPS's 1e-6 (float64) is at float32's
    # rounding level for inputs of order 1 (jit and eager fits then differ by ~1e-3)
    regularization: float = 1e-4
    init_state_var: float = 1e-4  # floor of the initial state covariance Σ₀
    dual_tol: float = 0.1  # |KL − ε| ≤ dual_tol · ε stops the dual search

    def __check_init__(self) -> None:
        for name in ("total_steps", "num_conditions", "samples", "horizon",
                     "dual_iterations"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("reference_iterations", self.reference_iterations, minimum=0)
        if self.total_steps < self.steps_per_iteration:
            raise ConfigError(
                f"total_steps={self.total_steps} is less than one iteration "
                f"(num_conditions × samples × horizon = {self.steps_per_iteration})")
        check_range("kl_step", self.kl_step, 0.0, low_inclusive=False)
        check_range("min_step_mult", self.min_step_mult, 0.0, low_inclusive=False)
        check_range("max_step_mult", self.max_step_mult, 0.0, low_inclusive=False)
        if _concrete(self.min_step_mult) and _concrete(self.max_step_mult) and (
                float(self.min_step_mult) > float(self.max_step_mult)):
            raise ConfigError(f"min_step_mult={self.min_step_mult} exceeds "
                              f"max_step_mult={self.max_step_mult}")
        check_range("init_var", self.init_var, 0.0, low_inclusive=False)
        check_range("prior_strength", self.prior_strength, 0.0)
        check_range("regularization", self.regularization, 0.0)
        check_range("init_state_var", self.init_state_var, 0.0, low_inclusive=False)
        check_range("dual_tol", self.dual_tol, 0.0, 1.0, low_inclusive=False)

    @property
    def steps_per_iteration(self) -> int:
        return self.num_conditions * self.samples * self.horizon

    @property
    def num_iterations(self) -> int:
        """Iterations of ``step``: N rollouts per condition, one KL step per condition."""
        return self.total_steps // self.steps_per_iteration


def _concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer) and jnp.ndim(value) == 0


PRESETS: dict[str, dict[str, Any]] = {
    # Does not swing up (tests/model_based/test_lqr_flm_learning.py, xfail: about −1290
    # against the iLQR reference's −156).
    "Pendulum-v1": dict(reference_iterations=200),
    # Reaching (tests/model_based/test_lqr_flm_learning.py): 4 conditions × 5 rollouts × 100
    # steps, 20 iterations. From first seed 100 (tuning, 2026-12-07): median 56.9 against
    # the reference's 70.2 (81 %); also tried kl_step 1.0 (49.2), init_var 0.3 (55.5), 10
    # rollouts per condition with 80k steps (55.1), no PSD projection (42.8).
    "Reacher-misc": dict(horizon=100, total_steps=40_000, reference_iterations=50),
}


CANNOT_LEARN: dict[str, str] = {
    "Pendulum-v1": "the controllers settle near the passive swing (median about −1290 from "
                   "their conditions against iLQR's −156 on the true model): no swing-up",
}


def preset(env_id: str) -> dict[str, Any]:
    """Documented per-environment overrides of the defaults (``{}`` if none)."""
    return dict(PRESETS.get(env_id, {}))


# ----------------------------------------------------------------------------- state


class Params(eqx.Module):
    """What ``act`` needs: the C controllers, the conditions' initial observations (to pick
    a controller), the action box, and the known reward with the env parameters it reads."""

    controllers: lg.Policy  # leaves [C, T, ...]
    initial_obs: jax.Array  # [C, n]
    low: jax.Array  # [m]
    high: jax.Array  # [m]
    env_params: Any
    reward_fn: Callable = eqx.field(static=True)


class Estimate(eqx.Module):
    """Expected costs under the local models at the last update, per condition, for the
    step-size rule: J(p̄; model) of the controller replaced and J(p; model) of its
    replacement (the prediction)."""

    cost: jax.Array  # [C]
    predicted: jax.Array  # [C]


class Learner(eqx.Module):
    params: Params
    step_mult: jax.Array  # [C] the step-size multipliers
    estimate: Estimate
    updates: jax.Array  # int32: KL steps taken (one per condition per learn)


class State(eqx.Module):
    learner: Learner
    env: rollout.EnvCarry  # the conditions' reset states and initial observations [C, ...]
    conditions: jax.Array  # [C] reset keys
    reference: jax.Array  # [C] iLQR returns on the true model (NaN when off)
    key: jax.Array
    env_steps: jax.Array  # int32: real env steps of the learning samples


def vector(x: jax.Array) -> jax.Array:
    """An observation as a float32 vector (the controllers' x)."""
    return jnp.reshape(x, (-1,)).astype(jnp.float32)


def init(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> State:
    """C conditions (reset keys drawn from ``key``), a zero-mean controller with variance
    ``init_var`` for each, and the iLQR reference. ``network`` is not used (the controllers
    are linear-Gaussian); passing one is a ConfigError."""
    if network is not None:
        raise ConfigError("network is not used by lqr_flm (its controllers are "
                          "time-varying linear-Gaussian); leave it None")
    condition_key, key = jax.random.split(key)
    conditions, env_carry, params = local_controllers(condition_key, config, env, env_params,
                                                      "lqr_flm")
    zeros = jnp.zeros((config.num_conditions,), jnp.float32)
    learner = Learner(params, jnp.ones((config.num_conditions,), jnp.float32),
                      Estimate(zeros, zeros), jnp.zeros((), jnp.int32))
    reference = reference_returns(env, env_params, env_carry.env_state, config)
    return State(learner, env_carry, conditions, reference, key, jnp.zeros((), jnp.int32))


def local_controllers(key: jax.Array, config: Any, env: Any, env_params: Any, name: str
                      ) -> tuple[jax.Array, rollout.EnvCarry, Params]:
    """``config.num_conditions`` conditions (reset keys split from ``key``), their reset
    states, and zero-mean controllers with variance ``config.init_var`` over
    ``config.horizon`` steps, with the env's known reward; ConfigError (naming ``name``,
    the learner) for an env without continuous actions, vector observations or a known
    reward, or a horizon past the episode limit. What LQR-FLM and GPS start from."""
    rollout.require_action_kind(env, env_params, ACTION_KIND, name)
    reward_fn = rewards.state_action_reward(env)
    obs_shape = rollout.observation_shape(env, env_params)
    if len(obs_shape) != 1:
        raise ConfigError(f"env observation shape {obs_shape}: {name} needs vector "
                          "observations")
    limit = getattr(env_params, "max_steps_in_episode", None)
    if limit is not None and not isinstance(limit, jax.core.Tracer) and (
            config.horizon > int(limit)):
        raise ConfigError(f"horizon={config.horizon} exceeds the env's episode limit "
                          f"max_steps_in_episode={int(limit)}; allowed: ≤ {int(limit)}")
    n = obs_shape[0]
    m = math.prod(rollout.action_shape(env, env_params))
    low, high = rollout.action_bounds(env, env_params)
    conditions = jax.random.split(key, config.num_conditions)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(conditions, env_params)
    obs = jax.vmap(vector)(obs)
    env_carry = rollout.EnvCarry(env_state, obs, rollout.EpisodeStats.zeros(
        config.num_conditions))
    C, T = config.num_conditions, config.horizon
    controllers = lg.Policy(
        jnp.zeros((C, T, m, n), jnp.float32), jnp.zeros((C, T, m), jnp.float32),
        jnp.broadcast_to(config.init_var * jnp.eye(m, dtype=jnp.float32), (C, T, m, m)))
    params = Params(controllers, obs, low.reshape(-1), high.reshape(-1), env_params,
                    reward_fn)
    return conditions, env_carry, params


def reference_parts(env: Any, env_params: Any, env_states: Any, config: Config
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per condition, three returns [C] of iLQR on the env's own differentiable transitions
    (``planning.mpc.vector_model``) over ``horizon`` steps from the condition's state; NaN
    when ``reference_iterations`` is 0 or the env has no vector model:
    - one episode of iLQR-MPC (``mpc.ilqr_planner``: horizon 40, three starts, replanned
      every step), the closed loop;
    - open-loop iLQR over the whole horizon (``reference_iterations`` iterations) from the
      constant plans v = 0 and v = ±1, the cheapest plan's return (minus its cost): LQR-FLM's
      own problem (one time-varying plan from a fixed start, improved locally from a
      constant one) solved with the true model in place of fitted ones;
    - the same iLQR started from that MPC episode's actions.
    Whole-horizon iLQR alone falls short on Pendulum-v1: from constant starts it is stuck in
    poor local minima (key 1's four conditions, 100 iterations, the best of v = 0, ±1 and
    MPC's actions: −501, −739, −734, −803, none converged, where MPC scored −8.7, −120,
    −116, −338). Started from MPC's actions it does not help near the top: replayed open
    loop over 200 steps an upright pendulum falls (float32 rounding grows ~1.2× per step),
    so iLQR starts from a fallen trajectory. On those four conditions MPC was the best every
    time; the whole-horizon parts are kept for envs where a plan over the whole horizon
    beats a 40-step one, and to show what LQR-FLM's local search reaches with exact
    dynamics (benchmarks/bench_local_policies.py)."""
    C = config.num_conditions
    fields = mpc.VECTOR_FIELDS.get(rewards.env_name(env))
    if config.reference_iterations == 0 or fields is None:
        return (jnp.full((C,), jnp.nan, jnp.float32),) * 3
    dynamics, cost, to_vector, _, _ = mpc.vector_model(env, env_params, fields)
    low, high = rollout.action_bounds(env, env_params)
    mid, half = (high + low).reshape(-1) / 2, (high - low).reshape(-1) / 2
    m = mid.shape[0]
    constants = jnp.array([0.0, 1.0, -1.0])[:, None, None] * jnp.ones((config.horizon, m))
    planner = mpc.ilqr_planner(env, env_params, fields=fields)

    def one(state):
        x0 = to_vector(state)
        episode = mpc.mpc(jax.random.PRNGKey(0), env, env_params, planner, config.horizon,
                          env_state=state)
        u = episode.actions.reshape(config.horizon, m)
        v = jnp.arctanh(jnp.clip((u - mid) / half, -0.99, 0.99))  # |v| ≤ 2.65
        starts = jnp.concatenate([constants, v[None]])
        costs = jax.vmap(lambda plan: lqr.ilqr(
            dynamics, cost, x0, plan, max_iterations=config.reference_iterations,
            reg_init=1.0).cost)(starts)
        return episode.episode_return, -jnp.min(costs[:-1]), -costs[-1]

    return jax.vmap(one)(env_states)


def reference_returns(env: Any, env_params: Any, env_states: Any, config: Config
                      ) -> jax.Array:
    """Per condition [C]: the best of :func:`reference_parts`' iLQR returns on the true
    model (NaN when ``reference_iterations`` is 0 or the env has no vector model)."""
    return functools.reduce(jnp.maximum, reference_parts(env, env_params, env_states, config))


# ----------------------------------------------------------------------------- local models


class Samples(eqx.Module):
    """Rollouts of the controllers: leaves ``[C, N, ...]``."""

    states: jax.Array  # [C, N, T+1, n]
    actions: jax.Array  # [C, N, T, m]  the controller's variable v (before the squash)


class LocalModel(eqx.Module):
    """One condition's fitted dynamics, its cost expansion and initial state distribution."""

    dynamics: lg.Gaussian
    C: jax.Array  # [T, n+m, n+m]
    c: jax.Array  # [T, n+m]
    c0: jax.Array  # [T]
    x0_mean: jax.Array  # [n]
    x0_cov: jax.Array  # [n, n]

    def expected_cost(self, policy: lg.Policy) -> jax.Array:
        """E_p[Σ_t c(x_t, v_t)] of a controller under this model (the Laplace estimate)."""
        return lg.expected_cost(self.C, self.c, self.c0,
                                lg.forward(self.dynamics, policy, self.x0_mean, self.x0_cov))


def squash(v: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """u = mid + half·tanh(v): the controller's variable in the action box (u = v where the
    box is unbounded)."""
    bounded = jnp.isfinite(low) & jnp.isfinite(high)
    mid = jnp.where(bounded, (high + low) / 2, 0.0)
    half = jnp.where(bounded, (high - low) / 2, 1.0)
    return jnp.where(bounded, mid + half * jnp.tanh(v), v)


def cost_of(params: Params) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """c(x, v, t) = −r(x, squash(v)): the known cost in the controller's variable."""
    return lambda x, v, t: -params.reward_fn(x, squash(v, params.low, params.high),
                                             params.env_params)


def fit_local(states: jax.Array, actions: jax.Array, cost: Callable, config: Any
              ) -> LocalModel:
    """One condition's local model from its N rollouts (states [N, T+1, n], actions
    [N, T, m]): the dynamics by regression with the prior (``config.prior_strength``,
    ``config.regularization``), the cost expanded at the samples, and N(x̄₀, Σ̂₀ +
    ``init_state_var``·I) for the initial state."""
    T = actions.shape[1]
    z = jnp.concatenate([states[:, :T], actions], axis=-1)
    dynamics = lg.fit(z, states[:, 1:], config.prior_strength, config.regularization)
    C, c, c0 = lg.expand_cost(cost, states, actions, psd=config.psd_cost)
    x0 = states[:, 0]
    x0_mean = jnp.mean(x0, axis=0)
    x0_cov = (x0 - x0_mean).T @ (x0 - x0_mean) / x0.shape[0]
    x0_cov = x0_cov + config.init_state_var * jnp.eye(x0.shape[-1], dtype=x0.dtype)
    return LocalModel(dynamics, C, c, c0, x0_mean, x0_cov)


def adjust_step(step_mult: jax.Array, estimate: Estimate, actual: jax.Array,
                first: jax.Array, config: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GPS's step-size rule (module doc, 3.): the new multiplier from the improvement
    predicted at the last update and the one the new model measures; unchanged at the
    first update."""
    predicted = estimate.cost - estimate.predicted
    achieved = estimate.cost - actual
    factor = jnp.clip(predicted / (2.0 * jnp.maximum(1e-4, predicted - achieved)), 0.1, 5.0)
    new = jnp.clip(step_mult * factor, config.min_step_mult, config.max_step_mult)
    new = jnp.where(first, step_mult, new)
    return new, {"predicted_improvement": jnp.where(first, 0.0, predicted),
                 "actual_improvement": jnp.where(first, 0.0, achieved)}


# ----------------------------------------------------------------------------- learn


def learn(learner: Learner, batch: Samples, config: Config
          ) -> tuple[Learner, dict[str, jax.Array]]:
    """One LQR-FLM update of every condition's controller from its N rollouts (``batch``,
    leaves [C, N, ...]): local models, the step size, the KL step."""
    params = learner.params
    cost = cost_of(params)
    first = learner.updates == 0
    T = config.horizon

    def one(policy, states, actions, step_mult, estimate):
        model = fit_local(states, actions, cost, config)
        actual = model.expected_cost(policy)
        step_mult, info = adjust_step(step_mult, estimate, actual, first, config)
        epsilon = config.kl_step * step_mult * T
        result = lg.kl_step(model.dynamics, model.C, model.c, policy, model.x0_mean,
                            model.x0_cov, epsilon, tol=config.dual_tol,
                            max_iterations=config.dual_iterations)
        predicted = model.expected_cost(result.policy)
        info = {**info, "kl": result.kl / T, "kl_bound": epsilon / T, "eta": result.eta,
                "dual_iterations": result.iterations.astype(jnp.float32),
                "expected_cost": predicted}
        return result.policy, step_mult, Estimate(actual, predicted), info

    controllers, step_mult, estimate, info = jax.vmap(one)(
        params.controllers, batch.states, batch.actions, learner.step_mult,
        learner.estimate)
    params = eqx.tree_at(lambda p: p.controllers, params, controllers)
    metrics = {name: jnp.mean(value) for name, value in info.items()}
    metrics["step_mult"] = jnp.mean(step_mult)
    return Learner(params, step_mult, estimate, learner.updates + 1), metrics


# ----------------------------------------------------------------------------- rollouts


def rollouts(key: jax.Array, env: Any, env_params: Any, env_states: Any, obs: jax.Array,
             controller: Callable, num: int, horizon: int
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``num`` rollouts of ``horizon`` steps from each of C start states (``env_states``,
    ``obs`` [C, n]) with ``controller(key, c, t, x) -> (v, u)``: states [C, num, T+1, n],
    the controller's variables v [C, num, T, m] and returns [C, num]. The next state is
    ``info["final_observation"]`` (the observation before a reset at the episode limit)."""
    C = obs.shape[0]
    start = jax.tree.map(lambda x: jnp.repeat(x[:, None], num, axis=1), env_states)
    x0 = jnp.repeat(obs[:, None], num, axis=1)
    condition = jnp.repeat(jnp.arange(C)[:, None], num, axis=1)

    def one(state, x, c, key):
        def body(carry, inputs):
            state, x = carry
            t, step_key = inputs
            act_key, env_key = jax.random.split(step_key)
            v, u = controller(act_key, c, t, x)
            _, state, reward, _, _, info = env.step(env_key, state, u.reshape(
                rollout.action_shape(env, env_params)), env_params)
            x_next = vector(info["final_observation"])
            return (state, x_next), (x, v, jnp.asarray(reward, jnp.float32))

        (_, x_T), (xs, vs, rs) = jax.lax.scan(
            body, (state, x), (jnp.arange(horizon), jax.random.split(key, horizon)))
        return jnp.concatenate([xs, x_T[None]]), vs, jnp.sum(rs)

    keys = jax.random.split(key, C * num).reshape(C, num, -1)
    return jax.vmap(jax.vmap(one))(start, x0, condition, keys)


def controller_of(params: Params, noise: bool) -> Callable:
    """The C controllers as ``controller(key, c, t, x) -> (v, u)``; with ``noise`` v is
    drawn from N(K x + k, S), otherwise it is the mean."""
    policies = params.controllers

    def controller(key, c, t, x):
        K, k, S = policies.K[c, t], policies.k[c, t], policies.cov[c, t]
        v = K @ x + k
        if noise:
            v = v + jnp.linalg.cholesky(S) @ jax.random.normal(key, k.shape, k.dtype)
        return v, squash(v, params.low, params.high)

    return controller


def step(state: State, config: Config, env: Any, env_params: Any
         ) -> tuple[State, dict[str, jax.Array]]:
    """N noisy rollouts of every condition's controller, one LQR-FLM update, then one
    noise-free episode of each new controller from its condition (the reported episodes)."""
    key, sample_key, eval_key = jax.random.split(state.key, 3)
    C, N, T = config.num_conditions, config.samples, config.horizon
    params = state.learner.params
    states, actions, sample_returns = rollouts(
        sample_key, env, env_params, state.env.env_state, state.env.obs,
        controller_of(params, noise=True), N, T)
    learner, metrics = learn(state.learner, Samples(states, actions), config)
    _, _, returns = rollouts(eval_key, env, env_params, state.env.env_state, state.env.obs,
                             controller_of(learner.params, noise=False), 1, T)
    env_steps = state.env_steps + C * N * T
    metrics = {
        **metrics,
        "episodes": jnp.asarray(C, jnp.int32),
        "episode_return_sum": jnp.sum(returns),
        "episode_length_sum": jnp.asarray(C * T, jnp.int32),
        "sample_return": jnp.mean(sample_returns),
        "env_steps": env_steps,
    }
    if config.reference_iterations:
        metrics["reference_return"] = jnp.mean(state.reference)
    return State(learner, state.env, state.conditions, state.reference, key, env_steps), metrics


def train(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> tuple[State, dict[str, jax.Array]]:
    """A whole run: ``init`` then ``lax.scan`` of ``step``; metrics stacked per iteration."""
    state = init(key, config, env, env_params, network)
    return jax.lax.scan(
        lambda s, _: step(s, config, env, env_params), state, length=config.num_iterations
    )


# ----------------------------------------------------------------------------- act


def initial_memory(params: Params, obs: jax.Array, config: Config) -> jax.Array:
    """(condition, t = 0) at an episode's first observation: the condition whose initial
    observation is nearest."""
    distance = jnp.sum(jnp.square(params.initial_obs - vector(obs)), axis=-1)
    return jnp.stack([jnp.argmin(distance), 0]).astype(jnp.int32)


def act_with_memory(
    params: Params, memory: jax.Array, obs: jax.Array, first: jax.Array, key: jax.Array,
    config: Config, deterministic: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """u_t = squash(K_t x + k_t (+ noise)) of the remembered condition's controller at the
    remembered time (the last gains after ``horizon``); returns the action and (c, t + 1)."""
    memory = jnp.where(first, initial_memory(params, obs, config), memory)
    c, t = memory[0], jnp.minimum(memory[1], config.horizon - 1)
    _, u = controller_of(params, noise=not deterministic)(key, c, t, vector(obs))
    return u.reshape(params.low.shape), memory + jnp.array([0, 1], jnp.int32)


def act(
    params: Params, obs: jax.Array, key: jax.Array, config: Config, deterministic: bool = False
) -> jax.Array:
    """The controller's action at t = 0 for ``obs`` (a fresh memory: the nearest
    condition); episodes go through :func:`act_with_memory`."""
    memory = initial_memory(params, obs, config)
    return act_with_memory(params, memory, obs, jnp.array(True), key, config, deterministic)[0]
