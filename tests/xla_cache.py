"""The test run's XLA compilation cache (made in tests/conftest.py): one directory per run,
shared by the xdist workers and handed to subprocesses that train (tests/test_copy.py)."""

import os

import jax

DIRECTORY_VARIABLE = "MINIRL_TEST_XLA_CACHE_DIR"
# Cache every program that takes over 0.2 s to compile, whatever its size.
SETTINGS = {"jax_persistent_cache_min_compile_time_secs": 0.2,
            "jax_persistent_cache_min_entry_size_bytes": 0}


def use(directory: str) -> None:
    """Compile through the cache in ``directory`` in this process."""
    jax.config.update("jax_compilation_cache_dir", directory)
    for name, value in SETTINGS.items():
        jax.config.update(name, value)


def subprocess_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` plus JAX's environment variables for this run's cache, if there is one."""
    if DIRECTORY_VARIABLE not in os.environ:
        return env
    settings = {"jax_compilation_cache_dir": os.environ[DIRECTORY_VARIABLE], **SETTINGS}
    return {**env, **{name.upper(): str(value) for name, value in settings.items()}}
