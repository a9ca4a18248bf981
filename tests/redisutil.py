"""A throw-away ``redis-server`` for tests: free port, no persistence, can be killed and restarted.

Usage::

    server = RedisServer().start()
    server.url            # redis://127.0.0.1:PORT/0
    server.client("SET", "k", "v")   # runs redis-cli, returns its output (str)
    server.kill()         # SIGKILL, data gone
    server.restart()      # same port, empty
    server.stop()
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    """One ``redis-server`` child process on 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="anygle-redis-")
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if self.ping():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING")

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

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, *args: str | int | float) -> str:
        """Run one command through ``redis-cli`` and return its raw output (stripped)."""
        out = subprocess.run(
            [self.cli, "-p", str(self.port), "--raw", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()

    def command(self, *args: str | int | float | bytes):
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


class RedisReplyError(Exception):
    pass


def _read_reply(f):
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


# --- a cluster of real processes: redis-server, N ``twistd anygle`` instances, nginx ------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )


def nginx_config(listen_port: int, upstreams: list[tuple[int, int]], prefix: str) -> str:
    """The shipped etc/nginx/anygle.conf on free ports, wrapped in a standalone main config."""
    import re

    with open(os.path.join(REPO, "etc", "nginx", "anygle.conf")) as f:
        conf = f.read()
    ws = "".join(f"    server 127.0.0.1:{w} max_fails=1 fail_timeout=5s;\n" for w, _ in upstreams)
    http = "".join(f"    server 127.0.0.1:{h} max_fails=1 fail_timeout=5s;\n" for _, h in upstreams)
    conf = re.sub(
        r"(upstream anygle_ws \{\n    least_conn;\n)(    server .*\n)+", r"\g<1>" + ws, conf
    )
    conf = re.sub(r"(upstream anygle_http \{\n)(    server .*\n)+", r"\g<1>" + http, conf)
    conf = conf.replace("    listen [::]:80;\n", "").replace(
        "listen 80;", f"listen 127.0.0.1:{listen_port};"
    )
    assert f"127.0.0.1:{upstreams[0][0]}" in conf and f"127.0.0.1:{listen_port}" in conf
    return f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
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


def start_nginx(
    port: int, upstreams: list[tuple[int, int]], prefix: str, deadline: float
) -> subprocess.Popen:
    """nginx with the shipped config (``nginx_config``) in ``prefix``, listening on ``port``
    once this returns; stop it with ``stop_process``."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(prefix, sub), mode=0o777, exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_config(port, upstreams, prefix))
    proc = subprocess.Popen(
        [binary, "-e", "stderr", "-p", prefix, "-c", conf, "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(prefix, "nginx.stderr"), "w"),
    )
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                with open(os.path.join(prefix, "nginx.stderr")) as f:
                    raise RuntimeError(f"nginx did not start: {f.read()}") from None
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Instance:
    """One ``twistd -n anygle --engine redis`` child process."""

    def __init__(self, name: str, redis_url: str, logdir: str, extra: list[str]) -> None:
        self.name = name
        self.ws_port = free_port()
        self.http_port = free_port()
        self.log = os.path.join(logdir, f"{name}.log")
        self.redis_url = redis_url
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        twistd = os.path.join(
            os.path.dirname(os.path.abspath(__import__("sys").executable)), "twistd"
        )
        env = dict(os.environ, PYTHONPATH=REPO)
        self.proc = subprocess.Popen(
            [
                twistd,
                "-n",
                "--pidfile=",
                f"--logfile={self.log}",
                "anygle",
                "--engine=redis",
                f"--redis={self.redis_url}",
                f"--ws=tcp:{self.ws_port}:interface=127.0.0.1",
                f"--http=tcp:{self.http_port}:interface=127.0.0.1",
                f"--instance-id={self.name}",
                *self.extra,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def healthy(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.http_port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.0 200") or False
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def limits_off_flags() -> list[str]:
    """Options that switch off the per-IP abuse limits (every test client is 127.0.0.1), for
    those options this tree has."""
    from anygle.config import OPTIONS

    wanted = {
        "rate-limit": "0",
        "max-connections-per-ip": "0",
        "message-limits": "off",
        "ping-interval": "0",
        "stats-interval": "3600",
        "searching-interval": "3600",
    }
    names = {o.name for o in OPTIONS}
    return [f"--{k}={v}" for k, v in wanted.items() if k in names]


class Cluster:
    """redis-server + ``n`` instances (+ nginx in front when ``nginx=True``)."""

    def __init__(self, n: int = 3, nginx: bool = True, extra: list[str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="anygle-cluster-")
        os.chmod(self.dir, 0o777)
        self.redis = RedisServer()
        self.instances = [
            Instance(
                f"node{i + 1}", self.redis.url, self.dir, [*limits_off_flags(), *(extra or [])]
            )
            for i in range(n)
        ]
        self.use_nginx = nginx
        self.nginx: subprocess.Popen | None = None
        self.port = free_port() if nginx else None

    def start(self, timeout: float = 30.0) -> Cluster:
        self.redis.start()
        for inst in self.instances:
            inst.start()
        deadline = time.monotonic() + timeout
        for inst in self.instances:
            while not inst.healthy():
                if not inst.alive():
                    raise RuntimeError(f"{inst.name} died:\n{self.logs(inst)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{inst.name} not healthy:\n{self.logs(inst)}")
                time.sleep(0.05)
        if self.use_nginx:
            self._start_nginx(deadline)
        return self

    def _start_nginx(self, deadline: float) -> None:
        assert self.port is not None
        upstreams = [(i.ws_port, i.http_port) for i in self.instances]
        self.nginx = start_nginx(self.port, upstreams, self.dir, deadline)

    def logs(self, inst: Instance, tail: int = 60) -> str:
        try:
            with open(inst.log) as f:
                return "".join(f.readlines()[-tail:])
        except OSError:
            return "(no log)"

    def instance_of(self, user_id: str) -> str | None:
        raw = self.redis.command("GET", f"user:{user_id}")
        if raw is None:
            return None
        import json

        return json.loads(raw)["instance"]

    def stop(self) -> None:
        stop_process(self.nginx)
        for inst in self.instances:
            inst.stop()
        self.redis.close()
        shutil.rmtree(self.dir, ignore_errors=True)
