"""Soft Q-learning: the soft Bellman operator (through soft_q's own targets) against dense
tabular references, the soft value's bounds and hard limit, the Boltzmann policy against a
brute-force search of the simplex, and the contract's transformations, errors and resume."""

import functools
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirl import envs
from minirl.algos import soft_q
from minirl.core import exploration, losses, rollout
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(900)

SEEDS = st.integers(0, 2**32 - 1)
SMALL = dict(total_steps=400, buffer_size=400, batch_size=16, learning_starts=100,
             hidden=(16,), target_update_period=50)
ENV, ENV_PARAMS = envs.make("CartPole-v1")


def small_config(**overrides) -> soft_q.Config:
    return soft_q.Config(**{**SMALL, **overrides})


class TableQ(eqx.Module):
    """Q(s, ·) = table[s] for integer observations ``[1]``: makes targets exact."""

    table: jax.Array

    def __call__(self, obs):
        return self.table[obs.astype(jnp.int32)[0]]


# ----------------------------------------------------------------------------- the soft Bellman
# operator, (T Q)(s, a) = R(s, a) + γ Σ_s' P(s'|s, a) (1 − T(s, a, s')) V_α(Q)(s'), assembled
# from soft_q.soft_targets on every (s, a, s') of a random MDP (probability-weighted).


def random_mdp(seed: int, S: int, A: int):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(S, 0.5), size=(S, A))  # [S, A, S']
    R = rng.normal(size=(S, A))
    terminal = rng.random((S, A, S)) < 0.2  # whether s → s' terminates
    return rng, P, R, terminal


def soft_bellman(q, alpha, gamma, P, R, terminal):
    S, A = R.shape
    s, a, s_next = (np.array(x) for x in zip(*itertools.product(range(S), range(A), range(S))))
    batch = rollout.Transition(
        obs=jnp.asarray(s[:, None]), action=jnp.asarray(a), reward=jnp.asarray(R[s, a]),
        next_obs=jnp.asarray(s_next[:, None]), terminated=jnp.asarray(terminal[s, a, s_next]),
        truncated=jnp.zeros(len(s), bool),
    )
    config = small_config(gamma=gamma)
    targets = np.asarray(soft_q.soft_targets(None, TableQ(jnp.asarray(q)), batch, alpha, config))
    return np.einsum("sat,sat->sa", P, targets.reshape(S, A, S))


def in_x64(test):
    """Run ``test`` in float64 (the tabular references need the precision)."""

    @functools.wraps(test)
    def wrapped(*args, **kwargs):
        with jax.enable_x64(True):
            return test(*args, **kwargs)

    return wrapped


@given(SEEDS, st.sampled_from([2, 3, 5]), st.sampled_from([2, 3]), st.floats(0.01, 0.99),
       st.floats(0.01, 10.0))
@in_x64
def test_soft_bellman_operator_is_a_gamma_contraction(seed, S, A, gamma, alpha):
    rng, P, R, terminal = random_mdp(seed, S, A)
    q1, q2 = rng.normal(scale=5.0, size=(2, S, A))
    gap = np.max(np.abs(soft_bellman(q1, alpha, gamma, P, R, terminal)
                        - soft_bellman(q2, alpha, gamma, P, R, terminal)))
    assert gap <= gamma * np.max(np.abs(q1 - q2)) + 1e-10


@settings(max_examples=5)
@given(SEEDS, st.sampled_from([2, 3]), st.floats(0.1, 2.0))
@in_x64
def test_soft_value_iteration_fixed_point_is_the_soft_optimum(seed, A, alpha):
    """Iterating T reaches Q* with T Q* = Q*, and the Boltzmann policy of Q* is soft-greedy:
    its entropy-regularised evaluation (a dense linear solve) gives Q* back."""
    S, gamma = 3, 0.8
    _, P, R, terminal = random_mdp(seed, S, A)
    q = np.zeros((S, A))
    for _ in range(300):
        q = soft_bellman(q, alpha, gamma, P, R, terminal)
    np.testing.assert_allclose(soft_bellman(q, alpha, gamma, P, R, terminal), q, atol=1e-9)
    pi = np.asarray(exploration.boltzmann_probs(jnp.asarray(q), alpha))  # [S, A]
    entropy = -np.sum(pi * np.log(pi), axis=1)
    # Q^π = R + γ Σ_s' P (1 − T) [Σ_a' π(a'|s') Q^π(s', a') + α H(π(·|s'))], solved densely.
    M = np.einsum("sat,tb->satb", P * ~terminal, pi).reshape(S * A, S * A)
    bonus = gamma * np.einsum("sat,t->sa", P * ~terminal, alpha * entropy).reshape(-1)
    q_pi = np.linalg.solve(np.eye(S * A) - gamma * M, R.reshape(-1) + bonus).reshape(S, A)
    np.testing.assert_allclose(q_pi, q, atol=1e-8)


