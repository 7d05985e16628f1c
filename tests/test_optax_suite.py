"""optax's own classification tests, run against jaxsmx.

optax defines its API by ``optax/losses/_classification_test.py``, which its
wheel ships. This module reads that file from the installed optax at test
time (nothing of it is copied into this repository) and changes two imports
before it runs it:

* ``_classification`` resolves to a namespace in which the functions that
  jaxsmx provides are jaxsmx's (``SWAPPED``); every other name keeps optax's;
* ``jax.test_util.check_grads`` checks reverse mode only: jaxsmx's functions
  are :func:`jax.custom_vjp` rules, which have no forward mode, so each
  forward-mode check runs in reverse mode instead.

The test classes that exercise a swapped function (``CLASSES``) then run in
the ordinary pytest run, under their optax names.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import pathlib
import re
import types

import jax.test_util
import optax.losses._classification as optax_classification
import pytest

import jaxsmx

SWAPPED = (
  "softmax_cross_entropy",
  "softmax_cross_entropy_with_integer_labels",
  "sigmoid_binary_cross_entropy",
  "kl_divergence",
  "sigmoid_focal_loss",
  "poly_loss_cross_entropy",
  "kl_divergence_with_log_targets",
)
CLASSES = (
  "SoftmaxCrossEntropyTest",
  "SafeSoftmaxCrossEntropyTest",
  "SoftmaxCrossEntropyWithIntegerLabelsTest",
  "SigmoidCrossEntropyTest",
  "PolyLossTest",
  "KLDivergenceTest",
  "KLDivergenceWithLogTargetsTest",
  "SigmoidFocalLossTest",
)
IMPORTS = {
  "from optax.losses import _classification\n": (
    "_classification = __jaxsmx_classification__\n"
  ),
  "import jax.test_util as jaxtest\n": "jaxtest = __reverse_mode_test_util__\n",
}


def optax_test_file() -> pathlib.Path:
  spec = importlib.util.find_spec("optax.losses._classification_test")
  if spec is None or spec.origin is None:
    raise FileNotFoundError(
      "optax/losses/_classification_test.py is not in the installed optax;"
      " install optax from its wheel (pip install optax), which ships it."
    )
  return pathlib.Path(spec.origin)


def swapped_namespace() -> types.SimpleNamespace:
  """optax's _classification with jaxsmx's functions in place of its own."""
  names = {
    k: v for k, v in vars(optax_classification).items() if not k.startswith("__")
  }
  names.update({name: getattr(jaxsmx, name) for name in SWAPPED})
  return types.SimpleNamespace(**names)


@functools.wraps(jax.test_util.check_grads)
def _check_grads_reverse(f, args, order, modes=("fwd", "rev"), **kwargs):
  del modes  # every requested mode runs as reverse mode
  return jax.test_util.check_grads(f, args, order, modes=("rev",), **kwargs)


def load_suite(namespace: object | None = None) -> types.ModuleType:
  """optax's test module with the two imports changed, as a fresh module."""
  path = optax_test_file()
  source = path.read_text()
  for old, new in IMPORTS.items():
    if source.count(old) != 1:
      raise AssertionError(
        f"{path} no longer has the line {old.strip()!r} exactly once; update"
        " IMPORTS in tests/test_optax_suite.py for this optax version."
      )
    source = source.replace(old, new)
  module = types.ModuleType("optax_classification_test_on_jaxsmx")
  module.__file__ = str(path)
  module.__dict__["__jaxsmx_classification__"] = (
    swapped_namespace() if namespace is None else namespace
  )
  module.__dict__["__reverse_mode_test_util__"] = types.SimpleNamespace(
    check_grads=_check_grads_reverse
  )
  exec(compile(source, str(path), "exec"), module.__dict__)
  return module


_SUITE = load_suite()
for _name in CLASSES:
  _cls = getattr(_SUITE, _name)
  _cls.__module__ = __name__
  globals()[_name] = _cls


def test_every_class_that_uses_a_swapped_function_runs():
  source = optax_test_file().read_text()
  uses = set()
  for node in ast.parse(source).body:
    if isinstance(node, ast.ClassDef):
      body = ast.get_source_segment(source, node) or ""
      if any(re.search(rf"_classification\.{f}\b", body) for f in SWAPPED):
        uses.add(node.name)
  assert "KLDivergenceTest" in uses  # the scan finds them
  assert uses <= set(CLASSES), sorted(uses - set(CLASSES))


def test_the_suite_runs_jaxsmx():
  namespace = vars(_SUITE)["__jaxsmx_classification__"]
  for name in SWAPPED:
    assert getattr(namespace, name) is getattr(jaxsmx, name)
  assert namespace.hinge_loss is optax_classification.hinge_loss


def test_the_suite_catches_a_wrong_loss():
  # with a wrong softmax_cross_entropy swapped in, optax's tests fail
  import unittest

  wrong = swapped_namespace()
  wrong.softmax_cross_entropy = lambda *a, **k: (
    1.01 * jaxsmx.softmax_cross_entropy(*a, **k)
  )
  suite = load_suite(wrong)
  result = unittest.TestResult()
  unittest.defaultTestLoader.loadTestsFromTestCase(suite.SoftmaxCrossEntropyTest).run(
    result
  )
  assert result.failures, "optax's tests did not notice a 1% error"


def test_reverse_mode_check_catches_a_wrong_gradient():
  # check_grads, as the suite calls it, still fails on a wrong VJP
  import jax

  @jax.custom_vjp
  def f(x):
    return x**2

  f.defvjp(lambda x: (x**2, x), lambda x, g: (3.0 * x * g,))
  with pytest.raises(AssertionError):
    _check_grads_reverse(f, (jax.numpy.array([1.5, -0.5]),), order=1)
