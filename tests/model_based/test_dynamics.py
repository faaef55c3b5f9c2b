"""Dynamics models (minirl.model_based.dynamics) against independent references.

- the Gaussian NLL equals SciPy's −log N(y; μ, σ²), is stationary at μ = y and minimised
  over a shared variance at the residual variance (SciPy's scalar minimiser);
- the BNN's closed-form KL(q ‖ p) matches a NumPy Monte Carlo average of log q − log p;
  weight draws have the posterior's moments (the loss's gradient against the closed-form
  negative ELBO: test_bnn_gradient.py);
- bootstrap resamples draw with replacement: indices in [0, size), duplicates, counts
  uniform (χ² test), the expected number of distinct indices 1 − (1 − 1/n)ⁿ;
- normalisers agree with NumPy on the valid prefix and invert; the soft-bounded log-variance
  stays in [min, max] up to softplus' δ and is increasing;
- the vmapped ensemble equals a loop over members: predictions (and a NumPy forward pass)
  and one AdamW step (per-member ``jax.grad`` and optimiser); ``fit`` vmapped over seeds
  equals a loop; same key → same bits; jit == no-jit; rows ≥ size are never read; one
  compile serves every size;
- fitted to a linear system s' = A s + B a + noise (with a linear reward), every kind
  recovers A and B (the Jacobian of its mean prediction) and predicts held-out data;
  the probabilistic model learns the noise level;
- bad configs raise ConfigError naming the field.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from minirl.core.config import ConfigError
from minirl.core.distributions import Normal
from minirl.model_based import dynamics as dyn

pytestmark = pytest.mark.timeout(180)

SEEDS = st.integers(0, 2**31 - 1)
KINDS = ("deterministic", "probabilistic", "bnn")
OBS_DIM, ACTION_DIM = 3, 2


def small_config(kind: str, **kwargs) -> dyn.ModelConfig:
    kwargs = {"ensemble_size": 3, "hidden": (8, 8), **kwargs}
    return dyn.ModelConfig(kind=kind, **kwargs)


def random_data(seed: int, n: int, learn_reward_dim: bool = True) -> dyn.Data:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(n, ACTION_DIM)).astype(np.float32)
    next_obs = (obs + 0.3 * rng.normal(size=obs.shape) + 0.5).astype(np.float32)
    reward = rng.normal(size=(n,)).astype(np.float32)
    return dyn.Data(*(jnp.asarray(x) for x in (obs, action, next_obs, reward)))


def random_normalisers(model: dyn.Model, seed: int) -> dyn.Model:
    rng = np.random.default_rng(seed)

    def norm(dim):
        return dyn.Normaliser(jnp.asarray(rng.normal(size=dim), jnp.float32),
                              jnp.asarray(rng.uniform(0.2, 3.0, size=dim), jnp.float32))

    return dyn.Model(model.members, norm(model.input_norm.mean.shape[0]),
                     norm(model.output_norm.mean.shape[0]))


def member(tree, j):
    return jax.tree.map(lambda leaf: leaf[j], tree)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(kind="gaussian_process"), "kind"),
        (dict(ensemble_size=0), "ensemble_size"),
        (dict(ensemble_size=2.5), "ensemble_size"),
        (dict(hidden=()), "hidden"),
        (dict(hidden=(32, 0)), "hidden"),
        (dict(hidden=(-4,)), "hidden"),
        (dict(hidden=[32]), "hidden"),
        (dict(activation="gelu"), "activation"),
        (dict(learn_reward="yes"), "learn_reward"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(weight_decay=-1e-5), "weight_decay"),
        (dict(logvar_penalty=-0.01), "logvar_penalty"),
        (dict(kl_weight=-1.0), "kl_weight"),
        (dict(prior_std=0.0), "prior_std"),
        (dict(min_std=-1.0), "min_std"),
        (dict(posterior_init_std=0.0), "posterior_init_std"),
        (dict(init_min_logvar=1.0, init_max_logvar=0.5), "init_min_logvar"),
    ],
)
def test_bad_config_raises_config_error_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field) as info:
        dyn.ModelConfig(**kwargs)
    assert "allowed" in str(info.value) or "must" in str(info.value)


def test_bad_fit_and_sampling_arguments_raise():
    config = small_config("probabilistic")
    model = dyn.init(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, config)
    opt_state = dyn.init_optimizer(model, config)
    data = random_data(0, 16)
    with pytest.raises(ConfigError, match="num_updates"):
        dyn.fit(jax.random.PRNGKey(0), model, opt_state, data, 16, config, num_updates=0,
                batch_size=4)
    with pytest.raises(ConfigError, match="batch_size"):
        dyn.fit(jax.random.PRNGKey(0), model, opt_state, data, 16, config, num_updates=1,
                batch_size=0)
    with pytest.raises(ConfigError, match="ensemble_size"):
        dyn.sample_members(jax.random.PRNGKey(0), model, 4, config)
    with pytest.raises(ConfigError, match="obs_dim"):
        dyn.init(jax.random.PRNGKey(0), 0, ACTION_DIM, config)


def test_config_numbers_are_leaves_and_shapes_static():
    config = dyn.ModelConfig()
    numeric = [f for f in config.__dataclass_fields__.values() if not f.metadata.get("static")]
    assert len(jax.tree.leaves(config)) == len(numeric) == 9  # all sweepable with vmap
    assert {f.name for f in numeric} >= {"learning_rate", "weight_decay", "kl_weight"}
    assert dyn.ModelConfig(learning_rate=3e-4).kind == "probabilistic"


# ----------------------------------------------------------------------------- normalisers


@given(SEEDS, st.integers(1, 32), st.floats(-5, 5), st.floats(1e-3, 10.0),
       st.sampled_from([1e-4, 1e-2, 1.0]))
def test_normaliser_matches_numpy_on_the_prefix_and_inverts(seed, size, loc, scale, min_std):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        x = rng.normal(loc, scale, size=(32, 4))
        x[:, 3] = loc  # a constant column: its std is floored
        x[size:] = rng.choice([1e6, -1e6, np.nan], size=(32 - size, 4))  # never read
        norm = jax.jit(dyn.fit_normaliser)(jnp.asarray(x), jnp.asarray(size), min_std)
        np.testing.assert_allclose(norm.mean, x[:size].mean(0), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(norm.std, np.maximum(x[:size].std(0), min_std),
                                   rtol=1e-8, atol=1e-12)
        assert np.all(np.asarray(norm.std) >= min_std)
        z = rng.normal(size=(5, 4))
        np.testing.assert_allclose(norm.normalise(norm.denormalise(z)), z, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(norm.denormalise(norm.normalise(x[:size])), x[:size],
                                   rtol=1e-9, atol=1e-9 * scale)
        if size > 1:  # the valid prefix is standardised (except the floored column)
            standard = np.asarray(norm.normalise(x[:size]))[:, :3]
            np.testing.assert_allclose(standard.mean(0), 0.0, atol=1e-8)
            unfloored = x[:size, :3].std(0) > min_std
            np.testing.assert_allclose(standard.std(0)[unfloored], 1.0, rtol=1e-8)


# ----------------------------------------------------------------------------- soft bounds


@given(SEEDS, st.floats(-20.0, 2.0, allow_subnormal=False), st.floats(0.1, 20.0))
def test_soft_bounded_logvar_stays_inside_and_is_increasing(seed, low, gap):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        raw = np.sort(np.concatenate([rng.normal(0, 30, 200), [-1e4, -50, 0, 50, 1e4]]))
        high = low + gap
        v = np.asarray(dyn.soft_bound_logvar(jnp.asarray(raw), low, high))
        delta = np.log1p(np.exp(-gap))  # softplus(min − max): the overshoot the formula allows
        assert np.all(v >= low)
        assert np.all(v <= high + delta + 1e-12)
        # increasing up to float64 rounding (softplus of −1e4 underflows towards 1e-26)
        assert np.all(np.diff(v) >= -1e-15)
        np.testing.assert_allclose(v[-1], high + delta, rtol=1e-12)  # raw → +∞
        np.testing.assert_allclose(v[0], low, rtol=1e-12)  # raw → −∞
        # Inside the band, away from both bounds, it is close to the identity.
        if gap > 12:
            mid = low + gap / 2
            np.testing.assert_allclose(dyn.soft_bound_logvar(mid, low, high), mid, atol=0.01)


@given(SEEDS)
def test_network_logvar_is_inside_the_learned_bounds_for_any_input(seed):
    config = small_config("probabilistic")
    model = dyn.init(jax.random.PRNGKey(seed), OBS_DIM, ACTION_DIM, config)
    net = member(model.members, 1)
    net = eqx.tree_at(lambda n: (n.max_logvar, n.min_logvar), net,
                      (jnp.array([0.5, -1.0, 2.0]), jnp.array([-10.0, -3.0, -2.0])))
    z = 100.0 * jax.random.normal(jax.random.PRNGKey(seed + 1), (64, OBS_DIM + ACTION_DIM))
    _, logvar = dyn.network_output(net, z, config)
    delta = jnp.log1p(jnp.exp(-(net.max_logvar - net.min_logvar)))
    assert bool(jnp.all(logvar >= net.min_logvar))
    assert bool(jnp.all(logvar <= net.max_logvar + delta + 1e-6))


# ----------------------------------------------------------------------------- Gaussian NLL


@given(st.floats(-50, 50), st.floats(-12, 6), st.floats(-50, 50))
def test_gaussian_nll_is_minus_scipy_logpdf(mean, logvar, target):
    with jax.enable_x64(True):
        expected = -scipy.stats.norm.logpdf(target, loc=mean, scale=np.exp(0.5 * logvar))
        np.testing.assert_allclose(dyn.gaussian_nll(mean, logvar, target), expected, rtol=1e-10)


@given(SEEDS, st.sampled_from([5, 40]))
def test_gaussian_nll_is_minimised_at_the_target_and_the_residual_variance(seed, n):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        target = rng.normal(0, rng.uniform(0.1, 3), n)
        mean = target + rng.normal(0, rng.uniform(0.05, 2), n)  # some predictions
        residual_var = np.mean((target - mean) ** 2)

        def average_nll(shift, logvar):  # one shared σ² for all n points
            return jnp.mean(dyn.gaussian_nll(jnp.asarray(mean) + shift, logvar, target))

        # In μ: stationary at μ = y for any σ² (the gradient of each term is (μ − y)/σ²).
        grad_mean = jax.grad(lambda m: jnp.sum(dyn.gaussian_nll(m, 0.3, target)))(target)
        np.testing.assert_allclose(grad_mean, 0.0, atol=1e-12)
        # In σ²: SciPy's minimiser of the average NLL is the residual variance ...
        found = scipy.optimize.minimize_scalar(
            lambda v: float(np.mean(-scipy.stats.norm.logpdf(target, mean, np.exp(0.5 * v)))),
            bracket=(-10, 5), tol=1e-12,
        )
        np.testing.assert_allclose(np.exp(found.x), residual_var, rtol=1e-4)
        # ... where the gradient vanishes and nearby values are worse.
        v_star = np.log(residual_var)
        np.testing.assert_allclose(jax.grad(average_nll, 1)(0.0, v_star), 0.0, atol=1e-10)
        best = average_nll(0.0, v_star)
        for dv in (-0.1, 0.1):
            assert float(average_nll(0.0, v_star + dv)) > float(best)


# ----------------------------------------------------------------------------- BNN


def random_posterior(rng: np.random.Generator, config: dyn.ModelConfig) -> dyn.Posterior:
    sizes = (OBS_DIM + ACTION_DIM, *config.hidden, 2 * OBS_DIM)
    shapes_w = [(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    shapes_b = [(b,) for b in sizes[1:]]

    def draw(shapes, fn):
        return tuple(jnp.asarray(fn(s)) for s in shapes)

    return dyn.Posterior(
        draw(shapes_w, lambda s: rng.normal(0, 0.7, s)),
        draw(shapes_w, lambda s: rng.uniform(-2.5, 0.5, s)),
        draw(shapes_b, lambda s: rng.normal(0, 0.7, s)),
        draw(shapes_b, lambda s: rng.uniform(-2.5, 0.5, s)),
        jnp.full((OBS_DIM,), 0.5), jnp.full((OBS_DIM,), -10.0),
    )


@given(SEEDS, st.floats(0.3, 3.0))
def test_bnn_kl_matches_a_monte_carlo_estimate(seed, prior_std):
    config = dyn.ModelConfig(kind="bnn", hidden=(2,))
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        posterior = random_posterior(rng, config)
        closed_form = float(dyn.kl_divergence(posterior, prior_std))
        means = np.concatenate([np.ravel(m) for m in (*posterior.weight_mean,
                                                      *posterior.bias_mean)])
        stds = np.exp(np.concatenate([np.ravel(s) for s in (*posterior.weight_log_std,
                                                           *posterior.bias_log_std)]))
        samples = 20_000
        w = means + stds * rng.standard_normal((samples, means.size))
        log_ratio = (scipy.stats.norm.logpdf(w, means, stds)
                     - scipy.stats.norm.logpdf(w, 0.0, prior_std)).sum(-1)
        estimate, stderr = log_ratio.mean(), log_ratio.std() / np.sqrt(samples)
        assert abs(estimate - closed_form) < 5 * stderr + 1e-9, (estimate, closed_form, stderr)


def test_kl_is_zero_with_zero_gradient_when_q_equals_p():
    with jax.enable_x64(True):
        prior_std = 0.7
        kl = lambda m, s: jnp.sum(Normal(m, s).kl(Normal(0.0, jnp.log(prior_std))))
        m, s = jnp.zeros(4), jnp.full(4, np.log(prior_std))
        np.testing.assert_allclose(kl(m, s), 0.0, atol=1e-14)
        for g in jax.grad(kl, (0, 1))(m, s):
            np.testing.assert_allclose(g, 0.0, atol=1e-14)
        assert float(kl(m + 0.1, s)) > 0 and float(kl(m, s - 0.1)) > 0


@given(SEEDS)
def test_bnn_weight_draws_have_the_posterior_moments(seed):
    config = dyn.ModelConfig(kind="bnn", hidden=(4,), ensemble_size=2)
    model = dyn.init(jax.random.PRNGKey(seed), OBS_DIM, ACTION_DIM, config)
    rng = np.random.default_rng(seed)
    posterior = random_posterior(rng, dyn.ModelConfig(kind="bnn", hidden=(4,)))
    model = eqx.tree_at(lambda m: m.members, model, jax.tree.map(lambda x: x[None], posterior))
    num = 4000
    draws = dyn.sample_members(jax.random.PRNGKey(seed + 1), model, num, config)
    for drawn, mean, log_std in zip((*draws.weights, *draws.biases),
                                    (*posterior.weight_mean, *posterior.bias_mean),
                                    (*posterior.weight_log_std, *posterior.bias_log_std)):
        std = np.exp(np.asarray(log_std))
        assert drawn.shape == (num, *mean.shape)
        z = (np.asarray(drawn).mean(0) - np.asarray(mean)) / (std / np.sqrt(num))
        assert np.all(np.abs(z) < 5.5)
        np.testing.assert_allclose(np.asarray(drawn).std(0), std, rtol=0.12)


# ----------------------------------------------------------------------------- bootstrap


@given(SEEDS, st.sampled_from([7, 50, 200]))
def test_bootstrap_draws_with_replacement_from_the_valid_rows(seed, size):
    num = 8
    idx = np.asarray(jax.jit(dyn.bootstrap_indices, static_argnums=(2, 3))(
        jax.random.PRNGKey(seed), jnp.asarray(size), 256, num))[:, :size]
    assert idx.min() >= 0 and idx.max() < size
    # Duplicates occur (P[a resample of n ≥ 7 has none] = n!/nⁿ ≤ 0.007, per row).
    assert any(len(np.unique(row)) < size for row in idx)
    # Members get different resamples.
    assert len({tuple(row) for row in idx}) == num


@given(SEEDS, st.sampled_from([10, 30]))
def test_bootstrap_counts_follow_the_multinomial(seed, size):
    rows = 3000
    idx = np.asarray(dyn.bootstrap_indices(jax.random.PRNGKey(seed), size, size, rows))
    counts = np.stack([np.bincount(row, minlength=size) for row in idx])  # [rows, size]
    # Pooled counts are uniform over [0, size): χ² goodness of fit.
    assert scipy.stats.chisquare(counts.sum(0)).pvalue > 1e-6
    # Each index appears Binomial(size, 1/size) times in a resample: mean 1, var 1 − 1/size.
    per_index = counts[:, 0]
    np.testing.assert_allclose(per_index.mean(), 1.0, atol=5 * np.sqrt(1.0 / rows))
    np.testing.assert_allclose(per_index.var(), 1 - 1 / size, rtol=0.15)
    # Distinct indices per resample: size (1 − (1 − 1/size)^size) ≈ 0.632 size on average.
    distinct = (counts > 0).sum(1)
    expected = size * (1 - (1 - 1 / size) ** size)
    assert abs(distinct.mean() - expected) < 5 * distinct.std() / np.sqrt(rows) + 1e-9


# ----------------------------------------------------------------------------- ensembles


def numpy_predict(net, model, obs, action, config):
    """A float64 NumPy forward pass of one member (mean prediction)."""
    net = jax.tree.map(lambda x: np.asarray(x, np.float64), net)
    act = {"silu": lambda x: x / (1 + np.exp(-x)), "relu": lambda x: np.maximum(x, 0),
           "tanh": np.tanh}[config.activation]
    x = np.concatenate([obs, action], -1)
    h = (x - np.asarray(model.input_norm.mean)) / np.asarray(model.input_norm.std)
    for w, b in zip(net.weights[:-1], net.biases[:-1]):
        h = act(h @ w + b)
    out = h @ net.weights[-1] + net.biases[-1]
    mean = out[:, : out.shape[1] // 2] if config.gaussian else out
    y = mean * np.asarray(model.output_norm.std) + np.asarray(model.output_norm.mean)
    return obs + y[:, :OBS_DIM], (y[:, OBS_DIM] if config.learn_reward else None)


@given(SEEDS, st.sampled_from(KINDS), st.sampled_from(["silu", "tanh"]), st.booleans())
def test_vmapped_ensemble_prediction_equals_a_loop_and_numpy(seed, kind, activation, sample):
    config = small_config(kind, activation=activation, learn_reward=True)
    key, obs_key, action_key, noise_key = jax.random.split(jax.random.PRNGKey(seed), 4)
    model = random_normalisers(dyn.init(key, OBS_DIM, ACTION_DIM, config), seed)
    members = dyn.sample_members(key, model, 3, config)
    obs = jax.random.normal(obs_key, (5, OBS_DIM))
    action = jax.random.uniform(action_key, (5, ACTION_DIM), minval=-1, maxval=1)
    keys = jax.random.split(noise_key, 3)
    vmapped = jax.jit(jax.vmap(
        lambda m, k: dyn.predict(m, model, obs, action, k, config, sample=sample)
    ))(members, keys)
    for j in range(3):
        looped = dyn.predict(member(members, j), model, obs, action, keys[j], config,
                             sample=sample)
        for a, b in zip(looped, vmapped):
            np.testing.assert_allclose(b[j], a, rtol=2e-5, atol=2e-5)
        if not (sample and config.gaussian):
            reference = numpy_predict(member(members, j), model, np.asarray(obs, np.float64),
                                      np.asarray(action, np.float64), config)
            for a, b in zip(reference, vmapped):
                np.testing.assert_allclose(b[j], a, rtol=1e-4, atol=1e-4)
    if not (sample and config.gaussian):
        mean = dyn.predict_mean(members, model, obs, action, noise_key, config)
        for a, b in zip(mean, vmapped):
            np.testing.assert_allclose(a, np.mean(b, 0), rtol=1e-5, atol=1e-5)


@given(SEEDS)
def test_sampled_prediction_has_the_predicted_gaussian_moments(seed):
    config = small_config("probabilistic", learn_reward=True)
    key = jax.random.PRNGKey(seed)
    model = random_normalisers(dyn.init(key, OBS_DIM, ACTION_DIM, config), seed)
    net = member(model.members, 0)
    obs, action = jnp.ones((1, OBS_DIM)), -0.5 * jnp.ones((1, ACTION_DIM))
    num = 4000
    samples = jax.vmap(lambda k: dyn.predict(net, model, obs, action, k, config))(
        jax.random.split(key, num))
    sampled = np.concatenate([samples[0][:, 0], samples[1][:, 0, None]], -1)  # [num, d + 1]
    mean_obs, mean_reward = dyn.predict(net, model, obs, action, key, config, sample=False)
    z = model.input_norm.normalise(jnp.concatenate([obs, action], -1))
    _, logvar = dyn.network_output(net, z, config)
    std = np.exp(0.5 * np.asarray(logvar[0])) * np.asarray(model.output_norm.std)
    mean = np.concatenate([mean_obs[0], mean_reward])
    assert np.all(np.abs(sampled.mean(0) - mean) < 5 * std / np.sqrt(num))
    np.testing.assert_allclose(sampled.std(0), std, rtol=0.08)


@given(SEEDS, st.sampled_from(KINDS))
def test_one_vmapped_fit_step_equals_a_loop_of_per_member_updates(seed, kind):
    config = small_config(kind, weight_decay=1e-2, learning_rate=1e-2)
    key, data_key, noise_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    model = dyn.init(key, OBS_DIM, ACTION_DIM, config)
    num = config.num_networks
    opt = dyn.optimizer(config)
    rng = np.random.default_rng(seed)
    z_in = jnp.asarray(rng.normal(size=(num, 16, OBS_DIM + ACTION_DIM)), jnp.float32)
    z_target = jnp.asarray(rng.normal(size=(num, 16, OBS_DIM)), jnp.float32)
    keys = jax.random.split(noise_key, num)
    size = jnp.asarray(100)
    members, opt_state = model.members, opt.init(model.members)
    for _ in range(2):  # two steps, so Adam's moments are exercised too
        members, opt_state, metrics = jax.jit(dyn.fit_step, static_argnums=())(
            members, opt_state, z_in, z_target, keys, size, config)
    for j in range(num):
        params = member(model.members, j)
        state = opt.init(params)
        for _ in range(2):
            (value, _), grad = jax.value_and_grad(dyn.loss, has_aux=True)(
                params, z_in[j], z_target[j], keys[j], size, config)
            updates, state = opt.update(grad, state, params)
            params = jax.tree.map(lambda p, u: p + u, params, updates)
        np.testing.assert_allclose(metrics["loss"][j], value, rtol=1e-5, atol=1e-5)
        # Adam divides by √v: where a weight's gradient is small, the float reassociation of
        # the vmapped matmul moves its update by a small fraction of lr (seed 2025 gave
        # 2e-6 = 2e-4·lr); taking another member's data or key moves it by ~lr.
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(member(members, j))):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-3 * config.learning_rate)


FIT_UPDATES, FIT_BATCH, CAPACITY = 4, 8, 64


def _fit(key, model, opt_state, data, size, config):
    return dyn.fit(key, model, opt_state, data, size, config, num_updates=FIT_UPDATES,
                   batch_size=FIT_BATCH)


@pytest.mark.parametrize("kind", KINDS)
def test_fit_same_key_same_bits_jit_equals_nojit_and_vmap_over_seeds_equals_loop(kind):
    config = small_config(kind, learn_reward=True)
    data = random_data(3, CAPACITY)
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    size = jnp.asarray(40)

    def run(key):
        model = dyn.init(key, OBS_DIM, ACTION_DIM, config)
        return _fit(key, model, dyn.init_optimizer(model, config), data, size, config)

    jitted = jax.jit(run)
    first, second = jitted(keys[0]), jitted(keys[0])
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        np.testing.assert_array_equal(a, b)
    other = jitted(keys[1])
    assert not np.allclose(jax.tree.leaves(first[0])[0], jax.tree.leaves(other[0])[0])
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(run(keys[0]))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    batched = jax.jit(jax.vmap(run))(keys)
    for i in range(3):
        for a, b in zip(jax.tree.leaves(jitted(keys[i])), jax.tree.leaves(batched)):
            np.testing.assert_allclose(b[i], a, rtol=1e-4, atol=1e-5)


@given(SEEDS, st.integers(1, CAPACITY))
def test_fit_never_reads_rows_beyond_size_and_compiles_once(seed, size):
    config = small_config("probabilistic")
    data = random_data(seed, CAPACITY)
    rng = np.random.default_rng(seed)
    garbage = jax.tree.map(
        lambda x: x.at[size:].set(jnp.asarray(rng.choice([np.nan, 1e9, -3.0]), x.dtype)), data)
    model = dyn.init(jax.random.PRNGKey(seed), OBS_DIM, ACTION_DIM, config)
    opt_state = dyn.init_optimizer(model, config)
    key = jax.random.PRNGKey(seed + 1)
    clean = _JIT_FIT(key, model, opt_state, data, size, config)
    dirty = _JIT_FIT(key, model, opt_state, garbage, size, config)
    for a, b in zip(jax.tree.leaves(clean), jax.tree.leaves(dirty)):
        np.testing.assert_array_equal(a, b)
        assert np.all(np.isfinite(a))
    assert _TRACES["count"] == 1  # size, data and the config's numbers are all traced


_TRACES = {"count": 0}


@jax.jit
def _JIT_FIT(key, model, opt_state, data, size, config):
    _TRACES["count"] += 1
    return _fit(key, model, opt_state, data, size, config)


def test_hyperparameters_sweep_with_vmap_over_configs():
    from minirl.core.config import stack

    configs = stack([small_config("probabilistic", learning_rate=lr) for lr in (1e-4, 1e-2)])
    data = random_data(0, CAPACITY)

    def run(config):
        model = dyn.init(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, config)
        return _fit(jax.random.PRNGKey(1), model, dyn.init_optimizer(model, config), data,
                    CAPACITY, config)[2]["model_loss"]

    losses = jax.jit(jax.vmap(run))(configs)
    single = run(small_config("probabilistic", learning_rate=1e-2))
    np.testing.assert_allclose(losses[1], single, rtol=1e-4)
    assert losses[0] != losses[1]


# ----------------------------------------------------------------------------- learning


def linear_system(seed: int, n: int, noise: float, system_seed: int = 0):
    """n transitions of the linear system drawn from ``system_seed`` (the same system for
    training and held-out data), states and actions drawn from ``seed``."""
    system = np.random.default_rng(system_seed)
    a = np.eye(OBS_DIM) + 0.2 * system.normal(size=(OBS_DIM, OBS_DIM))
    b = system.normal(size=(OBS_DIM, ACTION_DIM))
    c, e = system.normal(size=OBS_DIM), system.normal(size=ACTION_DIM)
    rng = np.random.default_rng(1000 + seed)
    obs = rng.normal(size=(n, OBS_DIM))
    action = rng.uniform(-1, 1, size=(n, ACTION_DIM))
    next_obs = obs @ a.T + action @ b.T + noise * rng.normal(size=(n, OBS_DIM))
    reward = obs @ c + action @ e
    data = dyn.Data(*(jnp.asarray(x, jnp.float32) for x in (obs, action, next_obs, reward)))
    return data, a, b, c, e


@pytest.mark.parametrize("kind", KINDS)
def test_fitted_model_recovers_a_linear_system(kind):
    train, a, b, c, e = linear_system(0, 1024, noise=0.01)
    test, *_ = linear_system(1, 256, noise=0.0)
    config = dyn.ModelConfig(kind=kind, ensemble_size=3, hidden=(32, 32), learn_reward=True,
                             learning_rate=3e-3)
    key = jax.random.PRNGKey(0)
    model = dyn.init(key, OBS_DIM, ACTION_DIM, config)
    fit = jax.jit(lambda k, m, o: dyn.fit(k, m, o, train, 1024, config, num_updates=2000,
                                          batch_size=64))
    model, _, metrics = fit(key, model, dyn.init_optimizer(model, config))
    members = dyn.mean_members(model, config)

    def mean_model(obs, action):
        return dyn.predict_mean(members, model, obs, action, key, config)

    next_obs, reward = mean_model(test.obs, test.action)
    relative = float(jnp.mean((next_obs - test.next_obs) ** 2) / jnp.var(test.next_obs))
    relative_reward = float(jnp.mean((reward - test.reward) ** 2) / jnp.var(test.reward))
    assert relative < 2e-3, relative
    assert relative_reward < 2e-3, relative_reward
    jac_obs, jac_action = jax.vmap(jax.jacfwd(lambda o, u: mean_model(o, u)[0], (0, 1)))(
        test.obs[:32], test.action[:32])
    np.testing.assert_allclose(jnp.mean(jac_obs, 0), a, atol=0.05)
    np.testing.assert_allclose(jnp.mean(jac_action, 0), b, atol=0.05)
    assert np.isfinite(metrics["model_loss"])


def test_probabilistic_model_learns_the_noise_level():
    noise = 0.1
    train, *_ = linear_system(0, 2048, noise=noise)
    test, *_ = linear_system(1, 256, noise=0.0)
    config = dyn.ModelConfig(kind="probabilistic", ensemble_size=2, hidden=(32, 32),
                             learning_rate=3e-3)
    key = jax.random.PRNGKey(0)
    model = dyn.init(key, OBS_DIM, ACTION_DIM, config)
    model, _, _ = jax.jit(lambda k, m, o: dyn.fit(k, m, o, train, 2048, config,
                                                  num_updates=2000, batch_size=128))(
        key, model, dyn.init_optimizer(model, config))
    z = model.input_norm.normalise(jnp.concatenate([test.obs, test.action], -1))
    _, logvar = jax.vmap(lambda m: dyn.network_output(m, z, config))(model.members)
    predicted_std = jnp.exp(0.5 * logvar) * model.output_norm.std  # [M, N, d]
    np.testing.assert_allclose(jnp.median(predicted_std), noise, rtol=0.25)
