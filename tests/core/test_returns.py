"""Properties of minirl.core.returns: GAE, λ-, N-step, off-policy N-step and discounted
returns against plain numpy loops, their limits (λ = 0, λ = 1, N = 1, N ≥ episode), and
the gymnax 1.x episode-end semantics (termination cuts the bootstrap, truncation
bootstraps from V(final observation), nothing of the next episode leaks backwards)."""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minirl.core import returns

pytestmark = pytest.mark.timeout(120)

TIMES = st.sampled_from([1, 2, 3, 5, 8])
BATCHES = st.sampled_from([(), (3,)])
SEEDS = st.integers(0, 2**32 - 1)
GAMMAS = st.floats(0.0, 1.0)
LAMS = st.floats(0.0, 1.0)
WINDOWS = st.sampled_from([1, 2, 3, 5])

# Jitted once per shape (shapes come from small sets); x64 is a separate cache entry.
gae = jax.jit(returns.gae)
lambda_return = jax.jit(returns.lambda_return)
discounted_return = jax.jit(returns.discounted_return)
n_step_return = jax.jit(returns.n_step_return)
off_policy_n_step_return = jax.jit(returns.off_policy_n_step_return)


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


def trajectory(seed, T, batch, p_term=0.2, p_trunc=0.2):
    rng = np.random.default_rng(seed)
    shape = (T, *batch)
    return dict(
        rewards=rng.normal(size=shape),
        values=rng.normal(size=shape),
        next_values=rng.normal(size=shape),
        terminated=rng.random(shape) < p_term,
        truncated=rng.random(shape) < p_trunc,
    )


def gae_reference(rewards, values, next_values, terminated, truncated, gamma, lam):
    """A_t = δ_t + γλ(1 − (term_t ∨ trunc_t)) A_{t+1}, written as a plain loop."""
    advantages = np.zeros_like(rewards)
    following = np.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * next_values[t] - values[t]
        following = delta + gamma * lam * (1.0 - (terminated[t] | truncated[t])) * following
        advantages[t] = following
    return advantages


def call_gae(traj, gamma, lam):
    return np.asarray(gae(**traj, gamma=gamma, lam=lam))


# ----------------------------------------------------------------------------- GAE


@given(SEEDS, TIMES, BATCHES, GAMMAS, LAMS)
def test_gae_matches_recursion(seed, T, batch, gamma, lam):
    traj = trajectory(seed, T, batch)
    np.testing.assert_allclose(
        call_gae(traj, gamma, lam),
        gae_reference(**traj, gamma=gamma, lam=lam),
        rtol=1e-10,
        atol=1e-10,
    )


@given(SEEDS, TIMES, BATCHES, GAMMAS)
def test_gae_lambda_zero_is_td_error(seed, T, batch, gamma):
    traj = trajectory(seed, T, batch)
    delta = (
        traj["rewards"] + gamma * (1.0 - traj["terminated"]) * traj["next_values"] - traj["values"]
    )
    np.testing.assert_allclose(call_gae(traj, gamma, 0.0), delta, rtol=1e-10, atol=1e-10)


@given(SEEDS, TIMES, BATCHES, GAMMAS)
def test_gae_lambda_one_is_monte_carlo_minus_value(seed, T, batch, gamma):
    # No episode ends, consistent values (next_values[t] = values[t+1]): A_t is the
    # discounted return bootstrapped from next_values[-1], minus V(s_t).
    traj = trajectory(seed, T, batch, p_term=0.0, p_trunc=0.0)
    traj["next_values"][:-1] = traj["values"][1:]
    rewards = traj["rewards"]
    monte_carlo = np.zeros_like(rewards)
    for t in range(T):
        g = gamma ** (T - t) * traj["next_values"][-1]
        for k in range(t, T):
            g = g + gamma ** (k - t) * rewards[k]
        monte_carlo[t] = g
    np.testing.assert_allclose(
        call_gae(traj, gamma, 1.0), monte_carlo - traj["values"], rtol=1e-9, atol=1e-9
    )


