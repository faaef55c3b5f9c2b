"""Greedy evaluation (``minirl.evaluation``): known returns of hand-made policies on a probe
env, the learner hooks (``acting_env``, a policy with memory), the evaluation inside the
training program, and that switching it on leaves training's bits unchanged."""

import types

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

from minirl import envs, evaluation, results, runner
from minirl.algos import dqn
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(300)


# ----------------------------------------------------------------------------- a probe env


class ProbeParams(eqx.Module):
    max_steps_in_episode: int = 7


class ProbeState(eqx.Module):
    t: jax.Array


class Parity:
    """Step t pays 1 for action t mod 2 and ends the episode (terminated) for the other;
    an episode is truncated after ``max_steps_in_episode`` steps. The observation is the
    parity of t, or zeros with ``blind`` (then only a memory can tell). gymnax 1.x's
    interface: ``step`` resets automatically and reports ``final_observation``."""

    def __init__(self, blind: bool = False):
        self.blind = blind

    def _obs(self, t):
        return jnp.zeros(1) if self.blind else jnp.array([t % 2], jnp.float32)

    def reset(self, key, params):
        state = ProbeState(jnp.zeros((), jnp.int32))
        return self._obs(state.t), state

    def step(self, key, state, action, params):
        right = action == state.t % 2
        reward = right.astype(jnp.float32)
        t = state.t + 1
        terminated = ~right
        truncated = right & (t >= params.max_steps_in_episode)
        done = terminated | truncated
        final = self._obs(t)
        t = jnp.where(done, 0, t)
        return self._obs(t), ProbeState(t), reward, terminated, truncated, {
            "final_observation": final}

    def observation_space(self, params):
        return spaces.Box(0.0, 1.0, (1,))

    def action_space(self, params):
        return spaces.Discrete(2)


class Fixed(eqx.Module):
    """Parameters of a hand-made policy: ``alternate`` (1: play t mod 2 from the
    observation; 0: always ``action``)."""

    alternate: jax.Array
    action: jax.Array


def fixed_policy_module(name="fixed"):
    """A learner module with only what evaluation reads: ``act``."""
    module = types.ModuleType(name)

    def act(params, obs, key, config, deterministic=False):
        greedy = jnp.where(params.alternate > 0, obs[0].astype(jnp.int32), params.action)
        random = jax.random.bernoulli(key).astype(jnp.int32)
        return greedy if deterministic else random

    module.act = act
    return module


ALTERNATE = Fixed(jnp.array(1), jnp.array(0))
ALWAYS_ZERO = Fixed(jnp.array(0), jnp.array(0))
ALWAYS_ONE = Fixed(jnp.array(0), jnp.array(1))


@pytest.mark.parametrize(
    "params, limit, want",
    [
        (ALTERNATE, 7, 7.0),  # right every step until the time limit
        (ALTERNATE, 3, 3.0),
        (ALWAYS_ZERO, 7, 1.0),  # right at t = 0, wrong (terminated) at t = 1
        (ALWAYS_ONE, 7, 0.0),  # wrong at once
    ],
)
def test_known_returns_of_hand_made_policies(params, limit, want):
    returns = evaluation.returns(jax.random.PRNGKey(0), fixed_policy_module(), params, None,
                                 Parity(), ProbeParams(limit), 5)
    np.testing.assert_array_equal(np.asarray(returns), np.full(5, want, np.float32))


def test_episode_limits_are_traced_so_a_vmap_over_env_parameters_evaluates_each():
    limits = ProbeParams(jnp.array([2, 5, 9]))
    fn = jax.jit(jax.vmap(lambda p: evaluation.returns(
        jax.random.PRNGKey(0), fixed_policy_module(), ALTERNATE, None, Parity(), p, 2)))
    np.testing.assert_array_equal(np.asarray(fn(limits)), [[2, 2], [5, 5], [9, 9]])


def test_runner_evaluate_plays_each_seeds_policy():
    params = jax.tree.map(lambda *x: jnp.stack(x), ALTERNATE, ALWAYS_ZERO, ALWAYS_ONE)
    got = runner.evaluate(fixed_policy_module(), None, Parity(), ProbeParams(6), params, 4)
    np.testing.assert_array_equal(got, np.array([[6.0] * 4, [1.0] * 4, [0.0] * 4]))


