"""Real processes on free loopback ports, for the tests and the benchmark (``bench.procs``).

One place for what both start: ``twistd -n anygle`` instances (:class:`Instance`), a throw-away
``redis-server`` (:class:`RedisServer`), nginx running the *shipped* ``etc/nginx/anygle.conf``
rewritten for test ports (:func:`nginx_config`), a cluster of all three (:class:`Cluster`), free
ports, the option values that switch abuse limits off (:data:`LIMITS_OFF`) or out of reach
(:data:`LIMITS_OUT_OF_REACH`), and waiting for a condition instead of sleeping
(:func:`eventually` in the reactor, :func:`wait_for` outside it).

Usage::

    server = RedisServer().start()
    server.url                        # redis://127.0.0.1:PORT/0
    server.command("SET", "k", "v")   # one command over a socket, the reply parsed
    server.kill()                     # SIGKILL, data gone; start() again: same port, empty
    server.close()
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPO = str(ROOT)
TWISTD = str(Path(sys.executable).with_name("twistd"))
SHIPPED_NGINX = ROOT / "etc" / "nginx" / "anygle.conf"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --- waiting for conditions ----------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str = "condition", step: float = 0.05
) -> Any:
    """Poll ``predicate`` (blocking: processes, not the reactor) until it returns something true;
    returns that.  Raises ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout:g} s")
        time.sleep(step)


async def sleep(seconds: float) -> None:
    """Let the reactor run for ``seconds`` (traffic, a pause the scenario needs): not a way to
    wait for something to have happened — that is :func:`eventually`."""
    from twisted.internet import reactor, task

    await task.deferLater(reactor, seconds, lambda: None)


async def eventually(
    predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.02, what: str = ""
) -> float:
    """Let the reactor run until ``predicate()`` is true; returns the seconds it took.  Fails
    (``AssertionError``) after ``timeout``; a generous deadline costs nothing when all is well.
    ``predicate`` may return an awaitable (a coroutine, a Deferred): its result counts."""
    from twisted.internet import reactor

    async def holds() -> Any:
        result = predicate()
        return (await result) if inspect.isawaitable(result) else result

    start = reactor.seconds()
    while not await holds():
        if reactor.seconds() - start > timeout:
            raise AssertionError(f"{what or 'condition'} not reached in {timeout:g} s")
        await sleep(step)
    return reactor.seconds() - start


# --- options ------------------------------------------------------------------------------------

# Every test client is 127.0.0.1 and sends bursts no person types: the per-IP abuse limits are
# off (the limit tests switch them back on), and periodic pushes are rare (tests that want them
# ask).  Option name -> value as on the command line.
LIMITS_OFF: dict[str, str] = {
    "rate-limit": "0",
    "max-connections-per-ip": "0",
    "message-limits": "off",
    "ping-interval": "0",
    "stats-interval": "3600",
    "searching-interval": "3600",
}

# A load test is thousands of users from a handful of loopback addresses, each far busier than a
# person: the benchmark raises the abuse limits out of reach instead of turning them off, so that
# the cost of checking them stays on the measured path.
LIMITS_OUT_OF_REACH: dict[str, str] = {
    "rate-limit": "1000000000",
    "max-connections-per-ip": "1000000000",
    "message-limits": "chat=1e9/1e9,queue=1e9/1e9,ping=1e9/1e9,typing=1e9/1e9",
}


@functools.cache
def option_names(tree: str = REPO) -> frozenset[str]:
    """The options ``twistd anygle`` accepts in the source tree ``tree`` (this one, or a revision
    the benchmark exported): this tree's are read from ``anygle.config``, another tree's from
    its ``--help`` (:func:`help_options`)."""
    if os.path.realpath(tree) != os.path.realpath(REPO):
        return help_options(tree)
    from anygle.config import OPTIONS

    return frozenset(o.name for o in OPTIONS)


def help_options(tree: str) -> frozenset[str]:
    """The options ``twistd anygle --help`` lists when run from ``tree``, as a user would see."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYGLE_")}
    out = subprocess.run(
        [TWISTD, "anygle", "--help"],
        cwd=tree,
        env=dict(env, PYTHONPATH=tree),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return frozenset(re.findall(r"--([a-z][a-z0-9-]*)=", out))


def option_flags(values: Mapping[str, str], tree: str = REPO) -> list[str]:
    """``--name=value`` for those of ``values`` that the tree's anygle knows."""
    known = option_names(tree)
    return [f"--{name}={value}" for name, value in values.items() if name in known]