@given(SEEDS, TIMES, BATCHES, GAMMAS, LAMS)
def test_gae_plus_value_is_textbook_lambda_return(seed, T, batch, gamma, lam):
    # With consistent values within episodes, A + V is the recursive λ-return
    # G_t = r_t + γ(1−term_t)[(1 − λc_t) V(s_{t+1}) + λc_t G_{t+1}],  c_t = 1 − done_t,
    # G_T = next_values[-1] (Sutton & Barto, 2018, eq. 12.18 with episode ends).
    traj = trajectory(seed, T, batch)
    done = traj["terminated"] | traj["truncated"]
    traj["next_values"][:-1] = np.where(done[:-1], traj["next_values"][:-1], traj["values"][1:])
    expected = np.zeros_like(traj["rewards"])
    following = traj["next_values"][-1]
    for t in reversed(range(T)):
        c = 1.0 - done[t]
        following = traj["rewards"][t] + gamma * (1.0 - traj["terminated"][t]) * (
            (1.0 - lam * c) * traj["next_values"][t] + lam * c * following
        )
        expected[t] = following
    lam_ret = np.asarray(lambda_return(**traj, gamma=gamma, lam=lam))
    np.testing.assert_allclose(lam_ret, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        lam_ret, call_gae(traj, gamma, lam) + traj["values"], rtol=1e-12, atol=1e-12
    )


@given(SEEDS, st.sampled_from([2, 3, 5, 8]), GAMMAS, LAMS, st.data())
def test_gae_nothing_leaks_back_across_an_episode_end(seed, T, gamma, lam, data):
    traj = trajectory(seed, T, ())
    t = data.draw(st.integers(0, T - 2), label="end")
    if data.draw(st.booleans(), label="terminated"):
        traj["terminated"][t] = True
    else:
        traj["truncated"][t] = True
    before = call_gae(traj, gamma, lam)
    other = trajectory(seed + 1, T, ())
    changed = {name: np.concatenate([traj[name][: t + 1], other[name][t + 1 :]]) for name in traj}
    after = call_gae(changed, gamma, lam)
    np.testing.assert_allclose(after[: t + 1], before[: t + 1], rtol=1e-12, atol=1e-12)


@given(SEEDS, TIMES, st.floats(0.05, 1.0), LAMS, st.data())
def test_gae_truncation_bootstraps_from_final_observation(seed, T, gamma, lam, data):
    traj = trajectory(seed, T, ())
    t = data.draw(st.integers(0, T - 1), label="truncated step")
    traj["truncated"][t], traj["terminated"][t] = True, False
    before = call_gae(traj, gamma, lam)
    # The reset observation's value V(s_{t+1}) = values[t+1] does not enter A_t ...
    if t + 1 < T:
        changed = {**traj, "values": traj["values"].copy()}
        changed["values"][t + 1] += 10.0
        np.testing.assert_allclose(call_gae(changed, gamma, lam)[t], before[t], rtol=1e-12)
    # ... but V(final observation) = next_values[t] does, with weight γ.
    changed = {**traj, "next_values": traj["next_values"].copy()}
    changed["next_values"][t] += 1.0
    np.testing.assert_allclose(call_gae(changed, gamma, lam)[t] - before[t], gamma, rtol=1e-9)


@given(SEEDS, TIMES, GAMMAS, LAMS, st.data())
def test_gae_termination_ignores_next_value(seed, T, gamma, lam, data):
    traj = trajectory(seed, T, ())
    t = data.draw(st.integers(0, T - 1), label="terminated step")
    traj["terminated"][t] = True
    traj["truncated"][t] = data.draw(st.booleans(), label="also truncated")
    before = call_gae(traj, gamma, lam)
    changed = {**traj, "next_values": traj["next_values"].copy()}
    changed["next_values"][t] += 10.0
    np.testing.assert_allclose(call_gae(changed, gamma, lam), before, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- discounted


@given(SEEDS, TIMES, BATCHES)
def test_discounted_return_matches_loop(seed, T, batch):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, *batch))
    discounts = rng.uniform(0.0, 1.0, size=(T, *batch)) * (rng.random((T, *batch)) < 0.8)
    bootstrap = rng.normal(size=batch)
    expected = np.zeros_like(rewards)
    g = bootstrap
    for t in reversed(range(T)):
        g = rewards[t] + discounts[t] * g
        expected[t] = g
    np.testing.assert_allclose(
        discounted_return(rewards, discounts, bootstrap), expected, rtol=1e-10, atol=1e-10
    )


# ----------------------------------------------------------------------------- N-step


def window(seed, N, p_end=0.3):
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.0, 1.0)
    terminated = rng.random(N) < p_end
    return dict(
        rewards=rng.normal(size=N),
        discounts=gamma * (1.0 - terminated),
        next_values=rng.normal(size=N),
        continues=rng.random(N) > p_end,
    )


def n_step_reference(rewards, discounts, next_values, continues):
    """Σ_{k<m} (Π_{j<k} d_j) r_k + (Π_{j<m} d_j) v_{m-1}, m = first k+1 with ¬continues[k]."""
    N = len(rewards)
    m = next((k + 1 for k in range(N) if not continues[k]), N)
    g, product = 0.0, 1.0
    for k in range(m):
        g += product * rewards[k]
        product *= discounts[k]
    return g + product * next_values[m - 1]


