"""GET /: the page to try the service from a browser. One self-contained HTML document, no build step.

Everything is inline (no external script, style sheet, font or CDN), so the page works offline and behind
any proxy that forwards /derain. It posts the picked or dropped image to `POST /derain` as multipart field
`image` with XMLHttpRequest (upload progress, then a "processing" state), shows the result beside the
original and in a before/after slider, and offers it for download as `NAME-derained.EXT`. API errors
({"detail": ...}) are explained in plain words; 429 shows its Retry-After. The optional API key is sent as
`Authorization: Bearer ...`, kept in sessionStorage (this tab only), never put in a URL.
"""

STYLE = """
:root{color-scheme:light dark;--fg:#1b1f24;--muted:#58616c;--bg:#f4f6f8;--card:#fff;--line:#d3d8de;
--accent:#1f56d1;--on-accent:#fff;--bad-bg:#fdecec;--bad-fg:#8a1c1c}
@media (prefers-color-scheme:dark){:root{--fg:#e6e9ed;--muted:#a0a9b4;--bg:#121519;--card:#1b1f24;
--line:#363c44;--accent:#82a8ff;--on-accent:#0b1020;--bad-bg:#3b1d1d;--bad-fg:#ffb8b8}}
*{box-sizing:border-box}[hidden]{display:none !important}
body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.5 system-ui,
-apple-system,"Segoe UI",sans-serif}
main{max-width:1040px;margin:0 auto;padding:1.5rem 1rem 3rem}
h1{margin:0;font-size:1.6rem}h2{margin:0 0 .75rem;font-size:1.2rem}h3{margin:1.5rem 0 .5rem;font-size:1rem}
.lead{margin:.25rem 0 1.25rem;color:var(--muted)}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:1.25rem;
margin-bottom:1.25rem}
.drop{display:flex;flex-direction:column;align-items:center;gap:.2rem;padding:1.6rem 1rem;cursor:pointer;
text-align:center;border:2px dashed var(--line);border-radius:10px}
.drop:hover,.drop.over{border-color:var(--accent);background:color-mix(in srgb,var(--accent) 6%,transparent)}
.drop:focus-within{outline:3px solid var(--accent);outline-offset:2px}
.drop strong{font-size:1.1rem}.drop u{color:var(--accent)}.hint{color:var(--muted);font-size:.9rem}
.sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
.options{display:flex;flex-wrap:wrap;gap:1rem 2rem;align-items:flex-start;margin:1rem 0}
.field{display:flex;flex-direction:column;gap:.25rem}.field label,summary{font-weight:600;font-size:.9rem}
select,input[type=password]{font:inherit;padding:.35rem .5rem;border:1px solid var(--line);border-radius:6px;
background:var(--card);color:inherit}
summary{cursor:pointer}details[open] summary{margin-bottom:.25rem}
button,.button{font:inherit;font-weight:600;padding:.5rem 1.1rem;border-radius:8px;
border:1px solid var(--accent);background:var(--accent);color:var(--on-accent);cursor:pointer;
text-decoration:none;display:inline-block}
button.secondary{background:transparent;color:var(--accent)}button:disabled{opacity:.5;cursor:not-allowed}
:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.actions{display:flex;gap:.75rem;align-items:center;flex-wrap:wrap}
progress{width:100%;height:.5rem;margin-top:1rem;accent-color:var(--accent)}
#status{margin:.5rem 0 0;min-height:1.5em;color:var(--muted)}
#error{margin-top:.75rem;padding:.75rem 1rem;border-radius:8px;background:var(--bad-bg);color:var(--bad-fg)}
#error p{margin:.25rem 0 0;font-size:.9rem}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:1rem}
figure{margin:0}figcaption{color:var(--muted);font-size:.9rem;margin-top:.3rem}
figure img,.compare img{display:block;max-width:100%;height:auto;border-radius:8px}
figure img:not([src]){display:none}figure img[src]+.waiting{display:none}
.waiting{display:flex;align-items:center;justify-content:center;min-height:10rem;border-radius:8px;
border:1px dashed var(--line);color:var(--muted)}
.compare{position:relative;width:fit-content;max-width:100%;--split:50%;user-select:none}
.compare .before{position:absolute;inset:0;width:100%;height:100%;
clip-path:inset(0 calc(100% - var(--split)) 0 0)}
.compare::after{content:"";position:absolute;top:0;bottom:0;left:var(--split);width:2px;margin-left:-1px;
background:#fff;box-shadow:0 0 0 1px #0007;pointer-events:none}
.compare input{position:absolute;inset:0;width:100%;height:100%;margin:0;opacity:0;cursor:ew-resize}
.compare:has(input:focus-visible){outline:3px solid var(--accent);outline-offset:3px}
.tag{position:absolute;top:.5rem;padding:0 .45rem;border-radius:4px;background:#000a;color:#fff;
font-size:.8rem;pointer-events:none}.tag.left{left:.5rem}.tag.right{right:.5rem}
.result-head{display:flex;justify-content:space-between;align-items:center;gap:1rem;flex-wrap:wrap}
"""