def limits_off_flags() -> list[str]:
    """:data:`LIMITS_OFF` as ``twistd anygle`` flags."""
    return option_flags(LIMITS_OFF)


def limits_off_settings() -> dict[str, Any]:
    """:data:`LIMITS_OFF` as ``Settings`` fields, parsed by the options themselves."""
    from anygle.config import OPTIONS, attr

    parse = {o.name: o.parse for o in OPTIONS}
    return {attr(name): parse[name](value) for name, value in LIMITS_OFF.items() if name in parse}


# --- TLS ----------------------------------------------------------------------------------------


def load_selfsigned() -> Any:
    """deploy/compose/selfsigned.py (not a package: the compose file runs it as a script)."""
    path = ROOT / "deploy" / "compose" / "selfsigned.py"
    spec = importlib.util.spec_from_file_location("selfsigned", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- redis-server -------------------------------------------------------------------------------


def redis_binary() -> str:
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def redis_server_argv(port: int, directory: str) -> list[str]:
    """A throw-away redis-server: loopback only, no persistence (a kill loses every key)."""
    return [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        directory,
        "--loglevel",
        "warning",
    ]


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) to :meth:`RedisServer.command`."""


class RedisServer:
    """One ``redis-server`` child process on 127.0.0.1."""

    def __init__(self, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        """``extra``: more ``redis-server`` arguments (a TLS port, ACL users)."""
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="anygle-redis-")
        self.cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.proc = subprocess.Popen(
            [*redis_server_argv(self.port, self.dir), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answering() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            return self.ping()

        wait_for(answering, timeout, f"redis-server on port {self.port} answering PING", 0.02)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_dead(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: every key is lost (no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self._wait_dead()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self._wait_dead()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, *args: str | int | float) -> str:
        """Run one command through ``redis-cli`` (as an operator would) and return its raw
        output, stripped."""
        out = subprocess.run(
            [self.cli, "-p", str(self.port), "--raw", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()

    def command(self, *args: str | int | float | bytes) -> Any:
        """One command over a fresh socket; the reply parsed (bytes, int, list, None)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
            s.sendall(
                b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
            )
            return _read_reply(s.makefile("rb"))

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_reply(f: Any) -> Any:
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RedisReplyError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise ValueError(f"bad reply {line!r}")


# --- twistd anygle -----------------------------------------------------------------------------


def twistd_argv(
    ws_port: int,
    http_port: int,
    *args: str,
    instance_id: str,
    backlog: int | None = None,
    profile: str | None = None,
) -> list[str]:
    """``twistd -n anygle`` on loopback ports; ``args`` are further anygle options.  ``profile``:
    a file for cProfile statistics (``python -m bench --profile``)."""
    profiling = [f"--profile={profile}", "--profiler=cprofile", "--savestats"] if profile else []
    ws = f"tcp:{ws_port}:interface=127.0.0.1" + (f":backlog={backlog}" if backlog else "")
    return [
        TWISTD,
        "-n",
        "--pidfile=",
        *profiling,
        "anygle",
        "--ws",
        ws,
        "--http",
        f"tcp:{http_port}:interface=127.0.0.1",
        "--instance-id",
        instance_id,
        *args,
    ]


def http_status(port: int, path: str = "/health", timeout: float = 1.0) -> int | None:
    """The HTTP status of ``GET path`` on 127.0.0.1, ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class Instance:
    """``twistd -n anygle`` as a subprocess on free loopback ports, run from the repository (its
    stdout, the twistd log, goes to :attr:`log_path`)."""

    def __init__(self, *args: str, name: str = "it", log_dir: Path | str | None = None) -> None:
        self.ws_port, self.http_port = free_port(), free_port()
        self.name = name
        self.args = twistd_argv(self.ws_port, self.http_port, *args, instance_id=name)
        self.log_path = Path(log_dir or "/tmp") / f"anygle-{name}-{os.getpid()}.log"
        self.proc: subprocess.Popen | None = None
        self._log: Any = None
        self._starts = 0

    def start(self, timeout: float = 20.0, wait: bool = True) -> Instance:
        """Start the process; with ``wait`` return once ``/health`` answers 200.  Starting it
        again after a kill keeps the ports, the name and the log."""
        env = dict(os.environ, PYTHONPATH=REPO)
        self._log = open(self.log_path, "ab" if self._starts else "wb")
        self._starts += 1
        self.proc = subprocess.Popen(
            self.args, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0) -> None:
        def up() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited: {self.output()[-2000:]}")
            return self.healthy()

        try:
            wait_for(up, timeout, f"{self.name} healthy")
        except TimeoutError:
            raise RuntimeError(f"{self.name} did not come up: {self.output()[-2000:]}") from None

    def healthy(self) -> bool:
        return http_status(self.http_port) == 200

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: nothing is cleaned up (the other instances' reapers must do it)."""
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout``); returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
        return self.proc.returncode

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"


