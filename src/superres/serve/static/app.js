// The superres page: submit jobs, follow them (server-sent events), compare before and after.
// No framework and nothing from the network: the server ships this file.
"use strict";

const $ = (id) => document.getElementById(id);
const jobs = new Map();  // id -> {state, row}

function showError(text) {
  const li = document.createElement("li");
  li.textContent = text.split("\n")[0];
  $("errors").prepend(li);
  while ($("errors").children.length > 5) $("errors").lastChild.remove();
}

async function detail(response) {
  try { return (await response.json()).detail || response.statusText; } catch { return response.statusText; }
}

function size(params) {
  return params >= 1e6 ? `${(params / 1e6).toFixed(1)}M` : params ? `${Math.round(params / 1e3)}k` : "no weights";
}

async function loadModels() {
  const response = await fetch("v1/models");
  if (!response.ok) { showError(`models: ${await detail(response)}`); return; }
  const models = await response.json();
  // no model sent: the server picks its default by kind, as `superres upscale` and `superres video` do
  const image = models.find((m) => m.default), video = models.find((m) => m.video_default);
  const auto = document.createElement("option");
  auto.value = "";
  auto.textContent = `default: ${image ? image.name : "?"} for images, ${video ? video.name : "?"} for videos`;
  $("model").append(auto);
  for (const m of models) {
    if (!m.available) continue;
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = `${m.name} (${m.scale ? "x" + m.scale : "any scale"}, ${size(m.params)}): ${m.purpose}`
      + (m.video ? " [video only]" : "");
    $("model").append(option);
  }
}

async function submit(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  if ($("model").value) form.append("model", $("model").value);
  if ($("outscale").value) form.append("outscale", $("outscale").value);
  const response = await fetch("v1/jobs", { method: "POST", body: form });
  if (!response.ok) {
    const text = await detail(response);
    showError(text.startsWith(`${file.name}: `) ? text : `${file.name}: ${text}`);
    return;
  }
  update(await response.json(), true);
}

function submitAll(files) {
  for (const file of files) submit(file);  // the server queues them in the order they arrive
}

function row(state) {
  const li = document.createElement("li");
  li.className = "job";
  li.dataset.id = state.id;
  li.innerHTML = `<div class="line"><span class="name"></span><span class="status"></span></div>
    <progress max="1" value="0"></progress>
    <div class="info muted"></div>
    <div class="line actions"><button class="compare" hidden>Compare</button>
      <a class="button download" hidden download>Download</a><button class="cancel" hidden>Cancel</button></div>
    <div class="error"></div>`;
  li.querySelector(".cancel").onclick = async () => {
    const response = await fetch(`v1/jobs/${state.id}/cancel`, { method: "POST" });
    if (!response.ok) showError(`${state.name}: ${await detail(response)}`);
  };
  li.querySelector(".compare").onclick = () => compare(jobs.get(state.id).state);
  $("jobs").prepend(li);
  $("no-jobs").hidden = true;
  return li;
}

function update(state, mine = false) {
  let job = jobs.get(state.id);
  if (!job) { job = { state, row: row(state), mine }; jobs.set(state.id, job); }
  if (job.state.status === "done" && state.status !== "done") return;  // a late event
  const was = job.state.status;
  job.state = state;
  job.mine = job.mine || mine;
  const r = job.row;
  r.querySelector(".name").textContent = state.name;
  r.querySelector(".name").title = state.name;
  r.querySelector(".status").textContent = state.status === "running" && state.progress > 0
    ? `${Math.round(state.progress * 100)}%` : state.status;
  r.querySelector("progress").value = state.progress;
  const out = state.out_width ? ` → ${state.out_width}×${state.out_height}` : "";
  r.querySelector(".info").textContent = `${state.model}, ${state.width}×${state.height}${out}`;
  r.querySelector(".cancel").hidden = !["queued", "running"].includes(state.status);
  const done = state.status === "done";
  r.querySelector(".compare").hidden = !done || state.kind !== "image";
  const link = r.querySelector(".download");
  link.hidden = !done;
  if (done) { link.href = `v1/jobs/${state.id}/result`; link.download = state.result_name; }
  r.querySelector(".error").textContent = state.error || "";
  if (done && was !== "done" && state.kind === "image" && job.mine) compare(state);
}

function listen() {
  const events = new EventSource("v1/events");
  events.onmessage = (e) => update(JSON.parse(e.data));
}

// --- before/after comparison: both images share one box, zoom and pan; nearest-neighbour pixels ---

