"""PlaNet's sequence ELBO, window mask and latent planning against a tractable model.

``planet.elbo_terms`` and ``planet.loss`` call six methods of the model (``embed``,
``transition``, ``prior``, ``posterior``, ``decode``, ``reward``). A duck-typed
linear-Gaussian state-space model provides them:

    h_t = A s_{t−1} + B a_{t−1} (h_0 = 0),   p(s_t | h_t) = N(h_t, diag q²),
    o_t = C s_t + N(0, σ_o² I),              r_t = d·s_t + e·h_t + N(0, 1)   (t ≥ 1),

and its posterior is the exact conditional p(s_t | h_t, o_t) (C has orthogonal columns, so
it is diagonal, as the code's posterior is). The references are dense Gaussian algebra in
NumPy/SciPy over the stacked latents and observations, with no filtering recursion:
log p(o_{0:T}, r_{1:T} | a) is the marginal of the joint Gaussian, and the expected ELBO of
the filtering posterior q(s_{0:T}) = Π_t q(s_t | h_t, o_t) is E_q[log p(s, o, r)] + H(q).

- A = 0, d = 0 (nothing later tells about s_t, the reward does not depend on s_t): the
  filtering posterior is the exact posterior, so with free nats 0 the ELBO's Monte Carlo
  mean over many windows equals log p (both free-nats modes). A reward aligned one step
  wrong, a KL against another step's prior, a dropped first step, a wrong posterior
  sample or likelihood constant all move it by many standard errors.
- A ≠ 0, d ≠ 0: the Monte Carlo mean equals the exact expected ELBO of the filtering
  posterior, which lies strictly below log p.
- the window mask: after an episode end (terminated or truncated) or past the newest data,
  the counted steps' ELBO has the mean log p of the prefix, whatever follows;
- free nats F: the per-step clip costs at least the clip of the mean KL (mean of max ≥ max
  of mean), and both reduce to the ELBO at F = 0;
- planning: with this model the predicted cost is affine in the box actions, so the plan's
  cost is the closed-form latent return of its actions, no better than the box vertex
  optimum, and CEM gets within 2% of it.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from minirl.core import rollout
from minirl.model_based import planet

pytestmark = pytest.mark.timeout(300)

S, M, IMAGE = 2, 1, (2, 2, 1)  # latent, action and image sizes
N_PIX = int(np.prod(IMAGE))
T = 3  # control steps per window: images o_0 … o_T, rewards r_1 … r_T
SIGMA_O = 0.7  # decoder_std


@dataclasses.dataclass(frozen=True)
class _Cell:
    hidden_size: int  # what planet.observe reads for h_0 = 0


class LinearGaussianSSM(eqx.Module):
    """The linear-Gaussian state-space model, shaped like ``planet.RSSM`` (unbatched)."""

    A: jax.Array  # [S, S]
    B: jax.Array  # [S, M]
    C: jax.Array  # [N_PIX, S], orthogonal columns
    q: jax.Array  # [S] prior standard deviations
    d: jax.Array  # [S]
    e: jax.Array  # [S]
    sigma_o: float = eqx.field(static=True)
    gru: _Cell = eqx.field(static=True)

    def embed(self, obs):
        return jnp.ravel(obs)

    def transition(self, belief, action):
        return self.A @ belief.s + self.B @ action

    def prior(self, h, min_std):
        return h, self.q

    def posterior(self, h, embedding, min_std):
        """p(s | h, o) ∝ N(s; h, q²) N(o; C s, σ_o²): precision 1/q² + diag(CᵀC)/σ_o²."""
        var = 1.0 / (1.0 / self.q ** 2 + jnp.sum(self.C ** 2, 0) / self.sigma_o ** 2)
        mean = var * (h / self.q ** 2 + self.C.T @ embedding / self.sigma_o ** 2)
        return mean, jnp.sqrt(var)

    def decode(self, belief):
        return (self.C @ belief.s).reshape(IMAGE)

    def reward(self, belief):
        return self.d @ belief.s + self.e @ belief.h


def _system(rng, a_scale, d_scale):
    A, B = a_scale * rng.normal(size=(S, S)), rng.normal(size=(S, M))
    C = np.zeros((N_PIX, S))
    C[:2, 0] = rng.uniform(0.5, 1.5, 2)  # orthogonal columns: disjoint pixels
    C[2:, 1] = rng.uniform(0.5, 1.5, 2)
    e = B[:, 0] + 0.3 * rng.normal(size=S)  # the reward sees the action (e·B ≠ 0)
    return dict(A=A, B=B, C=C, q=rng.uniform(0.5, 1.2, S), d=d_scale * rng.normal(size=S),
                e=e)


def _joint(system, actions):
    """Mean and covariance of z = (s_0 … s_T, o_0 … o_T, r_1 … r_T) under the model."""
    T = len(actions)
    A, B, C, q, d, e = (system[k] for k in "ABCqde")
    n_s = S * (T + 1)
    Ms = np.zeros((n_s, n_s))  # s = Ms ε + ms
    ms = np.zeros(n_s)
    for t in range(T + 1):
        rows = slice(S * t, S * t + S)
        if t > 0:
            prev = slice(S * (t - 1), S * t)
            Ms[rows] = A @ Ms[prev]
            ms[rows] = A @ ms[prev] + B @ actions[t - 1]
        Ms[rows, rows] += np.diag(q)
    n_y = N_PIX * (T + 1) + T
    G, g = np.zeros((n_y, n_s)), np.zeros(n_y)  # y = G s + g + noise
    for t in range(T + 1):
        G[N_PIX * t:N_PIX * (t + 1), S * t:S * (t + 1)] = C
    for t in range(1, T + 1):
        row = N_PIX * (T + 1) + t - 1
        G[row, S * t:S * (t + 1)] = d
        G[row, S * (t - 1):S * t] = e @ A
        g[row] = e @ B @ actions[t - 1]
    noise = np.diag(np.r_[np.full(N_PIX * (T + 1), SIGMA_O ** 2), np.ones(T)])
    Ss = Ms @ Ms.T
    mean = np.r_[ms, G @ ms + g]
    cov = np.block([[Ss, Ss @ G.T], [G @ Ss, G @ Ss @ G.T + noise]])
    return mean, cov, n_s


def _sample(system, actions, rng):
    T = len(actions)
    mean, cov, n_s = _joint(system, actions)
    y = rng.multivariate_normal(mean, cov)[n_s:]
    return y[:N_PIX * (T + 1)].reshape(T + 1, *IMAGE), y[N_PIX * (T + 1):]


def _log_likelihood(system, actions, images, rewards):
    """log p(o_{0:T}, r_{1:T} | a): the marginal of the joint Gaussian (SciPy)."""
    mean, cov, n_s = _joint(system, actions)
    y = np.r_[images.reshape(-1), rewards]
    return scipy.stats.multivariate_normal(mean[n_s:], cov[n_s:, n_s:]).logpdf(y)


def _expected_elbo(system, actions, images, rewards):
    """E_q[log p(s, o, r) − log q(s)] for the filtering posterior q(s) = Π_t q(s_t | h_t, o_t),
    a linear-Gaussian chain s_t = W h_t + c_t + √v ε_t (dense mean and covariance)."""
    T = len(actions)
    A, B, C, q = (system[k] for k in "ABCq")
    v = 1.0 / (1.0 / q ** 2 + np.sum(C ** 2, 0) / SIGMA_O ** 2)
    W = np.diag(v / q ** 2)
    n_s = S * (T + 1)
    Mq, mq = np.zeros((n_s, n_s)), np.zeros(n_s)
    for t in range(T + 1):
        rows = slice(S * t, S * t + S)
        c = v * (C.T @ images[t].reshape(-1)) / SIGMA_O ** 2
        mq[rows] = c
        if t > 0:
            prev = slice(S * (t - 1), S * t)
            Mq[rows] = W @ A @ Mq[prev]
            mq[rows] += W @ (A @ mq[prev] + B @ actions[t - 1])
        Mq[rows, rows] += np.diag(np.sqrt(v))
    Sq = Mq @ Mq.T
    mean, cov, _ = _joint(system, actions)
    z = np.r_[mq, images.reshape(-1), rewards]
    Sz = np.zeros_like(cov)
    Sz[:n_s, :n_s] = Sq
    precision = np.linalg.inv(cov)
    _, logdet = np.linalg.slogdet(2 * np.pi * cov)
    expected_log_joint = -0.5 * ((z - mean) @ precision @ (z - mean)
                                 + np.trace(precision @ Sz) + logdet)
    entropy = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * Sq)[1]
    return expected_log_joint + entropy


def _model(system) -> LinearGaussianSSM:
    return LinearGaussianSSM(**{k: jnp.asarray(v) for k, v in system.items()},
                             sigma_o=SIGMA_O, gru=_Cell(S))


def _windows(images, actions, rewards, count):
    """``count`` copies of one window (each gets its own posterior samples)."""
    T = len(actions)
    tile = lambda x: jnp.broadcast_to(jnp.asarray(x), (count, *np.shape(x)))  # noqa: E731
    data = rollout.Transition(
        obs=tile(images[:T]), action=tile(actions), reward=tile(rewards),
        next_obs=tile(images[1:]), terminated=jnp.zeros((count, T), bool),
        truncated=jnp.zeros((count, T), bool))
    return planet.Sequences(data, jnp.ones((count, T), bool))


def _elbo_samples(system, actions, images, rewards, config, count=4000, seed=0):
    """Per-window ELBO samples Σ_t (log p(o_t|·) + log p(r_t|·) − KL_t), and −(T+1)·loss
    (every step valid)."""
    T = len(actions)
    model, batch = _model(system), _windows(images, actions, rewards, count)
    key = jax.random.PRNGKey(seed)
    terms = eqx.filter_jit(planet.elbo_terms)(model, key, batch, config)
    elbo = np.asarray(jnp.sum((terms["image_ll"] + terms["reward_ll"] - terms["kl"])
                              * terms["mask"], axis=1), np.float64)
    loss, _ = eqx.filter_jit(planet.loss)(model, key, batch, config)
    return elbo, -(T + 1) * float(loss)


def _config(**kwargs):
    return planet.Config(**{"decoder_std": SIGMA_O, "free_nats": 0.0, **kwargs})


def _problem(seed, a_scale, d_scale, steps=T):
    rng = np.random.default_rng(seed)
    system = _system(rng, a_scale, d_scale)
    actions = rng.uniform(-2.0, 2.0, (steps, M))
    images, rewards = _sample(system, actions, rng)
    return system, actions, images, rewards


@pytest.mark.parametrize("mode", ["step", "mean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_elbo_equals_the_log_likelihood_when_the_posterior_is_exact(seed, mode):
    with jax.enable_x64(True):
        system, actions, images, rewards = _problem(seed, a_scale=0.0, d_scale=0.0)
        elbo, from_loss = _elbo_samples(system, actions, images, rewards,
                                        _config(free_nats_mode=mode), seed=seed)
    log_p = _log_likelihood(system, actions, images, rewards)
    se = elbo.std() / np.sqrt(len(elbo))
    assert abs(elbo.mean() - log_p) < 4.5 * se + 1e-6, (elbo.mean(), log_p, se)
    assert from_loss == pytest.approx(elbo.mean(), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_elbo_is_the_expected_elbo_of_the_filtering_posterior_below_log_likelihood(seed):
    with jax.enable_x64(True):
        system, actions, images, rewards = _problem(seed, a_scale=0.6, d_scale=1.0)
        elbo, from_loss = _elbo_samples(system, actions, images, rewards, _config(),
                                        seed=seed)
    log_p = _log_likelihood(system, actions, images, rewards)
    expected = _expected_elbo(system, actions, images, rewards)
    se = elbo.std() / np.sqrt(len(elbo))
    assert abs(elbo.mean() - expected) < 4.5 * se, (elbo.mean(), expected, se)
    assert expected < log_p - 0.1  # a strict bound: the filter ignores the future
    assert from_loss == pytest.approx(elbo.mean(), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("cut", ["terminated", "truncated", "past_the_data"])
def test_steps_after_an_episode_end_or_past_the_data_do_not_count(cut):
    """A window of 4 transitions whose episode ends at transition 1 (o_2 is its last image)
    or whose data stop there (``valid`` False from transition 2) counts the steps of the
    2-transition prefix only: the ELBO of the counted steps has the mean log p(o_{0:2},
    r_{1:2} | a_{0:1}), whatever follows (here garbage)."""
    count = 4000
    with jax.enable_x64(True):
        system, actions, images, rewards = _problem(4, a_scale=0.0, d_scale=0.0, steps=4)
        log_p = _log_likelihood(system, actions[:2], images[:3], rewards[:2])
        rng = np.random.default_rng(5)
        images[3:] = 50.0 * rng.normal(size=images[3:].shape)
        rewards[2:], actions[2:] = 100.0, 5.0
        batch = _windows(images, actions, rewards, count)
        data, valid = batch.data, batch.valid
        if cut == "past_the_data":
            valid = valid.at[:, 2:].set(False)
        else:
            data = eqx.tree_at(lambda d: getattr(d, cut), data,
                               getattr(data, cut).at[:, 1].set(True))
        batch = planet.Sequences(data, valid)
        key = jax.random.PRNGKey(0)
        model = _model(system)
        terms = eqx.filter_jit(planet.elbo_terms)(model, key, batch, _config())
        loss, _ = eqx.filter_jit(planet.loss)(model, key, batch, _config())
    mask = np.asarray(terms["mask"])
    np.testing.assert_array_equal(mask, np.broadcast_to([1, 1, 1, 0, 0], mask.shape))
    terms = {k: np.asarray(v) for k, v in terms.items()}
    elbo = np.sum((terms["image_ll"] + terms["reward_ll"] - terms["kl"]) * mask, axis=1)
    se = elbo.std() / np.sqrt(count)
    assert abs(elbo.mean() - log_p) < 4.5 * se, (elbo.mean(), log_p, se)
    assert -3 * float(loss) == pytest.approx(elbo.mean(), rel=1e-9)


def test_free_nats_per_step_cost_at_least_the_clipped_mean():
    """mean_t max(KL_t, F) ≥ max(mean_t KL_t, F), strictly when F splits the KLs; both are
    the ELBO's mean KL at F = 0 and F itself above every KL."""
    with jax.enable_x64(True):
        system, actions, images, rewards = _problem(3, a_scale=0.6, d_scale=1.0)
        model, batch = _model(system), _windows(images, actions, rewards, 64)
        key = jax.random.PRNGKey(0)
        terms = eqx.filter_jit(planet.elbo_terms)(model, key, batch, _config())
        loss = eqx.filter_jit(planet.loss)
        mask = np.asarray(terms["mask"])
        likelihood = np.sum(np.asarray(terms["image_ll"] + terms["reward_ll"]) * mask)
        likelihood /= mask.sum()
        kl = np.asarray(terms["kl"])[mask > 0]
        split = float(np.median(kl))
        losses = {(free, mode): float(loss(model, key, batch, _config(
            free_nats=free, free_nats_mode=mode))[0])
            for free in (0.0, split, kl.max() + 1.0) for mode in ("step", "mean")}
    assert losses[split, "step"] > losses[split, "mean"] + 1e-3
    for mode in ("step", "mean"):
        assert losses[0.0, mode] == pytest.approx(kl.mean() - likelihood, rel=1e-12)
        assert losses[kl.max() + 1.0, mode] == pytest.approx(kl.max() + 1.0 - likelihood,
                                                             rel=1e-12)


