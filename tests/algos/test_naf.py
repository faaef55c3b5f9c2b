"""NAF: the quadratic advantage against independent references (a dense grid search over the
action box, autodiff gradients and Hessians, eigenvalues), the target on hand-built and
collected batches (truncation bootstraps from the final observation), and the contract's
transformations, validation, networks and resume."""

import dataclasses
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl import envs
from minirl.algos import naf
from minirl.core import nets, rollout
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(600)

SMALL = dict(total_steps=300, buffer_size=300, batch_size=16, learning_starts=100, hidden=(16,))
ENV, ENV_PARAMS = envs.make("Pendulum-v1")


def small_config(**overrides) -> naf.Config:
    return naf.Config(**{**SMALL, **overrides})


# ----------------------------------------------------------------------------- the quadratic


def random_case(seed: int, dim: int, diagonal: str):
    """A random MLP head for D = ``dim`` actions, a random box and observation, float64."""
    rng = np.random.default_rng(seed)
    network = nets.MLP(3, naf.output_size(dim), (16,), jax.random.PRNGKey(seed))
    low = rng.uniform(-3.0, 0.0, dim)
    high = low + rng.uniform(0.5, 4.0, dim)
    params = naf.Params(network, jnp.asarray(low), jnp.asarray(high))
    return params, jnp.asarray(rng.normal(size=3)), naf.Config(diagonal=diagonal)


CASES = dict(seed=st.integers(0, 2**16), dim=st.sampled_from([1, 2, 3]),
             diagonal=st.sampled_from(naf.DIAGONALS))


@settings(max_examples=15)
@given(**CASES)
def test_p_is_symmetric_positive_definite_and_minus_the_hessian_of_q(seed, dim, diagonal):
    with jax.enable_x64(True):
        params, obs, config = random_case(seed, dim, diagonal)
        _, mu, precision = naf.quadratic(params, obs, config)
        precision = np.asarray(precision)
        np.testing.assert_allclose(precision, precision.T, rtol=1e-12, atol=1e-12)
        assert np.all(np.linalg.eigvalsh(precision) > 0.0)
        hessian = jax.hessian(lambda a: naf.q_value(params, obs, a, config))(mu)
        np.testing.assert_allclose(-np.asarray(hessian), precision, rtol=1e-9, atol=1e-12)


@settings(max_examples=15)
@given(**CASES)
def test_max_is_v_at_mu_where_the_gradient_vanishes_and_q_never_exceeds_v(seed, dim, diagonal):
    with jax.enable_x64(True):
        params, obs, config = random_case(seed, dim, diagonal)
        value, mu, _ = naf.quadratic(params, obs, config)
        low, high = np.asarray(params.low), np.asarray(params.high)
        assert np.all(np.asarray(mu) > low) and np.all(np.asarray(mu) < high)
        np.testing.assert_allclose(naf.value(params, obs, config), value, rtol=1e-15)
        np.testing.assert_allclose(naf.q_value(params, obs, mu, config), value, rtol=1e-12)
        grad = jax.grad(lambda a: naf.q_value(params, obs, a, config))(mu)
        np.testing.assert_allclose(grad, 0.0, atol=1e-10)
        actions = jax.random.uniform(jax.random.PRNGKey(seed), (256, dim), jnp.float64,
                                     params.low, params.high)
        q = jax.vmap(lambda a: naf.q_value(params, obs, a, config))(actions)
        assert np.all(np.asarray(q) <= float(value) + 1e-12)
        np.testing.assert_allclose(naf.greedy_action(params, obs, config), mu, rtol=1e-15)


