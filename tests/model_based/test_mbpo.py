"""MBPO's pieces against independent references: branched rollouts through a model that *is*
the env against the env's own steps (and, for Pendulum, against its equations in NumPy);
the elites against each member's held-out error computed here; the held-out rows against a
fit that never sees them; the mixed batch against the binomial law; the rollout length
against the paper's formula in exact rational arithmetic; CartPole's known reward and
termination against the env; and the agent's update through mbpo against the agent's own.
"""

import dataclasses
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirl import configs, envs
from minirl.core import buffer as replay
from minirl.core import rollout
from minirl.core.config import ConfigError
from minirl.model_based import dynamics, mbpo, rewards

pytestmark = pytest.mark.timeout(600)

TINY = dict(total_steps=24, refit_every=8, learning_starts=8, updates_per_step=2,
            rollouts_per_step=4, batch_size=8, buffer_size=64, hidden=(8,), ensemble_size=3,
            num_elites=2, model_hidden=(8,), fit_updates=2, model_batch_size=4, max_holdout=8)


# ----------------------------------------------------------------------------- rewards


def test_cartpole_known_reward_and_termination_equal_the_envs():
    """On real transitions (random states around the thresholds, random actions) the known
    functions give exactly the env's reward and termination."""
    env, params = envs.make("CartPole-v1")
    known = rewards.KNOWN["CartPole-v1"]
    rng = np.random.default_rng(0)
    scale = np.array([2.6, 2.0, 0.23, 2.0], np.float32)  # around x and θ thresholds
    for i in range(200):
        values = rng.uniform(-1, 1, 4).astype(np.float32) * scale
        _, state = env.reset(jax.random.PRNGKey(i), params)
        state = state.replace(x=values[0], x_dot=values[1], theta=values[2],
                              theta_dot=values[3])
        obs = env.get_obs(state)
        action = jnp.asarray(rng.integers(2))
        next_obs, _, reward, terminated, _ = env.step_env(jax.random.PRNGKey(i), state,
                                                          action, params)
        assert float(known.reward(obs, action, next_obs, params)) == float(reward)
        assert bool(known.terminated(obs, action, next_obs, params)) == bool(terminated)
    # exactly at and just past the thresholds: gymnax's strict inequalities
    x_max, theta_max = float(params.x_threshold), float(params.theta_threshold_radians)
    for x, theta in [(x_max, 0.0), (-x_max, 0.0), (0.0, theta_max), (0.0, -theta_max),
                     (np.nextafter(np.float32(x_max), np.float32(3)), 0.0),
                     (0.0, np.nextafter(np.float32(-theta_max), np.float32(-1)))]:
        state = state.replace(x=jnp.float32(x), theta=jnp.float32(theta))
        obs = env.get_obs(state)
        terminal = bool(env.is_terminal(state, params))
        assert bool(known.terminated(obs, jnp.array(0), obs, params)) == terminal
        assert float(known.reward(obs, jnp.array(0), obs, params)) == 1.0 - terminal


def test_action_features_are_one_hot_for_discrete_actions():
    actions = jnp.array([0, 2, 1])
    np.testing.assert_array_equal(dynamics.action_features(actions, 3), np.eye(3)[[0, 2, 1]])
    box = jnp.ones((3, 2))
    assert dynamics.action_features(box) is box


# ----------------------------------------------------------------------------- rollouts


def _pendulum_numpy(obs, action, p):
    """Gym's Pendulum equations, written here in NumPy from the observation."""
    theta, theta_dot = np.arctan2(obs[:, 1], obs[:, 0]), obs[:, 2]
    u = np.clip(action[:, 0], -p.max_torque, p.max_torque)
    reward = -(theta ** 2 + 0.1 * theta_dot ** 2 + 0.001 * u ** 2)
    new_dot = theta_dot + (3 * p.g / (2 * p.l) * np.sin(theta) + 3.0 / (p.m * p.l ** 2) * u) * p.dt
    new_dot = np.clip(new_dot, -p.max_speed, p.max_speed)
    new_theta = theta + new_dot * p.dt
    return np.stack([np.cos(new_theta), np.sin(new_theta), new_dot], -1), reward


