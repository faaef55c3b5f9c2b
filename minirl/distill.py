"""Policy distillation: one student network learns to act like several trained teachers, each
in its own environment (Rusu et al., 2016, "Policy distillation"; Parisotto et al., 2016,
"Actor-mimic").

**Teachers.** Task k is an environment with a trained discrete-action teacher. A Q-learner's
(dqn, soft_q) policy is the softmax of its Q-values at temperature τ (Rusu et al., §3.2,
τ = 0.01, which makes it nearly greedy); a policy learner's (ppo, trpo) is its own
categorical π:

    π_E^k(a|s) = softmax(Q_k(s, ·) / τ)_a        dqn, soft_q
    π_E^k(a|s) = π_k(a|s)                         ppo, trpo  (τ is not used)

**Student.** One network f_θ reads the observation flattened and zero-padded to the largest
task's size D, followed by the task's one-hot e_k: x = [pad_D(vec(s)), e_k] (D + K inputs for
K tasks). It has one output per action of the largest action set, A = max_k |A_k|. Task k's
logits beyond its own |A_k| actions are set to −∞ before the softmax, so every probability
is on the task's own actions:

    π_θ(a|s, k) = softmax(m_k(f_θ(x)))_a,    m_k(z)_a = z_a if a < |A_k|, −∞ otherwise.

Rusu et al.'s multi-task student gives every game an output layer of its own, selected by the
task label; here the label is an input and one shared output layer is masked per task.

**Loss.** The cross-entropy from the teacher to the student, averaged over a batch of stored
states (Rusu et al., eq. 3, their "KL" loss, whose teacher-entropy term does not depend on θ;
Parisotto et al., eq. 2):

    L(θ) = E_{(s,k)~D} [ −Σ_{a<|A_k|} π_E^k(a|s) log π_θ(a|s, k) ]
         = E_{(s,k)~D} [ H(π_E^k(·|s)) + KL(π_E^k(·|s) ‖ π_θ(·|s, k)) ],

minimised, with zero gradient, exactly where π_θ = π_E. The KL has the teacher first, as in
both papers: a student that gives an action the teacher takes no mass pays without bound.

**Data (DAgger; Ross et al., 2011, "A reduction of imitation learning and structured
prediction to no-regret online learning").** The states are those the *student* visits: in
each task's envs the behaviour policy takes, per env and step, the teacher's action (a
sample of π_E) with probability β and the student's otherwise (the argmax of π_θ, the policy
that is evaluated, or a sample of it with ``behaviour="sample"``); β decays linearly from
``beta_start`` to 0 over ``beta_fraction`` of the run. Rusu et al. collected states with the
teacher alone (β = 1 throughout); learning on the student's own states is DAgger's
correction for errors that compound along the student's trajectories. Every visited state
goes into one replay buffer with its task index and the teacher's probabilities, computed
when the state is visited (as Rusu et al.'s replay memory holds the teacher's outputs); each
update draws a uniform batch across all tasks, which hold equal shares of the buffer.

**Contract** (docs/design.md §1), with one difference: there are several environments, so
``init``, ``step`` and ``train`` take ``tasks``, a tuple of :class:`Task` (env, env
parameters and teacher), where a learner takes ``env, env_params``. A task's env and teacher
module are static; its env parameters and the teacher's parameters and config are leaves.
``act(params, obs, key, config, deterministic)`` serves one task: **the task is part of the
params** (``params.task``, a static field chosen with :func:`for_task`), so
``minirl.evaluation`` (and ``minirl eval``) score the student on task k through the ordinary
``act``. Training ignores ``params.task``: every stored state carries its own task index.

The last section is host-level, like ``minirl.runner``: teachers loaded from the run
directories ``minirl train`` writes, and a distillation run with progress reports, an atomic
student checkpoint and the files ``minirl distill`` leaves (``summary.json``,
``metrics.csv``, ``curve.png``).
"""

import dataclasses
import math
import os
import sys
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import checkpoint, configs, evaluation, results
from .algos import ppo
from .core import buffer as replay
from .core import exploration, nets, off_policy, rollout
from .core.config import (
    ConfigError,
    check_choice,
    check_hidden,
    check_one_iteration,
    check_positive_int,
    check_range,
)
from .core.optim import adam_step, adam_with_clipping

ACTION_KIND = "discrete"
# The teachers a student can learn from, and how each gives π_E: "q" = softmax(Q/τ) of the
# Q-network that is its params; "policy" = the categorical π of ppo's actor-critic.
TEACHERS = {"dqn": "q", "soft_q": "q", "ppo": "policy", "trpo": "policy"}
BEHAVIOURS = ("sample", "greedy")


