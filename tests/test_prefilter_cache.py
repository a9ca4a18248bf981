"""The Hyperscan prefilter's on-disk cache: a cache the server may read but not write (built into
a container image by root, read by the image's unprivileged user) is still used."""

from __future__ import annotations

import os

import pytest

from anygle.moderation import scan

EXPRS = [rb"\bgrooming\b", rb"snap(chat)?\s*me"]


def test_a_read_only_cache_is_loaded_not_compiled_again(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYGLE_HS_CACHE", str(tmp_path))
    monkeypatch.setattr(scan, "_MEMO", {})
    scan._database(EXPRS, 7000)
    assert len(os.listdir(tmp_path)) == 1

    # a new process (empty memo) as a user who cannot touch the file nor write the directory
    monkeypatch.setattr(scan, "_MEMO", {})

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    def no_compile(*args: object) -> None:
        raise AssertionError("compiled although the cache had the database")

    monkeypatch.setattr(os, "utime", refuse)
    monkeypatch.setattr(scan, "_store", no_compile)
    db, bad = scan._database(EXPRS, 7000)
    assert bad == ()
    hits: list[int] = []
    db.scan(b"snapchat me later", match_event_handler=lambda i, *_: hits.append(i))
    assert hits == [7001]
