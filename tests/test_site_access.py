"""The built site for every reader: alt text on every figure, licences and version, dark mode.

Runs after the book build (``pytest -m book``), in headless Chromium like ``tests/test_browser.py``
(whose DevTools client it uses). For every page:

- every image has an alt text that says something: not empty, not a file name (Sphinx writes the
  file name when a cell has no ``mystnb.image.alt`` metadata, and a screen reader announces it).
  The pictures of the pre-rendered explorers (``img.widget-image``, drawn by ipywidgets in the
  browser) have no alt attribute at all, as ipywidgets' ``Image`` cannot carry one: they are counted
  apart and each explorer's static counterpart figure, with its alt text, is the accessible
  version;
- the footer names the code's licence (MIT), the text and figures' licence (CC BY 4.0), the
  third-party material and the version of the package (``book/_ext/kmex_release.py``);
- in the theme's dark mode, figures are shown unfiltered on white (``book/_static/kmex.css``).

Without ``_build/html`` (or without Chromium) the tests are skipped with the reason, except in CI
(``CI=true``), where they fail. ``KMEX_SITE`` points at another build.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from test_browser import PAGE_PARAMS, SETTLE_JS, SITE, Chromium, _chromium, _need_site, _page_id

ROOT = Path(__file__).resolve().parents[1]

# what a file name looks like as alt text: an image extension, a content hash, a notebook output name
FILE_NAME_ALT = re.compile(r"\.(?:png|jpe?g|svg|gif|webp)$|^[0-9a-f]{16,}|_\d+_\d+", re.I)
MIN_ALT = 30  # characters: a description, not a label

IMAGES_JS = r"""
(() => [...document.images].map((i) => ({
  src: (i.getAttribute("src") || "").slice(-80),
  alt: i.getAttribute("alt"),
  widget: i.classList.contains("widget-image"),
  decorative: i.getAttribute("role") === "presentation" || i.getAttribute("aria-hidden") === "true",
  inContent: !!i.closest(".bd-article"),
})))()
"""

FOOTER_JS = r"""
(() => { const f = document.querySelector(".kmex-footer"); return f ? {text: f.innerText,
  links: [...f.querySelectorAll("a")].map((a) => a.href)} : null; })()
"""

# the computed style of the content's figures once the theme is switched to dark mode
DARK_JS = r"""
(async () => {
  document.documentElement.dataset.theme = "dark";
  document.documentElement.dataset.mode = "dark";
  await new Promise((r) => setTimeout(r, 100));
  return [...document.querySelectorAll(".bd-content div.cell_output img:not(.widget-image)")].map((i) => {
    const s = getComputedStyle(i);
    return {src: (i.getAttribute("src") || "").slice(-60), filter: s.filter, background: s.backgroundColor};
  });
})()
"""


def alt_problem(alt: str | None) -> str | None:
    """Why an image's alt text does not say what the image shows, or None."""
    if alt is None or not alt.strip():
        return "no alt text"
    if FILE_NAME_ALT.search(alt.strip()):
        return "a file name as alt text"
    if len(alt.strip()) < MIN_ALT:
        return "an alt text too short to describe a figure"
    return None


def image_problems(images: list[dict]) -> list[str]:
    out = []
    for img in images:
        if img["widget"] or img["decorative"] or not img["inContent"]:
            continue
        if re.search(r"_static/(minus|plus)\.png$", img["src"]):
            continue  # Sphinx's own expand/collapse buttons of the module index, not figures
        problem = alt_problem(img["alt"])
        if problem:
            out.append(f"{problem}: {img['src']} (alt={img['alt']!r})")
    return out


def package_version() -> str:
    tree = ast.parse((ROOT / "kmexplain_utils" / "__init__.py").read_text())
    return next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
                and any(getattr(t, "id", None) == "__version__" for t in n.targets))


def footer_problems(footer: dict | None, version: str) -> list[str]:
    if footer is None:
        return ["no licence footer (.kmex-footer): is book/_ext/kmex_release.py loaded?"]
    out = []
    for needle in (f"kmexplain {version}", "MIT", "CC BY 4.0", "third-party material", "How to cite"):
        if needle not in footer["text"]:
            out.append(f"the footer does not say {needle!r}")
    for target in ("/LICENSE", "/LICENSE-CONTENT", "/THIRD_PARTY.md", "/CITATION.cff",
                   "creativecommons.org/licenses/by/4.0/"):
        if not any(link.endswith(target) or target in link for link in footer["links"]):
            out.append(f"the footer has no link to {target}")
    return out