class Config(eqx.Module):
    """Distillation hyperparameters. Static fields fix shapes and loop lengths; the rest are
    leaves. Env steps are counted per task: every task collects ``num_envs × rollout_steps``
    env steps per iteration."""

    total_steps: int = eqx.field(static=True, default=40_000)  # env steps per task
    num_envs: int = eqx.field(static=True, default=8)  # parallel environments per task
    rollout_steps: int = eqx.field(static=True, default=4)  # env steps per env per iteration
    gradient_steps: int = eqx.field(static=True, default=8)  # updates per iteration
    buffer_size: int = eqx.field(static=True, default=50_000)  # states kept, all tasks
    batch_size: int = eqx.field(static=True, default=256)  # states per update
    learning_starts: int = eqx.field(static=True, default=1_000)  # env steps per task first
    hidden: tuple[int, ...] = eqx.field(static=True, default=(64, 64))  # student widths
    behaviour: str = eqx.field(static=True, default="greedy")  # student acts: "greedy" | "sample"

    learning_rate: float = 1e-3  # Adam step size at the start
    learning_rate_end_factor: float = 0.0  # lr anneals linearly to lr × this at the end
    max_grad_norm: float = 10.0  # global-norm gradient clipping
    adam_eps: float = 1e-8
    temperature: float = 0.01  # τ of a Q-learner teacher's softmax(Q/τ) (Rusu et al.)
    beta_start: float = 0.5  # probability that the teacher acts, at the start …
    beta_fraction: float = 0.2  # … decaying linearly to 0 over this fraction of total_steps

    def __check_init__(self) -> None:
        for name in ("total_steps", "num_envs", "rollout_steps", "gradient_steps",
                     "buffer_size", "batch_size"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("learning_starts", self.learning_starts, minimum=0)
        check_hidden("hidden", self.hidden)
        check_one_iteration(self.total_steps, self.num_envs, self.rollout_steps)
        if self.batch_size > self.buffer_size:
            raise ConfigError(
                f"batch_size={self.batch_size} is larger than buffer_size={self.buffer_size}; "
                "allowed: batch_size ≤ buffer_size"
            )
        check_choice("behaviour", self.behaviour, BEHAVIOURS)
        check_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("learning_rate_end_factor", self.learning_rate_end_factor, 0.0, 1.0)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False)
        check_range("adam_eps", self.adam_eps, 0.0, low_inclusive=False)
        check_range("temperature", self.temperature, 0.0, low_inclusive=False)
        check_range("beta_start", self.beta_start, 0.0, 1.0)
        check_range("beta_fraction", self.beta_fraction, 0.0, 1.0)

    @property
    def steps_per_iteration(self) -> int:
        """Env steps one ``step`` collects in each task."""
        return self.num_envs * self.rollout_steps

    @property
    def num_iterations(self) -> int:
        return self.total_steps // self.steps_per_iteration

    @property
    def num_updates(self) -> int:
        """Gradient updates in a whole run (the horizon of the learning-rate schedule)."""
        first = max(1, -(-self.learning_starts // self.steps_per_iteration))
        return max(1, self.num_iterations - first + 1) * self.gradient_steps


def preset(env_id: str) -> dict[str, Any]:
    """No per-environment presets: a student meets several environments at once."""
    return {}


# ----------------------------------------------------------------------------- tasks


def teacher_kind(teacher: types.ModuleType) -> str:
    """``"q"`` or ``"policy"`` (:data:`TEACHERS`) for a teacher's learner module; a
    :class:`ConfigError` naming the teachers allowed otherwise."""
    name = teacher.__name__.rsplit(".", 1)[-1]
    if name not in TEACHERS:
        raise ConfigError(
            f"teacher={name!r} cannot be distilled; allowed: teachers trained by dqn or soft_q "
            "(π = softmax(Q/τ)), ppo or trpo (their categorical π)"
        )
    return TEACHERS[name]


class Task(eqx.Module):
    """One task: an environment and its trained teacher. ``env`` and the teacher's learner
    module are static (Python objects); the env parameters and the teacher's parameters and
    config are pytrees. Build with :func:`make_task`, which checks them."""

    env: Any = eqx.field(static=True)
    teacher: types.ModuleType = eqx.field(static=True)  # the teacher's learner module
    env_params: Any
    teacher_params: Any  # what the teacher's ``act`` takes
    teacher_config: Any


def make_task(env: Any, env_params: Any, teacher: types.ModuleType, teacher_params: Any,
              teacher_config: Any) -> Task:
    """A :class:`Task`, checked: a teacher :data:`TEACHERS` knows, on an env with discrete
    actions, whose π_E has one probability per action."""
    rollout.check_env(env)
    name = getattr(env, "name", type(env).__name__)
    if rollout.action_kind(env, env_params) != ACTION_KIND:
        raise ConfigError(
            f"env={name!r} has continuous actions; policy distillation here needs "
            "discrete-action teachers (π_E over a finite set of actions)"
        )
    kind = teacher_kind(teacher)
    task = Task(env, teacher, env_params, teacher_params, teacher_config)
    obs_shape = rollout.observation_shape(env, env_params)
    n = rollout.num_actions(env, env_params)
    nets.check_output(f"teacher on {name} ({kind})", lambda obs: teacher_probs(task, obs, 1.0),
                      [obs_shape], [(n,)])
    return task


def teacher_probs(task: Task, obs: jax.Array, temperature: float | jax.Array) -> jax.Array:
    """π_E(·|s) ``[|A_k|]`` of the task's teacher for one observation (module docstring);
    ``temperature`` is τ of a Q-learner's softmax(Q/τ)."""
    if teacher_kind(task.teacher) == "q":
        return jax.nn.softmax(task.teacher_params(obs) / temperature)
    return ppo.policy(task.teacher_params, obs, task.teacher_config).probs


def task_shapes(tasks: Sequence[Task]) -> tuple[int, tuple[int, ...]]:
    """The student's sizes: D = the largest flattened observation, and each task's |A_k|."""
    if not isinstance(tasks, tuple | list) or not tasks:
        raise ConfigError(f"tasks={tasks!r} must be a non-empty tuple of distill.Task")
    for i, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise ConfigError(f"tasks[{i}] is a {type(task).__name__}, not a distill.Task "
                              "(build one with distill.make_task)")
    obs_size = max(math.prod(rollout.observation_shape(t.env, t.env_params)) for t in tasks)
    return obs_size, tuple(rollout.num_actions(t.env, t.env_params) for t in tasks)


# ----------------------------------------------------------------------------- the student


class Student(eqx.Module):
    """The student: a network from x = [padded observation, task one-hot] ``[D + K]`` to
    logits ``[A]``, the sizes that lay its input and masks out (static), and the task that
    :func:`act` serves (static; :func:`for_task`)."""

    network: eqx.Module
    obs_size: int = eqx.field(static=True)  # D
    num_actions: tuple[int, ...] = eqx.field(static=True)  # |A_k| per task
    task: int = eqx.field(static=True, default=0)  # the task act serves

    @property
    def num_tasks(self) -> int:
        return len(self.num_actions)


def for_task(params: Student, task: int) -> Student:
    """The student acting in task ``task`` (what :func:`act` and evaluation take)."""
    if isinstance(task, bool) or not isinstance(task, int | np.integer) or not (
            0 <= task < params.num_tasks):
        raise ConfigError(f"task={task!r} is out of range; allowed: integers 0 … "
                          f"{params.num_tasks - 1} (one per teacher)")
    return dataclasses.replace(params, task=int(task))


def student_input(obs: jax.Array, task: jax.Array | int, obs_size: int, num_tasks: int
                  ) -> jax.Array:
    """x = [vec(obs) zero-padded to ``obs_size``, one-hot(task)] ``[obs_size + num_tasks]``
    for one observation of any shape."""
    flat = jnp.ravel(obs).astype(jnp.float32)
    if flat.size > obs_size:
        raise ConfigError(f"an observation of {flat.size} numbers does not fit the student's "
                          f"obs_size={obs_size}")
    padded = jnp.pad(flat, (0, obs_size - flat.size))
    return jnp.concatenate([padded, jax.nn.one_hot(task, num_tasks, dtype=jnp.float32)])


def action_mask(task: jax.Array | int, num_actions: tuple[int, ...]) -> jax.Array:
    """True for the actions of task ``task`` (a < |A_task|) ``[A]``; ``task`` may be traced."""
    counts = jnp.asarray(num_actions, jnp.int32)
    return jnp.arange(max(num_actions)) < counts[task]


def masked_logits(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """m_k(z): the logits of actions outside the task set to −∞ (probability exactly 0)."""
    return jnp.where(mask, logits, -jnp.inf)


def student_logits(params: Student, x: jax.Array, task: jax.Array | int) -> jax.Array:
    """The masked logits of π_θ(·|s, k) ``[A]`` for one encoded input x."""
    return masked_logits(params.network(x), action_mask(task, params.num_actions))


def distillation_loss(teacher_probs: jax.Array, logits: jax.Array, mask: jax.Array
                      ) -> jax.Array:
    """−Σ_{a in task} π_E(a) log π_θ(a), π_θ = softmax(m(logits)), for one state: the
    cross-entropy of Rusu et al. (2016, eq. 3) and Parisotto et al. (2016, eq. 2); equals
    H(π_E) + KL(π_E ‖ π_θ). ``teacher_probs`` is 0 outside the task; the ``where`` keeps
    0 · log 0 = 0 there (and its gradient finite)."""
    log_probs = jax.nn.log_softmax(masked_logits(logits, mask))
    return -jnp.sum(jnp.where(mask, teacher_probs * log_probs, 0.0))


def default_network(key: jax.Array, config: Config, obs_size: int,
                    num_actions: tuple[int, ...]) -> eqx.Module:
    """An MLP from ``[obs_size + K]`` to ``[max |A_k|]`` with ``config.hidden`` ReLU layers."""
    return nets.MLP(obs_size + len(num_actions), max(num_actions), config.hidden, key)


def init_student(key: jax.Array, config: Config, obs_size: int, num_actions: tuple[int, ...],
                 network: Any = None) -> Student:
    """A fresh :class:`Student`: ``network`` (an ``eqx.Module`` from ``[D + K]`` to ``[A]``, or
    a factory ``key -> module``) or the default MLP."""
    network = nets.resolve(
        network, key, lambda k: default_network(k, config, obs_size, num_actions))
    nets.check_output("network (student input → logits)", network,
                      [(obs_size + len(num_actions),)], [(max(num_actions),)])
    return Student(nets.arrays_only(network), obs_size, tuple(num_actions))


# ----------------------------------------------------------------------------- state


class Sample(eqx.Module):
    """One stored state: the student's input x ``[D + K]``, its task and π_E(·|s) ``[A]``
    (zero beyond the task's actions). Leaves ``[B, ...]`` in a batch."""

    inputs: jax.Array
    task: jax.Array  # int32
    teacher_probs: jax.Array


class Learner(eqx.Module):
    """What ``learn`` reads and writes."""

    params: Student
    opt_state: optax.OptState
    updates: jax.Array  # int32: gradient updates done so far (drives the lr schedule)


class State(eqx.Module):
    learner: Learner
    buffer: replay.ReplayBuffer  # Sample items, all tasks
    envs: tuple[rollout.EnvCarry, ...]  # one per task, num_envs each
    key: jax.Array
    env_steps: jax.Array  # int32: env steps collected so far in each task


def _optimizer(config: Config) -> optax.GradientTransformation:
    return adam_with_clipping(config.learning_rate, config.max_grad_norm, config.adam_eps)


def init(key: jax.Array, config: Config, tasks: Sequence[Task], network: Any = None) -> State:
    """A fresh distillation: the student (``network`` or the default MLP), Adam, an empty
    buffer and ``num_envs`` reset envs per task."""
    tasks = tuple(tasks) if isinstance(tasks, list) else tasks
    obs_size, num_actions = task_shapes(tasks)
    per_iteration = len(tasks) * config.steps_per_iteration
    if config.buffer_size < per_iteration:
        raise ConfigError(
            f"buffer_size={config.buffer_size} is smaller than one iteration's states "
            f"(tasks × num_envs × rollout_steps = {per_iteration}); allowed: ≥ {per_iteration}"
        )
    net_key, key, *env_keys = jax.random.split(key, 2 + len(tasks))
    params = init_student(net_key, config, obs_size, num_actions, network)
    example = Sample(jnp.zeros(obs_size + len(tasks), jnp.float32), jnp.zeros((), jnp.int32),
                     jnp.zeros(max(num_actions), jnp.float32))
    learner = Learner(params, _optimizer(config).init(eqx.filter(params, eqx.is_array)),
                      jnp.zeros((), jnp.int32))
    return State(
        learner=learner,
        buffer=replay.init(config.buffer_size, example),
        envs=tuple(rollout.reset(k, t.env, t.env_params, config.num_envs)
                   for k, t in zip(env_keys, tasks)),
        key=key,
        env_steps=jnp.zeros((), jnp.int32),
    )


# ----------------------------------------------------------------------------- loss / learn


def loss_fn(params: Student, batch: Sample) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The mean distillation loss of a batch, with diagnostics: the KL (loss minus the
    teacher's entropy) and how often the student's and teacher's argmax agree."""
    masks = jax.vmap(action_mask, in_axes=(0, None))(batch.task, params.num_actions)
    logits = jax.vmap(params.network)(batch.inputs)
    per_state = jax.vmap(distillation_loss)(batch.teacher_probs, logits, masks)
    p = batch.teacher_probs
    teacher_entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1)
    agree = jnp.argmax(masked_logits(logits, masks), -1) == jnp.argmax(p, -1)
    return jnp.mean(per_state), {"kl": jnp.mean(per_state - teacher_entropy),
                                 "agreement": jnp.mean(agree.astype(jnp.float32))}


def learn(learner: Learner, batch: Sample, config: Config
          ) -> tuple[Learner, dict[str, jax.Array]]:
    """One Adam step on ``batch`` (a :class:`Sample` with leaves ``[B, ...]``). Pure; needs
    no env and no teacher (the batch holds π_E)."""
    learning_rate = config.learning_rate * exploration.linear_schedule(
        learner.updates, 1.0, config.learning_rate_end_factor, config.num_updates)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(learner.params, batch)
    params, opt_state = adam_step(_optimizer(config), learner.params, grads,
                                  learner.opt_state, learning_rate)
    metrics = {"loss": loss, "learning_rate": learning_rate, **aux}
    return Learner(params, opt_state, learner.updates + 1), metrics


# ----------------------------------------------------------------------------- step / train


def beta(env_steps: jax.Array, config: Config) -> jax.Array:
    """The probability β that the teacher acts, after ``env_steps`` env steps per task."""
    return exploration.linear_schedule(env_steps, config.beta_start, 0.0,
                                       config.beta_fraction * config.total_steps)


def behaviour_policy(params: Student, task: Task, index: int, mix: jax.Array, config: Config
                     ) -> rollout.Policy:
    """The DAgger behaviour in task ``index``: per env, the teacher's sampled action with
    probability ``mix`` (β), else the student's (sampled, or greedy). Its ``policy_info`` is
    the :class:`Sample` to store for each observation."""
    num_tasks, width = params.num_tasks, max(params.num_actions)

    def policy(key: jax.Array, obs: jax.Array):
        n = obs.shape[0]
        student_key, teacher_key, coin_key = jax.random.split(key, 3)
        x = jax.vmap(student_input, in_axes=(0, None, None, None))(obs, index,
                                                                    params.obs_size, num_tasks)
        logits = jax.vmap(student_logits, in_axes=(None, 0, None))(params, x, index)
        probs = jax.vmap(teacher_probs, in_axes=(None, 0, None))(task, obs,
                                                                 config.temperature)
        if config.behaviour == "greedy":
            own = jnp.argmax(logits, -1)
        else:
            own = jax.random.categorical(student_key, logits, -1)
        teacher_action = jax.random.categorical(teacher_key, jnp.log(probs), -1)
        action = jnp.where(jax.random.uniform(coin_key, (n,)) < mix, teacher_action, own)
        padded = jnp.pad(probs, ((0, 0), (0, width - probs.shape[-1])))
        return action.astype(jnp.int32), Sample(x, jnp.full((n,), index, jnp.int32), padded)

    return policy


def sample_batch(buffer: replay.ReplayBuffer, key: jax.Array, config: Config) -> Sample:
    return replay.sample(buffer, key, config.batch_size)


def step(state: State, config: Config, tasks: Sequence[Task]
         ) -> tuple[State, dict[str, jax.Array]]:
    """Collect ``num_envs × rollout_steps`` env steps in every task (a Python loop: the envs
    differ), store the states with the teachers' probabilities, then K updates."""
    key, learn_key, *collect_keys = jax.random.split(state.key, 2 + len(tasks))
    mix = beta(state.env_steps, config)
    params = state.learner.params
    buffer, carries, episodes = state.buffer, [], []
    for index, (task, carry, collect_key) in enumerate(zip(tasks, state.envs, collect_keys)):
        carry, trajectory = rollout.collect(
            collect_key, task.env, task.env_params, carry,
            behaviour_policy(params, task, index, mix, config), config.rollout_steps)
        buffer = replay.add(buffer, jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]),
                                                 trajectory.policy_info))
        carries.append(carry)
        episodes.append(rollout.episode_metrics(trajectory))
    env_steps = state.env_steps + config.steps_per_iteration
    learner, learn_metrics = off_policy.updates_after_warmup(
        env_steps >= config.learning_starts,
        state.learner,
        lambda learner, key: learn(learner, sample_batch(buffer, key, config), config),
        lambda: jax.random.split(learn_key, config.gradient_steps),
    )
    metrics = {
        **jax.tree.map(lambda *per_task: jnp.stack(per_task), *episodes),  # [K] each
        **learn_metrics,
        "beta": mix,
        "env_steps": env_steps,
    }
    return State(learner, buffer, tuple(carries), key, env_steps), metrics


