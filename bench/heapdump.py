"""Run a server under ``tracemalloc`` and dump a heap snapshot on each SIGUSR2.

``python -m bench.heapdump DIR -- TARGET [ARGS...]``

TARGET is a module (``bench.baseline_relay``) or a script (the venv's ``twistd``), run as
``__main__`` with ARGS.  The first SIGUSR2 starts tracing; the n-th writes ``DIR/n.snap``
(``tracemalloc.Snapshot.dump``, written aside and renamed, so a reader never sees half a file).
The heap scenario (``bench/heap.py``) compares two snapshots: what the connections opened in
between hold on the Python heap, by the line that allocated it.  RSS cannot say this: it
includes the allocator's free lists and the heap freed after start-up that the first
connections reuse.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import tracemalloc
from types import FrameType


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__.strip().splitlines()[2])
    out, target, args = sys.argv[1], sys.argv[3], sys.argv[4:]
    dumped = 0

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal dumped
        if not tracemalloc.is_tracing():
            # from the first snapshot on: the start-up (rules, the model) at full speed; what
            # is compared is allocated later anyway
            tracemalloc.start(1)  # the allocating line is enough to say whose memory it is
        dumped += 1
        path = os.path.join(out, f"{dumped}.snap")
        tracemalloc.take_snapshot().dump(path + ".part")
        os.replace(path + ".part", path)

    signal.signal(signal.SIGUSR2, dump)
    sys.argv = [target, *args]
    if os.sep in target:
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
