"""Greedy evaluation: E episodes of a learner's deterministic policy, as one pure function.

The training returns of an off-policy learner are those of its noisy behaviour policy;
rl-baselines3-zoo and CleanRL report returns of the deterministic policy on separate
episodes. :func:`returns` plays ``E`` fresh episodes at once (one env each, vmapped) with
``act(params, obs, key, config, deterministic=True)`` until every episode has ended, and
returns each episode's return. One function serves every caller: ``minirl.runner.evaluate``
(a trained run's greedy returns), the evaluation every N env steps inside the training
program (:class:`Evaluator`, called by ``minirl.programs.advance``) and the greedy episode
``minirl eval --gif`` draws (:func:`trajectory`).

**Learner hooks**, honoured when a learner module defines them (PlaNet does):

- ``acting_env(env, config) -> env``: the env as the learner acts in it (PlaNet repeats each
  action ``action_repeat`` times); the default is the env itself.
- a policy with memory: ``initial_memory(params, obs, config) -> memory`` and
  ``act_with_memory(params, memory, obs, first, key, config, deterministic=False) ->
  (action, memory)``, where ``first`` is True when ``obs`` is the first observation of an
  episode (the memory restarts from it). Evaluation carries each env's memory through its
  episode; a learner without these hooks is called through ``act``.

**Keys.** Evaluation never draws from a training state's key: a run's evaluations descend
from :func:`root` (its run key folded with a constant), the i-th evaluation from
``fold_in(root, i)`` (i = iterations done), so switching evaluation on leaves the training
bits unchanged and a resumed run evaluates with the same keys as an uninterrupted one.
"""

import dataclasses
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

EVAL_SALT = 0x65564C  # folded into a run's key to start its evaluation keys
DEFAULT_MAX_STEPS = 1000  # the step cap for an env without ``max_steps_in_episode``


def root(run_key: jax.Array) -> jax.Array:
    """The root of a run's evaluation keys: disjoint from every key training derives from
    ``run_key`` by splitting."""
    return jax.random.fold_in(run_key, EVAL_SALT)


def acting_env(algo: types.ModuleType, env: Any, config: Any) -> Any:
    """The env as the learner acts in it (its ``acting_env`` hook), or ``env``."""
    hook = getattr(algo, "acting_env", None)
    return env if hook is None else hook(env, config)


class Policy(NamedTuple):
    """How a learner acts greedily in one env: ``initial(obs) -> memory`` and
    ``act(memory, obs, first, key) -> (action, memory)``."""

    initial: Callable[[jax.Array], Any]
    act: Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, Any]]


def greedy_policy(algo: types.ModuleType, params: Any, config: Any) -> Policy:
    """The deterministic policy of ``params``: through ``act_with_memory`` where the learner
    has a memory (``initial_memory``), otherwise through ``act`` with no memory."""
    if hasattr(algo, "act_with_memory") and hasattr(algo, "initial_memory"):
        return Policy(
            lambda obs: algo.initial_memory(params, obs, config),
            lambda memory, obs, first, key: algo.act_with_memory(
                params, memory, obs, first, key, config, deterministic=True),
        )
    return Policy(
        lambda obs: (),
        lambda memory, obs, first, key: (algo.act(params, obs, key, config,
                                                  deterministic=True), memory),
    )


class Episodes(eqx.Module):
    """E episodes in progress, one per env (leaves ``[E, ...]``): the env states, the current
    observations, each policy's memory, whether the observation is an episode's first, the
    return and length so far, and whether the episode is still running."""

    env_state: Any
    obs: jax.Array
    memory: Any
    first: jax.Array
    returns: jax.Array
    lengths: jax.Array
    alive: jax.Array


def start(key: jax.Array, policy: Policy, env: Any, env_params: Any, num_episodes: int
          ) -> Episodes:
    """Reset ``num_episodes`` envs and the policy's memory."""
    keys = jax.random.split(key, num_episodes)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(keys, env_params)
    return Episodes(env_state, obs, jax.vmap(policy.initial)(obs),
                    jnp.ones(num_episodes, bool), jnp.zeros(num_episodes, jnp.float32),
                    jnp.zeros(num_episodes, jnp.int32), jnp.ones(num_episodes, bool))


