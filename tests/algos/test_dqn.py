"""DQN: off-policy targets against exact enumeration on a tabular MDP and dense Bellman
references, target updates, the contract's transformations, config validation, and sweeps
without recompiling."""

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
from minirl.algos import dqn
from minirl.core import rollout
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(300)

SMALL = dict(
    total_steps=600,
    buffer_size=400,
    batch_size=16,
    learning_starts=100,
    hidden=(16,),
    target_update_period=50,
)
ENV, ENV_PARAMS = envs.make("CartPole-v1")


def small_config(**overrides) -> dqn.Config:
    return dqn.Config(**{**SMALL, **overrides})


class TableQ(eqx.Module):
    """Q(s, ·) = table[s] for integer observations: makes targets exact."""

    table: jax.Array

    def __call__(self, obs):
        return self.table[obs.astype(jnp.int32)[0]]


# ----------------------------------------------------------------------------- exact targets
#
# A random MDP with S states and A actions: reward R[s, a], next state s' ~ P[s, a], and the
# transition terminates with probability T[s, a]. Behaviour μ(a|s) has full support. The
# expected N-step target E_μ[G_0 | s_0, a_0] is computed by enumerating every trajectory of
# N steps (probability-weighted), through dqn.n_step_targets, and compared with dense
# Bellman operators:  (T^π Q)(s, a) = R + γ Σ_s' P (1 − T) Σ_a' π(a'|s') Q(s', a').

S, A = 3, 2


def random_mdp(seed: int):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    R = rng.normal(size=(S, A))
    T = rng.uniform(0.0, 0.4, size=(S, A))
    mu = rng.dirichlet(np.ones(A) * 2.0, size=S) * 0.8 + 0.2 / A  # full support
    return P, R, T, mu, rng


def bellman(Q, policy, P, R, T, gamma):
    """(T^policy Q)(s, a), dense."""
    v = np.sum(policy * Q, axis=1)  # [S]
    return R + gamma * np.einsum("ijk,k->ij", P, v) * (1.0 - T)


def q_of(policy, P, R, T, gamma):
    """Q^policy by a dense linear solve of Q = R + γ P_policy Q."""
    M = np.einsum("ijk,kl->ijkl", P * (1.0 - T)[..., None], policy).reshape(S * A, S * A)
    return np.linalg.solve(np.eye(S * A) - gamma * M, R.reshape(-1)).reshape(S, A)


def eps_greedy(Q, eps):
    pi = np.full(Q.shape, eps / Q.shape[1])
    pi[np.arange(Q.shape[0]), np.argmax(Q, axis=1)] += 1.0 - eps
    return pi


def enumerate_windows(P, T, mu, n):
    """Every window of n steps starting at each (s_0, a_0): ``(s_0, a_0, probability,
    [(s_k, a_k, s_{k+1}, terminated_k)])``. After a termination the rest of the window is
    another episode that the target must ignore; a fixed filler stands for it."""

    def extend(k, s, a, prob, steps):
        for s_next, t in itertools.product(range(S), (False, True)):
            p = prob * P[s, a, s_next] * (T[s, a] if t else 1.0 - T[s, a])
            window = steps + [(s, a, s_next, t)]
            if k == n - 1:
                yield p, window
            elif t:
                yield p, window + [(0, 0, 0, False)] * (n - 1 - k)
            else:
                for a_next in range(A):
                    yield from extend(k + 1, s_next, a_next, p * mu[s_next, a_next], window)

    for s0, a0 in itertools.product(range(S), range(A)):
        for p, window in extend(0, s0, a0, 1.0, []):
            yield s0, a0, p, window


def expected_targets(config, q_select, q_target, P, R, T, mu, n):
    """E_μ[G_0 | s_0, a_0] for every (s_0, a_0): dqn.n_step_targets on every enumerated
    window, weighted by its probability."""
    windows = list(enumerate_windows(P, T, mu, n))
    steps = np.array([w for *_, w in windows])  # [B, n, 4]: s, a, s', terminated
    s, a = steps[..., 0].astype(int), steps[..., 1].astype(int)
    transitions = rollout.Transition(  # NumPy float64, made JAX arrays under x64 below
        obs=s[..., None],
        action=a,
        reward=R[s, a],
        next_obs=steps[..., 2:3].astype(int),
        terminated=steps[..., 3].astype(bool),
        truncated=np.zeros(s.shape, bool),
        policy_info=mu[s, a],
    )
    with jax.enable_x64(True):
        batch = jax.tree.map(jnp.asarray, dqn.Batch(transitions, np.ones(s.shape, bool)))
        targets = np.asarray(dqn.n_step_targets(
            TableQ(jnp.asarray(q_select)), TableQ(jnp.asarray(q_target)), batch, config
        ))
    expected = np.zeros((S, A))
    for (s0, a0, p, _), g in zip(windows, targets):
        expected[s0, a0] += p * g
    return expected