def train(key: jax.Array, config: Config, tasks: Sequence[Task], network: Any = None
          ) -> tuple[State, dict[str, jax.Array]]:
    """A whole distillation: ``init`` then ``lax.scan`` of ``step``; metrics stacked per
    iteration (the episode statistics ``[iterations, K]``, one column per task)."""
    state = init(key, config, tasks, network)
    return jax.lax.scan(lambda s, _: step(s, config, tasks), state,
                        length=config.num_iterations)


def act(params: Student, obs: jax.Array, key: jax.Array, config: Config,
        deterministic: bool = False) -> jax.Array:
    """An action in task ``params.task`` (:func:`for_task`) for one of its observations: the
    argmax of π_θ(·|s, k), or a sample; always one of the task's own actions."""
    x = student_input(obs, params.task, params.obs_size, params.num_tasks)
    logits = student_logits(params, x, params.task)
    return jnp.argmax(logits) if deterministic else jax.random.categorical(key, logits)


# ----------------------------------------------------------------------------- evaluation


class _Uniform:
    """Stands in for a learner in ``minirl.evaluation``: uniform actions over ``params``
    (the task's action count), the random baseline."""

    @staticmethod
    def act(params: jax.Array, obs: jax.Array, key: jax.Array, config: Any,
            deterministic: bool = False) -> jax.Array:
        return jax.random.randint(key, (), 0, params)