@pytest.mark.parametrize("dim, points", [(1, 4001), (2, 301)])
@pytest.mark.parametrize("seed", range(4))
def test_argmax_matches_a_dense_grid_search_over_the_box(dim, points, seed):
    """The best point ĝ of a grid with spacing s_i is within the error of the grid: the grid
    point nearest μ is within s_i/2 per coordinate, so (ĝ − μ)ᵀP(ĝ − μ) ≤ Σ λ_max (s_i/2)²,
    and ‖ĝ − μ‖² ≤ (λ_max/λ_min) Σ (s_i/2)²; the grid maximum lies in [V − ½λ_max Σ (s_i/2)², V]."""
    with jax.enable_x64(True):
        params, obs, config = random_case(seed, dim, "exp")
        value, mu, precision = (np.asarray(x) for x in naf.quadratic(params, obs, config))
        low, high = np.asarray(params.low), np.asarray(params.high)
        axes = [np.linspace(lo, hi, points) for lo, hi in zip(low, high)]
        grid = np.array(list(itertools.product(*axes)))
        q = np.asarray(jax.vmap(lambda a: naf.q_value(params, obs, a, config))(grid))
    best = grid[np.argmax(q)]
    half_steps = np.sum(((high - low) / (points - 1) / 2.0) ** 2)
    eigenvalues = np.linalg.eigvalsh(precision)
    assert np.max(q) <= value + 1e-12
    assert np.max(q) >= value - 0.5 * eigenvalues[-1] * half_steps - 1e-12
    assert np.sum((best - mu) ** 2) <= eigenvalues[-1] / eigenvalues[0] * half_steps + 1e-12


# ----------------------------------------------------------------------------- the target


class KnownValue(eqx.Module):
    """V(s) = s[0], μ = 0, L = 1 for one action: makes the targets exact."""

    def __call__(self, obs):
        return jnp.array([obs[0], 0.0, 0.0])


def known_params():
    low, high = rollout.action_bounds(ENV, ENV_PARAMS)
    return naf.Params(KnownValue(), low, high)


def test_truncation_bootstraps_from_the_final_observation_and_termination_cuts():
    batch = rollout.Transition(
        obs=jnp.zeros((2, 3)),
        action=jnp.zeros((2, 1)),
        reward=jnp.ones(2),
        next_obs=jnp.array([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]]),
        terminated=jnp.array([False, True]),
        truncated=jnp.array([True, False]),
    )
    config = small_config(gamma=0.5, reward_scale=2.0)
    targets = naf.td_targets(known_params(), batch, config)
    np.testing.assert_allclose(targets, [2.0 + 0.5 * 3.0, 2.0])


def test_collected_transitions_store_the_final_observation_at_a_time_limit():
    """Pendulum with 5-step episodes: at a truncation the stored next_obs is the observation
    before the reset (not the next stored obs, a reset one), and the target bootstraps from
    V of it; everywhere else next_obs is the next stored obs."""
    env, env_params = envs.make("Pendulum-v1", max_steps_in_episode=5)
    config = small_config(learning_starts=1000, gamma=0.9)
    state = naf.init(jax.random.PRNGKey(0), config, env, env_params)
    run = jax.jit(lambda s: jax.lax.scan(lambda s, _: naf.step(s, config, env, env_params), s,
                                         length=12))
    state, _ = run(state)
    stored = jax.tree.map(lambda x: np.asarray(x[:12]), state.buffer.data)
    assert not stored.terminated.any()
    np.testing.assert_array_equal(np.flatnonzero(stored.truncated), [4, 9])
    for t in range(11):
        same = np.array_equal(stored.next_obs[t], stored.obs[t + 1])
        assert same != stored.truncated[t], t
    targets = naf.td_targets(known_params(), jax.tree.map(jnp.asarray, stored), config)
    np.testing.assert_allclose(targets, stored.reward + 0.9 * stored.next_obs[:, 0], rtol=1e-6)


# ---------------------------------------------------------------- env, networks, config
# (the contract every learner shares is tests/test_contract.py)


def _arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def test_act_is_mu_or_mu_with_noise_inside_the_box():
    config = small_config(exploration_noise=5.0)
    state = naf.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS)
    params, obs = state.learner.params, state.env.obs[0]
    greedy = naf.act(params, obs, jax.random.PRNGKey(1), config, deterministic=True)
    assert greedy.shape == (1,)
    np.testing.assert_array_equal(greedy, naf.greedy_action(params, obs, config))
    noisy = jax.vmap(lambda k: naf.act(params, obs, k, config))(
        jax.random.split(jax.random.PRNGKey(2), 64))
    assert noisy.shape == (64, 1)
    assert np.all(np.abs(np.asarray(noisy)) <= 2.0) and np.any(np.abs(np.asarray(noisy)) == 2.0)