def test_the_step_cap_counts_an_unfinished_episode_so_far():
    returns = evaluation.returns(jax.random.PRNGKey(0), fixed_policy_module(), ALTERNATE, None,
                                 Parity(), ProbeParams(50), 3, max_steps=4)
    np.testing.assert_array_equal(np.asarray(returns), [4.0, 4.0, 4.0])


# ----------------------------------------------------------------------------- hooks


class Scaled:
    """The env as a learner acts in it: the same env, rewards × 10 (stands in for PlaNet's
    action repeat: the hook changes what an action does)."""

    def __init__(self, env):
        self.env = env

    def reset(self, key, params):
        return self.env.reset(key, params)

    def step(self, key, state, action, params):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action,
                                                                         params)
        return obs, state, 10.0 * reward, terminated, truncated, info

    def observation_space(self, params):
        return self.env.observation_space(params)

    def action_space(self, params):
        return self.env.action_space(params)


def memory_module():
    """A learner whose policy needs its memory: the blind probe shows zeros, so only a step
    counter (restarted at each episode's first observation) gives t mod 2. ``act`` alone
    (no memory) always plays 0."""
    module = fixed_policy_module("memory")

    def initial_memory(params, obs, config):
        return jnp.zeros((), jnp.int32)

    def act_with_memory(params, memory, obs, first, key, config, deterministic=False):
        memory = jnp.where(first, 0, memory)
        return memory % 2, memory + 1

    module.acting_env = lambda env, config: Scaled(env)
    module.initial_memory = initial_memory
    module.act_with_memory = act_with_memory
    return module


def test_a_policy_with_memory_and_an_acting_env_are_honoured():
    returns = evaluation.returns(jax.random.PRNGKey(1), memory_module(), ALWAYS_ZERO, None,
                                 Parity(blind=True), ProbeParams(8), 3)
    np.testing.assert_array_equal(np.asarray(returns), [80.0, 80.0, 80.0])
    # without the hooks the same parameters play 0 always: 1 step right, then wrong
    plain = evaluation.returns(jax.random.PRNGKey(1), fixed_policy_module(), ALWAYS_ZERO, None,
                               Parity(blind=True), ProbeParams(8), 3)
    np.testing.assert_array_equal(np.asarray(plain), [1.0, 1.0, 1.0])