UNIFORM = _Uniform()


def student_returns(key: jax.Array, params: Student, config: Config, tasks: Sequence[Task],
                    episodes: int) -> jax.Array:
    """Greedy returns of the student ``[K, episodes]`` (``minirl.evaluation.returns`` per
    task, through :func:`act`). Pure and jittable; vmap it over students."""
    keys = jax.random.split(key, len(tasks))
    return jnp.stack([
        evaluation.returns(k, sys.modules[__name__], for_task(params, i), config, t.env,
                           t.env_params, episodes)
        for i, (k, t) in enumerate(zip(keys, tasks))])


def teacher_returns(key: jax.Array, tasks: Sequence[Task], episodes: int) -> jax.Array:
    """Greedy returns of each task's teacher ``[K, episodes]`` (the teacher's own ``act``)."""
    keys = jax.random.split(key, len(tasks))
    return jnp.stack([
        evaluation.returns(k, t.teacher, t.teacher_params, t.teacher_config, t.env,
                           t.env_params, episodes)
        for k, t in zip(keys, tasks)])


def random_returns(key: jax.Array, tasks: Sequence[Task], episodes: int) -> jax.Array:
    """Returns of uniformly random actions over each task's actions ``[K, episodes]``."""
    keys = jax.random.split(key, len(tasks))
    return jnp.stack([
        evaluation.returns(k, UNIFORM, jnp.asarray(rollout.num_actions(t.env, t.env_params)),
                           None, t.env, t.env_params, episodes)
        for k, t in zip(keys, tasks)])


