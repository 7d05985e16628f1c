"""docs/check_browser.py flags what it is there to catch (no browser needed).

The browser run itself is ``make docs-check`` (in CI); these tests show that
its two checks fail on a page that loads from the network and on a DOM that
MathJax did not typeset.
"""

import importlib.util
import pathlib

REPO = pathlib.Path(__file__).parents[1]
_spec = importlib.util.spec_from_file_location(
  "check_browser", REPO / "docs" / "check_browser.py"
)
cb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cb)

TYPESET = (
  "<html><body><h1>jaxsmx.softmax_cross_entropy_with_integer_labels</h1>"
  + '<mjx-container class="MathJax" jax="CHTML"><mjx-math></mjx-math></mjx-container>'
  * 3
  + "</body></html>"
)


def test_typeset_dom_passes():
  assert cb.check_dom(TYPESET) == []


def test_untypeset_dom_is_flagged():
  raw = r"<html><body>jaxsmx.softmax_cross_entropy_with_integer_labels \(L(z, c)\)"
  (problem,) = cb.check_dom(raw + "</body></html>")
  assert "0 mjx-container" in problem


def test_mathjax_parse_error_is_flagged():
  bad = TYPESET.replace("<mjx-math>", "<mjx-merror>", 1)
  assert any("could not parse" in p for p in cb.check_dom(bad))


def test_remote_script_and_font_are_flagged(tmp_path):
  (tmp_path / "ok.html").write_text(
    '<script src="_static/mathjax/tex-chtml.js"></script>'
    '<a href="https://example.org/">a link is not a load</a>'
  )
  assert cb.remote_loads(tmp_path) == []
  (tmp_path / "bad.html").write_text(
    '<script defer src="https://cdn.example.org/mathjax/tex-chtml.js"></script>'
  )
  (tmp_path / "bad.css").write_text(
    "@font-face { src: url(//fonts.example.org/x.woff2) }"
  )
  found = cb.remote_loads(tmp_path)
  assert found == [
    "bad.html: <script> https://cdn.example.org/mathjax/tex-chtml.js",
    "bad.css: url(//fonts.example.org/x.woff2)",
  ]
