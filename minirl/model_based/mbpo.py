"""MBPO: model-based policy optimisation with any off-policy learner as its agent.

Janner et al., 2019, "When to trust your model: model-based policy optimization" (their
algorithm 2), jitted end to end. Real transitions go to a buffer D_env; an ensemble p_θ of
probabilistic networks is fitted to them; short rollouts *branched* from real states
through the model fill a second buffer D_model; a model-free agent learns from both:

    every K = ``refit_every`` real steps:
        refit the ensemble on D_env (held-out split; the E members with the lowest held-out
        MSE are the elites, their §4 / appendix C)
    every real step:
        act in the real env with the agent's policy; add the transition to D_env
        sample N = ``rollouts_per_step`` states s from D_env; from each, k steps through the
        model, s_{t+1} ~ p_θj(· | s_t, a_t) with a_t from the agent's policy and j a random
        elite drawn per step and per rollout; add the N·k transitions to D_model
        G = ``updates_per_step`` times: the agent's own ``learn`` on a batch in which each
        item comes from D_env with probability ``real_ratio`` and from D_model otherwise

so that the model's error compounds over k steps only (their theorem 4.3: the branched
return's gap shrinks with k). The rollout length follows the paper's schedule
``rollout_schedule = (e_first, e_last, k_min, k_max)``, linear in the epoch e =
⌊env_steps / epoch_length⌋:

    k(e) = ⌊k_min + clip((e − e_first) / (e_last − e_first), 0, 1) · (k_max − k_min)⌋

(jannerm/mbpo's ``_set_rollout_length``; computed in integers so no rounding moves k). A
rollout that terminates is continued from a fresh real state, so every step adds N model
transitions. D_model is a FIFO buffer of ``model_retain × K × N × k_max`` transitions: the
last ``model_retain`` refits' rollouts at the longest k (jannerm reallocates it whenever k
changes; a fixed shape keeps more refits at shorter k).

Mixing. Each item of a batch is real with probability ``real_ratio`` (a Bernoulli draw per
item), so a batch holds ``real_ratio · B`` real items in expectation, and ``real_ratio``
stays a traced leaf that one program sweeps. jannerm draws exactly ⌊real_ratio · B⌋ real
items, which would make it a shape.

Rewards and terminations are the env's known functions (``rewards.KNOWN``: Pendulum,
MountainCarContinuous, CartPole) or the model's learned reward head (``reward="learned"``;
terminations stay known where they are, none otherwise). Discrete actions enter the model
one-hot (``dynamics.action_features``). ``model="true"`` steps the real env itself
(``env.step_env``) from the real env states stored with each transition: the rollouts are
exact env transitions, an upper bound that separates what the model costs from what the
algorithm does.

**How MBPO gets its agent.** ``Config.agent`` is a *name*: one of minirl's off-policy
learners (``AGENTS``), found in this package's sibling ``algos`` when a config is built, or
the dotted import path of a user's module with the same contract (``Config`` with the
off-policy fields of ``AGENT_FIELDS``, ``init``, ``learn``, ``act``, ``ACTION_KIND``). This
file imports no learner: the layer holds no code for any particular agent and depends on
``core`` and ``model_based`` only (docs/design.md §6); it calls the agent's ``init``,
``learn`` and ``act`` and nothing else. A name, not a module object, keeps the config a
pytree of plain values that ``--set agent=td3``, JSON summaries, checkpoints and resume
handle like every other field. The agent's config is built from mbpo's fields: its
``hidden``, ``batch_size``, ``learning_starts``, ``learning_rate``, ``gamma`` and ``tau`` are
mbpo's own fields (the last three leaves, swept like any other), its update count per call
is ``updates_per_step``, and any other field of the agent is set by ``agent_options``
(``("target_entropy_per_dim=-0.5",)``, ``--set agent_options=exploration_noise=0.2``).

**N-step windows.** An agent that learns from windows (dqn, soft_q: it defines a ``Batch``)
can take ``n_step`` = N > 1: a real item is then N consecutive real steps of one env, and a
model item N consecutive steps of one branched rollout, started at each of its first k steps
and acted by the agent's current policy, so that the model supplies the N-step targets of
model-based value expansion (Feinberg et al., 2018) and the real windows those of the agent's
own replay (``off_policy_correction="none"``). Other agents take the one-step windows' steps.

The real env and the rollouts act with the agent's exploring ``act``: SAC samples its
policy, TD3 and DDPG add their noise, DQN is ε-greedy at its final ε (``epsilon_end``; the
ε schedule of DQN's own ``step`` is not used).

Contract (docs/design.md): ``Config``, ``Learner``, ``State``, ``init``, ``learn`` (one update
of the agent on a batch of transitions: the agent's own ``learn``), ``step``, ``train``,
``act`` (the agent's). ``network=`` is the agent's network.
"""

