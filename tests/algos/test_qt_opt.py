"""QT-Opt: the sampled-max target against closed forms on critics whose maximum is known
(never above the true max, close to it with enough samples, double Q and clipped double Q,
truncation and termination), and the contract's transformations, validation, networks and
resume."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl import envs
from minirl.algos import qt_opt
from minirl.core import rollout
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(600)

SMALL = dict(total_steps=300, buffer_size=300, batch_size=16, learning_starts=100, hidden=(16,))
ENV, ENV_PARAMS = envs.make("Pendulum-v1")  # one action in [-2, 2], observations of size 3
GAMMA = 0.9


def small_config(**overrides) -> qt_opt.Config:
    return qt_opt.Config(**{**SMALL, **overrides})


class KnownQ(eqx.Module):
    """Q_i(s, a) = w_i·s₀ − (a − s₁ − c_i)²: its maximum over a ∈ [−2, 2] is w_i·s₀, at
    a = s₁ + c_i when that lies in the box. Leaves carry the ensemble axis [M]."""

    weight: jax.Array
    shift: jax.Array

    def __call__(self, obs, action):
        return self.weight * obs[0] - jnp.sum((action - obs[1] - self.shift) ** 2)


def known(weights, shifts=None) -> KnownQ:
    weights = jnp.asarray(weights, jnp.float32)
    return KnownQ(weights, jnp.zeros_like(weights) if shifts is None else jnp.asarray(shifts))


def batch_of(next_obs, terminated=None, truncated=None) -> rollout.Transition:
    next_obs = jnp.asarray(next_obs, jnp.float32)
    size = next_obs.shape[0]
    return rollout.Transition(
        obs=jnp.zeros((size, 3)), action=jnp.zeros((size, 1)), reward=jnp.ones(size),
        next_obs=next_obs,
        terminated=jnp.zeros(size, bool) if terminated is None else jnp.asarray(terminated),
        truncated=jnp.zeros(size, bool) if truncated is None else jnp.asarray(truncated),
    )


def params_of(critic: KnownQ) -> qt_opt.Params:
    low, high = rollout.action_bounds(ENV, ENV_PARAMS)
    return qt_opt.Params(critic, low, high)


def targets(critic, target_critic, batch, key=0, **overrides):
    config = small_config(gamma=GAMMA, **overrides)
    return np.asarray(qt_opt.td_targets(params_of(critic), params_of(target_critic), batch,
                                        jax.random.PRNGKey(key), config))


def random_next_obs(seed: int, size: int = 64) -> np.ndarray:
    """Next observations whose maximiser s₁ lies inside the box [−2, 2]."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(size=size), rng.uniform(-1.8, 1.8, size), np.zeros(size)], 1)


# ----------------------------------------------------------------------------- the target


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), maximiser=st.sampled_from(qt_opt.MAXIMISERS),
       num_samples=st.sampled_from([4, 16, 64]))
def test_target_never_exceeds_the_true_max_target(seed, maximiser, num_samples):
    next_obs = random_next_obs(seed)
    critic = known([1.5])
    y = targets(critic, critic, batch_of(next_obs), key=seed, maximiser=maximiser,
                num_samples=num_samples, num_elites=min(4, num_samples))
    true = 1.0 + GAMMA * 1.5 * next_obs[:, 0]  # r + γ max_a Q̄(s', a)
    assert np.all(y <= true + 1e-5)


def test_target_approaches_the_true_max_as_the_search_grows():
    """Mean shortfall r + γ max Q̄ − y: random search over N uniform actions in a box of
    width 4 loses γ·E[min_i (a_i − a*)²], which falls like 1/N²; CEM with 64 × 2 samples is
    within 1e-3 of the true maximum."""
    next_obs = random_next_obs(0, 256)
    critic = known([1.0])
    true = 1.0 + GAMMA * next_obs[:, 0]
    gaps = [np.mean(true - targets(critic, critic, batch_of(next_obs), maximiser="random",
                                   num_samples=n))
            for n in (4, 16, 64, 256)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-3
    cem = targets(critic, critic, batch_of(next_obs), maximiser="cem", num_samples=64,
                  num_elites=6, cem_iterations=2)
    assert np.mean(true - cem) < 1e-3


def test_termination_cuts_and_truncation_bootstraps_from_the_final_observation():
    next_obs = np.array([[2.0, 0.5, 0.0], [2.0, 0.5, 0.0], [2.0, 0.5, 0.0]])
    critic = known([1.0])
    y = targets(critic, critic, batch_of(next_obs, terminated=[False, True, False],
                                         truncated=[True, False, False]),
                num_samples=256, num_elites=8, reward_scale=2.0)
    np.testing.assert_allclose(y, [2.0 + GAMMA * 2.0, 2.0, 2.0 + GAMMA * 2.0], atol=1e-3)


def test_double_q_selects_with_the_online_critic_and_evaluates_with_the_target():
    """Online centre s₁ + 0.5, target centre s₁: the selected action is 0.5 off the target's
    maximum, so V̄ = w·s₀ − 0.25 with double Q, and w·s₀ without."""
    next_obs = random_next_obs(1, 32)
    next_obs[:, 1] = np.clip(next_obs[:, 1], -1.4, 1.4)  # keep s₁ + 0.5 inside the box
    online, target = known([1.0], [0.5]), known([1.0], [0.0])
    big = dict(num_samples=256, num_elites=8)
    double = targets(online, target, batch_of(next_obs), double_q=True, **big)
    plain = targets(online, target, batch_of(next_obs), **big)
    np.testing.assert_allclose(double, 1.0 + GAMMA * (next_obs[:, 0] - 0.25), atol=2e-3)
    np.testing.assert_allclose(plain, 1.0 + GAMMA * next_obs[:, 0], atol=2e-3)


def test_clipped_double_q_target_is_the_smaller_critic_at_the_first_critics_action():
    """Two target critics w = (1, 0.5) with a common centre: the action that maximises the
    first also maximises the second, so y = r + γ·min(w)·s₀ (up to the search error), never
    above either critic's own target."""
    next_obs = random_next_obs(2, 64)
    pair = known([1.0, 0.5])
    big = dict(num_samples=256, num_elites=8)
    clipped = targets(pair, pair, batch_of(next_obs), clipped_double_q=True, **big)
    expected = 1.0 + GAMMA * np.minimum(1.0 * next_obs[:, 0], 0.5 * next_obs[:, 0])
    np.testing.assert_allclose(clipped, expected, atol=2e-3)
    for i, w in enumerate([1.0, 0.5]):
        own = known([w])
        single = targets(own, own, batch_of(next_obs), **big)
        assert np.all(clipped <= single + 1e-5), i


# ---------------------------------------------------------------- env, networks, config
# (the contract every learner shares is tests/test_contract.py)


def _arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def test_act_is_the_maximiser_or_it_with_noise_inside_the_box():
    config = small_config(exploration_noise=5.0, maximiser="random")
    state = qt_opt.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS)
    params, obs = state.learner.params, state.env.obs[0]
    key = jax.random.PRNGKey(1)
    greedy = qt_opt.act(params, obs, key, config, deterministic=True)
    search_key, _ = jax.random.split(key)
    best, _ = qt_opt.maximise(qt_opt.member(params.critics, 0), obs, search_key,
                              params.low, params.high, config)
    np.testing.assert_array_equal(greedy, best)
    noisy = jax.vmap(lambda k: qt_opt.act(params, obs, k, config))(
        jax.random.split(jax.random.PRNGKey(2), 64))
    assert noisy.shape == (64, 1)
    assert np.all(np.abs(np.asarray(noisy)) <= 2.0) and np.any(np.abs(np.asarray(noisy)) == 2.0)