# ============================================================================= host level
#
# Teachers from run directories, and a run: chunks of the jitted scan, reports between
# chunks, an atomic student checkpoint, and the files. Host code, like minirl.runner.

CHECKPOINT = "checkpoint.npz"
DEFAULT_EPISODES = 32


@dataclasses.dataclass
class Teacher:
    """A teacher loaded from a run directory: the task, and what the summary records."""

    task: Task
    run_dir: str
    algo: str
    env_id: str
    env_overrides: dict[str, Any]
    seed: int  # the seed of the run whose policy teaches (the run's first seed + index)
    final_return: float  # that seed's final training return, as the run reported it


def _algorithms() -> dict[str, types.ModuleType]:
    from .algos import ALGORITHMS
    from .model_based import LEARNERS

    return {**ALGORITHMS, **LEARNERS}


def load_teacher(run_dir: str, seed: int | None = None) -> Teacher:
    """The teacher trained in ``run_dir`` (a directory ``minirl train`` wrote): its env rebuilt
    from the recorded id and overrides, and the policy of seed ``seed`` (an index into the
    run's seeds), by default the seed with the best final training return.

    :class:`ConfigError` for a missing directory or checkpoint, a run on a user's own env
    (no id to rebuild it from), a learner that cannot teach, or continuous actions;
    ``CheckpointError`` for a corrupt checkpoint."""
    from . import envs, runner

    if not os.path.isdir(run_dir):
        raise ConfigError(f"teacher run directory {run_dir!r} does not exist")
    if not os.path.exists(os.path.join(run_dir, runner.CHECKPOINT)):
        raise ConfigError(f"{run_dir!r} holds no {runner.CHECKPOINT}: give run directories "
                          "written by `minirl train` (one per teacher)")
    meta = runner.read_metadata(run_dir)
    name = meta["algo"]
    if name == "distill":
        raise ConfigError(f"{run_dir!r} holds a distilled student, not a teacher run")
    algorithms = _algorithms()
    if name not in algorithms:
        raise ConfigError(f"{run_dir!r} holds a run of an unknown algorithm {name!r}")
    algo = algorithms[name]
    if meta.get("env") is None:
        raise ConfigError(
            f"{run_dir!r} was trained on a user's environment ({meta.get('env_name')}), which "
            "cannot be rebuilt from the run directory; build the task in Python "
            "(distill.make_task) with the environment"
        )
    env, env_params = envs.make(meta["env"], **meta.get("env_overrides", {}))
    if rollout.action_kind(env, env_params) != ACTION_KIND:
        raise ConfigError(
            f"teacher {run_dir!r} ({name} on {meta['env']}) has continuous actions; policy "
            "distillation here needs discrete-action teachers (π_E over a finite set of "
            "actions)"
        )
    teacher_kind(algo)
    run, state = runner.load(run_dir, algo, env, env_params)
    finals = results.final_returns(run.history, run.seeds)
    if seed is None:
        scores = np.nan_to_num(np.asarray(finals, np.float64), nan=-np.inf)
        seed = int(np.argmax(scores))
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < run.seeds:
        raise ConfigError(f"teacher seed={seed!r} is out of range for {run_dir!r}; allowed: "
                          f"0 … {run.seeds - 1} (an index into its {run.seeds} seeds)")
    params = jax.tree.map(lambda x: x[seed], state.learner.params)
    task = make_task(env, env_params, algo, params, run.config)
    return Teacher(task, run_dir, name, meta["env"], dict(meta.get("env_overrides", {})),
                   run.seed + seed, float(finals[seed]))