import dataclasses
import importlib
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..core import buffer as replay
from ..core import rollout
from ..core.config import ConfigError, check_choice, check_positive_int, check_range
from . import dynamics
from .model_env import ModelEnv, ModelEnvParams, ModelEnvState

ACTION_KIND = "both"  # the agent's: continuous (sac, td3, ddpg, naf, qt_opt) or discrete
OBSERVATIONS = "vectors"  # the model predicts state vectors
MODELS = ("probabilistic", "deterministic", "true")
AGENTS = ("sac", "td3", "ddpg", "naf", "qt_opt", "soft_q", "dqn")  # minirl's off-policy learners
AGENT_FIELDS = ("total_steps", "num_envs", "rollout_steps", "gradient_steps", "buffer_size",
                "batch_size", "learning_starts", "hidden", "learning_rate", "gamma", "tau")
"""Fields every agent's config must have; mbpo sets them itself."""
SET_BY_MBPO = (*AGENT_FIELDS, "n_step")
"""Fields of the agent's config that mbpo sets (``n_step`` where the agent has it), so
``agent_options`` may not."""


class Config(eqx.Module):
    """MBPO hyperparameters. Static fields fix shapes, loop lengths and switches; the rest
    are leaves (the agent's learning rate, γ and τ among them)."""

    agent: str = eqx.field(static=True, default="sac")  # a name of AGENTS, or a dotted path
    agent_options: tuple[str, ...] = eqx.field(static=True, default=())  # "field=value"
    model: str = eqx.field(static=True, default="probabilistic")  # probabilistic|deterministic|true
    reward: str = eqx.field(static=True, default="known")  # known | learned
    total_steps: int = eqx.field(static=True, default=20_000)  # real env steps, all envs
    num_envs: int = eqx.field(static=True, default=1)  # parallel real environments
    refit_every: int = eqx.field(static=True, default=250)  # K real steps (per env) per fit
    updates_per_step: int = eqx.field(static=True, default=20)  # G agent updates per step
    n_step: int = eqx.field(static=True, default=1)  # N: window length (agents with a Batch)
    rollouts_per_step: int = eqx.field(static=True, default=400)  # N branched rollouts
    rollout_schedule: tuple[int, ...] = eqx.field(static=True, default=(20, 100, 1, 1))
    epoch_length: int = eqx.field(static=True, default=1_000)  # real steps per schedule epoch
    model_retain: int = eqx.field(static=True, default=1)  # refits of rollouts D_model keeps
    buffer_size: int = eqx.field(static=True, default=1_000_000)  # D_env capacity
    batch_size: int = eqx.field(static=True, default=256)  # the agent's mixed minibatch
    learning_starts: int = eqx.field(static=True, default=500)  # uniform random real steps
    hidden: tuple[int, ...] = eqx.field(static=True, default=(256, 256))  # agent networks
    ensemble_size: int = eqx.field(static=True, default=7)  # M members
    num_elites: int = eqx.field(static=True, default=5)  # E members the rollouts use
    model_hidden: tuple[int, ...] = eqx.field(static=True, default=(200, 200, 200, 200))
    model_activation: str = eqx.field(static=True, default="silu")
    fit_updates: int = eqx.field(static=True, default=500)  # model minibatch updates per fit
    model_batch_size: int = eqx.field(static=True, default=256)
    max_holdout: int = eqx.field(static=True, default=5_000)  # held-out rows at most

    learning_rate: float = 3e-4  # the agent's Adam step size
    gamma: float = 0.99  # the agent's discount γ
    tau: float = 0.005  # the agent's Polyak weight (its soft target updates)
    real_ratio: float = 0.05  # P(a batch item is real)
    model_learning_rate: float = 1e-3  # model Adam(W) step size
    model_weight_decay: float = 5e-5  # model decoupled weight decay
    logvar_penalty: float = 0.01  # Σ max_logvar − Σ min_logvar coefficient
    holdout_fraction: float = 0.2  # share of D_env held out to rank the members

    def __check_init__(self) -> None:
        for name in ("total_steps", "num_envs", "refit_every", "updates_per_step",
                     "n_step", "rollouts_per_step", "epoch_length", "model_retain", "buffer_size",
                     "batch_size", "ensemble_size", "num_elites", "fit_updates",
                     "model_batch_size", "max_holdout"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("learning_starts", self.learning_starts, minimum=0)
        check_choice("model", self.model, MODELS)
        check_choice("reward", self.reward, ("known", "learned"))
        check_choice("model_activation", self.model_activation, tuple(dynamics.ACTIVATIONS))
        if self.model == "true" and self.reward == "learned":
            raise ConfigError("reward='learned' needs a learned model; model='true' steps the "
                              "env, which gives its own reward")
        _check_schedule(self.rollout_schedule)
        if self.num_elites > self.ensemble_size:
            raise ConfigError(f"num_elites={self.num_elites} exceeds "
                              f"ensemble_size={self.ensemble_size}")
        if self.total_steps < self.steps_per_iteration:
            raise ConfigError(f"total_steps={self.total_steps} is less than one iteration "
                              f"(num_envs × refit_every = {self.steps_per_iteration})")
        if self.buffer_size % self.num_envs:
            raise ConfigError(f"buffer_size={self.buffer_size} must be a multiple of "
                              f"num_envs={self.num_envs}")
        for name in ("real_ratio",):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_range("holdout_fraction", self.holdout_fraction, 0.0, 1.0, high_inclusive=False)
        check_range("model_learning_rate", self.model_learning_rate, 0.0, low_inclusive=False)
        check_range("model_weight_decay", self.model_weight_decay, 0.0)
        check_range("logvar_penalty", self.logvar_penalty, 0.0)
        _ = self.agent_config  # the agent's own checks: hidden, learning_rate, gamma, tau, ...
        if self.model != "true":
            _ = self.model_config  # model_hidden, ...

    @property
    def agent_module(self) -> ModuleType:
        return agent_module(self.agent)

    @property
    def agent_config(self) -> Any:
        """The agent's config: its defaults, then mbpo's fields, then ``agent_options``."""
        module = self.agent_module
        options = parse_agent_options(self.agent, self.agent_options, module.Config)
        fields = dict(total_steps=self.total_steps, num_envs=1, rollout_steps=1,
                      gradient_steps=self.updates_per_step, buffer_size=self.batch_size,
                      batch_size=self.batch_size, learning_starts=self.learning_starts,
                      hidden=self.hidden, learning_rate=self.learning_rate, gamma=self.gamma,
                      tau=self.tau)
        if self.n_step != 1 and not hasattr(module, "Batch"):
            raise ConfigError(f"n_step={self.n_step} needs an agent that learns from N-step "
                              f"windows (dqn, soft_q); agent={self.agent!r} takes one-step "
                              "transitions, so n_step must be 1")
        if hasattr(module, "Batch"):
            fields["n_step"] = self.n_step
        try:
            config = module.Config(**fields, **options)
        except ConfigError as error:
            raise ConfigError(f"agent={self.agent!r}: {error}") from None
        if getattr(config, "off_policy_correction", "none") != "none":
            raise ConfigError(f"agent_options off_policy_correction="
                              f"{config.off_policy_correction!r} is not allowed; mbpo's windows "
                              "carry no behaviour probabilities, so the target is the plain "
                              "N-step one ('none')")
        return config

    @property
    def model_config(self) -> dynamics.ModelConfig:
        # dynamics.ModelConfig's check compares its (constant) log-variance bounds with jnp,
        # which under a jit trace gives a tracer; evaluate it eagerly (as pets does).
        with jax.ensure_compile_time_eval():
            return dynamics.ModelConfig(
                kind="probabilistic" if self.model == "true" else self.model,
                ensemble_size=self.ensemble_size, hidden=self.model_hidden,
                activation=self.model_activation, learn_reward=self.reward == "learned",
                learning_rate=self.model_learning_rate, weight_decay=self.model_weight_decay,
                logvar_penalty=self.logvar_penalty,
            )

    @property
    def max_rollout_length(self) -> int:
        return max(self.rollout_schedule[2], self.rollout_schedule[3])

    @property
    def model_buffer_size(self) -> int:
        """D_model's capacity: ``model_retain`` refits of rollouts at the longest k."""
        return (self.model_retain * self.refit_every * self.num_envs * self.rollouts_per_step
                * self.max_rollout_length)

    @property
    def steps_per_iteration(self) -> int:
        return self.num_envs * self.refit_every

    @property
    def num_iterations(self) -> int:
        """Iterations of ``step``; each collects ``refit_every`` real steps in each of the
        ``num_envs`` envs (with rollouts and G updates after each) and refits the model."""
        return self.total_steps // self.steps_per_iteration


def _check_schedule(schedule: Any) -> None:
    if (not isinstance(schedule, tuple) or len(schedule) != 4
            or any(isinstance(v, bool) or not isinstance(v, int) for v in schedule)):
        raise ConfigError(f"rollout_schedule={schedule!r} must be four integers "
                          "(first_epoch, last_epoch, k_min, k_max)")
    first, last, k_min, k_max = schedule
    if first < 0 or last <= first or k_min < 1 or k_max < 1:
        raise ConfigError(f"rollout_schedule={schedule!r} is out of range; allowed: "
                          "0 ≤ first_epoch < last_epoch, k_min ≥ 1, k_max ≥ 1")


PRESETS: dict[str, dict[str, Any]] = {
    # Checked by tests/model_based/test_mbpo_learning.py (Pendulum, 5k real steps, 4 seeds,
    # ≥ −200): medians −141.8 / −153.9 / −165.7 from first seeds 100 (tuning), 0 (the test)
    # and 1000 (−134.9 / −172.8 from 0 / 1000 once the warm-up's random actions came from
    # rollout.random_policy: other bits, same distribution); the return passes −200 after
    # about 2.5k real steps. Tried from first seed 100
    # and cheaper but slower to learn: 5 updates per step at batch 128 (−155.3), 10 at batch
    # 128 (−174.0). The small networks (64×64 agent and model; mbrl-lib: 4×200 model) and
    # 100 rollouts per step (jannerm: 400) keep a 4-seed run near 4 minutes on 2 shared CPU
    # cores; the agent's learning rate is SAC's Pendulum preset. Real steps to a 5-episode
    # mean of −200 (benchmarks/bench_model_based.py, first seed 100): 2,750 (SAC alone
    # 4,100; the goal, half of SAC's, is not met); with 20 updates per step 2,625,
    # with rollouts of k = 5 steps 2,750.
    "Pendulum-v1": dict(total_steps=5_000, learning_starts=250, updates_per_step=10,
                        rollouts_per_step=100, buffer_size=50_000, hidden=(64, 64),
                        learning_rate=1e-3, model_hidden=(64, 64), fit_updates=300,
                        model_batch_size=128),
    # Checked by tests/model_based/test_mbpo_learning.py (CartPole, 30k real steps, 4 seeds,
    # ≥ 400; DQN alone needs about 100k). DQN's own CartPole recipe carried over: 3-step
    # windows (n_step; real windows from D_env, model windows from the branched rollouts),
    # the learning rate annealed to 0 and ε → 0.01. From first seed 100 (tuning,
    # 2026-12-07, about 2.5 minutes per 4-seed run): median 480.0 [470.3, 310.6, 489.7,
    # 500]; one-step windows stalled near 300 (293.4 with real_ratio 0.5, 174.8 with 0.05;
    # the true env as the model 330.6), 3-step windows alone (constant learning rate,
    # ε → 0.05) 415.0, and this recipe with 4 updates per step 356.8 (solved by 12k real
    # steps, then two seeds collapsed).
    "CartPole-v1": dict(agent="dqn", n_step=3,
                        agent_options=("learning_rate_end_factor=0.0", "epsilon_end=0.01"),
                        total_steps=30_000, refit_every=1_000, learning_starts=1_000,
                        updates_per_step=2, rollouts_per_step=100, real_ratio=0.5,
                        buffer_size=50_000, hidden=(64, 64), learning_rate=5e-4,
                        model_hidden=(64, 64), fit_updates=300, model_batch_size=128),
}


def preset(env_id: str) -> dict[str, Any]:
    """Documented per-environment overrides of the defaults (``{}`` if none)."""
    return dict(PRESETS.get(env_id, {}))


# ----------------------------------------------------------------------------- the agent


def agent_module(name: str) -> ModuleType:
    """The agent's module: a name of ``AGENTS`` is looked up in this package's sibling
    ``algos`` (``minirl.algos.sac``, or a copy's ``algos/sac.py``), a dotted path is
    imported as it is. :class:`ConfigError` if there is none, or if it is not an off-policy
    learner (its ``Config`` lacks one of ``AGENT_FIELDS``)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"agent={name!r} must be a name ({', '.join(AGENTS)}) or a dotted "
                          "module path")
    path = name if "." in name else f"..algos.{name}"
    try:
        module = importlib.import_module(path, __package__)
    except ImportError:
        raise ConfigError(f"agent={name!r} is not a learner found here; choose one of "
                          f"{', '.join(AGENTS)}, or give the dotted path of a module with the "
                          "contract (Config, init, learn, act)") from None
    config_cls = getattr(module, "Config", None)
    fields = {f.name for f in dataclasses.fields(config_cls)} if config_cls else set()
    missing = [f for f in AGENT_FIELDS if f not in fields]
    if missing or not all(hasattr(module, f) for f in ("init", "learn", "act")):
        raise ConfigError(f"agent={name!r} is not an off-policy learner (its Config lacks "
                          f"{', '.join(missing) or 'nothing, but init/learn/act are missing'});"
                          f" choose one of {', '.join(AGENTS)}")
    return module


def parse_agent_options(agent: str, options: tuple[str, ...], config_cls: type) -> dict:
    """``("exploration_noise=0.2", "double_q=false")`` → typed values for the agent's
    config, each parsed as the type of that field's default (bool, int, float, str, or a
    tuple of ints)."""
    if isinstance(options, str) or not isinstance(options, tuple | list):
        raise ConfigError(f"agent_options={options!r} must be a tuple of 'field=value' texts")
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    out = {}
    for text in options:
        name, sep, value = str(text).partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ConfigError(f"agent_options entry {text!r} must look like field=value")
        if name not in fields:
            raise ConfigError(f"agent_options: unknown field {name!r} for agent={agent!r}; "
                              f"fields: {', '.join(f for f in fields if f not in SET_BY_MBPO)}")
        if name in SET_BY_MBPO:
            raise ConfigError(f"agent_options: {name} is set by mbpo (its own field "
                              f"{'updates_per_step' if name == 'gradient_steps' else name})")
        default = fields[name].default
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                out[name] = value.lower() in ("true", "1", "yes")
            elif isinstance(default, tuple):
                out[name] = tuple(int(p) for p in value.strip("()[] ").split(",") if p.strip())
            else:
                out[name] = type(default)(value)
        except ValueError:
            raise ConfigError(f"agent_options: {name}={value!r} is not a valid "
                              f"{type(default).__name__}") from None
    return out


class Batch(eqx.Module):
    """Windows of N consecutive steps, leaves ``[B, N, ...]``; ``valid [B, N]`` is False for
    a real window's items past the newest real step (a model window is all valid). An
    episode end inside a window is in its ``terminated``/``truncated``: the agent's N-step
    target stops there."""

    transitions: rollout.Transition
    valid: jax.Array


def windows_of(transitions: rollout.Transition) -> Batch:
    """One-step transitions ``[B]`` as windows of one step each."""
    return Batch(jax.tree.map(lambda x: x[:, None], transitions),
                 jnp.ones((*transitions.reward.shape, 1), bool))


def agent_batch(agent: ModuleType, batch: Batch | rollout.Transition) -> Any:
    """A batch as the agent's ``learn`` takes it: for an agent that learns from N-step
    windows (it defines a ``Batch(transitions, valid)``: dqn, soft_q) the windows, else the
    windows' single steps (``n_step`` is 1 for those agents)."""
    if isinstance(batch, rollout.Transition):
        batch = windows_of(batch)
    if hasattr(agent, "Batch"):
        return agent.Batch(batch.transitions, batch.valid)
    return jax.tree.map(lambda x: x[:, 0], batch.transitions)