# --- nginx -------------------------------------------------------------------------------------


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )


def _rewrite_upstream(conf: str, name: str, ports: list[int], balance: str | None) -> str:
    """The shipped ``upstream name { ... }`` with its servers replaced by ``ports`` (each with the
    shipped server parameters), and its balancing directive replaced by ``balance`` if given."""
    opening = r"(upstream " + re.escape(name) + r" \{\n)"
    block = re.search(opening + r"(.*?)(^\})", conf, re.S | re.M)
    if block is None:
        raise ValueError(f"{SHIPPED_NGINX}: no 'upstream {name}' block")
    body = block.group(2).splitlines()
    servers = [line for line in body if re.match(r"\s*server\s", line)]
    if not servers:
        raise ValueError(f"{SHIPPED_NGINX}: 'upstream {name}' lists no server")
    params = re.match(r"\s*server\s+\S+?(\s[^;]*)?;", servers[0])
    extra = (params.group(1) or "") if params else ""
    kept = [line for line in body if line not in servers]
    if balance is not None:
        directive = r"\s*(least_conn|ip_hash|random|hash\s|least_time)"
        kept = [line for line in kept if not re.match(directive, line)]
        if balance:
            kept.insert(0, f"    {balance};")
    lines = kept + [f"    server 127.0.0.1:{p}{extra};" for p in ports]
    return conf[: block.start(2)] + "".join(f"{line}\n" for line in lines) + conf[block.end(2) :]


def _server_blocks(conf: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each top-level ``server { ... }`` block of an http-level config."""
    blocks = []
    for opening in re.finditer(r"^server \{", conf, re.M):
        depth, i = 0, opening.end() - 1
        while True:
            depth += {"{": 1, "}": -1}.get(conf[i], 0)
            i += 1
            if depth == 0:
                break
        blocks.append((opening.start(), i))
    return blocks


def nginx_config(
    listen_port: int,
    upstreams: list[tuple[int, int]],
    prefix: str,
    *,
    balance: str | None = None,
    backlog: int | None = None,
    worker_connections: int = 4096,
    worker_rlimit_nofile: int | None = None,
    multi_accept: bool = False,
    shipped: Path = SHIPPED_NGINX,
    tls: tuple[str, str] | None = None,
) -> str:
    """The shipped ``etc/nginx/anygle.conf`` on test ports, in a standalone main config for one
    nginx process (no daemon, no master: killing it removes it all) whose files live in
    ``prefix``.  ``upstreams`` is ``(ws_port, http_port)`` per instance; ``balance`` replaces
    the WebSocket upstream's ``least_conn`` (the benchmark hashes a pair key for instances that
    share nothing).

    Of the shipped server blocks the one that serves the site is kept (the HTTPS one; the port
    80 redirect is dropped), listening on ``listen_port``: with ``tls = (certificate, key)``
    over TLS with those files, else over plain HTTP (its ``ssl_*`` lines left out)."""
    conf = shipped.read_text()
    conf = _rewrite_upstream(conf, "anygle_ws", [ws for ws, _ in upstreams], balance)
    conf = _rewrite_upstream(conf, "anygle_http", [http for _, http in upstreams], None)
    blocks = _server_blocks(conf)
    if not blocks:
        raise ValueError(f"{shipped}: no server block")
    site = next((b for b in blocks if "ssl_certificate" in conf[b[0] : b[1]]), blocks[0])
    server = conf[site[0] : site[1]]
    listens = re.findall(r"^ *listen [^;]*;\n", server, re.M)
    if not listens:
        raise ValueError(f"{shipped}: no listen directive")
    listen = f"    listen 127.0.0.1:{listen_port}" + (" ssl" if tls else "")
    listen += f" backlog={backlog}" if backlog else ""
    server = server.replace(listens[0], listen + ";\n", 1)
    for other in listens[1:]:
        server = server.replace(other, "", 1)
    if tls:
        server = re.sub(r"(?m)^( *ssl_certificate) [^;]*;", rf"\1 {tls[0]};", server)
        server = re.sub(r"(?m)^( *ssl_certificate_key) [^;]*;", rf"\1 {tls[1]};", server)
    else:
        server = re.sub(r"(?m)^ *ssl_[^;]*;\n", "", server)
    conf = conf[: blocks[0][0]] + server + conf[blocks[-1][1] :]
    nofile = f"worker_rlimit_nofile {worker_rlimit_nofile};\n" if worker_rlimit_nofile else ""
    accept = " multi_accept on;" if multi_accept else ""
    return f"""daemon off;
