"""A learned dynamics model behind the environment interface (gymnax 1.x).

``ModelEnv(env, model_config)`` is an environment whose parameters carry a trained
``dynamics.Model``, so planners, ``minirl.core.rollout`` and later MBPO use it as they use
a gymnax env (Sutton, 1991, "Dyna"; Janner et al., 2019, "When to trust your model: MBPO"):

    reset:  s_0 = the real env's initial observation (its reset distribution)
    step:   s_{t+1} = s_t + Δ̂,  Δ̂ ~ p_θj(· | s_t, a_t) from a member j drawn uniformly
            per step (a BNN: one weight draw w ~ q(w) per step); a probabilistic model adds
            its Gaussian noise
            r_t = known r(s_t, a_t, s_{t+1}) (``rewards.KNOWN``) or the learned reward head
            terminated = known termination (none for Pendulum), truncated = t+1 ≥ T
            (the real env's ``max_steps_in_episode``), auto-reset with
            ``info["final_observation"]`` as gymnax 1.x does.

The state is ``ModelEnvState(obs, time)``; ``step_env``/``is_truncated`` exist for code that
steps without resetting (``minirl.planning.mpc``). ``ModelEnvParams(model, env_params)``
holds the model and the real env's parameters (for its reset and known reward). The wrapper
hashes and compares by value (env, the config's static fields, reward), like
``minirl.envs.PixelObservations``, so it can be a static argument of ``jit``.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ..core.config import check_choice
from . import dynamics, rewards


class ModelEnvState(eqx.Module):
    obs: jax.Array  # [d]
    time: jax.Array  # int32: steps since reset


class ModelEnvParams(eqx.Module):
    model: dynamics.Model
    env_params: Any  # the real env's parameters


class ModelEnv:
    """A learned model as a gymnax-style env (module docstring)."""

    def __init__(self, env: Any, model_config: dynamics.ModelConfig, reward: str = "known"):
        check_choice("reward", reward, ("known", "learned"))
        if reward == "learned" and not model_config.learn_reward:
            check_choice("model_config.learn_reward (with reward='learned')",
                         model_config.learn_reward, (True,))
        self.env, self.model_config, self.reward = env, model_config, reward
        known = rewards.known(env) if reward == "known" else rewards.KNOWN.get(
            rewards.env_name(env))
        self._reward_fn = known.reward if reward == "known" else None
        self._done_fn = (known.terminated if known is not None and known.terminated
                         else rewards.never_terminated)
        self.name = f"{rewards.env_name(env)}-model"

    def _key(self) -> tuple:
        c = self.model_config
        return (ModelEnv, self.env, c.kind, c.ensemble_size, c.hidden, c.activation,
                c.learn_reward, self.reward)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ModelEnv) and self._key() == other._key()

    def params(self, model: dynamics.Model, env_params: Any) -> ModelEnvParams:
        return ModelEnvParams(model, env_params)

    def reset(self, key: jax.Array, params: ModelEnvParams) -> tuple[jax.Array, ModelEnvState]:
        obs, _ = self.env.reset(key, params.env_params)
        obs = jnp.asarray(obs, jnp.float32)
        return obs, ModelEnvState(obs, jnp.zeros((), jnp.int32))

    def _member(self, key: jax.Array, model: dynamics.Model) -> dynamics.Network:
        config = self.model_config
        if config.kind == "bnn":
            return jax.tree.map(lambda x: x[0], dynamics.sample_members(key, model, 1, config))
        j = jax.random.randint(key, (), 0, config.ensemble_size)
        return jax.tree.map(lambda x: x[j], model.members)

    def step_env(self, key, state: ModelEnvState, action, params: ModelEnvParams):
        member_key, noise_key = jax.random.split(key)
        model = params.model
        action = jnp.reshape(jnp.asarray(action, jnp.float32), (-1,))
        next_obs, learned = dynamics.predict(self._member(member_key, model), model, state.obs,
                                             action, noise_key, self.model_config, sample=True)
        if self._reward_fn is not None:
            reward = self._reward_fn(state.obs, action, next_obs, params.env_params)
        else:
            reward = learned
        terminated = self._done_fn(state.obs, action, next_obs, params.env_params)
        next_state = ModelEnvState(next_obs, state.time + 1)
        return next_obs, next_state, jnp.asarray(reward, jnp.float32), terminated, {}

    def is_truncated(self, state: ModelEnvState, params: ModelEnvParams) -> jax.Array:
        limit = getattr(params.env_params, "max_steps_in_episode", None)
        if limit is None:
            return jnp.array(False)
        return state.time >= limit

    def step(self, key, state: ModelEnvState, action, params: ModelEnvParams):
        step_key, reset_key = jax.random.split(key)
        final_obs, next_state, reward, terminated, info = self.step_env(step_key, state, action,
                                                                        params)
        truncated = self.is_truncated(next_state, params)
        done = jnp.logical_or(terminated, truncated)
        reset_obs, reset_state = self.reset(reset_key, params)
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), reset_state, next_state)
        obs = jax.lax.select(done, reset_obs, final_obs)
        return obs, state, reward, terminated, truncated, {**info, "final_observation": final_obs}

    def observation_space(self, params: ModelEnvParams) -> Any:
        return self.env.observation_space(params.env_params)

    def action_space(self, params: ModelEnvParams | None = None) -> Any:
        return self.env.action_space(None if params is None else params.env_params)
