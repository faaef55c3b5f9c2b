"""SAC's three objectives against references that share no code with them.

- The actor's reparameterised gradient (continuous) against a score-function Monte Carlo
  estimate computed in NumPy with its own samples and its own tanh-Normal density; the
  discrete actor's gradient against its closed form and its minimiser against the Boltzmann
  policy softmax(min_j Q_j / α) (the Gibbs variational principle).
- The stop-gradients: ∂/∂log α of the summed loss is α(H − H̄) alone (no α gradient from the
  actor term), and the policy's gradient is the actor term's alone (no entropy gradient from
  the temperature term).
- The critic target's entropy term −α log π(a'|s') against quadrature of the tanh-Normal
  (continuous) and exact enumeration (discrete), with two critics whose minimum switches.
- Joint gradient descent on the discrete actor and on log α against the temperature α* at
  which the Boltzmann policy's exact entropy equals the target (a root found by scipy).

Critics and actors are small closed-form modules (quadratics, tables), so each reference is
written from the equations, not from minirl's code. Float64 throughout.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from minirl.algos import sac
from minirl.core import rollout

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


class ConstantActor(eqx.Module):
    """The same actor output (μ and log σ, or logits) for every observation."""

    out: jax.Array

    def __call__(self, obs):
        return self.out


class TableActor(eqx.Module):
    """logits[s] for an integer observation s."""

    logits: jax.Array  # [S, A]

    def __call__(self, obs):
        return self.logits[obs[0].astype(jnp.int32)]


class QuadraticCritics(eqx.Module):
    """M critics Q_j(s, x) = offset_j − curvature_j ‖x − centre_j‖², x the unit-box action;
    array leaves ``[M, ...]`` (an ensemble as ``core.critics.ensemble`` builds one)."""

    centre: jax.Array  # [M, D]
    curvature: jax.Array  # [M]
    offset: jax.Array  # [M]

    def __call__(self, obs, x):
        return self.offset - self.curvature * jnp.sum(jnp.square(x - self.centre))


class TableCritics(eqx.Module):
    """M discrete critics Q_j(s, ·) = table[j, s]; array leaves ``[M, S, A]``."""

    table: jax.Array

    def __call__(self, obs):
        return self.table[obs[0].astype(jnp.int32)]


def quadratic_min(x: np.ndarray, centre, curvature, offset) -> np.ndarray:
    """min_j Q_j(x) in NumPy for unit actions ``x [..., D]``."""
    per_critic = [o - k * np.sum((x - c) ** 2, axis=-1)
                  for c, k, o in zip(centre, curvature, offset)]
    return np.min(per_critic, axis=0)


def log_sech2(u: np.ndarray) -> np.ndarray:
    """log(1 − tanh² u) = −2 log cosh u, stable for large |u|."""
    a = np.abs(u)
    return -2.0 * (a + np.log1p(np.exp(-2.0 * a)) - np.log(2.0))


def box_log_density(u: np.ndarray, mean, std, half) -> np.ndarray:
    """log π(a) of a = mid + half·tanh(u), u ~ N(mean, std²), by the change of variables
    (density of u, over |da/du| = half·(1 − tanh² u) per dimension)."""
    return np.sum(stats.norm.logpdf(u, mean, std) - log_sech2(u) - np.log(half), axis=-1)


# ----------------------------------------------------------------------------- the actor

CONTINUOUS_CASES = [
    # mean, std, low, high, alpha, target entropy per dim
    dict(mean=[0.4], std=[0.6], low=[-2.0], high=[2.0], alpha=0.7, per_dim=-1.0),
    dict(mean=[0.4, -0.8], std=[0.6, 0.9], low=[-2.0, 0.0], high=[1.0, 3.0], alpha=0.3,
         per_dim=0.5),
]
CENTRE = np.array([[0.3, -0.2], [-0.5, 0.4]])  # the two critics' optima: the min switches
CURVATURE = np.array([2.0, 1.0])
OFFSET = np.array([0.0, 0.3])


@pytest.mark.parametrize("case", CONTINUOUS_CASES)
def test_continuous_actor_gradient_equals_a_score_function_estimate(case):
    """For one state with π = tanh-Normal(μ, σ) on the box and the actor's parameters
    θ = (μ, log σ):

        ∇_θ E_{a~π_θ}[α log π_θ(a) − min_j Q_j(a)] = E[(α log π(a) − min_j Q_j(a) − b) ∇_θ log π(a)]

    (the direct term α E[∇_θ log π_θ(a)] is zero, and so is the baseline's). The left side is
    sac.actor_loss's reparameterised gradient averaged over 20 × 20 000 samples, the right
    side a NumPy estimate from 10⁶ samples of u, with log π by the change of variables and the
    score ∂log N(u)/∂μ = (u − μ)/σ², ∂/∂log σ = (u − μ)²/σ² − 1. Tolerance: 5 standard errors.

    The same samples give the temperature's gradient ∂/∂log α = α(E[−log π] − H̄): the actor
    term adds nothing to it (its α is held fixed), and the temperature term adds nothing to
    the policy's gradient (its entropy is held fixed)."""
    mean, std = np.asarray(case["mean"]), np.asarray(case["std"])
    low, high, alpha = np.asarray(case["low"]), np.asarray(case["high"]), case["alpha"]
    dim = mean.shape[0]
    half = (high - low) / 2
    centre = CENTRE[:, :dim]
    target = case["per_dim"] * dim
    config = sac.Config(target_entropy_per_dim=case["per_dim"])
    params = sac.Policy(ConstantActor(jnp.asarray(np.concatenate([mean, np.log(std)]))),
                        jnp.asarray(low), jnp.asarray(high))
    critics = QuadraticCritics(*map(jnp.asarray, (centre, CURVATURE, OFFSET)))
    obs = jnp.zeros((20_000, 1))
    grad = jax.jit(jax.grad(sac.actor_loss, argnums=(0, 1), has_aux=True))
    chunks = [grad(params.net, jnp.log(alpha), params, critics, obs, jax.random.PRNGKey(i),
                   config)[0] for i in range(20)]
    reparam = np.array([np.asarray(g_net.out) for g_net, _ in chunks])  # [20, 2D]
    log_alpha_grad = np.array([float(g_alpha) for _, g_alpha in chunks])

    rng = np.random.default_rng(0)
    u = mean + std * rng.standard_normal((1_000_000, dim))
    log_prob = box_log_density(u, mean, std, half)
    f = alpha * log_prob - quadratic_min(np.tanh(u), centre, CURVATURE, OFFSET)
    score = np.concatenate([(u - mean) / std**2, (u - mean) ** 2 / std**2 - 1.0], axis=-1)
    terms = (f - f.mean())[:, None] * score

    error = np.sqrt(reparam.var(0, ddof=1) / 20 + terms.var(0) / len(u))
    np.testing.assert_array_less(np.abs(reparam.mean(0) - terms.mean(0)), 5 * error)
    # The gradient is not small next to its error, so a wrong term would show.
    assert np.all(np.abs(terms.mean(0)) > 10 * error)

    want = alpha * (-log_prob.mean() - target)
    error = np.sqrt(log_alpha_grad.var(ddof=1) / 20 + alpha**2 * log_prob.var() / len(u))
    assert abs(log_alpha_grad.mean() - want) < 5 * error, (log_alpha_grad.mean(), want)


def discrete_problem(seed: int = 0, num_states: int = 3, num_actions: int = 4):
    """Two table critics whose minimum comes from different critics at different actions."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(2, num_states, num_actions)) * 1.5
    obs = jnp.arange(num_states, dtype=jnp.float64)[:, None]
    return table, obs


def test_discrete_actor_gradient_is_its_closed_form_and_alpha_gets_the_exact_entropy_gap():
    """With logits z and π = softmax(z), ∂/∂z_k Σ_a π_a (α log π_a − q_a) =
    π_k (f_k − Σ_a π_a f_a), f = α log π − q, q = min_j Q_j (averaged over the states), and
    ∂/∂log α = α (H(π) − H̄) with the exact entropy H, H̄ = fraction × log|A|."""
    table, obs = discrete_problem()
    num_states, num_actions = table.shape[1:]
    logits = np.random.default_rng(1).normal(size=(num_states, num_actions))
    alpha, fraction = 0.6, 0.7
    config = sac.Config(target_entropy_fraction=fraction)
    params = sac.Policy(TableActor(jnp.asarray(logits)))
    (g_net, g_alpha), _ = jax.grad(sac.actor_loss, argnums=(0, 1), has_aux=True)(
        params.net, jnp.log(alpha), params, TableCritics(jnp.asarray(table)), obs,
        jax.random.PRNGKey(0), config)

    pi, log_pi = special.softmax(logits, -1), special.log_softmax(logits, -1)
    f = alpha * log_pi - table.min(0)
    want = pi * (f - np.sum(pi * f, -1, keepdims=True)) / num_states
    np.testing.assert_allclose(g_net.logits, want, rtol=1e-10, atol=1e-12)
    entropy = stats.entropy(pi, axis=-1)
    np.testing.assert_allclose(g_alpha, alpha * (entropy.mean() - fraction * np.log(num_actions)),
                               rtol=1e-10)


def _descend(params, critics, obs, config, logits, log_alpha, alpha_rate, steps):
    """Descent with sac.actor_loss's gradients g: on the logits a diagonally preconditioned
    step z ← z − ½ S g / (α π) (S states, the loss being their mean; dividing by π makes a
    step of size 1 land on the stationary point, so low-probability actions converge as fast
    as the others; it leaves the stationary points those of g), and on log α a plain step of
    size ``alpha_rate``."""
    grad = jax.grad(sac.actor_loss, argnums=(0, 1), has_aux=True)
    num_states = obs.shape[0]

    def body(carry, _):
        logits, log_alpha = carry
        (g_net, g_alpha), _ = grad(TableActor(logits), log_alpha, params, critics, obs,
                                   jax.random.PRNGKey(0), config)
        step = 0.5 * num_states / (jnp.exp(log_alpha) * jax.nn.softmax(logits))
        return (logits - step * g_net.logits, log_alpha - alpha_rate * g_alpha), None

    return jax.jit(lambda c: jax.lax.scan(body, c, length=steps)[0])((logits, log_alpha))


@pytest.mark.parametrize("alpha", [0.2, 0.6, 3.0])
def test_discrete_actor_minimiser_is_the_boltzmann_policy_of_the_clipped_critics(alpha):
    """min_π Σ_a π(a)(α log π(a) − q(a)) is attained at π = softmax(q/α) (it equals
    α KL(π ‖ softmax(q/α)) − α log Σ exp(q/α)): gradient descent on sac.actor_loss over the
    logits, α fixed, lands there, with q = min_j Q_j."""
    table, obs = discrete_problem()
    config = sac.Config(target_entropy_fraction=0.5)
    params = sac.Policy(TableActor(jnp.zeros(table.shape[1:])))
    logits, _ = _descend(params, TableCritics(jnp.asarray(table)), obs, config,
                         jnp.zeros(table.shape[1:]), jnp.log(alpha), 0.0, 4000)
    np.testing.assert_allclose(special.softmax(np.asarray(logits), -1),
                               special.softmax(table.min(0) / alpha, -1), atol=1e-6)


@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_actor_and_temperature_descent_reach_the_alpha_whose_boltzmann_entropy_is_the_target(
    fraction,
):
    """Descending both the actor's logits and log α (the temperature more slowly) converges
    to π = softmax(q/α*) with α* the root of mean_s H(softmax(q_s/α)) = fraction × log|A|,
    the entropy computed exactly by scipy and the root by Brent's method."""
    table, obs = discrete_problem(seed=3)
    q = table.min(0)
    target = fraction * np.log(q.shape[-1])
    config = sac.Config(target_entropy_fraction=fraction)
    params = sac.Policy(TableActor(jnp.zeros(q.shape)))
    logits, log_alpha = _descend(params, TableCritics(jnp.asarray(table)), obs, config,
                                 jnp.zeros(q.shape), jnp.log(1.0), 0.5, 4000)

    def entropy_gap(alpha):
        return np.mean(stats.entropy(special.softmax(q / alpha, -1), axis=-1)) - target

    alpha_star = optimize.brentq(entropy_gap, 1e-3, 1e3, xtol=1e-14)
    np.testing.assert_allclose(np.exp(float(log_alpha)), alpha_star, rtol=1e-5)
    np.testing.assert_allclose(special.softmax(np.asarray(logits), -1),
                               special.softmax(q / alpha_star, -1), atol=1e-5)


# ----------------------------------------------------------------------------- critic target


@pytest.mark.parametrize("std", [0.15, 1.2])  # E log π > 0 (narrow) and < 0 (wide)
def test_continuous_soft_target_is_the_expected_clipped_q_minus_alpha_log_pi(std):
    """y = r + γ V̄(s'), V̄(s') = E_{a'~π}[min_j Q̄_j(s', a') − α log π(a'|s')]: the mean of
    sac.soft_targets over 10⁵ sampled a' against the integral over u ~ N(μ, σ²) by adaptive
    quadrature, log π by the change of variables on the box (−2, 1). Tolerance: 5 standard
    errors. The entropy term's sign flips between the two σ, and the box's log half shifts
    it by α log 1.5."""
    mean, low, high, alpha, gamma, reward = 0.3, -2.0, 1.0, 0.8, 0.9, 0.25
    half = (high - low) / 2
    centre, curvature, offset = CENTRE[:, :1], CURVATURE, OFFSET
    size = 100_000
    config = sac.Config(gamma=gamma)
    params = sac.Policy(ConstantActor(jnp.asarray([mean, np.log(std)])), jnp.asarray([low]),
                        jnp.asarray([high]))
    batch = rollout.Transition(
        obs=jnp.zeros((size, 1)), action=jnp.zeros((size, 1)), reward=jnp.full(size, reward),
        next_obs=jnp.zeros((size, 1)), terminated=jnp.zeros(size, bool),
        truncated=jnp.zeros(size, bool),
    )
    critics = QuadraticCritics(*map(jnp.asarray, (centre, curvature, offset)))
    y = np.asarray(jax.jit(sac.soft_targets)(params, critics, alpha, batch,
                                             jax.random.PRNGKey(0), config))

    def integrand(u):
        log_prob = box_log_density(np.array([[u]]), mean, std, half)[0]
        q = quadratic_min(np.array([np.tanh(u)]), centre, curvature, offset)
        return stats.norm.pdf(u, mean, std) * (q - alpha * log_prob)

    value = integrate.quad(integrand, mean - 12 * std, mean + 12 * std, limit=200,
                           epsabs=1e-12, epsrel=1e-12)[0]
    want = reward + gamma * value
    error = y.std() / np.sqrt(size)
    assert abs(y.mean() - want) < 5 * error, (y.mean(), want, error)
    # The entropy term is far above the error: a wrong sign or scale would show.
    entropy_term = integrate.quad(
        lambda u: stats.norm.pdf(u, mean, std)
        * box_log_density(np.array([[u]]), mean, std, half)[0],
        mean - 12 * std, mean + 12 * std, limit=200)[0]
    assert gamma * alpha * min(abs(entropy_term), np.log(half)) > 20 * error


def test_discrete_soft_target_is_the_exact_expectation_over_the_next_action():
    """V̄(s') = Σ_a' π(a'|s') [min_j Q̄_j(s', a') − α log π(a'|s')] by enumeration, and
    y = r + γ (1 − terminated) V̄(s'), for critics whose argmin differs across actions (so
    E_π[min_j Q̄_j] < min_j E_π[Q̄_j])."""
    table, _ = discrete_problem(seed=5)
    num_states = table.shape[1]
    logits = np.random.default_rng(6).normal(size=table.shape[1:])
    alpha, gamma = 0.8, 0.9
    config = sac.Config(gamma=gamma)
    next_obs = jnp.asarray([0.0, 1.0, 2.0, 1.0])[:, None]
    batch = rollout.Transition(
        obs=jnp.zeros((4, 1)), action=jnp.zeros(4, jnp.int32),
        reward=jnp.asarray([0.5, -1.0, 2.0, 0.3]), next_obs=next_obs,
        terminated=jnp.asarray([False, False, False, True]), truncated=jnp.zeros(4, bool),
    )
    y = sac.soft_targets(sac.Policy(TableActor(jnp.asarray(logits))),
                         TableCritics(jnp.asarray(table)), alpha, batch,
                         jax.random.PRNGKey(0), config)

    pi, log_pi = special.softmax(logits, -1), special.log_softmax(logits, -1)
    value = np.array([sum(pi[s, a] * (min(table[0, s, a], table[1, s, a]) - alpha * log_pi[s, a])
                          for a in range(table.shape[2])) for s in range(num_states)])
    s = np.asarray(next_obs[:, 0], int)
    want = np.asarray(batch.reward) + gamma * (1 - np.asarray(batch.terminated)) * value[s]
    np.testing.assert_allclose(y, want, rtol=1e-12)
    # The clipped double-Q minimum is taken inside the expectation: this problem tells apart.
    outside = np.min(np.sum(pi * table, -1), 0) - alpha * np.sum(pi * log_pi, -1)
    assert np.max(np.abs(outside - value)) > 0.1