def test_action_bounds_come_from_env_params_and_can_be_swept():
    """The box is read from env_params at init: a smaller max_torque shrinks it."""
    _, small = envs.make("Pendulum-v1", max_torque=0.5)
    state = naf.init(jax.random.PRNGKey(0), small_config(), ENV, small)
    np.testing.assert_array_equal(state.learner.params.high, [0.5])
    params = jax.tree.map(lambda a, b: jnp.stack([a, b]), ENV_PARAMS, small)
    highs = jax.vmap(lambda p: naf.init(jax.random.PRNGKey(0), small_config(), ENV, p)
                     .learner.params.high)(params)
    np.testing.assert_array_equal(highs, [[2.0], [0.5]])


class UserNet(eqx.Module):
    """A user's network with separate value, mean and matrix heads on one torso."""

    torso: eqx.nn.MLP
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.torso = eqx.nn.MLP(3, 16, 16, 1, key=k1, activation=jax.nn.tanh)
        self.head = eqx.nn.Linear(16, 3, key=k2)

    def __call__(self, obs):
        return self.head(jax.nn.tanh(self.torso(obs)))


def test_bring_your_own_network():
    config = small_config(total_steps=200)
    network = UserNet(jax.random.PRNGKey(5))
    train = jax.jit(lambda key, config, params: naf.train(key, config, ENV, params, network))
    state, metrics = train(jax.random.PRNGKey(0), config, ENV_PARAMS)
    trained = state.learner.params.network.module  # function fields were kept static
    assert isinstance(trained, UserNet)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    assert not np.array_equal(trained.head.weight, network.head.weight)


def test_a_network_factory_initialises_each_seed_differently():
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    init = jax.vmap(lambda key: naf.init(key, small_config(), ENV, ENV_PARAMS, UserNet)
                    .learner.params.network)
    network = jax.jit(init)(keys).module
    assert not np.array_equal(network.head.weight[0], network.head.weight[1])


def test_a_network_with_the_wrong_output_is_refused():
    bad = eqx.nn.Linear(3, 2, key=jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match=r"shape \(2,\).*\(3,\)"):
        naf.init(jax.random.PRNGKey(0), small_config(), ENV, ENV_PARAMS, bad)


def test_discrete_env_is_refused_where_config_meets_env():
    env, params = envs.make("CartPole-v1")
    with pytest.raises(ConfigError, match="CartPole-v1.*discrete.*continuous"):
        naf.init(jax.random.PRNGKey(0), small_config(), env, params)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(gamma=0.0), "gamma"),
        (dict(gamma=1.5), "gamma"),
        (dict(tau=0.0), "tau"),
        (dict(tau=1.1), "tau"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=400, buffer_size=300), "batch_size"),
        (dict(num_envs=7, buffer_size=300), "buffer_size"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(exploration_noise=-0.1), "exploration_noise"),
        (dict(mu_penalty=-1.0), "mu_penalty"),
        (dict(reward_scale=0.0), "reward_scale"),
        (dict(diagonal="square"), "diagonal"),
        (dict(loss="l1"), "loss"),
        (dict(hidden=()), "hidden"),
        (dict(learning_starts=-1), "learning_starts"),
        (dict(total_steps=0), "total_steps"),
        (dict(tau=np.array([0.01, 2.0])), "tau"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        small_config(**overrides)


def test_fresh_state_can_be_donated():
    config = small_config(learning_starts=0)
    state = naf.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS)
    leaves = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
    assert len({id(x) for x in leaves}) == len(leaves)
    step = jax.jit(lambda s: naf.step(s, config, ENV, ENV_PARAMS), donate_argnums=0)
    state, _ = step(state)
    state, _ = step(state)
    assert int(state.env_steps) == 2


def test_learning_rate_schedule_reaches_its_end():
    config = small_config(learning_rate_end_factor=0.0)
    state = naf.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS)
    state, _ = jax.jit(lambda s: naf.step(s, config, ENV, ENV_PARAMS))(state)
    batch = naf.sample_batch(state.buffer, jax.random.PRNGKey(0), config)
    learner = dataclasses.replace(state.learner,
                                  updates=jnp.asarray(config.num_updates, jnp.int32))
    _, metrics = naf.learn(learner, batch, config)
    assert float(metrics["learning_rate"]) == 0.0
