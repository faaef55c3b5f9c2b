"""PETS's trajectory sampling against independent references (Chua et al., 2018, §4).

- the keys of one plan: the members' key, the particles' key and the planner's key are
  distinct and none is a one-level descendant (``split(k, n)[i]``, ``fold_in(k, i)``) of
  another, so the particles' noise is no function of the CEM's sampling noise; with the
  planner's key fixed, another particle key changes the particles' noise and nothing the
  planner draws;
- which member moves each particle, read off the trajectories of a toy ensemble whose
  members add distinct constant offsets: TS∞ keeps b(p) = p mod M along the whole
  horizon; TS1 redraws it every step, and over many plans the assignment of a step is
  uniform over the balanced assignments (χ² against the exact enumeration of the
  permutations) and independent of the previous step's (χ² on pairs of steps);
- a BNN plans with one weight draw per member slot for the whole horizon (TS∞: per
  particle), whose offsets are distributed as the posterior says (Kolmogorov–Smirnov);
- the planned cost of a fixed action sequence (what CEM ranks), over many keys, has the
  mean and variance of an independent NumPy Monte Carlo estimate of the notes' objective
  −(1/P) Σ_p Σ_t r(s^p_t, a_t, s^p_{t+1}) (terminated particles add nothing), with members
  and noise drawn by NumPy; ``propagation="mean"`` equals a NumPy rollout of the ensemble
  mean exactly.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from minirl.model_based import dynamics, pets, rewards
from minirl.planning import shooting

pytestmark = pytest.mark.timeout(600)

D, A = 2, 1  # observation and action dimensions of the toy models
LOW, HIGH = jnp.array([-1.0]), jnp.array([1.0])


def _config(**kwargs) -> pets.Config:
    """A planner that evaluates exactly its initial mean: CEM with σ = 0 (every sample is
    the mean), so ``plan.cost`` is the planned cost of that fixed action sequence."""
    base = dict(hidden=(2,), horizon=4, num_samples=2, num_elites=1, iterations=1,
                init_std=0.0, activation="tanh")
    return pets.Config(**{**base, **kwargs})


def _zero_reward(obs, action, next_obs, env_params):
    return jnp.zeros(obs.shape[:-1])


def _params(model, reward_fn=_zero_reward, done_fn=rewards.never_terminated) -> pets.Params:
    return pets.Params(model, LOW, HIGH, None, reward_fn, done_fn)


def _plans(params, config, keys, obs=None, actions=None):
    """``pets._plan_from`` for each key, jitted and vmapped: the whole planning path."""
    obs = jnp.zeros((D,)) if obs is None else obs
    actions = jnp.zeros((config.horizon, A)) if actions is None else actions
    return jax.jit(jax.vmap(lambda k: pets._plan_from(params, obs, k, actions, config)))(keys)


# ----------------------------------------------------------------------------- keys


def _descendants(key, width=32):
    """Every key one level below ``key``: ``split(key, n)[i]`` and ``fold_in(key, i)``."""
    data = jax.random.key_data
    out = {tuple(np.asarray(data(jax.random.fold_in(key, i))).tolist()) for i in range(width)}
    for n in range(1, width + 1):
        out |= {tuple(row) for row in np.asarray(jax.random.split(key, n)).tolist()}
    return out


@pytest.mark.parametrize("planner", ["cem", "random"])
def test_plan_keys_are_split_once_and_independent(planner, monkeypatch):
    """The members', particles' and planner's keys of one plan are none of them a child of
    another: a particle key ``fold_in(key, 1)`` of the planner's key is ``split(key, n)[1]``,
    the key of CEM iteration 1 (partitionable threefry), and fails here."""
    seen = {}
    real = {"cem": shooting.cem, "random": shooting.random_shooting}[planner]

    def spy(key, step, state, *args, **kwargs):
        seen["planner"], seen["particles"] = key, state.key
        return real(key, step, state, *args, **kwargs)

    real_propagator = pets.model_propagator

    def propagator(params, key, config):
        seen["members"] = key
        return real_propagator(params, key, config)

    monkeypatch.setattr(shooting, {"cem": "cem", "random": "random_shooting"}[planner], spy)
    monkeypatch.setattr(pets, "model_propagator", propagator)
    config = _config(model="bnn", planner=planner, iterations=3, num_samples=4)
    model = dynamics.init(jax.random.PRNGKey(0), D, A, config.model_config)

    @jax.jit
    def keys_of_one_plan(key):
        pets._plan_from(_params(model), jnp.zeros((D,)), key, jnp.zeros((4, A)), config)
        return dict(seen)

    for seed in range(3):
        key = jax.random.PRNGKey(seed)
        keys = {name: np.asarray(k) for name, k in keys_of_one_plan(key).items()}
        assert sorted(keys) == ["members", "particles", "planner"]
        as_tuple = {name: tuple(k.tolist()) for name, k in keys.items()}
        assert len(set(as_tuple.values())) == 3, keys
        assert tuple(np.asarray(key).tolist()) not in set(as_tuple.values())
        for a, b in itertools.permutations(as_tuple, 2):
            assert as_tuple[b] not in _descendants(jnp.asarray(keys[a])), (a, b)


def test_another_particle_key_changes_only_the_particle_noise():
    """With the planner's key fixed: a noiseless model plans the same bits whatever the
    particle key; a noisy one sees other particle noise."""
    planner_key = jax.random.PRNGKey(1)
    obs, init = jnp.array([0.3, -0.2]), jnp.zeros((4, A))
    results = {}
    for kind, members in (("deterministic", 1), ("probabilistic", 2)):
        config = _config(model=kind, ensemble_size=members, particles=2, iterations=3,
                         num_samples=8, num_elites=2, init_std=1.0, hidden=(8,))
        model = dynamics.init(jax.random.PRNGKey(0), D, A, config.model_config)
        params = _params(model, reward_fn=_quadratic_reward)
        propagate = pets.model_propagator(params, jax.random.PRNGKey(2), config)
        planner = jax.jit(lambda particle_key, params=params, propagate=propagate, config=config:
                          pets.plan(planner_key, particle_key, params, propagate, obs, init,
                                    config))
        results[kind] = [planner(jax.random.PRNGKey(seed)) for seed in (10, 11)]
    a, b = results["deterministic"]
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.states.obs, b.states.obs)
    a, b = results["probabilistic"]
    assert not np.allclose(a.states.obs[1:], b.states.obs[1:])


# ----------------------------------------------------------------------------- who moves whom


def _offset_ensemble(members: int, config: pets.Config) -> dynamics.Model:
    """Member j adds the constant (j + 1, −(j + 1)/2) to the state: every weight is 0 and
    the last bias is the offset (identity normalisers)."""
    model = dynamics.init(jax.random.PRNGKey(0), D, A, config.model_config)
    net = model.members
    offsets = np.stack([np.arange(1, members + 1), -0.5 * np.arange(1, members + 1)], -1)
    net = dynamics.Network(tuple(jnp.zeros_like(w) for w in net.weights),
                           (*(jnp.zeros_like(b) for b in net.biases[:-1]),
                            jnp.asarray(offsets, jnp.float32)))
    return dynamics.Model(net, model.input_norm, model.output_norm)


def _members_moved(params, config, keys) -> np.ndarray:
    """[plans, H, P]: the member that moved particle p at step t, read off its increment."""
    obs = np.asarray(_plans(params, config, keys).states.obs)  # [K, H+1, P, D]
    delta = np.diff(obs, axis=1)
    member = np.rint(delta[..., 0]).astype(int) - 1
    np.testing.assert_allclose(delta[..., 1], -0.5 * (member + 1), atol=1e-4)
    return member


def _balanced_distribution(particles: int, members: int) -> dict[tuple, float]:
    """Exact law of b = π(·) mod M for a uniform permutation π: enumerate all P! of them."""
    counts: dict[tuple, int] = {}
    for perm in itertools.permutations(range(particles)):
        b = tuple(p % members for p in perm)
        counts[b] = counts.get(b, 0) + 1
    return {b: c / math.factorial(particles) for b, c in counts.items()}


def test_tsinf_keeps_the_member_along_the_horizon():
    config = _config(model="deterministic", ensemble_size=3, particles=6, propagation="tsinf")
    params = _params(_offset_ensemble(3, config))
    member = _members_moved(params, config, jax.random.split(jax.random.PRNGKey(0), 50))
    np.testing.assert_array_equal(member, np.broadcast_to(np.arange(6) % 3, member.shape))


def test_ts1_redraws_a_uniform_balanced_assignment_every_step():
    particles, members, plans = 4, 2, 3000
    config = _config(model="deterministic", ensemble_size=members, particles=particles,
                     propagation="ts1")
    params = _params(_offset_ensemble(members, config))
    member = _members_moved(params, config, jax.random.split(jax.random.PRNGKey(1), plans))
    law = _balanced_distribution(particles, members)  # 6 assignments, 1/6 each
    cells = sorted(law)
    index = {b: i for i, b in enumerate(cells)}
    steps = [[index[tuple(row)] for row in member[:, t]] for t in range(config.horizon)]
    # every step: each member moves exactly P/M particles, and the assignment has the law
    for t, codes in enumerate(steps):
        observed = np.bincount(codes, minlength=len(cells))
        expected = plans * np.array([law[b] for b in cells])
        assert scipy.stats.chisquare(observed, expected).pvalue > 1e-4, (t, observed)
    # redrawn every step: consecutive steps (and the first and last) are independent
    for s, t in ((0, 1), (1, 2), (0, config.horizon - 1)):
        pairs = np.bincount(np.asarray(steps[s]) * len(cells) + np.asarray(steps[t]),
                            minlength=len(cells) ** 2)
        expected = plans * np.outer([law[b] for b in cells], [law[b] for b in cells]).ravel()
        assert scipy.stats.chisquare(pairs, expected).pvalue > 1e-4, (s, t, pairs)


@pytest.mark.parametrize("propagation", ["tsinf", "ts1"])
def test_bnn_keeps_one_weight_draw_per_member_for_the_whole_horizon(propagation):
    """A BNN whose only uncertain weight is the last bias, q = N((0.5, −1), 0.6²): a weight
    draw is an offset. Each plan uses M draws for its whole horizon (TS∞: particle p always
    the draw p mod M), distributed as q (KS), independent between slots."""
    members, particles, plans, std = 3, 6, 400, 0.6
    config = _config(model="bnn", ensemble_size=members, particles=particles,
                     propagation=propagation)
    model = dynamics.init(jax.random.PRNGKey(0), D, A, config.model_config)
    post = model.members
    tiny = lambda x: jnp.full_like(x, -30.0)  # noqa: E731  (deterministic weights)
    last_mean = jnp.zeros_like(post.bias_mean[-1]).at[:, :D].set(jnp.array([0.5, -1.0]))
    last_mean = last_mean.at[:, D:].set(-40.0)  # raw log-variance: far below the bound
    last_std = tiny(post.bias_log_std[-1]).at[:, :D].set(math.log(std))
    post = dynamics.Posterior(
        tuple(jnp.zeros_like(w) for w in post.weight_mean), tuple(map(tiny, post.weight_log_std)),
        (*(jnp.zeros_like(b) for b in post.bias_mean[:-1]), last_mean),
        (*map(tiny, post.bias_log_std[:-1]), last_std),
        jnp.full_like(post.max_logvar, -30.0), jnp.full_like(post.min_logvar, -31.0))
    params = _params(dynamics.Model(post, model.input_norm, model.output_norm))
    obs = np.asarray(_plans(params, config, jax.random.split(jax.random.PRNGKey(2), plans))
                     .states.obs, np.float64)
    delta = np.diff(obs, axis=1)  # [K, H, P, D]
    draws = []
    for k in range(plans):
        distinct = np.unique(np.round(delta[k].reshape(-1, D), 3), axis=0)
        assert len(distinct) == members, distinct  # M draws for the whole horizon
        for t in range(config.horizon):
            which = np.argmin(np.abs(delta[k, t, :, None, 0] - distinct[None, :, 0]), -1)
            np.testing.assert_array_equal(np.bincount(which, minlength=members),
                                          particles // members)
        if propagation == "tsinf":
            np.testing.assert_allclose(delta[k], np.broadcast_to(delta[k, :1], delta[k].shape),
                                       atol=1e-4)
            np.testing.assert_allclose(delta[k, :, members:], delta[k, :, :members], atol=1e-4)
        draws.append(delta[k, 0, :members] if propagation == "tsinf" else distinct)
    draws = np.asarray(draws)  # [K, M, D]
    for dim, mean in enumerate((0.5, -1.0)):
        values = draws[..., dim].ravel()
        assert scipy.stats.kstest(values, "norm", args=(mean, std)).pvalue > 1e-4
    if propagation == "tsinf":  # slots are independent draws
        r = np.corrcoef(draws[:, 0, 0], draws[:, 1, 0])[0, 1]
        assert abs(r) < 5 / math.sqrt(plans)


# ----------------------------------------------------------------------------- planned cost


def _quadratic_reward(obs, action, next_obs, env_params):
    return -jnp.sum(jnp.square(next_obs), -1) - 0.1 * jnp.sum(jnp.square(action), -1)


END = 1.0  # a particle terminates when it leaves the disc ‖s‖ ≤ END


def _leaves_disc(obs, action, next_obs, env_params):
    return jnp.sum(jnp.square(next_obs), -1) > END ** 2


def _softplus(x):
    return np.logaddexp(0.0, x)


def _numpy_output(weights, biases, bounds, z):
    """The network of ``dynamics`` in float64 NumPy; weights ``[..., in, out]`` may carry a
    leading sample axis. Returns the normalised mean and the soft-bounded log-variance."""
    h = z
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = np.einsum("...i,...io->...o", h, w) + b
        if i < len(weights) - 1:
            h = np.tanh(h)
    if bounds is None:  # deterministic
        return h, None
    mean, raw = np.split(h, 2, -1)
    low, high = bounds
    v = high - _softplus(high - raw)
    return mean, low + _softplus(v - low)


def _as_np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def _reference_costs(model, config, obs0, actions, reward, num, rng, done=True):
    """The notes' objective −(1/P) Σ_p Σ_t r(s^p_t, a_t, s^p_{t+1}) of ``num`` independent
    trajectory samplings in plain NumPy: members (a BNN: M weight draws per sampling), TS1
    permutations and Gaussian noise all drawn by ``rng``."""
    M, P, H = config.ensemble_size, config.particles, config.horizon
    norm_in, norm_out = _as_np(model.input_norm), _as_np(model.output_norm)
    nets = _as_np(model.members)
    if config.model == "bnn":  # [M, num, ...] weight draws w = m + s ε
        def draw(mean, log_std):
            return mean[0] + np.exp(log_std[0]) * rng.normal(size=(M, num, *mean.shape[1:]))
        weights = [draw(m, s) for m, s in zip(nets.weight_mean, nets.weight_log_std)]
        biases = [draw(m, s) for m, s in zip(nets.bias_mean, nets.bias_log_std)]
        bounds = (nets.min_logvar[0], nets.max_logvar[0])
    else:  # [M, 1, ...]
        weights = [w[:, None] for w in nets.weights]
        biases = [b[:, None] for b in nets.biases]
        bounds = None if nets.max_logvar is None else (nets.min_logvar[:, None],
                                                       nets.max_logvar[:, None])
    s = np.broadcast_to(np.asarray(obs0, np.float64), (num, P, D)).copy()
    ended = np.zeros((num, P), bool)
    total = np.zeros(num)
    for t in range(H):
        a = np.broadcast_to(np.asarray(actions[t], np.float64), (num, A))
        if config.propagation == "ts1":  # a uniform permutation per sampling and step
            member = np.argsort(rng.random((num, P)), axis=1) % M
        else:
            member = np.broadcast_to(np.arange(P) % M, (num, P))
        nxt = np.empty_like(s)
        for p in range(P):
            z = (np.concatenate([s[:, p], a], -1) - norm_in.mean) / norm_in.std
            mean, logvar = _numpy_output(weights, biases, bounds, z)  # [M, num, out]
            pick = member[:, p]
            y = mean[pick, np.arange(num)]
            if logvar is not None:
                y = y + np.exp(0.5 * logvar[pick, np.arange(num)]) * rng.normal(size=y.shape)
            y = y * norm_out.std + norm_out.mean
            nxt[:, p] = s[:, p] + y[:, :D]
            if reward == "learned":
                r = y[:, D]
            else:
                r = -np.sum(nxt[:, p] ** 2, -1) - 0.1 * np.sum(a ** 2, -1)
            total += np.where(ended[:, p], 0.0, r)
            if done:
                ended[:, p] |= np.sum(nxt[:, p] ** 2, -1) > END ** 2
        s = nxt
    return -total / P


def _reference_mean_rollout(model, config, obs0, actions, reward):
    """``propagation="mean"``: every particle follows the average of the members' mean
    predictions (a BNN: the posterior-mean network), in NumPy."""
    norm_in, norm_out = _as_np(model.input_norm), _as_np(model.output_norm)
    nets = _as_np(model.members)
    if config.model == "bnn":
        weights, biases = nets.weight_mean, nets.bias_mean
    else:
        weights, biases = nets.weights, nets.biases
    bounds = None if nets.max_logvar is None else (nets.min_logvar, nets.max_logvar)
    s, ended, total = np.asarray(obs0, np.float64), False, 0.0
    for t in range(config.horizon):
        a = np.asarray(actions[t], np.float64)
        z = (np.concatenate([s, a]) - norm_in.mean) / norm_in.std
        mean, _ = _numpy_output(weights, biases, bounds, z[None])
        y = (mean * norm_out.std + norm_out.mean).mean(0)
        nxt = s + y[:D]
        r = y[D] if reward == "learned" else -np.sum(nxt ** 2) - 0.1 * np.sum(a ** 2)
        total += 0.0 if ended else r
        ended = ended or np.sum(nxt ** 2) > END ** 2
        s = nxt
    return -total


def _random_model(config, seed, log_std=-1.2):
    """A random tanh ensemble (or BNN with posterior σ = e^log_std) with random
    normalisers; the members' mean outputs are spread apart so that TS1 and TS∞ differ."""
    mc = config.model_config
    model = dynamics.init(jax.random.PRNGKey(seed), D, A, mc)
    rng = np.random.default_rng(seed)
    out_dim = D + (1 if mc.learn_reward else 0)
    norm_in = dynamics.Normaliser(jnp.asarray(rng.normal(0, 0.3, D + A), jnp.float32),
                                  jnp.asarray(rng.uniform(0.5, 1.5, D + A), jnp.float32))
    norm_out = dynamics.Normaliser(jnp.asarray(rng.normal(0, 0.1, out_dim), jnp.float32),
                                   jnp.asarray(rng.uniform(0.2, 0.4, out_dim), jnp.float32))
    members = model.members
    if config.model == "bnn":
        members = dynamics.Posterior(
            tuple(2 * w for w in members.weight_mean),
            tuple(jnp.full_like(w, log_std) for w in members.weight_log_std),
            members.bias_mean,
            tuple(jnp.full_like(b, log_std) for b in members.bias_log_std),
            jnp.full_like(members.max_logvar, -1.0), members.min_logvar)
    else:
        spread = jnp.asarray(rng.normal(0, 1.5, (config.ensemble_size, out_dim)), jnp.float32)
        last = members.biases[-1].at[:, :out_dim].add(spread)
        bounds = (None, None) if members.max_logvar is None else (
            jnp.full_like(members.max_logvar, -1.0), members.min_logvar)
        members = dynamics.Network(tuple(2 * w for w in members.weights),
                                   (*members.biases[:-1], last), *bounds)
    return dynamics.Model(members, norm_in, norm_out)


