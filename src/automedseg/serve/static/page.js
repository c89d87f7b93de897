// The review page: upload, follow the job, show the image with its masks (NiiVue), fix them
// with a box, delete objects, undo, download. Talks only to this server's /api.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const state = { file: null, job: null, tasks: {}, depth: 1, drawing: false, nv: null };

function withToken(url) {
  return token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url;
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response.headers.get("content-type")?.includes("json") ? response.json() : response;
}

function showError(error) { $("error").textContent = error ? String(error.message || error) : ""; }
function say(text) { $("status").textContent = text; }

async function loadTasks() {
  state.tasks = await api("/api/tasks");
  $("task").innerHTML = "";
  for (const name of Object.keys(state.tasks)) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    $("task").append(option);
  }
}

function chooseFile(file) {
  state.file = file;
  $("upload").disabled = !file;
  say(file ? `${file.name} (${(file.size / 1e6).toFixed(1)} MB)` : "");
  showError(null);
}

async function upload() {
  showError(null);
  const form = new FormData();
  form.append("file", state.file);
  form.append("task", $("task").value);
  $("upload").disabled = true;
  try {
    const { id } = await api("/api/jobs", { method: "POST", body: form });
    state.job = id;
    await follow(id);
  } catch (error) {
    showError(error);
    say("");
  } finally {
    $("upload").disabled = !state.file;
  }
}

async function follow(id) {
  $("progress").hidden = false;
  for (;;) {
    const job = await api(`/api/jobs/${id}`);
    $("progress").value = job.progress;
    say(`job ${id}: ${job.status}`);
    if (job.status === "failed") { $("progress").hidden = true; throw new Error(job.error); }
    if (job.status === "done") break;
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
  $("progress").hidden = true;
  await showJob(id);
}

function labelColormap(task) {
  const info = state.tasks[task] || { labels: {}, colours: {} };
  const values = Object.keys(info.labels).map(Number);
  const top = Math.max(1, ...values);
  const map = { R: [], G: [], B: [], A: [], I: [], labels: [] };
  for (let v = 0; v <= top; v++) {
    const hex = info.colours[String(v)] || "#ffff00";
    map.R.push(parseInt(hex.slice(1, 3), 16));
    map.G.push(parseInt(hex.slice(3, 5), 16));
    map.B.push(parseInt(hex.slice(5, 7), 16));
    map.A.push(v === 0 ? 0 : 255);
    map.I.push(v);
    map.labels.push(v === 0 ? "" : info.labels[String(v)] || `label ${v}`);
  }
  return map;
}

async function showJob(id) {
  const job = await api(`/api/jobs/${id}`);
  state.task = job.task;
  const nv = state.nv;
  const base = `/api/jobs/${id}/view`;
  await nv.loadVolumes([
    { url: withToken(`${base}/image.nii.gz`), name: "image.nii.gz" },
    { url: withToken(`${base}/labels.nii.gz`), name: "labels.nii.gz", opacity: 0.5 },
  ]);
  nv.volumes[1].setColormapLabel(labelColormap(job.task));
  nv.setOpacity(1, 0.5);
  state.depth = nv.volumes[0].dims[3] || 1;
  nv.setCrosshairWidth(state.depth > 1 ? 1 : 0);
  $("slice-row").hidden = state.depth < 2;
  $("slice").max = state.depth - 1;
  $("slice").value = Math.floor(state.depth / 2);
  setView();
  fillLabels(job.task);
  $("review").hidden = false;
  await refreshObjects();
}

async function reloadLabels() {
  const nv = state.nv;
  if (nv.volumes.length > 1) nv.removeVolume(nv.volumes[1]);
  await nv.addVolumeFromUrl({
    url: withToken(`/api/jobs/${state.job}/view/labels.nii.gz?v=${Date.now()}`),
    name: "labels.nii.gz", opacity: 0.5,
  });
  nv.volumes[1].setColormapLabel(labelColormap(state.task));
  nv.setOpacity(1, 0.5);
  await refreshObjects();
}

function fillLabels(task) {
  const info = state.tasks[task] || { labels: {} };
  $("box-label").innerHTML = "";
  $("legend").innerHTML = "";
  for (const [value, name] of Object.entries(info.labels)) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = `${value}: ${name}`;
    $("box-label").append(option);
    const item = document.createElement("div");
    item.innerHTML = `<span class="swatch" style="background:${info.colours[value]}"></span>`;
    item.append(`${value}: ${name}`);
    $("legend").append(item);
  }
}

