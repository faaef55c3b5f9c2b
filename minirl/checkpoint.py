"""Atomic checkpoints of any pytree state, restored into a template.

A checkpoint is one ``.npz`` file: the state's leaves plus a JSON header (format tag, the
caller's metadata, and each leaf's shape and dtype). It is written to a temporary file in
the same directory, flushed to disk and renamed over the target, so a crash mid-write never
leaves a damaged checkpoint behind. Loading checks the header against a template state and
raises :class:`CheckpointError` naming the problem on any mismatch: a truncated or foreign
file never loads partially.
"""

import json
import os
import tempfile
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "minirl-checkpoint-1"
_HEADER = "__minirl_header__"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, foreign or does not fit the template."""


def _to_numpy(leaf: Any) -> np.ndarray:
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def save(path: str | os.PathLike, state: Any, metadata: dict[str, Any]) -> None:
    """Write ``state`` and JSON-serialisable ``metadata`` to ``path`` atomically."""
    path = os.fspath(path)
    leaves = [_to_numpy(leaf) for leaf in jax.tree.leaves(state)]
    header = {
        "format": FORMAT,
        "metadata": metadata,
        "leaves": [[list(leaf.shape), leaf.dtype.str] for leaf in leaves],
    }
    arrays = {f"leaf_{i:05d}": leaf for i, leaf in enumerate(leaves)}
    arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _open(path: str) -> tuple[Any, dict[str, Any]]:
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
        if _HEADER not in archive.files:
            raise CheckpointError(f"checkpoint {path} is not a minirl checkpoint (no header)")
        header = json.loads(bytes(archive[_HEADER]).decode())
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({error})") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {header.get('format')!r}; expected {FORMAT!r}"
        )
    return archive, header


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata stored with a checkpoint (validates the file's header only)."""
    return _open(os.fspath(path))[1]["metadata"]


def load(path: str | os.PathLike, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restore the state saved at ``path`` into the structure of ``template``.

    ``template`` may hold arrays or ``jax.ShapeDtypeStruct``s (``jax.eval_shape``).
    Returns ``(state, metadata)``.
    """
    path = os.fspath(path)
    archive, header = _open(path)
    template_leaves, treedef = jax.tree.flatten(template)
    stored = header["leaves"]
    if len(stored) != len(template_leaves):
        raise CheckpointError(
            f"checkpoint {path} holds {len(stored)} arrays but this state has "
            f"{len(template_leaves)}: it was written by a different algorithm or config"
        )
    leaves = []
    try:
        for i, (leaf, (shape, dtype)) in enumerate(zip(template_leaves, stored)):
            is_key = jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
            want = _to_numpy(jnp.zeros(leaf.shape, leaf.dtype)) if is_key else None
            want_shape = want.shape if is_key else tuple(leaf.shape)
            want_dtype = want.dtype if is_key else np.dtype(leaf.dtype)
            if tuple(shape) != want_shape or np.dtype(dtype) != want_dtype:
                raise CheckpointError(
                    f"checkpoint {path} array {i} is {dtype}{tuple(shape)} but this state "
                    f"needs {want_dtype.str}{want_shape}: it was written by a different "
                    "algorithm or config"
                )
            value = archive[f"leaf_{i:05d}"]
            if value.shape != want_shape:
                raise CheckpointError(f"checkpoint {path} array {i} is damaged")
            leaves.append(jax.random.wrap_key_data(value) if is_key else jnp.asarray(value))
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({error})") from None
    return jax.tree.unflatten(treedef, leaves), header["metadata"]