# ----------------------------------------------------------------------------- state


class Learner(eqx.Module):
    """What ``learn`` and the model fit read and write: the agent's parameters (what ``act``
    takes), the rest of the agent's own ``Learner`` (its ``params`` field left empty), and
    the model with its optimiser, elites and fitting key (``None`` with ``model="true"``)."""

    params: Any  # the agent's params: what act takes
    agent: Any  # the agent's Learner less its params: critics, targets, optimiser states, ...
    model: dynamics.Model | None
    model_opt_state: optax.OptState | None
    elites: jax.Array | None  # [E] int32: the members the rollouts draw from
    updates: jax.Array  # int32: model gradient updates (the agent counts its own)
    key: jax.Array  # the model fits' key


class RealStep(eqx.Module):
    """One item of D_env: a transition and, with ``model="true"``, the env state it starts
    from (the rollouts restart the real env there)."""

    transition: rollout.Transition
    env_state: Any = None


class State(eqx.Module):
    learner: Learner
    buffer: replay.ReplayBuffer  # D_env: RealStep items, time-major across num_envs streams
    model_buffer: replay.ReplayBuffer  # D_model: windows of N steps of branched rollouts
    env: rollout.EnvCarry
    key: jax.Array
    env_steps: jax.Array  # int32: real env steps collected so far (all envs)


