/* Anygle web client: one page, no framework, no build step.
 *
 * Speaks the WebSocket protocol of README.md ("WebSocket protocol") in msgpack binary frames
 * (the vendored @msgpack/msgpack UMD build defines the global MessagePack).  The state a test or
 * a stylesheet needs is mirrored in the DOM: body[data-state] (setup | searching | chatting |
 * ended), body[data-conn] (connecting | open | closed | banned), #call[data-rtc-state] (the
 * RTCPeerConnection's connectionState, or "none") and #report-status[data-state].
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
    setConn("connecting", "Connecting…");
    let socket;
    try {
      socket = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    socket.binaryType = "arraybuffer";
    socket.onmessage = (ev) => {
      if (socket === ws) receive(decode(ev.data));
    };
    socket.onclose = (ev) => {
      if (socket === ws) dropped(ev);
    };
    ws = socket;
  }

  function decode(data) {
    try {
      return typeof data === "string" ? JSON.parse(data) : MessagePack.decode(new Uint8Array(data));
    } catch (e) {
      return null;
    }
  }

  function send(type, data) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    const frame = data === undefined ? { type } : { type, data };
    ws.send(MessagePack.encode(frame));
    return true;
  }

  function dropped(ev) {
    ws = null;
    userId = null;
    // A search goes on after the reconnect; a chat cannot (the partner was told we left).
    if (state === "searching") resumeSearch = true;
    endChat("The connection was lost, and the chat with it.");
    if (banned) {
      setConn("banned", "You are banned from this service.");
      return;
    }
    scheduleReconnect(ev && ev.reason);
  }

  function scheduleReconnect(reason) {
    const base = Math.min(RECONNECT_MAX_MS, 1000 * 2 ** attempts);
    const delay = Math.round(base / 2 + (Math.random() * base) / 2); // jitter: no stampede
    attempts += 1;
    const why = reason ? " (" + reason + ")" : "";
    setConn("closed", "Disconnected" + why + ". Reconnecting in " + Math.ceil(delay / 1000) + " s…");
    reconnectTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (ws || banned || !reconnectTimer) return;
    attempts = 0;
    connect();
  }

  function setConn(kind, text) {
    el.body.dataset.conn = kind;
    el.conn.textContent = text;
  }

  // --- server frames -----------------------------------------------------------------------------
  function receive(frame) {
    if (!frame || typeof frame.type !== "string") return;
    const data = frame.data || {};
    switch (frame.type) {
      case "connected":
        userId = data.userId;
        connectedIce = Array.isArray(data.iceServers) ? data.iceServers : null;
        attempts = 0;
        setConn("open", "Connected");
        fetchStats();
        if (resumeSearch && prefs) {
          resumeSearch = false;
          join();
        }
        break;
      case "searching":
        if (state === "searching") showSearching(data);
        break;
      case "matched":
        matched(data);
        break;
      case "message":
        hideTyping();
        addLine("them", data.content, data.timestamp);
        break;
      case "partner_typing":
        showTyping(!!data.isTyping);
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
        addSystem(data.message || "Please keep it friendly.", "warning " + (data.severity || "low"));
        break;
      case "safety_notice":
        // our extension: the server's word to this user (a teen) about the stranger's messages
        addSystem(data.message || "Be careful with this stranger.", "warning notice");
        break;
      case "stats":
        showOnline(data.totalOnline);
        break;
      case "report_received":
        reportDone(true, "Thank you. Your report was received (" + (data.reportId || "") + ").");
        break;
      case "error":
        failed(data.code || "ERROR", data.message || "");
        break;
      default:
        break;
    }
  }

  function failed(code, message) {
    if (reportPending && code !== "BANNED") {
      reportDone(false, message || code, code);
      return;
    }
    switch (code) {
      case "BANNED":
        banned = true;
        addSystem("You are banned: " + message, "warning high");
        setState("ended");
        break;
      case "TEEN_MODERATED_ONLY":
        showSetup(message);
        break;
      case "NOT_IN_CHAT":
        break; // a race with the partner leaving: the partner_* frame tells the rest
      case "RATE_LIMITED":
        addSystem("Slow down a little: " + message, "warning low");
        break;
      case "SERVICE_UNAVAILABLE":
        if (state === "searching") setState("ended");
        addSystem("The service is busy right now. Press Next to try again.", "warning medium");
        break;
      default:
        addSystem("Error " + code + ": " + message, "warning medium");
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
        showSetup("Your " + (prefs.mode === "video" ? "camera and microphone" : "microphone") +
          " could not be used (" + e.name + "). Allow them, or choose text.");
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
    setState("searching");
    el.status.textContent = "Looking for a stranger…";
    if (!send("join", prefs)) resumeSearch = true; // joins once reconnected
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

  function endChat(text) {
    if (state !== "chatting") return;
    if (room) room.endedAt = Date.now();
    closeCall();
    setState("ended");
    el.status.textContent = "Press Next (Esc) to meet someone new.";
    addSystem(text);
  }

  function skipOrNext() {
    if (banned) return;
    if (state === "chatting") {
      stopTyping();
      if (room) room.endedAt = Date.now();
      send("skip", {});
      closeCall();
      addSystem("You skipped.");
      setState("searching");
      el.status.textContent = "Looking for a stranger…";
    } else if (state === "ended") {
      join();
    }
  }

  function stop() {
    closeCall();
    stopMedia();
    room = null;
    resumeSearch = false;
    showSetup("");
    if (ws) {
      // There is no "leave the queue" message: a fresh connection is how one leaves it.
      const old = ws;
      ws = null;
      old.close(1000, "stop");
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

  // --- messages --------------------------------------------------------------------------------------
  function sendMessage(ev) {
    ev.preventDefault();
    const text = el.message.value;
    if (!text.trim() || state !== "chatting") return;
    if (send("message", { content: text })) {
      addLine("me", text, Date.now());
      el.message.value = "";
      stopTyping();
    }
  }

  function addLine(who, text, timestamp) {
    const li = document.createElement("li");
    li.className = "line " + who;
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = who === "me" ? "You" : "Stranger";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    li.append(name, body);
    if (timestamp) li.title = new Date(timestamp).toLocaleTimeString();
    appendLog(li);
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
    if (typeof n === "number") el.online.textContent = n.toLocaleString();
  }

  /* `stats` is pushed every few seconds; /stats (same origin) gives the count at once. */
  function fetchStats() {
    fetch("/stats", { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((s) => s && showOnline(s.totalOnline))
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
    addSystem("The call could not be set up (" + (e && e.name ? e.name : e) + ").", "warning medium");
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
  setInterval(() => {
    el.report.disabled = !canReport(); // the 60 s after a chat run out
  }, 5000);

  restorePrefs();
  ageChanged();
  connect();
})();
