"""The option, edge and dtype cases, and the mutation test of the derivations.

The full run of the cases is in test_derivations.py's shared report (with the
check that they reach every kernel path of the fused loss); these tests show
that the cases and the mutation runner catch wrong rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect

import jax
import jax.numpy as jnp

import jaxsmx
from derivations import cases as all_cases
from derivations import mutate
from derivations.agreement import cases


def _kl_forgetting_the_cotangent():
  @jax.custom_vjp
  def kl(lq, t):
    return jaxsmx.kl_divergence(lq, t)

  def fwd(lq, t):
    return kl(lq, t), (lq, t)

  def bwd(res, g):
    lq, t = res
    # wrong: the gradient of the sum, whatever the cotangent
    _, pull = jax.vjp(jaxsmx.kl_divergence, lq, t)
    return pull(jnp.ones_like(g))

  kl.defvjp(fwd, bwd)

  def fn(log_predictions, targets, axis=-1, where=None):
    assert where is None
    return kl(log_predictions, targets)

  return fn


def test_plain_cases_pass_on_jaxsmx():
  chosen = [c for c in all_cases() if c.function == "kl_divergence"]
  chosen = [c for c in chosen if "where" not in c.option]
  results = cases.run_cases(chosen)
  assert all(r.ok for r in results), [(r.case.name, cases.bound(r)) for r in results]


def test_a_rule_that_forgets_the_cotangent_is_caught():
  chosen = [
    c
    for c in all_cases()
    if c.function == "kl_divergence" and c.option == "plain" and c.dtype == "float64"
  ]
  results = cases.run_cases(chosen, {"kl_divergence": _kl_forgetting_the_cotangent()})
  by_wrt = {r.case.wrt: r for r in results}
  assert not by_wrt["log_predictions"].ok
  assert by_wrt["log_predictions"].error > 1e-3


def test_a_gradient_in_the_wrong_dtype_is_caught():
  def rounded(logits, labels, axis=-1, where=None, *, label_smoothing=0.0):
    # the labels' gradient rounded through the logits' dtype
    @jax.custom_vjp
    def f(z, y):
      return jaxsmx.softmax_cross_entropy(z, y)

    def fwd(z, y):
      return f(z, y), (z, y)

    def bwd(res, g):
      z, y = res
      dz, dy = jax.vjp(jaxsmx.softmax_cross_entropy, z, y)[1](g)
      return dz, dy.astype(z.dtype).astype(y.dtype)

    f.defvjp(fwd, bwd)
    return f(logits, labels)

  chosen = [
    c
    for c in all_cases()
    if c.function == "softmax_cross_entropy"
    and c.option == "plain"
    and c.dtype == "float32"
    and c.other_dtype == "bfloat16"
    and c.wrt == "labels"
  ]
  assert len(chosen) == 1
  (result,) = cases.run_cases(chosen, {"softmax_cross_entropy": rounded})
  assert not result.ok
  (right,) = cases.run_cases(chosen)
  assert right.ok


def test_every_function_is_run_with_its_options():
  by_fn: dict[str, set[str]] = {}
  for c in all_cases():
    by_fn.setdefault(c.function, set()).add(c.option)
  assert set(by_fn) == set(jaxsmx.__all__)
  for fn, options in by_fn.items():
    # a class-axis mask (the fused loss's is over the vocabulary: below)
    takes_where = "where" in inspect.signature(getattr(jaxsmx, fn)).parameters
    if takes_where and fn != "linear_softmax_cross_entropy":
      assert any("where per class" in o for o in options), fn
  assert any(
    "ignore_index" in o for o in by_fn["softmax_cross_entropy_with_integer_labels"]
  )
  linear = by_fn["linear_softmax_cross_entropy"]
  for word in ("V = 7", "where", "ignore_index", "z_loss", "softcap", "reduction"):
    assert any(word in o for o in linear), word


def test_mutations_are_many_and_apply_to_a_copy(tmp_path):
  assert len(mutate.MUTATIONS) >= 30
  assert len({m.key for m in mutate.MUTATIONS}) == len(mutate.MUTATIONS)
  kinds = {m.kind for m in mutate.MUTATIONS}
  assert {"mask", "option", "guard", "chunk", "dtype", "cotangent"} <= kinds
  files = {m.file.split("/", 1)[0] for m in mutate.MUTATIONS}  # _linear/x.py: _linear
  assert files == set(mutate.BY_FILE)
  m = mutate.MUTATIONS[0]
  real = mutate.SOURCE / m.file
  before = hashlib.sha256(real.read_bytes()).hexdigest()
  assert mutate.apply(m, tmp_path)
  assert m.new in (tmp_path / "jaxsmx" / m.file).read_text()
  assert hashlib.sha256(real.read_bytes()).hexdigest() == before


def test_a_sample_of_mutations_is_caught():
  """Five mutations of five kinds in five files, each applied to a copy of
  jaxsmx and caught by the checks in a fresh process; they stop at the first
  failing check (``make mutate`` runs every mutation with every check)."""
  by_key = {m.key: m for m in mutate.MUTATIONS}
  sample = tuple(by_key[k] for k in mutate.SAMPLE)
  assert len({m.kind for m in sample}) == len({m.file for m in sample}) == 5
  outcomes = mutate.run_all(sample, workers=2, first=True)
  assert [o.status for o in outcomes] == ["caught"] * 5, mutate.markdown(outcomes)
  assert all(o.failed for o in outcomes)


def test_a_wrong_displayed_definition_is_caught():
  import sympy as sp

  from derivations import engine
  from derivations.agreement.numeric import LOGITS, AgreesWithJax
  from derivations.softmax import SOFTMAX_CTX, S

  z, i = engine.z, engine.i
  agrees = AgreesWithJax(lambda jx, x: jx.softmax(x), ((z, LOGITS),))
  right = engine.Step(
    "", engine.eq(engine.a[i], sp.exp(z[i]) / S), (agrees,), role="definition"
  )
  wrong = engine.Step(
    "", engine.eq(engine.a[i], sp.exp(-z[i]) / S), (agrees,), role="definition"
  )
  assert engine.check_step(right, SOFTMAX_CTX).ok
  verdicts = engine.check_step(wrong, SOFTMAX_CTX).verdicts
  assert [v.ok for v in verdicts] == [False, False]  # Defines, AgreesWithJax


def test_masked_forms_reduce_and_a_wrong_mask_rule_is_caught():
  from derivations import engine, masks

  d = masks.masks_derivation()
  assert all(r.ok for r in engine.check_derivation(d))
  k, j, a, g = engine.k, engine.j, engine.a, masks.g_
  # the masked VJP with sum(g) in place of <g, a>
  wrong = engine.Step(
    "",
    engine.eq(
      masks.summation(engine.Dot(g[k], engine.D(a[k], engine.z[j])), k),
      engine.Dot(a[j], masks.Terms(g[j], -masks.summation(g[k]))),
    ),
    (engine.General(),),
  )
  assert not engine.check_step(wrong, d.ctx).ok


def test_a_forward_value_that_sums_masked_terms_is_caught():
  def summing_masked_terms(p, q, axis=-1, where=None):
    right = jaxsmx.cross_entropy(p, q, axis=axis, where=where)
    unmasked = jaxsmx.cross_entropy(p, q, axis=axis)
    return right + jax.lax.stop_gradient(unmasked - right)  # gradient unchanged

  chosen = [
    c
    for c in all_cases()
    if c.function == "cross_entropy"
    and c.option == "where per class, empty slice"
    and c.dtype == "float64"
  ]
  assert chosen and all(c.value is not None for c in chosen)
  assert all(r.ok for r in cases.run_cases(chosen))
  wrong = cases.run_cases(chosen, {"cross_entropy": summing_masked_terms})
  assert [r.ok for r in wrong] == [False] * len(chosen)
  assert all(r.detail.startswith("value differs") for r in wrong)


def test_a_case_that_misses_its_kernel_path_fails():
  fused = [c for c in all_cases() if c.function == "linear_softmax_cross_entropy"]
  case = next(c for c in fused if c.path == "per_example" and c.dtype == "float64")
  (ok,) = cases.run_cases([case])
  assert ok.ok and "per_example" in ok.paths
  (wrong,) = cases.run_cases([dataclasses.replace(case, path="reduced_one_pass")])
  assert not wrong.ok and "not reduced_one_pass" in wrong.detail
