"""Every public jaxsmx function, with every option, as data for the drop-in tests.

``CASES`` lists one entry per (function, option set): a function of arrays
only (the options are closed over), its arrays, which of them are
differentiable, and which have a leading batch axis (for a symbolic batch
dimension under :mod:`jax.export`). ``tests/test_effects.py``,
``tests/test_export.py`` and ``tests/test_debug_tools.py`` share it, so a new
option is tested by all three once it is listed here.

Options that a function does not take yet (``logsumexp``'s ``b`` and
``return_sign``, the losses' ``check_labels``) are listed only when its
signature has them.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxsmx

B, C, H = 6, 5, 4  # batch, classes, features (linear CE)


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  fn: Callable[..., object]
  args: tuple[np.ndarray, ...]
  diff: tuple[int, ...]  # argnums of the differentiable arrays
  batched: tuple[bool, ...]  # which arrays have the leading batch axis

  def value(self, *args):
    """The first output (logsumexp with return_sign gives two)."""
    out = self.fn(*args)
    return out[0] if isinstance(out, tuple) else out

  def grad(self, *args):
    """Gradient of the sum of the value, with respect to `diff`."""
    return jax.grad(lambda *a: jnp.sum(self.value(*a)), self.diff)(*args)

  def __repr__(self):
    return self.name


def _takes(fn, name: str) -> bool:
  return name in inspect.signature(fn).parameters


def _data(seed=0):
  r = np.random.default_rng(seed)
  z = r.normal(size=(B, C)).astype(np.float32)
  p = r.dirichlet(np.ones(C), size=B).astype(np.float32)
  q = r.dirichlet(np.ones(C), size=B).astype(np.float32)
  c = r.integers(0, C, size=B).astype(np.int32)
  mask = r.random((B, C)) > 0.3
  mask[:, 0] = True
  rows = np.arange(B) % 3 != 1
  return z, p, q, c, mask, rows


def _softmax_family() -> list[Case]:
  z, _, _, _, mask, _ = _data()
  z3 = z.reshape(B, C, 1).repeat(2, 2)
  out = []
  for f in (jaxsmx.softmax, jaxsmx.log_softmax):
    n = f.__name__
    out += [
      Case(n, f, (z,), (0,), (True,)),
      Case(f"{n}[axis=0]", lambda x, f=f: f(x, axis=0), (z,), (0,), (True,)),
      Case(f"{n}[axis=(1,2)]", lambda x, f=f: f(x, axis=(1, 2)), (z3,), (0,), (True,)),
      Case(
        f"{n}[where]",
        lambda x, m, f=f: f(x, where=m),
        (z, mask),
        (0,),
        (True, True),
      ),
    ]
  lse = jaxsmx.logsumexp
  out += [
    Case("logsumexp", lambda x: lse(x, axis=-1), (z,), (0,), (True,)),
    Case("logsumexp[axis=None]", lambda x: lse(x), (z,), (0,), (True,)),
    Case(
      "logsumexp[keepdims]",
      lambda x: lse(x, axis=-1, keepdims=True),
      (z,),
      (0,),
      (True,),
    ),
    Case(
      "logsumexp[where]",
      lambda x, m: lse(x, axis=-1, where=m),
      (z, mask),
      (0,),
      (True, True),
    ),
  ]
  if _takes(lse, "b"):
    b = np.abs(z[::-1]) + 0.1
    out.append(
      Case(
        "logsumexp[b]", lambda x, b: lse(x, axis=-1, b=b), (z, b), (0, 1), (True,) * 2
      )
    )
  if _takes(lse, "return_sign"):
    b = z[::-1].copy()
    out.append(
      Case(
        "logsumexp[b,return_sign]",
        lambda x, b: lse(x, axis=-1, b=b, return_sign=True),
        (z, b),
        (0, 1),
        (True, True),
      )
    )
  return out


def _entropy_family() -> list[Case]:
  z, p, q, _, mask, _ = _data()
  lq = np.log(q)
  out = []
  for name, f, x in [
    ("entropy", jaxsmx.entropy, p),
    ("softmax_entropy", jaxsmx.softmax_entropy, z),
  ]:
    out += [
      Case(name, f, (x,), (0,), (True,)),
      Case(f"{name}[axis=0]", lambda x, f=f: f(x, axis=0), (x,), (0,), (True,)),
      Case(
        f"{name}[where]", lambda x, m, f=f: f(x, where=m), (x, mask), (0,), (True,) * 2
      ),
    ]
  for name, f, args in [
    ("cross_entropy", jaxsmx.cross_entropy, (p, q)),
    ("kl_divergence", jaxsmx.kl_divergence, (lq, p)),
    (
      "kl_divergence_with_log_targets",
      jaxsmx.kl_divergence_with_log_targets,
      (lq, np.log(p)),
    ),
    ("convex_kl_divergence", jaxsmx.convex_kl_divergence, (lq, 2.0 * p)),
  ]:
    out += [
      Case(name, f, args, (0, 1), (True, True)),
      Case(
        f"{name}[where]",
        lambda a, b, m, f=f: f(a, b, where=m),
        (*args, mask),
        (0, 1),
        (True,) * 3,
      ),
    ]
  return out


def _loss_family() -> list[Case]:
  z, p, _, c, mask, rows = _data()
  sce = jaxsmx.softmax_cross_entropy
  ice = jaxsmx.softmax_cross_entropy_with_integer_labels
  z4 = z.reshape(B, C, 1, 1).repeat(2, 2).repeat(3, 3)
  c4 = (c * 6 + np.arange(B) % 6).reshape(B, 1).repeat(2, 1).astype(np.int32)
  out = [
    Case("softmax_cross_entropy", sce, (z, p), (0, 1), (True, True)),
    Case(
      "softmax_cross_entropy[where,smoothing]",
      lambda z, y, m: sce(z, y, where=m, label_smoothing=0.1),
      (z, p, mask),
      (0, 1),
      (True,) * 3,
    ),
    Case(
      "softmax_cross_entropy[where=rows]",
      lambda z, y, m: sce(z, y, where=m),
      (z, p, rows),
      (0, 1),
      (True,) * 3,
    ),
    Case("integer_ce", ice, (z, c), (0,), (True, True)),
    Case(
      "integer_ce[where,smoothing,ignore_index]",
      lambda z, c, m: ice(z, c, where=m, label_smoothing=0.1, ignore_index=-100),
      (z, np.where(rows, c, -100).astype(np.int32), mask),
      (0,),
      (True,) * 3,
    ),
    Case(
      "integer_ce[where=rows]",
      lambda z, c, m: ice(z, c, where=m),
      (z, c, rows),
      (0,),
      (True,) * 3,
    ),
    Case(
      "integer_ce[axis=(1,3)]",
      lambda z, c: ice(z, c, axis=(1, 3)),
      (z4, c4),
      (0,),
      (True, True),
    ),
    Case(
      "integer_ce[uint8]",
      lambda z, c: ice(z, c),
      (z, c.astype(np.uint8)),
      (0,),
      (True, True),
    ),
  ]
  cw = np.linspace(0.5, 3.0, C).astype(np.float32)
  out.append(
    Case(
      "integer_ce[class_weights,where,smoothing,ignore_index]",
      lambda z, c, m, w: ice(
        z, c, where=m, label_smoothing=0.1, ignore_index=-100, class_weights=w
      ),
      (z, np.where(rows, c, -100).astype(np.int32), mask, cw),
      (0, 3),
      (True, True, True, False),
    )
  )
  if _takes(ice, "check_labels"):
    out.append(
      Case(
        "integer_ce[check_labels=False]",
        lambda z, c: ice(z, c, check_labels=False),
        (z, c),
        (0,),
        (True, True),
      )
    )
  bce = jaxsmx.sigmoid_binary_cross_entropy
  out += [
    Case("sigmoid_binary_cross_entropy", bce, (z, p), (0, 1), (True, True)),
    Case(
      "sigmoid_binary_cross_entropy[bool labels]",
      bce,
      (z, p > 0.2),
      (0,),
      (True, True),
    ),
  ]
  w = np.linspace(0.5, 3.0, C).astype(np.float32)
  out.append(
    Case(
      "sigmoid_binary_cross_entropy[pos_weight]",
      lambda z, y, w: bce(z, y, pos_weight=w),
      (z, p, w),
      (0, 1, 2),
      (True, True, False),
    )
  )
  focal = jaxsmx.sigmoid_focal_loss
  alpha = np.linspace(0.1, 0.9, C).astype(np.float32)
  out += [
    Case("sigmoid_focal_loss", focal, (z, p), (0, 1), (True, True)),
    Case(
      "sigmoid_focal_loss[hard labels,alpha,gamma=0.5]",
      lambda z, y: focal(z, y, alpha=0.25, gamma=0.5),
      (z, (p > 0.2).astype(np.float32)),
      (0, 1),
      (True, True),
    ),
    Case(
      "sigmoid_focal_loss[alpha,gamma arrays]",
      lambda z, y, a, g: focal(z, y, alpha=a, gamma=g),
      (z, p, alpha, np.float32(1.5)),
      (0, 1, 2, 3),
      (True, True, False, False),
    ),
  ]
  poly = jaxsmx.poly_loss_cross_entropy
  out += [
    Case("poly_loss_cross_entropy", poly, (z, p), (0, 1), (True, True)),
    Case(
      "poly_loss_cross_entropy[where,epsilon array]",
      lambda z, y, m, e: poly(z, y, where=m, epsilon=e),
      (z, p, mask, np.linspace(-1.0, 2.0, B).astype(np.float32)),
      (0, 1, 3),
      (True, True, True, True),
    ),
    Case(
      "poly_loss_cross_entropy[where=rows,axis=0]",
      lambda z, y, m: poly(z.T, y.T, where=m, axis=0, epsilon=-1.0),
      (z, p, rows),
      (0, 1),
      (True, True, True),
    ),
  ]
  return out


def _linear_family() -> list[Case]:
  r = np.random.default_rng(1)
  x = r.normal(size=(B, H)).astype(np.float32)
  w = r.normal(size=(H, C)).astype(np.float32)
  bias = r.normal(size=(C,)).astype(np.float32)
  c = r.integers(0, C, size=B).astype(np.int32)
  vocab = np.array([True, True, False, True, True])
  c = np.where(vocab[c], c, 0).astype(np.int32)
  lce = jaxsmx.linear_softmax_cross_entropy
  out = [
    Case("linear_ce", lce, (x, w, c), (0, 1), (True, False, True)),
    Case(
      "linear_ce[bias,where,ignore,smoothing,z_loss,softcap,chunk]",
      lambda x, w, c, b, m: lce(
        x,
        w,
        c,
        bias=b,
        where=m,
        ignore_index=-100,
        label_smoothing=0.1,
        z_loss=1e-3,
        softcap=5.0,
        chunk_size=2,
      ),
      (x, w, np.where(np.arange(B) == 1, -100, c).astype(np.int32), bias, vocab),
      (0, 1, 3),
      (True, False, True, False, False),
    ),
  ]
  if _takes(lce, "reduction") and _takes(lce, "weights"):
    omega = r.random(B).astype(np.float32)
    for reduction in ("sum", "mean"):
      out.append(
        Case(
          f"linear_ce[reduction={reduction},weights,ignore]",
          lambda x, w, c, o, reduction=reduction: lce(
            x, w, c, weights=o, ignore_index=-100, reduction=reduction
          ),
          (x, w, np.where(np.arange(B) == 2, -100, c).astype(np.int32), omega),
          (0, 1, 3),
          (True, False, True, True),
        )
      )
  cw = np.linspace(0.5, 3.0, C).astype(np.float32)
  for reduction in ("none", "mean"):
    out.append(
      Case(
        f"linear_ce[class_weights,where,smoothing,ignore,reduction={reduction}]",
        lambda x, w, c, m, cw, reduction=reduction: lce(
          x,
          w,
          c,
          where=m,
          ignore_index=-100,
          label_smoothing=0.1,
          class_weights=cw,
          reduction=reduction,
        ),
        (x, w, np.where(np.arange(B) == 2, -100, c).astype(np.int32), vocab, cw),
        (0, 1, 4),
        (True, False, True, False, False),
      )
    )
  if _takes(lce, "check_labels"):
    out.append(
      Case(
        "linear_ce[check_labels=False]",
        lambda x, w, c: lce(x, w, c, check_labels=False),
        (x, w, c),
        (0, 1),
        (True, False, True),
      )
    )
  return out


CASES: list[Case] = (
  _softmax_family() + _entropy_family() + _loss_family() + _linear_family()
)

# every public name has at least one case
assert {n.split("[")[0] for n in (c.name for c in CASES)} >= {
  "softmax",
  "log_softmax",
  "logsumexp",
  "entropy",
  "softmax_entropy",
  "cross_entropy",
  "kl_divergence",
  "kl_divergence_with_log_targets",
  "convex_kl_divergence",
  "softmax_cross_entropy",
  "integer_ce",
  "sigmoid_binary_cross_entropy",
  "linear_ce",
  "sigmoid_focal_loss",
  "poly_loss_cross_entropy",
}
