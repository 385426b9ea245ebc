"""GET /: a one-file web page to try the service from a browser (no external assets)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MSPFN deraining</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:16px system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
.pair{display:flex;gap:1em;flex-wrap:wrap}.pair figure{flex:1;min-width:300px;margin:0}
img{max-width:100%;border:1px solid #ccc}#status{color:#555}
</style></head><body>
<h1>MSPFN deraining</h1>
<p>Pick a rainy photo (JPEG, PNG, WebP, TIFF or BMP). It is sent to <code>POST /derain</code>;
the API is described at <a href="/docs">/docs</a>.</p>
<form id="form"><input type="file" id="file" name="image" accept="image/*" required>
<select id="format"><option value="">same format</option><option>png</option><option>jpeg</option>
<option>webp</option></select>
<label>API key <input type="password" id="key" autocomplete="off"></label>
<button>Derain</button></form>
<p id="status"></p>
<div class="pair"><figure><figcaption>Input</figcaption><img id="before" alt=""></figure>
<figure><figcaption>Derained</figcaption><img id="after" alt=""></figure></div>
<script>
const $ = (id) => document.getElementById(id);
$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  $("before").src = URL.createObjectURL(file);
  $("status").textContent = "working...";
  const body = new FormData(); body.append("image", file);
  const query = $("format").value ? "?format=" + $("format").value : "";
  const headers = $("key").value ? {Authorization: "Bearer " + $("key").value} : {};
  const started = performance.now();
  const response = await fetch("/derain" + query, {method: "POST", body, headers});
  if (!response.ok) {
    $("status").textContent = response.status + ": " + (await response.json()).detail;
    return;
  }
  $("after").src = URL.createObjectURL(await response.blob());
  const total = Math.round(performance.now() - started);
  $("status").textContent = `${response.headers.get("X-Derain-Tiles")} tiles, model time `
    + `${response.headers.get("X-Derain-Inference-Ms")} ms, total ${total} ms`;
});
</script></body></html>
"""