const view = { z: 1, tx: 0, ty: 0, split: 0.5, w: 0, h: 0 };

function layout() {
  const box = [`${view.w * view.z}px`, `${view.h * view.z}px`];
  for (const img of [$("before"), $("after")]) {
    img.style.width = box[0];
    img.style.height = box[1];
    img.style.transform = `translate(${view.tx}px, ${view.ty}px)`;
  }
  const x = view.split * $("viewport").clientWidth;
  $("after-clip").style.clipPath = `inset(0 0 0 ${x}px)`;
  $("divider").style.left = `${x}px`;
  $("zoom-level").textContent = `${Math.round(view.z * 100)}%`;
}

function zoomAt(factor, cx, cy) {
  const z = Math.min(64, Math.max(0.02, view.z * factor));
  view.tx = cx - (cx - view.tx) * (z / view.z);
  view.ty = cy - (cy - view.ty) * (z / view.z);
  view.z = z;
  layout();
}

function fit() {
  const vp = $("viewport");
  view.z = Math.min(vp.clientWidth / view.w, vp.clientHeight / view.h);
  view.tx = (vp.clientWidth - view.w * view.z) / 2;
  view.ty = (vp.clientHeight - view.h * view.z) / 2;
  layout();
}

function loaded(img) {
  return new Promise((resolve, reject) => {
    if (img.complete && img.naturalWidth) resolve();
    img.onload = () => resolve();
    img.onerror = () => reject(new Error("could not load the image"));
  });
}

async function compare(state) {
  for (const j of jobs.values()) j.row.classList.toggle("selected", j.state.id === state.id);
  $("compare").hidden = false;
  $("compare-title").textContent = state.name;
  $("compare-sizes").textContent = `${state.width}×${state.height} → ${state.out_width}×${state.out_height}`;
  $("download").href = `v1/jobs/${state.id}/result`;
  $("download").download = state.result_name;
  $("before").src = `v1/jobs/${state.id}/input`;
  $("after").src = `v1/jobs/${state.id}/result`;
  try {
    await Promise.all([loaded($("before")), loaded($("after"))]);
  } catch (e) {
    showError(`${state.name}: ${e.message}`);
    return;
  }
  view.w = $("after").naturalWidth;
  view.h = $("after").naturalHeight;
  view.split = 0.5;
  fit();
  $("compare").dataset.ready = state.id;
}

function setupCompare() {
  const vp = $("viewport");
  let drag = null;
  vp.addEventListener("pointerdown", (e) => {
    const onDivider = e.target.closest("#divider") !== null;
    drag = { divider: onDivider, x: e.clientX, y: e.clientY, tx: view.tx, ty: view.ty };
    vp.setPointerCapture(e.pointerId);
    if (!onDivider) vp.classList.add("panning");
  });
  vp.addEventListener("pointermove", (e) => {
    if (!drag) return;
    if (drag.divider) {
      const rect = vp.getBoundingClientRect();
      view.split = Math.min(1, Math.max(0, (e.clientX - rect.left) / rect.width));
    } else {
      view.tx = drag.tx + e.clientX - drag.x;
      view.ty = drag.ty + e.clientY - drag.y;
    }
    layout();
  });
  const end = () => { drag = null; vp.classList.remove("panning"); };
  vp.addEventListener("pointerup", end);
  vp.addEventListener("pointercancel", end);
  vp.addEventListener("wheel", (e) => {
    e.preventDefault();
    const rect = vp.getBoundingClientRect();
    zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - rect.left, e.clientY - rect.top);
  }, { passive: false });
  const centre = () => [vp.clientWidth / 2, vp.clientHeight / 2];
  $("zoom-in").onclick = () => zoomAt(2, ...centre());
  $("zoom-out").onclick = () => zoomAt(0.5, ...centre());
  $("zoom-1").onclick = () => zoomAt(1 / view.z, ...centre());
  $("zoom-fit").onclick = fit;
  window.addEventListener("resize", () => { if (view.w) layout(); });
}

function setupDrop() {
  const drop = $("drop");
  $("files").onchange = (e) => { submitAll(e.target.files); e.target.value = ""; };
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); submitAll(e.dataTransfer.files); });
}

async function start() {
  setupDrop();
  setupCompare();
  await loadModels();
  const response = await fetch("v1/jobs");
  if (response.ok) for (const state of await response.json()) update(state);
  listen();
  document.body.dataset.ready = "1";
}

start();
