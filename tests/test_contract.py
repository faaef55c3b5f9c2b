"""The algorithm contract (docs/design.md §1), held by one test for every learner the command
line knows (``ALGORITHMS | LEARNERS``): a learner registered tomorrow is checked the day it
is registered (it fails here until it has a tiny config below).

Per learner: the signatures and reading order of ``init / learn / step / train / act``;
one vocabulary for the learner's fields; ``State.learner.params`` is what ``act`` takes and
gives an action of the env's space; jit == eager; vmap over seeds == a loop; every numeric
hyperparameter is a leaf that one vmapped program sweeps; a bad value raises ``ConfigError``
naming the field; ``act(..., deterministic=True)`` does not depend on the key; a run stopped
and resumed through the runner equals an uninterrupted one, bit for bit. And the import
layering of the package.
"""

import ast
import dataclasses
import inspect
import math
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import minirl
from minirl import envs, runner
from minirl.algos import ALGORITHMS
from minirl.core import rollout
from minirl.core.config import ConfigError, stack
from minirl.model_based import LEARNERS

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def _release_compiled_programs_after_each_test():
    """This module compiles every learner's programs several times over (jit, eager, vmap,
    resume), the most of any module; XLA's CPU compiler crashed (a segmentation fault) in
    its resume test late in a full run on 2026-12-07, as it had twice before elsewhere
    (tests/conftest.py). Dropping the compiled programs after each test keeps fewer alive;
    the tests of one learner share few programs, so little is recompiled."""
    yield
    jax.clear_caches()

REGISTERED = {**ALGORITHMS, **LEARNERS}

# A tiny config per learner (a few iterations past its warm-up) and the env it meets.
TINY = {
    "dqn": ("CartPole-v1", dict(total_steps=240, buffer_size=200, batch_size=8,
                                learning_starts=120, hidden=(8,))),
    "ppo": ("CartPole-v1", dict(total_steps=96, num_envs=4, rollout_steps=8, num_epochs=2,
                                num_minibatches=2, hidden=(8,))),
    "trpo": ("Pendulum-v1", dict(total_steps=96, num_envs=4, rollout_steps=8, hidden=(8,),
                                 value_epochs=2, value_minibatches=2, cg_iterations=3)),
    "qt_opt": ("Pendulum-v1", dict(total_steps=160, buffer_size=160, batch_size=8,
                                   learning_starts=120, hidden=(8,))),
    "naf": ("Pendulum-v1", dict(total_steps=160, buffer_size=160, batch_size=8,
                                learning_starts=120, hidden=(8,))),
    "ddpg": ("Pendulum-v1", dict(total_steps=160, buffer_size=160, batch_size=8,
                                 learning_starts=120, hidden=(8,))),
    "td3": ("Pendulum-v1", dict(total_steps=160, buffer_size=160, batch_size=8,
                                learning_starts=120, hidden=(8,))),
    "soft_q": ("CartPole-v1", dict(total_steps=160, buffer_size=160, batch_size=8,
                                   learning_starts=120, hidden=(8,))),
    "sac": ("Pendulum-v1", dict(total_steps=160, buffer_size=160, batch_size=8,
                                learning_starts=120, hidden=(8,))),
    "pets": ("Pendulum-v1", dict(total_steps=12, refit_every=6, random_steps=3, hidden=(8,),
                                 horizon=3, num_samples=4, num_elites=2, iterations=2,
                                 particles=2, ensemble_size=2, fit_updates=2, batch_size=4,
                                 buffer_size=32)),
    "mbpo": ("Pendulum-v1", dict(total_steps=24, refit_every=8, learning_starts=8,
                                 updates_per_step=2, rollouts_per_step=4, epoch_length=8,
                                 rollout_schedule=(0, 2, 1, 2), batch_size=8, buffer_size=32,
                                 hidden=(8,), ensemble_size=3, num_elites=2, model_hidden=(8,),
                                 fit_updates=2, model_batch_size=4, max_holdout=8)),
    "bptt": ("Pendulum-v1", dict(total_steps=24, refit_every=8, learning_starts=8, horizon=3,
                                 batch_size=4, buffer_size=32, hidden=(8,))),
    "lqr_flm": ("Pendulum-v1", dict(total_steps=2 * 2 * 2 * 6, num_conditions=2, samples=2,
                                    horizon=6, dual_iterations=8)),
    "gps": ("Pendulum-v1", dict(total_steps=2 * 2 * 2 * 6, num_conditions=2, samples=2,
                                horizon=6, dual_iterations=8, hidden=(8,), policy_updates=3,
                                policy_batch_size=8, eval_episodes=2)),
    "planet": ("Pendulum-v1-pixels", dict(total_steps=64, rollout_steps=8, action_repeat=2,
                                          gradient_steps=2, batch_size=4, sequence_length=5,
                                          buffer_size=64, learning_starts=16,
                                          deterministic_size=8, stochastic_size=3, hidden=16,
                                          embedding_size=8, horizon=3, num_samples=8,
                                          num_elites=2, cem_iterations=2)),
}
NAMES = sorted(REGISTERED)