def off_policy_reference(rewards, discounts, next_values, next_q_taken, traces):
    """G_k = r_k + d_k [v_k + c_k (G_{k+1} − q_k)],  G_{N-1} = r_{N-1} + d_{N-1} v_{N-1}."""
    N = len(rewards)
    g = rewards[-1] + discounts[-1] * next_values[-1]
    for k in reversed(range(N - 1)):
        g = rewards[k] + discounts[k] * (next_values[k] + traces[k] * (g - next_q_taken[k]))
    return g


@given(SEEDS, WINDOWS)
def test_n_step_return_matches_brute_force(seed, N):
    w = window(seed, N)
    np.testing.assert_allclose(n_step_return(**w), n_step_reference(**w), rtol=1e-10, atol=1e-10)


@given(SEEDS)
def test_one_step_return_is_td_target(seed):
    w = window(seed, 1)
    expected = w["rewards"][0] + w["discounts"][0] * w["next_values"][0]
    np.testing.assert_allclose(n_step_return(**w), expected, rtol=1e-12)


@given(SEEDS, WINDOWS, st.data())
def test_n_step_covering_a_terminated_episode_is_full_return(seed, N, data):
    # The episode ends by termination at step L-1 ≤ N-1; what follows in the window
    # (the next episode) is multiplied by d_{L-1} = 0, even with every continue True.
    L = data.draw(st.integers(1, N), label="episode length")
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.0, 1.0)
    rewards = rng.normal(size=N)
    discounts = np.full(N, gamma)
    discounts[L - 1] = 0.0
    w = dict(
        rewards=rewards,
        discounts=discounts,
        next_values=rng.normal(size=N),
        continues=np.ones(N, bool),
    )
    full = sum(gamma**k * rewards[k] for k in range(L))
    np.testing.assert_allclose(n_step_return(**w), full, rtol=1e-10, atol=1e-10)


@given(SEEDS, WINDOWS)
def test_off_policy_return_matches_recursion(seed, N):
    rng = np.random.default_rng(seed)
    w = window(seed, N)
    del w["continues"]
    q = rng.normal(size=N)
    traces = rng.uniform(0.0, 2.0, size=N)
    np.testing.assert_allclose(
        off_policy_n_step_return(**w, next_q_taken=q, traces=traces),
        off_policy_reference(**w, next_q_taken=q, traces=traces),
        rtol=1e-10,
        atol=1e-10,
    )


@given(SEEDS, WINDOWS)
def test_off_policy_special_cases(seed, N):
    rng = np.random.default_rng(seed)
    w = window(seed, N)
    continues = w.pop("continues")
    q = rng.normal(size=N)
    # c = 1 with q = v: the uncorrected N-step return, whatever q would have been.
    np.testing.assert_allclose(
        off_policy_n_step_return(**w, next_q_taken=w["next_values"], traces=np.ones(N)),
        n_step_return(**w, continues=np.ones(N, bool)),
        rtol=1e-10,
        atol=1e-10,
    )
    # c = continues (0/1) with q = v: n_step_return's window cut.
    np.testing.assert_allclose(
        off_policy_n_step_return(**w, next_q_taken=w["next_values"], traces=continues * 1.0),
        n_step_reference(**w, continues=continues),
        rtol=1e-10,
        atol=1e-10,
    )
    # c = 0: the one-step TD target, whatever q is.
    np.testing.assert_allclose(
        off_policy_n_step_return(**w, next_q_taken=q, traces=np.zeros(N)),
        w["rewards"][0] + w["discounts"][0] * w["next_values"][0],
        rtol=1e-10,
        atol=1e-10,
    )


@given(SEEDS, WINDOWS, st.sampled_from([2, 3]))
def test_greedy_indicator_traces_cut_at_first_off_policy_action(seed, N, A):
    # Watkins-style: c_k = 𝟙[a_{k+1} = argmax Q(s_{k+1})], v = max Q, q = Q(s_{k+1}, a_{k+1})
    # equals the uncorrected return of the window cut at the first non-greedy action.
    rng = np.random.default_rng(seed)
    w = window(seed, N)
    del w["continues"]
    next_q = rng.normal(size=(N, A))
    next_actions = rng.integers(0, A, size=N)
    greedy = next_actions == next_q.argmax(-1)
    w["next_values"] = next_q.max(-1)
    result = off_policy_n_step_return(
        **w, next_q_taken=next_q[np.arange(N), next_actions], traces=greedy * 1.0
    )
    np.testing.assert_allclose(
        result, n_step_reference(**w, continues=greedy), rtol=1e-10, atol=1e-10
    )
