"""GET /: the page to try the service from a browser, from the files in service/http/static/.

`index.html` links `page.css` and `page.js` (so the files open as they are in a browser, and lint and
format like any other code); `PAGE`, read once at import through importlib.resources, is that document
with both inlined: one self-contained response, no external script, style sheet, font or CDN, so the
page works offline and behind any proxy that forwards /derain.

The page posts the picked or dropped image to `POST /derain` as multipart field `image` with
XMLHttpRequest (upload progress, then a "processing" state), shows the result beside the original and
in a before/after slider, and offers it for download as `NAME-derained.EXT`. API errors ({"detail": ...})
are explained in plain words; 429 shows its Retry-After. The optional API key is sent as
`Authorization: Bearer ...`, kept in sessionStorage (this tab only), never put in a URL.
"""

from __future__ import annotations

from importlib.resources import files

STATIC = files("service.http") / "static"
STYLE_LINK = '<link rel="stylesheet" href="page.css">'
SCRIPT_TAG = '<script src="page.js"></script>'


def inline_page(html: str, css: str, js: str) -> str:
    """`html` with its style sheet link and script tag replaced by the files' contents."""
    for tag in (STYLE_LINK, SCRIPT_TAG):
        if html.count(tag) != 1:
            raise ValueError(f"index.html must contain {tag} exactly once")
    return html.replace(STYLE_LINK, f"<style>\n{css}</style>").replace(SCRIPT_TAG, f"<script>\n{js}</script>")


def read_page() -> str:
    def text(name: str) -> str:
        return (STATIC / name).read_text(encoding="utf-8")

    return inline_page(text("index.html"), text("page.css"), text("page.js"))


PAGE = read_page()