def test_the_memory_restarts_at_each_episodes_first_observation():
    """Two episodes back to back in one env (the trajectory runs past the first end): the
    second is played right only if ``first`` restarted the counter."""
    module = memory_module()
    states, rewards, alive = evaluation.trajectory(
        jax.random.PRNGKey(0), module, ALWAYS_ZERO, None, Parity(blind=True), ProbeParams(3),
        7)
    # episode 1: t = 0, 1, 2 (truncated); the env resets; episode 2 plays on (not counted)
    np.testing.assert_array_equal(np.asarray(alive), [1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(rewards), [10, 10, 10, 0, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(states.t), [0, 1, 2, 0, 1, 2, 0])


# ----------------------------------------------------------------------------- in the program


def fixed_learner(params: Fixed):
    """A learner with the runner's contract whose policy never changes, so that every
    evaluation during training has a known return. ``step`` counts env steps only."""
    module = fixed_policy_module("fixed_learner")

    class Config(eqx.Module):
        total_steps: int = eqx.field(static=True, default=40)

        @property
        def steps_per_iteration(self):
            return 4

        @property
        def num_iterations(self):
            return self.total_steps // 4

    class Learner(eqx.Module):
        params: Fixed

    class State(eqx.Module):
        learner: Learner
        env_steps: jax.Array

    def init(key, config, env, env_params, network=None):
        return State(Learner(params), jnp.zeros((), jnp.int32))

    def step(state, config, env, env_params):
        state = State(state.learner, state.env_steps + 4)
        zero = jnp.zeros((), jnp.float32)
        return state, {"episodes": zero, "episode_return_sum": zero,
                       "episode_length_sum": zero, "env_steps": state.env_steps}

    module.Config, module.Learner, module.State = Config, Learner, State
    module.init, module.step = init, step
    return module


def test_evaluation_inside_the_program_gives_the_known_return_at_each_point():
    module = fixed_learner(ALTERNATE)
    run = runner.train(module, module.Config(), Parity(), ProbeParams(5), seeds=2,
                       target_chunks=10, eval_every=12, eval_episodes=3)
    steps, curve = results.eval_curve(run.history, 2)
    np.testing.assert_array_equal(steps, [12, 24, 36, 40])  # every 12 steps and at the end
    np.testing.assert_array_equal(curve, np.full((2, 4), 5.0))
    assert run.summary()["final_eval_returns"] == [5.0, 5.0]
    assert run.summary()["median_final_eval_return"] == 5.0


def test_eval_every_is_checked():
    module = fixed_learner(ALTERNATE)
    for bad in (0, 41, 2.5):
        with pytest.raises(ConfigError, match=f"eval_every={bad!r} is out of range"):
            runner.train(module, module.Config(), Parity(), ProbeParams(5), eval_every=bad)


def test_chunk_boundaries_fall_on_every_evaluation_point():
    for iterations, target, align in [(20000, 50, 2000), (97, 50, 10), (1000, 50, 7),
                                      (1000, 10, 600), (30, 50, 30)]:
        plan = runner.chunk_plan(iterations, target, align)
        ends = set(np.cumsum(plan).tolist())
        assert sum(plan) == iterations and len(set(plan)) <= 4
        assert set(range(align, iterations + 1, align)) <= ends
        assert max(plan) <= max(align, -(-iterations // target))


TINY = dqn.Config(total_steps=600, hidden=(8,), buffer_size=300, learning_starts=100,
                  batch_size=8)


@pytest.fixture(scope="module")
def plain_run():
    env, env_params = envs.make("CartPole-v1")
    return runner.train(dqn, TINY, env, env_params, seeds=2, target_chunks=4)


def test_training_bits_are_the_same_with_and_without_evaluation(plain_run):
    """Evaluating every 100 steps moves the chunk boundaries (6 chunks instead of 4) and
    adds the evaluation to the compiled chunk; the states and every training metric are
    bit for bit those of the run without it."""
    env, env_params = envs.make("CartPole-v1")
    run = runner.train(dqn, TINY, env, env_params, seeds=2, target_chunks=4, eval_every=100,
                       eval_episodes=2)
    assert run.chunks == [100] * 6 and plain_run.chunks == [150] * 4
    for a, b in zip(jax.tree.leaves(run.state), jax.tree.leaves(plain_run.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    episodes = [[sum(row["episodes"][s] for row in r.history) for s in range(2)]
                for r in (run, plain_run)]
    assert episodes[0] == episodes[1]
    # the last evaluation is evaluation.returns of the final parameters with its own key
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    for s in range(2):
        params = jax.tree.map(lambda x, s=s: x[s], run.state.learner.params)
        key = jax.random.fold_in(evaluation.root(keys[s]), TINY.num_iterations)
        want = evaluation.returns(key, dqn, params, TINY, env, env_params, 2)
        assert run.history[-1]["eval_return"][s] == pytest.approx(float(jnp.mean(want)),
                                                                  rel=1e-6)


def test_a_resumed_run_evaluates_as_an_uninterrupted_one(tmp_path, plain_run):
    """And with the same chunks as the plain run, every training number of the history is
    the plain run's, bit for bit."""
    env, env_params = envs.make("CartPole-v1")
    kwargs = dict(seeds=2, target_chunks=4, eval_every=300, eval_episodes=2)
    whole = runner.train(dqn, TINY, env, env_params, **kwargs)
    runner.train(dqn, TINY, env, env_params, out_dir=str(tmp_path), stop_after_chunks=1,
                 **kwargs)
    resumed = runner.resume(str(tmp_path), dqn, env, env_params)
    assert resumed.eval_every == 300 and len(resumed.history) == len(whole.history) == 4
    for a, b in zip(resumed.history, whole.history):
        assert a.keys() == b.keys()
        for name in a:  # NaN where a chunk did not evaluate: compared as equal
            np.testing.assert_array_equal(a[name], b[name])
    assert np.isnan(whole.history[0]["eval_return"]).all()
    assert np.isfinite(whole.history[1]["eval_return"]).all()
    for a, b in zip(whole.history, plain_run.history, strict=True):
        assert {k: v for k, v in a.items() if k != "eval_return"} == b
