"""Checks the built documentation site in a real browser (``make docs-check``).

1. No page loads a script, stylesheet or font from the network: every
   ``<script src>`` and ``<link href>`` of every HTML page is a local path,
   and the bundled MathJax is in the build.
2. Headless Chromium (Debian's ``chromium``) opens the API page of
   :func:`jaxsmx.softmax_cross_entropy_with_integer_labels`, served from a
   local HTTP server, and the DOM it dumps holds typeset formulas: MathJax's
   ``mjx-container`` elements and no ``merror`` (a formula MathJax could not
   parse).
3. It takes a screenshot of that page, ``docs/_build/api_page.png``, to look at.

Usage: ``python docs/check_browser.py [BUILD_DIR]``, BUILD_DIR defaulting to
``docs/_build/html``. Exits non-zero, with one line per problem, on failure.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading

PAGE = "_autosummary/jaxsmx.softmax_cross_entropy_with_integer_labels.html"
MATHJAX = "_static/mathjax/tex-chtml.js"
# Tags that make a browser fetch something: <script src>, <link href>, <img src>,
# <iframe src>; <a href> is a link a reader may follow, not a load.
_LOADS = re.compile(
  r"<(script|link|img|iframe|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']",
  re.I,
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


def check_dom(dom: str) -> list[str]:
  """Problems with the dumped DOM of the API page; empty if it is typeset."""
  problems = []
  n = len(re.findall(r"<mjx-container\b", dom))
  if n < 3:
    problems.append(
      f"{PAGE}: {n} mjx-container elements in the DOM; MathJax did not typeset "
      "the formulas (expected at least 3)"
    )
  if re.search(r"<mjx-merror\b|data-mjx-error", dom):
    problems.append(f"{PAGE}: MathJax reports a formula it could not parse (merror)")
  if "softmax_cross_entropy_with_integer_labels" not in dom:
    problems.append(f"{PAGE}: the function's name is not on the page")
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
  try:
    with tempfile.TemporaryDirectory(prefix="jaxsmx-chromium-") as profile:
      url = base + PAGE
      dump = chromium(browser, profile, "--dump-dom", url)
      if dump.returncode != 0 or not dump.stdout.strip():
        problems.append(
          f"chromium --dump-dom {url} failed: {dump.stderr.strip()[-500:]}"
        )
      else:
        problems += check_dom(dump.stdout)
      shot.unlink(missing_ok=True)
      snap = chromium(browser, profile, f"--screenshot={shot}", url)
      if snap.returncode != 0 or not shot.is_file():
        problems.append(f"chromium --screenshot failed: {snap.stderr.strip()[-500:]}")
  finally:
    server.shutdown()
  for p in problems:
    print(f"FAIL {p}")
  if problems:
    return 1
  n = len(re.findall(r"<mjx-container\b", dump.stdout))
  print(
    f"ok: no page loads from the network; {n} formulas typeset by MathJax on "
    f"{PAGE}; screenshot {shot}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
