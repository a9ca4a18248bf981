"""Raising the open-file limit, for the harness (whose servers inherit it) and each load process.

A connection is a descriptor, so a limit below the connections a scenario wants caps what it
measures; whoever raises the limit says so when it cannot, and the table carries the note.
"""

from __future__ import annotations

import resource


def raise_nofile(wanted: int) -> tuple[int, str]:
    """Raise this process's file limit towards ``wanted`` as far as allowed: the soft limit it
    got, and a note when that is short of ``wanted`` (empty otherwise)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    note = ""
    if wanted > hard:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                cap = int(f.read())
        except OSError:
            cap = wanted
        new = min(wanted, cap)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, new))
        except (ValueError, OSError) as e:
            note = f"cannot raise the hard file limit {hard} to {wanted} ({e}); "
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    elif wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        note += f"file limit is {soft}, below the {wanted} wanted: connection counts are capped"
    return soft, note
