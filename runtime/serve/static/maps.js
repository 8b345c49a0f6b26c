// featuremaps explorer, the maps: one collapsible grid per layer, drawn only when open and on
// screen, and one map enlarged. Loaded before explorer.js, whose `state` and `$` it uses when called.
"use strict";

const OPEN_LAYERS = 4;      // with more layers than this, only the first ones start expanded
const MAP_PIXELS = 48;      // target on-screen size of one map in a mosaic (integer upscaling)

// ---- feature maps: one collapsible section per layer, drawn only when open and on screen ------

const visible = new Set();
const observer = new IntersectionObserver((entries) => {
  for (const e of entries) e.isIntersecting ? visible.add(e.target) : visible.delete(e.target);
  renderVisible();
}, { rootMargin: "200px" });

function gridCols(c) {  // as viz.tiling.default_cols: 8 from 16 maps on, else ceil(sqrt)
  return c >= 16 ? 8 : Math.max(1, Math.ceil(Math.sqrt(c)));
}

function setupLayers() {
  const box = $("layers");
  $("layer-count").textContent = `${state.layers.length} layers`;
  state.layers.forEach((layer, i) => {
    const el = document.createElement("details");
    el.className = "layer";
    el.dataset.layer = layer.name;
    el.open = state.layers.length <= OPEN_LAYERS || i < OPEN_LAYERS;
    const summary = document.createElement("summary");
    summary.innerHTML = "<strong></strong> <span class=muted></span>";
    summary.children[0].textContent = layer.name;
    summary.children[1].textContent = `${layer.c} maps, ${layer.h}×${layer.w}`;
    const canvas = document.createElement("canvas");
    canvas.className = "mosaic";
    layer.cols = gridCols(layer.c);
    layer.rows = Math.ceil(layer.c / layer.cols);
    canvas.width = layer.cols * (layer.w + 1) - 1;
    canvas.height = layer.rows * (layer.h + 1) - 1;
    const up = Math.max(1, Math.round(MAP_PIXELS / Math.max(layer.h, layer.w)));
    canvas.style.width = `${canvas.width * up}px`;
    canvas.addEventListener("click", (e) => {
      const x = Math.floor(e.offsetX * canvas.width / canvas.clientWidth / (layer.w + 1));
      const y = Math.floor(e.offsetY * canvas.height / canvas.clientHeight / (layer.h + 1));
      const channel = Math.min(y, layer.rows - 1) * layer.cols + Math.min(x, layer.cols - 1);
      if (channel < layer.c) openZoom(layer, channel);
    });
    el.append(summary, canvas);
    el.addEventListener("toggle", renderVisible);
    Object.assign(layer, { el, canvas, summary });
    box.append(el);
    observer.observe(el);
  });
  $("norm").onchange = () => {
    for (const layer of state.layers) layer.dirty = true;
    renderVisible();
    if (state.zoom) renderZoom();
  };
  $("expand-all").onclick = () => state.layers.forEach((l) => { l.el.open = true; });
  $("collapse-all").onclick = () => state.layers.forEach((l) => { l.el.open = false; });
}

// Per-channel min and max of one layer's maps (NHWC, batch of one).
function ranges(layer) {
  const { data } = state.outputs[layer.name];
  const lo = new Float32Array(layer.c).fill(Infinity), hi = new Float32Array(layer.c).fill(-Infinity);
  for (let i = 0; i < data.length; i++) {
    const ch = i % layer.c, v = data[i];
    if (v < lo[ch]) lo[ch] = v;
    if (v > hi[ch]) hi[ch] = v;
  }
  return { lo, hi };
}

// The span each channel is scaled by: its own (per map) or the layer's (per layer); constant -> 0.
function scaling(layer) {
  const { lo, hi } = ranges(layer);
  if ($("norm").value === "layer") {
    const l = Math.min(...lo), h = Math.max(...hi);
    lo.fill(l);
    hi.fill(h);
  }
  return { lo, hi };
}

function renderVisible() {
  if (!state.outputs) return;
  for (const layer of state.layers) {
    if (layer.dirty && layer.el.open && visible.has(layer.el)) renderLayer(layer);
  }
}

function renderLayer(layer) {
  const { data } = state.outputs[layer.name];
  const { lo, hi } = scaling(layer);
  const { canvas, w, h, c, cols } = layer;
  const g = canvas.getContext("2d");
  const img = g.createImageData(canvas.width, canvas.height);
  img.data.fill(255);  // padding and empty cells: white
  for (let ch = 0; ch < c; ch++) {
    const x0 = (ch % cols) * (w + 1), y0 = Math.floor(ch / cols) * (h + 1);
    const span = hi[ch] - lo[ch], k = span > 0 ? 255 / span : 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = Math.round((data[(y * w + x) * c + ch] - lo[ch]) * k);
        const p = 4 * ((y0 + y) * canvas.width + x0 + x);
        img.data[p] = img.data[p + 1] = img.data[p + 2] = v;
      }
    }
  }
  g.putImageData(img, 0, 0);
  const all = ranges(layer);
  layer.summary.children[1].textContent =
    `${c} maps, ${h}×${w} · values ${fmt(Math.min(...all.lo))} … ${fmt(Math.max(...all.hi))}`;
  layer.dirty = false;
  layer.el.dataset.rendered = String(window.explorer.responses);
}

function fmt(v) {
  return Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 0.01) ? v.toExponential(2) : v.toFixed(3);
}

// ---- one map enlarged -------------------------------------------------------------------------

function openZoom(layer, channel) {
  state.zoom = { layer, channel };
  renderZoom();
  if (!$("zoom").open) $("zoom").showModal();
}

function renderZoom() {
  const { layer, channel } = state.zoom;
  const { data } = state.outputs[layer.name];
  const { lo, hi } = scaling(layer);
  const own = ranges(layer);
  const canvas = $("zoom-canvas");
  canvas.width = layer.w;
  canvas.height = layer.h;
  canvas.style.aspectRatio = `${layer.w} / ${layer.h}`;
  const g = canvas.getContext("2d"), img = g.createImageData(layer.w, layer.h);
  const span = hi[channel] - lo[channel], k = span > 0 ? 255 / span : 0;
  let sum = 0;
  for (let i = 0; i < layer.w * layer.h; i++) {
    const v = data[i * layer.c + channel];
    sum += v;
    img.data.fill(Math.round((v - lo[channel]) * k), 4 * i, 4 * i + 3);
    img.data[4 * i + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  $("zoom-title").textContent = `${layer.name} · channel ${channel} of ${layer.c}`;
  const norm = $("norm").value === "layer" ? "per layer" : "per map";
  $("zoom-info").textContent = `min ${fmt(own.lo[channel])} · max ${fmt(own.hi[channel])} · ` +
    `mean ${fmt(sum / (layer.w * layer.h))} · ${layer.h}×${layer.w} · normalised ${norm}`;
  $("zoom").dataset.channel = channel;
  $("zoom").dataset.layer = layer.name;
}

function setupZoom() {
  const step = (d) => {
    if (!state.zoom) return;
    const { layer, channel } = state.zoom;
    state.zoom.channel = (channel + d + layer.c) % layer.c;
    renderZoom();
  };
  $("zoom-prev").onclick = () => step(-1);
  $("zoom-next").onclick = () => step(1);
  $("zoom").addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft") step(-1);
    if (e.key === "ArrowRight") step(1);
  });
  $("zoom").addEventListener("close", () => { state.zoom = null; });
}