# ----------------------------------------------------------------------------- planning


def test_plan_cost_is_the_closed_form_latent_return_and_near_the_box_optimum():
    """The planner's latent model is the prior's mean rollout, s_k = h_k = A s_{k−1} + B a_k,
    with reward (d + e)·s_k, so the predicted cost of box actions a_{0:H} is affine,
    J(a) = −Σ_{k=1..H} (d + e)·(A^k s_0 + Σ_{j<k} A^{k−1−j} B a_j), minimised at a vertex of
    the box. The plan's cost is J of its actions mapped to the box, lies between the vertex
    optimum and the cost of the initial mean, and CEM gets close to the optimum."""
    horizon, low, high = 5, -2.0, 2.0
    with jax.enable_x64(True):
        rng = np.random.default_rng(8)
        system = _system(rng, a_scale=0.5, d_scale=1.0)
        model = _model(system)
        s0 = rng.normal(size=S)
        belief = planet.Belief(jnp.asarray(rng.normal(size=S)), jnp.asarray(s0))
        config = _config(horizon=horizon, num_samples=300, num_elites=30, cem_iterations=6)
        params = planet.Params(model, jnp.array([low]), jnp.array([high]))
        init = jnp.zeros((horizon, M))
        result = eqx.filter_jit(planet.plan)(params, belief, jax.random.PRNGKey(1), init,
                                             config)
    A, B, w = system["A"], system["B"], system["d"] + system["e"]
    power = [np.linalg.matrix_power(A, k) for k in range(horizon + 1)]
    constant = -sum(w @ power[k] @ s0 for k in range(1, horizon + 1))
    gain = np.array([sum(w @ power[k - 1 - j] @ B for k in range(j + 1, horizon + 1))
                     for j in range(horizon)])  # [H, M]: J = constant − Σ_j gain_j · a_j

    def cost(unit):
        box = (low + high) / 2 + (high - low) / 2 * np.asarray(unit)
        return constant - np.sum(gain * box)

    optimum = constant - np.sum(np.abs(gain) * high)  # a_j = ±2 by the sign of gain_j
    assert float(result.cost) == pytest.approx(cost(result.actions), rel=1e-9, abs=1e-9)
    assert optimum - 1e-9 <= float(result.cost) <= cost(init) + 1e-9
    assert float(result.cost) - optimum < 0.02 * (cost(init) - optimum)
