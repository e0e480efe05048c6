// The page's behaviour: record or pick the input, post it to the API, follow the job,
// show what it made. Plain JavaScript, no build step, nothing fetched from the internet.
"use strict";

const $ = (id) => document.getElementById(id);
let input = null; // {blob, name}: what the buttons send
let info = null;

// ---- the model -----------------------------------------------------------------
async function loadInfo() {
  const r = await fetch("/api/info");
  info = await r.json();
  const table = $("info");
  for (const [k, v] of info.rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k;
    tr.insertCell().textContent = v;
  }
  for (const select of [$("target"), $("sample-speaker")]) {
    for (const name of info.speakers) select.add(new Option(name, name));
  }
  const lim = info.limits;
  $("limits").textContent =
    `Up to ${lim.max_seconds} s and ${lim.max_upload_mb} MB; any rate, mono or stereo (wav, flac, ogg, mp3).`;
  if (info.speaker_encoder) {
    $("reference-box").hidden = false;
    $("reference-note").textContent = "A few seconds of one person speaking is enough.";
  } else {
    $("reference-note").textContent =
      "This model knows its training voices by name only; a model with a speaker encoder also converts to a reference recording.";
  }
  const missing = info.baselines.filter((b) => b.missing);
  const present = info.baselines.filter((b) => !b.missing).map((b) => b.name);
  $("baselines-note").textContent =
    (present.length ? `Beside ${present.join(" and ")}. ` : "") +
    missing.map((b) => `${b.name}: ${b.missing}.`).join(" ");
  if (!info.prior) {
    $("sample").disabled = true;
    $("sample-note").textContent = "This model has no prior.";
  }
  $("sample-seconds").max = lim.max_sample_seconds;
}

// ---- input: a file or the microphone -------------------------------------------
function setInput(blob, name) {
  input = { blob, name };
  const audio = $("input-audio");
  if (audio.src) URL.revokeObjectURL(audio.src);
  audio.src = URL.createObjectURL(blob);
  audio.hidden = false;
  $("input-name").textContent = `${name}, ${(blob.size / 1e6).toFixed(2)} MB`;
  $("convert").disabled = $("compress").disabled = false;
}

$("audio-file").addEventListener("change", (e) => {
  const f = e.target.files[0];
  if (f) setInput(f, f.name);
});

// Recording keeps raw samples and writes a 16-bit WAV here, so the server needs no
// decoder for the browser's compressed formats (MediaRecorder gives webm/ogg).
let recorder = null;
$("record").addEventListener("click", async () => {
  hideError();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    return showError(`no microphone: ${err.message}`);
  }
  const ctx = new AudioContext();
  const source = ctx.createMediaStreamSource(stream);
  const node = ctx.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  node.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
  source.connect(node);
  node.connect(ctx.destination);
  const t0 = Date.now();
  const timer = setInterval(() => {
    $("record-time").textContent = `${((Date.now() - t0) / 1000).toFixed(1)} s`;
  }, 100);
  recorder = { stream, ctx, node, chunks, timer };
  $("record").classList.add("on");
  $("record").disabled = true;
  $("stop").disabled = false;
});

$("stop").addEventListener("click", () => {
  if (!recorder) return;
  const { stream, ctx, node, chunks, timer } = recorder;
  recorder = null;
  clearInterval(timer);
  node.disconnect();
  stream.getTracks().forEach((t) => t.stop());
  const rate = ctx.sampleRate;
  ctx.close();
  $("record").classList.remove("on");
  $("record").disabled = false;
  $("stop").disabled = true;
  setInput(wavBlob(chunks, rate), "recording.wav");
});

function wavBlob(chunks, rate) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (o, s) => [...s].forEach((ch, i) => view.setUint8(o + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true);
  view.setUint16(22, 1, true); view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, 2 * n, true);
  let o = 44;
  for (const c of chunks) {
    for (const x of c) {
      view.setInt16(o, Math.max(-32768, Math.min(32767, Math.round(x * 32767))), true);
      o += 2;
    }
  }
  return new Blob([view], { type: "audio/wav" });
}

// ---- the buttons ---------------------------------------------------------------
$("convert").addEventListener("click", () => {
  const form = withInput();
  const refs = $("reference").files;
  for (const f of refs) form.append("reference", f, f.name);
  if (!refs.length) form.append("target", $("target").value);
  submit("/api/convert", form);
});
$("compress").addEventListener("click", () => submit("/api/compress", withInput()));
$("sample").addEventListener("click", () => {
  const form = new FormData();
  form.append("speaker", $("sample-speaker").value);
  form.append("seconds", $("sample-seconds").value);
  submit("/api/sample", form);
});

function withInput() {
  const form = new FormData();
  form.append("audio", input.blob, input.name);
  return form;
}

async function submit(url, form) {
  hideError();
  let r;
  try {
    r = await fetch(url, { method: "POST", body: form });
  } catch (err) {
    return showError(`the server did not answer: ${err.message}`);
  }
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) return showError(body.error);
  follow(body.job);
}

// ---- jobs ----------------------------------------------------------------------
function follow(id) {
  $("no-results").hidden = true;
  const card = document.createElement("div");
  card.className = "card";
  card.dataset.job = id;
  card.innerHTML = `<h3>working</h3><progress max="1" value="0"></progress><p class="muted stage"></p>`;
  $("results").prepend(card);
  const poll = async () => {
    const job = await (await fetch(`/api/jobs/${id}`)).json();
    if (job.error && !job.state) return fail(card, job.error);
    card.querySelector("progress").value = job.progress;
    card.querySelector(".stage").textContent = job.stage;
    if (job.state === "done") return show(card, job);
    if (job.state === "failed") return fail(card, job.error);
    setTimeout(poll, 300);
  };
  poll();
}

function fail(card, message) {
  card.querySelector("h3").textContent = "failed";
  card.querySelector("progress").remove();
  const p = card.querySelector(".stage");
  p.className = "error";
  p.textContent = message;
}

function show(card, job) {
  const res = job.result;
  const url = (name) => `/api/jobs/${job.id}/files/${encodeURIComponent(name)}`;
  card.innerHTML = "";
  const h = document.createElement("h3");
  h.textContent = res.title;
  card.append(h);
  if (res.table) {
    const t = document.createElement("table");
    for (const row of res.table) {
      const tr = t.insertRow();
      for (const v of row) tr.insertCell().textContent = v;
    }
    card.append(t);
  }
  for (const a of res.audio) {
    const row = document.createElement("div");
    row.className = "clip";
    row.innerHTML = `<span></span><audio controls preload="metadata"></audio><a download>download</a>`;
    row.querySelector("span").textContent = a.label;
    const audio = row.querySelector("audio");
    audio.src = url(a.file);
    audio.className = a.file === "input.wav" ? "original" : "result";
    row.querySelector("a").href = url(a.file);
    card.append(row);
  }
  for (const d of res.downloads || []) {
    const a = document.createElement("a");
    a.href = url(d.file);
    a.download = d.file;
    a.textContent = `download ${d.label}`;
    card.append(a);
  }
  for (const n of res.notes || []) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = n;
    card.append(p);
  }
  const img = document.createElement("img");
  img.className = "spectrogram";
  img.alt = "spectrograms: the original above, the result below, on one time axis";
  img.src = url(res.spectrogram);
  card.append(img);
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}
function hideError() {
  $("error").hidden = true;
}

loadInfo().catch((err) => showError(`could not read the model: ${err.message}`));
