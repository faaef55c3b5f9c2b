"""Test configuration: a Hypothesis profile without deadlines (JIT compilation makes first
examples slow) and a bounded number of examples so the suite fits on 2 CPU cores."""

import os

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