CASES = [
    ("probabilistic", "ts1", "known"), ("probabilistic", "tsinf", "learned"),
    ("deterministic", "ts1", "known"), ("bnn", "tsinf", "known"), ("bnn", "ts1", "known"),
]


@pytest.mark.parametrize("kind, propagation, reward", CASES)
def test_planned_cost_matches_a_numpy_monte_carlo_of_the_objective(kind, propagation, reward):
    num = 20_000
    config = _config(model=kind, ensemble_size=2, particles=4, propagation=propagation,
                     reward=reward, horizon=3, hidden=(6,))
    model = _random_model(config, seed=7)
    reward_fn = _quadratic_reward if reward == "known" else None
    params = _params(model, reward_fn=reward_fn, done_fn=_leaves_disc)
    obs0 = jnp.array([0.2, -0.4])
    actions = jnp.array([[0.5], [-0.8], [0.1]])
    ours = np.asarray(_plans(params, config, jax.random.split(jax.random.PRNGKey(3), num),
                             obs0, actions).cost, np.float64)
    ref = _reference_costs(model, config, obs0, actions, reward, num,
                           np.random.default_rng(11))
    # the toy really terminates some particles, and the two propagations differ (checked
    # by mutation: TS1 ↔ TS∞ moves the mean by > 10 standard errors)
    se = math.sqrt(ours.var() / num + ref.var() / num)
    assert abs(ours.mean() - ref.mean()) < 4.5 * se, (ours.mean(), ref.mean(), se)

    def var_se(x):
        c = x - x.mean()
        return math.sqrt((np.mean(c ** 4) - np.mean(c ** 2) ** 2) / len(x))

    se_var = math.sqrt(var_se(ours) ** 2 + var_se(ref) ** 2)
    assert abs(ours.var() - ref.var()) < 4.5 * se_var, (ours.var(), ref.var(), se_var)


@pytest.mark.parametrize("kind, reward", [("probabilistic", "known"), ("bnn", "learned")])
def test_mean_propagation_is_the_ensemble_mean_rollout(kind, reward):
    config = _config(model=kind, ensemble_size=2, particles=2, propagation="mean",
                     reward=reward, horizon=3, hidden=(6,))
    model = _random_model(config, seed=5)
    reward_fn = _quadratic_reward if reward == "known" else None
    params = _params(model, reward_fn=reward_fn, done_fn=_leaves_disc)
    obs0, actions = jnp.array([0.2, -0.4]), jnp.array([[0.5], [-0.8], [0.1]])
    ours = _plans(params, config, jax.random.split(jax.random.PRNGKey(0), 2), obs0, actions)
    expected = _reference_mean_rollout(model, config, obs0, actions, reward)
    np.testing.assert_allclose(ours.cost, [expected, expected], rtol=1e-4, atol=1e-4)