@dataclasses.dataclass
class Run:
    """A distillation run as it goes: what the progress line reads (``history``,
    ``wall_seconds``, ``seeds``, ``total_steps``, ``finished``), the task names, and at the end
    the student's state and the summary."""

    config: Config
    seed: int
    chunks: list[int]
    task_names: list[str]
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    wall_seconds: float = 0.0
    seeds: int = 1
    state: Any = None
    summary: dict[str, Any] | None = None

    @property
    def total_steps(self) -> int:
        return int(self.config.total_steps)

    @property
    def finished(self) -> bool:
        return len(self.history) == len(self.chunks)


def _chunk_row(metrics: dict[str, jax.Array]) -> dict[str, Any]:
    """One chunk's metrics (leaves ``[chunk, ...]``) for the history: per task the episodes
    completed and their summed return; the last env-step count; means of the rest."""
    row = {name: np.asarray(metrics[name]).sum(axis=0).tolist() for name in results.POOLED}
    row["env_steps"] = int(np.asarray(metrics["env_steps"])[-1])
    for name, value in metrics.items():
        if name not in row:
            row[name] = float(np.mean(np.asarray(value)))
    return row


def recent_returns(history: list[dict[str, Any]], num_tasks: int) -> list[float]:
    """Per task, the mean return of the training episodes of the last 10% of chunks
    (``minirl.results.final_returns``, a task in each slot)."""
    return results.final_returns(history, num_tasks)