def dark_problems(figures: list[dict]) -> list[str]:
    return [f"{f['src']}: filter {f['filter']}, background {f['background']} in dark mode (want none, white)"
            for f in figures if f["filter"] != "none" or f["background"] != "rgb(255, 255, 255)"]


@pytest.fixture(scope="module")
def browser():
    _need_site()
    chrome = Chromium(_chromium())
    yield chrome
    chrome.close()


@pytest.mark.book
@pytest.mark.slow
@pytest.mark.parametrize("page", PAGE_PARAMS)
def test_every_reader_gets_the_page(page, browser):
    if page is None:
        _need_site()
        pytest.fail("no HTML pages found in the site")
    name = _page_id(page)
    if re.search(r'http-equiv="Refresh"', page.read_text(encoding="utf-8", errors="replace"), re.I):
        return  # Jupyter Book's index.html only redirects
    browser.open(page.as_uri())
    browser.evaluate(SETTLE_JS, timeout=60)
    problems = image_problems(browser.evaluate(IMAGES_JS))
    problems += footer_problems(browser.evaluate(FOOTER_JS), package_version())
    problems += dark_problems(browser.evaluate(DARK_JS))
    assert not problems, f"{name}: " + "; ".join(problems)


def test_the_access_checks_can_fail(tmp_path):
    """File-name alt text, a missing footer and a dimmed dark-mode figure are seen; the fixed page passes."""
    exe = _chromium()
    css = (ROOT / "book" / "_static" / "kmex.css").as_uri()
    theme_dims = ("<style>html[data-theme=dark] img{filter:brightness(.8) contrast(1.2);"
                  "background-color:#ced6dd}</style>")
    png = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
    body = ('<div class="bd-content"><article class="bd-article"><div class="cell_output">{imgs}</div>'
            "</article></div>{footer}")
    bad = tmp_path / "bad.html"
    bad.write_text(f"<html><head>{theme_dims}</head><body>" + body.format(
        imgs=f'<img src="{png}" alt="0f3a9c2e4b5d6e7f8a9b1c2d.png"><img src="{png}">'
             f'<img src="{png}" alt="Figure">', footer="") + "</body></html>")
    good = tmp_path / "good.html"
    footer = ('<p class="kmex-footer">kmexplain 9.9.9 · Code: <a href="https://x/blob/main/LICENSE">MIT licence</a>'
              ' · Text and figures: <a href="https://creativecommons.org/licenses/by/4.0/">CC BY 4.0</a>'
              ' (<a href="https://x/blob/main/LICENSE-CONTENT">terms</a>) · <a href="https://x/blob/main/THIRD_PARTY.md">'
              'third-party material</a> · <a href="https://x/blob/main/CITATION.cff">How to cite</a></p>')
    good.write_text(f'<html><head>{theme_dims}<link rel="stylesheet" href="{css}"></head><body>' + body.format(
        imgs=f'<img src="{png}" alt="Bar chart of each concept\'s contribution to the score.">'
             f'<img class="widget-image" src="{png}">', footer=footer) + "</body></html>")
    chrome = Chromium(exe)
    try:
        seen = {}
        for page in (bad, good):
            chrome.open(page.as_uri())
            seen[page.stem] = (chrome.evaluate(IMAGES_JS), chrome.evaluate(FOOTER_JS), chrome.evaluate(DARK_JS))
    finally:
        chrome.close()
    images, footer_seen, dark = seen["bad"]
    assert [p.split(":")[0] for p in image_problems(images)] == [
        "a file name as alt text", "no alt text", "an alt text too short to describe a figure"]
    assert footer_problems(footer_seen, "9.9.9")[0].startswith("no licence footer")
    assert len(dark_problems(dark)) == 3
    images, footer_seen, dark = seen["good"]
    assert image_problems(images) == [] and len(images) == 2
    assert footer_problems(footer_seen, "9.9.9") == []
    assert dark_problems(dark) == [] and len(dark) == 1