def _linear_policy(weights):
    def policy(key, obs):
        return jnp.tanh(obs @ weights) * 2.0
    return policy


@pytest.mark.parametrize("k", [1, 3, 7])
def test_branched_rollout_through_the_true_env_reproduces_its_steps(k):
    """From real env states, k steps of a model that *is* the env (its ``step_env``) equal
    k steps of ``env.step`` taken one at a time in Python, and Pendulum's own equations."""
    env, params = envs.make("Pendulum-v1")
    n = 5
    keys = jax.random.split(jax.random.PRNGKey(k), n)
    obs, states = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    policy = _linear_policy(jnp.array([[0.7], [-0.3], [0.2]]))

    def model_step(key, state, action):
        return env.step_env(key, state, action, params)[:4]

    def no_restart(key):
        return states, obs  # shapes only: never selected (Pendulum never terminates)

    transitions = jax.jit(lambda key: mbpo.branched_rollout(
        key, model_step, states, obs, policy, no_restart, k))(jax.random.PRNGKey(0))
    assert transitions.obs.shape == (k, n, 3)
    for i in range(n):
        state = jax.tree.map(lambda x, i=i: x[i], states)
        o = obs[i]
        for t in range(k):
            action = policy(None, o[None])[0]
            next_o, state, reward, terminated, truncated, _ = env.step(
                jax.random.PRNGKey(t), state, action, params)
            np.testing.assert_allclose(transitions.obs[t, i], o, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(transitions.action[t, i], action, rtol=1e-6)
            np.testing.assert_allclose(transitions.next_obs[t, i], next_o, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(transitions.reward[t, i], reward, rtol=1e-5, atol=1e-5)
            assert not bool(transitions.terminated[t, i]) and not bool(truncated)
            o = next_o
    flat = jax.tree.map(lambda x: np.asarray(x).reshape(k * n, *x.shape[2:]), transitions)
    next_obs, reward = _pendulum_numpy(flat.obs, flat.action, params)
    np.testing.assert_allclose(flat.next_obs, next_obs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(flat.reward, reward, rtol=1e-4, atol=1e-4)


def test_a_terminated_rollout_continues_from_a_fresh_start():
    """CartPole pushed right falls within a few steps; after each termination the next
    transition starts from the state ``restart`` gives, every other one from the previous
    next observation."""
    env, params = envs.make("CartPole-v1")
    n, k = 4, 30
    obs, states = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(
        jax.random.PRNGKey(0), n), params)
    fresh_obs, fresh = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(
        jax.random.PRNGKey(1), n), params)

    def model_step(key, state, action):
        return env.step_env(key, state, action, params)[:4]

    transitions = mbpo.branched_rollout(
        jax.random.PRNGKey(2), model_step, states, obs,
        lambda key, o: jnp.ones(o.shape[0], jnp.int32), lambda key: (fresh, fresh_obs), k)
    terminated = np.asarray(transitions.terminated)
    assert terminated.any(axis=0).all(), "every pole falls when pushed right for 30 steps"
    for t in range(k - 1):
        want = np.where(terminated[t][:, None], fresh_obs, transitions.next_obs[t])
        np.testing.assert_array_equal(transitions.obs[t + 1], want)


def test_model_true_rollouts_are_exact_env_transitions():
    """mbpo with the true env in place of the model: every stored model transition is a
    Pendulum step from its observation (NumPy equations), and D_model holds N·k per step."""
    env, params = envs.make("Pendulum-v1")
    config = mbpo.Config(**{**TINY, "model": "true", "rollout_schedule": (0, 1, 2, 2),
                            "model_retain": 3})
    state, metrics = jax.jit(mbpo.train, static_argnums=2)(jax.random.PRNGKey(0), config,
                                                          env, params)
    size = int(state.model_buffer.size)
    ready_steps = config.total_steps - config.refit_every  # the first iteration is warm-up
    assert size == ready_steps * config.rollouts_per_step * 2
    data = jax.tree.map(lambda x: np.asarray(x[:size, 0]), state.model_buffer.data)
    next_obs, reward = _pendulum_numpy(data.obs, data.action, params)
    np.testing.assert_allclose(data.next_obs, next_obs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(data.reward, reward, rtol=1e-4, atol=1e-4)
    assert not data.terminated.any()
    np.testing.assert_array_equal(metrics["rollout_length"], [0, 2, 2])


@pytest.mark.parametrize("model", ["true", "probabilistic"])
def test_n_step_model_windows_are_consecutive_steps_of_one_rollout(model):
    """With ``n_step=3`` each D_model item is 3 consecutive steps of one branched rollout:
    step j+1 starts where step j ended unless j terminated (then the rollout restarted from
    a real state), rewards and terminations are CartPole's own (reward 1; the episode ends
    when |x| > 2.4 or |θ| > 12°), and with the true env the positions follow CartPole's
    explicit Euler step x' = x + τ ẋ, θ' = θ + τ θ̇ (τ = 0.02) from each window's states."""
    env, params = envs.make("CartPole-v1")
    config = mbpo.Config(**{**TINY, "agent": "dqn", "model": model, "n_step": 3,
                            "rollout_schedule": (0, 1, 2, 2), "model_retain": 3})
    state, _ = jax.jit(mbpo.train, static_argnums=2)(jax.random.PRNGKey(3), config, env,
                                                     params)
    size = int(state.model_buffer.size)
    assert size == (config.total_steps - config.refit_every) * config.rollouts_per_step * 2
    w = jax.tree.map(lambda x: np.asarray(x[:size]), state.model_buffer.data)
    assert w.obs.shape == (size, 3, 4)
    continues = ~w.terminated[:, :-1]
    np.testing.assert_array_equal(w.obs[:, 1:][continues], w.next_obs[:, :-1][continues])
    np.testing.assert_array_equal(w.reward, 1.0)
    ends = (np.abs(w.next_obs[..., 0]) > 2.4) | (np.abs(w.next_obs[..., 2]) > 12 * np.pi / 360 * 2)
    np.testing.assert_array_equal(w.terminated, ends)
    if model == "true":
        np.testing.assert_allclose(w.next_obs[..., 0], w.obs[..., 0] + 0.02 * w.obs[..., 1],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w.next_obs[..., 2], w.obs[..., 2] + 0.02 * w.obs[..., 3],
                                   rtol=1e-5, atol=1e-6)


def test_n_step_real_windows_are_consecutive_steps_of_one_env():
    """The real part of a mixed batch with ``n_step=3`` and 2 envs: N consecutive steps of
    one env (stride ``num_envs`` in the time-major D_env), each valid item starting where the
    previous ended unless that one was an episode end."""
    env, params = envs.make("CartPole-v1")
    config = mbpo.Config(**{**TINY, "agent": "dqn", "n_step": 3, "num_envs": 2,
                            "real_ratio": 1.0, "total_steps": 48})
    state, _ = jax.jit(mbpo.train, static_argnums=2)(jax.random.PRNGKey(4), config, env,
                                                     params)
    batches = mbpo.mixed_batches(jax.random.PRNGKey(5), state.buffer, state.model_buffer, 8,
                                 config)
    w = jax.tree.map(np.asarray, batches.transitions)
    valid = np.asarray(batches.valid)
    assert w.obs.shape == (8, config.batch_size, 3, 4) and valid[..., 0].all()
    linked = valid[..., 1:] & ~(w.terminated[..., :-1] | w.truncated[..., :-1])
    assert linked.any()
    np.testing.assert_array_equal(w.obs[..., 1:, :][linked], w.next_obs[..., :-1, :][linked])


# ----------------------------------------------------------------------------- elites


def _random_data(key, n, obs_dim=3, action_dim=2):
    k1, k2, k3 = jax.random.split(key, 3)
    obs = jax.random.normal(k1, (n, obs_dim))
    action = jax.random.uniform(k2, (n, action_dim), minval=-1, maxval=1)
    next_obs = obs + 0.1 * jnp.sin(obs) + 0.05 * action[:, :1] + 0.01 * jax.random.normal(
        k3, (n, obs_dim))
    return dynamics.Data(obs, action, next_obs, jnp.zeros(n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_elites_are_the_lowest_held_out_losses(seed):
    """The held-out losses are each member's error on exactly the held-out rows (computed
    here from ``predict``), the elites the E smallest of them; the held-out rows are
    ⌊size · fraction⌋ distinct valid rows."""
    config = dynamics.ModelConfig(ensemble_size=5, hidden=(16,))
    capacity, size, fraction = 120, 97, 0.25
    data = _random_data(jax.random.PRNGKey(seed), capacity)
    model = dynamics.init(jax.random.PRNGKey(seed + 10), 3, 2, config)
    key = jax.random.PRNGKey(seed + 20)
    fitted, _, metrics, losses = dynamics.fit_with_holdout(
        key, model, dynamics.init_optimizer(model, config), data, size, config,
        num_updates=30, batch_size=16, holdout_fraction=fraction, max_holdout=50)
    order, num = dynamics.holdout_split(jax.random.split(key)[0], size, capacity, fraction, 50)
    held = np.asarray(order[:int(num)])
    assert int(num) == math.floor(size * fraction) and len(set(held)) == len(held)
    assert held.max() < size
    want = []
    for j in range(5):
        member = jax.tree.map(lambda x, j=j: x[j], fitted.members)
        pred, _ = dynamics.predict(member, fitted, data.obs[held], data.action[held], key,
                                   config, sample=False)
        norm = fitted.output_norm
        z_pred = (np.asarray(pred - data.obs[held]) - norm.mean) / norm.std
        z_true = (np.asarray(data.next_obs[held] - data.obs[held]) - norm.mean) / norm.std
        want.append(np.mean((z_pred - z_true) ** 2))
    np.testing.assert_allclose(losses, want, rtol=1e-4)
    assert set(np.asarray(dynamics.elites(losses, 3)).tolist()) == set(np.argsort(want)[:3])
    np.testing.assert_allclose(metrics["holdout_mse"], np.mean(want), rtol=1e-4)


def test_held_out_rows_take_no_part_in_the_fit():
    """Corrupting the held-out rows leaves the fitted model bit-identical (and changes the
    held-out losses); corrupting one training row changes the fit."""
    config = dynamics.ModelConfig(ensemble_size=3, hidden=(8,))
    capacity, size = 64, 60
    data = _random_data(jax.random.PRNGKey(3), capacity)
    model = dynamics.init(jax.random.PRNGKey(4), 3, 2, config)
    opt = dynamics.init_optimizer(model, config)
    key = jax.random.PRNGKey(5)
    fit = jax.jit(lambda d: dynamics.fit_with_holdout(
        key, model, opt, d, size, config, num_updates=10, batch_size=8, holdout_fraction=0.2,
        max_holdout=100))
    order, num = dynamics.holdout_split(jax.random.split(key)[0], size, capacity, 0.2, 100)
    held, train = np.asarray(order[:int(num)]), np.asarray(order[int(num):size])

    def corrupt(rows):
        return dataclasses.replace(data, next_obs=data.next_obs.at[rows].add(100.0))

    base, _, _, base_losses = fit(data)
    same, _, _, losses = fit(corrupt(held))
    for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(same)):
        np.testing.assert_array_equal(a, b)
    assert np.all(np.asarray(losses) > 10 * np.asarray(base_losses))
    other, _, _, _ = fit(corrupt(train[:1]))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(base),
                                                          jax.tree.leaves(other)))


# ----------------------------------------------------------------------------- batches


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.5, 1.0])
def test_the_mixed_batch_holds_real_ratio_real_items_in_expectation(ratio):
    """Real items carry reward +1, model items −1: every item is one or the other, and the
    share of real ones lies within 4.5 binomial standard deviations of ``real_ratio``."""
    config = mbpo.Config(**{**TINY, "real_ratio": ratio, "batch_size": 64})
    obs = jnp.zeros((3,))
    example = rollout.example_transition(obs, jnp.zeros((1,)))
    real = replay.add(replay.init(50, mbpo.RealStep(example)), mbpo.RealStep(jax.tree.map(
        lambda x: jnp.broadcast_to(x, (50, *x.shape)), dataclasses.replace(
            example, reward=jnp.ones(())))))
    window = jax.tree.map(lambda x: x[None], example)  # D_model holds windows (n_step 1)
    model = replay.add(replay.init(70, window), jax.tree.map(
        lambda x: jnp.broadcast_to(x, (70, *x.shape)), dataclasses.replace(
            window, reward=-jnp.ones((1,)))))
    batches = jax.jit(lambda k: mbpo.mixed_batches(k, real, model, 200, config))(
        jax.random.PRNGKey(7))
    assert batches.transitions.reward.shape == (200, 64, 1)
    assert bool(np.all(batches.valid))
    values = np.asarray(batches.transitions.reward)
    assert set(np.unique(values)) <= {-1.0, 1.0}
    n = values.size
    share = np.mean(values == 1.0)
    sigma = math.sqrt(ratio * (1 - ratio) / n)
    assert abs(share - ratio) <= 4.5 * sigma + 1e-12, (share, ratio)


