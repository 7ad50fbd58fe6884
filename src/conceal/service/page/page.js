// The page: pick a photo, a model and its attributes, POST /v1/apply, show before / after, offer the PNG.
"use strict";

const $ = (id) => document.getElementById(id);
const HINTS = {
  concealer: "Re-renders each face with the attributes you pick; unspecified ones are left to the model.",
  anonymizer: "Replaces each face with a grey reconstruction that keeps what face verification needs and hides gender.",
  masker: "Keeps only the pixels a task needs and blanks the rest of each face.",
};
let models = [];
let resultUrl = null;

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

// One control per attribute: a slider (+ "unspecified") for continuous ones, a select for the others.
function attributeControl(attr) {
  const row = document.createElement("div");
  row.className = "attr";
  const label = document.createElement("label");
  label.textContent = attr.name;
  label.htmlFor = `attr-${attr.name}`;
  row.append(label);
  if (attr.kind === "continuous") {
    const [lo, hi] = attr.range;
    const slider = Object.assign(document.createElement("input"), {
      type: "range", id: `attr-${attr.name}`, min: lo, max: hi, step: 1, value: Math.round((lo + hi) / 3), disabled: true,
    });
    const shown = Object.assign(document.createElement("output"), { id: `attr-${attr.name}-value`, textContent: "—" });
    const any = Object.assign(document.createElement("input"), { type: "checkbox", id: `attr-${attr.name}-unspecified`, checked: true });
    const anyLabel = document.createElement("label");
    anyLabel.className = "check inline";
    anyLabel.append(any, " unspecified");
    const sync = () => { slider.disabled = any.checked; shown.textContent = any.checked ? "—" : slider.value; };
    slider.addEventListener("input", sync);
    any.addEventListener("change", sync);
    row.append(slider, shown, anyLabel);
    row.value = () => (any.checked ? null : slider.value);
  } else {
    const select = document.createElement("select");
    select.id = `attr-${attr.name}`;
    select.append(option("unspecified", "unspecified"), ...attr.classes.map((c) => option(c, c)));
    row.append(select);
    row.value = () => (select.value === "unspecified" ? null : select.value);
  }
  row.dataset.name = attr.name;
  return row;
}

function showModel() {
  const model = models.find((m) => m.name === $("model").value);
  $("model-hint").textContent = `${model.method}: ${HINTS[model.method] || ""}`;
  const controls = $("attribute-controls");
  controls.replaceChildren(...model.attributes.map(attributeControl));
  $("attributes").hidden = model.attributes.length === 0;
}

function asText() {
  const pairs = [];
  for (const row of $("attribute-controls").children) {
    const value = row.value();
    if (value !== null) pairs.push(`${row.dataset.name}=${value}`);
  }
  return pairs.join(",");
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function showImage(img, empty, url) {
  img.src = url;
  img.hidden = false;
  $(empty).hidden = true;
}

function choosePhoto(file) {
  if (!file) return;
  showImage($("before"), "before-empty", URL.createObjectURL(file));
  $("drop-text").textContent = file.name;
  $("after").hidden = true;
  $("after-empty").hidden = false;
  $("download").hidden = true;
  $("faces").hidden = true;
  $("submit").disabled = false;
  status("");
}

async function conceal(event) {
  event.preventDefault();
  const file = $("photo").files[0];
  if (!file) return status("Choose a photo first.", true);
  const body = new FormData();
  body.append("image", file);
  body.append("model", $("model").value);
  const as = asText();
  if (as) body.append("as", as);
  body.append("detect", $("detect").checked ? "true" : "false");
  $("submit").disabled = true;
  status("Concealing…");
  const started = performance.now();
  try {
    const response = await fetch("/v1/apply", { method: "POST", body });
    if (!response.ok) {
      const error = await response.json().catch(() => ({ error: response.statusText }));
      const retry = response.headers.get("Retry-After");
      return status(`${error.error}${retry ? ` (retry in ${retry} s)` : ""}`, true);
    }
    const faces = Number(response.headers.get("X-Faces-Found"));
    if (resultUrl) URL.revokeObjectURL(resultUrl);
    resultUrl = URL.createObjectURL(await response.blob());
    showImage($("after"), "after-empty", resultUrl);
    $("faces").textContent = `${faces} face${faces === 1 ? "" : "s"}`;
    $("faces").hidden = false;
    const download = $("download");
    download.href = resultUrl;
    download.download = `${file.name.replace(/\.[^.]*$/, "") || "photo"}-concealed.png`;
    download.hidden = false;
    status(`Done in ${((performance.now() - started) / 1000).toFixed(1)} s${as ? ` as ${as}` : ""}.`);
  } catch (error) {
    status(`The server could not be reached (${error.message}).`, true);
  } finally {
    $("submit").disabled = false;
  }
}

async function start() {
  try {
    models = await (await fetch("/v1/models")).json();
  } catch (error) {
    return status("Could not list the server's models.", true);
  }
  $("model").replaceChildren(...models.map((m) => option(m.name, m.name)));  // the hint below names the method
  $("model").addEventListener("change", showModel);
  showModel();
  $("photo").addEventListener("change", () => choosePhoto($("photo").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) { $("photo").files = e.dataTransfer.files; choosePhoto(e.dataTransfer.files[0]); }
  });
  $("form").addEventListener("submit", conceal);
}

start();
