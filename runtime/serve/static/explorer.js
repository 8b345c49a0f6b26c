// featuremaps explorer: draw, upload or pick an image; see the model's prediction and every exposed
// layer's feature maps. It speaks only the Open Inference Protocol v2 (metadata + infer, binary
// tensors), like any other client, so it works for whatever model the server serves.
"use strict";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 60;     // while drawing: at most one request per pause this long

const state = {
  model: null,                // the served model's name
  h: 0, w: 0, c: 0,           // input image shape
  labels: null,
  layers: [],                 // feature-map outputs: {name, h, w, c, el, canvas, dirty}
  heads: [],                  // the model's own outputs (class scores)
  outputs: null,              // last response: name -> {shape, data}
  inflight: false, pending: false, timer: 0,
  zoom: null,                 // {layer, channel} while the enlarged view is open
};

// What the tests (and a curious user in the console) can read: the last request and response.
// busy: a request is scheduled or in flight.
window.explorer = { ready: false, busy: false, responses: 0, last: null };

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// ---- the v2 protocol -------------------------------------------------------------------------

async function getJSON(url, init) {
  const resp = await fetch(url, init);
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || `${url}: HTTP ${resp.status}`);
  return body;
}

// The model to show: ?model=NAME, else the first ready model of the server's repository index
// (Triton's model repository extension), which a server may not offer.
async function findModel() {
  const asked = new URLSearchParams(location.search).get("model");
  if (asked) return asked;
  let index;
  try {
    index = await getJSON("v2/repository/index",
      { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
  } catch (err) {
    throw new Error("which model? open this page as /?model=NAME (the name the server printed at start)");
  }
  const ready = index.filter((m) => !m.state || m.state === "READY");
  if (!ready.length) throw new Error("the server lists no ready model");
  return ready[0].name;
}

// Metadata parameters beyond the protocol that `runtime serve` adds ("labels": class names, "roles":
// output name -> "feature_map" | "model_output"); without them (another v2 server) class indices are
// shown and the rank decides the role.
function param(meta, key) {
  return (meta.parameters || {})[key];
}

async function loadModel() {
  state.model = await findModel();
  const meta = await getJSON(`v2/models/${encodeURIComponent(state.model)}`);
  const input = meta.inputs[0];
  const [, h, w, c] = input.shape;
  if (input.shape.length !== 4 || !(h > 0 && w > 0 && c > 0)) {
    throw new Error(`expected an image input [batch, H, W, C]; the model declares ${JSON.stringify(input.shape)}`);
  }
  Object.assign(state, { h, w, c, inputName: input.name });
  state.labels = param(meta, "labels") || null;
  const roles = param(meta, "roles") || {};
  for (const out of meta.outputs) {
    const role = roles[out.name] || (out.shape.length === 4 ? "feature_map" : "model_output");
    if (role === "feature_map" && out.shape.length === 4) {
      state.layers.push({ name: out.name, h: out.shape[1], w: out.shape[2], c: out.shape[3], dirty: false });
    } else if (role === "model_output" && out.shape.length === 2) {
      state.heads.push({ name: out.name, k: out.shape[1] });
    }  // other outputs (e.g. an exposed dense layer) have no maps to draw
  }
  $("model-name").textContent = `model ${meta.name}`;
  $("input-shape").textContent = `input ${h}×${w}×${c}` +
    (state.c === 3 ? " (RGB)" : " (grayscale)") + ` · ${state.layers.length} feature-map layers`;
}

// One image [H, W, C] of raw 0..255 pixels -> every output, binary tensors both ways. Raw UINT8
// pixels, not floats: the server applies the model's own preprocessing (the manifest's), so the page
// stays right for any export's --scale/--offset.
async function infer(pixels) {
  const input = Uint8Array.from(pixels);
  const names = [...state.heads, ...state.layers].map((o) => o.name);
  const header = new TextEncoder().encode(JSON.stringify({
    inputs: [{ name: state.inputName, shape: [1, state.h, state.w, state.c], datatype: "UINT8",
               parameters: { binary_data_size: input.byteLength } }],
    outputs: names.map((name) => ({ name, parameters: { binary_data: true } })),
  }));
  const resp = await fetch(`v2/models/${encodeURIComponent(state.model)}/infer`, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": String(header.length) },
    body: new Blob([header, input]),
  });
  const buf = await resp.arrayBuffer();
  const headLen = Number(resp.headers.get("Inference-Header-Content-Length") || buf.byteLength);
  let head = {};
  try {
    head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 0, headLen)));
  } catch (err) {
    if (resp.ok) throw new Error(`infer: the server's answer is not v2 JSON (${err.message})`);
  }
  if (!resp.ok) throw new Error(head.error || `infer: HTTP ${resp.status}`);
  const outputs = {};
  let at = headLen;
  for (const out of head.outputs) {
    const size = out.parameters && out.parameters.binary_data_size;
    let data;
    if (size !== undefined) {
      data = new Float32Array(buf.slice(at, at + size));  // slice: a typed array needs aligned bytes
      at += size;
    } else {
      data = Float32Array.from(out.data.flat(Infinity));
    }
    outputs[out.name] = { shape: out.shape, data };
  }
  window.explorer.last = { pixels: input, outputs };
  window.explorer.responses += 1;
  return outputs;
}