def tiny(name: str):
    if name not in TINY:
        pytest.fail(f"{name} is registered but has no tiny config in tests/test_contract.py")
    env_id, overrides = TINY[name]
    algo = REGISTERED[name]
    env, env_params = envs.make(env_id)
    return algo, algo.Config(**overrides), env, env_params


def arrays(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))
            if not jnp.issubdtype(x.dtype, jax.dtypes.prng_key)]


def assert_close(a, b, rtol=1e-4, atol=1e-5):
    la, lb = arrays(a), arrays(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(x, y)


def assert_bits(a, b):
    la, lb = arrays(a), arrays(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------- shape


def test_every_registered_learner_has_a_tiny_config_here():
    assert set(TINY) == set(REGISTERED), set(REGISTERED) ^ set(TINY)


SIGNATURES = {
    "init": ["key", "config", "env", "env_params", "network"],
    "learn": ["learner", "batch", "config"],
    "step": ["state", "config", "env", "env_params"],
    "train": ["key", "config", "env", "env_params", "network"],
    "act": ["params", "obs", "key", "config", "deterministic"],
}


@pytest.mark.parametrize("name", NAMES)
def test_signatures_and_reading_order(name):
    """docs/design.md §1: the five functions with these parameters (extra ones only with
    defaults), in the order config, learner, state, init, learn, step, train, act."""
    algo = REGISTERED[name]
    for attr in ("Config", "Learner", "State"):
        assert inspect.isclass(getattr(algo, attr, None)), f"{name} has no {attr}"
    for prop in ("steps_per_iteration", "num_iterations"):  # what the runner reads
        assert isinstance(getattr(algo.Config, prop, None), property), f"{name}.Config.{prop}"
    lines = {}
    for function, want in SIGNATURES.items():
        fn = getattr(algo, function)
        params = inspect.signature(fn).parameters
        got = list(params)
        assert got[: len(want)] == want, f"{name}.{function}{tuple(got)}"
        extra = [p for p in got[len(want):] if params[p].default is inspect.Parameter.empty]
        assert not extra, f"{name}.{function}: extra parameters without defaults {extra}"
        for optional in ("network", "deterministic"):
            if optional in want:
                assert params[optional].default in (None, False), (name, function, optional)
        lines[function] = inspect.getsourcelines(fn)[1]
    for attr in ("Config", "Learner", "State"):
        lines[attr] = inspect.getsourcelines(getattr(algo, attr))[1]
    order = ["Config", "Learner", "State", "init", "learn", "step", "train", "act"]
    defined = [item for item in order
               if inspect.getsourcefile(getattr(algo, item)) == inspect.getsourcefile(algo)]
    assert sorted(defined, key=lines.get) == defined, f"{name}: {sorted(lines, key=lines.get)}"


@pytest.mark.parametrize("name", NAMES)
def test_one_vocabulary(name):
    """``params`` is what act takes; a target copy of ``x`` is ``target_x``; ``updates``
    counts updates; ``opt_state`` names optimiser states; a box is ``low``/``high``."""
    algo = REGISTERED[name]
    learner_fields = [f.name for f in dataclasses.fields(algo.Learner)]
    assert "params" in learner_fields, learner_fields
    for field in learner_fields:
        if field.startswith("target_"):
            assert field[len("target_"):] in learner_fields, f"{name}: {field}"
        assert field not in ("fits", "steps", "count", "target_network", "target_critic")
        if "opt" in field:
            assert field.endswith("opt_state"), f"{name}: {field}"
    counters = [f for f in learner_fields if f in ("updates", "fits", "iterations")]
    assert counters == ["updates"], f"{name}: {counters}"
    state_fields = [f.name for f in dataclasses.fields(algo.State)]
    assert state_fields[0] == "learner" and "env_steps" in state_fields and "key" in state_fields
    _, config, env, env_params = tiny(name)
    state = jax.eval_shape(lambda k: algo.init(k, config, env, env_params),
                           jax.random.PRNGKey(0))
    params = state.learner.params
    for module in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, eqx.Module)):
        for field in dataclasses.fields(module) if dataclasses.is_dataclass(module) else ():
            assert field.name not in ("action_low", "action_high"), f"{name}: {field.name}"


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", NAMES)
def test_params_are_what_act_takes_and_deterministic_act_ignores_the_key(name):
    algo, config, env, env_params = tiny(name)
    state = jax.jit(algo.init, static_argnums=2)(jax.random.PRNGKey(0), config, env,
                                                  env_params)
    obs = state.env.obs[0]
    act = jax.jit(lambda p, o, k, c, d: algo.act(p, o, k, c, d), static_argnums=4)
    action = act(state.learner.params, obs, jax.random.PRNGKey(1), config, False)
    if rollout.action_kind(env, env_params) == "discrete":
        assert action.shape == () and jnp.issubdtype(action.dtype, jnp.integer)
        assert 0 <= int(action) < rollout.num_actions(env, env_params)
    else:
        low, high = rollout.action_bounds(env, env_params)
        assert action.shape == rollout.action_shape(env, env_params)
        assert bool(jnp.all((action >= low) & (action <= high)))
    a = act(state.learner.params, obs, jax.random.PRNGKey(2), config, True)
    b = act(state.learner.params, obs, jax.random.PRNGKey(3), config, True)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_same_key_same_bits_and_jit_equals_eager(name):
    algo, config, env, env_params = tiny(name)
    key = jax.random.PRNGKey(4)
    train = jax.jit(algo.train, static_argnums=2)
    a, b = train(key, config, env, env_params), train(key, config, env, env_params)
    assert_bits(a, b)
    state = jax.jit(algo.init, static_argnums=2)(key, config, env, env_params)
    step = jax.jit(algo.step, static_argnums=2)
    # The second step, jitted and eager, from the jitted first: by then every model-based
    # learner's tiny config is past its learning_starts / random_steps (one iteration's env
    # steps), the off-policy ones are still in their warm-up in both steps, and ppo, trpo,
    # lqr_flm and gps learn in both. Until 2026-12-07 the first step was compared as well;
    # the eager steps are the costliest part of this module.
    state, _ = step(state, config, env, env_params)
    jitted, jm = step(state, config, env, env_params)
    with jax.disable_jit():
        eager, em = algo.step(state, config, env, env_params)
    assert_close(jitted, eager, rtol=1e-3, atol=1e-4)
    assert_close(jm, em, rtol=1e-3, atol=1e-4)