def _case(seed, n, correction, **overrides):
    P, R, T, mu, rng = random_mdp(seed)
    q_online = rng.normal(size=(S, A))
    q_target = rng.normal(size=(S, A))
    config = small_config(n_step=n, off_policy_correction=correction, gamma=0.8, **overrides)
    return P, R, T, mu, q_online, q_target, config


@settings(max_examples=6)
@given(seed=st.integers(0, 10_000), n=st.sampled_from([2, 3]), double_q=st.booleans(),
       target_epsilon=st.sampled_from([0.0, 0.3]))
def test_untruncated_importance_target_is_unbiased_for_the_target_policy(
    seed, n, double_q, target_epsilon
):
    """ρ̄ = ∞, λ = 1: E_μ[G_0] = ((T^π)^N Q̄)(s_0, a_0), π ε-greedy in the selector net."""
    P, R, T, mu, q_online, q_target, config = _case(
        seed, n, "importance", importance_ratio_clip=float("inf"), double_q=double_q,
        target_epsilon=target_epsilon,
    )
    pi = eps_greedy(q_online if double_q else q_target, target_epsilon)
    want = q_target
    for _ in range(n):
        want = bellman(want, pi, P, R, T, 0.8)
    got = expected_targets(config, q_online, q_target, P, R, T, mu, n)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@settings(max_examples=6)
@given(seed=st.integers(0, 10_000), n=st.sampled_from([2, 3]), lam=st.sampled_from([0.5, 1.0]),
       clip=st.sampled_from([1.0, 0.5]))
def test_retrace_has_q_pi_as_its_fixed_point(seed, n, lam, clip):
    """Truncated traces c = λ min(ρ̄, π/μ): with Q̄ = Q^π, E_μ[G_0] = Q^π (Munos et al.,
    2016, lemma 1), for any λ and ρ̄ ≤ 1."""
    P, R, T, mu, q_online, _, config = _case(
        seed, n, "importance", importance_ratio_clip=clip, trace_lambda=lam, double_q=True,
        target_epsilon=0.2,
    )
    pi = eps_greedy(q_online, 0.2)
    q_pi = q_of(pi, P, R, T, 0.8)
    got = expected_targets(config, q_online, q_pi, P, R, T, mu, n)
    np.testing.assert_allclose(got, q_pi, rtol=1e-9, atol=1e-9)


@settings(max_examples=4)
@given(seed=st.integers(0, 10_000))
def test_cut_traces_have_q_pi_as_fixed_point_for_a_greedy_target(seed):
    """Watkins: c = 𝟙[a' = greedy] with greedy π and Q̄ = Q^π gives E_μ[G_0] = Q^π."""
    P, R, T, mu, q_online, _, config = _case(seed, 3, "cut", double_q=True)
    pi = eps_greedy(q_online, 0.0)
    q_pi = q_of(pi, P, R, T, 0.8)
    got = expected_targets(config, q_online, q_pi, P, R, T, mu, 3)
    np.testing.assert_allclose(got, q_pi, rtol=1e-9, atol=1e-9)


def cut_with_epsilon_greedy_bootstrap(q_select, q_target, P, R, T, mu, gamma, lam, epsilon, n):
    """The expectation the dqn docstring states for "cut" traces with ε_π > 0, as dense
    operators: X_{N−1} = T^π Q̄ and, backwards, X_k = R + γ(1 − T) Σ_s' P(s'|s, a)
    [(1 − λμ(g|s')) V̄(s') + λμ(g|s') X_{k+1}(s', g)], g = argmax Q_sel(s'), V̄ = Σ π Q̄."""
    pi = eps_greedy(q_select, epsilon)
    greedy = np.argmax(q_select, axis=1)
    v = np.sum(pi * q_target, axis=1)
    stay = lam * mu[np.arange(S), greedy]
    x = bellman(q_target, pi, P, R, T, gamma)
    for _ in range(n - 1):
        backup = (1 - stay) * v + stay * x[np.arange(S), greedy]
        x = R + gamma * np.einsum("ijk,k->ij", P, backup) * (1.0 - T)
    return x


