"""The hard Bellman optimality operator built on minirl's Q-learning target value is a
γ-contraction in sup norm and monotone, on random tabular MDPs; so is its Double-Q
variant's evaluation operator (a fixed online table makes it a policy-evaluation operator)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minirl.core.losses import q_learning_target_value

pytestmark = pytest.mark.timeout(120)

SEEDS = st.integers(0, 2**32 - 1)
STATES = st.sampled_from([2, 3, 5])
ACTIONS = st.sampled_from([2, 3])
GAMMAS = st.floats(0.0, 0.99)


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


@jax.jit
def bellman(q, rewards, transitions, gamma):
    """(T Q)(s, a) = R(s, a) + γ Σ_s' P(s'|s, a) max_a' Q(s', a')."""
    next_value = q_learning_target_value(q, q, double_q=False)  # [S]
    return rewards + gamma * jnp.einsum("sat,t->sa", transitions, next_value)


def random_mdp(seed, S, A):
    rng = np.random.default_rng(seed)
    transitions = rng.dirichlet(np.full(S, 0.5), size=(S, A))  # [S, A, S']
    rewards = rng.normal(size=(S, A))
    q1 = rng.normal(scale=5.0, size=(S, A))
    q2 = rng.normal(scale=5.0, size=(S, A))
    return rng, rewards, transitions, q1, q2


def sup(x):
    return float(np.max(np.abs(x)))


@given(SEEDS, STATES, ACTIONS, GAMMAS)
def test_hard_bellman_operator_is_a_gamma_contraction(seed, S, A, gamma):
    _, rewards, transitions, q1, q2 = random_mdp(seed, S, A)
    gap = sup(bellman(q1, rewards, transitions, gamma) - bellman(q2, rewards, transitions, gamma))
    assert gap <= gamma * sup(q1 - q2) + 1e-12


@given(SEEDS, STATES, ACTIONS, GAMMAS)
def test_hard_bellman_operator_is_monotone(seed, S, A, gamma):
    rng, rewards, transitions, q1, _ = random_mdp(seed, S, A)
    q2 = q1 + rng.uniform(0.0, 1.0, size=q1.shape)  # q2 ≥ q1 pointwise
    t1 = np.asarray(bellman(q1, rewards, transitions, gamma))
    t2 = np.asarray(bellman(q2, rewards, transitions, gamma))
    assert (t2 >= t1 - 1e-12).all()


@given(SEEDS, STATES, ACTIONS, st.floats(0.0, 0.9))
def test_value_iteration_reaches_the_fixed_point(seed, S, A, gamma):
    # Banach: ‖T^k Q − Q*‖ ≤ γ^k ‖Q − Q*‖; after enough iterations T Q = Q.
    _, rewards, transitions, q, _ = random_mdp(seed, S, A)
    for _ in range(400):
        q = bellman(q, rewards, transitions, gamma)
    np.testing.assert_allclose(bellman(q, rewards, transitions, gamma), q, atol=1e-10)
    # Q* is bounded by max |R| / (1 − γ).
    assert sup(q) <= sup(rewards) / (1.0 - gamma) + 1e-9