def _merge(learner: Learner) -> Any:
    """The agent's own Learner."""
    return dataclasses.replace(learner.agent, params=learner.params)


def _split(agent_learner: Any, learner: Learner) -> Learner:
    return dataclasses.replace(learner, params=agent_learner.params,
                               agent=dataclasses.replace(agent_learner, params=None))


def _num_actions(env: Any, env_params: Any) -> int | None:
    if rollout.action_kind(env, env_params) == "discrete":
        return rollout.num_actions(env, env_params)
    return None


def init(
    key: jax.Array, config: Config, env: Any, env_params: Any, network: Any = None
) -> State:
    """A fresh run: the agent (its own ``init``, with ``network`` its network), an ensemble
    and its optimiser, empty D_env and D_model, and ``num_envs`` reset envs."""
    agent = config.agent_module
    rollout.require_action_kind(env, env_params, agent.ACTION_KIND, f"mbpo agent={config.agent}")
    obs_shape = rollout.observation_shape(env, env_params)
    if len(obs_shape) != 1:
        raise ConfigError(f"env observation shape {obs_shape}: mbpo needs vector observations")
    if config.model != "true":
        ModelEnv(env, config.model_config, config.reward)  # a known reward, or ConfigError
    agent_key, model_key, env_key, learn_key, key = jax.random.split(key, 5)
    agent_learner = agent.init(agent_key, config.agent_config, env, env_params, network).learner
    n = _num_actions(env, env_params)
    if config.model == "true":
        model = opt_state = elites = None
    else:
        action_dim = n or math.prod(rollout.action_shape(env, env_params))
        model = dynamics.init(model_key, obs_shape[0], action_dim, config.model_config)
        opt_state = dynamics.init_optimizer(model, config.model_config)
        elites = jnp.arange(config.num_elites, dtype=jnp.int32)
    learner = Learner(agent_learner.params, dataclasses.replace(agent_learner, params=None),
                      model, opt_state, elites, jnp.zeros((), jnp.int32), learn_key)
    env_carry = rollout.reset(env_key, env, env_params, config.num_envs)
    action = (jnp.zeros((), jnp.int32) if n else
              jnp.zeros(rollout.action_shape(env, env_params), jnp.float32))
    example = rollout.example_transition(env_carry.obs[0], action)
    env_state = (jax.tree.map(lambda x: x[0], env_carry.env_state) if config.model == "true"
                 else None)
    window = jax.tree.map(lambda x: jnp.stack([x] * config.n_step), example)
    return State(learner, replay.init(config.buffer_size, RealStep(example, env_state)),
                 replay.init(config.model_buffer_size, window), env_carry, key,
                 jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------- learn


def learn(learner: Learner, batch: Batch | rollout.Transition, config: Config
          ) -> tuple[Learner, dict[str, jax.Array]]:
    """One update of the agent on a batch (real, model or mixed): windows of ``n_step``
    steps (:class:`Batch`, leaves ``[B, N, ...]``) or one-step transitions (leaves
    ``[B, ...]``): the agent's own ``learn``. The model is untouched (:func:`fit_model`)."""
    agent = config.agent_module
    agent_learner, metrics = agent.learn(_merge(learner), agent_batch(agent, batch),
                                         config.agent_config)
    return _split(agent_learner, learner), metrics


def fit_model(learner: Learner, buffer: replay.ReplayBuffer, config: Config,
              num_actions: int | None) -> tuple[Learner, dict[str, jax.Array]]:
    """Refit the ensemble on D_env (``dynamics.fit_with_holdout``) and choose the elites,
    the ``num_elites`` lowest held-out losses."""
    key, fit_key = jax.random.split(learner.key)
    tr = buffer.data.transition
    data = dynamics.Data(tr.obs, dynamics.action_features(tr.action, num_actions), tr.next_obs,
                         tr.reward)
    model, opt_state, metrics, losses = dynamics.fit_with_holdout(
        fit_key, learner.model, learner.model_opt_state, data, buffer.size,
        config.model_config, num_updates=config.fit_updates,
        batch_size=config.model_batch_size, holdout_fraction=config.holdout_fraction,
        max_holdout=config.max_holdout)
    elites = dynamics.elites(losses, config.num_elites).astype(jnp.int32)
    learner = dataclasses.replace(learner, model=model, model_opt_state=opt_state,
                                  elites=elites, updates=learner.updates + config.fit_updates,
                                  key=key)
    return learner, metrics


# ----------------------------------------------------------------------------- rollouts


def rollout_length(env_steps: jax.Array, schedule: tuple[int, ...], epoch_length: int
                   ) -> jax.Array:
    """k after ``env_steps`` real steps: the module docstring's linear schedule in the epoch
    ⌊env_steps / epoch_length⌋, in integer arithmetic (floor, as jannerm's ``int``)."""
    first, last, k_min, k_max = schedule
    epoch = jnp.asarray(env_steps, jnp.int32) // epoch_length
    progress = jnp.clip(epoch - first, 0, last - first)
    return (k_min + (progress * (k_max - k_min)) // (last - first)).astype(jnp.int32)


ModelStep = Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any, jax.Array, jax.Array]]
"""``model_step(key, state, action) -> (next_obs, next_state, reward, terminated)`` for one
state: the real env's ``step_env`` or a model's."""


