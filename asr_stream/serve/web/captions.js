// The caption page: microphone -> AudioWorklet -> PCM over the daemon's WebSocket, partials and
// finals back; or a file uploaded to POST /v1/audio/transcriptions, its finals streamed back.
// The transcript can be copied or saved as .txt, .srt or .vtt. Protocol: see the README.
"use strict";

const $ = (id) => document.getElementById(id);
const startButton = $("start");
const statusLine = $("status");
const finalsBox = $("finals");
const partialLine = $("partial");
const level = $("level");
const progress = $("progress");
const token = new URLSearchParams(window.location.search).get("token");
const transcript = [];  // {start, end, text} of every final shown, in order
let live = null;  // the microphone session while it runs
// counters, for a look from the console (and tests)
window.asrStream = { framesSent: 0, messages: 0, maxLevel: 0, reconnects: 0, uploads: 0 };

function setStatus(text) { statusLine.textContent = text; }

function joinWords(words) {
  let out = "";
  for (const w of words) {
    const attach = w.glued || /^[.,;:!?%)\]}"'”’…]/.test(w.word);
    out += (out && !attach ? " " : "") + w.word;
  }
  return out;
}

// -- the transcript ----------------------------------------------------------------------------
function clock(seconds, sep) {
  const ms = Math.round(seconds * 1000);
  const pad = (n, w) => String(n).padStart(w, "0");
  return `${pad(Math.floor(ms / 3600000), 2)}:${pad(Math.floor(ms / 60000) % 60, 2)}:` +
         `${pad(Math.floor(ms / 1000) % 60, 2)}${sep}${pad(ms % 1000, 3)}`;
}

function transcriptAs(kind) {
  if (kind === "txt") return transcript.map((c) => c.text).join("\n") + (transcript.length ? "\n" : "");
  if (kind === "srt") {
    return transcript.map((c, i) => `${i + 1}\n${clock(c.start, ",")} --> ${clock(c.end, ",")}\n${c.text}\n\n`).join("");
  }
  return "WEBVTT\n\n" + transcript.map((c) => `${clock(c.start, ".")} --> ${clock(c.end, ".")}\n${c.text}\n\n`).join("");
}
window.asrStream.transcript = transcriptAs;

function showPartial(words, stableCount) {
  const stable = joinWords(words.slice(0, stableCount));
  const tentative = joinWords(words.slice(stableCount));
  partialLine.replaceChildren();
  partialLine.append(document.createTextNode(stable));
  if (tentative) {
    const span = document.createElement("span");
    span.className = "tentative";
    span.textContent = (stable ? " " : "") + tentative;
    partialLine.append(span);
  }
}

function addFinal(text, start, end) {
  partialLine.replaceChildren();
  text = (text || "").trim();
  if (!text) return;
  transcript.push({ start, end, text });
  const line = document.createElement("p");
  const time = document.createElement("time");
  time.textContent = clock(start, ".").substring(3, 8);
  line.append(time, document.createTextNode(text));
  finalsBox.append(line);
  const box = $("transcript");
  box.scrollTop = box.scrollHeight;
  for (const id of ["copy", "save-txt", "save-srt", "save-vtt", "clear"]) $(id).disabled = false;
}