def test_action_bounds_come_from_env_params():
    _, small = envs.make("Pendulum-v1", max_torque=0.5)
    state = qt_opt.init(jax.random.PRNGKey(0), small_config(), ENV, small)
    np.testing.assert_array_equal(state.learner.params.high, [0.5])
    action = qt_opt.act(state.learner.params, state.env.obs[0], jax.random.PRNGKey(0),
                        small_config(exploration_noise=5.0))
    assert np.all(np.abs(np.asarray(action)) <= 0.5)


class UserCritic(eqx.Module):
    layer: eqx.nn.Linear

    def __init__(self, key):
        self.layer = eqx.nn.Linear(4, "scalar", key=key)

    def __call__(self, obs, action):
        return self.layer(jnp.concatenate([obs, action]))


def test_bring_your_own_network_and_a_factory_for_twin_critics():
    config = small_config(total_steps=200)
    network = UserCritic(jax.random.PRNGKey(5))
    state, metrics = jax.jit(lambda key, p: qt_opt.train(key, config, ENV, p, network))(
        jax.random.PRNGKey(0), ENV_PARAMS)
    trained = qt_opt.member(state.learner.params.critics, 0)  # all arrays: kept unwrapped
    assert isinstance(trained, UserCritic)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    assert not np.array_equal(trained.layer.weight, network.layer.weight)
    twin = qt_opt.init(jax.random.PRNGKey(0), small_config(clipped_double_q=True), ENV,
                       ENV_PARAMS, UserCritic)
    weights = twin.learner.params.critics.layer.weight
    assert weights.shape[0] == 2 and not np.array_equal(weights[0], weights[1])
    with pytest.raises(ConfigError, match="clipped_double_q=True needs two"):
        qt_opt.init(jax.random.PRNGKey(0), small_config(clipped_double_q=True), ENV,
                    ENV_PARAMS, network)


def test_a_network_with_the_wrong_output_is_refused():
    class Wide(eqx.Module):
        def __call__(self, obs, action):
            return jnp.zeros(3)

    with pytest.raises(ConfigError, match=r"shape \(3,\)"):
        qt_opt.init(jax.random.PRNGKey(0), small_config(), ENV, ENV_PARAMS, Wide())


def test_discrete_env_is_refused_where_config_meets_env():
    env, params = envs.make("CartPole-v1")
    with pytest.raises(ConfigError, match="CartPole-v1.*discrete.*continuous"):
        qt_opt.init(jax.random.PRNGKey(0), small_config(), env, params)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(gamma=0.0), "gamma"),
        (dict(tau=1.5), "tau"),
        (dict(batch_size=400), "batch_size"),
        (dict(num_envs=7), "buffer_size"),
        (dict(num_samples=0), "num_samples"),
        (dict(num_elites=32, num_samples=16), "num_elites"),
        (dict(maximiser="grid"), "maximiser"),
        (dict(exploration="boltzmann"), "exploration"),
        (dict(learning_rate=float("inf")), "learning_rate"),
        (dict(epsilon_end=1.5), "epsilon_end"),
        (dict(hidden=()), "hidden"),
        (dict(tau=np.array([0.01, 2.0])), "tau"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        small_config(**overrides)


def test_fresh_state_can_be_donated():
    config = small_config(learning_starts=0)
    state = qt_opt.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS)
    step = jax.jit(lambda s: qt_opt.step(s, config, ENV, ENV_PARAMS), donate_argnums=0)
    state, _ = step(state)
    state, _ = step(state)
    assert int(state.env_steps) == 2
