"""The rendered book: it builds with warnings as errors and reads well in a real browser.

The build goes to a temporary folder (the committed notebooks are rendered as they
are, never re-executed). Every chapter page is then opened in headless Chromium
(Debian's chromium and chromium-driver, installed by `make test`) served from
127.0.0.1, and must: load; typeset every equation with the MathJax copy served with
the book (no network); leave no raw TeX delimiters in the text; load every image; and
show no library warnings in the cell outputs.
"""
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WARNING_PATTERNS = ["IProgress not found", "Warning:", "WARNING", "DeprecationWarning", "UserWarning",
                    "Traceback (most recent call last)"]


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    if not (ROOT / "_assets" / "mathjax" / "tex-chtml.js").is_file():
        pytest.fail("_assets/mathjax is missing: run `make mathjax` (part of `make test` and `make book`)")
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"jupyter-book build failed:\n{log[-6000:]}"
    assert "WARNING" not in log, log[-6000:]
    return out / "_build" / "html"


def test_build_has_every_page_and_static_mathjax(built_book):
    from dlbook.execute import toc_entries

    for entry in toc_entries(ROOT):
        assert (built_book / f"{entry}.html").is_file(), entry
    html = (built_book / "chapters" / "01_mlp" / "mlp_forward.html").read_text()
    assert "mathjax/tex-chtml.js" in html and "cdn.jsdelivr" not in html
    scripts = re.findall(r'<script[^>]+src="[^"]*mathjax/[^"]*"', html)
    assert len(scripts) == 1, f"each page must load only MathJax's tex-chtml.js, found {scripts}"
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").is_file()
    preface = (built_book / "chapters" / "00_introduction" / "preface.html").read_text()
    assert "Deep Learning from Matrices Up" in preface
    assert "Copyright 2026" in preface and "Copyright 2023" not in preface
    assert "The dlbook authors" in preface
    assert "colab.research.google.com" in html


@pytest.fixture(scope="module")
def server(built_book):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(built_book))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium and chromedriver are needed: `make browser` installs Debian's packages")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
                "--window-size=1280,2000"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_script_timeout(60)
    yield chrome
    chrome.quit()


PAGE_CHECK = r"""
const done = arguments[arguments.length - 1];
const ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
ready.then(() => {
  const imgs = Array.from(document.images).filter(i => !i.closest('.sidebar-primary-items__start'));
  const math = Array.from(document.querySelectorAll('div.math, span.math'));
  const body = document.querySelector('main') || document.body;
  const clone = body.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .MathJax_Preview').forEach(e => e.remove());
  const outputs = Array.from(document.querySelectorAll('.cell_output')).map(e => e.innerText);
  done({
    mathjax: !!window.MathJax,
    containers: document.querySelectorAll('mjx-container').length,
    untypeset: math.filter(m => !m.querySelector('mjx-container')).length,
    mathCount: math.length,
    text: clone.innerText,
    brokenImages: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    images: imgs.length,
    outputs: outputs,
    title: document.title,
  });
}).catch(e => done({error: String(e)}));
"""


def chapter_pages(built_book):
    return sorted(p.relative_to(built_book).as_posix() for p in (built_book / "chapters").rglob("*.html"))


def test_pages_in_browser(built_book, server, browser):
    pages = chapter_pages(built_book)
    assert len(pages) >= 8
    total_math = 0
    for page in pages:
        browser.get(f"{server}/{page}")
        info = browser.execute_async_script(PAGE_CHECK)
        assert "error" not in info, (page, info)
        if info["mathCount"]:
            assert info["mathjax"], f"{page}: has equations but MathJax did not load"
        assert info["untypeset"] == 0, f"{page}: {info['untypeset']} equations were not typeset"
        for raw in ("\\[", "\\]", "\\(", "$$"):
            assert raw not in info["text"], f"{page}: raw TeX {raw!r} left in the page"
        assert not info["brokenImages"], f"{page}: images failed to load: {info['brokenImages']}"
        for out in info["outputs"]:
            for pattern in WARNING_PATTERNS:
                assert pattern not in out, f"{page}: an output shows {pattern!r}: {out[:300]!r}"
        total_math += info["mathCount"]
    assert total_math > 20


def test_figures_are_shown(built_book, server, browser):
    browser.get(f"{server}/chapters/01_mlp/train_mlp_digits.html")
    info = browser.execute_async_script(PAGE_CHECK)
    assert info["images"] >= 5 and not info["brokenImages"]
    assert re.search(r"Training an MLP on handwritten digits", info["title"])


LAYOUT_CHECK = r"""
const body = parseFloat(getComputedStyle(document.querySelector('article p') || document.body).fontSize);
const code = Array.from(document.querySelectorAll('div.cell_input pre'));
const visible = e => e.offsetParent !== null && getComputedStyle(e).visibility !== 'hidden';
const imgs = Array.from(document.querySelectorAll('.cell_output img')).filter(visible);
const tables = Array.from(document.querySelectorAll('article table')).filter(visible);
const search = Array.from(document.querySelectorAll(
  'button.search-button, button.search-button-field, form.bd-search, input[type=search]'))
  .filter(e => visible(e) && !e.closest('.search-button__wrapper'));
return {
  body: body,
  scrolling: code.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.split('\n')[0]),
  codeText: code.map(e => e.innerText).join('\n'),
  shrunk: imgs.filter(i => i.naturalWidth > 1.04 * i.clientWidth).map(i => [i.naturalWidth, i.clientWidth]),
  wideTables: tables.filter(t => t.scrollWidth > t.parentElement.clientWidth + 1).length,
  search: search.length,
};
"""


@pytest.mark.parametrize("width", [1280, 800])
def test_pages_fit_the_column(built_book, server, browser, width, tmp_path_factory):
    """At 1280 and 800 px: no code cell scrolls sideways, the setup cell is not shown, no
    figure is scaled down below the size at which its text matches the body text (see
    dlbook.plotting), no table is wider than the column, and there is one search box."""
    from dlbook.plotting import DPI, MIN_FONT_PT

    shots = tmp_path_factory.mktemp(f"shots{width}")
    browser.set_window_size(width, 1400)
    try:
        for page in chapter_pages(built_book):
            browser.get(f"{server}/{page}")
            info = browser.execute_script(LAYOUT_CHECK)
            assert not info["scrolling"], f"{page} at {width} px: code scrolls: {info['scrolling'][:3]}"
            assert "DLBOOK_FORCE_SETUP" not in info["codeText"], f"{page}: the setup cell is shown"
            # text drawn at MIN_FONT_PT at DPI, then scaled by at most 4 %, is >= the body text
            assert MIN_FONT_PT * DPI / 72 / 1.04 >= info["body"] * 0.995
            assert info["wideTables"] == 0, f"{page} at {width} px: a table is wider than the column"
            if width == 1280:
                assert info["search"] == 1, f"{page}: {info['search']} search boxes"
                # at 800 px the column is narrower than FIGURE_WIDTH: scaling is expected
                assert not info["shrunk"], f"{page}: figures scaled down: {info['shrunk']}"
        for page in ("chapters/09_transformer/self_attention.html", "chapters/executions.html"):
            browser.get(f"{server}/{page}")
            browser.save_screenshot(str(shots / (page.replace("/", "_") + ".png")))
    finally:
        browser.set_window_size(1280, 2000)