def branched_rollout(
    key: jax.Array,
    model_step: ModelStep,
    states: Any,
    obs: jax.Array,
    policy: Callable[[jax.Array, jax.Array], jax.Array],
    restart: Callable[[jax.Array], tuple[Any, jax.Array]],
    num_steps: int,
) -> rollout.Transition:
    """``num_steps`` steps of ``model_step`` from ``N`` states (leaves ``[N, ...]``, their
    observations ``obs [N, d]``) with ``policy(key, obs [N, d]) -> actions [N, ...]``.

    Returns the transitions, leaves ``[num_steps, N, ...]`` (``truncated`` is False: a
    branch is too short for a time limit). A rollout that terminates continues from a fresh
    state of ``restart(key) -> (states [N], obs [N, d])`` (for MBPO, real states sampled
    from D_env), so that every step yields N transitions from live states."""
    n = obs.shape[0]

    def one(carry, step_key):
        states, obs = carry
        act_key, model_key, restart_key = jax.random.split(step_key, 3)
        action = policy(act_key, obs)
        next_obs, next_states, reward, terminated = jax.vmap(model_step)(
            jax.random.split(model_key, n), states, action)
        terminated = jnp.asarray(terminated).astype(bool)
        transition = rollout.Transition(
            obs=obs, action=action, reward=jnp.asarray(reward, jnp.float32),
            next_obs=next_obs.astype(obs.dtype), terminated=terminated,
            truncated=jnp.zeros_like(terminated))
        fresh_states, fresh_obs = restart(restart_key)

        def pick(fresh, new):
            mask = terminated.reshape(terminated.shape + (1,) * (jnp.ndim(new) - 1))
            return jnp.where(mask, fresh, new)

        states = jax.tree.map(pick, fresh_states, next_states)
        return (states, pick(fresh_obs, next_obs.astype(obs.dtype))), transition

    _, transitions = jax.lax.scan(one, (states, obs), jax.random.split(key, num_steps))
    return transitions


