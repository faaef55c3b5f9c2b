"""GPS: mirror-descent guided policy search with LQR-FLM local controllers.

Montgomery & Levine, 2016, "Guided policy search via approximate mirror descent", NIPS
(MDGPS, its algorithm 2 with local-controller samples); Levine et al., 2016, "End-to-end
training of deep visuomotor policies", JMLR (the supervised step and its weighting); Levine,
CS 285 lecture 12 (the c̃ = c + λ log π_θ view). A global neural Gaussian policy

    π_θ(v | x) = N(μ_θ(x), Σ_π),   u = squash(v) = mid + half·tanh(v)   (x = the observation)

is trained to agree with C time-varying linear-Gaussian controllers p_c(v_t | x_t), one per
*condition* (a fixed reset key), that are improved by LQR-FLM (``lqr_flm.py``) under a KL
bound towards the global policy itself. Every iteration (one ``step``):

1. N rollouts of every local controller p_c from its condition on the real env;
2. per condition, the local dynamics and cost expansion (``lqr_flm.fit_local``), and the
   global policy *linearised* at the samples: the regression of μ_θ(x_{t,i}) on x_{t,i} per
   step with the prior from all steps (``linear_gaussian.fit``, the same regression as the
   dynamics), π̄_c,t(v | x) = N(F_t x + f_t, W_t + Σ_π);
3. the C-step: min_p E_p[c] s.t. D_KL(p(τ) ‖ π̄_c(τ)) ≤ ε_c (``linear_gaussian.kl_step``
   with π̄_c in place of LQR-FLM's previous controller), so the local controllers stay where
   the global policy can follow; the step size ε_c = ``kl_step``·mult_c·T follows GPS's
   rule (``lqr_flm.adjust_step``) with MDGPS's estimates: the improvement predicted at the
   last iteration J(π̄_prev; model_prev) − J(p_prev; model_prev) against the one achieved,
   J(π̄_prev; model_prev) − J(π̄_now; model_now);
4. the S-step: the global policy fitted to the new local controllers at the sampled states,
   by ``policy_updates`` Adam steps on minibatches of

       L(θ) = mean_{c,i,t} (μ_θ(x_{c,i,t}) − μ_{c,t}(x_{c,i,t}))ᵀ Λ̃_{c,t} (μ_θ(x) − μ_{c,t}(x)),

   μ_{c,t}(x) = K_t x + k_t and Λ_{c,t} = S_t⁻¹ the local controllers' means and precisions
   (the KL-matching loss E_p[D_KL(p ‖ π_θ)] in θ, less terms free of μ_θ), with Λ̃ = Λ
   divided by the mean of tr Λ/m over the data so that the step size does not depend on the
   precisions' scale; and Σ_π = (mean_{c,t} Λ_{c,t})⁻¹, the covariance minimising the same
   KL (Levine et al., 2016, §4.1).

At convergence the local controllers equal the global policy's linearisation (the KL is the
only thing that keeps them apart, and each C-step is a mirror-descent step towards the cost
from it), which is the sense in which GPS optimises the global policy's cost with local,
model-based updates.

**What is reported.** The policy being learned is the global one. Every iteration plays
``eval_episodes`` episodes of its mean action μ_θ from the env's own random initial states
(fresh reset keys, not the conditions; C·N·T learning samples are counted in ``env_steps``,
these evaluation steps are not, as ``--eval-every``'s are not), and those are the
``episodes`` of the metrics: ``final_returns`` in ``summary.json`` is the global policy's
return from random starts. From the conditions, ``local_return`` is the local controllers'
mean-action return and ``condition_return`` the global policy's (how closely the global
policy follows the local controllers where it was trained; 2·C more episodes per
iteration, not counted either); the noisy learning samples' return is ``sample_return``.

Contract (docs/design.md): ``Config``, ``Learner``, ``State``, ``init``, ``learn`` (local
fits, the global policy's linearisation, the C-step and the S-step on a batch of rollouts),
``step``, ``train``, ``act`` (the global policy). ``network=`` is the global policy's mean
μ_θ: obs → pre-squash action ``[m]``.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..core import nets, rollout
from ..core.config import ConfigError, check_positive_int, check_range
from ..planning import linear_gaussian as lg
from . import lqr_flm

ACTION_KIND = "continuous"
OBSERVATIONS = "vectors"
ENVS = lqr_flm.ENVS  # the registered envs with a known reward of (obs, action)
SERIAL_ON_CPU = lqr_flm.SERIAL_ON_CPU  # one CPU device at a time (lqr_flm.py says why)


class Config(eqx.Module):
    """MDGPS hyperparameters. Static fields fix shapes and loop lengths; the rest are
    leaves. The local-controller fields are LQR-FLM's (``lqr_flm.Config``)."""

    total_steps: int = eqx.field(static=True, default=80_000)  # real env steps (samples)
    num_conditions: int = eqx.field(static=True, default=4)  # C fixed initial states
    samples: int = eqx.field(static=True, default=5)  # N rollouts per condition and iteration
    horizon: int = eqx.field(static=True, default=200)  # T, at most the episode limit
    hidden: tuple[int, ...] = eqx.field(static=True, default=(64, 64))  # global policy MLP
    policy_updates: int = eqx.field(static=True, default=200)  # S-step Adam steps
    policy_batch_size: int = eqx.field(static=True, default=256)
    eval_episodes: int = eqx.field(static=True, default=4)  # from random starts, per iteration
    dual_iterations: int = eqx.field(static=True, default=60)  # bisection steps on η
    psd_cost: bool = eqx.field(static=True, default=True)  # each sample's Hessian made PSD

    kl_step: float = 0.2  # ε per time step (the bound is kl_step · mult · T)
    min_step_mult: float = 0.01
    max_step_mult: float = 10.0
    init_var: float = 1.0  # variance of the initial controllers and of Σ_π at the start
    prior_strength: float = 1.0  # n₀ of the NIW prior (dynamics and policy linearisation)
    regularization: float = 1e-4  # added to each step's input covariance in the fits
    init_state_var: float = 1e-4  # floor of the initial state covariance Σ₀
    dual_tol: float = 0.1  # |KL − ε| ≤ dual_tol · ε stops the dual search
    policy_learning_rate: float = 1e-3  # S-step Adam step size

    def __check_init__(self) -> None:
        for name in ("total_steps", "num_conditions", "samples", "horizon", "policy_updates",
                     "policy_batch_size", "eval_episodes", "dual_iterations"):
            check_positive_int(name, getattr(self, name))
        if self.total_steps < self.steps_per_iteration:
            raise ConfigError(
                f"total_steps={self.total_steps} is less than one iteration "
                f"(num_conditions × samples × horizon = {self.steps_per_iteration})")
        if not isinstance(self.hidden, tuple) or not all(
                isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in self.hidden):
            raise ConfigError(f"hidden={self.hidden!r} must be a tuple of positive integers")
        check_range("kl_step", self.kl_step, 0.0, low_inclusive=False)
        check_range("min_step_mult", self.min_step_mult, 0.0, low_inclusive=False)
        check_range("max_step_mult", self.max_step_mult, 0.0, low_inclusive=False)
        check_range("init_var", self.init_var, 0.0, low_inclusive=False)
        check_range("prior_strength", self.prior_strength, 0.0)
        check_range("regularization", self.regularization, 0.0)
        check_range("init_state_var", self.init_state_var, 0.0, low_inclusive=False)
        check_range("dual_tol", self.dual_tol, 0.0, 1.0, low_inclusive=False)
        check_range("policy_learning_rate", self.policy_learning_rate, 0.0,
                    low_inclusive=False)

    @property
    def steps_per_iteration(self) -> int:
        return self.num_conditions * self.samples * self.horizon

    @property
    def num_iterations(self) -> int:
        """Iterations of ``step``: N rollouts per condition, one C-step and one S-step."""
        return self.total_steps // self.steps_per_iteration


