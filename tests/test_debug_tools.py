"""JAX's NaN debugging tools stay quiet on jaxsmx's edge inputs.

A user turns on ``jax.debug_nans`` or ``checkify.float_checks`` exactly when
chasing a NaN, so a library that forms a NaN and then selects it away sends
them to the wrong place. For every public function, on the inputs at its
edges (zero probabilities, masks, empty slices, ignored rows, -inf logits)
whose value and gradient have no NaN, neither tool may raise or report:

* ``jax.debug_nans(True)``, jitted and op by op (``jax.disable_jit()``, which
  checks the output of every primitive);
* ``checkify.checkify(..., errors=checkify.float_checks)``, which checks the
  output of every primitive inside the compiled program as well.

``jax.debug_infs(True)`` is quiet too, jitted and in an eager call, on every
case of ``tests/public_cases.py`` and every edge input whose arguments, value
and gradient are finite: no rule keeps a -inf (a masked logit, the log of an
empty sum) in what a compiled call returns, its residuals included. Op by op
(``jax.disable_jit()``) it is not, nor are the peers: the -inf identity of a
max reduction is an intermediate there, in ``jax.nn.softmax`` as here.

The rules use the double ``where``: the argument of a log or a division is
made safe before the operation, not only its result after.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from public_cases import CASES, Case

import jaxsmx

INF = np.inf


def _edges() -> list[Case]:
  z = np.array([[1.0, -INF, 0.5, 2.0], [-INF, -INF, -INF, -INF], [0.3, 0.1, -1.0, 0.0]])
  z = z.astype(np.float32)
  mask = np.array([[True, True, False, True], [True, True, True, True], [False] * 4])
  p = np.array([[0.5, 0.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25] * 4], np.float32)
  q = np.array([[0.25, 0.0, 0.75, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25] * 4], np.float32)
  logq = np.log(np.where(q > 0, q, 1.0)).astype(np.float32)
  logq = np.where(q > 0, logq, -INF).astype(np.float32)
  rows = np.array([True, False, True])
  onehot = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
  labels = np.array([0, 2, 3], np.int32)
  empty = np.zeros((3, 0), np.float32)
  lse, sce = jaxsmx.logsumexp, jaxsmx.softmax_cross_entropy
  ice = jaxsmx.softmax_cross_entropy_with_integer_labels
  bce = jaxsmx.sigmoid_binary_cross_entropy
  lce = jaxsmx.linear_softmax_cross_entropy
  both, one = (0, 1), (0,)
  t2, t3 = (True,) * 2, (True,) * 3
  out = []
  for f in (jaxsmx.softmax, jaxsmx.log_softmax):
    n = f.__name__
    out += [
      Case(f"{n}[-inf]", f, (z,), one, (True,)),
      Case(f"{n}[where]", lambda x, m, f=f: f(x, where=m), (z, mask), one, t2),
      Case(f"{n}[empty]", f, (empty,), one, (True,)),
    ]
  out += [
    Case("logsumexp[-inf]", lambda x: lse(x, axis=-1), (z,), one, (True,)),
    Case("logsumexp[where]", lambda x, m: lse(x, axis=-1, where=m), (z, mask), one, t2),
    Case("logsumexp[empty]", lambda x: lse(x, axis=-1), (empty,), one, (True,)),
  ]
  for name, f, x in [
    ("entropy", jaxsmx.entropy, p),
    ("softmax_entropy", jaxsmx.softmax_entropy, z),
  ]:
    out += [
      Case(f"{name}[zeros/-inf]", f, (x,), one, (True,)),
      Case(f"{name}[where]", lambda x, m, f=f: f(x, where=m), (x, mask), one, t2),
      Case(f"{name}[empty]", f, (empty,), one, (True,)),
    ]
  out += [
    Case("cross_entropy[zeros]", jaxsmx.cross_entropy, (p * (q > 0), q), both, t2),
    Case(
      "cross_entropy[where]",
      lambda a, b, m: jaxsmx.cross_entropy(a, b, where=m),
      (p * (q > 0), q, mask),
      both,
      t3,
    ),
    Case("kl_divergence[zeros]", jaxsmx.kl_divergence, (logq, p * (q > 0)), both, t2),
    Case(
      "kl_divergence[where]",
      lambda a, b, m: jaxsmx.kl_divergence(a, b, where=m),
      (logq, p * (q > 0), mask),
      both,
      t3,
    ),
    Case(
      "kl_divergence_with_log_targets[-inf]",
      jaxsmx.kl_divergence_with_log_targets,
      (
        logq,
        np.where(p * (q > 0) > 0, np.log(np.maximum(p, 1e-30)), -INF).astype(
          np.float32
        ),
      ),
      both,
      t2,
    ),
    Case(
      "kl_divergence_with_log_targets[where]",
      lambda a, b, m: jaxsmx.kl_divergence_with_log_targets(a, b, where=m),
      (logq, np.log(np.maximum(p, 1e-30)).astype(np.float32), mask),
      both,
      t3,
    ),
    Case(
      "convex_kl_divergence[zeros]",
      jaxsmx.convex_kl_divergence,
      (logq, 2 * p * (q > 0)),
      both,
      t2,
    ),
    Case(
      "convex_kl_divergence[where]",
      lambda a, b, m: jaxsmx.convex_kl_divergence(a, b, where=m),
      (logq, p * (q > 0), mask),
      both,
      t3,
    ),
    Case("softmax_cross_entropy[-inf]", sce, (z, onehot * np.isfinite(z)), both, t2),
    Case(
      "softmax_cross_entropy[where]",
      lambda a, b, m: sce(a, b, where=m),
      (z, onehot, mask),
      both,
      t3,
    ),
    Case(
      "softmax_cross_entropy[rows,smoothing]",
      lambda a, b, m: sce(a, b, where=m, label_smoothing=0.1),
      (z, onehot, rows),
      both,
      t3,
    ),
    Case("softmax_cross_entropy[empty]", sce, (empty, empty), both, t2),
    Case(
      "integer_ce[-inf,ignore_index]",
      lambda a, c: ice(a, c, ignore_index=2),
      (z, labels),
      one,
      t2,
    ),
    Case(
      "integer_ce[where,smoothing]",
      lambda a, c, m: ice(a, c, where=m, label_smoothing=0.1),
      (z, labels, mask),
      one,
      t3,
    ),
    Case(
      "integer_ce[rows]",
      lambda a, c, m: ice(a, c, where=m),
      (z, np.array([0, 7, 3], np.int32), rows),
      one,
      t3,
    ),
    Case(
      "sigmoid_binary_cross_entropy[inf]",
      bce,
      (
        np.array([INF, -INF, 3.0, -INF], np.float32),
        np.array([1.0, 0.0, 0.0, 0.0], np.float32),
      ),
      one,
      t2,
    ),
  ]
  out += _family_edges(z, p, onehot, mask, rows)
  r = np.random.default_rng(0)
  x = r.normal(size=(3, 2)).astype(np.float32)
  w = r.normal(size=(2, 4)).astype(np.float32)
  vocab = np.array([True, False, True, True])
  out += [
    Case(
      "linear_ce[ignore_index,where]",
      lambda x, w, c, m: lce(x, w, c, where=m, ignore_index=-100, chunk_size=2),
      (x, w, np.array([0, -100, 1], np.int32), vocab),
      (0, 1),
      (True, False, True, False),
    ),
    Case(
      "linear_ce[all masked]",
      lambda x, w, c, m: lce(x, w, c, where=m),
      (x, w, np.array([0, 1, 2], np.int32), np.zeros(4, bool)),
      (0, 1),
      (True, False, True, False),
    ),
  ]
  return out


def _family_edges(z, p, onehot, mask, rows) -> list[Case]:
  """Focal loss, pos_weight and Poly-1 at infinite logits, zero weights,
  masks and empty slices."""
  zi = np.array([INF, -INF, 90.0, -90.0, 3.0, -INF], np.float32)
  yi = np.array([1.0, 0.0, 1.0, 0.0, 0.5, 0.0], np.float32)
  focal, poly = jaxsmx.sigmoid_focal_loss, jaxsmx.poly_loss_cross_entropy
  bce = jaxsmx.sigmoid_binary_cross_entropy
  out = []
  for gamma in (0.0, 0.5, 2.0):
    out.append(
      Case(
        f"sigmoid_focal_loss[inf,gamma={gamma}]",
        lambda z, y, g: focal(z, y, alpha=0.25, gamma=g),
        (zi, yi, np.float32(gamma)),
        (0, 1, 2),
        (True, True, False),
      )
    )
  out += [
    Case(
      "sigmoid_binary_cross_entropy[inf,pos_weight 0]",
      lambda z, y, w: bce(z, y, pos_weight=w),
      (zi, yi, np.array([2.0, 1.0, 0.0, 1.0, 0.5, 0.0], np.float32)),
      (0, 1, 2),
      (True, True, True),
    ),
    Case(
      "poly_loss_cross_entropy[-inf]",
      poly,
      (z, onehot * np.isfinite(z)),
      (0, 1),
      (True,) * 2,
    ),
    Case(
      "poly_loss_cross_entropy[where]",
      lambda a, b, m: poly(a, b, where=m),
      (z, onehot, mask),
      (0, 1),
      (True,) * 3,
    ),
    Case(
      "poly_loss_cross_entropy[rows]",
      lambda a, b, m: poly(a, b, where=m, epsilon=-1.0),
      (z, p * np.isfinite(z), rows),
      (0, 1),
      (True,) * 3,
    ),
  ]
  return out


EDGES = _edges()


def _finite_sum(case):
  """The sum of the value over its non-infinite entries (-inf is a value)."""

  def f(*args):
    v = case.value(*args)
    return jnp.sum(jnp.where(jnp.isinf(v), 0.0, v))

  return f


def _value_and_grad(case):
  return jax.value_and_grad(_finite_sum(case), case.diff)


def _no_nan(tree):
  return not any(
    np.isnan(np.asarray(leaf, np.float64)).any() for leaf in jax.tree.leaves(tree)
  )


@pytest.mark.parametrize("case", EDGES, ids=repr)
def test_edge_inputs_have_no_nan(case):
  # the premise: value and gradient are free of NaN on these inputs
  assert _no_nan(case.value(*case.args)), case.value(*case.args)
  assert _no_nan(_value_and_grad(case)(*case.args))


@pytest.mark.sweep
@pytest.mark.parametrize("jit", [True, False], ids=["jit", "op-by-op"])
@pytest.mark.parametrize("case", EDGES, ids=repr)
def test_debug_nans_stays_quiet(case, jit):
  f = _value_and_grad(case)
  with jax.debug_nans(True):
    if jit:
      jax.block_until_ready(jax.jit(f)(*case.args))
      jax.block_until_ready(case.value(*case.args))
    else:
      with jax.disable_jit():
        jax.block_until_ready(f(*case.args))


@pytest.mark.sweep
@pytest.mark.parametrize("what", ["value", "grad"])
@pytest.mark.parametrize("case", EDGES, ids=repr)
def test_checkify_float_checks_stay_quiet(case, what):
  f = case.value if what == "value" else jax.grad(_finite_sum(case), case.diff)
  err, _ = checkify.checkify(f, errors=checkify.float_checks)(*case.args)
  assert err.get() is None, err.get()


def test_the_tools_catch_a_nan_selected_away():
  # what the tests above rule out: a NaN formed and then dropped by a where
  def careless(p):
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0), -1)

  p = jnp.array([[0.5, 0.0, 0.5]])
  assert _no_nan(careless(p))
  err, _ = checkify.checkify(careless, errors=checkify.float_checks)(p)
  assert err.get() is not None and "nan" in err.get().lower()
  with jax.debug_nans(True), jax.disable_jit(), pytest.raises(FloatingPointError):
    careless(p)


def _finite(tree):
  return all(
    np.all(np.isfinite(np.asarray(leaf, np.float64))) for leaf in jax.tree.leaves(tree)
  )


def _all_finite(case):
  """Finite arguments, value and gradient: log_softmax's -inf at a masked
  class is its value (as in jax.nn), entropy's +inf at p = 0 its gradient,
  and debug_infs reports those in any library."""
  if not _finite(case.args) or not _finite(case.value(*case.args)):
    return False
  return _finite(jax.grad(_finite_sum(case), case.diff)(*case.args))


# The cases whose arguments, value or gradient are not finite by definition
# (-inf logits, a masked class's -inf log-probability, entropy's +inf
# gradient at p = 0, an infinite label cost), by name within their list.
# Named rather than computed, so that collecting this file runs nothing;
# test_the_cases_left_out_are_not_finite checks the names, and the test below
# checks its premise on each case it runs.
NOT_FINITE_CASES = {"log_softmax[where]", "integer_ce[axis=(1,3)]"}
NOT_FINITE_EDGES = {
  *("softmax[-inf]", "softmax[where]", "log_softmax[-inf]", "log_softmax[where]"),
  *("logsumexp[-inf]", "logsumexp[where]", "logsumexp[empty]"),
  *("entropy[zeros/-inf]", "entropy[where]"),
  *("softmax_entropy[zeros/-inf]", "softmax_entropy[where]"),
  *("cross_entropy[zeros]", "cross_entropy[where]"),
  *("kl_divergence[zeros]", "kl_divergence[where]"),
  *("kl_divergence_with_log_targets[-inf]", "kl_divergence_with_log_targets[where]"),
  *("convex_kl_divergence[zeros]", "convex_kl_divergence[where]"),
  *("softmax_cross_entropy[-inf]", "softmax_cross_entropy[where]"),
  "softmax_cross_entropy[rows,smoothing]",
  *("integer_ce[-inf,ignore_index]", "integer_ce[where,smoothing]", "integer_ce[rows]"),
  *(
    "sigmoid_binary_cross_entropy[inf]",
    "sigmoid_binary_cross_entropy[inf,pos_weight 0]",
  ),
  *(f"sigmoid_focal_loss[inf,gamma={g}]" for g in ("0.0", "0.5", "2.0")),
  *("poly_loss_cross_entropy[-inf]", "poly_loss_cross_entropy[where]"),
  "poly_loss_cross_entropy[rows]",
}
LEFT_OUT = [c for c in CASES if c.name in NOT_FINITE_CASES]
LEFT_OUT += [c for c in EDGES if c.name in NOT_FINITE_EDGES]
FINITE = [c for c in CASES if c.name not in NOT_FINITE_CASES]
FINITE += [c for c in EDGES if c.name not in NOT_FINITE_EDGES]


def test_the_names_left_out_are_cases():
  assert NOT_FINITE_CASES <= {c.name for c in CASES}
  assert NOT_FINITE_EDGES <= {c.name for c in EDGES}


@pytest.mark.parametrize("case", LEFT_OUT, ids=repr)
def test_the_cases_left_out_are_not_finite(case):
  assert not _all_finite(case)


@pytest.mark.sweep
@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
@pytest.mark.parametrize("case", FINITE, ids=repr)
def test_debug_infs_stays_quiet_on_finite_input(case, jit):
  f = _value_and_grad(case)
  assert _all_finite(case), "the premise: finite arguments, value and gradient"
  with jax.debug_infs(True):
    if jit:
      jax.block_until_ready(jax.jit(f)(*case.args))
    else:
      jax.block_until_ready(f(*case.args))
      jax.block_until_ready(case.value(*case.args))


def test_debug_infs_catches_an_inf_residual():
  # what the test above rules out: a masked logit kept as a residual
  @jax.custom_vjp
  def careless(z, m):
    return jnp.sum(jnp.where(m, z, -jnp.inf), -1)

  def fwd(z, m):
    kept = jnp.where(m, z, -jnp.inf)
    return jnp.sum(jnp.where(m, kept, 0.0), -1), (kept, m)

  def bwd(res, g):
    kept, m = res
    return jnp.where(m, g[..., None], 0.0) + 0 * jnp.where(m, kept, 0.0), None

  careless.defvjp(fwd, bwd)
  z, m = jnp.ones((2, 3)), jnp.array([[True, False, True]] * 2)
  loss = jax.jit(lambda z: jnp.sum(jax.vjp(careless, z, m)[1](jnp.ones(2))[0]))
  loss(z)
  with jax.debug_infs(True), pytest.raises(FloatingPointError):
    jax.vjp(jax.jit(fwd), z, m)