def student_template(config: Config, obs_size: int, num_actions: Sequence[int]) -> Student:
    """The shapes of a default student (``jax.eval_shape``): what a checkpoint loads into."""
    return jax.eval_shape(lambda key: init_student(key, config, obs_size, tuple(num_actions)),
                          jax.random.PRNGKey(0))


def run(
    teacher_dirs: Sequence[str],
    out_dir: str | None,
    config: Config,
    *,
    seed: int = 0,
    teacher_seeds: Sequence[int | None] | None = None,
    episodes: int = DEFAULT_EPISODES,
    report: Callable[[Run], None] | None = None,
    target_chunks: int = 50,
) -> Run:
    """Distil the teachers trained in ``teacher_dirs`` into one student (seed ``seed``).

    Trains in jitted chunks of iterations; after each chunk the student's parameters are
    checkpointed atomically (``out_dir/checkpoint.npz``) and ``report(run)`` is called (the
    command line's progress line). At the end, ``episodes`` greedy episodes of the teacher,
    the student and a uniformly random policy in each task (``minirl.evaluation``), and, with
    ``out_dir``, ``summary.json`` (per task: env, teacher_return, student_return,
    random_return and the normalised score (student − random) / (teacher − random)),
    ``metrics.csv`` and ``curve.png``. Returns the :class:`Run` (``run.summary``)."""
    from .runner import chunk_plan

    check_positive_int("episodes", episodes)
    check_positive_int("target_chunks", target_chunks)
    if not isinstance(teacher_dirs, list | tuple) or not teacher_dirs:
        raise ConfigError("give at least one teacher run directory")
    if out_dir is not None and os.path.exists(os.path.join(out_dir, CHECKPOINT)):
        raise ConfigError(f"{out_dir} already holds a run; choose another output directory")
    teacher_seeds = list(teacher_seeds or [None] * len(teacher_dirs))
    if len(teacher_seeds) != len(teacher_dirs):
        raise ConfigError(f"teacher_seeds has {len(teacher_seeds)} entries for "
                          f"{len(teacher_dirs)} teachers")
    teachers = [load_teacher(d, s) for d, s in zip(teacher_dirs, teacher_seeds)]
    tasks = tuple(t.task for t in teachers)
    obs_size, num_actions = task_shapes(tasks)
    key = jax.random.PRNGKey(seed)
    record = Run(config, seed, chunk_plan(config.num_iterations, target_chunks),
                 [t.env_id for t in teachers])
    meta = {
        "algo": "distill", "config": configs.to_json(config), "seeds": 1, "seed": seed,
        "chunks": record.chunks, "obs_size": obs_size, "num_actions": list(num_actions),
        "tasks": [{"env": t.env_id, "env_overrides": t.env_overrides, "teacher_run": t.run_dir,
                   "teacher_algo": t.algo, "teacher_seed": t.seed} for t in teachers],
    }
    start = time.perf_counter()
    state = jax.jit(init)(key, config, tasks)
    advance = jax.jit(_advance, static_argnums=3, donate_argnums=0)
    if report is not None:
        report(record)
    for length in record.chunks:
        state, metrics = advance(state, config, tasks, length)
        record.history.append(_chunk_row(metrics))
        record.wall_seconds = time.perf_counter() - start
        if out_dir is not None:
            checkpoint.save(os.path.join(out_dir, CHECKPOINT), state.learner.params,
                            {**meta, "history": record.history})
        if report is not None:
            report(record)
    record.state = state
    teacher_key, student_key, random_key = jax.random.split(evaluation.root(key), 3)
    teacher = jax.jit(teacher_returns, static_argnums=2)(teacher_key, tasks, episodes)
    student = jax.jit(student_returns, static_argnums=4)(student_key, state.learner.params,
                                                          config, tasks, episodes)
    random = jax.jit(random_returns, static_argnums=2)(random_key, tasks, episodes)
    record.summary = _summary(record, teachers, *(np.asarray(r).mean(axis=1)
                                                  for r in (teacher, student, random)),
                              episodes, out_dir)
    if out_dir is not None:
        results.write_json(os.path.join(out_dir, "summary.json"), record.summary)
        write_metrics_csv(os.path.join(out_dir, "metrics.csv"), record)
        plot_curves(record, os.path.join(out_dir, "curve.png"))
    return record


def _advance(state: State, config: Config, tasks: tuple[Task, ...], length: int):
    return jax.lax.scan(lambda s, _: step(s, config, tasks), state, length=length)


def normalised(student: float, teacher: float, random: float) -> float:
    """(student − random) / (teacher − random): 1 = as good as the teacher, 0 = random."""
    gap = teacher - random
    return float((student - random) / gap) if gap != 0 else float("nan")


