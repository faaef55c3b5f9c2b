"""benchmarks/RESULTS.md is one file with a section per benchmark script.

Each script replaces only its own section, between ``<!-- begin NAME -->`` and
``<!-- end NAME -->``, so running one benchmark never erases another's results. The write is
atomic (temporary file, then rename).
"""

import os
import re
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
ORDER = ("dqn", "ppo", "sac", "model_based", "local_policies", "flops", "planning", "sweep",
         "cores")  # section order
HEADER = (
    "# minirl benchmarks\n\n"
    "Measured, not asserted: every number is wall-clock time on the machine named in its\n"
    "section, made by the command given there. See benchmarks/README.md.\n"
)


def update_section(name: str, text: str, path: Path = RESULTS) -> Path:
    """Replace (or add) the section ``name`` of ``path`` with ``text``."""
    sections: dict[str, str] = {}
    if path.exists():
        pattern = r"<!-- begin (\w+) -->\n(.*?)<!-- end \1 -->"
        for found, body in re.findall(pattern, path.read_text(), flags=re.S):
            sections[found] = body
    if text.startswith("# "):  # a standalone report: its headings go one level down
        text = re.sub(r"^(#+ )", r"#\1", text, flags=re.M)
    sections[name] = text.rstrip("\n") + "\n"
    names = [n for n in ORDER if n in sections] + sorted(set(sections) - set(ORDER))
    body = HEADER + "".join(
        f"\n<!-- begin {n} -->\n{sections[n]}<!-- end {n} -->\n" for n in names
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".results-")
    with os.fdopen(descriptor, "w") as f:
        f.write(body)
    os.replace(temporary, path)
    return path


def timeit(fn, *args, repeats: int = 5) -> float:
    """Median wall-clock seconds of ``fn(*args)`` over ``repeats`` calls, after one call that
    compiles (every call waits for its result)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))