@settings(max_examples=6)
@given(seed=st.integers(0, 10_000), n=st.sampled_from([2, 3]), lam=st.sampled_from([0.5, 1.0]),
       double_q=st.booleans())
def test_cut_traces_with_an_epsilon_greedy_target_continue_only_along_the_greedy_action(
    seed, n, lam, double_q
):
    """ε_π = 0.3: the enumerated E_μ[G_0] is the dense recursion above, which backs up the
    continued return only through the greedy action, with weight λμ(g|s')."""
    P, R, T, mu, q_online, q_target, config = _case(
        seed, n, "cut", trace_lambda=lam, double_q=double_q, target_epsilon=0.3)
    q_select = q_online if double_q else q_target
    want = cut_with_epsilon_greedy_bootstrap(q_select, q_target, P, R, T, mu, 0.8, lam, 0.3, n)
    got = expected_targets(config, q_online, q_target, P, R, T, mu, n)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_cut_traces_with_an_epsilon_greedy_target_do_not_have_its_q_as_fixed_point():
    """At Q̄ = Q^π of the ε_π-greedy π, "cut" returns a target that is not Q^π (each step that
    continues adds λμ(g|s')(Q^π(s', g) − V^π(s')), zero only when π is greedy), while
    Retrace's does: "cut" is Watkins's Q(λ) only for a greedy target."""
    P, R, T, mu, q_online, _, config = _case(3, 3, "cut", double_q=True, target_epsilon=0.3)
    pi = eps_greedy(q_online, 0.3)
    q_pi = q_of(pi, P, R, T, 0.8)
    got = expected_targets(config, q_online, q_pi, P, R, T, mu, 3)
    assert np.max(np.abs(got - q_pi)) > 1e-2
    retrace = dataclasses.replace(config, off_policy_correction="importance")
    np.testing.assert_allclose(expected_targets(retrace, q_online, q_pi, P, R, T, mu, 3), q_pi,
                               rtol=1e-9, atol=1e-9)


def test_uncorrected_return_is_biased_towards_the_behaviour_policy():
    """"none": E_μ[G_0] = ((T^μ)^{N−1} T^π Q̄)(s_0, a_0), which is not Q^π when μ ≠ π,
    even at Q̄ = Q^π (the bias the lecture notes describe)."""
    P, R, T, mu, q_online, _, config = _case(7, 3, "none", double_q=True)
    pi = eps_greedy(q_online, 0.0)
    q_pi = q_of(pi, P, R, T, 0.8)
    want = bellman(q_pi, pi, P, R, T, 0.8)
    for _ in range(2):
        want = bellman(want, mu, P, R, T, 0.8)
    got = expected_targets(config, q_online, q_pi, P, R, T, mu, 3)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert np.max(np.abs(got - q_pi)) > 0.05, "the uncorrected return should be biased here"


def test_the_three_treatments_differ_on_off_policy_data():
    P, R, T, mu, q_online, q_target, _ = _case(11, 3, "none")
    got = {
        c: expected_targets(small_config(n_step=3, off_policy_correction=c, gamma=0.8,
                                         target_epsilon=0.1),
                            q_online, q_target, P, R, T, mu, 3)
        for c in dqn.OFF_POLICY_CORRECTIONS
    }
    for a, b in itertools.combinations(dqn.OFF_POLICY_CORRECTIONS, 2):
        assert np.max(np.abs(got[a] - got[b])) > 1e-3, (a, b)


@given(seed=st.integers(0, 2**16), gamma=st.floats(0.1, 1.0))
def test_double_q_target_never_exceeds_the_max_target(seed, gamma):
    """Through dqn's own targets: Q̄(s', argmax Q_θ) ≤ max Q̄(s'), equal when θ = θ̄."""
    rng = np.random.default_rng(seed)
    q_online = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    q_target = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    transitions = rollout.Transition(
        obs=jnp.asarray(rng.integers(0, 5, (16, 1, 1))),
        action=jnp.asarray(rng.integers(0, 4, (16, 1))),
        reward=jnp.asarray(rng.normal(size=(16, 1)), jnp.float32),
        next_obs=jnp.asarray(rng.integers(0, 5, (16, 1, 1))),
        terminated=jnp.asarray(rng.random((16, 1)) < 0.3),
        truncated=jnp.zeros((16, 1), bool),
        policy_info=jnp.ones((16, 1)),
    )
    batch = dqn.Batch(transitions, jnp.ones((16, 1), bool))

    def targets(double_q, online):
        config = small_config(double_q=double_q, gamma=gamma)
        return np.asarray(dqn.n_step_targets(TableQ(online), TableQ(q_target), batch, config))

    assert np.all(targets(True, q_online) <= targets(False, q_online) + 1e-6)
    np.testing.assert_allclose(targets(True, q_target), targets(False, q_target), rtol=1e-6)


