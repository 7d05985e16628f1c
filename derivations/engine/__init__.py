r"""The engine: derivations as data, and the symbolic machinery that checks them.

A :class:`Derivation` is an ordered tuple of :class:`Step` objects. Each step
holds a label (Markdown prose), a SymPy expression, usually an unevaluated
``Eq(lhs, rhs)``, and the checks that prove it. The expressions are written
the way a person writes them on paper, with a few display nodes:
:class:`D` is a partial derivative :math:`\partial f / \partial x`,
:class:`SumNe` a sum over :math:`j \neq i`, :class:`Dot` and :class:`Prod`
products kept as written.

To check a step, both sides are *evaluated*: the definitions in the step's
:class:`Context` are substituted (``a_i`` becomes
:math:`e^{z_i} / \sum_k e^{z_k}`), every :class:`D` becomes a real
``sympy.diff``, and the difference is brought to a normal form and compared
with zero. SymPy's ``simplify`` does not close sums such as
:math:`\sum_k \delta_{ik} e^{z_k}`, so :func:`close_sums` does the targeted
rewriting. For concrete :math:`n`, :func:`specialise_matrix` turns a
general-:math:`n` expression into one over plain symbols, to compare with
``Matrix.jacobian`` of the explicit function.

The layers, each importing only those above it:

* ``_symbols``: the shared symbols (:math:`z, a, y, n, i, j, k, \ell`, ...);
* ``_display``: the display nodes and how they print, and a check's
  outcome in words;
* ``_algebra``: contexts, evaluation, sum closing, concrete :math:`n`;
* ``_verify``: the checks (general :math:`n`, concrete :math:`n`, limits,
  definitions);
* ``_model``: steps, examples, derivations, and running their checks;
* ``_references``: explicit concrete-:math:`n` references (Jacobians, VJPs).

The engine imports SymPy only: no JAX, no jaxsmx.
"""

from ._algebra import (
  Assumption,
  Context,
  Definition,
  canonical_dummies,
  close_sums,
  concrete_zero,
  concretize,
  evaluate,
  expand_finite_sums,
  is_zero,
  normal_form,
  specialise_matrix,
  vec,
)
from ._display import (
  D2,
  At,
  Chain,
  D,
  Diag,
  Display,
  Dot,
  Group,
  Label,
  Named,
  Ordered,
  Prod,
  SumNe,
  Terms,
  Transpose,
  at,
  eq,
  keep,
  label,
  named,
  outcome,
)
from ._model import Derivation, Example, Step, StepResult, check_derivation, check_step
from ._references import (
  VJP_SIZES,
  explicit_softmax,
  gradient,
  gradient_ref,
  jacobian_of,
  vjp_check,
)
from ._symbols import (
  SUM_EXP_Z,
  a,
  ell,
  g,
  i,
  j,
  k,
  lp,
  mask,
  n,
  p,
  q,
  softmax_of,
  summation,
  t,
  u,
  y,
  z,
)
from ._verify import (
  Check,
  Concrete,
  Defines,
  Explicit,
  General,
  Limit,
  Shown,
  Verdict,
  members,
  sides,
)

__all__ = [
  "D2",
  "SUM_EXP_Z",
  "VJP_SIZES",
  "Assumption",
  "At",
  "Chain",
  "Check",
  "Concrete",
  "Context",
  "D",
  "Defines",
  "Definition",
  "Derivation",
  "Diag",
  "Display",
  "Dot",
  "Example",
  "Explicit",
  "General",
  "Group",
  "Label",
  "Limit",
  "Named",
  "Ordered",
  "Prod",
  "Shown",
  "Step",
  "StepResult",
  "SumNe",
  "Terms",
  "Transpose",
  "Verdict",
  "a",
  "at",
  "canonical_dummies",
  "check_derivation",
  "check_step",
  "close_sums",
  "concrete_zero",
  "concretize",
  "ell",
  "eq",
  "evaluate",
  "expand_finite_sums",
  "explicit_softmax",
  "g",
  "gradient",
  "gradient_ref",
  "i",
  "is_zero",
  "j",
  "jacobian_of",
  "k",
  "keep",
  "label",
  "lp",
  "mask",
  "members",
  "n",
  "named",
  "normal_form",
  "outcome",
  "p",
  "q",
  "sides",
  "softmax_of",
  "specialise_matrix",
  "summation",
  "t",
  "u",
  "vec",
  "vjp_check",
  "y",
  "z",
]