# ----------------------------------------------------------------------------- schedule


def _paper_rollout_length(epoch, schedule):
    """jannerm/mbpo ``_set_rollout_length``, in exact rationals."""
    first, last, k_min, k_max = schedule
    if epoch <= first:
        return k_min
    dx = min(Fraction(epoch - first, last - first), 1)
    return int(dx * (k_max - k_min) + k_min)


@pytest.mark.parametrize("schedule", [(20, 100, 1, 15), (20, 150, 1, 15), (0, 10, 5, 1),
                                      (1, 15, 1, 1), (3, 7, 2, 30)])
def test_rollout_length_follows_the_linear_schedule(schedule):
    epoch_length = 1000
    env_steps = np.concatenate([np.arange(0, 200_000, 250), [999, 1000, 1001, 20_999, 21_000]])
    got = jax.jit(lambda s: mbpo.rollout_length(s, schedule, epoch_length))(env_steps)
    want = [_paper_rollout_length(int(s) // epoch_length, schedule) for s in env_steps]
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- the agent


@pytest.mark.parametrize("agent, env_id", [("sac", "Pendulum-v1"), ("td3", "Pendulum-v1"),
                                           ("dqn", "CartPole-v1")])
def test_learn_is_the_agents_own_learn(agent, env_id):
    """mbpo.learn on a batch equals the agent's ``learn`` on the same batch with the agent
    config mbpo builds (the agent's fields set from mbpo's), bit for bit."""
    env, params = envs.make(env_id)
    config = mbpo.Config(**{**TINY, "agent": agent, "learning_rate": 2e-3, "gamma": 0.9})
    module = config.agent_module
    agent_config = config.agent_config
    assert (agent_config.learning_rate, agent_config.gamma) == (2e-3, 0.9)
    assert agent_config.hidden == (8,) and agent_config.gradient_steps == 2
    state = mbpo.init(jax.random.PRNGKey(0), config, env, params)
    own = module.init(jax.random.PRNGKey(1), agent_config, env, params)
    _, trajectory = rollout.collect(jax.random.PRNGKey(2), env, params, own.env,
                                    rollout.random_policy(env, params), 8)
    batch = jax.tree.map(lambda x: x.reshape(8, *x.shape[2:]), rollout.Transition(
        trajectory.obs, trajectory.action, trajectory.reward, trajectory.next_obs,
        trajectory.terminated, trajectory.truncated))
    learner, _ = mbpo.learn(state.learner, batch, config)
    merged = dataclasses.replace(state.learner.agent, params=state.learner.params)
    expected, _ = module.learn(merged, mbpo.agent_batch(module, batch), agent_config)
    got = dataclasses.replace(learner.agent, params=learner.params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("agent, env_id", [("ddpg", "Pendulum-v1"), ("naf", "Pendulum-v1"),
                                           ("qt_opt", "Pendulum-v1"), ("soft_q", "CartPole-v1"),
                                           ("sac", "CartPole-v1")])
def test_every_off_policy_agent_trains_inside_mbpo(agent, env_id):
    """One warm-up iteration, two learning iterations: finite losses, the agent's parameters
    moved, D_model filled; discrete actions reach the model one-hot."""
    env, params = envs.make(env_id)
    config = mbpo.Config(**{**TINY, "agent": agent, "model_retain": 2})  # D_model holds 2 fits
    state0 = mbpo.init(jax.random.PRNGKey(0), config, env, params)
    state, metrics = jax.jit(mbpo.train, static_argnums=2)(jax.random.PRNGKey(0), config,
                                                          env, params)
    assert all(np.all(np.isfinite(v)) for v in metrics.values())
    assert int(state.model_buffer.size) == 16 * config.rollouts_per_step
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state0.learner.params),
                                                      jax.tree.leaves(state.learner.params))]
    assert any(moved)
    in_dim = state.learner.model.input_norm.mean.shape[0]
    obs_dim = rollout.observation_shape(env, params)[0]
    want = obs_dim + (rollout.num_actions(env, params) if env_id == "CartPole-v1" else 1)
    assert in_dim == want


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("changes, message", [
    (dict(agent="nosuch"), "agent='nosuch' is not a learner found here"),
    (dict(agent="ppo"), "agent='ppo' is not an off-policy learner"),
    (dict(agent_options=("colour=red",)), "unknown field 'colour' for agent='sac'"),
    (dict(agent_options=("buffer_size=9",)), "buffer_size is set by mbpo"),
    (dict(agent_options=("alpha_init=abc",)), "alpha_init='abc' is not a valid float"),
    (dict(agent_options=("alpha_init",)), "must look like field=value"),
    (dict(agent_options=("alpha_init=-1",)), "agent='sac': alpha_init=-1 is out of range"),
    (dict(agent="dqn", agent_options=("n_step=3",)), "n_step is set by mbpo"),
    (dict(agent="sac", n_step=3), "n_step=3 needs an agent that learns from N-step windows"),
    (dict(agent="dqn", n_step=0), "n_step"),
    (dict(rollout_schedule=(5, 5, 1, 1)), "rollout_schedule=(5, 5, 1, 1) is out of range"),
    (dict(rollout_schedule=(1, 2, 3)), "must be four integers"),
    (dict(num_elites=4), "num_elites=4 exceeds ensemble_size=3"),
    (dict(model="true", reward="learned"), "reward='learned' needs a learned model"),
    (dict(model="bnn"), "model='bnn' is not allowed"),
    (dict(real_ratio=1.5), "real_ratio=1.5 is out of range"),
    (dict(holdout_fraction=1.0), "holdout_fraction=1 is out of range"),
    (dict(learning_rate=float("nan")), "learning_rate=nan"),
])
def test_bad_values_raise_config_errors_naming_the_field(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mbpo.Config(**{**TINY, **changes})


def test_an_agent_of_the_wrong_action_kind_is_refused():
    env, params = envs.make("CartPole-v1")
    with pytest.raises(ConfigError, match="mbpo agent=td3 needs a continuous action space"):
        mbpo.init(jax.random.PRNGKey(0), mbpo.Config(**{**TINY, "agent": "td3"}), env, params)
    env, params = envs.make("Acrobot-v1")
    with pytest.raises(ConfigError, match="no known reward function"):
        mbpo.init(jax.random.PRNGKey(0), mbpo.Config(**{**TINY, "agent": "dqn"}), env, params)


def test_the_agent_and_its_options_by_name_from_the_command_line_and_json():
    """``--set agent=td3 --set learning_rate=... --set agent_options=...`` build the config
    the runner records, and its JSON gives it back."""
    changes, _ = configs.parse_sets(mbpo.Config, [
        "agent=td3", "learning_rate=2e-3", "agent_options=exploration_noise=0.2,policy_delay=3"])
    config = configs.make(mbpo, "Pendulum-v1", 2_000, changes)
    assert config.agent == "td3" and config.learning_rate == 2e-3
    agent_config = config.agent_config
    assert type(agent_config).__module__ == "minirl.algos.td3"
    assert agent_config.exploration_noise == 0.2 and agent_config.policy_delay == 3
    assert agent_config.learning_rate == 2e-3 and agent_config.clipped_double_q
    again = configs.from_json(mbpo.Config, configs.to_json(config))
    assert again == config