def test_truncation_bootstraps_from_final_observation_and_termination_cuts():
    q = jnp.arange(12.0).reshape(4, 3)  # V(s) = max = 3s + 2
    transitions = rollout.Transition(
        obs=jnp.zeros((2, 1, 1)),
        action=jnp.zeros((2, 1), jnp.int32),
        reward=jnp.ones((2, 1)),
        next_obs=jnp.array([[[3]], [[3]]]),
        terminated=jnp.array([[False], [True]]),
        truncated=jnp.array([[True], [False]]),
        policy_info=jnp.ones((2, 1)),
    )
    config = small_config(gamma=0.5, double_q=False)
    targets = dqn.n_step_targets(
        TableQ(q), TableQ(q), dqn.Batch(transitions, jnp.ones((2, 1), bool)), config
    )
    np.testing.assert_allclose(targets, [1.0 + 0.5 * 11.0, 1.0])


# ----------------------------------------------------------------------------- target networks


def _learner_and_batch(config):
    state = dqn.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS)
    obs = jax.random.normal(jax.random.PRNGKey(1), (8, 1, 4))
    transitions = rollout.Transition(
        obs=obs, action=jnp.zeros((8, 1), jnp.int32), reward=jnp.ones((8, 1)), next_obs=obs,
        terminated=jnp.zeros((8, 1), bool), truncated=jnp.zeros((8, 1), bool),
        policy_info=jnp.ones((8, 1)),
    )
    return state.learner, dqn.Batch(transitions, jnp.ones((8, 1), bool))


def _arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def test_polyak_target_is_the_moving_average_of_the_online_networks():
    """Through dqn.learn, τ = 0.3: after k updates θ̄_k = (1 − τ)^k θ̄_0 + Σ_j τ(1 − τ)^(k−j) θ_j
    with θ_j the online network right after update j (the geometric weights applied to the
    recorded networks, not the recursion)."""
    tau = 0.3
    config = small_config(target_update="polyak", tau=tau)
    learner, batch = _learner_and_batch(config)
    initial = [np.asarray(x, np.float64) for x in _arrays(learner.target_params)]
    learn = jax.jit(dqn.learn)
    online = []
    for k in range(1, 6):
        learner, _ = learn(learner, batch, config)
        online.append([np.asarray(x, np.float64) for x in _arrays(learner.params)])
        for i, got in enumerate(_arrays(learner.target_params)):
            want = (1 - tau) ** k * initial[i] + sum(
                tau * (1 - tau) ** (k - j) * online[j - 1][i] for j in range(1, k + 1))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(online[0][0], online[-1][0])  # the online network did move


