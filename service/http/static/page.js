"use strict";
const $ = (id) => document.getElementById(id);
const fileInput = $("file"), format = $("format"), quality = $("quality"), key = $("key");
const scale = $("scale");
const KEY_STORAGE = "derain-api-key";
const EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"};
const MESSAGES = {
  400: "This file could not be read as an image. It may be damaged, or not an image at all.",
  401: "This service needs an API key. Enter it under “API key” and try again.",
  413: "This image is too large for the service. Try a smaller photo.",
  415: "This kind of file is not supported. Choose a JPEG, PNG, WebP, TIFF or BMP image.",
  422: "One of the settings was not accepted.",
  429: "The service is busy right now.",
  500: "Something went wrong on the server while removing the rain. Please try again.",
  503: "The service is starting up or restarting. Please try again in a moment.",
  504: "Removing the rain took too long and was stopped. Try a smaller image.",
};
const urls = {};  // object URLs by slot, revoked when replaced
let request = null;  // the XMLHttpRequest in flight

function objectUrl(slot, blob) {
  if (urls[slot]) URL.revokeObjectURL(urls[slot]);
  return (urls[slot] = URL.createObjectURL(blob));
}
const kilobytes = (bytes) => `${Math.max(1, Math.round(bytes / 1024)).toLocaleString()} KB`;
const stem = (name) => name.replace(/\.[^.]*$/, "") || "image";

function lossy() {  // the format the service will answer in: the chosen one, else the upload's (PNG if other)
  const type = fileInput.files.length ? fileInput.files[0].type : "";
  const target = format.value || {"image/jpeg": "jpeg", "image/webp": "webp"}[type] || "png";
  return target !== "png";
}
function updateOptions() {
  $("quality-field").hidden = !lossy();
  $("quality-value").textContent = quality.value;
}
function say(text, fraction) {  // fraction: 0..1 = upload progress, null = working, undefined = idle
  $("status").textContent = text;
  const bar = $("progress");
  bar.hidden = fraction === undefined;
  if (fraction === null) bar.removeAttribute("value");
  else if (fraction !== undefined) bar.value = fraction;
}
function setBusy(busy) {
  $("submit").disabled = busy || !fileInput.files.length;
  $("cancel").hidden = !busy;
  $("form").setAttribute("aria-busy", String(busy));
}
function showError(text, detail) {
  const box = $("error");
  box.hidden = !text;
  box.replaceChildren();
  if (!text) return;
  box.append(Object.assign(document.createElement("strong"), {textContent: text}));
  if (detail) box.append(Object.assign(document.createElement("p"), {textContent: `Details: ${detail}`}));
}

function choose() {
  const file = fileInput.files[0];
  if (!file) return;
  if (request) request.abort();
  $("file-name").textContent = `${file.name} (${kilobytes(file.size)})`;
  $("before").src = objectUrl("before", file);
  $("before-caption").textContent = "Original";
  for (const id of ["after", "compare-after", "compare-before"]) $(id).removeAttribute("src");
  $("download").hidden = $("comparison").hidden = true;
  $("result").hidden = false;
  updateOptions();
  send();
}

function send() {
  const file = fileInput.files[0];
  if (!file || request) return;
  const query = new URLSearchParams();
  if (format.value) query.set("format", format.value);
  if (lossy()) query.set("quality", quality.value);
  if (scale.value !== "auto") query.set("scale", scale.value);
  const body = new FormData();
  body.append("image", file);
  const xhr = (request = new XMLHttpRequest());
  xhr.open("POST", `/derain?${query}`);
  xhr.responseType = "blob";
  if (key.value.trim()) xhr.setRequestHeader("Authorization", `Bearer ${key.value.trim()}`);
  const started = performance.now();
  xhr.upload.onprogress = (event) => {
    if (event.lengthComputable) {
      say(`Uploading… ${Math.round((100 * event.loaded) / event.total)}%`, event.loaded / event.total);
    }
  };
  xhr.upload.onload = () => say("Processing: removing the rain…", null);
  xhr.onload = () => finish(xhr, file, started);
  xhr.onerror = () => fail(0, "");
  xhr.onabort = () => say("Cancelled.");
  xhr.onloadend = () => {
    request = null;
    setBusy(false);
  };
  showError("");
  $("waiting").textContent = "Waiting for the result…";
  say("Uploading… 0%", 0);
  setBusy(true);
  xhr.send(body);
}

