"""Numeric agreement: the checker takes the function under test, and fails
when its backward rule is wrong."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from derivations import __main__ as cli
from derivations import all_derivations, numeric_checks
from derivations.agreement import numeric
from derivations.engine import i, j, z

DERIVATIONS = {d.key: d for d in all_derivations()}
CHECKS = {c.name: c for c in numeric_checks()}


def _check(key: str, what: str) -> numeric.Numeric:
  (c,) = [c for c in CHECKS.values() if c.key == key and c.what == what]
  return c


@jax.custom_vjp
def softmax_without_cross_term(x):
  return jax.nn.softmax(x)


def _fwd(x):
  out = jax.nn.softmax(x)
  return out, out


def _bwd_diagonal_only(out, g):
  # The i = j case alone: drops the -a_i a_j term of the Jacobian.
  return (out * (1 - out) * g,)


softmax_without_cross_term.defvjp(_fwd, _bwd_diagonal_only)


@jax.custom_vjp
def ce_assuming_one_hot(logits, labels):
  return -jnp.sum(labels * jax.nn.log_softmax(logits), -1)


def _ce_fwd(logits, labels):
  return ce_assuming_one_hot(logits, labels), (logits, labels)


def _ce_bwd(res, g):
  logits, labels = res
  # a - y: right only when sum(y) = 1, which the checks do not assume.
  return g * (jax.nn.softmax(logits) - labels), -g * jax.nn.log_softmax(logits)


ce_assuming_one_hot.defvjp(_ce_fwd, _ce_bwd)


def test_correct_function_passes():
  check = _check("softmax", "Jacobian")
  result = numeric.run_numeric(check, DERIVATIONS["softmax"], fn=jax.nn.softmax)
  assert result.ok and result.max_error < 1e-12


def test_softmax_without_cross_term_is_caught():
  for what in ("Jacobian", "VJP"):
    check = _check("softmax", what)
    result = numeric.run_numeric(
      check, DERIVATIONS["softmax"], fn=softmax_without_cross_term
    )
    assert not result.ok
    assert result.max_error > 1e-3
    assert result.bucket not in ("< 1e-12", "< 1e-10")


def test_one_hot_shortcut_is_caught():
  check = _check("softmax_cross_entropy", "gradient wrt logits")
  result = numeric.run_numeric(
    check, DERIVATIONS["softmax_cross_entropy"], fn=ce_assuming_one_hot
  )
  assert not result.ok


def test_function_that_raises_is_a_failure_not_a_crash():
  def broken(x):
    raise RuntimeError("no")

  check = _check("softmax", "Jacobian")
  result = numeric.run_numeric(check, DERIVATIONS["softmax"], fn=broken)
  assert not result.ok and "RuntimeError" in result.error


def test_cli_fails_on_a_wrong_bwd_rule(tmp_path):
  out = tmp_path / "r.md"
  d = DERIVATIONS["softmax"]
  checks = [c for c in CHECKS.values() if c.key == "softmax"]
  status = cli.main(
    ["--out", str(out)],
    derivations=[d],
    checks=checks,
    fns={"softmax": softmax_without_cross_term},
  )
  assert status == 1
  assert "FAIL" in out.read_text(encoding="utf-8")


def test_lambdified_general_formula():
  # a_i (delta_ij - a_j) for n = 2..4 at once, against NumPy.
  d = DERIVATIONS["softmax"]
  expr = d.step("jacobian").formula
  from derivations import engine as _core

  expr = _core.evaluate(expr, d.ctx)
  sizes = [2, 3, 4]
  f = numeric.lambdify_general(expr, (i, j), (z,), len(sizes), 4)
  rng = np.random.default_rng(0)
  xs = [rng.standard_normal(s) for s in sizes]
  padded = np.stack([np.pad(x, (0, 4 - len(x)), constant_values=0.5) for x in xs])
  with jax.enable_x64(True):
    out = f(np.array(sizes), np.zeros(3), padded)
  for b, x in enumerate(xs):
    s = np.exp(x) / np.exp(x).sum()
    want = np.diag(s) - np.outer(s, s)
    np.testing.assert_allclose(out[b, : len(x), : len(x)], want, atol=1e-15)


def test_float64_is_scoped():
  check = _check("logsumexp", "gradient")
  numeric.run_numeric(check, DERIVATIONS["logsumexp"])
  assert jnp.ones(1).dtype == jnp.float32


def test_error_buckets_are_stable_text():
  assert numeric.bucket(3e-16) == "< 1e-12"
  assert numeric.bucket(5e-11) == "< 1e-10"
  assert numeric.bucket(2.5e-3) == "3e-03"
  assert numeric.bucket(float("nan")) == "NaN"


def test_points_are_seeded_without_hash():
  import zlib

  check = _check("softmax", "VJP")
  first = numeric._arrays(check, 5)
  again = numeric._arrays(check, 5)
  assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
  assert numeric._seed(check.name, 5) == zlib.crc32(f"{check.name}/5".encode())
