"""The BNN's training gradient against the closed-form gradient of the negative ELBO.

``dynamics.loss`` for ``kind="bnn"`` draws one set of weights w = m + s ⊙ ε per minibatch
(Blundell et al., 2015, §3.2). Its gradient must be an unbiased estimate of the gradient of
the per-datum negative ELBO

    L(m, log s) = E_q[mean_batch NLL(y; μ_w(x), σ²_w(x))] + penalty + β KL(q ‖ p) / N.

The reference: a network whose only uncertain weights are the last layer's mean head (every
other weight has s = e⁻³⁰), so μ_w(x) = φ(x)·W_μ + b_μ is Gaussian in the weights, with mean
μ̄ = φ·m_W + m_b and variance V = Σ_i φ_i² s_{W,i}² + s_b², and the expected NLL is the closed
form ½[((y − μ̄)² + V) e^{−v} + v + log 2π] (v, φ deterministic). Its gradient (autodiff of
that closed form, KL written out independently) must equal the Monte Carlo mean of the
code's single-draw gradients within 5 standard errors, for every component.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirl.model_based import dynamics as dyn

pytestmark = pytest.mark.timeout(300)

IN, HIDDEN, OUT = 5, 4, 3  # [obs, action] → tanh hidden → Gaussian head over 3 outputs
BATCH, SIZE = 8, 37  # minibatch rows and N, the valid rows of the dataset
DETERMINISTIC = -30.0  # log s of the weights treated as known


def _posterior(rng) -> dyn.Posterior:
    """Random means; the last layer's mean columns (and bias) get s ∈ [0.2, 0.8]."""
    det = lambda shape: jnp.full(shape, DETERMINISTIC)  # noqa: E731
    w_last_log_std = det((HIDDEN, 2 * OUT)).at[:, :OUT].set(
        np.log(rng.uniform(0.2, 0.8, (HIDDEN, OUT))))
    b_last_log_std = det((2 * OUT,)).at[:OUT].set(np.log(rng.uniform(0.2, 0.8, OUT)))
    return dyn.Posterior(
        weight_mean=(jnp.asarray(rng.normal(0, 0.6, (IN, HIDDEN))),
                     jnp.asarray(rng.normal(0, 0.6, (HIDDEN, 2 * OUT)))),
        weight_log_std=(det((IN, HIDDEN)), w_last_log_std),
        bias_mean=(jnp.asarray(rng.normal(0, 0.3, HIDDEN)),
                   jnp.asarray(rng.normal(0, 0.3, 2 * OUT))),
        bias_log_std=(det((HIDDEN,)), b_last_log_std),
        max_logvar=jnp.asarray(rng.uniform(0.0, 1.0, OUT)),
        min_logvar=jnp.asarray(rng.uniform(-4.0, -2.0, OUT)),
    )


def _closed_form_negative_elbo(post: dyn.Posterior, z_in, z_target, config) -> jax.Array:
    """E_q[mean_batch NLL] in closed form (only the last mean head is uncertain), plus the
    log-variance penalty and β KL / N with KL = Σ log(p/s) + (s² + m²)/(2p²) − ½."""
    phi = jnp.tanh(z_in @ post.weight_mean[0] + post.bias_mean[0])  # [B, H]
    w, b = post.weight_mean[1], post.bias_mean[1]
    s_w, s_b = jnp.exp(post.weight_log_std[1][:, :OUT]), jnp.exp(post.bias_log_std[1][:OUT])
    mu = phi @ w[:, :OUT] + b[:OUT]
    var_mu = jnp.square(phi) @ jnp.square(s_w) + jnp.square(s_b)
    raw = phi @ w[:, OUT:] + b[OUT:]
    v = dyn.soft_bound_logvar(raw, post.min_logvar, post.max_logvar)
    nll = 0.5 * ((jnp.square(z_target - mu) + var_mu) * jnp.exp(-v) + v + math.log(2 * math.pi))
    expected_nll = jnp.mean(jnp.sum(nll, -1))
    penalty = config.logvar_penalty * (jnp.sum(post.max_logvar) - jnp.sum(post.min_logvar))
    p = config.prior_std
    kl = sum(jnp.sum(jnp.log(p) - ls + (jnp.exp(2 * ls) + jnp.square(m)) / (2 * p ** 2) - 0.5)
             for m, ls in zip((*post.weight_mean, *post.bias_mean),
                              (*post.weight_log_std, *post.bias_log_std)))
    return expected_nll + penalty + config.kl_weight * kl / SIZE


@pytest.mark.parametrize("seed", [0, 1])
def test_single_draw_gradient_is_unbiased_for_the_negative_elbo(seed):
    draws = 20_000
    config = dyn.ModelConfig(kind="bnn", hidden=(HIDDEN,), activation="tanh", kl_weight=0.7,
                             prior_std=0.8, logvar_penalty=0.01)
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        post = _posterior(rng)
        z_in = jnp.asarray(rng.normal(size=(BATCH, IN)))
        z_target = jnp.asarray(rng.normal(size=(BATCH, OUT)))

        def one(key):
            return jax.grad(lambda p: dyn.loss(p, z_in, z_target, key, jnp.asarray(SIZE),
                                               config)[0])(post)

        grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(seed), draws))
        reference = jax.grad(_closed_form_negative_elbo)(post, z_in, z_target, config)
    for name, g, ref in zip(("weight_mean", "weight_log_std", "bias_mean", "bias_log_std",
                             "max_logvar", "min_logvar"),
                            (grads.weight_mean, grads.weight_log_std, grads.bias_mean,
                             grads.bias_log_std, grads.max_logvar, grads.min_logvar),
                            (reference.weight_mean, reference.weight_log_std,
                             reference.bias_mean, reference.bias_log_std,
                             reference.max_logvar, reference.min_logvar)):
        for sampled, exact in zip(jax.tree.leaves(g), jax.tree.leaves(ref)):
            sampled, exact = np.asarray(sampled), np.asarray(exact)
            mean = sampled.mean(0)
            se = sampled.std(0) / math.sqrt(draws)
            bad = np.abs(mean - exact) > 5 * se + 1e-9 + 1e-9 * np.abs(exact)
            assert not bad.any(), (name, mean[bad], exact[bad], se[bad])
