"""Sphinx configuration for the jaxsmx documentation (``make docs``).

Every text has one source. The pages here own the reference text (numerics
promises, differences from the peers, performance, scaling, how the gradients
are checked); the README keeps what a new user reads first (the pitch,
install, the example, the two commands, the function table, the notebooks
list) and the pages include those sections between
``<!-- docs:NAME:start -->`` and ``<!-- docs:NAME:end -->`` markers. The
committed ``derivations/REPORT.md``, ``benchmarks/RESULTS.md`` and the
notebooks are included or rendered with their saved outputs. MathJax is
served from the site itself (sphinx-mathjax-offline), so no page loads a
script from the network.
"""

import pathlib
import re
import shutil
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import jaxsmx  # noqa: E402

project = "jaxsmx"
author = "The jaxsmx developers"
copyright = "2026, The jaxsmx developers"
release = version = jaxsmx.__version__

extensions = [
  "myst_nb",
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx-mathjax-offline",
]

# --- the notebooks: copied from notebooks/ at build time (one source) --------
_NB_OUT = DOCS / "notebooks"
_NB_OUT.mkdir(exist_ok=True)
_NB_SRC = {nb.name: nb for nb in (ROOT / "notebooks").glob("*.ipynb")}
for _old in _NB_OUT.glob("*.ipynb"):
  if _old.name not in _NB_SRC:
    _old.unlink()  # a notebook removed from notebooks/
for _name, _nb in sorted(_NB_SRC.items()):
  _dst = _NB_OUT / _name
  if not _dst.exists() or _dst.read_bytes() != _nb.read_bytes():
    shutil.copyfile(_nb, _dst)

nb_execution_mode = "off"  # render the committed outputs; never execute
nb_ipywidgets_js = {}  # no widget loader from a CDN
nb_merge_streams = True
# Markdown outputs (display(Markdown(...))) parsed as MyST, so that their
# $...$ formulas are typeset like the pages' own
nb_render_markdown_format = "myst"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "html_image"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# The README's sections start below a page's own title, one level down.
suppress_warnings = ["myst.header"]

# --- API reference ------------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": False}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# --- HTML --------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"jaxsmx {version}"
html_static_path = ["_static"]
html_css_files = ["jaxsmx.css"]
html_theme_options = {
  "show_toc_level": 2,
  "use_download_button": False,
  "use_fullscreen_button": False,
  "navigation_with_keys": False,
}
html_last_updated_fmt = None


def _check_api_page(app, config) -> None:
  """Fails the build if api.md does not list exactly ``jaxsmx.__all__``."""
  text = (DOCS / "api.md").read_text(encoding="utf-8")
  listed = set(re.findall(r"^   ([a-z_]+)$", text, re.M))
  public = set(jaxsmx.__all__)
  if listed != public:
    raise RuntimeError(
      "docs/api.md must list every name in jaxsmx.__all__ once: "
      f"missing {sorted(public - listed)}, not public {sorted(listed - public)}; "
      "add or remove the name under an autosummary directive."
    )


def _short_signature(app, what, name, obj, options, signature, return_annotation):
  """Shows ``ArrayLike`` by name, not as the union it stands for."""
  if signature is None:
    return None
  for expanded, short in _ALIASES:
    signature = re.sub(expanded, short, signature)
  return signature, return_annotation


# how autodoc spells the union behind jax.typing.ArrayLike
_ALIASES = (
  (
    r"~?(?:[\w.]*\.)?Array \| ~?(?:numpy\.)?ndarray \| ~?(?:numpy\.)?bool \| "
    r"~?(?:numpy\.)?number \| bool \| int \| float \| complex",
    "~jax.typing.ArrayLike",
  ),
)


# README links to repository files that are pages of this site
_README_LINKS = {
  "](derivations/REPORT.md)": "](derivations.md)",
  "](benchmarks/RESULTS.md)": "](benchmarks.md)",
  "](docs/": "](",
}


def _site_links(app, relative_path, parent_docname, content) -> None:
  """Links in included files that work on a code host, made to work here.

  README: links to REPORT.md, RESULTS.md and docs/*.md point at their pages
  here (the notebooks' links work as they are). REPORT.md: its HTML anchors become
  MyST targets, so that its contents and summary links resolve; its link to
  its own folder becomes the folder's name.
  """
  path = pathlib.Path(relative_path)
  if path.name == "README.md":
    for repo_link, page in _README_LINKS.items():
      content[0] = content[0].replace(repo_link, page)
  elif path.name == "REPORT.md":
    text = re.sub(r'^<a id="([\w-]+)"></a>$', r"(\1)=", content[0], flags=re.M)
    content[0] = text.replace("[`derivations/`](.)", "`derivations/`")


# a "." or "_" inside a name: a place where a long name may wrap
_NAME_JOINT = re.compile(r"(?<=[A-Za-z0-9])([._])(?=[A-Za-z0-9])")
_WRAPPED = re.compile(r"(<h1\b.*?</h1>|<nav\b.*?</nav>)", re.S)


def _wrap_long_names(app, exception) -> None:
  """Long function names wrap at their dots and underscores, not mid-word.

  jaxsmx.softmax_cross_entropy_with_integer_labels is wider than the page
  title's column and the sidebars; the browser may break a word only where
  the HTML offers a break, so every page title and navigation entry gets a
  ``<wbr>`` after each joint of a name (jaxsmx.css turns off breaking anywhere
  else).
  """
  if exception is not None or app.builder.format != "html":
    return

  def text_nodes(block: re.Match) -> str:
    return re.sub(
      r">([^<]+)<",
      lambda m: ">" + _NAME_JOINT.sub(r"\1<wbr>", m.group(1)) + "<",
      block.group(0),
    )

  for page in pathlib.Path(app.outdir).rglob("*.html"):
    html = page.read_text(encoding="utf-8")
    wrapped = _WRAPPED.sub(text_nodes, html)
    if wrapped != html:
      page.write_text(wrapped, encoding="utf-8")


def setup(app):
  app.connect("config-inited", _check_api_page)
  app.connect("include-read", _site_links)
  app.connect("autodoc-process-signature", _short_signature)
  app.connect("build-finished", _wrap_long_names)
