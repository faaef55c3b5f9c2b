"""Random shooting and CEM: the returned cost is the cost of the returned plan, random
shooting ignores the order of its samples, CEM converges on a quadratic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        states, cost = EVALUATE(STATE, plan.actions)
        np.testing.assert_allclose(plan.cost, cost, rtol=1e-6)
        for got, want in zip(jax.tree.leaves(plan.states), jax.tree.leaves(states)):
            np.testing.assert_allclose(got, want, rtol=1e-6)
        assert jax.tree.leaves(plan.states)[0].shape[0] == H + 1
        assert bool(jnp.all((plan.actions >= LOW) & (plan.actions <= HIGH)))


BEST_OF = jax.jit(
    lambda state, candidates: shooting.best_of(point_mass, state, candidates, final_cost)
)
EVALUATE = jax.jit(lambda state, actions: shooting.evaluate(point_mass, state, actions, final_cost))


@given(st.integers(0, 2**31 - 1), st.permutations(range(32)))
def test_random_shooting_is_invariant_to_sample_order(seed, order):
    candidates = jax.random.uniform(jax.random.PRNGKey(seed), (32, H, M), minval=-1, maxval=1)
    a = BEST_OF(STATE, candidates)
    b = BEST_OF(STATE, candidates[np.asarray(order)])
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_allclose(a.cost, b.cost, rtol=1e-6)
    # the best is the brute-force minimum
    costs = [float(EVALUATE(STATE, u)[1]) for u in candidates]
    np.testing.assert_allclose(a.cost, min(costs), rtol=1e-6)


def test_random_shooting_matches_explicit_samples():
    key = jax.random.PRNGKey(3)
    plan = rs(key, STATE)
    samples = jax.random.uniform(key, (64, H, M), minval=LOW, maxval=HIGH)
    np.testing.assert_allclose(
        plan.cost, shooting.best_of(point_mass, STATE, samples, final_cost).cost, rtol=1e-6
    )


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
    with pytest.raises(ValueError, match="num_elites=9 exceeds num_samples=8"):
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
    with pytest.raises(ValueError, match="smoothing"):
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
    with pytest.raises(ValueError, match="low="):
        shooting.random_shooting(
            key, point_mass, STATE, horizon=3, num_samples=4, low=HIGH, high=LOW
        )
    with pytest.raises(ValueError, match="horizon"):
        shooting.random_shooting(
            key, point_mass, STATE, horizon=0, num_samples=4, low=LOW, high=HIGH
        )