// ---- input: the pad is the model's own resolution, shown enlarged -------------------------

const pad = $("pad");
const ctx = pad.getContext("2d", { willReadFrequently: true });

function setupPad() {
  pad.width = state.w;
  pad.height = state.h;
  pad.style.aspectRatio = `${state.w} / ${state.h}`;
  $("colour-label").hidden = state.c !== 3;
  clearPad();
}

function clearPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, state.w, state.h);
}

// Raw pixels [H, W, C] of the pad; grayscale as Pillow's "L" conversion computes it.
function padPixels() {
  const rgba = ctx.getImageData(0, 0, state.w, state.h).data;
  const n = state.w * state.h, out = new Uint8Array(n * state.c);
  for (let i = 0; i < n; i++) {
    const r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2];
    if (state.c === 3) { out[3 * i] = r; out[3 * i + 1] = g; out[3 * i + 2] = b; }
    else out[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
  }
  return out;
}

// Show exactly what the model receives: grayscale models see the pad in gray.
function toModelColours() {
  if (state.c === 3) return;
  const img = ctx.getImageData(0, 0, state.w, state.h), gray = padPixels();
  for (let i = 0; i < gray.length; i++) img.data.fill(gray[i], 4 * i, 4 * i + 3);
  ctx.putImageData(img, 0, 0);
}

function putPixels(pixels) {  // raw [H, W, C] (or [H, W]) 0..255 -> the pad
  const img = ctx.createImageData(state.w, state.h), n = state.w * state.h;
  const c = pixels.length / n;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < 3; k++) img.data[4 * i + k] = pixels[c === 3 ? 3 * i + k : i];
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function setupDrawing() {
  let last = null;
  const at = (e) => {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * state.w / r.width, (e.clientY - r.top) * state.h / r.height];
  };
  const stroke = (from, to) => {
    ctx.strokeStyle = state.c === 3 ? $("colour").value : "#fff";
    ctx.lineWidth = Math.max(1, Math.min(state.w, state.h) * 0.085 * Number($("brush").value));
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(...from);
    ctx.lineTo(...to);
    ctx.stroke();
  };
  pad.addEventListener("pointerdown", (e) => {
    pad.setPointerCapture(e.pointerId);
    last = at(e);
    stroke(last, last);
    changed();
  });
  pad.addEventListener("pointermove", (e) => {
    if (!last) return;
    const p = at(e);
    stroke(last, p);
    last = p;
    changed();
  });
  const end = () => { if (last) { last = null; toModelColours(); changed(0); } };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
}

function setupInputs() {
  $("clear").onclick = () => { clearPad(); changed(0); };
  $("invert").onclick = () => {
    const img = ctx.getImageData(0, 0, state.w, state.h);
    for (let i = 0; i < img.data.length; i += 4) for (let k = 0; k < 3; k++) img.data[i + k] = 255 - img.data[i + k];
    ctx.putImageData(img, 0, 0);
    changed(0);
  };
  $("upload").onchange = async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try {
      const bitmap = await createImageBitmap(file);
      clearPad();  // transparency becomes black, as runtime.images reads it
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(bitmap, 0, 0, state.w, state.h);  // stretched to H x W, as runtime.images does
      toModelColours();
      changed(0);
    } catch (err) {
      setStatus(`cannot read ${file.name}: expected an image file the browser decodes (PNG, JPEG, …)`, true);
    }
  };
}

