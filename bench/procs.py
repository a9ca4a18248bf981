"""Child processes of the harness: servers, Redis, nginx and load workers.

Every process started here is registered and killed at the end — normal exit, exception, Ctrl-C or
SIGTERM — and dies with the harness even if the harness is killed (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from bench.counts import COUNTS
from tests import harness
from tests.harness import REPO as REPO  # re-exported: bench.run and bench.record use it
from tests.harness import free_port

_children: list[subprocess.Popen] = []
server_tree = REPO  # where anygle is run from (``--rev`` points it at an exported revision)
profile_dir: str | None = None  # ``--profile DIR``: every anygle instance runs under cProfile
_tmpdirs: list[str] = []


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def kill_all() -> None:
    """Terminate every child we started (then SIGKILL the stubborn ones)."""
    for p in _children:
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.terminate()
    deadline = time.monotonic() + 5
    for p in _children:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
    _children.clear()
    for d in _tmpdirs:
        shutil.rmtree(d, ignore_errors=True)
    _tmpdirs.clear()


def _on_signal(signum: int, frame: Any) -> None:
    kill_all()
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    atexit.register(kill_all)
    # Ctrl-C stops the run even when we were started with SIGINT ignored (``cmd &`` in a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


def tmpdir(prefix: str) -> str:
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


def spawn(argv: list[str], *, log: str | None = None, **kw: Any) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    p = subprocess.Popen(
        argv,
        stdout=kw.pop("stdout", out),
        stderr=kw.pop("stderr", subprocess.STDOUT if log else subprocess.DEVNULL),
        preexec_fn=_die_with_parent,
        **kw,
    )
    _children.append(p)
    return p


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc in _children:
        _children.remove(proc)


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except OSError:
        return ""


class Server:
    """One listening server process (anygle instance, bare relay, redis or nginx)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        *,
        http_port: int | None = None,
        env: dict | None = None,
        cwd: str | None = None,
    ) -> None:
        self.name, self.port, self.http_port = name, port, http_port  # http: anygle's /health
        self.dir = tmpdir(f"anygle-bench-{name}-")
        self.log = os.path.join(self.dir, "log")
        self.proc = spawn(argv, log=self.log, env=env, cwd=cwd or self.dir)
        try:
            wait_port(port, self.proc)
        except RuntimeError as e:
            stop(self.proc)
            raise RuntimeError(f"{name}: {e}\n{tail(self.log)}") from None
        self.ps = psutil.Process(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop(self.proc)


def died(servers: list[Server]) -> dict[str, str]:
    """For a row's results: an error when one of its servers is gone (which, and the end of its
    log); nothing while they all run."""
    dead = next((s for s in servers if not s.alive()), None)
    return {"error": f"{dead.name} died: {tail(dead.log, 5)}"} if dead else {}


@contextlib.contextmanager
def group() -> Iterator[list[Server]]:
    """The servers of one row, appended as they start: all stopped at the end (the last started
    first), and an exception on the way carries the end of each one's log."""
    servers: list[Server] = []
    try:
        yield servers
    except Exception as e:
        logs = "\n".join(f"--- {s.name}\n{tail(s.log, 8)}" for s in servers)
        raise RuntimeError(f"{e}\n{logs}") from None
    finally:
        for s in reversed(servers):
            s.stop()


def heap_wrapped(argv: list[str], heap_dir: str | None) -> list[str]:
    """``argv`` run under ``bench/heapdump.py`` (heap snapshots on SIGUSR2) when ``heap_dir``."""
    return [sys.executable, "-m", "bench.heapdump", heap_dir, "--", *argv] if heap_dir else argv


def baseline(
    port: int | None = None,
    backlog: int = 1024,
    heap_dir: str | None = None,
    extra: list[str] | None = None,
) -> Server:
    port = port or free_port()
    module = "bench.baseline_relay"
    target = [module] if heap_dir else [sys.executable, "-m", module]
    args = ["--port", str(port), "--backlog", str(backlog), *(extra or [])]
    return Server(
        "baseline",
        heap_wrapped([*target, *args], heap_dir),
        port,
        env=dict(os.environ, PYTHONPATH=REPO),
    )


def export_tree(rev: str) -> tuple[str, str]:
    """``git archive`` of ``rev`` into a temp dir: measure a fixed revision while the work tree
    changes under us (or compare two revisions).  Returns (directory, full commit id)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    d = tmpdir("anygle-bench-tree-")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", d], input=archive, check=True)
    return d, commit


def limit_args(tree: str) -> list[str]:
    """The abuse limits out of reach (:data:`tests.harness.LIMITS_OUT_OF_REACH`), as flags for
    the options this revision of anygle knows."""
    return harness.option_flags(harness.LIMITS_OUT_OF_REACH, tree)


def anygle(
    engine: str = "memory",
    *,
    redis_url: str | None = None,
    instance: str = "bench",
    extra: list[str] | None = None,
    backlog: int | None = 1024,
    heap_dir: str | None = None,
) -> Server:
    """An anygle instance; ``backlog=None`` leaves the listen backlog to anygle's default;
    ``heap_dir``: run it under ``bench/heapdump.py``."""
    port, http = free_port(), free_port()
    profile = f"{profile_dir}/anygle-{engine}-{instance}-{port}.prof" if profile_dir else None
    argv = harness.twistd_argv(
        port, http, "--engine", engine, instance_id=instance, backlog=backlog, profile=profile
    )
    if redis_url:
        argv += ["--redis", redis_url]
    argv += limit_args(server_tree) + (extra or [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYGLE_")}
    env["PYTHONPATH"] = server_tree
    argv = heap_wrapped(argv, heap_dir)
    return Server(f"anygle-{engine}-{instance}", argv, port, http_port=http, env=env)


def redis() -> Server:
    port = free_port()
    d = tmpdir("anygle-bench-redis-")
    return Server("redis", harness.redis_server_argv(port, d), port)


def nginx(servers: list[Server], *, sticky_pairs: bool, conns: int = 4096) -> Server:
    """Our own nginx on a free port (never the system one) in front of ``servers``, running the
    shipped ``etc/nginx/anygle.conf`` (of the measured tree) as the tests do, as one process so
    that killing it removes it all.  ``sticky_pairs`` hashes the ``p`` query argument so both
    sockets of a pair reach the same instance (needed when instances share nothing)."""
    port = free_port()
    d = tmpdir("anygle-bench-nginx-")
    shipped = os.path.join(server_tree, "etc", "nginx", "anygle.conf")
    upstreams = []
    for s in servers:
        assert s.http_port is not None, f"{s.name}: nginx goes in front of anygle instances"
        upstreams.append((s.port, s.http_port))
    conf = harness.nginx_config(
        port,
        upstreams,
        d,
        balance="hash $arg_p consistent" if sticky_pairs else None,
        backlog=1024,
        worker_connections=conns * 2 + 64,
        worker_rlimit_nofile=conns * 4 + 256,
        multi_accept=True,
        shipped=Path(shipped if os.path.exists(shipped) else harness.SHIPPED_NGINX),
    )
    argv = harness.write_nginx_config(d, conf, os.path.dirname(shipped))
    return Server("nginx", argv, port)


class Workers:
    """Load worker processes (``bench.loadclient``) driven by JSON lines."""

    def __init__(
        self,
        jobs: list[dict[str, Any]],
        progress: Callable[[str], None],
        module: str = "bench.loadclient",
    ) -> None:
        self.progress = progress
        self.procs: list[subprocess.Popen] = []
        self.ps: list[psutil.Process] = []
        self.sel = selectors.DefaultSelector()
        self.state: dict[int, dict[str, Any]] = {}
        self.events: dict[int, list[dict[str, Any]]] = {}
        self.bufs: dict[int, bytes] = {}
        env = dict(os.environ, PYTHONPATH=REPO)
        for i, job in enumerate(jobs):
            job = dict(job, worker=i)
            p = spawn(
                [sys.executable, "-m", module],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                env=env,
                cwd=REPO,
            )
            self.procs.append(p)
            self.ps.append(psutil.Process(p.pid))
            assert p.stdout is not None
            self.sel.register(p.stdout, selectors.EVENT_READ, i)
            self.events[i], self.bufs[i], self.state[i] = [], b"", {}
            self.send(i, job)

    def send(self, i: int, msg: dict[str, Any]) -> None:
        p = self.procs[i]
        assert p.stdin is not None
        p.stdin.write(json.dumps(msg).encode() + b"\n")
        p.stdin.flush()

    def broadcast(self, msg: dict[str, Any]) -> None:
        for i in range(len(self.procs)):
            self.send(i, msg)

    def pump(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            i = key.data
            chunk = os.read(key.fd, 1 << 20)
            if not chunk:
                self.sel.unregister(key.fileobj)
                continue
            data = self.bufs[i] + chunk
            *lines, self.bufs[i] = data.split(b"\n")
            for line in lines:
                ev = json.loads(line)
                if ev["ev"] == "progress":
                    self.state[i] = ev
                else:
                    self.events[i].append(ev)
                    if ev["ev"] in ("ready", "result", "started"):
                        self.state[i] = {
                            **self.state[i],
                            **{k: v for k, v in ev.items() if k not in ("latencies", "initiator")},
                        }

    def wait(self, ev: str, timeout: float, label: str = "") -> list[dict[str, Any]]:
        """The first ``ev`` event of every worker; raises on timeout, fatal or a dead worker."""
        deadline = time.monotonic() + timeout
        last = 0.0
        while True:
            got = [
                next((e for e in self.events[i] if e["ev"] == ev), None)
                for i in range(len(self.procs))
            ]
            found = [e for e in got if e is not None]
            if len(found) == len(got):
                for i in range(len(self.procs)):
                    self.events[i].remove(found[i])
                return found
            for i, evs in self.events.items():
                fatal = next((e for e in evs if e["ev"] == "fatal"), None)
                if fatal:
                    raise RuntimeError(f"load worker {i}: {fatal['error']}")
            for i, p in enumerate(self.procs):
                if p.poll() is not None and not got[i]:
                    raise RuntimeError(f"load worker {i} exited with {p.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{label or ev}: workers not done after {timeout:.0f} s ({self.summary()})"
                )
            self.pump(0.25)
            if time.monotonic() - last > 0.5:
                last = time.monotonic()
                self.progress(f"{label}: {self.summary()}")

    def wait_one(self, i: int, ev: str, timeout: float, label: str = "") -> dict[str, Any]:
        """The next ``ev`` event of worker ``i``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = next((e for e in self.events[i] if e["ev"] == ev), None)
            if got is not None:
                self.events[i].remove(got)
                return got
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"load worker {i} exited with {self.procs[i].returncode}")
            self.pump(0.25)
            self.progress(f"{label}: waiting for {ev}")
        raise TimeoutError(f"{label}: no {ev} from worker {i} after {timeout:.0f} s")

    def totals(self) -> dict[str, Any]:
        out: dict[str, Any] = {"errors": {}}
        for st in self.state.values():
            for k in COUNTS:
                out[k] = out.get(k, 0) + int(st.get(k, 0) or 0)
            for code, n in (st.get("errors") or {}).items():
                out["errors"][code] = out["errors"].get(code, 0) + n
        return out

    def summary(self) -> str:
        t = self.totals()
        parts = [
            f"{k} {t.get(k, 0)}"
            for k in ("connected", "matched", "searching", "delivered")
            if t.get(k)
        ]
        if t.get("failed"):
            parts.append(f"failed {t['failed']}")
        if t["errors"]:
            parts.append(f"errors {sum(t['errors'].values())}")
        return ", ".join(parts) or "starting"

    def cpu(self) -> float:
        total = 0.0
        for p in self.ps:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def close(self, clean: bool = False) -> None:
        """End the load processes; their connections are dropped, or with ``clean`` closed
        with a close frame first (``Worker.close``)."""
        for i, p in enumerate(self.procs):
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    self.send(i, {"cmd": "close", "clean": clean})
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            if p in _children:
                _children.remove(p)
        self.sel.close()
