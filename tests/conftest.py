"""Test configuration: a Hypothesis profile without deadlines (JIT compilation makes first
examples slow) and a bounded number of examples so the suite fits on 2 CPU cores."""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings

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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. Twice a long test process
    crashed inside XLA's CPU compiler (a segmentation fault, ~370 tests into a run, once
    single-process and once in an xdist worker); the cause is unknown. Keeping fewer
    executables alive is a mitigation, not a fix."""
    yield
    jax.clear_caches()
