"""Copying one algorithm into your own project works: ``algos/<file>.py`` + ``core/`` in a
package of another name trains, with no ``minirl`` module loaded."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import minirl

pytestmark = pytest.mark.timeout(300)

SCRIPT = textwrap.dedent(
    """
    import sys

    import gymnax
    import jax

    from {package}.algos import {module}

    env, env_params = gymnax.make("CartPole-v1")
    config = {module}.Config({config})
    state, metrics = jax.jit({module}.train, static_argnums=2)(
        jax.random.PRNGKey(0), config, env, env_params
    )
    assert int(metrics["env_steps"][-1]) == config.num_iterations * config.num_envs * getattr(
        config, "rollout_steps", 1)
    loaded = sorted(m for m in sys.modules if m == "minirl" or m.startswith("minirl."))
    assert not loaded, loaded
    print("trained", {module}.__name__, int(metrics["episodes"].sum()), "episodes")
    """
)


@pytest.mark.parametrize(
    "files, module, config",
    [
        (["dqn.py"], "dqn", "total_steps=600, learning_starts=100, buffer_size=400, hidden=(8,)"),
        (["ppo.py", "trpo.py"], "trpo", "total_steps=2048, num_envs=4, rollout_steps=32"),
    ],
    ids=["dqn", "trpo-built-on-ppo"],
)
def test_a_copied_algorithm_trains_in_another_package(tmp_path, files, module, config):
    source = os.path.dirname(minirl.__file__)
    package = tmp_path / "my_research_code"
    shutil.copytree(os.path.join(source, "core"), package / "core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (package / "algos").mkdir()
    (package / "__init__.py").write_text("")
    (package / "algos" / "__init__.py").write_text("")
    for name in files:
        shutil.copy(os.path.join(source, "algos", name), package / "algos" / name)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(package=package.name, module=module, config=config))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained" in result.stdout


def test_no_module_imports_minirl_by_absolute_name():
    """Inside the package every import of minirl's own modules is relative (the CLI's
    entry points excepted: they are not copied)."""
    root = os.path.dirname(minirl.__file__)
    offenders = []
    for folder, _, names in os.walk(root):
        if os.path.relpath(folder, root).startswith("cli"):
            continue
        for name in names:
            if name.endswith(".py") and name != "__main__.py":
                text = open(os.path.join(folder, name)).read()
                if "from minirl" in text or "import minirl" in text:
                    offenders.append(os.path.relpath(os.path.join(folder, name), root))
    assert not offenders, offenders