def model_step_fn(learner: Learner, config: Config, env: Any, env_params: Any,
                  num_actions: int | None) -> ModelStep:
    """The step the rollouts take: the real env's ``step_env`` (``model="true"``), or the
    elites behind ``ModelEnv`` (a uniformly random elite per step and rollout, its Gaussian
    noise sampled; discrete actions one-hot)."""
    if config.model == "true":
        def true_step(key, state, action):
            return env.step_env(key, state, action, env_params)[:4]
        return true_step
    with jax.ensure_compile_time_eval():
        elite_config = dataclasses.replace(config.model_config, ensemble_size=config.num_elites)
    model_env = ModelEnv(env, elite_config, config.reward)
    model_params = ModelEnvParams(dynamics.select_members(learner.model, learner.elites),
                                  env_params)

    def learned_step(key, state, action):
        features = dynamics.action_features(action, num_actions)
        return model_env.step_env(key, state, features, model_params)[:4]

    return learned_step


def model_rollouts(key: jax.Array, learner: Learner, buffer: replay.ReplayBuffer,
                   model_buffer: replay.ReplayBuffer, k: jax.Array, config: Config, env: Any,
                   env_params: Any) -> replay.ReplayBuffer:
    """N branched rollouts of length k from states of D_env with the agent's policy, added
    to D_model as the windows of ``n_step`` steps that start at each of the first k steps
    (a rollout is computed for ``max_rollout_length + n_step − 1`` steps; windows starting
    at k or later are dropped)."""
    agent, agent_config = config.agent_module, config.agent_config
    n_actions = _num_actions(env, env_params)
    start_key, rollout_key = jax.random.split(key)

    def starts(key):
        real = replay.sample(buffer, key, config.rollouts_per_step)
        if config.model == "true":
            return real.env_state, real.transition.obs
        obs = real.transition.obs
        return ModelEnvState(obs, jnp.zeros(obs.shape[:1], jnp.int32)), obs

    def policy(key, obs):
        keys = jax.random.split(key, obs.shape[0])
        return jax.vmap(lambda o, k: agent.act(learner.params, o, k, agent_config))(obs, keys)

    states, obs = starts(start_key)
    transitions = branched_rollout(
        rollout_key, model_step_fn(learner, config, env, env_params, n_actions), states, obs,
        policy, starts, config.max_rollout_length + config.n_step - 1)
    # windows[t] holds steps t … t+N−1 of every rollout: leaves [k_max, N_rollouts, N, ...]
    windows = jax.tree.map(
        lambda x: jnp.stack([x[i:i + config.max_rollout_length] for i in range(config.n_step)],
                            axis=2), transitions)

    def add(buffer, inputs):
        t, window = inputs
        buffer = jax.lax.cond(t < k, lambda b: replay.add(b, window), lambda b: b, buffer)
        return buffer, None

    steps = jnp.arange(config.max_rollout_length)
    return jax.lax.scan(add, model_buffer, (steps, windows))[0]


