"""docs/check_browser.py flags what it is there to catch, on any page (no
browser needed: the DOM a browser would dump is given as text).

The browser run itself is ``make docs-check`` (in CI). These tests show that
each check fails on a bad page: a formula MathJax did not typeset or could not
parse, raw LaTeX left in the text, a character no installed font can draw, a
broken link, fragment or image, a load from the network; and that the site
check reads every page, not only the API page.
"""

import importlib.util
import pathlib

REPO = pathlib.Path(__file__).parents[1]
_spec = importlib.util.spec_from_file_location(
  "check_browser", REPO / "docs" / "check_browser.py"
)
cb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cb)

ASCII = set(range(0x20, 0x7F))
MATH_SOURCE = '<span class="math notranslate nohighlight">\\(x\\)</span>'
TYPESET = (
  "<html><body><h1>softmax</h1><p>The value "
  '<mjx-container class="MathJax" jax="CHTML"><mjx-math>x</mjx-math></mjx-container>'
  " is a probability.</p></body></html>"
)


def test_a_good_page_passes():
  assert cb.check_dom(TYPESET, "p.html", ASCII, MATH_SOURCE) == []


def test_untypeset_math_is_flagged():
  dom = "<html><body><p>The value \\(x\\) is a probability.</p></body></html>"
  problems = cb.check_dom(dom, "p.html", ASCII, MATH_SOURCE)
  assert any("MathJax typeset none" in p for p in problems)
  # the raw \( of the formula is reported as well
  assert any("raw LaTeX" in p for p in problems)


def test_mathjax_parse_error_is_flagged():
  bad = TYPESET.replace("<mjx-math>", "<mjx-merror>", 1)
  assert any("could not parse" in p for p in cb.check_dom(bad, "p.html", ASCII))


def test_raw_latex_in_prose_is_flagged_but_not_in_code_or_formulas():
  for raw in ("$a_i$", "\\frac{a}{b}", "$$ f = 1 $$"):
    dom = f"<html><body><p>Then {raw} follows.</p></body></html>"
    (problem,) = cb.check_dom(dom, "nb.html", ASCII)
    assert "nb.html: raw LaTeX" in problem
  fine = (
    "<html><body><pre>echo $HOME \\n</pre><p>Use <code>$x$</code>.</p>"
    "<mjx-container><mjx-assistive-mml>\\frac</mjx-assistive-mml></mjx-container>"
    "</body></html>"
  )
  assert cb.check_dom(fine, "nb.html", ASCII) == []


def test_a_glyph_no_font_has_is_flagged():
  dom = "<html><body><table><tr><td>✅</td><td>pass</td></tr></table></body></html>"
  (problem,) = cb.check_dom(dom, "r.html", ASCII)
  assert "U+2705 WHITE HEAVY CHECK MARK" in problem and "empty box" in problem
  # drawn by some font: fine; inside a typeset formula: MathJax's own fonts
  assert cb.check_dom(dom, "r.html", ASCII | {0x2705}) == []
  math = '<mjx-container><mjx-c class="mjx-c2705">✅</mjx-c></mjx-container>'
  assert cb.check_dom(f"<p>{math}</p>", "r.html", ASCII) == []


def test_fonts_coverage_reads_the_installed_fonts():
  covered = cb.fonts_coverage()
  assert ord("a") in covered  # any machine with a browser has a Latin font


def test_broken_links_fragments_and_images_are_flagged(tmp_path):
  (tmp_path / "sub").mkdir()
  (tmp_path / "img.png").write_bytes(b"\x89PNG")
  (tmp_path / "b.html").write_text('<h2 id="there">There</h2>')
  (tmp_path / "sub" / "c.html").write_text('<a href="../b.html#there">up</a>')
  (tmp_path / "a.html").write_text(
    '<a href="b.html#there">ok</a><a href="#top" id="top">self</a>'
    '<img src="img.png"><a href="https://example.org/x">not followed</a>'
    '<a href="missing.html">gone</a><a href="b.html#nowhere">no id</a>'
    '<img src="_images/gone.png"><a href="sub/">a folder without index</a>'
  )
  assert cb.broken_links(tmp_path) == [
    "a.html: <a> missing.html (no such file in the build)",
    "a.html: <a> b.html#nowhere (no id 'nowhere' on that page)",
    "a.html: <img> _images/gone.png (no such file in the build)",
    "a.html: <a> sub/ (no such file in the build)",
  ]


def test_every_page_is_checked_not_only_the_api_page(tmp_path):
  """check_site dumps and checks each page; a bad glyph on a page far from the
  API page fails the run."""
  (tmp_path / "_autosummary").mkdir()
  (tmp_path / "_static").mkdir()
  (tmp_path / "_autosummary" / "f.html").write_text(TYPESET)
  (tmp_path / "index.html").write_text("<p>All good.</p>")
  (tmp_path / "notebooks").mkdir()
  (tmp_path / "notebooks" / "n.html").write_text("<p>Verdict: ❌ FAIL</p>")
  (tmp_path / "_static" / "theme.html").write_text("<p>❌ an asset, not a page</p>")
  seen = []

  def dump(name):
    seen.append(name)
    return (tmp_path / name).read_text()

  problems = cb.check_site(tmp_path, dump, ASCII)
  assert sorted(seen) == ["_autosummary/f.html", "index.html", "notebooks/n.html"]
  (problem,) = problems
  assert problem.startswith("notebooks/n.html: no installed font can draw ❌")


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
