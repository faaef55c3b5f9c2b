"""Copying one learner into your own project works, for every learner: its file, the files
it imports (the algorithm it extends; ``planning/`` and its model-based siblings for the
model-based learners; ``envs/`` for PlaNet's pixel observations) and ``core/``, in a package
of another name, train with no ``minirl`` module loaded.

The files to copy are the transitive closure of the learner's relative imports; the test
checks that this closure is what the README's recipe says, then trains every copy in one
subprocess (one JAX start-up) and reports each learner separately.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import minirl
from tests import xla_cache
from tests.test_contract import REGISTERED, TINY

pytestmark = pytest.mark.timeout(600)

ROOT = os.path.dirname(minirl.__file__)

# The README's recipe: what a copy of each learner needs besides its own file and core/.
RECIPE = {
    "trpo": ["algos/ppo.py"],  # TRPO reuses PPO's actor-critic and collection
    "td3": ["algos/ddpg.py"],  # TD3 is DDPG's file with three switches on
    "pets": ["model_based/dynamics.py", "model_based/rewards.py", "planning/"],
    "planet": ["planning/", "envs/"],  # envs/: the pixel observations it learns from
    # mbpo: its model-based siblings, and the agent it trains (found by name in algos/)
    "mbpo": ["model_based/dynamics.py", "model_based/model_env.py", "model_based/rewards.py",
             "algos/sac.py"],
    "bptt": ["model_based/dynamics.py", "model_based/rewards.py"],
    "lqr_flm": ["model_based/rewards.py", "planning/"],
    "gps": ["model_based/lqr_flm.py", "model_based/rewards.py", "planning/"],
}


def module_file(name: str) -> str:
    return os.path.relpath(REGISTERED[name].__file__, ROOT)


REGISTRIES = ("__init__.py", "algos/__init__.py", "model_based/__init__.py")


def _file(parts: list[str]) -> str | None:
    """``core/buffer.py`` or ``core/__init__.py`` for ``["core", "buffer"]`` / ``["core"]``."""
    for candidate in ("/".join(parts) + ".py", "/".join([*parts, "__init__.py"])):
        if os.path.exists(os.path.join(ROOT, candidate)):
            return candidate
    return None


def closure(start: str) -> set[str]:
    """Files (relative to the package root) that ``start`` needs, following relative
    imports transitively: ``from ..core import buffer`` needs ``core/__init__.py`` and
    ``core/buffer.py``; ``from .dynamics import Model`` needs ``dynamics.py``."""
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = path.split("/")[:-1]
        for node in ast.walk(ast.parse(open(os.path.join(ROOT, path)).read())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package[: len(package) - (node.level - 1)]
            parts = [*base, *node.module.split(".")] if node.module else base
            found = [_file(parts)] + [_file([*parts, alias.name]) for alias in node.names]
            # a copy's algos/ and model_based/ get empty __init__.py files (no registry)
            todo.extend(f for f in found if f is not None and f not in REGISTRIES)
    return seen


def allowed(name: str) -> list[str]:
    return [module_file(name), "core/", *RECIPE.get(name, [])]


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_the_readme_recipe_is_what_the_learner_imports(name):
    needed = closure(module_file(name))
    outside = [f for f in needed
               if not any(f == a or (a.endswith("/") and f.startswith(a))
                          for a in allowed(name)) and not f.endswith("__init__.py")]
    assert not outside, f"{name} needs {outside} beyond its recipe {allowed(name)}"


SCRIPT = textwrap.dedent(
    """
    import importlib, json, sys, traceback

    import gymnax
    import jax

    results = {}
    for name, (package, module, env_id, config) in json.loads(sys.argv[1]).items():
        try:
            algo = importlib.import_module(f"{package}.{module}")
            if env_id.endswith("-pixels"):
                envs = importlib.import_module(f"{package}.envs")
                env, env_params = envs.make(env_id)
            else:
                env, env_params = gymnax.make(env_id)
            config = algo.Config(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in config.items()})
            state, metrics = jax.jit(algo.train, static_argnums=2)(
                jax.random.PRNGKey(0), config, env, env_params)
            assert int(metrics["env_steps"][-1]) == config.total_steps // \\
                config.steps_per_iteration * config.steps_per_iteration
            loaded = sorted(m for m in sys.modules if m == "minirl" or m.startswith("minirl."))
            assert not loaded, loaded
            results[name] = "ok"
        except Exception:
            results[name] = traceback.format_exc()
    json.dump(results, open(sys.argv[2], "w"))
    """
)


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    directory = tmp_path_factory.mktemp("copies")
    jobs = {}
    for name in sorted(REGISTERED):
        package = directory / f"my_{name}_research"
        for item in allowed(name):
            source = os.path.join(ROOT, item)
            if item.endswith("/"):
                shutil.copytree(source, package / item,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (package / os.path.dirname(item)).mkdir(parents=True, exist_ok=True)
                shutil.copy(source, package / item)
        for folder in ("", "algos", "model_based"):  # empty package markers, no registries
            if (package / folder).is_dir() and not (package / folder / "__init__.py").exists():
                (package / folder / "__init__.py").write_text("")
        env_id, config = TINY[name]
        module = module_file(name)[:-3].replace("/", ".")
        jobs[name] = (package.name, module, env_id, config)
    out = directory / "results.json"
    script = directory / "run.py"
    script.write_text(SCRIPT)
    env = xla_cache.subprocess_env({k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    proc = subprocess.run([sys.executable, str(script), json.dumps(jobs), str(out)],
                          cwd=directory, env=env, capture_output=True, text=True, timeout=560)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_a_copied_learner_trains_in_another_package(copies, name):
    assert copies[name] == "ok", copies[name]


def test_no_module_imports_minirl_by_absolute_name():
    """Inside the package every import of minirl's own modules is relative (the CLI's
    entry points excepted: they are not copied)."""
    offenders = []
    for folder, _, names in os.walk(ROOT):
        if os.path.relpath(folder, ROOT).startswith("cli"):
            continue
        for name in names:
            if name.endswith(".py") and name != "__main__.py":
                text = open(os.path.join(folder, name)).read()
                if "from minirl" in text or "import minirl" in text:
                    offenders.append(os.path.relpath(os.path.join(folder, name), ROOT))
    assert not offenders, offenders