async function finish(xhr, file, started) {
  if (xhr.status !== 200) {
    let detail = "";
    try {
      detail = JSON.parse(await xhr.response.text()).detail || "";
    } catch {
      // not the API's JSON (a proxy's page, say): the status alone will do
    }
    fail(xhr.status, detail, xhr.getResponseHeader("Retry-After"));
    return;
  }
  const blob = xhr.response;
  const url = objectUrl("after", blob);
  $("after").src = $("compare-after").src = url;
  $("compare-before").src = urls.before;
  const extension = EXTENSIONS[blob.type] || "png";
  const link = $("download");
  link.href = url;
  link.download = `${stem(file.name)}-derained.${extension}`;
  link.textContent = `Download ${extension.toUpperCase()} (${kilobytes(blob.size)})`;
  link.hidden = false;
  $("comparison").hidden = !$("before").getAttribute("src");  // no slider without a preview
  const tiles = xhr.getResponseHeader("X-Derain-Tiles");
  const used = xhr.getResponseHeader("X-Derain-Scale");
  const passes = (xhr.getResponseHeader("X-Derain-Passes") || "").split(" ").filter(Boolean);
  const second = passes.length > 1
    ? `, then again at 1/${passes[1].replace("x", " x 1/")} across the streaks` : "";
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  say(`Done in ${seconds} s${tiles ? `, ${tiles} tile${tiles === "1" ? "" : "s"}` : ""}` +
      `${used ? `, rain found at 1/${used} size${second}` : ""}.`);
}

function fail(status, detail, retryAfter) {
  let text = MESSAGES[status] || (status
    ? `The service answered with an error (HTTP status ${status}).`
    : "Could not reach the service. Check that it is running, then try again.");
  if (status === 429) {
    const seconds = Number(retryAfter);
    text += Number.isInteger(seconds) && retryAfter
      ? ` Please try again in ${seconds} second${seconds === 1 ? "" : "s"}.`
      : " Please try again shortly.";
  }
  say("");
  showError(text, detail);
  $("waiting").textContent = "No result: see the message above.";
  if (status === 401) {
    $("key-box").open = true;
    key.focus();
  }
}

const drop = $("drop");
document.addEventListener("dragover", (event) => {
  event.preventDefault();  // lets the page take the file instead of the browser opening it
  drop.classList.add("over");
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) drop.classList.remove("over");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) {
    fileInput.files = event.dataTransfer.files;
    choose();
  }
});
fileInput.addEventListener("change", choose);
$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
$("cancel").addEventListener("click", () => request && request.abort());
format.addEventListener("change", updateOptions);
quality.addEventListener("input", updateOptions);
$("split").addEventListener("input", (event) => {
  $("compare").style.setProperty("--split", `${event.target.value}%`);
});
$("before").addEventListener("error", () => {  // TIFF, or not an image at all: no preview
  if (!$("before").getAttribute("src")) return;
  $("before").removeAttribute("src");
  $("before-caption").textContent = "Original (the browser cannot display this file)";
});
key.value = sessionStorage.getItem(KEY_STORAGE) || "";
$("key-box").open = Boolean(key.value);
key.addEventListener("input", () => {
  if (key.value) sessionStorage.setItem(KEY_STORAGE, key.value);
  else sessionStorage.removeItem(KEY_STORAGE);
});
updateOptions();