def mixed_batches(key: jax.Array, buffer: replay.ReplayBuffer, model_buffer: replay.ReplayBuffer,
                  num_batches: int, config: Config) -> Batch:
    """``num_batches`` batches of ``batch_size`` windows of ``n_step`` steps, leaves
    ``[G, B, N, ...]``: item i is drawn from D_env if u_i < real_ratio (u_i ~ U[0, 1)), else
    from D_model. A real window is N consecutive steps of one env (D_env is time-major
    across the ``num_envs`` streams, so stride ``num_envs``)."""
    count = num_batches * config.batch_size
    real_key, model_key, coin_key = jax.random.split(key, 3)
    real, valid = replay.sample_sequences(buffer, real_key, count, config.n_step,
                                          stride=config.num_envs)
    imagined = replay.sample(model_buffer, model_key, count)
    is_real = jax.random.uniform(coin_key, (count,)) < config.real_ratio

    def mix(r, m):
        return jnp.where(is_real.reshape((count,) + (1,) * (r.ndim - 1)), r, m)

    mixed = Batch(jax.tree.map(mix, real.transition, imagined),
                  mix(valid, jnp.ones_like(valid)))
    return jax.tree.map(lambda x: x.reshape(num_batches, config.batch_size, *x.shape[1:]),
                        mixed)


