"""Identities of policy-gradient theory, each checked against an independent reference, in
float64:

- the Fisher identity: the Hessian of TRPO's KL (``trpo.surrogate_and_kl``) at θ = θ_old is
  E_s E_{a~π}[∇log π ∇log πᵀ], the outer products of scores from ``jax.jacobian`` of
  hand-written log-densities averaged exactly over actions (a sum over actions for a
  Categorical, Gauss–Hermite quadrature for a Gaussian);
- at θ = θ_old the gradient of PPO's loss (clipped and Lagrangian objectives) and of TRPO's
  surrogate is the policy gradient E[A ∇log π(a|s)] (``jax.grad`` of mean(A·log π));
- the performance-difference lemma and the policy-gradient theorem on random tabular MDPs
  (dense linear solves), with A^π from ``returns.gae`` at λ = 0 and the gradient through
  ``losses.importance_weighted_surrogate``.

(Schulman et al., 2015, "Trust region policy optimization", §2–3 and appendix C; Kakade &
Langford, 2002, lemma 6.1; Sutton et al., 2000.)
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

from minirl.algos import ppo, trpo
from minirl.core import losses, returns

pytestmark = pytest.mark.timeout(300)

SEEDS = st.integers(0, 2**32 - 1)
SHAPES = st.sampled_from([(3, 2), (5, 3)])  # (number of states N, actions A or dims D)
OBS_DIM = 3


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


# ----------------------------------------------------------------------------- a linear policy


class Linear(eqx.Module):
    """obs ↦ obs·w + b: the logits of a Categorical or the mean of a Gaussian."""

    w: jax.Array
    b: jax.Array

    def __call__(self, obs):
        return obs @ self.w + self.b


def linear_agent(seed: int, shape, continuous: bool):
    """A ``ppo.Agent`` with a linear actor, N random states, actions drawn from π_θ and
    random advantages, as a flat ``ppo.Batch`` (π_old = π_θ)."""
    num_states, out = shape
    rng = np.random.default_rng(seed)
    actor = Linear(jnp.asarray(rng.normal(size=(OBS_DIM, out))),
                   jnp.asarray(rng.normal(size=out) * 0.5))
    critic = Linear(jnp.asarray(rng.normal(size=(OBS_DIM, 1))), jnp.zeros(1))
    log_std = jnp.asarray(rng.uniform(-0.5, 0.5, size=out)) if continuous else None
    agent = ppo.Agent(
        actor=actor, critic=critic, log_std=log_std,
        obs_norm=ppo.RunningNorm(jnp.zeros(OBS_DIM), jnp.ones(OBS_DIM), jnp.zeros(())),
        low=-jnp.ones(out) if continuous else None,
        high=jnp.ones(out) if continuous else None,
    )
    obs = jnp.asarray(rng.normal(size=(num_states, OBS_DIM)))
    logits = np.asarray(actor(obs))
    if continuous:
        action = jnp.asarray(logits + np.exp(np.asarray(log_std)) * rng.normal(size=logits.shape))
    else:
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        action = jnp.asarray([rng.choice(out, p=p) for p in probs])
    part = trpo._policy_part(agent)  # (actor arrays, log σ): what TRPO differentiates
    log_prob = reference_log_prob(part, obs, action, continuous)
    advantage = jnp.asarray(rng.normal(size=num_states) * 2.0 + 0.5)
    dist = ppo.batch_apply(ppo.policy, agent, obs, ppo.Config())
    batch = ppo.Batch(obs=obs, action=action, log_prob=log_prob,
                      value=jnp.zeros(num_states), advantage=advantage, target=advantage,
                      policy=dist)
    return agent, part, batch


def reference_log_prob(part, obs, action, continuous: bool):
    """log π_θ(a|s), written out: log-softmax of the logits, or the diagonal Gaussian
    density −½Σ((a − μ)/σ)² − Σ log σ − (D/2) log 2π."""
    actor, log_std = part
    out = obs @ actor.w + actor.b
    if not continuous:
        log_probs = out - jax.scipy.special.logsumexp(out, axis=-1, keepdims=True)
        return jnp.take_along_axis(log_probs, action[..., None].astype(int), axis=-1)[..., 0]
    z = (action - out) / jnp.exp(log_std)
    dims = out.shape[-1]
    return (-0.5 * jnp.sum(z**2, axis=-1) - jnp.sum(log_std)
            - 0.5 * dims * math.log(2 * math.pi))


def gauss_hermite(dims: int, points: int = 5):
    """Nodes ``[K, dims]`` and weights ``[K]`` with Σ_k w_k f(z_k) = E_{z~N(0, I)}[f(z)]
    exactly for polynomials of degree ≤ 2·points − 1 in each coordinate."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(points)
    weights = weights / math.sqrt(2 * math.pi)
    grid = np.stack(np.meshgrid(*[nodes] * dims, indexing="ij"), -1).reshape(-1, dims)
    grid_weights = np.prod(np.stack(np.meshgrid(*[weights] * dims, indexing="ij"), -1)
                           .reshape(-1, dims), axis=-1)
    return grid, grid_weights


