"""The hub: one per instance, it holds the local sessions and turns client intents into engine calls
and engine events into server frames.

It knows nothing of sockets (a :class:`~anygle.session.Client` is anything with ``send`` and
``close``) and nothing of storage (everything shared goes through the :class:`Engine`), so it
runs unchanged on every engine.  The protocol and the web pages talk to the hub (and its
:class:`~anygle.admission.Admission`), never to the engine; the admin console's helpers do too,
though its namespace also hands an operator the live ``engine`` for inspection.

Queue and room operations of one user run one at a time (:meth:`Session.serial`); relays do not
wait for them, they use the room the user is in when the message arrives.
"""

from __future__ import annotations

import secrets
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from anygle.admission import Admission
from anygle.clientip import ClientAddress
from anygle.engine.base import Engine, EngineUnavailable
from anygle.errors import ClientError
from anygle.ice import IceServers
from anygle.limits import AbuseKeyTable
from anygle.model import Match, Preferences, Stats
from anygle.moderation import Verdict
from anygle.moderation.policy import DELIVER
from anygle.reports import BAN_REASON, REPORT_GRACE, EndedChat, Report, Transcript
from anygle.resume import (
    RESUME_ATTEMPTS,
    RESUME_WINDOW,
    AwayClient,
    new_token,
    replay,
    same_token,
    token_key,
)
from anygle.screening import Screening, notice
from anygle.session import CHATTING, CLOSED, IDLE, QUEUED, Client, Session
from anygle.stats_view import pushed
from anygle.wire import Broadcast

PUSH_CHUNK = 200  # sessions served per reactor turn by the periodic pushes

PARTNER_LEFT_FRAMES = {
    "skipped": {"type": "partner_skipped"},
    "disconnected": {"type": "partner_disconnected"},
}
# The room's end reason when moderation stopped the conversation: the partner (a teen) gets a
# ``safety_notice {kind: 'chat_ended'}`` before ``partner_disconnected``.
MODERATION_ENDED = "moderation"


_ID_BATCH = 512


def _gone() -> None:
    """An away record's ``end`` once its session is back or ended: nothing left to end."""