# ----------------------------------------------------------------------------- step / train


def step(
    state: State, config: Config, env: Any, env_params: Any
) -> tuple[State, dict[str, jax.Array]]:
    """K = ``refit_every`` real steps in each env, each followed (once the model has been
    fitted) by N branched rollouts into D_model and G updates of the agent on mixed batches;
    then the model is refitted on D_env (from ``learning_starts`` real steps on). Actions are
    uniformly random for the first ``learning_starts`` real steps, then the agent's ``act``."""
    agent, agent_config = config.agent_module, config.agent_config
    n_actions = _num_actions(env, env_params)
    key, collect_key = jax.random.split(state.key)
    # The model was fitted at the end of the previous iteration iff it ended past the warm-up.
    ready = state.env_steps >= config.learning_starts
    E = config.num_envs

    def imagine_and_learn(learner, buffer, model_buffer, key, env_steps):
        rollout_key, batch_key = jax.random.split(key)
        k = rollout_length(env_steps, config.rollout_schedule, config.epoch_length)
        model_buffer = model_rollouts(rollout_key, learner, buffer, model_buffer, k, config,
                                      env, env_params)
        batches = mixed_batches(batch_key, buffer, model_buffer, config.updates_per_step,
                                config)
        learner, metrics = jax.lax.scan(lambda learner, b: learn(learner, b, config), learner,
                                        batches)
        return learner, model_buffer, {**jax.tree.map(jnp.mean, metrics), "rollout_length": k}

    def one(carry, step_key):
        learner, buffer, model_buffer, env_carry, env_steps = carry
        act_key, random_key, env_key, learn_key = jax.random.split(step_key, 4)
        keys = jax.random.split(act_key, E)
        action = jax.vmap(lambda o, k: agent.act(learner.params, o, k, agent_config))(
            env_carry.obs, keys)
        random, _ = rollout.random_policy(env, env_params)(random_key, env_carry.obs)
        action = jnp.where(env_steps < config.learning_starts, random.astype(action.dtype),
                           action)
        start_states = env_carry.env_state
        env_carry, transition = rollout.env_step(env_key, env, env_params, env_carry, action)
        stored = rollout.Transition(transition.obs, transition.action, transition.reward,
                                    transition.next_obs, transition.terminated,
                                    transition.truncated)
        buffer = replay.add(buffer, RealStep(
            stored, start_states if config.model == "true" else None))
        env_steps = env_steps + E

        def skip(learner, buffer, model_buffer, key, env_steps):
            shapes = jax.eval_shape(imagine_and_learn, learner, buffer, model_buffer, key,
                                    env_steps)[2]
            return learner, model_buffer, jax.tree.map(jnp.zeros_like, shapes)

        learner, model_buffer, metrics = jax.lax.cond(
            ready, imagine_and_learn, skip, learner, buffer, model_buffer, learn_key, env_steps)
        return (learner, buffer, model_buffer, env_carry, env_steps), (transition, metrics)

    carry = (state.learner, state.buffer, state.model_buffer, state.env, state.env_steps)
    carry, (trajectory, learn_metrics) = jax.lax.scan(
        one, carry, jax.random.split(collect_key, config.refit_every))
    learner, buffer, model_buffer, env_carry, env_steps = carry

    if config.model == "true":
        fit_metrics = {}
    else:
        def refit(learner):
            return fit_model(learner, buffer, config, n_actions)

        def no_refit(learner):
            shapes = jax.eval_shape(refit, learner)[1]
            return learner, jax.tree.map(jnp.zeros_like, shapes)

        learner, fit_metrics = jax.lax.cond(env_steps >= config.learning_starts, refit,
                                            no_refit, learner)
    state = State(learner, buffer, model_buffer, env_carry, key, env_steps)
    metrics = {**rollout.episode_metrics(trajectory), **jax.tree.map(jnp.mean, learn_metrics),
               **fit_metrics, "model_buffer_size": model_buffer.size, "env_steps": env_steps}
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
    params: Any, obs: jax.Array, key: jax.Array, config: Config, deterministic: bool = False
) -> jax.Array:
    """The agent's action for one observation (its ``act``: exploring, or its mode when
    ``deterministic``)."""
    return config.agent_module.act(params, obs, key, config.agent_config, deterministic)