function sizeOf(object) {
  if (object.volume_ml !== undefined) return `${object.volume_ml} mL`;
  if (object.area_mm2 !== undefined) return `${object.area_mm2} mm²`;
  if (object.area_px !== undefined) return `${object.area_px} px`;
  if (object.voxels !== undefined) return `${object.voxels} voxels`;
  return "";
}

async function refreshObjects() {
  const result = await api(`/api/jobs/${state.job}/result?v=${Date.now()}`);
  const info = state.tasks[state.task] || { colours: {} };
  const body = $("objects").querySelector("tbody");
  body.innerHTML = "";
  result.objects.forEach((object, index) => {
    const row = document.createElement("tr");
    const colour = info.colours[String(object.label)] || "#ff0";
    row.innerHTML = `<td>${index + 1}</td>` +
      `<td><span class="swatch" style="background:${colour}"></span>${object.label_name}</td>` +
      `<td>${object.score.toFixed(3)}</td><td>${sizeOf(object)}</td>`;
    const cell = document.createElement("td");
    const remove = document.createElement("button");
    remove.textContent = "delete";
    remove.className = "delete";
    remove.onclick = () => edit(() => api(`/api/jobs/${state.job}/objects/${index + 1}`,
                                          { method: "DELETE" }));
    cell.append(remove);
    row.append(cell);
    body.append(row);
  });
  say(`job ${state.job}: ${result.objects.length} object(s)`);
  for (const [id, part] of [["get-mask", "mask"], ["get-result", "result"],
                            ["get-overlay", "overlay"], ["get-dicom-seg", "dicom-seg"]]) {
    $(id).href = withToken(`/api/jobs/${state.job}/${part}`);
  }
  const source = String(result.source || "");
  $("get-dicom-seg").hidden = !(source.endsWith(".dcm") || source.endsWith("input"));
}

async function edit(change) {
  showError(null);
  try {
    await change();
    await reloadLabels();
  } catch (error) {
    showError(error);
  }
}

function setView() {
  const nv = state.nv;
  const multi = state.depth > 1 && $("view").value === "multi";
  nv.setSliceType(multi ? nv.sliceTypeMultiplanar : nv.sliceTypeAxial);
  goToSlice();
}

function goToSlice() {
  const z = Number($("slice").value);
  $("slice-number").textContent = `${z} / ${state.depth - 1}`;
  if (state.depth > 1) {
    state.nv.moveCrosshairInVox(0, 0, z - Math.round(state.nv.frac2vox(state.nv.scene.crosshairPos)[2]));
  }
}

function setDrawing(on) {
  state.drawing = on;
  $("draw").setAttribute("aria-pressed", String(on));
  const modes = niivue.DRAG_MODE;
  state.nv.setMouseEventConfig(on
    ? { leftButton: { primary: modes.callbackOnly }, rightButton: modes.crosshair, centerButton: modes.pan }
    : { leftButton: { primary: modes.crosshair }, rightButton: modes.contrast, centerButton: modes.pan });
}

function onDragRelease(info) {
  if (!state.drawing || !state.job) return;
  if (state.depth > 1 && info.axCorSag !== state.nv.sliceTypeAxial) {
    showError("draw the box on the axial view");
    return;
  }
  const [a, b] = [info.voxStart, info.voxEnd];
  const box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  if (box[2] - box[0] < 2 || box[3] - box[1] < 2) return;
  const body = { box, label: Number($("box-label").value) };
  if (state.depth > 1) body.plane = Math.round(a[2]);
  edit(() => api(`/api/jobs/${state.job}/boxes`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }));
}

async function start() {
  const nv = new niivue.Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: false, isColorbar: false });
  await nv.attachTo("canvas");
  nv.onDragRelease = onDragRelease;
  nv.onLocationChange = (location) => {
    if (state.depth > 1 && location && location.vox) {
      $("slice").value = Math.round(location.vox[2]);
      $("slice-number").textContent = `${$("slice").value} / ${state.depth - 1}`;
    }
  };
  state.nv = nv;
  $("file").onchange = (event) => chooseFile(event.target.files[0] || null);
  const drop = $("drop");
  drop.ondragover = (event) => { event.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    chooseFile(event.dataTransfer.files[0] || null);
  };
  $("upload").onclick = upload;
  $("draw").onclick = () => setDrawing(!state.drawing);
  $("undo").onclick = () => edit(() => api(`/api/jobs/${state.job}/undo`, { method: "POST" }));
  $("slice").oninput = goToSlice;
  $("view").onchange = setView;
  try {
    await loadTasks();
    const job = new URLSearchParams(location.search).get("job");
    if (job) { state.job = job; await follow(job); }
  } catch (error) {
    showError(error);
  }
}

start();