@functools.partial(jax.jit, static_argnums=3)
def scores(part, states, actions, continuous: bool):
    """∇_θ log π_θ(a|s) for every (state, action) pair ``[N, K]``: ``[N, K, P]``."""
    flat, unravel = ravel_pytree(part)
    return jax.jacobian(lambda x: reference_log_prob(unravel(x), states, actions, continuous))(
        flat
    )


def dense_fisher(part, obs, continuous: bool) -> np.ndarray:
    """E_s E_{a~π(·|s)} [∇log π(a|s) ∇log π(a|s)ᵀ], flattened like ``ravel_pytree(part)``,
    with the expectation over actions exact: every action weighted by π (Categorical), or
    Gauss–Hermite nodes a = μ + σz (the score's outer product is a degree-4 polynomial in z)."""
    actor, log_std = part
    out = np.asarray(obs @ actor.w + actor.b)
    num_states, size = out.shape
    if continuous:
        z, weights = gauss_hermite(size)
        actions = out[:, None, :] + np.exp(np.asarray(log_std)) * z[None]  # [N, K, D]
        weights = np.broadcast_to(weights, actions.shape[:2])
    else:
        actions = np.broadcast_to(np.arange(size), (num_states, size))  # every action
        probs = np.exp(out - out.max(-1, keepdims=True))
        weights = probs / probs.sum(-1, keepdims=True)
    states = np.repeat(np.asarray(obs)[:, None], weights.shape[1], axis=1)
    score = np.asarray(scores(part, jnp.asarray(states), jnp.asarray(actions), continuous))
    return np.einsum("nk,nkp,nkq->pq", weights, score, score) / num_states


@jax.jit
def trpo_kl_and_hessian(agent, batch):
    """TRPO's KL(π_old ‖ π_θ) at θ_old and its Hessian in the flattened policy parameters."""
    fn = trpo.surrogate_and_kl(agent, batch, trpo.Config())
    flat, unravel = ravel_pytree(trpo._policy_part(agent))
    kl = lambda x: fn(unravel(x))[1]
    return kl(flat), jax.hessian(kl)(flat)


@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
@settings(max_examples=6)
@given(seed=SEEDS, shape=SHAPES)
def test_hessian_of_the_trpo_kl_is_the_fisher_information(seed, shape, continuous):
    agent, part, batch = linear_agent(seed, shape, continuous)
    kl, hessian = trpo_kl_and_hessian(agent, batch)
    np.testing.assert_allclose(kl, 0.0, atol=1e-14)  # KL(θ_old ‖ θ_old) = 0
    fisher = dense_fisher(part, batch.obs, continuous)
    np.testing.assert_allclose(hessian, fisher, rtol=1e-8, atol=1e-11)
    assert np.linalg.eigvalsh(fisher).min() > -1e-10


# ----------------------------------------------------------------------------- surrogate gradients


@functools.partial(jax.jit, static_argnums=(2, 3))
def policy_gradients(agent, batch, continuous: bool, objective: str):
    """(the reference ∇ mean(A·log π), the algorithm's gradient at θ_old, the critic's)."""
    part = trpo._policy_part(agent)
    want = jax.grad(lambda p: jnp.mean(
        batch.advantage * reference_log_prob(p, batch.obs, batch.action, continuous)))(part)
    if objective == "trpo":
        fn = trpo.surrogate_and_kl(agent, batch, trpo.Config(normalize_advantages=False))
        return want, jax.grad(lambda p: fn(p)[0])(part), None
    config = ppo.Config(objective=objective, value_coef=0.0, entropy_coef=0.0,
                        normalize_advantages=False, max_kl=0.01)
    grads = eqx.filter_grad(lambda a: -ppo.loss_fn(a, batch, jnp.asarray(0.7), config)[0])(agent)
    return want, trpo._policy_part(grads), grads.critic


@pytest.mark.parametrize("objective", ["clip", "lagrangian", "trpo"])
@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
@settings(max_examples=4)
@given(seed=SEEDS, shape=SHAPES)
def test_surrogate_gradient_at_theta_old_is_the_policy_gradient(seed, shape, continuous,
                                                                 objective):
    """ppo.loss_fn (c_V = c_H = 0, raw advantages; for the Lagrangian λ > 0, whose KL term
    has zero gradient at θ_old) and trpo's surrogate: ∇ at θ_old = E[A ∇log π(a|s)], the
    gradient of mean(A · log π(a|s)) with a hand-written log π."""
    agent, _, batch = linear_agent(seed, shape, continuous)
    want, got, critic = policy_gradients(agent, batch, continuous, objective)
    for leaf in jax.tree.leaves(critic):  # c_V = 0: the critic gets nothing
        np.testing.assert_array_equal(leaf, 0.0)
    want, got = ravel_pytree(want)[0], ravel_pytree(got)[0]
    assert float(jnp.max(jnp.abs(want))) > 1e-3  # not trivially zero
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- tabular MDPs


