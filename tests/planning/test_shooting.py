"""Random shooting and CEM: the returned cost is the cost of the returned plan (checked
against a NumPy rollout), best-of agrees with a NumPy argmin, random shooting ignores the
order of its samples and beats the lower tail of independent samples, CEM converges on a
quadratic."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl.core.config import ConfigError
from minirl.planning import shooting

pytestmark = pytest.mark.timeout(300)

H, M = 6, 2
LOW, HIGH = -jnp.ones(M), jnp.ones(M)


def point_mass(state, action):
    """A damped double integrator in 2-D with a non-quadratic cost: s = (position, velocity)."""
    position, velocity = state
    velocity = 0.9 * velocity + 0.1 * action
    position = position + 0.1 * velocity
    cost = jnp.sum(jnp.abs(position - 1.0)) + 0.01 * jnp.sum(action**2)
    return (position, velocity), cost


STATE = (jnp.array([0.2, -0.3]), jnp.array([0.0, 0.5]))
final_cost = lambda state: jnp.sum(state[1] ** 2)


def numpy_rollout(state, actions):
    """:func:`point_mass` plus ``final_cost`` in float64 NumPy, for any batch of sequences
    ``actions`` [..., H, M]: the costs [...] and the positions and velocities [..., H+1, 2]."""
    actions = np.asarray(actions, np.float64)
    position, velocity = (
        np.broadcast_to(np.asarray(s, np.float64), (*actions.shape[:-2], 2)) for s in state
    )
    positions, velocities, total = [position], [velocity], 0.0
    for t in range(actions.shape[-2]):
        velocity = 0.9 * velocity + 0.1 * actions[..., t, :]
        position = position + 0.1 * velocity
        total = total + np.abs(position - 1.0).sum(-1) + 0.01 * (actions[..., t, :] ** 2).sum(-1)
        positions.append(position)
        velocities.append(velocity)
    total = total + (velocity**2).sum(-1)
    return total, (np.stack(positions, -2), np.stack(velocities, -2))


@jax.jit
def rs(key, state):
    return shooting.random_shooting(
        key, point_mass, state, horizon=H, num_samples=64, low=LOW, high=HIGH, final_cost=final_cost
    )


@jax.jit
def cem(key, state, init_mean):
    return shooting.cem(
        key,
        point_mass,
        state,
        init_mean,
        num_samples=64,
        num_elites=8,
        iterations=4,
        low=LOW,
        high=HIGH,
        init_std=0.5,
        smoothing=0.2,
        final_cost=final_cost,
    )


@given(st.integers(0, 2**31 - 1))
def test_returned_cost_is_cost_of_returned_plan(seed):
    key = jax.random.PRNGKey(seed)
    for plan in (rs(key, STATE), cem(key, STATE, jnp.zeros((H, M)))):
        cost, states = numpy_rollout(STATE, plan.actions)
        np.testing.assert_allclose(plan.cost, cost, rtol=1e-5)
        for got, want in zip(jax.tree.leaves(plan.states), states):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert jax.tree.leaves(plan.states)[0].shape[0] == H + 1
        assert bool(jnp.all((plan.actions >= LOW) & (plan.actions <= HIGH)))


BEST_OF = jax.jit(
    lambda state, candidates: shooting.best_of(point_mass, state, candidates, final_cost)
)


@given(st.integers(0, 2**31 - 1), st.permutations(range(32)))
def test_random_shooting_is_invariant_to_sample_order(seed, order):
    candidates = jax.random.uniform(jax.random.PRNGKey(seed), (32, H, M), minval=-1, maxval=1)
    a = BEST_OF(STATE, candidates)
    b = BEST_OF(STATE, candidates[np.asarray(order)])
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_allclose(a.cost, b.cost, rtol=1e-6)
    # the best is the brute-force minimum
    costs, _ = numpy_rollout(STATE, candidates)
    np.testing.assert_allclose(a.cost, costs.min(), rtol=1e-5)


BANG_BANG = jnp.asarray(list(itertools.product([-1.0, 1.0], repeat=H * M))).reshape(-1, H, M)


@settings(max_examples=10)
@given(st.lists(st.floats(-1.0, 2.0), min_size=4, max_size=4))
def test_best_of_a_grid_is_the_numpy_argmin(start):
    """All 2^(H·M) bang-bang sequences from a drawn state: best_of returns the NumPy argmin."""
    state = (jnp.asarray(start[:2], jnp.float32), jnp.asarray(start[2:], jnp.float32))
    plan = BEST_OF(state, BANG_BANG)
    costs, _ = numpy_rollout(state, BANG_BANG)
    order = np.argsort(costs)
    np.testing.assert_allclose(plan.cost, costs[order[0]], rtol=1e-5)
    if costs[order[1]] - costs[order[0]] > 1e-4:  # a clear winner: the very same sequence
        np.testing.assert_array_equal(plan.actions, BANG_BANG[order[0]])


@jax.jit
def rs_256(key, state):
    return shooting.random_shooting(
        key,
        point_mass,
        state,
        horizon=H,
        num_samples=256,
        low=LOW,
        high=HIGH,
        final_cost=final_cost,
    )


@settings(max_examples=10)
@given(st.integers(0, 2**31 - 1))
def test_random_shooting_beats_the_lower_tail_of_independent_samples(seed):
    """The best of 256 uniform sequences is below the 5% quantile of the cost of uniform
    sequences (drawn here by NumPy) unless all 256 miss it: probability 0.95^256 ≈ 2e-6."""
    plan = rs_256(jax.random.PRNGKey(seed), STATE)
    cost, _ = numpy_rollout(STATE, plan.actions)
    np.testing.assert_allclose(plan.cost, cost, rtol=1e-5)
    rng = np.random.default_rng(seed)
    costs, _ = numpy_rollout(STATE, rng.uniform(-1.0, 1.0, size=(20_000, H, M)))
    assert cost <= np.quantile(costs, 0.05), (cost, np.quantile(costs, [0.0, 0.05]))
    assert np.all((np.asarray(plan.actions) >= -1.0) & (np.asarray(plan.actions) <= 1.0))


WEIGHTS = jnp.array([1.0, 3.0])


@jax.jit
def cem_on_quadratic(key, target):
    def step(t, action):
        return t + 1, jnp.sum(WEIGHTS * (action - target[t]) ** 2)

    return shooting.cem(
        key,
        step,
        jnp.array(0),
        jnp.zeros((H, M)),
        num_samples=200,
        num_elites=40,
        iterations=40,
        low=-jnp.ones(M),
        high=jnp.ones(M),
        init_std=0.5,
        smoothing=0.3,
    )


@settings(max_examples=10)
@given(
    st.integers(0, 2**31 - 1),
    st.lists(st.floats(-0.8, 0.8), min_size=H * M, max_size=H * M),
)
def test_cem_converges_on_a_quadratic(seed, target):
    """min Σ_t ‖a_t − a*_t‖²_W with a* inside the bounds: CEM finds a*."""
    target = jnp.asarray(target, jnp.float32).reshape(H, M)
    plan = cem_on_quadratic(jax.random.PRNGKey(seed), target)
    np.testing.assert_allclose(plan.actions, target, atol=1e-2)
    assert float(plan.cost) < 1e-4


def test_cem_warm_start_never_worse_than_the_warm_start():
    key = jax.random.PRNGKey(0)
    first = cem(key, STATE, jnp.zeros((H, M)))
    second = cem(jax.random.PRNGKey(1), STATE, first.actions)
    assert float(second.cost) <= float(first.cost) + 1e-6


def test_shift():
    actions = jnp.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(shooting.shift(actions), [[2, 3], [4, 5], [4, 5]])
    np.testing.assert_array_equal(shooting.shift(actions, 0.0), [[2, 3], [4, 5], [0, 0]])


def test_vmap_over_initial_states_equals_loop():
    states = (jnp.array([[0.0, 0.0], [1.0, -1.0]]), jnp.zeros((2, 2)))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    batched = jax.vmap(cem, in_axes=(0, 0, None))(keys, states, jnp.zeros((H, M)))
    for i in range(2):
        single = cem(keys[i], jax.tree.map(lambda x, i=i: x[i], states), jnp.zeros((H, M)))
        np.testing.assert_allclose(batched.actions[i], single.actions, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batched.cost[i], single.cost, rtol=1e-5)


def test_bad_options_raise():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ConfigError, match="num_elites=9 exceeds num_samples=8"):
        shooting.cem(
            key,
            point_mass,
            STATE,
            jnp.zeros((H, M)),
            num_samples=8,
            num_elites=9,
            iterations=1,
            low=LOW,
            high=HIGH,
        )
    with pytest.raises(ConfigError, match="smoothing"):
        shooting.cem(
            key,
            point_mass,
            STATE,
            jnp.zeros((H, M)),
            num_samples=8,
            num_elites=2,
            iterations=1,
            low=LOW,
            high=HIGH,
            smoothing=1.0,
        )
    with pytest.raises(ConfigError, match="low="):
        shooting.random_shooting(
            key, point_mass, STATE, horizon=3, num_samples=4, low=HIGH, high=LOW
        )
    with pytest.raises(ConfigError, match="horizon"):
        shooting.random_shooting(
            key, point_mass, STATE, horizon=0, num_samples=4, low=LOW, high=HIGH
        )
    with pytest.raises(ConfigError, match="high=inf"):
        shooting.random_shooting(
            key, point_mass, STATE, horizon=3, num_samples=4, low=LOW, high=jnp.inf
        )
    with pytest.raises(ConfigError, match="init_mean"):
        shooting.cem(
            key,
            point_mass,
            STATE,
            jnp.zeros(H),
            num_samples=8,
            num_elites=2,
            iterations=1,
            low=LOW,
            high=HIGH,
        )


def test_cem_accepts_open_bounds():
    """An infinite bound means that side is open: CEM on the quadratic with no box at all."""

    def step(t, action):
        return t + 1, jnp.sum((action - 3.0) ** 2)

    plan = shooting.cem(
        jax.random.PRNGKey(0),
        step,
        jnp.array(0),
        jnp.zeros((2, 1)),
        num_samples=200,
        num_elites=20,
        iterations=30,
        low=-jnp.inf,
        high=jnp.inf,
        init_std=4.0,
    )
    np.testing.assert_allclose(plan.actions, 3.0, atol=0.05)
