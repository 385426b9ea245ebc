"""GET / without a browser: one document that loads nothing from elsewhere (no CDN, no external asset)."""

from __future__ import annotations

import re

from service.http.page import PAGE


def test_the_page_loads_nothing_from_another_origin() -> None:
    assert not re.search(r"https?:|//[\w.-]+\.[a-z]{2,}/", PAGE, re.IGNORECASE)
    references = re.findall(r"""\b(?:src|href|action)\s*=\s*["']([^"']*)""", PAGE)
    assert references == ["/docs"]  # images come from blob: URLs made in the page
    assert "<link" not in PAGE and "@import" not in PAGE and "url(" not in PAGE
