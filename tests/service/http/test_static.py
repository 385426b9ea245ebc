"""The web page's files (service/http/static): linted and formatted like code, shipped as package data,
and served as one self-contained document."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib

import cssbeautifier
import pytest
import quickjs
import tinycss2

from service.http.page import PAGE, SCRIPT_TAG, STYLE_LINK, inline_page
from tests.paths import REPO

STATIC = REPO / "service" / "http" / "static"
MAX_LINE = 110  # as ruff's line length for the Python code


def css_options() -> cssbeautifier.BeautifierOptions:
    options = cssbeautifier.default_options()
    options.indent_size = 2
    options.end_with_newline = True
    return options


@pytest.mark.slow  # djlint starts in a fresh interpreter
def test_the_html_passes_djlint() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "djlint", str(STATIC / "index.html"), "--lint", "--profile=html"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout
    assert "found 0 errors" in done.stdout


def css_errors(css: str) -> list[str]:
    """tinycss2's parse errors, in rules, in declarations and inside at-rule blocks (@media)."""
    errors: list[str] = []

    def walk(nodes: list[object]) -> None:
        for node in nodes:
            kind = getattr(node, "type", "")
            if kind == "error":
                errors.append(f"{node.source_line}: {node.message}")  # type: ignore[attr-defined]
            elif kind == "qualified-rule":
                walk(tinycss2.parse_declaration_list(node.content, skip_whitespace=True))  # type: ignore[attr-defined]
            elif kind == "at-rule" and node.content is not None:  # type: ignore[attr-defined]
                walk(tinycss2.parse_rule_list(node.content, skip_whitespace=True))  # type: ignore[attr-defined]

    walk(tinycss2.parse_stylesheet(css, skip_comments=True, skip_whitespace=True))
    return errors


def test_the_css_parses_and_is_formatted() -> None:
    css = (STATIC / "page.css").read_text()
    assert css_errors(css) == []
    assert css_errors("a { color: red; : ; } @media (x) { b { ;;; width 1px } }")  # the check can fail
    assert cssbeautifier.beautify(css, css_options()) == css  # cssbeautifier, indent 2


def js_syntax_error(js: str) -> str | None:
    """QuickJS (ES2023) compiles the script as a function body without running it."""
    try:
        quickjs.Context().eval("(function () {\n" + js + "\n})")
    except quickjs.JSException as error:
        return str(error)
    return None


def test_the_script_compiles_and_reads_like_code() -> None:
    js = (STATIC / "page.js").read_text()
    assert js_syntax_error(js) is None
    assert js_syntax_error(js.replace("function ", "function function ", 1))  # the check can fail
    assert js.startswith('"use strict";')
    for number, line in enumerate(js.splitlines(), 1):
        assert len(line) <= MAX_LINE and line == line.rstrip() and "\t" not in line, f"page.js:{number}"


def test_the_page_is_the_files_with_style_and_script_inlined() -> None:
    html = (STATIC / "index.html").read_text()
    css, js = (STATIC / "page.css").read_text(), (STATIC / "page.js").read_text()
    assert inline_page(html, css, js) == PAGE
    assert f"<style>\n{css}</style>" in PAGE and f"<script>\n{js}</script>" in PAGE
    assert STYLE_LINK not in PAGE and SCRIPT_TAG not in PAGE
    with pytest.raises(ValueError, match="exactly once"):
        inline_page(html.replace(SCRIPT_TAG, ""), css, js)


def test_the_static_files_are_package_data() -> None:
    """A wheel (the service image installs one) carries every file under static/."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["service.http"]
    shipped = sorted(path.relative_to(STATIC.parent).as_posix() for path in STATIC.iterdir())
    assert shipped == ["static/index.html", "static/page.css", "static/page.js"]
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in shipped)
