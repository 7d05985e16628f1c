"""Derivations as data: steps, checks and the symbolic machinery behind them.

A :class:`Derivation` is an ordered tuple of :class:`Step` objects. Each step
holds a label (Markdown prose), a SymPy expression, usually an unevaluated
``Eq(lhs, rhs)``, and the checks that prove it. The expressions are written
the way a person writes them on paper, with a few display nodes:

* :class:`D` is a partial derivative :math:`\\partial f / \\partial x`;
* :class:`SumNe` is a sum over :math:`j \neq i`, as in the article;
* :class:`UnevaluatedExpr` keeps a product such as
  :math:`-\frac{y_i}{a_i} \\cdot a_i (1 - a_i)` from being simplified away.

To check a step, both sides are *evaluated*: the definitions in the step's
:class:`Context` are substituted (``a_i`` becomes
:math:`e^{z_i} / \\sum_k e^{z_k}`), every :class:`D` becomes a real
``sympy.diff``, and :class:`SumNe` becomes a sum with a
:math:`(1 - \\delta_{ij})` factor. The difference is then brought to a normal
form and compared with zero.

SymPy's ``simplify`` does not close sums such as
:math:`\\sum_k \\delta_{ik} e^{z_k}` (``doit`` gives a ``Piecewise`` on the
range of :math:`i`), so :func:`close_sums` does the targeted rewriting:
expand the summand, split sums over ``Add``, pull factors that do not depend
on the summation index out of the sum, and resolve Kronecker deltas against
the summation index. Free indices are taken to lie in :math:`1 \\dots n`.

For concrete :math:`n`, :func:`specialise` turns a general-:math:`n`
expression into one over plain symbols :math:`z_1 \\dots z_n`, to compare with
``Matrix.jacobian`` of the explicit function.

The parts live in their own files: :mod:`._symbols`, :mod:`._display`,
:mod:`._algebra` (contexts, evaluation, sum closing, concrete n),
:mod:`._verify` (checks), :mod:`._model` (steps and derivations) and
:mod:`._references`; this module re-exports them.
"""

from ._algebra import (
  _SPECIALISED as _SPECIALISED,
)
from ._algebra import (
  Assumption as Assumption,
)
from ._algebra import (
  Context as Context,
)
from ._algebra import (
  Definition as Definition,
)
from ._algebra import (
  _close_one_sum as _close_one_sum,
)
from ._algebra import (
  _fill as _fill,
)
from ._algebra import (
  _held_key as _held_key,
)
from ._algebra import (
  _idempotent as _idempotent,
)
from ._algebra import (
  _merge_deltas as _merge_deltas,
)
from ._algebra import (
  _specialise_matrix as _specialise_matrix,
)
from ._algebra import (
  _together_in_logs as _together_in_logs,
)
from ._algebra import (
  canonical_dummies as canonical_dummies,
)
from ._algebra import (
  close_sums as close_sums,
)
from ._algebra import (
  concrete_zero as concrete_zero,
)
from ._algebra import (
  concretize as concretize,
)
from ._algebra import (
  evaluate as evaluate,
)
from ._algebra import (
  expand_finite_sums as expand_finite_sums,
)
from ._algebra import (
  is_zero as is_zero,
)
from ._algebra import (
  normal_form as normal_form,
)
from ._algebra import (
  specialise_matrix as specialise_matrix,
)
from ._algebra import (
  vec as vec,
)
from ._display import (
  D2 as D2,
)
from ._display import (
  At as At,
)
from ._display import (
  Chain as Chain,
)
from ._display import (
  D as D,
)
from ._display import (
  Diag as Diag,
)
from ._display import (
  Display as Display,
)
from ._display import (
  Dot as Dot,
)
from ._display import (
  Group as Group,
)
from ._display import (
  Label as Label,
)
from ._display import (
  Named as Named,
)
from ._display import (
  Ordered as Ordered,
)
from ._display import (
  Prod as Prod,
)
from ._display import (
  SumNe as SumNe,
)
from ._display import (
  Terms as Terms,
)
from ._display import (
  Transpose as Transpose,
)
from ._display import (
  _group as _group,
)
from ._display import (
  _powered as _powered,
)
from ._display import (
  _Printed as _Printed,
)
from ._display import (
  at as at,
)
from ._display import (
  eq as eq,
)
from ._display import (
  keep as keep,
)
from ._display import (
  label as label,
)
from ._display import (
  named as named,
)
from ._model import (
  Defines as Defines,
)
from ._model import (
  Derivation as Derivation,
)
from ._model import (
  Example as Example,
)
from ._model import (
  Step as Step,
)
from ._model import (
  StepResult as StepResult,
)
from ._model import (
  _defined as _defined,
)
from ._model import (
  check_derivation as check_derivation,
)
from ._model import (
  check_step as check_step,
)
from ._references import (
  VJP_SIZES as VJP_SIZES,
)
from ._references import (
  explicit_softmax as explicit_softmax,
)
from ._references import (
  gradient as gradient,
)
from ._references import (
  gradient_ref as gradient_ref,
)
from ._references import (
  jacobian_of as jacobian_of,
)
from ._references import (
  vjp_check as vjp_check,
)
from ._symbols import (
  SUM_EXP_Z as SUM_EXP_Z,
)
from ._symbols import (
  _m as _m,
)
from ._symbols import (
  a as a,
)
from ._symbols import (
  ell as ell,
)
from ._symbols import (
  g as g,
)
from ._symbols import (
  i as i,
)
from ._symbols import (
  j as j,
)
from ._symbols import (
  k as k,
)
from ._symbols import (
  lp as lp,
)
from ._symbols import (
  mask as mask,
)
from ._symbols import (
  n as n,
)
from ._symbols import (
  p as p,
)
from ._symbols import (
  q as q,
)
from ._symbols import (
  softmax_of as softmax_of,
)
from ._symbols import (
  summation as summation,
)
from ._symbols import (
  t as t,
)
from ._symbols import (
  u as u,
)
from ._symbols import (
  y as y,
)
from ._symbols import (
  z as z,
)
from ._verify import (
  Check as Check,
)
from ._verify import (
  Concrete as Concrete,
)
from ._verify import (
  Explicit as Explicit,
)
from ._verify import (
  General as General,
)
from ._verify import (
  Limit as Limit,
)
from ._verify import (
  Verdict as Verdict,
)
from ._verify import (
  _sides as _sides,
)
from ._verify import (
  members as members,
)