master_process off;
worker_processes 1;
{nofile}pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {worker_connections};{accept} }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{conf}
}}
"""


def write_nginx_config(
    prefix: str, text: str, shipped_dir: Path | str = SHIPPED_NGINX.parent
) -> list[str]:
    """Write ``text`` as ``prefix/nginx.conf`` (with the temp directories it names and the files
    it includes from ``shipped_dir``); returns the command line that runs it."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(prefix, sub), mode=0o777, exist_ok=True)
    # the shipped config includes its *.inc files from conf.d/, as it does in /etc/nginx
    os.makedirs(os.path.join(prefix, "conf.d"), exist_ok=True)
    for source in Path(shipped_dir).glob("*.inc"):
        shutil.copyfile(source, os.path.join(prefix, "conf.d", source.name))
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(text)
    return [binary, "-e", "stderr", "-p", prefix + "/", "-c", path]


def start_nginx(
    port: int,
    upstreams: list[tuple[int, int]],
    prefix: str,
    timeout: float = 30.0,
    tls: tuple[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """nginx running the shipped config (:func:`nginx_config`, ``tls`` as there) in ``prefix``,
    listening on ``port`` once this returns; stop it with :func:`stop_process`."""
    argv = write_nginx_config(prefix, nginx_config(port, upstreams, prefix, tls=tls))
    stderr = os.path.join(prefix, "nginx.stderr")
    with open(stderr, "w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {Path(stderr).read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_for(listening, timeout, "nginx listening")
    except BaseException:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen[Any] | None) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- a cluster of real processes: redis-server, N ``twistd anygle`` instances, nginx ------------


class Cluster:
    """redis-server + ``n`` redis-engine instances ``node1``.. (+ nginx in front, running the
    shipped config, when ``nginx=True``).  ``extra`` options come after :data:`LIMITS_OFF`."""

    def __init__(self, n: int = 3, nginx: bool = True, extra: list[str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="anygle-cluster-")
        os.chmod(self.dir, 0o777)
        self.redis = RedisServer()
        flags = ["--engine=redis", f"--redis={self.redis.url}", *limits_off_flags(), *(extra or [])]
        self.instances = [Instance(*flags, name=f"node{i + 1}", log_dir=self.dir) for i in range(n)]
        self.use_nginx = nginx
        self.nginx: subprocess.Popen | None = None
        self.port = free_port() if nginx else None

    def start(self, timeout: float = 30.0) -> Cluster:
        """Start everything; on a failure, stop what started (nothing is left running)."""
        try:
            self.redis.start()
            for inst in self.instances:  # all at once, then wait for each
                inst.start(wait=False)
            for inst in self.instances:
                inst.wait_healthy(timeout)
            if self.use_nginx:
                self._start_nginx(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_nginx(self, timeout: float) -> None:
        assert self.port is not None
        upstreams = [(i.ws_port, i.http_port) for i in self.instances]
        self.nginx = start_nginx(self.port, upstreams, self.dir, timeout)

    def logs(self, inst: Instance, tail: int = 60) -> str:
        return "".join(inst.output().splitlines(keepends=True)[-tail:])

    def instance_of(self, user_id: str) -> str | None:
        """The instance ``user_id`` is connected to, from its ``user:`` key."""
        raw = self.redis.command("GET", f"user:{user_id}")
        return None if raw is None else json.loads(raw)["instance"]

    def stop(self) -> None:
        stop_process(self.nginx)
        for inst in self.instances:
            inst.stop()
        self.redis.close()
        shutil.rmtree(self.dir, ignore_errors=True)