async function loadSamples() {
  let samples = [];
  try {
    samples = await getJSON("explorer/samples");
  } catch (err) {
    return;  // optional: the server ships digits only for 28x28x1 models
  }
  if (!Array.isArray(samples)) samples = samples.samples || [];
  const box = $("samples");
  for (const [i, s] of samples.entries()) {
    const pixels = Uint8Array.from((s.pixels || s.image || s).flat(Infinity));
    if (pixels.length !== state.h * state.w * state.c && pixels.length !== state.h * state.w) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.title = s.label !== undefined ? `test digit #${i} (label ${s.label})` : `sample #${i}`;
    button.dataset.index = i;
    const thumb = document.createElement("canvas");
    thumb.width = state.w;
    thumb.height = state.h;
    const img = thumb.getContext("2d").createImageData(state.w, state.h);
    const c = pixels.length / (state.w * state.h);
    for (let j = 0; j < state.w * state.h; j++) {
      for (let k = 0; k < 3; k++) img.data[4 * j + k] = pixels[c === 3 ? 3 * j + k : j];
      img.data[4 * j + 3] = 255;
    }
    thumb.getContext("2d").putImageData(img, 0, 0);
    button.append(thumb);
    button.onclick = () => { putPixels(pixels); changed(0); };
    box.append(button);
  }
}

// ---- requests: debounced while drawing, one in flight, the latest image always wins -----------

function changed(delay = DEBOUNCE_MS) {
  window.explorer.busy = true;
  clearTimeout(state.timer);
  state.timer = setTimeout(() => { state.timer = 0; send(); }, delay);
}

async function send() {
  if (state.inflight) { state.pending = true; return; }
  state.inflight = true;
  state.pending = false;
  const started = performance.now();
  try {
    state.outputs = await infer(padPixels());
    setStatus(`${Math.round(performance.now() - started)} ms per request`);
    showPrediction();
    for (const layer of state.layers) layer.dirty = true;
    renderVisible();
    if (state.zoom) renderZoom();
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    state.inflight = false;
    if (state.pending) send();
    else if (!state.timer) window.explorer.busy = false;
  }
}

// ---- the model's own outputs ----------------------------------------------------------------

function showPrediction() {
  const box = $("prediction");
  box.replaceChildren();
  for (const head of state.heads) {
    const scores = state.outputs[head.name].data;
    let top = 0;
    for (let i = 1; i < scores.length; i++) if (scores[i] > scores[top]) top = i;
    const sum = scores.reduce((a, b) => a + b, 0);
    const isProb = scores.every((v) => v >= 0 && v <= 1) && Math.abs(sum - 1) < 1e-3;
    const label = (i) => (state.labels && state.labels[i] !== undefined ? state.labels[i] : String(i));
    const title = document.createElement("p");
    title.className = "predicted";
    title.textContent = `${label(top)}` + (isProb ? ` · ${(100 * scores[top]).toFixed(1)}%` : "");
    title.title = `output ${head.name}`;
    box.append(title);
    const max = Math.max(...scores.map(Math.abs)) || 1;
    scores.forEach((v, i) => {
      const row = document.createElement("div");
      row.className = "bar" + (i === top ? " top" : "");
      row.innerHTML = '<span></span><span class="track"><span class="fill"></span></span><span></span>';
      row.children[0].textContent = label(i);
      row.querySelector(".fill").style.width = `${Math.max(0, 100 * v / max)}%`;
      row.children[2].textContent = isProb ? `${(100 * v).toFixed(1)}%` : v.toPrecision(3);
      box.append(row);
    });
  }
}

async function main() {
  try {
    await loadModel();
  } catch (err) {
    $("model-name").textContent = "no model";
    setStatus(err.message, true);
    return;
  }
  setupPad();
  setupDrawing();
  setupInputs();
  setupLayers();
  setupZoom();
  await loadSamples();
  window.explorer.ready = true;
  setStatus("ready: draw, upload or pick a digit");
}

main();
