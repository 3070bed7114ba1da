// cervkit mask editor view (anywidget ESM; vanilla JS, no build step, nothing fetched).
// The kernel (cervkit/editor/widget.py + state.py) owns the label map; this view shows it,
// previews strokes at once, sends edits as small messages and applies the patches that come back.
// View transform: screen (CSS px from the canvas' top-left) = offset + zoom * image (pixel-edge coords).

const TOOLS = [["brush", "Brush (b)"], ["eraser", "Eraser (e)"], ["polygon", "Polygon (p)"],
  ["fill", "Fill (g)"], ["box", "Box prompt: drag a box around a body, the model segments it (x)"], ["pan", "Pan (h)"]];
const KERNEL_KEYS = new Set(["z", "y", "b", "e", "p", "g", "x", "h", "[", "]", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function b64ToBytes(text) {
  const bin = atob(text.startsWith("data:") ? text.split(",", 2)[1] : text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// Decode base64 of an 8-bit grayscale PNG into a Uint8Array (w*h) of its values (exact: no colour management).
async function decodePng(text, w, h) {
  const blob = new Blob([b64ToBytes(text)], { type: "image/png" });
  const bmp = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = el("canvas", { width: w, height: h });
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  bmp.close && bmp.close();
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const out = new Uint8Array(w * h);
  for (let i = 0; i < out.length; i++) out[i] = rgba[4 * i];
  return out;
}

function rleDecode(text, n) {
  const out = new Uint8Array(n);
  let pos = 0;
  for (const run of text.split(",")) {
    const colon = run.indexOf(":");
    const value = +run.slice(0, colon), count = +run.slice(colon + 1);
    out.fill(value, pos, pos + count);
    pos += count;
  }
  return out;
}

function render({ model, el: host }) {
  const cleanups = [];
  const on = (target, type, fn, opts) => { target.addEventListener(type, fn, opts); cleanups.push(() => target.removeEventListener(type, fn, opts)); };
  const onModel = (name, fn) => { model.on(name, fn); cleanups.push(() => model.off(name, fn)); };
  // t0: the triggering event's timeStamp (same clock as performance.now), so latency counts from the user's action
  const send = (msg, t0 = performance.now()) => { pending = { t0, kind: msg.type === "key" ? msg.key : msg.type, version: model.get("version") }; model.send(msg); };
  const setModel = (name, value) => { model.set(name, value); model.save_changes(); };

  // ------------------------------------------------------------------ DOM
  const root = el("div", { className: "cervkit-editor", tabIndex: 0, "data-lm-suppress-shortcuts": "true" });
  const toolButtons = {};
  const tools = el("span", { className: "ck-group" }, TOOLS.map(([name, title]) => {
    const b = el("button", { textContent: name, title, className: "ck-tool", dataset: { tool: name } });
    b.onclick = () => setModel("tool", name);
    toolButtons[name] = b;
    return b;
  }));
  const size = el("input", { type: "range", min: 1, max: 64, step: 1, title: "Brush radius ([ ])", className: "ck-size" });
  size.oninput = () => setModel("brush_radius", +size.value);
  const sizeLabel = el("span", { className: "ck-value" });
  const select = el("select", { title: "Active vertebra (1-9)", className: "ck-label" });
  select.onchange = () => setModel("active_label", +select.value);
  const btn = (text, title, fn, cls = "") => { const b = el("button", { textContent: text, title, className: cls }); b.onclick = fn; return b; };
  const autoMode = el("select", { title: "Auto-segment: replace the map (undo brings your edits back) or fill only empty regions", className: "ck-auto-mode" },
    [el("option", { value: "replace", textContent: "replace" }), el("option", { value: "merge", textContent: "merge into empty" })]);
  const autoBtn = btn("auto-segment", "Auto-segment with the model (a)", () => send({ type: "auto", mode: autoMode.value }), "ck-auto");
  const modelSelect = el("select", { title: "Model for Auto-segment and box prompts: a shipped model or your run", className: "ck-model" });
  modelSelect.onchange = () => setModel("model_name", modelSelect.value);
  const namesBtn = btn("names", "Level names on the canvas (n)", () => setModel("show_names", !model.get("show_names")), "ck-names");
  const undoBtn = btn("↶ undo", "Undo (z)", () => send({ type: "undo" }), "ck-undo");
  const redoBtn = btn("↷ redo", "Redo (y)", () => send({ type: "redo" }), "ck-redo");
  const opacity = el("input", { type: "range", min: 0, max: 1, step: 0.05, title: "Label opacity", className: "ck-opacity" });
  opacity.oninput = () => setModel("opacity", +opacity.value);
  const wLow = el("input", { type: "range", min: 0, max: 1, step: 0.01, title: "Window low", className: "ck-wlow" });
  const wHigh = el("input", { type: "range", min: 0, max: 1, step: 0.01, title: "Window high", className: "ck-whigh" });
  const onWindow = () => {
    let lo = +wLow.value, hi = +wHigh.value;
    if (hi <= lo) hi = Math.min(1, lo + 0.01);
    setModel("window", [lo, hi]);
  };
  wLow.oninput = onWindow; wHigh.oninput = onWindow;

  const row1 = el("div", { className: "ck-toolbar" }, [
    tools, el("span", { className: "ck-group" }, ["size ", size, sizeLabel]),
    el("span", { className: "ck-group" }, ["vertebra ", select,
      btn("+", "Add a vertebra (next free label)", () => send({ type: "add" }), "ck-add"),
      btn("−", "Delete the active vertebra", () => send({ type: "delete" }), "ck-delete")]),
    el("span", { className: "ck-group" }, [undoBtn, redoBtn]),
    el("span", { className: "ck-group" }, [autoBtn, autoMode, "model ", modelSelect]),
  ]);
  const row2 = el("div", { className: "ck-toolbar" }, [
    el("span", { className: "ck-group" }, [
      btn("fill holes", "Fill holes", () => send({ type: "clean", op: "fill_holes" }), "ck-clean"),
      btn("remove islands", "Keep the largest piece of each vertebra", () => send({ type: "clean", op: "remove_islands" }), "ck-clean"),
      btn("smooth", "Smooth outlines", () => send({ type: "clean", op: "smooth" }), "ck-clean")]),
    el("span", { className: "ck-group" }, [
      btn("+", "Zoom in", () => zoomAt(view.cw / 2, view.ch / 2, 1.25), "ck-zoom-in"),
      btn("−", "Zoom out", () => zoomAt(view.cw / 2, view.ch / 2, 0.8), "ck-zoom-out"),
      btn("fit", "Fit (f)", () => fit(), "ck-fit")]),
    el("span", { className: "ck-group" }, [namesBtn, "opacity ", opacity]),
    el("span", { className: "ck-group" }, ["window ", wLow, wHigh]),
  ]);
  const main = el("canvas", { className: "ck-main" });
  const overlay = el("canvas", { className: "ck-overlay" });
  const stage = el("div", { className: "ck-stage" }, [main, overlay]);
  const status = el("div", { className: "ck-status" });
  root.append(row1, row2, stage, status);
  host.append(root);

  // ---------------------------------------------------------------- state
  let [H, W] = model.get("shape");
  let gray = new Uint8Array(W * H), labels = new Uint8Array(W * H);
  let imgCanvas = el("canvas", { width: W, height: H }), lblCanvas = el("canvas", { width: W, height: H });
  let lblData = new ImageData(Math.max(W, 1), Math.max(H, 1));
  const view = { zoom: 1, ox: 0, oy: 0, cw: 0, ch: 0, fitted: false };
  let preview = null;  // the last stroke, drawn until the kernel's patch for it arrives
  let pending = null, lastLatency = null, drag = null, polygon = [], spaceDown = false, hover = null;
  let chain = Promise.resolve();
  // Local mirror of the kernel's recent undo steps, so z / y show at once (the kernel stays the authority:
  // its undo patch follows and overwrites the same pixels). steps[i] = {bbox, before, after}; `local` counts
  // undo/redo done here whose kernel patch has not arrived yet.
  const MAX_LOCAL_STEPS = 64;
  let steps = [], stepPos = 0, local = 0, localT0 = 0;
  const enqueue = (fn) => { chain = chain.then(fn).catch((err) => { console.error("cervkit editor:", err); }); };

  function resizeData() {
    [H, W] = model.get("shape");
    gray = new Uint8Array(W * H); labels = new Uint8Array(W * H);
    imgCanvas = el("canvas", { width: W, height: H }); lblCanvas = el("canvas", { width: W, height: H });
    lblData = new ImageData(Math.max(W, 1), Math.max(H, 1));
    view.fitted = false;
  }

  function paintImage() {
    const [lo, hi] = model.get("window");
    const lut = new Uint8ClampedArray(256);
    const span = Math.max(hi - lo, 1e-6);
    for (let v = 0; v < 256; v++) lut[v] = Math.round(Math.min(Math.max((v / 255 - lo) / span, 0), 1) * 255);
    const data = new ImageData(W, H), px = data.data;
    for (let i = 0; i < gray.length; i++) { const g = lut[gray[i]]; px[4 * i] = g; px[4 * i + 1] = g; px[4 * i + 2] = g; px[4 * i + 3] = 255; }
    imgCanvas.getContext("2d").putImageData(data, 0, 0);
  }

  // Each body's centre (mean pixel), for its name on the canvas; recomputed when the labels change.
  let centres = null;
  function bodyCentres() {
    if (centres) return centres;
    const sx = new Float64Array(256), sy = new Float64Array(256), n = new Float64Array(256);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) { const v = labels[y * W + x]; if (v) { sx[v] += x; sy[v] += y; n[v] += 1; } }
    centres = [];
    for (let v = 1; v < 256; v++) if (n[v]) centres.push([v, sx[v] / n[v] + 0.5, sy[v] / n[v] + 0.5]);
    return centres;
  }
  function paintLabels(x0 = 0, y0 = 0, x1 = W, y1 = H) {
    centres = null;
    const colors = model.get("colors"), px = lblData.data;
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const i = y * W + x, v = labels[i], c = v ? colors[(v - 1) % colors.length] : null;
        px[4 * i] = c ? c[0] : 0; px[4 * i + 1] = c ? c[1] : 0; px[4 * i + 2] = c ? c[2] : 0; px[4 * i + 3] = c ? 255 : 0;
      }
    }
    lblCanvas.getContext("2d").putImageData(lblData, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }

  // ----------------------------------------------------------------- view
  function setAttrs() {
    Object.assign(root.dataset, { zoom: view.zoom, ox: view.ox, oy: view.oy, imageWidth: W, imageHeight: H });
  }
  function draw() {
    const dpr = window.devicePixelRatio || 1, ctx = main.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, main.width, main.height);
    ctx.imageSmoothingEnabled = false;
    ctx.setTransform(dpr * view.zoom, 0, 0, dpr * view.zoom, dpr * view.ox, dpr * view.oy);
    ctx.drawImage(imgCanvas, 0, 0);
    ctx.globalAlpha = model.get("opacity");
    ctx.drawImage(lblCanvas, 0, 0);
    ctx.globalAlpha = 1;
    setAttrs();
    drawOverlay();
  }
  function drawOverlay() {
    const dpr = window.devicePixelRatio || 1, ctx = overlay.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const c = model.get("colors")[(model.get("active_label") - 1) % 255] || [255, 255, 255];
    const r = model.get("brush_radius") * view.zoom;
    const toScreen = ([x, y]) => [view.ox + x * view.zoom, view.oy + y * view.zoom];
    for (const s of [preview, drag]) {
      if (!s || s.kind !== "stroke" || !s.points.length) continue;
      ctx.strokeStyle = s.erase ? "rgba(0,0,0,0.55)" : `rgba(${c[0]},${c[1]},${c[2]},0.7)`;
      ctx.fillStyle = ctx.strokeStyle;
      ctx.lineWidth = 2 * r; ctx.lineCap = "round"; ctx.lineJoin = "round";
      ctx.beginPath();
      s.points.forEach((p, i) => { const [sx, sy] = toScreen(p); i ? ctx.lineTo(sx, sy) : ctx.moveTo(sx, sy); });
      if (s.points.length === 1) { const [sx, sy] = toScreen(s.points[0]); ctx.arc(sx, sy, r, 0, 2 * Math.PI); ctx.fill(); } else ctx.stroke();
    }
    if (polygon.length) {
      ctx.strokeStyle = `rgb(${c[0]},${c[1]},${c[2]})`; ctx.lineWidth = 1.5;
      ctx.beginPath();
      polygon.forEach((p, i) => { const [sx, sy] = toScreen(p); i ? ctx.lineTo(sx, sy) : ctx.moveTo(sx, sy); });
      if (hover) { const [sx, sy] = toScreen(hover); ctx.lineTo(sx, sy); }
      ctx.stroke();
    }
    if (drag && drag.kind === "box") {
      const [ax, ay] = toScreen(drag.start), [bx, by] = toScreen(drag.end);
      ctx.strokeStyle = "rgba(255,255,0,0.9)"; ctx.lineWidth = 1.5; ctx.setLineDash([5, 3]);
      ctx.strokeRect(Math.min(ax, bx), Math.min(ay, by), Math.abs(bx - ax), Math.abs(by - ay));
      ctx.setLineDash([]);
    }
    if (model.get("show_names")) {
      const names = model.get("level_names") || {}, drawn = [];
      ctx.font = "bold 13px sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
      ctx.lineWidth = 3; ctx.strokeStyle = "rgba(0,0,0,0.85)"; ctx.fillStyle = "#fff";
      for (const [v, x, y] of bodyCentres()) {
        const text = names[v] || String(v), [sx, sy] = toScreen([x, y]);
        ctx.strokeText(text, sx, sy); ctx.fillText(text, sx, sy);
        drawn.push([v, text, +x.toFixed(1), +y.toFixed(1)]);
      }
      root.dataset.names = JSON.stringify(drawn);
    } else root.dataset.names = "[]";
    const tool = model.get("tool");
    if (hover && (tool === "brush" || tool === "eraser")) {
      const [sx, sy] = toScreen(hover);
      ctx.strokeStyle = "rgba(255,255,255,0.8)"; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.arc(sx, sy, r, 0, 2 * Math.PI); ctx.stroke();
    }
  }
  function fit() {
    if (!W || !H || !view.cw) return;
    view.zoom = Math.min(view.cw / W, view.ch / H);
    view.ox = (view.cw - W * view.zoom) / 2; view.oy = (view.ch - H * view.zoom) / 2;
    view.fitted = true;
    draw();
  }
  function zoomAt(sx, sy, factor) {
    const zoom = Math.min(Math.max(view.zoom * factor, 0.05), 64);
    view.ox = sx - (sx - view.ox) * zoom / view.zoom; view.oy = sy - (sy - view.oy) * zoom / view.zoom;
    view.zoom = zoom;
    draw();
  }
  function resize() {
    const dpr = window.devicePixelRatio || 1;
    const cw = Math.max(stage.clientWidth, 50), ch = model.get("view_height");
    if (cw === view.cw && ch === view.ch) return;
    view.cw = cw; view.ch = ch;
    stage.style.height = ch + "px";
    for (const c of [main, overlay]) { c.width = Math.round(cw * dpr); c.height = Math.round(ch * dpr); c.style.width = cw + "px"; c.style.height = ch + "px"; }
    if (!view.fitted) fit(); else draw();
  }
  const observer = new ResizeObserver(() => resize());
  observer.observe(stage);
  cleanups.push(() => observer.disconnect());

  // ---------------------------------------------------------------- mouse
  const toImage = (e) => {
    const rect = overlay.getBoundingClientRect();
    return [(e.clientX - rect.left - view.ox) / view.zoom, (e.clientY - rect.top - view.oy) / view.zoom];
  };
  on(overlay, "pointerdown", (e) => {
    root.focus({ preventScroll: true });
    const tool = model.get("tool"), p = toImage(e);
    if (e.button === 1 || (e.button === 0 && (spaceDown || tool === "pan"))) {
      drag = { kind: "pan", x: e.clientX, y: e.clientY, ox: view.ox, oy: view.oy };
    } else if (e.button !== 0) {
      return;
    } else if (e.shiftKey && tool !== "polygon") {  // shift+click in a body: re-segment it from a grown box
      if (p[0] >= 0 && p[1] >= 0 && p[0] < W && p[1] < H) send({ type: "refine", x: p[0], y: p[1] }, e.timeStamp);
      return;
    } else if (tool === "box") {
      drag = { kind: "box", start: p, end: p };
    } else if (tool === "brush" || tool === "eraser") {
      drag = { kind: "stroke", erase: tool === "eraser", points: [p] };
    } else if (tool === "polygon") {
      polygon.push(p);
    } else if (tool === "fill") {
      if (p[0] >= 0 && p[1] >= 0 && p[0] < W && p[1] < H) send({ type: "flood", x: p[0], y: p[1] }, e.timeStamp);
    }
    overlay.setPointerCapture(e.pointerId);
    e.preventDefault();
    drawOverlay();
  });
  on(overlay, "pointermove", (e) => {
    hover = toImage(e);
    if (drag && drag.kind === "pan") {
      view.ox = drag.ox + e.clientX - drag.x; view.oy = drag.oy + e.clientY - drag.y;
      draw();
      return;
    }
    if (drag && drag.kind === "box") drag.end = hover;
    if (drag && drag.kind === "stroke") {
      const last = drag.points[drag.points.length - 1];
      if (last[0] !== hover[0] || last[1] !== hover[1]) drag.points.push(hover);
    }
    drawOverlay();
  });
  const finish = (e) => {
    if (!drag) return;
    const done = drag;
    drag = null;
    if (done.kind === "box") {
      const [x0, y0] = done.start, [x1, y1] = toImage(e);
      const box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
      root.dataset.lastBox = JSON.stringify(box);
      if (box[2] - box[0] >= 2 && box[3] - box[1] >= 2) send({ type: "box", x0: box[0], y0: box[1], x1: box[2], y1: box[3] }, e.timeStamp);
    }
    if (done.kind === "stroke") {
      send({ type: "stroke", points: done.points, erase: done.erase,
        label: model.get("active_label"), radius: model.get("brush_radius") }, e.timeStamp);
      done.version = model.get("version");
      root.dataset.lastStroke = JSON.stringify(done.points);
      preview = done;
    }
    drawOverlay();
  };
  on(overlay, "pointerup", finish);
  on(overlay, "pointercancel", finish);
  on(overlay, "pointerleave", () => { hover = null; drawOverlay(); });
  on(overlay, "dblclick", (e) => { if (model.get("tool") === "polygon") { e.preventDefault(); closePolygon(); } });
  on(overlay, "wheel", (e) => {
    e.preventDefault();
    const rect = overlay.getBoundingClientRect();
    zoomAt(e.clientX - rect.left, e.clientY - rect.top, Math.exp(-e.deltaY * 0.0015));
  }, { passive: false });
  on(overlay, "contextmenu", (e) => e.preventDefault());
  function closePolygon() {
    // a double-click adds the same vertex twice: drop near-duplicates
    const pts = polygon.filter((p, i) => i === 0 || Math.hypot(p[0] - polygon[i - 1][0], p[1] - polygon[i - 1][1]) > 1e-6);
    polygon = [];
    if (pts.length >= 3) { send({ type: "polygon", points: pts }); root.dataset.lastPolygon = JSON.stringify(pts); }
    drawOverlay();
  }

  // ------------------------------------------------------------- keyboard
  on(root, "keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    let key = e.key;
    if (key === " ") { spaceDown = true; e.preventDefault(); e.stopPropagation(); return; }
    if (key === "Enter" && polygon.length) closePolygon();
    else if (key === "Escape") { polygon = []; drawOverlay(); }
    else if (key.toLowerCase() === "f" && !e.ctrlKey && !e.metaKey) fit();
    else if (key.toLowerCase() === "n" && !e.ctrlKey && !e.metaKey) setModel("show_names", !model.get("show_names"));
    else if (key.toLowerCase() === "a" && !e.ctrlKey && !e.metaKey) send({ type: "auto", mode: autoMode.value }, e.timeStamp);
    else if (KERNEL_KEYS.has(key.toLowerCase())) {
      if (e.shiftKey && key.toLowerCase() === "z") key = "shift+z";
      if (e.ctrlKey || e.metaKey) key = "ctrl+" + key;
      const bare = key.replace(/^ctrl\+/, "").toLowerCase();  // z undo; y, shift+z redo (keys.py)
      const shown = (bare === "z" || bare === "y" || bare === "shift+z") && localHistory(bare === "z", e.timeStamp);
      if (shown) model.send({ type: "key", key });  // the kernel's patch confirms; no round trip to wait for
      else send({ type: "key", key }, e.timeStamp);
    } else return;
    e.preventDefault();
    e.stopPropagation();
  });
  on(root, "keyup", (e) => { if (e.key === " ") spaceDown = false; });

  // ---------------------------------------------------------- model sync
  function syncControls() {
    const tool = model.get("tool");
    for (const [name, b] of Object.entries(toolButtons)) b.classList.toggle("ck-active", name === tool);
    size.value = model.get("brush_radius"); sizeLabel.textContent = String(model.get("brush_radius"));
    opacity.value = model.get("opacity");
    const [lo, hi] = model.get("window"); wLow.value = lo; wHigh.value = hi;
    undoBtn.disabled = !model.get("can_undo"); redoBtn.disabled = !model.get("can_redo");
    const names = model.get("level_names") || {}, colors = model.get("colors"), active = model.get("active_label");
    const n = Math.max(model.get("n_labels"), active, 1);
    select.replaceChildren(...Array.from({ length: n }, (_, i) => {
      const k = i + 1, c = colors[i % colors.length];
      return el("option", { value: k, textContent: names[k] ? `${k} · ${names[k]}` : String(k), style: `color: rgb(${c[0]},${c[1]},${c[2]})` });
    }));
    select.value = String(active);
    const choices = model.get("model_choices") || [], chosen = model.get("model_name");
    modelSelect.replaceChildren(...choices.map((c) => el("option", { value: c, textContent: c.split(/[\\/]/).filter(Boolean).pop() || c, title: c })));
    modelSelect.value = chosen;
    namesBtn.classList.toggle("ck-active", !!model.get("show_names"));
    const latency = lastLatency === null ? "" : ` · round trip ${lastLatency.toFixed(0)} ms`;
    status.textContent = model.get("status") + latency;
    Object.assign(root.dataset, { tool, activeLabel: active, brushRadius: model.get("brush_radius"),
      opacity: model.get("opacity"), window: model.get("window").join(","), model: chosen,
      showNames: model.get("show_names") ? "1" : "0" });
  }
  const crop = ([x0, y0, x1, y1]) => {
    const w = x1 - x0, out = new Uint8Array(w * (y1 - y0));
    for (let y = y0; y < y1; y++) out.set(labels.subarray(y * W + x0, y * W + x1), (y - y0) * w);
    return out;
  };
  const sameBytes = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
  function writeCrop([x0, y0, x1, y1], vals) {
    const w = x1 - x0;
    for (let y = y0; y < y1; y++) labels.set(vals.subarray((y - y0) * w, (y - y0 + 1) * w), y * W + x0);
    paintLabels(x0, y0, x1, y1);
  }
  // z / y at once from the local steps; false when that is not safe (reply outstanding, steps unknown)
  function localHistory(undo, t0) {
    if (pending || preview || drag) return false;
    if (undo ? !(model.get("can_undo") && stepPos > 0) : !(model.get("can_redo") && stepPos < steps.length)) return false;
    const step = steps[undo ? stepPos - 1 : stepPos];
    if (!sameBytes(crop(step.bbox), undo ? step.after : step.before)) { steps = []; stepPos = 0; return false; }
    writeCrop(step.bbox, undo ? step.before : step.after);
    stepPos += undo ? -1 : 1;
    local += 1;
    draw();
    // latency of what the user sees (drawn; next frame) and, in recordStep, of the kernel's confirmation
    const count = String(+(root.dataset.localCount || 0) + 1);
    Object.assign(root.dataset, { localMs: (performance.now() - t0).toFixed(1), localCount: count });
    requestAnimationFrame(() => { Object.assign(root.dataset, { localFrameMs: (performance.now() - t0).toFixed(1), localFrameCount: count }); });
    localT0 = t0;
    return true;
  }
  function recordStep(p, bbox, before) {
    if (p.reason === "undo" || p.reason === "redo") {
      if (local > 0) {  // the kernel confirms a local step
        local -= 1;
        if (local === 0) root.dataset.confirmMs = (performance.now() - localT0).toFixed(1);
      }
      else { steps = []; stepPos = 0; }  // undone elsewhere (e.g. from Python): forget the mirror
      return;
    }
    steps.splice(stepPos);
    steps.push({ bbox, before, after: crop(bbox) });
    if (steps.length > MAX_LOCAL_STEPS) steps.shift();
    stepPos = steps.length;
  }
  function applyPatch(p) {
    const [x0, y0, x1, y1] = p.bbox, w = x1 - x0, h = y1 - y0;
    if (!p.shape || p.shape[0] !== H || p.shape[1] !== W) return Promise.resolve();
    const write = (vals) => {
      const before = crop(p.bbox);
      for (let y = 0; y < h; y++) labels.set(vals.subarray(y * w, (y + 1) * w), (y0 + y) * W + x0);
      paintLabels(x0, y0, x1, y1);
      recordStep(p, p.bbox, before);
    };
    if (p.encoding === "rle") { write(rleDecode(p.data, w * h)); return Promise.resolve(); }
    return decodePng(p.data, w, h).then(write);
  }
  function applied() {
    const version = model.get("version");
    if (preview && version > preview.version) preview = null;
    draw();
    if (pending && version > pending.version) {
      // drawn: the canvases hold the new pixels; frameMs adds the wait for the next animation frame
      const done = pending;
      lastLatency = performance.now() - done.t0;
      Object.assign(root.dataset, { latencyMs: lastLatency.toFixed(1), latencyKind: done.kind, latencyVersion: version });
      requestAnimationFrame(() => { Object.assign(root.dataset, { frameMs: (performance.now() - done.t0).toFixed(1), frameVersion: version }); });
      pending = null;
    }
    root.dataset.version = version;
    syncControls();
  }
  const loadImage = () => enqueue(async () => {
    const text = model.get("image_png");
    if (!text) return;
    gray = await decodePng(text, W, H);
    paintImage();
    draw();
  });
  const loadLabels = (text = model.get("labels_png")) => enqueue(async () => {
    if (!text) return;
    labels = await decodePng(text, W, H);
    steps = []; stepPos = 0; local = 0;  // a whole new map: the local steps no longer apply
    paintLabels();
    draw();
    root.dataset.ready = "1";
  });
  onModel("change:shape", () => { resizeData(); resize(); fit(); });
  onModel("change:image_png", loadImage);
  onModel("change:labels_png", () => loadLabels());
  // the kernel's whole map when it may differ from ours although labels_png did not change (widget.py)
  onModel("msg:custom", (msg) => { if (msg && msg.type === "labels") loadLabels(msg.png); });
  onModel("change:patch", () => {
    const p = model.get("patch");
    if (pending) root.dataset.receivedMs = (performance.now() - pending.t0).toFixed(1);  // the reply's arrival
    enqueue(() => applyPatch(p));
  });
  onModel("change:window", () => { paintImage(); draw(); });
  onModel("change:opacity", () => draw());
  onModel("change:show_names", () => drawOverlay());
  onModel("change:level_names", () => drawOverlay());
  onModel("change:view_height", () => resize());
  onModel("change", () => enqueue(applied));

  syncControls();
  loadImage();
  loadLabels();
  enqueue(() => { resize(); applied(); model.send({ type: "sync" }); });
  return () => { for (const fn of cleanups) fn(); };
}

export default { render };