def numeric_fields(config) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config)
            if not f.metadata.get("static", False)}


@pytest.mark.parametrize("name", NAMES)
def test_one_program_over_seeds_and_hyperparameters_equals_separate_runs(name):
    """Every float field is a traced leaf (not static); one vmapped program over two rows,
    each with its own key and its own value of every numeric leaf, equals the two runs made
    alone (integer outputs exactly, floats to rounding); and jit compiles once for both
    values. (Seeds and hyperparameters share one program here, the way a sweep uses it, so
    each learner compiles one vmapped program, not two.)"""
    algo, config, env, env_params = tiny(name)
    for field in dataclasses.fields(config):
        if field.type is float:
            assert not field.metadata.get("static", False), f"{name}.{field.name} is static"
    leaves = numeric_fields(config)
    assert len(jax.tree.leaves(config)) == len(leaves), "every non-static field is one leaf"
    scaled = {}
    for field_name in leaves:
        value = getattr(config, field_name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            continue
        candidate = value * 0.9 if isinstance(value, float) else value
        try:
            dataclasses.replace(config, **{field_name: candidate})
        except ConfigError:
            continue  # at a bound of its range
        scaled[field_name] = candidate
    other = dataclasses.replace(config, **scaled)
    keys = jax.random.split(jax.random.PRNGKey(6), 2)
    batched = jax.jit(jax.vmap(algo.train, in_axes=(0, 0, None, None)), static_argnums=2)
    states, metrics = batched(keys, stack([config, other]), env, env_params)
    # a fresh function: jit's cache is shared by every jit of the same function object
    train = jax.jit(lambda *args: algo.train(*args), static_argnums=2)
    for i, row_config in enumerate((config, other)):
        state, alone = train(keys[i], row_config, env, env_params)
        np.testing.assert_array_equal(alone["env_steps"], metrics["env_steps"][i])
        np.testing.assert_array_equal(alone["episodes"], metrics["episodes"][i])
        assert_close(jax.tree.map(lambda x, i=i: x[i], (states.learner, metrics)),
                     (state.learner, alone), rtol=1e-3, atol=1e-3)
    assert train._cache_size() == 1, "another value of a numeric field recompiled"


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_value_raises_config_error_naming_the_field(name):
    algo, config, _, _ = tiny(name)
    with pytest.raises(ConfigError, match="total_steps"):
        dataclasses.replace(config, total_steps=0)
    for field_name, field in numeric_fields(config).items():
        if field.type is float:
            with pytest.raises(ConfigError, match=field_name):
                dataclasses.replace(config, **{field_name: float("nan")})


@pytest.mark.parametrize("name", NAMES)
def test_resume_through_the_runner_equals_an_uninterrupted_run(name, tmp_path):
    algo, config, env, env_params = tiny(name)
    kwargs = dict(seeds=2, target_chunks=2)
    whole = runner.train(algo, config, env, env_params, out_dir=str(tmp_path / "whole"),
                         **kwargs)
    part = runner.train(algo, config, env, env_params, out_dir=str(tmp_path / "part"),
                        stop_after_chunks=1, **kwargs)
    assert whole.finished and not part.finished and len(whole.chunks) >= 2
    resumed = runner.resume(str(tmp_path / "part"), algo, env, env_params)
    assert resumed.finished and resumed.history == whole.history
    assert_bits(resumed.state, whole.state)
    assert type(resumed.config) is type(config) and resumed.config == config
    assert (tmp_path / "part" / "summary.json").exists()


# ----------------------------------------------------------------------------- layering


def _imports(path: str, package: list[str]) -> set[str]:
    """The minirl modules a file in ``package`` (e.g. ``["algos"]``) imports, as dotted
    names relative to the package root (``from ..core import buffer`` → ``core.buffer``)."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                out.add(".".join([*base, node.module]))
            else:
                out.update(".".join([*base, alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "minirl":
            out.add(node.module.removeprefix("minirl").lstrip("."))
        elif isinstance(node, ast.Import):
            out.update(a.name.removeprefix("minirl").lstrip(".") for a in node.names
                       if a.name.split(".")[0] == "minirl")
    return out


EXTENDS = {"trpo": "ppo", "td3": "ddpg"}  # an algorithm file may import the one it extends


def test_import_layering():
    """An algorithm file imports only core and the algorithm it extends; planning only core;
    model_based only core and planning; core nothing above itself."""
    root = os.path.dirname(minirl.__file__)
    allowed = {
        "algos": lambda m, file: m.startswith("core") or m == f"algos.{EXTENDS.get(file, '')}",
        "planning": lambda m, file: m.startswith(("core", "planning")),
        "model_based": lambda m, file: m.startswith(("core", "planning", "model_based")),
        "core": lambda m, file: m.startswith("core"),
    }
    offenders = []
    for folder, rule in allowed.items():
        for file in sorted(os.listdir(os.path.join(root, folder))):
            if not file.endswith(".py"):
                continue
            stem = file[:-3]
            for module in _imports(os.path.join(root, folder, file), [folder]):
                if folder == "algos" and file == "__init__.py" and module.startswith("algos"):
                    continue
                if folder == "model_based" and file == "__init__.py":
                    continue
                if not rule(module, stem):
                    offenders.append(f"{folder}/{file} imports {module}")
    assert not offenders, offenders
