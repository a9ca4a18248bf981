"""What a run records besides its figures (the machine, the code measured) and the JSON file.

One file per run name, ``<out>/<name>.json``, replaced by the next run of that name (the date is
inside): the repository keeps the latest results and git keeps the history.  While the run goes,
each finished scenario is also written to ``<name>.json.tmp`` so that an interruption loses only
the scenario under way.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from typing import Any

import psutil

from bench import procs


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    for mod in ("twisted", "autobahn", "msgpack"):
        with contextlib.suppress(Exception):
            info[mod] = __import__(mod).__version__
    with contextlib.suppress(Exception):
        info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(Exception):
        info["git"] = _git("rev-parse", "--short", "HEAD").strip()
    return info


def dirty() -> list[str]:
    """Uncommitted changes under anygle/ (the numbers are then for code that is in no commit)."""
    with contextlib.suppress(Exception):
        return [ln[3:] for ln in _git("status", "--porcelain", "anygle", "twisted").splitlines()]
    return []


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=procs.REPO, capture_output=True, text=True, timeout=5
    ).stdout


def save(results: dict[str, Any], path: str, *, partial: bool = False) -> None:
    """Write ``path``; ``partial``: the results so far, to ``path.tmp`` (removed by the final
    write)."""
    with open(path + ".tmp" if partial else path, "w") as f:
        json.dump(results, f, indent=1)
    if not partial:
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