class Hub:
    """Implements :class:`~anygle.engine.base.EngineSink` for the engine."""

    log = Logger()

    def __init__(
        self,
        engine: Engine,
        clock: IReactorTime,
        admission: Admission | None = None,
        screening: Screening | None = None,
        ice: IceServers | None = None,
        resume_grace: float = 0.0,
    ) -> None:
        self.engine = engine
        self.resume_grace = resume_grace  # s a dropped user may come back (0: not at all)
        self._resumable: dict[str, Session] = {}  # token_key(resume token) -> session
        self.admission = admission or Admission(engine, AbuseKeyTable(0, clock))
        self.screening = screening
        self.ice = ice
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.started_at = clock.seconds()
        self._message_ids: list[str] = []
        # (ended at, user id) in end order: the session holds its last chat, so that a
        # closed connection's session, protocol and transcript are freed at once
        self._ended_chats: deque[tuple[float, str]] = deque()

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # --- connection lifecycle ---------------------------------------------------------------
    async def open(self, client: Client, address: ClientAddress) -> Session:
        """Register an admitted connection (``anygle.admission``) and say ``connected``."""
        session = Session(
            str(uuid.uuid4()), address.ip, client, address.abuse_key, address.ban_keys
        )
        self.sessions[session.user_id] = session
        key = ""
        if self.resume_grace:
            session.resume_token = new_token()
            key = token_key(session.resume_token)
        try:
            await self.engine.connect(session.user_id, address.ip, key)
        except BaseException:
            del self.sessions[session.user_id]
            raise
        if self.screening is not None:
            self.screening.connected(session)
        data: dict[str, Any] = {"userId": session.user_id}
        if key:
            self._resumable[key] = session
            data["resumeToken"] = session.resume_token
        self._add_ice_servers(data, session.user_id)
        client.send({"type": "connected", "data": data})
        return session

    def _add_ice_servers(self, data: dict[str, Any], user_id: str) -> None:
        """``iceServers`` (our extension of the seed protocol) when any is configured, with TURN
        credentials for this user from now on.  Added where the frame is delivered to the local
        user, so a match made by another instance still carries this user's credentials."""
        if self.ice:
            data["iceServers"] = self.ice.for_user(user_id, self.clock.seconds())

    def close(self, session: Session) -> Deferred[Any]:
        """The session ends: stop delivering to it, then leave queue and room."""
        if session.state == CLOSED:
            return succeed(None)
        self._back(session)
        session.state = CLOSED
        self.sessions.pop(session.user_id, None)
        self._resumable.pop(token_key(session.resume_token), None)
        return session.serial(lambda: self._disconnect(session))

    def disconnected(self, session: Session, client: Client, clean: bool) -> Deferred[Any]:
        """``client``, the connection of ``session``, is gone.  A clean close (a close frame,
        a kick, a ban) ends the session; a dropped one (no close frame: a phone that switched
        networks) waits ``resume_grace`` s for the user to come back (:meth:`resume`)."""
        if session.client is not client:
            return succeed(None)  # the session went on on another connection
        if clean or not self.resume_grace or session.state == CLOSED or not session.resume_token:
            return self.close(session)
        self._go_away(session)
        return succeed(None)

    # --- resume (anygle/resume.py) --------------------------------------------------------
    def _go_away(
        self, session: Session, kept: list[dict[str, Any]] | None = None, told: bool = False
    ) -> None:
        """The user is away: frames for it are kept (after ``kept``: what it had not been sent
        yet when it came back only to go again), its partner is told (unless ``told``)."""
        missed = self._sent(session) if kept is None else []
        away = AwayClient(missed, lambda: self._end_away_soon(session, away))
        session.away = session.client = away
        away.timer = self.clock.callLater(self.resume_grace, self._end_away, session, away)
        if kept is not None:
            away.frames = kept
        if not told:
            self._tell_partner(session, "partner_away")

    def _end_away_soon(self, session: Session, away: AwayClient) -> None:
        # not within the engine event that overflowed the buffer or kicked the user
        self.clock.callLater(0, self._end_away, session, away)

    def _end_away(self, session: Session, away: AwayClient) -> None:
        if session.away is away:  # not back meanwhile
            self.close(session).addErrback(self._log_failure)

    @staticmethod
    def _sent(session: Session) -> list[dict[str, Any]]:
        """The partner's messages sent to the session's connection in this room (the transcript):
        its client may not have read the last of them."""
        return session.transcript.snapshot() if session.transcript is not None else []

    def _missed(
        self, session: Session, away: AwayClient | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(messages maybe not read, frames kept)`` for a session coming back: an away one's
        from its away record; one whose connection still looks open, its transcript."""
        if away is not None:
            return away.missed, away.frames
        return self._sent(session), []

    def _back(self, session: Session) -> AwayClient | None:
        """The session is no longer away (back, or ended): its grace timer stops, and the away
        record lets go of the session (its ``end`` callback and its timer's arguments refer to
        both: left as a reference cycle, every ended away session waited for a full collection,
        which runs rarely on purpose, ``tap.tune_gc``)."""
        away, session.away = session.away, None
        if away is not None:
            if away.timer.active():
                away.timer.cancel()
            away.timer, away.end = None, _gone
        return away

    def _still_away(self, session: Session, away: AwayClient) -> None:
        if session.away is away:
            self._tell_partner(session, "partner_away")

    def _tell_partner(self, session: Session, kind: str) -> None:
        if session.state == CHATTING and session.partner_id and session.room_id:
            self.engine.relay(session.partner_id, session.room_id, {"type": kind, "data": {}})

    async def resume(self, fresh: Session, token: str, last_message_id: str | None) -> Session:
        """The connection of ``fresh`` (a new session that has done nothing yet) takes over the
        session ``token`` names: it is sent ``resumed`` and what it missed, the partner of an
        away user ``partner_back``, an old connection still open is closed.  Returns the
        session the connection has from now on."""
        allowed = await self.engine.rate(
            f"resume:{fresh.abuse_key}", RESUME_ATTEMPTS, RESUME_WINDOW
        )
        if not allowed:
            raise ClientError("RATE_LIMITED", "too many resume attempts; slow down")
        key = token_key(token)
        old = self._resumable.get(key)
        if old is None or not same_token(old.resume_token, token):
            return await self._resume_moved(fresh, key, last_message_id)
        ban = await self.engine.get_ban(old.user_id, fresh.ban_keys)
        if self._resumable.get(key) is not old or fresh.state == CLOSED:
            raise ClientError("RESUME_FAILED")  # resumed or ended while we asked
        if ban is not None:
            self.close(old).addErrback(self._log_failure)
            self.on_kick(fresh.user_id, "BANNED", f"banned: {ban}")
            raise ClientError("BANNED", f"banned: {ban}")
        client, previous = fresh.client, old.client
        away = self._back(old)
        missed, frames = self._missed(old, away)
        del self._resumable[key]
        old.resume_token = new_token()
        self._resumable[token_key(old.resume_token)] = old
        self.engine.rekey(old.user_id, token_key(old.resume_token)).addErrback(self._log_failure)
        old.client = client
        old.ip, old.abuse_key, old.ban_keys = fresh.ip, fresh.abuse_key, fresh.ban_keys
        self.close(fresh).addErrback(self._log_failure)
        self._welcome_back(old, replay(missed, frames, last_message_id), away is not None)
        if away is None:
            previous.close(1000, "resumed on another connection")
        return old

    def _welcome_back(self, session: Session, missed: list[dict[str, Any]], away: bool) -> None:
        """``resumed``, then what the user missed; its partner hears it is back."""
        data: dict[str, Any] = {
            "userId": session.user_id,
            "state": session.state,
            "resumeToken": session.resume_token,
            "lastClientId": session.last_client_id,
        }
        if session.state == CHATTING:
            data["roomId"] = session.room_id
        self._add_ice_servers(data, session.user_id)
        session.client.send({"type": "resumed", "data": data})
        for frame in missed:
            session.client.send(frame)
        if away:
            self._tell_partner(session, "partner_back")

    async def _resume_moved(self, fresh: Session, key: str, last_message_id: str | None) -> Session:
        """The token is not one of ours: another instance may hold the session (the redis
        engine moves it here, anygle/engine/redis/handover.py)."""
        token = new_token()
        state = await self.engine.claim(key, token_key(token))
        if state is None:
            raise ClientError("RESUME_FAILED")
        session = Session(
            state["userId"],
            fresh.ip,
            fresh.client,
            fresh.abuse_key,
            fresh.ban_keys,
            state=state["state"],
            prefs=Preferences.unpacked(state["prefs"]),
            room_id=state["roomId"],
            partner_id=state["partnerId"],
            queued_at=state["queuedAt"],
            resume_token=token,
        )
        if state["transcript"]:
            session.transcript = Transcript()
            for message in state["transcript"]:
                session.transcript.add(message)
        for client_id in state["clientIds"]:
            session.accept_client_id(client_id)
        self.sessions[session.user_id] = session
        self._resumable[token_key(token)] = session
        missed = replay(state["missed"], state["frames"], last_message_id)
        if fresh.state == CLOSED:  # the new connection went while the session came: away here
            self._go_away(session, kept=missed, told=state["away"])
            raise ClientError("RESUME_FAILED", "the connection closed during the resume")
        self.close(fresh).addErrback(self._log_failure)
        self._welcome_back(session, missed, state["away"])
        return session

    def on_handover(self, user_id: str) -> dict[str, Any] | None:
        """The user resumed on another instance (the redis engine): its session goes there,
        without leaving its room or queue; an old connection still open is closed."""
        session = self.sessions.pop(user_id, None)
        if session is None or session.state == CLOSED:
            return None
        away = self._back(session)
        self._resumable.pop(token_key(session.resume_token), None)
        state, previous = session.state, session.client
        session.state = CLOSED  # over here, without a disconnect: it goes on elsewhere
        missed, frames = self._missed(session, away)
        handed = {
            "userId": user_id,
            "state": state,
            "prefs": session.prefs.packed() if session.prefs else None,
            "roomId": session.room_id,
            "partnerId": session.partner_id,
            "queuedAt": session.queued_at,
            "transcript": self._sent(session),
            "missed": missed,
            "frames": frames,
            "clientIds": session.client_ids(),
            "away": away is not None,
        }
        if away is None:
            previous.close(1000, "resumed on another connection")
        return handed

    async def _disconnect(self, session: Session) -> None:
        await self.engine.disconnect(session.user_id)

    # --- queue and room intents -------------------------------------------------------------
    def join(self, session: Session, prefs: Preferences) -> Deferred[Any]:
        return session.serial(lambda: self._join(session, prefs))

    async def _join(self, session: Session, prefs: Preferences) -> None:
        if session.state == CLOSED:
            return
        reason = await self.engine.get_ban(session.user_id, session.ban_keys)
        if session.state == CLOSED:  # the client left while we asked
            return
        if reason is not None:
            self.on_kick(session.user_id, "BANNED", f"banned: {reason}")
            return
        if session.state == CHATTING:  # join in a chat = skip, then requeue with the new prefs
            await self._leave_room(session, "skipped")
        session.prefs = prefs
        await self._enqueue(session)

    def skip(self, session: Session) -> Deferred[Any]:
        return session.serial(lambda: self._skip(session))

    async def _skip(self, session: Session) -> None:
        if session.prefs is None:  # checked in turn: a join sent just before may be under way
            raise ClientError("NOT_IN_CHAT", "join before you skip")
        if session.state == CHATTING:
            await self._leave_room(session, "skipped")
        elif session.state != IDLE:
            return  # already searching (or closed): nothing to skip
        await self._enqueue(session)

    async def _leave_room(self, session: Session, reason: str) -> None:
        assert session.room_id is not None
        session.room_ended(session.room_id)
        self._chat_ended(session)
        session.state, session.room_id, session.partner_id = IDLE, None, None
        await self.engine.leave_room(session.user_id, reason)

    async def _enqueue(self, session: Session) -> None:
        assert session.prefs is not None
        if session.state == CLOSED:
            return
        session.state = QUEUED
        session.queued_at = self.clock.seconds()
        try:
            # On a match, on_matched() runs before this returns and moves the session on.
            await self.engine.join(session.user_id, session.prefs, session.queued_at)
        except EngineUnavailable:
            if session.state == QUEUED:
                session.state = IDLE
            raise ClientError("SERVICE_UNAVAILABLE") from None
        if session.state == QUEUED:
            status = await self.engine.queue_status([session.user_id])
            self._send_searching(session, status)

    def _send_searching(self, session: Session, status: dict[str, tuple[int, float]]) -> None:
        if session.state == QUEUED and session.user_id in status:
            position, estimate = status[session.user_id]
            session.client.send(
                {"type": "searching", "data": {"position": position, "estimatedTime": estimate}}
            )

    # --- relays -----------------------------------------------------------------------------
    def _partner(self, session: Session) -> tuple[str, str]:
        if session.state != CHATTING or session.partner_id is None or session.room_id is None:
            raise ClientError("NOT_IN_CHAT")
        return session.partner_id, session.room_id

    def relay(self, session: Session, frame: dict[str, Any]) -> None:
        """Send a server frame to the session's partner."""
        partner, room = self._partner(session)
        self.engine.relay(partner, room, frame)

    def message_frame(self, content: str) -> dict[str, Any]:
        """The seed's ``Message``: ``{id, content, timestamp}`` (timestamp: ms since the epoch)."""
        return {
            "type": "message",
            "data": {"id": self._message_id(), "content": content, "timestamp": self.now_ms()},
        }

    def _message_id(self) -> str:
        """``secrets.token_hex(8)``, drawn from the OS's random bytes 512 ids at a time (one
        system call per id was a measurable part of relaying a message)."""
        ids = self._message_ids
        if not ids:
            raw = secrets.token_hex(8 * _ID_BATCH)
            ids.extend(raw[i : i + 16] for i in range(0, len(raw), 16))
        return ids.pop()

    def message(
        self, session: Session, content: str, client_id: str | None = None
    ) -> Deferred[Any] | None:
        """Relay a chat message once moderation lets it through.  A clean message goes out at
        once; one that needs the engine (strikes) waits its turn, and so does every message
        after it, so that the partner sees them in the order they were sent.  A message whose
        ``client_id`` was seen already (resent after a resume) is dropped."""
        partner, room = self._partner(session)
        if client_id is not None and not session.accept_client_id(client_id):
            return None
        frame = self.message_frame(content)
        if self.screening is None:
            self.engine.relay(partner, room, frame)
            return None
        verdict = self.screening.verdict(session, content, self.clock.seconds())
        if not verdict and not session.pending:
            self.engine.relay(partner, room, frame)
            self._safety_notice(partner, room, verdict)
            return None
        return session.serial(lambda: self._moderated(session, verdict, frame, room, client_id))

    def _safety_notice(self, partner: str, room: str, verdict: Verdict) -> None:
        """Tell the recipient (a teen), not the sender, that this chat entered the grey zone:
        after the message, through the same path, so it arrives right after it."""
        if verdict.notice is not None:
            self.engine.relay(partner, room, notice(verdict.notice))

    async def _moderated(
        self,
        session: Session,
        verdict: Verdict,
        frame: dict[str, Any],
        room: str,
        client_id: str | None = None,
    ) -> None:
        assert self.screening is not None
        action = await self.screening.decide(session, verdict) if verdict else DELIVER
        if action.deliver and session.room_id == room and session.partner_id is not None:
            self.engine.relay(session.partner_id, room, frame)
            self._safety_notice(session.partner_id, room, verdict)
        if action.warning:
            # ``delivered`` and ``id`` (ours): whether the message went out, and which it was
            warning = {
                "message": action.message,
                "severity": action.warning,
                "delivered": action.deliver,
            }
            if client_id is not None:
                warning["id"] = client_id
            session.client.send({"type": "moderation_warning", "data": warning})
        if action.end_chat and session.room_id == room:
            # the conversation is stopped: both leave the room; the partner is told why (in
            # on_partner_left, wherever it is connected: the reason travels with the event)
            await self._leave_room(session, MODERATION_ENDED)
            session.client.send(PARTNER_LEFT_FRAMES["disconnected"])
        if action.ban:
            reason = await self.screening.ban(session, verdict, self.clock.seconds())
            self.on_kick(session.user_id, "BANNED", f"banned: {reason}")

    # --- reports (anygle/reports.py) -----------------------------------------------------------
    def report(self, session: Session, reason: str, details: str | None) -> Deferred[Any]:
        """Report the partner (in turn with join/skip: a report sent after a skip reports the
        partner just skipped)."""
        return session.serial(lambda: self._report(session, reason, details))

    async def _report(self, session: Session, reason: str, details: str | None) -> None:
        partner, room_id, transcript = self._report_target(session)
        report = Report(
            report_id=uuid.uuid4().hex,
            reporter=session.user_id,
            reporter_ip=session.ip,
            # The one place that says what makes reporters distinct: the client address.
            reporter_key=session.abuse_key,  # an IPv6 /64 is one reporter
            reported=partner,
            room_id=room_id,
            reason=reason,
            details=details,
            created_at=self.now_ms(),
            messages=transcript.messages() if transcript is not None else [],
        )
        outcome = await self.engine.report(report)
        if outcome.duplicate:
            raise ClientError("ALREADY_REPORTED", extra={"reportId": outcome.report_id})
        session.client.send({"type": "report_received", "data": {"reportId": outcome.report_id}})
        self.log.info(
            "report {id}: {reporter} ({ip}) reported {reported} for {reason}",
            id=outcome.report_id,
            reporter=session.user_id,
            ip=session.ip,
            reported=partner,
            reason=reason,
        )
        if outcome.banned:  # connected here: closed now (elsewhere: by the engine's kick)
            self.on_kick(partner, "BANNED", f"banned: {BAN_REASON}")

    def _report_target(self, session: Session) -> tuple[str, str, Transcript | None]:
        """``(partner, room, transcript)``: the current partner, else the last one while the
        grace period after that chat lasts."""
        if session.state == CHATTING and session.partner_id and session.room_id:
            return session.partner_id, session.room_id, session.transcript
        chat = session.last_chat
        if chat is not None and self.clock.seconds() - chat.ended_at <= REPORT_GRACE:
            return chat.partner_id, chat.room_id, chat.transcript
        raise ClientError(
            "NOT_IN_CHAT", f"nobody to report: no partner now nor in the last {REPORT_GRACE:g} s"
        )

    def _chat_ended(self, session: Session) -> None:
        """The session's chat ends: its partner stays reportable for ``REPORT_GRACE`` s."""
        if session.partner_id is None or session.room_id is None:
            return
        chat = EndedChat(
            session.partner_id, session.room_id, self.clock.seconds(), session.transcript
        )
        session.last_chat, session.transcript = chat, None
        self._ended_chats.append((chat.ended_at, session.user_id))

    def forget_ended_chats(self) -> None:
        """Drop the transcripts of chats whose grace period is over (periodic): they are kept
        only for a report."""
        limit = self.clock.seconds() - REPORT_GRACE
        ended = self._ended_chats
        while ended and ended[0][0] < limit:
            _, user_id = ended.popleft()
            session = self.sessions.get(user_id)
            if session is None or session.last_chat is None:
                continue
            if session.last_chat.ended_at < limit:  # not a later chat of theirs
                session.last_chat = None

    # --- engine events (EngineSink) ----------------------------------------------------------
    def on_matched(self, user_id: str, match: Match) -> None:
        session = self.sessions.get(user_id)
        if session is None:
            return
        if session.has_ended(match.room_id):
            # The partner left before we heard the room began: keep searching.
            if session.state == QUEUED:
                session.serial(lambda: self._enqueue(session)).addErrback(self._log_failure)
            return
        if session.state == CHATTING:
            self.log.error(
                "engine matched {user} into {new} while in {old}",
                user=user_id,
                new=match.room_id,
                old=session.room_id,
            )
        partner = match.partner_of(user_id)
        session.state, session.room_id, session.partner_id = CHATTING, match.room_id, partner
        session.transcript = session.last_chat = None  # from now on the new partner is reported
        data: dict[str, Any] = {
            "roomId": match.room_id,
            "partnerId": partner,
            "mode": match.mode,
            "isInitiator": user_id == match.initiator,
            "partnerInfo": {
                "interests": list(match.interests.get(partner, ())),
                "sharedInterests": list(match.shared_interests),
            },
        }
        self._add_ice_servers(data, user_id)
        session.client.send({"type": "matched", "data": data})
        if session.away is not None:  # once the partner has its matched too
            self.clock.callLater(0, self._still_away, session, session.away)

    def on_partner_left(self, user_id: str, room_id: str, reason: str) -> None:
        session = self.sessions.get(user_id)
        if session is None:
            return
        session.room_ended(room_id)
        if session.room_id == room_id:
            self._chat_ended(session)
            session.state, session.room_id, session.partner_id = IDLE, None, None
            if reason == MODERATION_ENDED:
                session.client.send(notice("chat_ended"))
            session.client.send(
                PARTNER_LEFT_FRAMES.get(reason, PARTNER_LEFT_FRAMES["disconnected"])
            )

    def on_relay(self, user_id: str, room_id: str, frame: dict[str, Any]) -> None:
        session = self.sessions.get(user_id)
        if session is not None and session.room_id == room_id:
            if frame["type"] == "message":  # kept for a report: what this user was sent
                if session.transcript is None:
                    session.transcript = Transcript()
                session.transcript.add(frame["data"])
            session.client.send(frame)

    def on_undelivered(self, user_id: str, room_id: str, frame: dict[str, Any]) -> None:
        """A frame this user sent could not be delivered (the redis engine's outage buffer was
        full): ``error NOT_DELIVERED`` with the frame's ``type`` (and the message ``id``)."""
        session = self.sessions.get(user_id)
        if session is None or session.room_id != room_id or frame.get("type") == "safety_notice":
            return  # a lost safety notice is not the sender's business: it was never theirs
        out = ClientError("NOT_DELIVERED").frame()
        out["data"]["frameType"] = frame.get("type")
        data = frame.get("data")
        if isinstance(data, dict) and "id" in data:
            out["data"]["id"] = data["id"]
        session.client.send(out)

    def on_kick(self, user_id: str, code: str, reason: str) -> None:
        session = self.sessions.get(user_id)
        if session is not None:
            session.client.send(ClientError(code, reason).frame())
            session.client.close(1008, reason[:120])

    # --- what operators and pages ask (the console, /health, /stats) ------------------------
    def health(self) -> tuple[bool, str]:
        return self.engine.health()

    def lease(self) -> dict[str, float] | None:
        """How the redis engine keeps this instance's liveness lease (None on other engines)."""
        liveness = getattr(self.engine, "liveness", None)
        return liveness.report() if liveness is not None else None

    def redis(self) -> dict[str, Any] | None:
        """The Redis the redis engine talks to (None on other engines): its address and TLS;
        with sentinels also the primary they named last and the last failover seen."""
        address = getattr(self.engine, "address", None)
        if address is None:
            return None
        info: dict[str, Any] = {"address": str(address), "tls": address.tls}
        if address.sentinels:
            primary = getattr(self.engine, "primary", None)
            failovers = getattr(self.engine, "failovers", [])
            info["primary"] = str(primary) if primary is not None else None
            info["failovers"] = len(failovers)
            if failovers:
                at, old, new = failovers[-1]
                ago = round(self.clock.seconds() - at, 1)
                info["lastFailover"] = {"secondsAgo": ago, "from": old, "to": new}
        return info

    def stats(self) -> Deferred[Stats]:
        """Service-wide figures (all instances on the redis engine)."""
        return self.engine.stats()

    async def ban(self, kind: str, value: str, reason: str, ttl: float | None) -> None:
        """``banned:{kind}:{value}`` (``kind``: ``users`` or ``ips``); connected users it covers
        are closed at once, here (other instances within their next poll)."""
        await self.engine.ban(kind, value, reason, ttl)
        await self.enforce_bans()

    def unban(self, kind: str, value: str) -> Deferred[bool]:
        return self.engine.unban(kind, value)

    def reports(self, limit: int) -> Deferred[list[dict[str, Any]]]:
        return self.engine.reports(limit)

    def get_report(self, report_id: str) -> Deferred[dict[str, Any] | None]:
        return self.engine.get_report(report_id)

    async def enforce_bans(self) -> None:
        """Close every local user banned by id or IP since they connected (``redis-cli SETEX
        banned:…`` included): polled every second."""
        if not self.sessions:
            return
        banned = await self.engine.check_bans({u: s.ban_keys for u, s in self.sessions.items()})
        for user_id, reason in banned.items():
            self.on_kick(user_id, "BANNED", f"banned: {reason}")

    async def drain(self) -> None:
        """Graceful stop: every local user leaves (partners get ``partner_disconnected``), then
        every socket is closed with 1001 "going away"."""
        sessions = list(self.sessions.values())
        await gatherResults([self.close(s) for s in sessions], consumeErrors=True)
        for session in sessions:
            session.client.close(1001, "going away")

    # --- periodic pushes ----------------------------------------------------------------------
    async def push_searching(self) -> None:
        """Refresh ``searching {position, estimatedTime}`` for every waiting local user."""
        waiting = [s for s in self.sessions.values() if s.state == QUEUED]
        if not waiting:
            return
        try:
            status = await self.engine.queue_status([s.user_id for s in waiting])
        except EngineUnavailable:
            return  # skipped: /health says why, and the next push comes soon

        for chunk in self._chunks(waiting):
            for session in await chunk:
                self._send_searching(session, status)

    async def push_stats(self) -> None:
        """``stats`` to every connected client: encoded once, sent a chunk per reactor turn."""
        try:
            stats = await self.engine.stats()
        except EngineUnavailable:
            return  # skipped: /health says why, and the next push comes soon
        message = Broadcast({"type": "stats", "data": pushed(stats)})
        for chunk in self._chunks(list(self.sessions.values())):
            for session in await chunk:
                if session.state != CLOSED:
                    session.client.broadcast(message)

    def _chunks(self, sessions: list[Session]) -> Iterator[Deferred[list[Session]]]:
        """``PUSH_CHUNK`` sessions at a time, each chunk in a later reactor turn than the one
        before, so that a push to thousands of users never stalls the chats for long."""
        for i in range(0, len(sessions), PUSH_CHUNK):
            chunk = sessions[i : i + PUSH_CHUNK]
            yield succeed(chunk) if i == 0 else deferLater(self.clock, 0, lambda c=chunk: c)

    def _log_failure(self, failure: Any) -> None:
        self.log.failure("hub operation failed", failure)
