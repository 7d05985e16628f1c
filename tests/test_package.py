"""Packaging facts: light imports, version from metadata, the public API."""

import importlib.metadata
import importlib.resources
import inspect
import json
import subprocess
import sys

import jaxsmx

# issue 2's API table, with its argument lists
API = {
  "softmax": "(x, axis=-1, where=None)",
  "log_softmax": "(x, axis=-1, where=None)",
  "logsumexp": "(a, axis=None, b=None, keepdims=False, return_sign=False, where=None)",
  "softmax_entropy": "(logits, axis=-1, where=None)",
  "entropy": "(probs, axis=-1, where=None)",
  "cross_entropy": "(p, q, axis=-1, where=None)",
  "softmax_cross_entropy": (
    "(logits, labels, axis=-1, where=None, *, label_smoothing=0.0)"
  ),
  "softmax_cross_entropy_with_integer_labels": (
    "(logits, labels, axis=-1, where=None, *, label_smoothing=0.0, ignore_index=None,"
    " class_weights=None, check_labels=False)"
  ),
  "kl_divergence": "(log_predictions, targets, axis=-1, where=None)",
  "kl_divergence_with_log_targets": (
    "(log_predictions, log_targets, axis=-1, where=None)"
  ),
  "convex_kl_divergence": "(log_predictions, targets, axis=-1, where=None)",
  "sigmoid_binary_cross_entropy": "(logits, labels, *, pos_weight=None)",
  "sigmoid_focal_loss": "(logits, labels, *, alpha=None, gamma=2.0)",
  "poly_loss_cross_entropy": ("(logits, labels, *, epsilon=2.0, axis=-1, where=None)"),
}


def test_import_does_not_load_sympy_torch_or_optax():
  code = (
    "import sys, json, jaxsmx;"
    " print(json.dumps([m for m in ('sympy', 'torch', 'optax')"
    " if m in sys.modules]))"
  )
  out = subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    check=True,
    timeout=120,
  )
  assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_version_comes_from_package_metadata():
  assert jaxsmx.__version__ == importlib.metadata.version("jaxsmx")
  assert jaxsmx.__version__ != "0.0.0+unknown"


def test_all_lists_exactly_the_public_functions():
  public = {
    name
    for name, value in vars(jaxsmx).items()
    if not name.startswith("_") and inspect.isfunction(value)
  }
  assert sorted(jaxsmx.__all__) == sorted(public)
  assert len(set(jaxsmx.__all__)) == len(jaxsmx.__all__)
  assert set(API) <= set(jaxsmx.__all__)
  for name in jaxsmx.__all__:
    assert callable(getattr(jaxsmx, name)), name


def _plain_signature(fn) -> str:
  """The signature without annotations, as written in the API table."""
  params = [
    p.replace(annotation=inspect.Parameter.empty)
    for p in inspect.signature(fn).parameters.values()
  ]
  return str(inspect.Signature(params))


def test_signatures_match_the_api_table():
  for name, signature in API.items():
    assert _plain_signature(getattr(jaxsmx, name)) == signature, name


def test_py_typed_is_shipped():
  assert importlib.resources.files("jaxsmx").joinpath("py.typed").is_file()