PRESETS: dict[str, dict[str, Any]] = {
    # tests/model_based/test_gps_learning.py. From first seed 100 (tuning, 2026-12-07): from
    # the conditions the global policy's return is 53.1 where the local controllers' is
    # 52.2; from random starts (random goals) 22.0, near the initial policy's (14 to 18):
    # 4 conditions do not teach the network to reach goals it has not seen (8 conditions ×
    # 3 rollouts, 48k steps: 17.9).
    "Reacher-misc": dict(horizon=100, total_steps=40_000, init_var=0.3),
}


CANNOT_LEARN: dict[str, str] = {
    "Pendulum-v1": "its LQR-FLM controllers do not swing up, so neither does the global "
                   "policy (median −1345.9 from random starts, 80k steps)",
    "Reacher-misc": "the global policy matches the local controllers at its 4 conditions "
                    "(53.1 against 52.2) but not from random starts with unseen goals (22.0)",
}


def preset(env_id: str) -> dict[str, Any]:
    """Documented per-environment overrides of the defaults (``{}`` if none)."""
    return dict(PRESETS.get(env_id, {}))


# ----------------------------------------------------------------------------- state


class Policy(eqx.Module):
    """The global policy, what ``act`` needs: μ_θ (obs → pre-squash action), Σ_π and the
    action box."""

    net: eqx.Module
    cov: jax.Array  # [m, m] Σ_π
    low: jax.Array  # [m]
    high: jax.Array  # [m]


