/* Anygle web client: one page, no framework, no build step.
 *
 * Speaks the WebSocket protocol of README.md ("WebSocket protocol") in msgpack binary frames
 * (the vendored @msgpack/msgpack UMD build defines the global MessagePack).  The state a test or
 * a stylesheet needs is mirrored in the DOM: body[data-state] (setup | searching | chatting |
 * ended), body[data-conn] (connecting | open | reconnecting | closed | banned),
 * #partner-status[data-state] ("" | away | back), body[data-skip-armed] (a skip that waits for
 * a second press, see skipOrNext), #call[data-rtc-state] (the RTCPeerConnection's
 * connectionState, or "none") and #report-status[data-state].
 *
 * Session resume (docs/protocol.md "Session resume"): `connected` gives a resumeToken.  When the
 * connection drops without our asking (no close frame: a phone changing networks), a new
 * connection sends `resume {token, lastMessageId}` as its first frame and, within the server's
 * grace, gets the session back (`resumed`), the partner's messages it missed, and resends ours
 * the server had not accepted (every message carries an id; the server drops a repeated one).
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const el = {
    body: document.body,
    online: $("online"),
    conn: $("conn"),
    setup: $("setup"),
    setupError: $("setup-error"),
    unmoderated: $("unmoderated"),
    teenHint: $("teen-hint"),
    interests: $("interests"),
    chat: $("chat"),
    call: $("call"),
    remoteVideo: $("remote-video"),
    remoteNote: $("remote-note"),
    localVideo: $("local-video"),
    camera: $("toggle-camera"),
    mic: $("toggle-mic"),
    status: $("status"),
    log: $("log"),
    typing: $("typing"),
    partnerStatus: $("partner-status"),
    skipConfirm: $("skip-confirm"),
    composer: $("composer"),
    message: $("message"),
    send: $("send"),
    skip: $("skip"),
    report: $("report"),
    stop: $("stop"),
    dialog: $("report-dialog"),
    reportForm: $("report-form"),
    reportDetails: $("report-details"),
    reportStatus: $("report-status"),
    reportSend: $("report-send"),
    reportCancel: $("report-cancel"),
  };

  const REPORT_WINDOW_MS = 60000; // a partner can be reported up to 60 s after the chat ended
  const TYPING_IDLE_MS = 3000; // "stopped typing" after this long without a keystroke
  const PARTNER_TYPING_MS = 8000; // hide the partner's indicator if no update comes
  const RECONNECT_MAX_MS = 30000;
  const RESUME_GRACE_MS = 30000; // the server keeps a dropped session this long (--resume-grace)
  const RESUME_DELAYS_MS = [0, 500, 1000, 2000, 4000, 8000]; // then every 8 s until the grace ends
  const OPEN_TIMEOUT_MS = 8000; // a connection attempt not open by then is given up
  const IDLE_PING_MS = 20000; // nothing heard for this long: ping (stats come every few seconds)
  const PONG_TIMEOUT_MS = 10000; // no answer to a ping by then: the connection is dead
  const REPLAY_SETTLE_MS = 2000; // after `resumed`, the replayed frames have come by then
  const OUTBOX_MAX = 50; // own messages kept for a resend after a resume
  const SKIP_CONFIRM_MS = 4000; // a skip with an unsent draft waits this long for a second press
  const PLACEHOLDER = "Type a message…";

  const config = readConfig();
  let ws = null;
  let userId = null;
  let connectedIce = null; // connected.data.iceServers, when the server sends them
  let prefs = null; // the last join's data
  let state = "setup";
  let room = null; // {roomId, isInitiator, mode, iceServers, endedAt, reported}
  let attempts = 0; // reconnect attempts since the last `connected`
  let reconnectTimer = null;
  let banned = false;
  let resumeSearch = false; // join again once reconnected
  let resumeToken = null; // takes this session back after a drop (from connected / resumed)
  let resume = null; // while taking the session back: {token, until, tries, asked}
  let fresh = null; // a resume connection's own new session: {userId, resumeToken}
  let stale = []; // connections given up for dead (closed once the session is back)
  let lastMessageId = null; // the id of the partner's last message received in this session
  let seenIds = new Set(); // the partner's message ids in this chat (a replay is shown once)
  let outbox = []; // own messages of this chat the server may not have: {id, content, li}
  let skippedRoom = null; // the room skipped while reconnecting (the server is told once back)
  let settleTimer = null;
  let lastFrameAt = 0; // when a frame last came in
  let pingAt = 0; // when an unanswered ping went out
  let heartbeat = null;
  let statsSeq = 0; // `stats` frames seen: a /stats answer older than one of them is stale
  let skipArmed = false; // a skip with an unsent draft waits for a second press
  let skipArmTimer = null;
  let stream = null; // local camera/microphone
  let pc = null;
  let signalling = Promise.resolve(); // WebRTC steps run one after another
  let pendingCandidates = [];
  let typingSent = false;
  let typingTimer = null;
  let partnerTypingTimer = null;
  let reportPending = false;

  // --- configuration and the WebSocket URL ---------------------------------------------------
  function readConfig() {
    const meta = document.querySelector('meta[name="anygle-config"]');
    try {
      return JSON.parse(meta ? meta.content : "{}") || {};
    } catch (e) {
      return {};
    }
  }

  /* The server says where its WebSocket listener is: an explicit URL, or its port on the host
   * this page came from (direct), or nothing: the page's own origin (behind nginx). */
  function wsUrl() {
    if (config.wsUrl) return config.wsUrl;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const host = config.wsPort ? location.hostname + ":" + config.wsPort : location.host;
    return scheme + "//" + host + "/";
  }

  // --- connection -------------------------------------------------------------------------------
  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (!resume) setConn("connecting", "Connecting…");
    let socket;
    try {
      socket = new WebSocket(wsUrl());
    } catch (e) {
      ws = null;
      dropped({ code: 1006 });
      return;
    }
    socket.binaryType = "arraybuffer";
    const openTimer = setTimeout(() => {
      if (socket === ws && socket.readyState === WebSocket.CONNECTING) giveUp(socket);
    }, OPEN_TIMEOUT_MS);
    socket.onopen = () => {
      clearTimeout(openTimer);
      if (socket !== ws) return;
      lastFrameAt = Date.now();
      pingAt = 0;
      // The first frame of a resume connection (the server keeps it until `connected`).
      if (resume) resume.asked = send("resume", { token: resume.token, lastMessageId });
      if (resume) {
        const asked = resume;
        setTimeout(() => {
          if (resume === asked && socket === ws) giveUp(socket); // no answer: try again
        }, PONG_TIMEOUT_MS);
      }
    };
    socket.onmessage = (ev) => {
      if (socket !== ws) return;
      lastFrameAt = Date.now();
      receive(decode(ev.data));
    };
    socket.onclose = (ev) => {
      clearTimeout(openTimer);
      if (socket === ws) dropped(ev);
    };
    ws = socket;
  }

  /* A connection that never opened, or stopped answering: dropped as if the network had cut
   * it.  An open one is not closed (a close frame would end the session on the server); the
   * server closes it when the session is resumed elsewhere. */
  function giveUp(socket) {
    socket.onopen = socket.onmessage = socket.onclose = null;
    if (socket.readyState === WebSocket.CONNECTING) socket.close();
    else stale.push(socket);
    if (socket === ws) {
      ws = null;
      dropped({ code: 1006 });
    }
  }

  function closeStale() {
    stale.forEach((s) => s.close());
    stale = [];
  }

  function decode(data) {
    try {
      return typeof data === "string" ? JSON.parse(data) : MessagePack.decode(new Uint8Array(data));
    } catch (e) {
      return null;
    }
  }

  /* Nothing but the resume request goes out until the session is back (or lost). */
  function send(type, data) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    if (resume && type !== "resume") return false;
    const frame = data === undefined ? { type } : { type, data };
    ws.send(MessagePack.encode(frame));
    return true;
  }

  /* The connection closed without our asking (stop() and giveUp() detach it first). */
  function dropped(ev) {
    ws = null;
    stopHeartbeat();
    const code = ev ? ev.code : 1006;
    if (banned) {
      resume = null;
      endChat("You are banned from this service.");
      setConn("banned", "You are banned from this service.");
      return;
    }
    if (resume) {
      if (code === 1008) resumeLost(); // refused (policy): no use trying again
      else nextResumeTry();
      return;
    }
    // 1008: banned, kicked or flooding; 1001: the server is going away (a new session then).
    if (resumeToken && code !== 1008 && code !== 1001) {
      startResume();
      return;
    }
    userId = null;
    resumeToken = null;
    // A search goes on after the reconnect; a chat cannot (the partner was told we left).
    if (state === "searching") resumeSearch = true;
    chatLost("The connection was lost, and the chat with it.");
    scheduleReconnect();
  }

  function scheduleReconnect() {
    const base = Math.min(RECONNECT_MAX_MS, 1000 * 2 ** attempts);
    const delay = Math.round(base / 2 + (Math.random() * base) / 2); // jitter: no stampede
    attempts += 1;
    setConn("closed", "Disconnected. Reconnecting in " + Math.ceil(delay / 1000) + " s…");
    reconnectTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (ws || banned || !reconnectTimer) return;
    if (resume) resume.tries = 0;
    else attempts = 0;
    connect();
  }

  function setConn(kind, text) {
    el.body.dataset.conn = kind;
    el.conn.textContent = text;
  }

  // --- resume -----------------------------------------------------------------------------------
  function startResume() {
    resume = { token: resumeToken, until: Date.now() + RESUME_GRACE_MS, tries: 0, asked: false };
    fresh = null;
    clearTimeout(typingTimer);
    typingSent = false;
    hideTyping();
    setConn("reconnecting", "Reconnecting…");
    el.message.placeholder = "Reconnecting… you can keep typing";
    nextResumeTry();
  }

  function nextResumeTry() {
    const left = resume.until - Date.now();
    if (left <= 0) {
      resumeLost();
      return;
    }
    const delay = RESUME_DELAYS_MS[Math.min(resume.tries, RESUME_DELAYS_MS.length - 1)];
    resume.tries += 1;
    resume.asked = false;
    fresh = null;
    setConn("reconnecting", "Reconnecting…");
    reconnectTimer = setTimeout(connect, Math.min(delay, left));
  }

  /* `resumed`: the session is back on this connection; the frames missed follow it. */
  function resumed(data) {
    endResume();
    userId = data.userId;
    if (data.resumeToken) resumeToken = data.resumeToken;
    if (Array.isArray(data.iceServers)) connectedIce = data.iceServers;
    backOnline();
    const skipped = skippedRoom;
    skippedRoom = null;
    if (data.state === "chatting") {
      if (state === "chatting" && room && (!data.roomId || data.roomId === room.roomId)) {
        resendAfter(data.lastClientId);
      } else if (skipped && skipped === data.roomId) {
        send("skip", {}); // skipped while away: the partner is told now
      }
    } else if (data.state === "idle" && state === "searching" && prefs) {
      join(); // asked for a search while away, or the search was lost
    } else if (data.state === "queued" && state === "ended") {
      lookingForStranger();
    }
    resumeSearch = false;
    settleAfterReplay(data);
  }

  /* What the replay did not explain (a frame lost before the drop): by the time it has come,
   * the page and the server should agree on the chat. */
  function settleAfterReplay(data) {
    clearTimeout(settleTimer);
    const before = room;
    settleTimer = setTimeout(() => {
      if (resume || !ws) return;
      const same = room === before;
      if (!same) return; // the replay moved the chat on: nothing was missing
      const otherRoom = data.state === "chatting" && !(room && data.roomId === room.roomId);
      if (state === "chatting" && (data.state !== "chatting" || otherRoom)) {
        endChat("The chat ended while you were reconnecting.");
      }
      if (data.state === "queued" && state === "ended") {
        lookingForStranger();
      } else if (data.state === "chatting" && otherRoom && state !== "setup") {
        join(); // matched while away, but the match never reached us: search again
      }
    }, REPLAY_SETTLE_MS);
  }

  /* The server did not take the session back: this connection's own session is ours now. */
  function resumeFailed() {
    userId = fresh ? fresh.userId : null;
    resumeToken = fresh ? fresh.resumeToken : null;
    endResume();
    lastMessageId = null;
    backOnline();
    afterLoss("You were away too long: the previous chat was lost.");
  }

  /* The grace ran out while no connection got through: start over with a new session. */
  function resumeLost() {
    endResume();
    userId = null;
    resumeToken = null;
    lastMessageId = null;
    el.message.placeholder = PLACEHOLDER;
    if (ws) {
      const old = ws;
      ws = null;
      old.close(1000, "gave up");
    }
    if (state === "searching") resumeSearch = true;
    chatLost("We could not reconnect in time, and the chat was lost.");
    scheduleReconnect();
  }

  /* No longer taking a session back (it came, or it is lost). */
  function endResume() {
    resume = null;
    fresh = null;
    closeStale();
  }

  /* A session is ours on an open connection again. */
  function backOnline() {
    attempts = 0;
    setConn("open", "Connected");
    el.message.placeholder = PLACEHOLDER;
    startHeartbeat();
    fetchStats();
  }

  function afterLoss(text) {
    const searching = state === "searching";
    chatLost(text);
    if (searching && prefs) join();
  }

  /* The chat is over for us (a lost connection): what was not sent is marked so. */
  function chatLost(text) {
    skippedRoom = null;
    outbox.forEach((m) => m.li.classList.contains("pending") && markNotSent(m, "not sent"));
    outbox = [];
    setPartnerStatus("");
    endChat(text);
  }

  // --- liveness: a connection that went quiet is dead (a phone that lost its network) -----------
  function startHeartbeat() {
    stopHeartbeat();
    lastFrameAt = Date.now();
    pingAt = 0;
    heartbeat = setInterval(beat, 5000);
  }

  function stopHeartbeat() {
    clearInterval(heartbeat);
    heartbeat = null;
  }

  function beat() {
    if (!ws || ws.readyState !== WebSocket.OPEN || resume) return;
    const now = Date.now();
    if (pingAt && lastFrameAt < pingAt) {
      if (now - pingAt > PONG_TIMEOUT_MS) giveUp(ws);
    } else if (now - lastFrameAt > IDLE_PING_MS) {
      pingAt = now;
      send("ping");
    }
  }

  // --- server frames -----------------------------------------------------------------------------
  function receive(frame) {
    if (!frame || typeof frame.type !== "string") return;
    const data = frame.data || {};
    switch (frame.type) {
      case "connected":
        connectedIce = Array.isArray(data.iceServers) ? data.iceServers : null;
        fetchStats();
        if (resume) {
          // a new session of its own; ours comes back with `resumed` (or this one is ours)
          fresh = { userId: data.userId, resumeToken: data.resumeToken || null };
          break;
        }
        userId = data.userId;
        resumeToken = data.resumeToken || null;
        lastMessageId = null;
        attempts = 0;
        setConn("open", "Connected");
        startHeartbeat();
        if (resumeSearch && prefs) {
          resumeSearch = false;
          join();
        }
        break;
      case "resumed":
        resumed(data);
        break;
      case "searching":
        if (state === "searching") showSearching(data);
        break;
      case "matched":
        matched(data);
        break;
      case "message":
        if (data.id != null) {
          lastMessageId = String(data.id);
          if (seenIds.has(lastMessageId)) break; // a replay of one we have
          seenIds.add(lastMessageId);
        }
        if (state !== "chatting") break; // a late one from a chat we left
        hideTyping();
        addLine("them", data.content, data.timestamp);
        break;
      case "partner_typing":
        showTyping(!!data.isTyping);
        break;
      case "partner_away":
        if (state === "chatting") setPartnerStatus("away");
        break;
      case "partner_back":
        setPartnerStatus("back");
        break;
      case "partner_video_toggle":
        note(data.enabled ? "" : "The stranger turned their camera off.");
        break;
      case "partner_audio_toggle":
        addSystem(data.enabled ? "The stranger unmuted." : "The stranger muted their microphone.");
        break;
      case "partner_skipped":
        endChat("The stranger skipped you.");
        break;
      case "partner_disconnected":
        endChat("The stranger disconnected.");
        break;
      case "offer":
      case "answer":
      case "ice_candidate":
        signal(frame.type, data);
        break;
      case "moderation_warning":
        if (blocked(data)) markNotSent(pendingMessage(data.id), "not sent");
        addSystem(data.message || "Please keep it friendly.", "warning " + (data.severity || "low"));
        break;
      case "safety_notice":
        // our extension: the server's word to this user (a teen) about the stranger's messages
        addSystem(data.message || "Be careful with this stranger.", "warning notice");
        break;
      case "stats":
        statsSeq += 1;
        showOnline(data.totalOnline);
        break;
      case "report_received":
        reportDone(true, "Thank you. Your report was received.");
        break;
      case "error":
        failed(data.code || "ERROR", data.message || "", data);
        break;
      default:
        break;
    }
  }

  /* Whether a moderation warning means the message was not delivered: the server's texts for
   * a blocked message say so ("Message not sent: …", a ban); 'high' is never delivered. */
  function blocked(data) {
    if (typeof data.delivered === "boolean") return !data.delivered;
    if (typeof data.blocked === "boolean") return data.blocked;
    return data.severity === "high" || /not sent|banned/i.test(data.message || "");
  }

  // What users read for an error code: never the server's own wording or an internal detail.
  const ERROR_TEXT = {
    RATE_LIMITED: "You are sending too fast. Slow down a little.",
    NOT_DELIVERED: "The stranger could not be reached for a while; that did not get through.",
    TEEN_MODERATED_ONLY: "Teens always chat in moderated rooms.",
    INTERNAL_ERROR: "Something went wrong on our side. Please try again.",
  };
  const REPORT_ERROR_TEXT = {
    ALREADY_REPORTED: "You have already reported this stranger.",
    NOT_IN_CHAT: "There is nobody to report right now.",
    RATE_LIMITED: "Too many reports in a short time. Try again in a minute.",
    UNKNOWN_TYPE: "Reports are not available on this server.",
  };

  function failed(code, message, data) {
    if (code === "BANNED") {
      banned = true;
      reportPending = false;
      resume = null;
      if (room) room.endedAt = room.endedAt || Date.now();
      closeCall();
      addSystem("You have been banned for breaking the chat rules.", "warning high");
      setState("ended");
      return;
    }
    if (resume) {
      if (resume.asked) resumeFailed(); // RESUME_FAILED (or a server that cannot resume)
      return;
    }
    if (reportPending) {
      reportDone(false, REPORT_ERROR_TEXT[code] || "The report could not be sent. Please try again.", code);
      return;
    }
    const aboutMessage = data.frameType === "message" || (code === "RATE_LIMITED" && /'message'/.test(message));
    if (aboutMessage) markNotSent(pendingMessage(data.id), "not sent");
    switch (code) {
      case "TEEN_MODERATED_ONLY":
        showSetup(ERROR_TEXT[code]);
        break;
      case "NOT_IN_CHAT":
        break; // a race with the partner leaving: the partner_* frame tells the rest
      case "RESUME_FAILED":
        break; // a late answer to a resume already given up
      case "SERVICE_UNAVAILABLE":
        if (state === "searching") setState("ended");
        addSystem("The service is busy right now. Press Next to try again.", "warning medium");
        break;
      default:
        addSystem(ERROR_TEXT[code] || "Something went wrong. Please try again.", "warning " + (code === "RATE_LIMITED" ? "low" : "medium"));
    }
  }

  // --- queue and chat ------------------------------------------------------------------------------
  function readPrefs() {
    const form = el.setup.elements;
    const age = form.age.value;
    const interests = el.interests.value
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean)
      .slice(0, 10)
      .map((s) => s.slice(0, 32));
    return {
      ageCategory: age,
      mode: form.mode.value,
      queueType: age === "teen" ? "moderated" : form.queue.value,
      interests,
    };
  }

  const MEDIA_PROBLEMS = {
    NotAllowedError: "permission was not given",
    NotFoundError: "none was found",
    NotReadableError: "another app is using it",
  };

  async function start(ev) {
    ev.preventDefault();
    el.setupError.hidden = true;
    prefs = readPrefs();
    try {
      localStorage.setItem("anygle.prefs", JSON.stringify(prefs));
    } catch (e) {
      /* private mode: nothing to remember */
    }
    if (prefs.mode === "text") {
      stopMedia();
    } else {
      try {
        await ensureMedia(prefs.mode);
      } catch (e) {
        const why = MEDIA_PROBLEMS[e && e.name] || "it did not start";
        showSetup("Your " + (prefs.mode === "video" ? "camera and microphone" : "microphone") +
          " could not be used (" + why + "). Allow them, or choose text.");
        return;
      }
    }
    el.setup.hidden = true;
    el.chat.hidden = false;
    el.log.replaceChildren();
    join();
  }

  function join() {
    if (!prefs) return;
    closeCall();
    room = room && room.endedAt ? room : null;
    lookingForStranger();
    if (!send("join", prefs)) resumeSearch = true; // joins once reconnected
  }

  function lookingForStranger() {
    setState("searching");
    el.status.textContent = "Looking for a stranger…";
  }

  function showSearching(data) {
    const parts = ["Looking for a stranger…"];
    if (data.position) parts.push("You are #" + data.position + " in line.");
    const ms = Number(data.estimatedTime) || 0;
    if (ms > 0) parts.push(ms < 1000 ? "Usually under a second." : "Usually about " + Math.round(ms / 1000) + " s.");
    el.status.textContent = parts.join(" ");
  }

  function matched(data) {
    room = {
      roomId: data.roomId,
      isInitiator: !!data.isInitiator,
      mode: data.mode,
      iceServers: Array.isArray(data.iceServers) ? data.iceServers : connectedIce,
      endedAt: 0,
      reported: false,
    };
    newChat();
    setState("chatting");
    el.log.replaceChildren();
    const shared = (data.partnerInfo && data.partnerInfo.sharedInterests) || [];
    el.status.textContent = "You are chatting with a stranger. Say hi!";
    addSystem(shared.length ? "You both like " + shared.join(", ") + "." : "You are now chatting with a random stranger.");
    note("");
    const call = data.mode === "video" || data.mode === "voice";
    el.call.hidden = !call;
    if (call) startCall(room);
    el.message.focus();
  }

  /* What belongs to one chat starts empty with the next. */
  function newChat() {
    outbox = [];
    seenIds = new Set();
    skippedRoom = null;
    setPartnerStatus("");
    disarmSkip();
  }

  function endChat(text) {
    if (state !== "chatting") return;
    if (room) room.endedAt = Date.now();
    closeCall();
    setPartnerStatus("");
    setState("ended");
    el.status.textContent = "Press Next (Esc) to meet someone new.";
    addSystem(text);
  }

  /* Skip (in a chat) or Next (after one).  An unsent draft is the one thing a skip would throw
   * away without a word, so with one the first press only asks ("press again"): the second
   * skips and clears it.  A draft never reaches the next stranger. */
  function skipOrNext() {
    if (banned || (state !== "chatting" && state !== "ended")) return;
    if (el.message.value.trim() && !skipArmed) {
      armSkip();
      return;
    }
    disarmSkip();
    el.message.value = "";
    if (state === "chatting") {
      stopTyping();
      if (room) room.endedAt = Date.now();
      const left = room && room.roomId;
      const told = send("skip", {});
      closeCall();
      newChat();
      if (!told && resume) skippedRoom = left; // reconnecting: the server is told once back
      addSystem("You skipped.");
      lookingForStranger();
    } else {
      join();
    }
  }

  function armSkip() {
    skipArmed = true;
    el.body.dataset.skipArmed = "true";
    el.skipConfirm.textContent = state === "chatting"
      ? "Press Skip (Esc) again to skip. Your unsent message will be cleared."
      : "Press Next (Esc) again to meet someone new. Your unsent message will be cleared.";
    el.skipConfirm.hidden = false;
    clearTimeout(skipArmTimer);
    skipArmTimer = setTimeout(disarmSkip, SKIP_CONFIRM_MS);
  }

  function disarmSkip() {
    clearTimeout(skipArmTimer);
    skipArmed = false;
    delete el.body.dataset.skipArmed;
    el.skipConfirm.hidden = true;
  }

  function stop() {
    disarmSkip();
    closeCall();
    stopMedia();
    room = null;
    resumeSearch = false;
    newChat();
    el.message.value = "";
    showSetup("");
    const old = ws;
    const resuming = !!resume;
    ws = null;
    if (old) old.close(1000, "stop"); // asked for: not resumed
    if (old || resuming) {
      // There is no "leave the queue" message: a fresh connection is how one leaves it.
      resume = null;
      resumeToken = null;
      lastMessageId = null;
      closeStale();
      stopHeartbeat();
      el.message.placeholder = PLACEHOLDER;
      attempts = 0;
      connect();
    }
  }

  function showSetup(error) {
    setState("setup");
    el.chat.hidden = true;
    el.setup.hidden = false;
    el.setupError.textContent = error || "";
    el.setupError.hidden = !error;
    el.setup.elements.age[0].focus();
  }

  function setState(next) {
    state = next;
    el.body.dataset.state = next;
    const chatting = next === "chatting";
    if (!chatting) hideTyping();
    el.message.disabled = !chatting;
    el.send.disabled = !chatting;
    el.skip.disabled = next === "searching" || banned;
    el.skip.firstChild.textContent = next === "chatting" ? "Skip " : "Next ";
    el.report.disabled = !canReport();
  }

  function canReport() {
    if (!room || room.reported) return false;
    return !room.endedAt || Date.now() - room.endedAt < REPORT_WINDOW_MS;
  }

  function setPartnerStatus(s) {
    el.partnerStatus.dataset.state = s;
    el.partnerStatus.hidden = s !== "away";
  }

  // --- messages --------------------------------------------------------------------------------------
  function newId() {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /* Every message carries an id and is kept until a resume says the server has it; one typed
   * while reconnecting waits (marked "sending…") and goes out once the session is back. */
  function sendMessage(ev) {
    ev.preventDefault();
    const text = el.message.value;
    if (!text.trim() || state !== "chatting") return;
    const entry = { id: newId(), content: text, li: addLine("me", text, Date.now()) };
    outbox.push(entry);
    if (outbox.length > OUTBOX_MAX) outbox.shift();
    if (!send("message", { content: text, id: entry.id })) setLabel(entry.li, "pending", "sending…");
    el.message.value = "";
    disarmSkip();
    stopTyping();
  }

  /* After `resumed`: ours after the last one the server accepted go again (same id). */
  function resendAfter(lastClientId) {
    const i = outbox.findIndex((m) => m.id === lastClientId);
    // not among ours: none of this chat's messages got through (or it was in an earlier chat)
    outbox = outbox.slice(i + 1);
    for (const m of outbox) {
      if (send("message", { content: m.content, id: m.id })) setLabel(m.li, "", "");
    }
  }

  /* The bubble a blocked or refused message belongs to: by the id the server names, else the
   * latest one of ours still in doubt. */
  function pendingMessage(id) {
    if (id != null) {
      const named = outbox.find((m) => m.id === String(id));
      if (named) return named;
    }
    for (let i = outbox.length - 1; i >= 0; i -= 1) {
      if (!outbox[i].li.classList.contains("not-sent")) return outbox[i];
    }
    return null;
  }

  function markNotSent(entry, label) {
    if (!entry) return;
    setLabel(entry.li, "not-sent", label);
    outbox = outbox.filter((m) => m !== entry); // never resent
  }

  function setLabel(li, kind, text) {
    li.classList.remove("pending", "not-sent");
    if (kind) li.classList.add(kind);
    let label = li.querySelector(".label");
    if (!text) {
      if (label) label.remove();
      return;
    }
    if (!label) {
      label = document.createElement("span");
      label.className = "label";
      li.append(label);
    }
    label.textContent = text;
  }

  function clock(timestamp) {
    const d = new Date(timestamp);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function addLine(who, text, timestamp) {
    const li = document.createElement("li");
    li.className = "line " + who;
    const head = document.createElement("span");
    head.className = "who";
    head.textContent = who === "me" ? "You" : "Stranger";
    const when = Number(timestamp) || Date.now();
    const time = document.createElement("time");
    time.className = "time";
    time.dateTime = new Date(when).toISOString();
    time.textContent = clock(when);
    head.append(" ", time);
    const body = document.createElement("span");
    body.className = "text";
    body.dir = "auto"; // Arabic or Hebrew reads right to left
    body.textContent = text;
    li.append(head, body);
    li.title = new Date(when).toLocaleString();
    appendLog(li);
    return li;
  }

  function addSystem(text, kind) {
    const li = document.createElement("li");
    li.className = "line system" + (kind ? " " + kind : "");
    if (kind && kind.startsWith("warning")) li.setAttribute("role", "alert");
    li.textContent = text;
    appendLog(li);
  }

  function appendLog(li) {
    const atBottom = el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 40;
    el.log.append(li);
    if (atBottom) el.log.scrollTop = el.log.scrollHeight;
  }

  function typed() {
    disarmSkip();
    if (state !== "chatting") return;
    if (!typingSent && el.message.value) typingSent = send("typing", { isTyping: true });
    clearTimeout(typingTimer);
    typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(typingTimer);
    if (typingSent) send("typing", { isTyping: false });
    typingSent = false;
  }

  function showTyping(on) {
    clearTimeout(partnerTypingTimer);
    el.typing.hidden = !on || state !== "chatting";
    if (on) partnerTypingTimer = setTimeout(hideTyping, PARTNER_TYPING_MS);
  }

  function hideTyping() {
    clearTimeout(partnerTypingTimer);
    el.typing.hidden = true;
  }

  // --- online count ----------------------------------------------------------------------------------
  function showOnline(n) {
    if (typeof n === "number" && n >= 0) {
      el.online.textContent = n.toLocaleString();
      el.online.dataset.count = String(n);
    }
  }

  /* `stats` is pushed every few seconds; /stats (same origin) gives the count at once.  Its
   * answer is dropped when a push came meanwhile (the push is newer). */
  function fetchStats() {
    const seq = statsSeq;
    fetch("/stats", { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((s) => s && seq === statsSeq && showOnline(s.totalOnline))
      .catch(() => {});
  }

  // --- WebRTC ------------------------------------------------------------------------------------------
  async function ensureMedia(mode) {
    const wantVideo = mode === "video";
    if (stream && (stream.getVideoTracks().length > 0) === wantVideo) return stream;
    stopMedia();
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: wantVideo });
    el.localVideo.srcObject = wantVideo ? stream : null;
    setPressed(el.camera, true);
    setPressed(el.mic, true);
    return stream;
  }

  function stopMedia() {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    el.localVideo.srcObject = null;
  }

  function startCall(forRoom) {
    el.call.classList.toggle("voice", forRoom.mode === "voice");
    pendingCandidates = [];
    signalling = signalling.then(async () => {
      if (room !== forRoom) return;
      const local = await ensureMedia(forRoom.mode);
      if (room !== forRoom || state !== "chatting") return;
      pc = new RTCPeerConnection({ iceServers: forRoom.iceServers || [] });
      const conn = pc;
      setRtc(conn.connectionState);
      conn.onconnectionstatechange = () => {
        if (conn !== pc) return;
        setRtc(conn.connectionState);
        if (conn.connectionState === "failed") {
          addSystem("The call could not get through (a network in the way). Chat by text, or Skip.", "warning medium");
        }
      };
      conn.onicecandidate = (e) => {
        if (e.candidate && conn === pc) send("ice_candidate", e.candidate.toJSON());
      };
      conn.ontrack = (e) => {
        if (conn === pc) el.remoteVideo.srcObject = e.streams[0] || new MediaStream([e.track]);
      };
      local.getTracks().forEach((t) => conn.addTrack(t, local));
      // The partner sees what we send: say so when a toggle is already off.
      if (!isPressed(el.camera) && forRoom.mode === "video") send("video_toggle", { enabled: false });
      if (!isPressed(el.mic)) send("audio_toggle", { enabled: false });
      if (forRoom.isInitiator) {
        const offer = await conn.createOffer();
        await conn.setLocalDescription(offer);
        send("offer", { type: offer.type, sdp: offer.sdp });
      }
    }).catch(rtcFailed);
  }

  function signal(type, data) {
    const forRoom = room;
    signalling = signalling.then(async () => {
      if (!pc || room !== forRoom) return;
      const conn = pc;
      if (type === "offer") {
        await conn.setRemoteDescription(data);
        await flushCandidates(conn);
        const answer = await conn.createAnswer();
        await conn.setLocalDescription(answer);
        send("answer", { type: answer.type, sdp: answer.sdp });
      } else if (type === "answer") {
        await conn.setRemoteDescription(data);
        await flushCandidates(conn);
      } else if (conn.remoteDescription) {
        await conn.addIceCandidate(data);
      } else {
        pendingCandidates.push(data); // came before the offer/answer
      }
    }).catch(rtcFailed);
  }

  async function flushCandidates(conn) {
    const queued = pendingCandidates;
    pendingCandidates = [];
    for (const c of queued) await conn.addIceCandidate(c);
  }

  function rtcFailed(e) {
    console.warn("WebRTC:", e); // the details are for a developer, not for the user
    addSystem("The call could not be set up. Chat by text, or Skip.", "warning medium");
  }

  function closeCall() {
    if (pc) {
      pc.onconnectionstatechange = pc.onicecandidate = pc.ontrack = null;
      pc.close();
    }
    pc = null;
    pendingCandidates = [];
    el.remoteVideo.srcObject = null;
    setRtc(el.call.hidden ? "none" : "closed");
    note("");
  }

  function setRtc(s) {
    el.call.dataset.rtcState = s;
  }

  function note(text) {
    el.remoteNote.textContent = text;
    el.remoteNote.hidden = !text;
  }

  function isPressed(button) {
    return button.getAttribute("aria-pressed") === "true";
  }

  function setPressed(button, on) {
    button.setAttribute("aria-pressed", on ? "true" : "false");
  }

  function toggle(kind) {
    const button = kind === "video" ? el.camera : el.mic;
    const on = !isPressed(button);
    setPressed(button, on);
    if (stream) {
      const tracks = kind === "video" ? stream.getVideoTracks() : stream.getAudioTracks();
      tracks.forEach((t) => (t.enabled = on));
    }
    if (state === "chatting") send(kind + "_toggle", { enabled: on });
  }

  // --- report ------------------------------------------------------------------------------------------
  function openReport() {
    if (!canReport()) return;
    el.reportForm.reset();
    setReportStatus("idle", "");
    el.reportSend.disabled = false;
    el.dialog.showModal();
  }

  function sendReport(ev) {
    ev.preventDefault();
    const reason = el.reportForm.elements.reason.value;
    if (!reason) {
      setReportStatus("error", "Choose a reason.");
      return;
    }
    const data = { reason };
    const details = el.reportDetails.value.trim();
    if (details) data.details = details.slice(0, 500);
    if (!send("report", data)) {
      setReportStatus("error", "Not connected; try again in a moment.");
      return;
    }
    reportPending = true;
    el.reportSend.disabled = true;
    setReportStatus("sent", "Sending…");
  }

  function reportDone(ok, text, code) {
    reportPending = false;
    setReportStatus(ok ? "received" : "error", text, code);
    if (ok && room) room.reported = true;
    el.reportSend.disabled = ok;
    el.report.disabled = !canReport();
    if (ok) addSystem("Report sent. Thank you for keeping Anygle safe.");
  }

  function setReportStatus(s, text, code) {
    el.reportStatus.dataset.state = s;
    el.reportStatus.dataset.code = code || "";
    el.reportStatus.textContent = text;
  }

  // --- wiring ------------------------------------------------------------------------------------------
  function ageChanged() {
    const teen = el.setup.elements.age.value === "teen";
    el.unmoderated.disabled = teen;
    if (teen) el.setup.elements.queue.value = "moderated";
    el.teenHint.hidden = !teen;
  }

  function restorePrefs() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem("anygle.prefs") || "null");
    } catch (e) {
      saved = null;
    }
    if (!saved) return;
    const form = el.setup.elements;
    if (saved.ageCategory) form.age.value = saved.ageCategory;
    if (saved.mode) form.mode.value = saved.mode;
    if (saved.queueType) form.queue.value = saved.queueType;
    if (Array.isArray(saved.interests)) el.interests.value = saved.interests.join(", ");
  }

  el.setup.addEventListener("submit", start);
  el.setup.addEventListener("change", (e) => e.target.name === "age" && ageChanged());
  el.composer.addEventListener("submit", sendMessage);
  el.message.addEventListener("input", typed);
  el.skip.addEventListener("click", skipOrNext);
  el.stop.addEventListener("click", stop);
  el.report.addEventListener("click", openReport);
  el.reportForm.addEventListener("submit", sendReport);
  el.reportCancel.addEventListener("click", () => el.dialog.close());
  el.camera.addEventListener("click", () => toggle("video"));
  el.mic.addEventListener("click", () => toggle("audio"));
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || el.dialog.open || e.isComposing) return;
    e.preventDefault();
    skipOrNext();
  });
  window.addEventListener("online", reconnectNow);
  // Leaving the page ends the session at once (a close frame: not resumed), also when the
  // browser keeps the page in its back/forward cache, where an open socket would count the
  // user as online for nothing.  Back from that cache, the page starts over.
  window.addEventListener("pagehide", () => {
    const old = ws;
    ws = null;
    resume = null;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    stopHeartbeat();
    closeStale();
    if (old) old.close(1000, "page closed");
  });
  window.addEventListener("pageshow", (e) => {
    if (!e.persisted) return;
    stop();
    resumeToken = null;
    attempts = 0;
    if (!ws) connect();
  });
  setInterval(() => {
    el.report.disabled = !canReport(); // the 60 s after a chat run out
  }, 5000);

  restorePrefs();
  ageChanged();
  connect();
})();