def random_mdp(seed: int, num_states: int, num_actions: int):
    rng = np.random.default_rng(seed)
    transitions = jnp.asarray(rng.dirichlet(np.ones(num_states), size=(num_states, num_actions)))
    rewards = jnp.asarray(rng.normal(size=(num_states, num_actions)))
    start = jnp.asarray(rng.dirichlet(np.ones(num_states)))
    logits = jnp.asarray(rng.normal(size=(2, num_states, num_actions)))
    return transitions, rewards, start, logits, rng


def value_of(pi, transitions, rewards, gamma):
    """V^π = (I − γ P_π)⁻¹ r_π, a dense solve (differentiable in π)."""
    p_pi = jnp.einsum("sa,sat->st", pi, transitions)
    r_pi = jnp.sum(pi * rewards, axis=1)
    return jnp.linalg.solve(jnp.eye(len(r_pi)) - gamma * p_pi, r_pi)


def state_distribution(pi, transitions, start, gamma):
    """d^π(s) = (1 − γ) Σ_t γ^t Pr(s_t = s), normalised: (1 − γ) ρ₀ᵀ (I − γ P_π)⁻¹."""
    p_pi = jnp.einsum("sa,sat->st", pi, transitions)
    return (1 - gamma) * jnp.linalg.solve((jnp.eye(len(start)) - gamma * p_pi).T, start)


def advantage_from_gae(values, transitions, rewards, gamma, rng):
    """A^π(s, a) = E_{s'}[δ], δ = r + γV(s') − V(s): ``returns.gae`` with λ = 0 over every
    (s, a, s') laid out along the time axis (random truncation flags: at λ = 0 the recursion
    carries nothing between steps), then weighted by P(s'|s, a)."""
    num_states, num_actions = rewards.shape
    s, a, s_next = np.meshgrid(np.arange(num_states), np.arange(num_actions),
                               np.arange(num_states), indexing="ij")
    s, a, s_next = s.ravel(), a.ravel(), s_next.ravel()
    truncated = jnp.asarray(rng.random(s.size) < 0.3)
    deltas = returns.gae(rewards[s, a], values[s], values[s_next],
                         jnp.zeros(s.size, bool), truncated, gamma, 0.0)
    deltas = deltas.reshape(num_states, num_actions, num_states)
    return jnp.sum(transitions * deltas, axis=-1)


MDP_SIZES = st.sampled_from([(2, 2), (3, 2), (5, 3)])
GAMMAS = st.floats(0.3, 0.98)


@given(SEEDS, MDP_SIZES, GAMMAS)
def test_performance_difference_lemma(seed, size, gamma):
    """η(π') − η(π) = 1/(1 − γ) Σ_s d^{π'}(s) Σ_a π'(a|s) A^π(s, a)."""
    transitions, rewards, start, logits, rng = random_mdp(seed, *size)
    pi, pi_new = jax.nn.softmax(logits[0]), jax.nn.softmax(logits[1])
    values = value_of(pi, transitions, rewards, gamma)
    advantage = advantage_from_gae(values, transitions, rewards, gamma, rng)
    q = rewards + gamma * transitions @ values  # Q^π by its definition
    np.testing.assert_allclose(advantage, q - values[:, None], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jnp.sum(pi * advantage, axis=1), 0.0, atol=1e-10)
    eta = start @ values
    eta_new = start @ value_of(pi_new, transitions, rewards, gamma)
    d_new = state_distribution(pi_new, transitions, start, gamma)
    np.testing.assert_allclose(jnp.sum(d_new), 1.0, rtol=1e-12)
    lemma = jnp.sum(d_new[:, None] * pi_new * advantage) / (1 - gamma)
    np.testing.assert_allclose(eta_new - eta, lemma, rtol=1e-9, atol=1e-11)


@given(SEEDS, MDP_SIZES, GAMMAS)
def test_surrogate_gradient_is_the_gradient_of_the_return(seed, size, gamma):
    """Policy-gradient theorem: at π_θ = π_old, ∇_θ of the importance-weighted surrogate
    1/(1 − γ) Σ_s d^π(s) Σ_a π_old(a|s) ρ_θ(s, a) A^π(s, a) equals ∇_θ η(π_θ), the latter
    by autodiff through the dense solve for V^{π_θ}."""
    transitions, rewards, start, logits, rng = random_mdp(seed, *size)
    theta = logits[0]

    def eta(theta):
        return start @ value_of(jax.nn.softmax(theta), transitions, rewards, gamma)

    pi_old = jax.nn.softmax(theta)
    d_old = state_distribution(pi_old, transitions, start, gamma)
    advantage = advantage_from_gae(value_of(pi_old, transitions, rewards, gamma),
                                   transitions, rewards, gamma, rng)

    def surrogate(theta):
        ratio = jax.nn.softmax(theta) / pi_old
        terms = losses.importance_weighted_surrogate(ratio, advantage)
        return jnp.sum(d_old[:, None] * pi_old * terms) / (1 - gamma)

    np.testing.assert_allclose(surrogate(theta), 0.0, atol=1e-10)  # E_π[A^π] = 0
    want = jax.grad(eta)(theta)
    assert float(jnp.max(jnp.abs(want))) > 1e-6
    np.testing.assert_allclose(jax.grad(surrogate)(theta), want, rtol=1e-8, atol=1e-11)
