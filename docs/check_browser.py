"""Checks the built documentation site, every page of it (``make docs-check``).

1. No page loads a script, stylesheet, image or font from the network: every
   ``<script src>``, ``<link href>`` and ``<img src>`` is a local path, and the
   bundled MathJax is in the build.
2. No link or image is broken: every local ``<a href>``, ``<img src>``,
   ``<script src>`` and ``<link href>`` of every page names a file in the build,
   and a ``#fragment`` names an ``id`` on the page it points to. (Links to other
   sites are not followed: the check runs offline.)
3. Headless Chromium (Debian's ``chromium``) opens every page from a local
   HTTP server and dumps the DOM after MathJax has run. On each page:

   - the mathematics is typeset: a page whose HTML holds formulas has
     MathJax's ``mjx-container`` elements in its DOM, and none is an
     ``merror`` (a formula MathJax could not parse);
   - no raw LaTeX is left in the text a reader sees: no ``$`` and no
     ``\\command`` outside code, preformatted output and typeset formulas;
   - every character of that text can be drawn: some font installed on the
     machine has a glyph for it (fontconfig's ``fc-list``), so none shows as
     an empty box. Typeset formulas use MathJax's own fonts and are left out.
4. It takes a screenshot of the API page of
   :func:`jaxsmx.softmax_cross_entropy_with_integer_labels`,
   ``docs/_build/api_page.png``, to look at.

Usage: ``python docs/check_browser.py [BUILD_DIR]``, BUILD_DIR defaulting to
``docs/_build/html``. Exits non-zero, with one line per problem, on failure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import html.parser
import http.server
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable
from typing import ClassVar

PAGE = "_autosummary/jaxsmx.softmax_cross_entropy_with_integer_labels.html"
MATHJAX = "_static/mathjax/tex-chtml.js"
# Tags that make a browser fetch something: <script src>, <link href>, <img src>,
# <iframe src>; <a href> is a link a reader may follow, not a load.
_LOADS = re.compile(
  r"<(script|link|img|iframe|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']",
  re.I,
)
_EXTERNAL = re.compile(r"(?i)^(?:[a-z][a-z0-9+.-]*:|//)")  # http:, mailto:, data:, //
# a formula in the HTML that MathJax is to typeset
_MATH_IN_HTML = re.compile(r'class="[^"]*\bmath\b')
# LaTeX that a reader should never see as text
_RAW_LATEX = re.compile(r"\$|\\[A-Za-z]+|\\[()\[\]]")


def pages(build: pathlib.Path) -> list[pathlib.Path]:
  """Every HTML page of the site (the theme's own assets left out)."""
  assets = ("_static", "_sources", "_images")
  return sorted(
    p for p in build.rglob("*.html") if p.relative_to(build).parts[0] not in assets
  )


def remote_loads(build: pathlib.Path) -> list[str]:
  """Every ``page: tag url`` in the build that would load from the network."""
  bad = []
  for page in sorted(build.rglob("*.html")):
    text = page.read_text(encoding="utf-8", errors="replace")
    for tag, url in _LOADS.findall(text):
      if re.match(r"(?i)(https?:)?//", url):
        bad.append(f"{page.relative_to(build)}: <{tag.lower()}> {url}")
  for css in sorted(build.rglob("*.css")):
    for url in re.findall(r"url\(\s*[\"']?((?:https?:)?//[^)\"']+)", css.read_text()):
      bad.append(f"{css.relative_to(build)}: url({url})")
  return bad


# --- links and images -----------------------------------------------------------


class _Refs(html.parser.HTMLParser):
  """The ids of a page and the local URLs it links to or loads."""

  _ATTRS: ClassVar = {
    "a": "href",
    "img": "src",
    "script": "src",
    "link": "href",
    "source": "src",
  }

  def __init__(self) -> None:
    super().__init__(convert_charrefs=True)
    self.ids: set[str] = set()
    self.urls: list[tuple[str, str]] = []  # (tag, url)

  def handle_starttag(self, tag, attrs) -> None:
    a = dict(attrs)
    for key in ("id", "name"):
      if a.get(key):
        self.ids.add(a[key])
    url = a.get(self._ATTRS.get(tag, ""))
    if url and not _EXTERNAL.match(url):
      self.urls.append((tag, url))


@functools.cache
def _refs(page: pathlib.Path) -> _Refs:
  parser = _Refs()
  parser.feed(page.read_text(encoding="utf-8", errors="replace"))
  return parser


def broken_links(build: pathlib.Path) -> list[str]:
  """Every ``page: <tag> url (why)`` whose local target is missing."""
  _refs.cache_clear()
  bad = []
  for page in pages(build):
    name = page.relative_to(build)
    for tag, url in _refs(page).urls:
      parts = urllib.parse.urlsplit(url)
      path = urllib.parse.unquote(parts.path)
      target = (page.parent / path).resolve() if path else page
      if target.is_dir():
        target = target / "index.html"
      if not target.is_file() or not target.is_relative_to(build.resolve()):
        bad.append(f"{name}: <{tag}> {url} (no such file in the build)")
      elif parts.fragment and target.suffix == ".html":
        fragment = urllib.parse.unquote(parts.fragment)
        if fragment not in _refs(target).ids:
          bad.append(f"{name}: <{tag}> {url} (no id {fragment!r} on that page)")
  return bad


# --- the DOM after the browser has run --------------------------------------------


class _Text(html.parser.HTMLParser):
  """The text a reader sees, in two parts: all of it (for glyphs) and the prose
  outside code and preformatted output (for raw LaTeX). Typeset formulas,
  scripts and styles are left out."""

  _SKIP: ClassVar = {
    "script",
    "style",
    "template",
    "mjx-container",
    "noscript",
    "svg",
    "math",
  }
  _CODE: ClassVar = {"code", "pre", "kbd", "samp", "tt", "textarea"}
  _VOID: ClassVar = {"br", "img", "input", "meta", "link", "hr", "wbr", "source", "col"}

  def __init__(self) -> None:
    super().__init__(convert_charrefs=True)
    self.stack: list[str] = []
    self.visible: list[str] = []
    self.prose: list[str] = []

  def handle_starttag(self, tag, attrs) -> None:
    if tag not in self._VOID:
      self.stack.append(tag)

  def handle_endtag(self, tag) -> None:
    if tag in self.stack:
      while self.stack.pop() != tag:
        pass

  def handle_data(self, data) -> None:
    if any(t in self._SKIP for t in self.stack):
      return
    self.visible.append(data)
    if not any(t in self._CODE for t in self.stack):
      self.prose.append(data)


def fonts_coverage() -> set[int]:
  """Every code point that some installed font has a glyph for (fontconfig)."""
  out = subprocess.run(
    ["fc-list", "--format", "%{charset}\n"], capture_output=True, text=True, check=True
  ).stdout
  covered: set[int] = set()
  for lo, hi in re.findall(r"([0-9a-f]+)(?:-([0-9a-f]+))?", out):
    covered.update(range(int(lo, 16), int(hi or lo, 16) + 1))
  return covered


def _missing_glyphs(text: str, covered: set[int]) -> list[str]:
  chars = sorted({c for c in text if ord(c) > 0x7E and not c.isspace()})
  missing = []
  for c in chars:
    if ord(c) in covered or unicodedata.category(c) in ("Cf", "Mn", "Cc"):
      continue  # format and combining characters draw nothing of their own
    name = unicodedata.name(c, "unnamed")
    missing.append(f"{c} U+{ord(c):04X} {name}")
  return missing


def check_dom(
  dom: str, page: str, covered: set[int], source_html: str = ""
) -> list[str]:
  """Problems with one page's DOM, as the browser left it.

  ``source_html`` is the page as built: if it holds formulas, the DOM must have
  them typeset. ``covered`` is the set of code points the fonts can draw.
  """
  problems = []
  n = len(re.findall(r"<mjx-container\b", dom))
  if _MATH_IN_HTML.search(source_html) and n == 0:
    problems.append(
      f"{page}: the page holds formulas but MathJax typeset none (0 mjx-container"
      " elements); check that the bundled MathJax loads"
    )
  if re.search(r"<mjx-merror\b|data-mjx-error", dom):
    problems.append(f"{page}: MathJax reports a formula it could not parse (merror)")
  text = _Text()
  text.feed(dom)
  prose = "".join(text.prose)
  raw = list(_RAW_LATEX.finditer(prose))
  if raw:
    m = raw[0]
    around = prose[max(0, m.start() - 30) : m.end() + 30].replace("\n", " ").strip()
    problems.append(
      f"{page}: raw LaTeX in the text ({len(raw)} places), first {m.group()!r} in"
      f" '...{around}...'; write formulas as $...$ math (MyST), code as `code`"
    )
  missing = _missing_glyphs("".join(text.visible), covered)
  if missing:
    problems.append(
      f"{page}: no installed font can draw {', '.join(missing)}; it shows as an"
      " empty box. Use a mark every font has, or a word"
    )
  return problems


# --- the browser -------------------------------------------------------------------


def find_chromium() -> str:
  for name in ("chromium", "chromium-browser", "google-chrome"):
    path = shutil.which(name)
    if path:
      return path
  raise SystemExit(
    "check_browser: no chromium on PATH; install Debian's: apt-get install -y chromium"
  )


def _serve(build: pathlib.Path) -> tuple[http.server.HTTPServer, str]:
  class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
      pass

  handler = functools.partial(Quiet, directory=str(build))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server, f"http://127.0.0.1:{server.server_address[1]}/"


def chromium(browser: str, profile: str, *args: str) -> subprocess.CompletedProcess:
  cmd = [
    browser,
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--hide-scrollbars",
    f"--user-data-dir={profile}",
    # let MathJax (deferred, then asynchronous) finish before the dump
    "--virtual-time-budget=20000",
    "--window-size=1280,1800",
    *args,
  ]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def check_site(
  build: pathlib.Path,
  dump: Callable[[str], str],
  covered: set[int],
  names: Iterable[str] | None = None,
) -> list[str]:
  """Every problem of every page: links and images, then each page's DOM as
  ``dump(page)`` returns it (the browser's, in ``main``)."""
  problems = broken_links(build)
  names = [str(p.relative_to(build)) for p in pages(build)] if names is None else names

  def one(name: str) -> list[str]:
    source = (build / name).read_text(encoding="utf-8", errors="replace")
    try:
      dom = dump(name)
    except RuntimeError as e:
      return [f"{name}: {e}"]
    return check_dom(dom, name, covered, source)

  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    for found in pool.map(one, list(names)):
      problems += found
  return problems


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("build", nargs="?", default="docs/_build/html", type=pathlib.Path)
  parser.add_argument("--screenshot", type=pathlib.Path)
  args = parser.parse_args(argv)
  build = args.build.resolve()
  shot = (args.screenshot or build.parent / "api_page.png").resolve()
  if not (build / PAGE).is_file():
    print(f"check_browser: {build / PAGE} does not exist; run `make docs` first.")
    return 1
  problems = remote_loads(build)
  if not (build / MATHJAX).is_file():
    problems.append(f"{MATHJAX} is not in the build: MathJax is not bundled")
  browser = find_chromium()
  server, base = _serve(build)
  typeset = 0
  try:
    with tempfile.TemporaryDirectory(prefix="jaxsmx-chromium-") as tmp:

      def dump(name: str) -> str:
        nonlocal typeset
        # one profile per page: two browsers may run at once
        with tempfile.TemporaryDirectory(dir=tmp) as profile:
          r = chromium(browser, profile, "--dump-dom", base + name)
        if r.returncode != 0 or not r.stdout.strip():
          raise RuntimeError(f"chromium --dump-dom failed: {r.stderr.strip()[-300:]}")
        typeset += len(re.findall(r"<mjx-container\b", r.stdout))
        return r.stdout

      problems += check_site(build, dump, fonts_coverage())
      shot.unlink(missing_ok=True)
      snap = chromium(browser, tmp, f"--screenshot={shot}", base + PAGE)
      if snap.returncode != 0 or not shot.is_file():
        problems.append(f"chromium --screenshot failed: {snap.stderr.strip()[-500:]}")
  finally:
    server.shutdown()
  for p in problems:
    print(f"FAIL {p}")
  if problems:
    return 1
  print(
    f"ok: {len(pages(build))} pages: no network loads, no broken link or image, no"
    f" raw LaTeX, every glyph drawable; {typeset} formulas typeset by MathJax;"
    f" screenshot {shot}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