# ----------------------------------------------------------------------------- the soft value


@given(SEEDS, st.sampled_from([1, 2, 5, 20]), st.floats(1e-3, 100.0))
@in_x64
def test_soft_value_lies_between_max_and_max_plus_alpha_log_a(seed, A, alpha):
    q = np.random.default_rng(seed).normal(scale=10.0, size=(4, A))
    v = np.asarray(losses.soft_value(jnp.asarray(q), alpha))
    top = q.max(axis=1)
    assert np.all(v >= top - 1e-9)
    assert np.all(v <= top + alpha * np.log(A) + 1e-9)


@given(SEEDS, st.sampled_from([2, 5]))
@in_x64
def test_soft_value_tends_to_the_hard_max_as_alpha_goes_to_zero(seed, A):
    q = np.random.default_rng(seed).normal(scale=3.0, size=(6, A))
    gaps = [np.max(np.abs(np.asarray(losses.soft_value(jnp.asarray(q), alpha)) - q.max(1)))
            for alpha in (1.0, 1e-2, 1e-4, 1e-8)]
    assert gaps[-1] <= 1e-8 * np.log(A) + 1e-12
    assert all(a >= b - 1e-12 for a, b in zip(gaps, gaps[1:]))  # monotone in α
    # ... and the Boltzmann policy tends to the greedy one (ties have probability 0 here).
    pi = np.asarray(exploration.boltzmann_probs(jnp.asarray(q), 1e-8))
    np.testing.assert_allclose(pi, np.eye(A)[q.argmax(1)], atol=1e-12)


def simplex_grid(A: int, n: int) -> np.ndarray:
    """Every π on the simplex with coordinates in multiples of 1/n: ``[G, A]``."""
    points = [c for c in itertools.product(range(n + 1), repeat=A - 1) if sum(c) <= n]
    grid = np.array([(*c, n - sum(c)) for c in points], float) / n
    return grid


@settings(max_examples=10)
@given(SEEDS, st.sampled_from([2, 3]), st.floats(0.05, 5.0))
@in_x64
def test_boltzmann_policy_maximises_expected_q_plus_alpha_entropy(seed, A, alpha):
    """max_π E_π[Q] + αH(π) over a fine grid of the simplex is attained (up to the grid's
    resolution) by π = softmax(Q/α), whose objective is the soft value α log Σ exp(Q/α)."""
    q = np.random.default_rng(seed).normal(scale=2.0, size=A)
    grid = simplex_grid(A, 2000 if A == 2 else 300)

    def objective(pi):
        safe = np.where(pi > 0, pi, 1.0)
        return pi @ q - alpha * np.sum(pi * np.log(safe), axis=-1)

    best = objective(grid).max()
    pi = np.asarray(exploration.boltzmann_probs(jnp.asarray(q), alpha))
    soft = float(losses.soft_value(jnp.asarray(q), alpha))
    np.testing.assert_allclose(objective(pi), soft, rtol=1e-12, atol=1e-12)
    assert best <= soft + 1e-12  # nothing on the grid beats the Boltzmann policy
    assert best >= soft - 2e-3 * (1.0 + alpha)  # and the grid gets close to it
    assert np.isclose(float(losses.policy_soft_value(jnp.asarray(pi), jnp.log(pi),
                                                     jnp.asarray(q), alpha)), soft)


# ----------------------------------------------------------------------------- episode ends