def test_hard_target_is_the_online_network_of_the_last_multiple_of_the_period():
    """Through dqn.learn with period 3: after update k the target is the online network as
    it was after update 3⌊k/3⌋ (the initial target before update 3)."""
    config = small_config(target_update="hard", target_update_period=3)
    learner, batch = _learner_and_batch(config)
    learn = jax.jit(dqn.learn)
    snapshots = {0: _arrays(learner.target_params)}
    for k in range(1, 8):
        learner, _ = learn(learner, batch, config)
        snapshots[k] = _arrays(learner.params)
        for a, b in zip(_arrays(learner.target_params), snapshots[3 * (k // 3)]):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(snapshots[3][0], snapshots[6][0])


# ---------------------------------------------------------------- env, networks, config
# (the contract every learner shares is tests/test_contract.py)


def test_act_greedy_and_exploring():
    config = small_config()
    state = dqn.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS)
    params, obs = state.learner.params, state.env.obs[0]
    greedy = dqn.act(params, obs, jax.random.PRNGKey(1), config, deterministic=True)
    assert greedy == jnp.argmax(params(obs))
    explore = dqn.act(params, obs, jax.random.PRNGKey(1), config)
    assert explore.shape == () and 0 <= int(explore) < 2


def test_image_observations_use_a_cnn():
    config = dqn.Config(total_steps=64, buffer_size=64, batch_size=8, learning_starts=16,
                        hidden=(16,))
    env, params = envs.make("Breakout-MinAtar")
    state, metrics = jax.jit(dqn.train, static_argnums=2)(jax.random.PRNGKey(0), config, env,
                                                           params)
    assert state.learner.params.__class__.__name__ == "CNN"
    assert np.isfinite(np.asarray(metrics["loss"])).all()


class Dueling(eqx.Module):
    """A user's network: V(s) + A(s, a) − mean_a A(s, a) (Wang et al., 2016)."""

    torso: eqx.nn.MLP
    value: eqx.nn.Linear
    advantage: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.torso = eqx.nn.MLP(4, 16, 16, 1, key=k1, activation=jax.nn.relu)
        self.value = eqx.nn.Linear(16, 1, key=k2)
        self.advantage = eqx.nn.Linear(16, 2, key=k3)

    def __call__(self, obs):
        h = jax.nn.relu(self.torso(obs))
        advantage = self.advantage(h)
        return self.value(h) + advantage - jnp.mean(advantage)


def test_bring_your_own_network():
    config = small_config(total_steps=300)
    network = Dueling(jax.random.PRNGKey(5))
    # A module with function fields is closed over (it cannot be a traced jit argument).
    train = jax.jit(lambda key, config, params: dqn.train(key, config, ENV, params, network))
    state, metrics = train(jax.random.PRNGKey(0), config, ENV_PARAMS)
    trained = state.learner.params.module  # function fields were kept static: unwrap
    assert isinstance(trained, Dueling)
    assert isinstance(state.learner.target_params.module, Dueling)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    assert not np.array_equal(trained.value.weight, network.value.weight)  # it was trained


def test_a_network_factory_initialises_each_seed_differently():
    config = small_config(total_steps=200)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    init = jax.vmap(lambda key: dqn.init(key, config, ENV, ENV_PARAMS, Dueling).learner.params)
    params = jax.jit(init)(keys).module
    assert not np.array_equal(params.value.weight[0], params.value.weight[1])


def test_a_network_with_the_wrong_output_is_refused():
    bad = eqx.nn.Linear(4, 3, key=jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match=r"shape \(3,\).*\(2,\)"):
        dqn.init(jax.random.PRNGKey(0), small_config(), ENV, ENV_PARAMS, bad)


def test_continuous_env_is_refused_where_config_meets_env():
    env, params = envs.make("Pendulum-v1")
    with pytest.raises(ConfigError, match="Pendulum-v1.*continuous.*discrete"):
        dqn.init(jax.random.PRNGKey(0), small_config(), env, params)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(gamma=0.0), "gamma"),
        (dict(gamma=1.01), "gamma"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=500, buffer_size=400), "batch_size"),
        (dict(num_envs=3, buffer_size=400), "buffer_size"),
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(learning_rate=float("inf")), "learning_rate=inf is not a finite"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(epsilon_end=1.5), "epsilon_end"),
        (dict(tau=0.0), "tau"),
        (dict(target_update="soft"), "target_update"),
        (dict(n_step=0), "n_step"),
        (dict(off_policy_correction="retrace"), "off_policy_correction"),
        (dict(trace_lambda=1.5), "trace_lambda"),
        (dict(target_epsilon=-0.1), "target_epsilon"),
        (dict(loss="l1"), "loss"),
        (dict(hidden=()), "hidden"),
        (dict(learning_rate=np.array([1e-3, -1.0])), "learning_rate"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        small_config(**overrides)


def test_inf_is_allowed_where_it_means_off():
    assert small_config(importance_ratio_clip=float("inf")).importance_ratio_clip == float("inf")


def test_fresh_state_can_be_donated():
    """init must not alias arrays (e.g. the target network), or donating its state fails."""
    config = dqn.Config(total_steps=64, learning_starts=0, batch_size=8)
    state = dqn.init(jax.random.PRNGKey(0), config, ENV, ENV_PARAMS)
    leaves = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
    assert len({id(x) for x in leaves}) == len(leaves)
    step = jax.jit(lambda s: dqn.step(s, config, ENV, ENV_PARAMS), donate_argnums=0)
    state, _ = step(state)
    state, _ = step(state)
    assert int(state.env_steps) == 2


def test_learning_rate_schedule_runs_over_the_updates():
    config = small_config(learning_rate_end_factor=0.0)
    assert config.num_updates == (config.num_iterations - config.learning_starts + 1)
    learner, batch = _learner_and_batch(config)
    learner = dataclasses.replace(learner, updates=jnp.asarray(config.num_updates, jnp.int32))
    _, metrics = dqn.learn(learner, batch, config)
    assert float(metrics["learning_rate"]) == 0.0
