"""jaxsmx under JAX's global settings, as real programs run it.

* No implicit promotion inside the library: every case of
  ``tests/public_cases.py``, and the broadcasting cases below, give the same
  values and gradients under ``jax.numpy_dtype_promotion("strict")`` and
  ``jax.numpy_rank_promotion("raise")`` as without them.
* Integer and boolean inputs are promoted as jax.nn promotes them (int32 to
  float32 also under x64, int64 to float64), by every function that takes
  logits or probabilities: one rule for the library.
* Static settings (``axis``, ``label_smoothing``, ``ignore_index``,
  ``check_labels``, ``keepdims``, ``return_sign``, and the fused loss's
  ``chunk_size``, ``z_loss`` and ``softcap``) accept Python, NumPy and
  concrete JAX scalars alike; a traced one gets a clear error.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from public_cases import CASES, Case

import jaxsmx

sce = jaxsmx.softmax_cross_entropy
ice = jaxsmx.softmax_cross_entropy_with_integer_labels
bce = jaxsmx.sigmoid_binary_cross_entropy
lse = jaxsmx.logsumexp
lce = jaxsmx.linear_softmax_cross_entropy

N, C = 4, 5


def _broadcasting() -> list[Case]:
  """Inputs that the library broadcasts itself (NumPy and optax rules): under
  rank promotion "raise" it must do so explicitly."""
  r = np.random.default_rng(3)
  z = r.normal(size=(N, C)).astype(np.float32)
  p = r.dirichlet(np.ones(C), size=N).astype(np.float32)
  t = r.dirichlet(np.ones(C)).astype(np.float32)  # one distribution, [C]
  rows = np.array([True, False, True, True])
  classes = np.array([True, True, False, True, True])
  c = np.array([0, 3, 1, 4], np.int32)
  b = r.uniform(0.5, 2.0, C).astype(np.float32)
  both, one = (0, 1), (0,)
  return [
    Case(
      "softmax[where (C,)]",
      lambda x, m: jaxsmx.softmax(x, where=m),
      (z, classes),
      one,
      (True, False),
    ),
    Case(
      "log_softmax[where (C,)]",
      lambda x, m: jnp.where(m, jaxsmx.log_softmax(x, where=m), 0.0),
      (z, classes),
      one,
      (True, False),
    ),
    Case(
      "logsumexp[b (C,)]",
      lambda x, b: lse(x, axis=-1, b=b),
      (z, b),
      both,
      (True, False),
    ),
    Case(
      "logsumexp[where (C,)]",
      lambda x, m: lse(x, axis=-1, where=m),
      (z, classes),
      one,
      (True, False),
    ),
    Case(
      "softmax_entropy[where (C,)]",
      lambda x, m: jaxsmx.softmax_entropy(x, where=m),
      (z, classes),
      one,
      (True, False),
    ),
    Case(
      "entropy[where (C,)]",
      lambda x, m: jaxsmx.entropy(x, where=m),
      (p, classes),
      one,
      (True, False),
    ),
    Case("cross_entropy[p (C,)]", jaxsmx.cross_entropy, (t, p), both, (False, True)),
    Case(
      "kl_divergence[targets (C,)]",
      jaxsmx.kl_divergence,
      (np.log(p), t),
      both,
      (True, False),
    ),
    Case("softmax_cross_entropy[labels (C,)]", sce, (z, t), both, (True, False)),
    Case(
      "softmax_cross_entropy[where rows,smoothing]",
      lambda z, y, m: sce(z, y, where=m, label_smoothing=0.2),
      (z, p, rows),
      both,
      (True, True, True),
    ),
    Case(
      "softmax_cross_entropy[int one-hot]",
      sce,
      (z, np.eye(C, dtype=np.int32)[c]),
      one,
      (True, True),
    ),
    Case("integer_ce[labels (1,)]", ice, (z, c[:1]), one, (True, False)),
    Case(
      "integer_ce[where (C,) masks classes per row]",
      lambda z, c, m: ice(z, c, where=m[None], label_smoothing=0.1),
      (z, c, classes),
      one,
      (True, True, False),
    ),
    Case(
      "integer_ce[int8 labels,where rows]",
      lambda z, c, m: ice(z, c, where=m),
      (z, c.astype(np.int8), rows),
      one,
      (True,) * 3,
    ),
    Case(
      "sigmoid_binary_cross_entropy[scalar label]",
      lambda z: bce(z, 1.0),
      (z,),
      one,
      (True,),
    ),
    Case("sigmoid_binary_cross_entropy[labels (C,)]", bce, (z, t), both, (True, False)),
  ]


def _linear() -> list[Case]:
  """The fused loss with every option that adds a [V] row to [N, V] logits or
  mixes dtypes, in every reduction and in 16 bits."""
  r = np.random.default_rng(5)
  x = r.normal(size=(N, 3)).astype(np.float32)
  w = r.normal(size=(3, C)).astype(np.float32)
  bias = r.normal(size=(C,)).astype(np.float32)
  classes = np.array([True, True, False, True, True])
  c = np.array([0, -100, 3, 4], np.int32)
  omega = r.uniform(0.5, 2.0, N).astype(np.float32)
  out = []
  for reduction in ("none", "sum", "mean"):
    out.append(
      Case(
        f"linear_ce[bias,where,smoothing,z_loss,softcap,weights,{reduction}]",
        lambda x, w, b, m, o, reduction=reduction: jaxsmx.linear_softmax_cross_entropy(
          x,
          w,
          c,
          bias=b,
          where=m,
          ignore_index=-100,
          label_smoothing=0.1,
          z_loss=1e-3,
          softcap=5.0,
          weights=o,
          reduction=reduction,
          chunk_size=2,
        ),
        (x, w, bias, classes, omega),
        (0, 1, 2, 4),
        (True, False, False, False, True),
      )
    )
  out.append(
    Case(
      "linear_ce[labels (1,),weights (1,),mean]",
      lambda x, w, o: jaxsmx.linear_softmax_cross_entropy(
        x, w, c[2:3], weights=o, reduction="mean"
      ),
      (x, w, omega[:1]),
      (0, 1, 2),
      (True, False, False),
    )
  )
  for dtype in (jnp.bfloat16, jnp.float16):
    out.append(
      Case(
        f"linear_ce[{jnp.dtype(dtype).name},bias,mean]",
        lambda x, w, b: jaxsmx.linear_softmax_cross_entropy(
          x, w, c, bias=b, ignore_index=-100, reduction="mean", chunk_size=2
        ),
        (x.astype(dtype), w.astype(dtype), bias.astype(dtype)),
        (0, 1, 2),
        (True, False, False),
      )
    )
  return out


BROADCASTING = _broadcasting()
TABLE = CASES + BROADCASTING + _linear()


@contextlib.contextmanager
def _strictest():
  with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
    yield


def _assert_same(got, want):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


@pytest.mark.parametrize("case", TABLE, ids=repr)
def test_strict_dtype_promotion_and_rank_promotion_raise(case):
  # Tracing under the strictest settings raises on any implicit promotion,
  # and the program traced must be the one traced under the default settings
  # (so it computes the same numbers, without compiling either)
  def f(*args):
    return case.value(*args), case.grad(*args)

  default = jax.make_jaxpr(f)(*case.args)
  with _strictest():
    strict = jax.make_jaxpr(f)(*case.args)
  assert str(strict) == str(default), "the strictest settings trace another program"


def test_the_strict_check_catches_a_float_times_a_bool():
  # what the test above rules out: promotion inside a function
  def careless(z, c):
    return jnp.sum(
      jax.nn.log_softmax(z) * (1.0 * (c[:, None] == jnp.arange(C)[None])), -1
    )

  z, c = jnp.zeros((N, C)), jnp.zeros(N, jnp.int32)
  careless(z, c)
  with _strictest(), pytest.raises(jax.dtypes.TypePromotionError):
    careless(z, c)
  with _strictest(), pytest.raises(ValueError, match="rank_promotion"):
    jnp.sum(z + jnp.ones(C))


# ---------------------------------------------------------------------------
# integer and boolean inputs


def _real_inputs(name, x):
  """`name`'s arguments with x as its first array of logits or probabilities,
  the others floating in `like`'s dtype (a function of x's promoted dtype)."""

  def build(like):
    p = jnp.full((N, C), 1.0 / C, like)
    return {
      "softmax": lambda: jaxsmx.softmax(x),
      "log_softmax": lambda: jaxsmx.log_softmax(x),
      "logsumexp": lambda: lse(x, axis=-1),
      "logsumexp[b]": lambda: lse(x, axis=-1, b=x),
      "softmax_entropy": lambda: jaxsmx.softmax_entropy(x),
      "entropy": lambda: jaxsmx.entropy(x),
      "cross_entropy[p]": lambda: jaxsmx.cross_entropy(x, p),
      "cross_entropy[q]": lambda: jaxsmx.cross_entropy(p, x),
      "kl_divergence[log_predictions]": lambda: jaxsmx.kl_divergence(x, p),
      "kl_divergence[targets]": lambda: jaxsmx.kl_divergence(jnp.log(p), x),
      "softmax_cross_entropy": lambda: sce(x, p),
      "integer_ce": lambda: ice(x, jnp.arange(N) % C),
      "sigmoid_binary_cross_entropy": lambda: bce(x, p),
    }[name]()

  return build


REAL_INPUTS = [
  "softmax",
  "log_softmax",
  "logsumexp",
  "logsumexp[b]",
  "softmax_entropy",
  "entropy",
  "cross_entropy[p]",
  "cross_entropy[q]",
  "kl_divergence[log_predictions]",
  "kl_divergence[targets]",
  "softmax_cross_entropy",
  "integer_ce",
  "sigmoid_binary_cross_entropy",
]


@pytest.mark.sweep
@pytest.mark.parametrize("x64", [False, True], ids=["x32", "x64"])
@pytest.mark.parametrize("dtype", ["bool", "uint8", "int32", "int64"])
@pytest.mark.parametrize("name", REAL_INPUTS)
def test_integer_inputs_promote_as_jax_nn(name, dtype, x64):
  with jax.enable_x64(x64):
    raw = np.random.default_rng(0).integers(0, 3, (N, C)).astype(dtype)
    x = jnp.asarray(raw)  # int64 is int32 without x64, as for jax.nn
    # the peer's rule: jax.nn.logsumexp takes every integer dtype and bool
    want_dtype = jax.nn.logsumexp(x).dtype
    if dtype != "bool":
      assert jax.nn.softmax(x).dtype == want_dtype
    got = _real_inputs(name, x)(want_dtype)
    want = _real_inputs(name, x.astype(want_dtype))(want_dtype)
    assert got.dtype == want_dtype, (got.dtype, want_dtype)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    if name in ("softmax", "log_softmax", "logsumexp"):
      peer = {"logsumexp": lambda x: jax.nn.logsumexp(x, axis=-1)}.get(
        name, getattr(jax.nn, name)
      )
      # jax.nn.softmax and log_softmax subtract the maximum in the integer
      # dtype, which wraps for unsigned (and wide-ranged) integers: the
      # peer's value is that of the converted input
      np.testing.assert_allclose(got, peer(x.astype(want_dtype)), rtol=1e-6)


def test_integer_logits_do_not_wrap_around():
  # jax.nn.softmax gives [1, 0] and [nan, 0] here (README: Differences)
  wide = jaxsmx.softmax(jnp.array([-100, 100], jnp.int8))
  np.testing.assert_allclose(wide, [0.0, 1.0], atol=1e-30)
  unsigned = jaxsmx.log_softmax(jnp.array([1, 2], jnp.uint8))
  np.testing.assert_allclose(unsigned, jax.nn.log_softmax(jnp.array([1.0, 2.0])))


def test_integer_inputs_under_strict_promotion():
  x = jnp.arange(N * C, dtype=jnp.int32).reshape(N, C) % 3
  with _strictest():
    for name in REAL_INPUTS:
      assert _real_inputs(name, x)(jnp.float32).dtype == jnp.float32, name


def test_complex_inputs_are_refused_with_the_rule():
  x = jnp.ones((N, C), jnp.complex64)
  for f in (jaxsmx.softmax, jaxsmx.softmax_entropy, jaxsmx.entropy):
    with pytest.raises(TypeError, match=r"must be real .*complex64"):
      f(x)
  with pytest.raises(TypeError, match=r"logsumexp: b must be real"):
    lse(jnp.ones(C), b=x[0])


# ---------------------------------------------------------------------------
# static settings


def _scalars(value):
  """The same setting as a config system may hand it over."""
  kind = np.float32 if isinstance(value, float) else np.int64
  if isinstance(value, bool):
    kind = np.bool_
  out = [value, kind(value), np.asarray(value, kind), jnp.asarray(value)]
  if not isinstance(value, bool):
    out.append(jnp.asarray(value, jnp.int32 if kind is np.int64 else jnp.float32))
  return out


def _static_cases():
  z = np.random.default_rng(4).normal(size=(N, C)).astype(np.float32)
  p = np.asarray(jax.nn.softmax(z[::-1]))
  c = np.array([0, -100, 2, 4], np.int32)
  x = z[:, :3]
  w = np.random.default_rng(6).normal(size=(3, C)).astype(np.float32)
  out = []
  for name, f in [
    ("softmax", jaxsmx.softmax),
    ("log_softmax", jaxsmx.log_softmax),
    ("logsumexp", lse),
    ("softmax_entropy", jaxsmx.softmax_entropy),
    ("entropy", lambda x, axis: jaxsmx.entropy(jax.nn.softmax(x), axis=axis)),
    ("cross_entropy", lambda x, axis: jaxsmx.cross_entropy(p, p + 0 * x, axis=axis)),
    ("kl_divergence", lambda x, axis: jaxsmx.kl_divergence(x, p, axis=axis)),
    ("softmax_cross_entropy", lambda x, axis: sce(x, p, axis=axis)),
  ]:
    out.append((f"{name}[axis]", "axis", 0, lambda v, f=f: f(z, axis=v)))
    out.append((f"{name}[axis tuple]", "axis", -1, lambda v, f=f: f(z, axis=(0, v))))
  zeros = np.zeros(C, np.int32)
  out.append(("integer_ce[axis]", "axis", 0, lambda v: ice(z, zeros, axis=v)))
  out.append(
    ("integer_ce[axis tuple]", "axis", -1, lambda v: ice(z, zeros[0], axis=(0, v)))
  )
  out += [
    (
      "sce[label_smoothing]",
      "label_smoothing",
      0.25,
      lambda v: sce(z, p, label_smoothing=v),
    ),
    (
      "ice[label_smoothing]",
      "label_smoothing",
      0.25,
      lambda v: ice(z, c, label_smoothing=v, ignore_index=-100),
    ),
    ("ice[ignore_index]", "ignore_index", -100, lambda v: ice(z, c, ignore_index=v)),
    (
      "ice[check_labels]",
      "check_labels",
      False,
      lambda v: ice(z, np.abs(c) % C, check_labels=v),
    ),
    ("logsumexp[keepdims]", "keepdims", True, lambda v: lse(z, axis=1, keepdims=v)),
    ("lce[chunk_size]", "chunk_size", 2, lambda v: lce(x, w, c, chunk_size=v)),
    ("lce[ignore_index]", "ignore_index", -100, lambda v: lce(x, w, c, ignore_index=v)),
    (
      "lce[label_smoothing]",
      "label_smoothing",
      0.25,
      lambda v: lce(x, w, c, label_smoothing=v, ignore_index=-100),
    ),
    ("lce[z_loss]", "z_loss", 0.5, lambda v: lce(x, w, c, z_loss=v, ignore_index=-100)),
    (
      "lce[softcap]",
      "softcap",
      4.0,
      lambda v: lce(x, w, c, softcap=v, ignore_index=-100),
    ),
    (
      "lce[check_labels]",
      "check_labels",
      False,
      lambda v: lce(x, w, np.abs(c) % C, check_labels=v),
    ),
    (
      "logsumexp[return_sign]",
      "return_sign",
      True,
      lambda v: lse(z, axis=1, b=p - 0.2, return_sign=v),
    ),
  ]
  return out


STATIC = _static_cases()


@pytest.mark.parametrize("case", STATIC, ids=lambda c: c[0])
def test_static_settings_accept_python_numpy_and_jax_scalars(case):
  _, _, value, f = case
  want = f(value)
  for given in _scalars(value)[1:]:
    _assert_same(f(given), want)


@pytest.mark.parametrize("case", STATIC, ids=lambda c: c[0])
def test_a_traced_static_setting_gets_a_clear_error(case):
  _, name, value, f = case
  rule = rf"{name} must be a concrete value, not a traced array.*static_argnames"
  with pytest.raises(TypeError, match=rule):
    jax.jit(f)(value)


def test_bad_static_settings_still_fail_with_their_rule():
  z = jnp.zeros((N, C))
  with pytest.raises(TypeError, match="ignore_index must be an int or None"):
    ice(z, jnp.zeros(N, jnp.int32), ignore_index=jnp.float32(-100))
  with pytest.raises(TypeError, match="check_labels must be a bool"):
    ice(z, jnp.zeros(N, jnp.int32), check_labels=jnp.int32(1))
  with pytest.raises(TypeError, match="axis must be an int, a tuple of ints or None"):
    jaxsmx.softmax(z, axis=jnp.float32(1))
  with pytest.raises(ValueError, match="label_smoothing must lie in"):
    sce(z, z, label_smoothing=jnp.float32(2.0))
  x, w, c = jnp.zeros((N, 3)), jnp.zeros((3, C)), jnp.zeros(N, jnp.int32)
  with pytest.raises(TypeError, match="chunk_size must be an int or None"):
    lce(x, w, c, chunk_size=jnp.float32(2))
  with pytest.raises(ValueError, match="chunk_size must be positive"):
    lce(x, w, c, chunk_size=np.int64(0))
  with pytest.raises(ValueError, match="z_loss must be finite and >= 0"):
    lce(x, w, c, z_loss=np.float32(-1))
