"""Test configuration: a Hypothesis profile without deadlines (JIT compilation makes first
examples slow) and a bounded number of examples so the suite fits on 2 CPU cores."""

import os
import shutil
import tempfile

import jax
import pytest
from hypothesis import HealthCheck, settings

from tests import xla_cache

settings.register_profile(
    "minirl",
    deadline=None,
    max_examples=int(os.environ.get("MINIRL_HYPOTHESIS_EXAMPLES", "25")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
    derandomize=os.environ.get("CI") == "true",
    print_blob=True,
)
settings.register_profile("thorough", parent=settings.get_profile("minirl"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "minirl"))


def pytest_configure(config: pytest.Config) -> None:
    """One XLA compilation cache per test run, shared by the xdist workers: many tests
    compile the same program (a learner's tiny config in the contract, CLI, copy and runner
    tests), and each worker would otherwise compile it again. The directory is new for every
    run (made by the process that starts the workers, removed when it ends), so a run never
    reads a cache an earlier run left behind. ``MINIRL_TEST_XLA_CACHE=0`` turns it off."""
    if os.environ.get("MINIRL_TEST_XLA_CACHE", "1") == "0":
        return
    if not hasattr(config, "workerinput"):  # the controller (or the only process)
        directory = tempfile.mkdtemp(prefix="minirl-xla-cache-")
        os.environ[xla_cache.DIRECTORY_VARIABLE] = directory
        config.add_cleanup(lambda: shutil.rmtree(directory, ignore_errors=True))
    xla_cache.use(os.environ[xla_cache.DIRECTORY_VARIABLE])


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. Twice a long test process
    crashed inside XLA's CPU compiler (a segmentation fault, ~370 tests into a run, once
    single-process and once in an xdist worker); the cause is unknown. Keeping fewer
    executables alive is a mitigation, not a fix."""
    yield
    jax.clear_caches()