def _summary(record: Run, teachers: list[Teacher], teacher: np.ndarray, student: np.ndarray,
             random: np.ndarray, episodes: int, out_dir: str | None) -> dict[str, Any]:
    steps = record.history[-1]["env_steps"] if record.history else 0
    recent = recent_returns(record.history, len(teachers))
    tasks = [{
        "env": t.env_id,
        "env_params": t.env_overrides,
        "teacher_run": t.run_dir,
        "teacher_algo": t.algo,
        "teacher_seed": t.seed,
        "teacher_return": float(teacher[i]),
        "student_return": float(student[i]),
        "random_return": float(random[i]),
        "normalised_return": results.json_float(normalised(student[i], teacher[i], random[i])),
        "final_training_return": results.json_float(recent[i]),
    } for i, t in enumerate(teachers)]
    return {
        "algo": "distill",
        "tasks": tasks,
        "steps": steps,  # env steps per task
        "seed": record.seed,
        "eval_episodes": episodes,
        "wall_seconds": record.wall_seconds,
        "student_checkpoint": None if out_dir is None else os.path.join(out_dir, CHECKPOINT),
        "config": configs.to_json(record.config),
    }


def write_metrics_csv(path: str, record: Run) -> None:
    """One row per chunk and task: env steps, episodes, their mean training return, and the
    learner's diagnostics of the chunk."""
    import csv

    extra = [n for n in ("loss", "kl", "agreement", "beta") if record.history
             and n in record.history[0]]

    def write(f):
        writer = csv.writer(f)
        writer.writerow(["chunk", "task", "env", "env_steps", "episodes", "mean_return",
                         *extra])
        for c, row in enumerate(record.history):
            for k, name in enumerate(record.task_names):
                n = row["episodes"][k]
                mean = row["episode_return_sum"][k] / n if n else float("nan")
                writer.writerow([c, k, name, row["env_steps"], int(n),
                                 "" if not n else f"{mean:.6g}",
                                 *(f"{row[e]:.6g}" for e in extra)])

    results.atomic_write(path, write)


def plot_curves(record: Run, path: str) -> None:
    """One panel per task: the student's training return per chunk against env steps, with
    the teacher's and the random policy's greedy returns and the student's final greedy
    return."""
    plt = results.pyplot()
    num_tasks = len(record.task_names)
    fig, axes = plt.subplots(1, num_tasks, figsize=(4.2 * num_tasks, 3.6), dpi=120,
                             squeeze=False)
    steps = np.array([row["env_steps"] for row in record.history], np.float64)
    for k, ax in enumerate(axes[0]):
        counts = np.array([row["episodes"][k] for row in record.history], np.float64)
        sums = np.array([row["episode_return_sum"][k] for row in record.history], np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            curve = np.where(counts > 0, sums / counts, np.nan)
        shown = np.isfinite(curve)  # chunks in which no episode ended have no return
        ax.plot(steps[shown], curve[shown], lw=1.6, label="student, training episodes")
        if record.summary is not None:
            entry = record.summary["tasks"][k]
            ax.axhline(entry["teacher_return"], color="tab:green", ls="--", label="teacher")
            ax.axhline(entry["random_return"], color="tab:gray", ls=":", label="random")
            ax.plot([steps[-1]], [entry["student_return"]], "o", color="tab:red",
                    label="student, greedy")
        ax.set_title(record.task_names[k])
        ax.set_xlabel("environment steps (per task)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("episode return")
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.suptitle(f"minirl distill: {num_tasks} teachers → one student")
    fig.tight_layout()
    results.save_figure(fig, path)


def evaluate_run(out_dir: str, episodes: int, seed: int = 0
                 ) -> tuple[dict[str, Any], np.ndarray]:
    """The student checkpointed in ``out_dir`` (by :func:`run`) and its greedy returns
    ``[K, episodes]`` in each task's env (rebuilt from the recorded ids): what ``minirl eval``
    prints for a distilled student. Needs no teacher."""
    from . import envs

    check_positive_int("episodes", episodes)
    path = os.path.join(out_dir, CHECKPOINT)
    meta = checkpoint.read_metadata(path)
    if meta.get("algo") != "distill":
        raise ConfigError(f"{out_dir} holds a {meta.get('algo')} run, not a distilled student")
    try:
        config = configs.from_json(Config, meta["config"])
    except ConfigError as error:
        raise checkpoint.CheckpointError(f"checkpoint {path}: {error}") from None
    params, _ = checkpoint.load(path, student_template(config, meta["obs_size"],
                                                       meta["num_actions"]))
    keys = jax.random.split(jax.random.PRNGKey(seed), len(meta["tasks"]))
    returns = []
    for i, (key, entry) in enumerate(zip(keys, meta["tasks"])):
        env, env_params = envs.make(entry["env"], **entry.get("env_overrides", {}))
        play = jax.jit(evaluation.returns, static_argnums=(1, 4, 6))
        returns.append(np.asarray(play(key, sys.modules[__name__], for_task(params, i), config,
                                       env, env_params, episodes)))
    return meta, np.stack(returns)