class Learner(eqx.Module):
    """The global policy and its optimiser state, the local controllers (``local``: LQR-FLM's
    parameters, with the known reward), the step-size multipliers and MDGPS's estimates."""

    params: Policy
    local: lqr_flm.Params  # controllers [C, T, ...], initial observations, box, reward
    opt_state: optax.OptState
    step_mult: jax.Array  # [C]
    estimate: lqr_flm.Estimate  # J(π̄; model) and J(p; model) at the last C-step, [C]
    key: jax.Array  # the S-step's minibatch draws
    updates: jax.Array  # int32: iterations learned


class State(eqx.Module):
    learner: Learner
    env: rollout.EnvCarry  # the conditions' reset states and initial observations [C, ...]
    conditions: jax.Array  # [C] reset keys
    key: jax.Array
    env_steps: jax.Array  # int32: real env steps of the learning samples


def _optimizer(config: Config) -> optax.GradientTransformation:
    return optax.adam(config.policy_learning_rate)


def init(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> State:
    """C conditions (reset keys drawn from ``key``), zero-mean local controllers with
    variance ``init_var``, and the global policy (``network``: obs → pre-squash action
    ``[m]``; by default an MLP of ``hidden``) with Σ_π = ``init_var``·I."""
    condition_key, net_key, learn_key, key = jax.random.split(key, 4)
    conditions, env_carry, local = lqr_flm.local_controllers(condition_key, config, env,
                                                             env_params, "gps")
    C, n = local.initial_obs.shape
    m = local.low.shape[0]
    eye = jnp.eye(m, dtype=jnp.float32)
    net = nets.resolve(network, net_key,
                       lambda k: nets.MLP(n, m, config.hidden, k, jax.nn.tanh))
    nets.check_output("network (obs → pre-squash action)", net, [(n,)], [(m,)])
    net = nets.arrays_only(net)
    params = Policy(net, config.init_var * eye, local.low, local.high)
    zeros = jnp.zeros((C,), jnp.float32)
    learner = Learner(params, local, _optimizer(config).init(eqx.filter(net, eqx.is_array)),
                      jnp.ones((C,), jnp.float32), lqr_flm.Estimate(zeros, zeros), learn_key,
                      jnp.zeros((), jnp.int32))
    return State(learner, env_carry, conditions, key, jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------- learn


def linearize(params: Policy, states: jax.Array, config: Any) -> lg.Policy:
    """The global policy as a linear-Gaussian controller at one condition's samples
    (states [N, T, n]): per step the regression of μ_θ(x) on x with the prior from all
    steps (``linear_gaussian.fit``), N(F_t x + f_t, W_t + Σ_π)."""
    means = nets.apply_batched(params.net, states, 2)
    fitted = lg.fit(states, means, config.prior_strength, config.regularization)
    cov = fitted.cov + params.cov
    return lg.Policy(fitted.F, fitted.f, 0.5 * (cov + jnp.swapaxes(cov, -1, -2)))


def policy_covariance(precisions: jax.Array) -> jax.Array:
    """Σ_π = (mean of the local precisions Λ)⁻¹ (``precisions`` [..., m, m])."""
    m = precisions.shape[-1]
    return lg.spd_inverse(jnp.mean(precisions.reshape(-1, m, m), axis=0))


def supervised_loss(net: eqx.Module, states: jax.Array, targets: jax.Array,
                    precisions: jax.Array) -> jax.Array:
    """mean_i (μ_θ(x_i) − μ_i)ᵀ Λ̃_i (μ_θ(x_i) − μ_i) over a batch (states [B, n], targets
    [B, m], precisions [B, m, m], already normalised)."""
    error = nets.apply_batched(net, states) - targets
    return jnp.mean(jnp.einsum("bi,bij,bj->b", error, precisions, error))


def fit_policy(params: Policy, opt_state: optax.OptState, key: jax.Array, states: jax.Array,
               controllers: lg.Policy, config: Any
               ) -> tuple[Policy, optax.OptState, dict[str, jax.Array]]:
    """The S-step (module doc, 4.) on the samples' states (states [C, N, T, n]) with the new
    local controllers (leaves [C, T, ...]) as targets."""
    C, N, T, n = states.shape
    means = jnp.einsum("ctij,cntj->cnti", controllers.K, states) + controllers.k[:, None]
    precisions = lg.spd_inverse(controllers.cov)  # [C, T, m, m]
    m = precisions.shape[-1]
    scale = jnp.mean(jnp.trace(precisions, axis1=-2, axis2=-1)) / m
    weights = jnp.broadcast_to((precisions / scale)[:, None], (C, N, T, m, m))
    data = (states.reshape(-1, n), means.reshape(-1, m), weights.reshape(-1, m, m))
    optimizer = _optimizer(config)
    arrays, static = eqx.partition(params.net, eqx.is_array)

    def update(carry, batch_key):
        arrays, opt_state = carry
        rows = jax.random.randint(batch_key, (config.policy_batch_size,), 0, C * N * T)
        loss, grads = jax.value_and_grad(
            lambda a: supervised_loss(eqx.combine(a, static), *(d[rows] for d in data)))(arrays)
        step, opt_state = optimizer.update(grads, opt_state, arrays)
        return (optax.apply_updates(arrays, step), opt_state), loss

    (arrays, opt_state), losses = jax.lax.scan(
        update, (arrays, opt_state), jax.random.split(key, config.policy_updates))
    net = eqx.combine(arrays, static)
    cov = policy_covariance(precisions)
    full_loss = supervised_loss(net, *data)
    return (Policy(net, cov, params.low, params.high), opt_state,
            {"policy_loss": full_loss, "policy_loss_first_batch": losses[0],
             "policy_std": jnp.mean(jnp.sqrt(jnp.diagonal(cov)))})


def learn(learner: Learner, batch: lqr_flm.Samples, config: Config
          ) -> tuple[Learner, dict[str, jax.Array]]:
    """One MDGPS iteration on the local controllers' rollouts (``batch``, leaves [C, N, ...]):
    local fits, the global policy's linearisation, the step size, the C-step, the S-step."""
    local = learner.local
    cost = lqr_flm.cost_of(local)
    first = learner.updates == 0
    T = config.horizon

    def c_step(states, actions, current, step_mult, estimate):
        model = lqr_flm.fit_local(states, actions, cost, config)
        prior = linearize(learner.params, states[:, :T], config)
        actual = model.expected_cost(prior)
        new_mult, info = lqr_flm.adjust_step(step_mult, estimate, actual, first, config)
        epsilon = config.kl_step * new_mult * T
        result = lg.kl_step(model.dynamics, model.C, model.c, prior, model.x0_mean,
                            model.x0_cov, epsilon, tol=config.dual_tol,
                            max_iterations=config.dual_iterations)
        predicted = model.expected_cost(result.policy)
        # A linearised global policy whose closed loop is unstable under the fitted model
        # has marginals that overflow float32 over T steps (its expected cost and the KL
        # are then inf/NaN): keep the current controller and estimates for this condition.
        ok = (jnp.isfinite(actual) & jnp.isfinite(predicted) & jnp.isfinite(result.kl)
              & jnp.all(jnp.array([jnp.all(jnp.isfinite(x))
                                   for x in jax.tree.leaves(result.policy)])))
        policy = jax.tree.map(lambda new, old: jnp.where(ok, new, old), result.policy, current)
        estimate = jax.tree.map(lambda new, old: jnp.where(ok, new, old),
                                lqr_flm.Estimate(actual, predicted), estimate)
        info = {**info, "kl": jnp.where(ok, result.kl, 0.0) / T, "kl_bound": epsilon / T,
                "eta": result.eta, "dual_iterations": result.iterations.astype(jnp.float32),
                "expected_cost": jnp.where(ok, predicted, jnp.nan),
                "policy_expected_cost": jnp.where(ok, actual, jnp.nan),
                "c_step_skipped": 1.0 - ok.astype(jnp.float32)}
        return policy, jnp.where(ok, new_mult, step_mult), estimate, info

    controllers, step_mult, estimate, info = jax.vmap(c_step)(
        batch.states, batch.actions, local.controllers, learner.step_mult, learner.estimate)
    key, fit_key = jax.random.split(learner.key)
    params, opt_state, fit_info = fit_policy(learner.params, learner.opt_state, fit_key,
                                             batch.states[:, :, :T], controllers, config)
    local = eqx.tree_at(lambda p: p.controllers, local, controllers)
    metrics = {**{name: jnp.nanmean(value) for name, value in info.items()}, **fit_info,
               "step_mult": jnp.mean(step_mult)}
    return Learner(params, local, opt_state, step_mult, estimate, key,
                   learner.updates + 1), metrics


# ----------------------------------------------------------------------------- step / train


def policy_controller(params: Policy) -> Any:
    """The global policy's mean as ``controller(key, c, t, x) -> (v, u)``."""

    def controller(key, c, t, x):
        v = params.net(x)
        return v, lqr_flm.squash(v, params.low, params.high)

    return controller


def step(state: State, config: Config, env: Any, env_params: Any
         ) -> tuple[State, dict[str, jax.Array]]:
    """N noisy rollouts of every local controller, one MDGPS update, then ``eval_episodes``
    episodes of the new global policy's mean from random initial states (the reported
    episodes)."""
    key, sample_key, reset_key, eval_key = jax.random.split(state.key, 4)
    C, N, T = config.num_conditions, config.samples, config.horizon
    states, actions, sample_returns = lqr_flm.rollouts(
        sample_key, env, env_params, state.env.env_state, state.env.obs,
        lqr_flm.controller_of(state.learner.local, noise=True), N, T)
    learner, metrics = learn(state.learner, lqr_flm.Samples(states, actions), config)
    obs, env_states = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(reset_key, config.eval_episodes), env_params)
    eval_key, local_key, global_key = jax.random.split(eval_key, 3)
    _, _, returns = lqr_flm.rollouts(eval_key, env, env_params, env_states,
                                     jax.vmap(lqr_flm.vector)(obs),
                                     policy_controller(learner.params), 1, T)
    # Both policies' noise-free episodes from the conditions: how closely the global policy
    # follows the local controllers where it was trained.
    _, _, local_returns = lqr_flm.rollouts(
        local_key, env, env_params, state.env.env_state, state.env.obs,
        lqr_flm.controller_of(learner.local, noise=False), 1, T)
    _, _, condition_returns = lqr_flm.rollouts(
        global_key, env, env_params, state.env.env_state, state.env.obs,
        policy_controller(learner.params), 1, T)
    env_steps = state.env_steps + C * N * T
    metrics = {
        **metrics,
        "episodes": jnp.asarray(config.eval_episodes, jnp.int32),
        "episode_return_sum": jnp.sum(returns),
        "episode_length_sum": jnp.asarray(config.eval_episodes * T, jnp.int32),
        "sample_return": jnp.mean(sample_returns),
        "local_return": jnp.mean(local_returns),
        "condition_return": jnp.mean(condition_returns),
        "env_steps": env_steps,
    }
    return State(learner, state.env, state.conditions, key, env_steps), metrics


def train(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> tuple[State, dict[str, jax.Array]]:
    """A whole run: ``init`` then ``lax.scan`` of ``step``; metrics stacked per iteration."""
    state = init(key, config, env, env_params, network)
    return jax.lax.scan(
        lambda s, _: step(s, config, env, env_params), state, length=config.num_iterations
    )


# ----------------------------------------------------------------------------- act


def act(
    params: Policy, obs: jax.Array, key: jax.Array, config: Config, deterministic: bool = False
) -> jax.Array:
    """u = squash(v), v = μ_θ(obs) (+ Σ_π^½ ξ unless ``deterministic``): the global policy."""
    v = params.net(lqr_flm.vector(obs))
    if not deterministic:
        v = v + jnp.linalg.cholesky(params.cov) @ jax.random.normal(key, v.shape, v.dtype)
    return lqr_flm.squash(v, params.low, params.high).reshape(params.low.shape)
