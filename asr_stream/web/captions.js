// The caption page: microphone -> AudioWorklet -> PCM over the daemon's WebSocket; partials
// and finals back. Protocol: see the README ("The daemon").
"use strict";

const startButton = document.getElementById("start");
const statusLine = document.getElementById("status");
const finals = document.getElementById("finals");
const partialLine = document.getElementById("partial");
let running = null;
window.asrStream = { framesSent: 0, messages: 0 };  // counters, for a look from the console (and tests)

function setStatus(text) { statusLine.textContent = text; }

function joinWords(words) {
  let out = "";
  for (const w of words) {
    const attach = w.glued || /^[.,;:!?%)\]}"'”’…]/.test(w.word);
    out += (out && !attach ? " " : "") + w.word;
  }
  return out;
}

function showPartial(msg) {
  const stable = joinWords(msg.words.slice(0, msg.stable));
  const tentative = joinWords(msg.words.slice(msg.stable));
  partialLine.replaceChildren();
  partialLine.append(document.createTextNode(stable));
  if (tentative) {
    const span = document.createElement("span");
    span.className = "tentative";
    span.textContent = (stable ? " " : "") + tentative;
    partialLine.append(span);
  }
}

function addFinal(msg) {
  partialLine.replaceChildren();
  if (!msg.text) return;
  const line = document.createElement("p");
  const time = document.createElement("time");
  const start = msg.words.length ? msg.words[0].start : 0;
  time.textContent = new Date(start * 1000).toISOString().substring(14, 19);
  line.append(time, document.createTextNode(" " + msg.text));
  finals.append(line);
  finals.scrollTop = finals.scrollHeight;
}

function streamUrl(sampleRate) {
  const url = new URL("v1/stream", window.location.href);
  url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
  url.search = new URLSearchParams({ sample_rate: String(sampleRate), encoding: "s16le", channels: "1" });
  const token = new URLSearchParams(window.location.search).get("token");
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

async function start() {
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
  const socket = new WebSocket(streamUrl(context.sampleRate));
  socket.binaryType = "arraybuffer";
  running = { media, context, source, capture, socket };
  socket.onopen = () => {
    source.connect(capture);
    capture.connect(context.destination);  // silent, but a node the graph pulls keeps running
    capture.port.onmessage = (event) => {
      if (socket.readyState === WebSocket.OPEN) {
        socket.send(event.data);
        window.asrStream.framesSent++;
      }
    };
  };
  socket.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    window.asrStream.messages++;
    if (msg.type === "ready") setStatus(`listening (${msg.recognizer}, denoiser ${msg.denoiser})`);
    else if (msg.type === "partial") { showPartial(msg); setStatus(`listening; behind by ${msg.backlog_s ?? 0} s`); }
    else if (msg.type === "final") addFinal(msg);
    else if (msg.type === "end") setStatus(`ended: ${msg.summary.audio_seconds} s of audio`);
    else if (msg.type === "error") setStatus(`error: ${msg.message}`);
  };
  let opened = false;
  socket.addEventListener("message", () => { opened = true; });
  socket.onclose = async (event) => {
    if (!opened) {
      // a refused handshake (full, draining, bad token) is invisible to a page: ask the probe why
      let why = "";
      try { why = (await (await fetch("readyz")).json()).status; } catch (err) { /* unreachable */ }
      setStatus(`could not open a session${why && why !== "ready" ? ": the server is " + why : " (wrong token?)"}`);
    } else if (!statusLine.textContent.startsWith("error") && !statusLine.textContent.startsWith("ended")) {
      setStatus(`connection closed (${event.code}${event.reason ? ": " + event.reason : ""})`);
    }
    release();
  };
  startButton.textContent = "Stop";
  startButton.disabled = false;
}

function release() {
  if (!running) return;
  const { media, context, source } = running;
  source.disconnect();
  media.getTracks().forEach((t) => t.stop());
  context.close();
  running = null;
  startButton.textContent = "Start";
  startButton.disabled = false;
}

function stop() {
  const { socket, source } = running;
  source.disconnect();
  setStatus("finishing…");
  if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "end" }));
}

startButton.addEventListener("click", () => {
  (running ? Promise.resolve(stop()) : start()).catch((err) => {
    setStatus(`error: ${err.message || err}`);
    release();
  });
});
