"""The symbols every derivation shares: indexed inputs, indices, n."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sympy as sp

# ---------------------------------------------------------------------------
# Symbols shared by every derivation.

n = sp.Symbol("n", integer=True, positive=True)
i, j, k, ell = sp.symbols("i j k ell", integer=True, positive=True)
# Class indices run over 1..n; ell is the integer label.

z = sp.IndexedBase("z", real=True)  # logits
u = sp.IndexedBase("u", real=True)  # logits before the soft cap
a = sp.IndexedBase("a", positive=True)  # softmax(z)
y = sp.IndexedBase("y", real=True)  # targets / labels
g = sp.IndexedBase("g", real=True)  # incoming cotangent (vector)
p = sp.IndexedBase("p", positive=True)  # probabilities
q = sp.IndexedBase("q", positive=True)  # predicted probabilities
t = sp.IndexedBase("t", positive=True)  # KL targets
lp = sp.IndexedBase(r"\ell", real=True)  # KL log-predictions
mask = sp.IndexedBase("m", nonnegative=True)  # a mask, m_i in {0, 1}

# The dummy index of the normaliser sum, used nowhere else, so that an
# a_k inside a sum over k never captures it.
_m = sp.Symbol("m", integer=True, positive=True)
SUM_EXP_Z = sp.Sum(sp.exp(z[_m]), (_m, 1, n))


def softmax_of(base: sp.IndexedBase) -> Callable[[Any], sp.Expr]:
  """``idx -> exp(base[idx]) / sum_m exp(base[m])`` with the shared dummy."""
  total = sp.Sum(sp.exp(base[_m]), (_m, 1, n))
  return lambda idx: sp.exp(base[idx]) / total


def summation(body: sp.Expr, index: sp.Symbol = k) -> sp.Expr:
  """``sum_{index=1}^{n} body``."""
  return sp.Sum(body, (index, 1, n))