def step(episodes: Episodes, key: jax.Array, policy: Policy, env: Any, env_params: Any
         ) -> tuple[Episodes, jax.Array]:
    """One action in every env. Rewards count only while an episode is alive: an episode
    ends at its first ``terminated | truncated`` (gymnax then resets the env, and what
    follows is ignored). Returns the episodes and the rewards of this step ``[E]``."""
    n = episodes.obs.shape[0]
    act_key, env_key = jax.random.split(key)
    action, memory = jax.vmap(policy.act)(episodes.memory, episodes.obs, episodes.first,
                                          jax.random.split(act_key, n))
    obs, env_state, reward, terminated, truncated, _ = jax.vmap(
        env.step, in_axes=(0, 0, 0, None)
    )(jax.random.split(env_key, n), episodes.env_state, action, env_params)
    reward = jnp.where(episodes.alive, reward.astype(jnp.float32), 0.0)
    done = terminated.astype(bool) | truncated.astype(bool)
    return Episodes(
        env_state, obs, memory, done, episodes.returns + reward,
        episodes.lengths + episodes.alive.astype(jnp.int32), episodes.alive & ~done,
    ), reward


def max_steps_of(env_params: Any, max_steps: int | None = None) -> Any:
    """The step cap: ``max_steps``, else the env's ``max_steps_in_episode`` (traced where the
    env parameters are), else :data:`DEFAULT_MAX_STEPS`."""
    if max_steps is not None:
        return max_steps
    return getattr(env_params, "max_steps_in_episode", DEFAULT_MAX_STEPS)


def returns(
    key: jax.Array,
    algo: types.ModuleType,
    params: Any,
    config: Any,
    env: Any,
    env_params: Any,
    num_episodes: int,
    max_steps: int | None = None,
) -> jax.Array:
    """The returns ``[num_episodes]`` of the greedy policy of ``params`` on fresh episodes,
    in the env as the learner acts in it (:func:`acting_env`).

    A ``lax.while_loop`` runs until every episode has ended or ``max_steps`` actions (default:
    the env's episode limit, which bounds the actions of any acting env as each action takes
    at least one env step); an episode still running at the cap counts its return so far.
    Pure and jittable; vmap it over runs."""
    env = acting_env(algo, env, config)
    policy = greedy_policy(algo, params, config)
    reset_key, run_key = jax.random.split(key)
    cap = max_steps_of(env_params, max_steps)

    def running(carry):
        t, episodes = carry
        return jnp.any(episodes.alive) & (t < cap)

    def body(carry):
        t, episodes = carry
        episodes, _ = step(episodes, jax.random.fold_in(run_key, t), policy, env, env_params)
        return t + 1, episodes

    first = start(reset_key, policy, env, env_params, num_episodes)
    _, last = jax.lax.while_loop(running, body, (jnp.zeros((), jnp.int32), first))
    return last.returns


def trajectory(
    key: jax.Array, algo: types.ModuleType, params: Any, config: Any, env: Any,
    env_params: Any, max_steps: int,
) -> tuple[Any, jax.Array, jax.Array]:
    """One greedy episode, step by step, with the same keys and steps as :func:`returns`
    (one episode): the env states before each action (leaves ``[max_steps, ...]``), the
    rewards ``[max_steps]`` and whether the episode was still running ``[max_steps]``."""
    env = acting_env(algo, env, config)
    policy = greedy_policy(algo, params, config)
    reset_key, run_key = jax.random.split(key)

    def body(episodes, t):
        before = jax.tree.map(lambda x: x[0], episodes.env_state)
        alive = episodes.alive[0]
        episodes, reward = step(episodes, jax.random.fold_in(run_key, t), policy, env,
                                env_params)
        return episodes, (before, reward[0], alive)

    first = start(reset_key, policy, env, env_params, 1)
    _, (states, rewards, alive) = jax.lax.scan(body, first, jnp.arange(max_steps))
    return states, rewards, alive


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """The evaluation inside a training program: ``evaluator(state, config, env, env_params,
    key) -> returns [episodes]`` of the greedy policy of ``state.learner.params``.

    A frozen dataclass (hashed by value), so that a compiled chunk program that contains it
    is found again in the cache by the next run with the same algorithm and episodes."""

    algo: types.ModuleType
    episodes: int
    max_steps: int | None = None

    def __call__(self, state: Any, config: Any, env: Any, env_params: Any, key: jax.Array
                 ) -> jax.Array:
        return returns(key, self.algo, state.learner.params, config, env, env_params,
                       self.episodes, self.max_steps)