function download(kind) {
  const types = { txt: "text/plain", srt: "application/x-subrip", vtt: "text/vtt" };
  const url = URL.createObjectURL(new Blob([transcriptAs(kind)], { type: types[kind] }));
  const a = Object.assign(document.createElement("a"), { href: url, download: `transcript.${kind}` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// -- what the daemon runs ------------------------------------------------------------------------
async function showChain() {
  try {
    const info = await (await fetch("readyz")).json();
    const c = info.chain;
    $("chain").textContent = c
      ? `${c.recognizer} ${c.model || ""}${c.language ? " (" + c.language + ")" : ""} · ` +
        `denoiser ${c.denoiser}${c.gate ? ", gated" : ""}` +
        ` · ${info.status}`
      : `daemon ${info.status}`;
    return info.status;
  } catch (err) {
    $("chain").textContent = "daemon unreachable";
    return null;
  }
}

// -- the microphone ------------------------------------------------------------------------------
function streamUrl(sampleRate) {
  const url = new URL("v1/stream", window.location.href);
  url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
  url.search = new URLSearchParams({ sample_rate: String(sampleRate), encoding: "s16le", channels: "1" });
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

async function startMicrophone() {
  startButton.disabled = true;
  setStatus("asking for the microphone…");
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  let context;
  try {
    context = new AudioContext({ sampleRate: 16000 });  // the browser resamples the microphone
  } catch (err) {
    context = new AudioContext();  // the server resamples instead
  }
  await context.audioWorklet.addModule("static/capture-worklet.js");
  const source = context.createMediaStreamSource(media);
  const capture = new AudioWorkletNode(context, "pcm-capture");
  source.connect(capture);
  capture.connect(context.destination);  // silent, but a node the graph pulls keeps running
  live = { media, context, source, capture, socket: null, stopping: false, offset: 0, retry: 0 };
  capture.port.onmessage = (event) => {
    level.value = event.data.peak;
    window.asrStream.maxLevel = Math.max(window.asrStream.maxLevel, event.data.peak);
    const socket = live && live.socket;
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(event.data.pcm);
      window.asrStream.framesSent++;
    }
  };
  startButton.textContent = "Stop";
  startButton.disabled = false;
  openSession();
}

function openSession() {
  const session = live;
  const socket = new WebSocket(streamUrl(session.context.sampleRate));
  socket.binaryType = "arraybuffer";
  session.socket = socket;
  let opened = false;
  let ended = false;
  const offset = session.offset;  // a reconnected session's times start again at 0
  socket.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    opened = true;
    window.asrStream.messages++;
    if (msg.type === "ready") {
      session.retry = 0;
      setStatus(`listening (${msg.recognizer}, denoiser ${msg.denoiser})`);
    } else if (msg.type === "partial") {
      showPartial(msg.words, msg.stable);
      setStatus(`listening; behind by ${msg.backlog_s ?? 0} s`);
    } else if (msg.type === "final") {
      const words = msg.words;
      const start = offset + (words.length ? words[0].start : 0);
      const end = offset + (words.length ? words[words.length - 1].end : 0);
      addFinal(msg.text, start, end);
      session.offset = Math.max(session.offset, end);
    } else if (msg.type === "end") {
      ended = true;
      setStatus(msg.reason === "draining" ? "the daemon is restarting…" : `ended: ${msg.summary.audio_seconds} s of audio`);
    } else if (msg.type === "error") {
      setStatus(`error: ${msg.message}`);
    }
  };
  socket.onclose = async (event) => {
    if (live !== session) return;
    if (session.stopping) { release(); return; }
    // the daemon went away (restart, drain, crash): keep the microphone, reconnect when it is back
    if (opened || event.code === 1006 || event.code === 1001) {
      reconnect(session, opened && !ended ? `connection lost (${event.code})` : "the daemon is restarting");
      return;
    }
    // a refused handshake (full, draining, bad token) is invisible to a page: ask the probe why
    const why = await showChain();
    const full = why === "full" || why === "behind";  // at capacity: a retry now would be refused again
    if (why && why !== "ready" && !full) { reconnect(session, `the daemon is ${why}`); return; }
    setStatus(`could not open a session${full ? ": the daemon is full" : " (wrong token?)"}`);
    release();
  };
}

async function reconnect(session, why) {
  session.socket = null;
  session.retry++;
  const wait = Math.min(10, 0.5 * 2 ** Math.min(session.retry, 5));
  setStatus(`${why}; reconnecting in ${wait.toFixed(1)} s…`);
  await new Promise((resolve) => setTimeout(resolve, wait * 1000));
  if (live !== session || session.stopping) return;
  if ((await showChain()) !== "ready") { reconnect(session, "waiting for the daemon"); return; }
  window.asrStream.reconnects++;
  openSession();
}

function release() {
  if (!live) return;
  const { media, context, source } = live;
  source.disconnect();
  media.getTracks().forEach((t) => t.stop());
  context.close();
  live = null;
  level.value = 0;
  startButton.textContent = "Start microphone";
  startButton.disabled = false;
}

function stopMicrophone() {
  live.stopping = true;
  live.source.disconnect();
  setStatus("finishing…");
  const socket = live.socket;
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "end" }));
  else release();
}

// -- a file --------------------------------------------------------------------------------------
function captionFile(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", "asr-stream");
  form.append("stream", "true");
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "v1/audio/transcriptions");
  if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
  progress.hidden = false;
  progress.value = 0;
  setStatus(`uploading ${file.name}…`);
  const offset = transcript.length ? transcript[transcript.length - 1].end : 0;
  let seen = 0;
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) progress.value = e.loaded / e.total;
  };
  xhr.upload.onload = () => { progress.removeAttribute("value"); setStatus(`captioning ${file.name}…`); };
  xhr.onprogress = () => {  // the server-sent events so far: each final as it is recognised
    const events = xhr.responseText.split("\n\n");
    for (const block of events.slice(seen, events.length - 1)) {
      if (!block.startsWith("data: ")) continue;
      const msg = JSON.parse(block.slice(6));
      if (msg.type === "transcript.text.delta") {
        addFinal(msg.delta, offset + (msg.start ?? 0), offset + (msg.end ?? 0));
        setStatus(`captioning ${file.name}: ${(msg.end ?? 0).toFixed(1)} s done`);
      } else if (msg.type === "transcript.text.done") {
        progress.value = 1;
        window.asrStream.uploads++;
        setStatus(`captioned ${file.name}`);
      } else if (msg.error) {
        setStatus(`error: ${msg.error.message}`);
      }
    }
    seen = events.length - 1;
  };
  xhr.onload = () => {
    if (xhr.status !== 200) {
      let message = xhr.statusText;
      try { message = JSON.parse(xhr.responseText).error.message; } catch (err) { /* not JSON */ }
      setStatus(`could not caption ${file.name}: ${message}`);
      progress.hidden = true;
    } else {
      xhr.onprogress();
    }
  };
  xhr.onerror = () => { setStatus(`could not caption ${file.name}: the daemon is unreachable`); progress.hidden = true; };
  xhr.send(form);
}

// -- wiring --------------------------------------------------------------------------------------
startButton.addEventListener("click", () => {
  (live ? Promise.resolve(stopMicrophone()) : startMicrophone()).catch((err) => {
    setStatus(`error: ${err.message || err}`);
    release();
  });
});
$("file").addEventListener("change", (e) => { if (e.target.files.length) captionFile(e.target.files[0]); e.target.value = ""; });
$("copy").addEventListener("click", async () => {
  await navigator.clipboard.writeText(transcriptAs("txt"));
  setStatus("transcript copied");
});
for (const kind of ["txt", "srt", "vtt"]) $(`save-${kind}`).addEventListener("click", () => download(kind));
$("clear").addEventListener("click", () => {
  transcript.length = 0;
  finalsBox.replaceChildren();
  partialLine.replaceChildren();
  for (const id of ["copy", "save-txt", "save-srt", "save-vtt", "clear"]) $(id).disabled = true;
});
showChain();