def test_truncation_bootstraps_from_the_final_observation_and_termination_cuts():
    q = jnp.arange(12.0).reshape(4, 3)  # V_α(s = 3) = α log Σ exp([9, 10, 11]/α)
    batch = rollout.Transition(
        obs=jnp.zeros((3, 1)), action=jnp.zeros(3, jnp.int32), reward=jnp.ones(3),
        next_obs=jnp.array([[3], [3], [3]]),
        terminated=jnp.array([False, True, False]), truncated=jnp.array([True, False, False]),
    )
    targets = soft_q.soft_targets(None, TableQ(q), batch, 0.5, small_config(gamma=0.5))
    v3 = 0.5 * np.log(np.sum(np.exp(np.array([9.0, 10.0, 11.0]) / 0.5)))
    np.testing.assert_allclose(targets, [1.0 + 0.5 * v3, 1.0, 1.0 + 0.5 * v3], rtol=1e-6)


@given(SEEDS, st.sampled_from([2, 3, 5]), st.floats(0.05, 5.0))
@in_x64
def test_double_soft_target_is_below_the_plain_one_and_equal_for_equal_networks(seed, A, alpha):
    """The double soft value Σπ_θ(Q_θ̄ − α log π_θ) is E_π[Q_θ̄] + αH(π) for one π, and the
    log-sum-exp is its maximum over the simplex: never above the plain target, equal when
    θ = θ̄. The reference maximum is a brute-force search over a grid of the simplex."""
    rng = np.random.default_rng(seed)
    S = 4
    online, target = rng.normal(size=(S, A)) * 3, rng.normal(size=(S, A)) * 3
    batch = rollout.Transition(
        obs=jnp.zeros((S, 1)), action=jnp.zeros(S, jnp.int32), reward=jnp.zeros(S),
        next_obs=jnp.arange(S)[:, None], terminated=jnp.zeros(S, bool),
        truncated=jnp.zeros(S, bool),
    )
    config = small_config(gamma=1.0)
    double = small_config(gamma=1.0, double_q=True)
    plain = np.asarray(soft_q.soft_targets(None, TableQ(jnp.asarray(target)), batch, alpha,
                                           config))
    decoupled = np.asarray(soft_q.soft_targets(TableQ(jnp.asarray(online)),
                                               TableQ(jnp.asarray(target)), batch, alpha, double))
    same = np.asarray(soft_q.soft_targets(TableQ(jnp.asarray(target)),
                                          TableQ(jnp.asarray(target)), batch, alpha, double))
    assert np.all(decoupled <= plain + 1e-9)
    np.testing.assert_allclose(same, plain, rtol=1e-9, atol=1e-9)
    # the online policy's value by hand: E_π[Q̄] + αH(π), π = softmax(Q_θ/α)
    logits = online / alpha
    pi = np.exp(logits - logits.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    by_hand = np.sum(pi * target, 1) - alpha * np.sum(pi * np.log(pi), 1)
    np.testing.assert_allclose(decoupled, by_hand, rtol=1e-9, atol=1e-9)
    if A == 2:  # brute force over the simplex: the plain target is the maximum
        p = np.linspace(1e-6, 1 - 1e-6, 20001)[:, None]
        grid = np.concatenate([p, 1 - p], 1)
        values = grid @ target.T - alpha * np.sum(grid * np.log(grid), 1)[:, None]
        assert np.all(values.max(0) <= plain + 1e-9)  # no π beats the log-sum-exp …
        np.testing.assert_allclose(values.max(0), plain, atol=1e-4)  # … and the grid's best
        # reaches it to the grid's resolution


# ----------------------------------------------------------------------------- N-step
# The soft N-step target against N applications of the dense soft policy-evaluation operator
# T^π Q(s, a) = R(s, a) + γ Σ_s' P(s'|s, a)(1 − T(s, a, s')) Σ_a' π(a'|s')[Q(s', a') − α log π],
# by exact enumeration of every window of a random MDP whose actions are drawn from π.


def soft_policy_evaluation(q, pi, alpha, gamma, P, R, terminal):
    value = np.sum(pi * (q - alpha * np.log(pi)), axis=1)  # [S]
    return R + gamma * np.einsum("sat,sat,t->sa", P, 1.0 - terminal, value)


def every_window(P, R, terminal, pi, n):
    """Every window (s_0, a_0, …, s_N) of the MDP with a_k ~ π for k ≥ 1, stacked as a
    soft_q.Batch, and its probability given (s_0, a_0)."""
    S, A = R.shape
    windows, probs = [], []
    for s0, a0 in itertools.product(range(S), range(A)):
        for rest in itertools.product(*([range(S), range(A)] * (n - 1) + [range(S)])):
            states = [s0, *rest[0::2]]
            actions = [a0, *rest[1::2]]
            prob = 1.0
            for k in range(n):
                prob *= P[states[k], actions[k], states[k + 1]]
                if k + 1 < n:
                    prob *= pi[states[k + 1], actions[k + 1]]
            windows.append((states, actions))
            probs.append(prob)
    states = np.array([w[0] for w in windows])  # [W, N+1]
    actions = np.array([w[1] for w in windows])  # [W, N]
    s, s_next = states[:, :-1], states[:, 1:]
    batch = soft_q.Batch(
        transitions=rollout.Transition(
            obs=jnp.asarray(s[..., None]), action=jnp.asarray(actions),
            reward=jnp.asarray(R[s, actions]), next_obs=jnp.asarray(s_next[..., None]),
            terminated=jnp.asarray(terminal[s, actions, s_next]),
            truncated=jnp.zeros(s.shape, bool),
        ),
        valid=jnp.ones(s.shape, bool),
    )
    return batch, np.array(probs).reshape(S, A, -1)


def boltzmann(q, alpha):
    logits = q / alpha
    pi = np.exp(logits - logits.max(1, keepdims=True))
    return pi / pi.sum(1, keepdims=True)


@settings(max_examples=20)
@given(SEEDS, st.sampled_from([1, 2, 3]), st.floats(0.05, 0.99), st.floats(0.1, 5.0),
       st.booleans())
@in_x64
def test_n_step_soft_target_is_n_soft_policy_evaluations_in_expectation(
    seed, n, gamma, alpha, double_q
):
    """E_π[G_0] = (T^π)^N Q_θ̄ (s_0, a_0) with π = softmax(Q_sel/α), Q_sel the target network
    (soft Q) or the online one (double soft Q)."""
    rng, P, R, terminal = random_mdp(seed, 3, 2)
    target, online = rng.normal(size=(3, 2)) * 2, rng.normal(size=(3, 2)) * 2
    pi = boltzmann(online if double_q else target, alpha)
    batch, probs = every_window(P, R, terminal, pi, n)
    config = small_config(gamma=gamma, n_step=n, double_q=double_q)
    targets = np.asarray(soft_q.n_step_soft_targets(
        TableQ(jnp.asarray(online)), TableQ(jnp.asarray(target)), batch, alpha, config))
    expected_targets = np.sum(probs * targets.reshape(probs.shape), axis=-1)
    reference = target
    for _ in range(n):
        reference = soft_policy_evaluation(reference, pi, alpha, gamma, P, R, terminal)
    np.testing.assert_allclose(np.sum(probs, -1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(expected_targets, reference, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("double_q", [False, True])
def test_a_window_stops_at_episode_ends_and_at_the_newest_item(double_q):
    """A window that ends after its first step (termination, truncation, or a second item not
    yet written) has the one-step target of its first transition, whatever follows."""
    rng = np.random.default_rng(0)
    online, target = TableQ(jnp.asarray(rng.normal(size=(4, 3)))), TableQ(
        jnp.asarray(rng.normal(size=(4, 3))))
    B, N = 4, 3
    transitions = rollout.Transition(
        obs=jnp.asarray(rng.integers(0, 4, (B, N, 1))), action=jnp.asarray(
            rng.integers(0, 3, (B, N))), reward=jnp.asarray(rng.normal(size=(B, N))),
        next_obs=jnp.asarray(rng.integers(0, 4, (B, N, 1))),
        terminated=jnp.array([[True, False, False], [False] * 3, [False] * 3, [False] * 3]),
        truncated=jnp.array([[False] * 3, [True, False, False], [False] * 3, [False] * 3]),
    )
    valid = jnp.array([[True] * 3, [True] * 3, [True, False, False], [True] * 3])
    config = small_config(gamma=0.9, n_step=N, double_q=double_q)
    windows = soft_q.n_step_soft_targets(online, target, soft_q.Batch(transitions, valid), 0.7,
                                         config)
    first = jax.tree.map(lambda x: x[:, 0], transitions)
    one_step = soft_q.soft_targets(online, target, first, 0.7, config)
    np.testing.assert_allclose(windows[:3], one_step[:3], rtol=1e-6)
    assert not np.isclose(windows[3], one_step[3])  # the full window does continue
    # a replayed action enters only through its reward and next state: the entropy bonus is
    # the exact αH(π), not −α log π of the stored action (which π may almost never take)
    other = transitions.action.at[:, 1:].set((transitions.action[:, 1:] + 1) % 3)
    relabelled = soft_q.Batch(eqx.tree_at(lambda t: t.action, transitions, other), valid)
    np.testing.assert_allclose(
        soft_q.n_step_soft_targets(online, target, relabelled, 0.7, config), windows, rtol=1e-6)
    # and a window of one step is the one-step target
    ones = soft_q.Batch(jax.tree.map(lambda x: x[:, :1], transitions), valid[:, :1])
    np.testing.assert_allclose(
        soft_q.n_step_soft_targets(online, target, ones, 0.7, small_config(gamma=0.9,
                                                                           double_q=double_q)),
        one_step, rtol=1e-6)


# ---------------------------------------------------------------- env, networks, config
# (the contract every learner shares is tests/test_contract.py)

def arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def test_act_greedy_and_boltzmann():
    config = small_config(alpha_end=1e-3)
    state = soft_q.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS)
    params, obs = state.learner.params, state.env.obs[0]
    greedy = soft_q.act(params, obs, jax.random.PRNGKey(1), config, deterministic=True)
    assert greedy == jnp.argmax(params(obs))
    keys = jax.random.split(jax.random.PRNGKey(2), 2000)
    samples = jax.vmap(lambda k: soft_q.act(params, obs, k, small_config(alpha_end=0.05)))(keys)
    freq = np.bincount(np.asarray(samples), minlength=2) / 2000
    want = np.asarray(exploration.boltzmann_probs(params(obs), 0.05))
    np.testing.assert_allclose(freq, want, atol=0.04)


def test_the_temperature_anneals_geometrically_over_the_updates():
    config = small_config(alpha_start=1.0, alpha_end=0.01, alpha_fraction=0.5)
    half = config.alpha_fraction * config.num_updates
    np.testing.assert_allclose(soft_q.temperature(jnp.asarray(0), config), 1.0)
    np.testing.assert_allclose(soft_q.temperature(jnp.asarray(half / 2), config), 0.1,
                               rtol=1e-5)
    np.testing.assert_allclose(soft_q.temperature(jnp.asarray(10 * half), config), 0.01,
                               rtol=1e-6)


def test_continuous_env_is_refused_where_config_meets_env():
    env, params = envs.make("Pendulum-v1")
    with pytest.raises(ConfigError, match="Pendulum-v1.*continuous.*discrete"):
        soft_q.init(jax.random.PRNGKey(0), small_config(), env, params)


def test_a_network_with_the_wrong_output_is_refused():
    bad = eqx.nn.Linear(4, 3, key=jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match=r"shape \(3,\).*\(2,\)"):
        soft_q.init(jax.random.PRNGKey(0), small_config(), ENV, ENV_PARAMS, bad)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(gamma=0.0), "gamma"),
        (dict(alpha_start=0.0), "alpha_start"),
        (dict(alpha_end=-1.0), "alpha_end"),
        (dict(alpha_end=float("nan")), "alpha_end"),
        (dict(alpha_fraction=1.5), "alpha_fraction"),
        (dict(batch_size=500), "batch_size"),
        (dict(learning_rate=float("inf")), "learning_rate"),
        (dict(tau=0.0), "tau"),
        (dict(target_update="soft"), "target_update"),
        (dict(loss="l1"), "loss"),
        (dict(hidden=()), "hidden"),
        (dict(n_step=0), "n_step"),
        (dict(learning_rate=np.array([1e-3, -1.0])), "learning_rate"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        small_config(**overrides)
