"""Scripted teen-queue conversations through the real server: how many grooming lines reach the
teen?

A conversation file (tab separated: conversation id, role, label, text; '#' comments) scripts a
stranger who, like every sender in the teen queue, has declared "teen", and who works from small
talk towards contact; the teen answers. Each conversation gets two fresh WebSocket clients, each
from its own loopback address (a moderation ban of one stranger must not refuse the next
conversation's clients), joined to the moderated teen queue of one ``twistd -n anygle``
(memory engine). Lines are sent in order; after each line both clients ping and wait for their
pong, which orders every frame the line caused (the partner's ``message``, the sender's
``moderation_warning``, a ban's close) before the next line. A stranger that is banned sends
nothing more (its remaining harmful lines count as stopped) and the teen's later lines, with
nobody to receive them, are not counted.

Per conversation it counts the stranger's harmful lines (label ``grooming`` or
``personal_info``: the groomer's moves) that reached the teen, the move at which the chat was
stopped (the first harmful line that did not reach the teen), the weak-signal lines that reached
the teen, the ``safety_notice`` frames the teen got, and lines of either side that were stopped
(false positives). Targets (issue 17): every grooming conversation stopped by the stranger's
second move; innocent conversations (ids ``ok-…``: every line clean) pass with no line blocked.

Run: .venv/bin/python -m bench.moderation_conversations FILE [FILE ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

from bench import procs

HARMFUL = frozenset({"grooming", "personal_info"})
LABELS = frozenset({"clean", "weak", *HARMFUL})
JOIN = {"ageCategory": "teen", "mode": "text", "queueType": "moderated", "interests": []}
_addresses = itertools.count(2)


@dataclass(frozen=True, slots=True)
class Line:
    role: str  # 'stranger' | 'teen'
    label: str
    text: str


@dataclass(slots=True)
class Outcome:
    harmful: int = 0
    harmful_delivered: list[str] = field(default_factory=list)
    weak: int = 0
    weak_delivered: int = 0
    teen_lines: int = 0
    teen_blocked: list[str] = field(default_factory=list)
    stranger_clean: int = 0
    stranger_clean_blocked: int = 0
    stopped_at_move: int | None = None  # the first harmful line (1-based) that did not arrive
    notices: int = 0  # safety_notice frames the teen got
    chat_ended: bool = False  # moderation ended the chat (the teen got partner_disconnected)
    banned_after: int | None = None  # stranger line number after which the stranger was closed


def load(path: Path) -> dict[str, list[Line]]:
    convs: dict[str, list[Line]] = defaultdict(list)
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        cid, role, label, text = raw.split("\t")
        if role not in ("stranger", "teen") or label not in LABELS:
            raise ValueError(f"{path}:{n}: bad role or label: {role!r} {label!r}")
        convs[cid].append(Line(role, label, text))
    return dict(convs)


class _Client:
    """A blocking JSON-mode WebSocket client bound to its own loopback source address."""

    def __init__(self, port: int) -> None:
        n = next(_addresses)
        sock = socket.socket()
        sock.bind((f"127.0.{n // 250}.{n % 250 + 2}", 0))
        sock.connect(("127.0.0.1", port))
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/?format=json", socket=sock, timeout=10
        )
        self.closed = False
        self.frames: list[dict[str, Any]] = []
        self.wait("connected")

    def send(self, type_: str, data: Any = None) -> None:
        frame: dict[str, Any] = {"type": type_}
        if data is not None:
            frame["data"] = data
        try:
            self.ws.send(json.dumps(frame))
        except (OSError, websocket.WebSocketException):
            self.closed = True

    def wait(self, type_: str) -> list[dict[str, Any]]:
        """Frames up to and including the first of ``type_`` (all of them if the socket closes)."""
        got = []
        while not self.closed:
            try:
                raw = self.ws.recv()
            except (OSError, websocket.WebSocketException):
                self.closed = True
                break
            if not raw:
                self.closed = True
                break
            frame = json.loads(raw)
            got.append(frame)
            if frame["type"] == type_:
                break
        self.frames.extend(got)
        return got

    def sync(self) -> list[dict[str, Any]]:
        self.send("ping")
        return self.wait("pong")

    def close(self) -> None:
        try:
            self.ws.close()
        except (OSError, websocket.WebSocketException):
            pass


def run_conversation(port: int, lines: list[Line]) -> Outcome:
    stranger, teen = _Client(port), _Client(port)
    clients = {"stranger": stranger, "teen": teen}
    try:
        stranger.send("join", JOIN)
        teen.send("join", JOIN)
        for c in clients.values():
            if not any(f["type"] == "matched" for f in c.wait("matched")):
                raise RuntimeError("not matched")
        out = Outcome()
        for n, line in enumerate(lines, 1):
            sender = clients[line.role]
            receiver = teen if line.role == "stranger" else stranger
            if not sender.closed:
                sender.send("message", {"content": line.text})
                sender.sync()
            got = receiver.sync()
            delivered = any(
                f["type"] == "message" and f["data"]["content"] == line.text for f in got
            )
            if receiver is teen:
                out.notices += sum(f["type"] == "safety_notice" for f in got)
            if any(f["type"] in ("partner_disconnected", "partner_skipped") for f in teen.frames):
                out.chat_ended = True  # moderation ended the chat: nothing more is delivered
            if line.role == "teen":
                if stranger.closed or out.chat_ended:
                    continue  # the stranger was banned or the chat ended: nobody to deliver to
                out.teen_lines += 1
                if not delivered:
                    out.teen_blocked.append(line.text)
            elif line.label in HARMFUL:
                out.harmful += 1
                if delivered:
                    out.harmful_delivered.append(line.text)
                elif out.stopped_at_move is None:
                    out.stopped_at_move = out.harmful
            elif line.label == "weak":
                out.weak += 1
                out.weak_delivered += delivered
            else:
                out.stranger_clean += 1
                out.stranger_clean_blocked += not delivered
            if stranger.closed and out.banned_after is None:
                out.banned_after = n
        return out
    finally:
        for c in clients.values():
            c.close()


def run(files: list[Path], server: procs.Server) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for path in files:
        convs = load(path)
        rows = {}
        for cid, lines in convs.items():
            o = run_conversation(server.port, lines)
            rows[cid] = {
                "harmful": o.harmful,
                "harmful_delivered": len(o.harmful_delivered),
                "harmful_delivered_lines": o.harmful_delivered,
                "weak": o.weak,
                "weak_delivered": o.weak_delivered,
                "stranger_clean": o.stranger_clean,
                "stranger_clean_blocked": o.stranger_clean_blocked,
                "teen_lines": o.teen_lines,
                "teen_blocked": o.teen_blocked,
                "stopped_at_move": o.stopped_at_move,
                "safety_notices": o.notices,
                "chat_ended": o.chat_ended,
                "stranger_closed_after_line": o.banned_after,
            }
            print(
                f"  {path.name} {cid}: {len(o.harmful_delivered)}/{o.harmful} harmful lines "
                f"reached the teen (stopped at move {o.stopped_at_move}); notices {o.notices}; "
                f"lines stopped: teen {len(o.teen_blocked)}/{o.teen_lines}, stranger clean "
                f"{o.stranger_clean_blocked}/{o.stranger_clean}",
                file=sys.stderr,
            )
        report[path.name] = summarize(rows)
    return report


def summarize(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Totals of one conversation file: grooming conversations (with harmful lines) and innocent
    ones (ids ``ok-…``: every line clean) apart."""
    grooming = {c: r for c, r in rows.items() if r["harmful"]}
    innocent = {c: r for c, r in rows.items() if c.startswith("ok-")}
    return {
        "conversations": len(grooming),
        "harmful_lines": sum(r["harmful"] for r in grooming.values()),
        "harmful_delivered": sum(r["harmful_delivered"] for r in grooming.values()),
        "max_delivered_per_conversation": max(
            (r["harmful_delivered"] for r in grooming.values()), default=0
        ),
        "conversations_within_target": sum(r["harmful_delivered"] <= 1 for r in grooming.values()),
        # stopped by the second move: no harmful line reached the teen after the first
        "stopped_by_second_move": sum(
            r["harmful_delivered"] <= 1
            and r["stopped_at_move"] is not None
            and r["stopped_at_move"] <= 2
            for r in grooming.values()
        ),
        "innocent_conversations": len(innocent),
        "innocent_passed": sum(
            not r["teen_blocked"] and not r["stranger_clean_blocked"] and not r["safety_notices"]
            for r in innocent.values()
        ),
        "innocent_unblocked": sum(
            not r["teen_blocked"] and not r["stranger_clean_blocked"] for r in innocent.values()
        ),
        "teen_lines": sum(r["teen_lines"] for r in rows.values()),
        "teen_blocked": sum(len(r["teen_blocked"]) for r in rows.values()),
        "per_conversation": rows,
    }


def table(report: dict[str, Any]) -> str:
    head = f"{'set':<28}{'convs':>6}{'harmful':>9}{'reached':>9}{'max/conv':>10}{'<=2nd':>7}"
    lines = [head + f"{'innocent ok':>13}{'teen FP':>9}"]
    for name, r in report.items():
        lines.append(
            f"{name:<28}{r['conversations']:>6}{r['harmful_lines']:>9}{r['harmful_delivered']:>9}"
            f"{r['max_delivered_per_conversation']:>10}{r['stopped_by_second_move']:>7}"
            f"{r['innocent_unblocked']:>9}/{r['innocent_conversations']:<3}"
            f"{r['teen_blocked']:>5}/{r['teen_lines']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--json", type=Path, help="write the full report here")
    args = ap.parse_args(argv)
    procs.install_cleanup()
    server = procs.anygle("memory")
    try:
        report = run(args.files, server)
    finally:
        server.stop()
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