BODY = """
<main>
<h1>Remove rain from a photo</h1>
<p class="lead">MSPFN deraining, running on this server. The image is sent to <code>POST /derain</code> and
not stored; the API is described at <a href="/docs">/docs</a>.</p>
<form id="form" class="card" novalidate>
  <label class="drop" id="drop">
    <input type="file" id="file" name="image" class="sr-only"
      accept="image/jpeg,image/png,image/webp,image/tiff,image/bmp,.jpg,.jpeg,.png,.webp,.tif,.tiff,.bmp">
    <strong>Drop a rainy photo here, or <u>choose a file</u></strong>
    <span class="hint" id="file-name">JPEG, PNG, WebP, TIFF or BMP</span>
  </label>
  <div class="options">
    <div class="field"><label for="format">Output format</label>
      <select id="format" name="format">
        <option value="">Same as the upload</option><option value="png">PNG (lossless)</option>
        <option value="jpeg">JPEG</option><option value="webp">WebP</option>
      </select></div>
    <div class="field" id="quality-field"><label for="quality">Quality: <output id="quality-value"
        for="quality">90</output></label>
      <input type="range" id="quality" name="quality" min="1" max="100" value="90"
        aria-describedby="quality-hint">
      <span class="hint" id="quality-hint">WebP at 100 is lossless</span></div>
    <details id="key-box"><summary>API key</summary><div class="field">
      <label for="key" class="sr-only">API key</label>
      <input type="password" id="key" autocomplete="off" spellcheck="false" aria-describedby="key-hint">
      <span class="hint" id="key-hint">Only if this service asks for one. Kept in this browser tab
        only.</span></div>
    </details>
  </div>
  <div class="actions">
    <button type="submit" id="submit" disabled>Remove rain</button>
    <button type="button" id="cancel" class="secondary" hidden>Cancel</button>
  </div>
  <progress id="progress" max="1" aria-label="Progress" hidden></progress>
  <p id="status" role="status"></p>
  <div id="error" role="alert" hidden></div>
</form>
<section id="result" class="card" aria-labelledby="result-title" hidden>
  <div class="result-head"><h2 id="result-title">Result</h2>
    <a id="download" class="button" hidden>Download</a></div>
  <div class="pair">
    <figure><img id="before" alt="The original photo">
      <figcaption id="before-caption">Original</figcaption></figure>
    <figure><img id="after" alt="The photo with the rain removed"><span class="waiting" id="waiting"></span>
      <figcaption>Derained</figcaption></figure>
  </div>
  <div id="comparison" hidden>
    <h3 id="compare-title">Before / after</h3>
    <div class="compare" id="compare">
      <img id="compare-after" alt=""><img id="compare-before" class="before" alt="">
      <span class="tag left" aria-hidden="true">Before</span>
      <span class="tag right" aria-hidden="true">After</span>
      <input type="range" id="split" min="0" max="100" value="50" aria-labelledby="compare-title"
        aria-describedby="compare-hint">
    </div>
    <p class="hint" id="compare-hint">Drag, or focus the image and use the arrow keys: the original is on
      the left of the line, the derained photo on the right.</p>
  </div>
</section>
</main>
"""

SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
const fileInput = $("file"), format = $("format"), quality = $("quality"), key = $("key");
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
const stem = (name) => name.replace(/\\.[^.]*$/, "") || "image";

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
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  say(`Done in ${seconds} s${tiles ? `, ${tiles} tile${tiles === "1" ? "" : "s"}` : ""}.`);
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
"""

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Remove rain from a photo - MSPFN</title>
<style>{STYLE}</style>
</head>
<body>{BODY}<script>{SCRIPT}</script>
</body>
</html>
"""
