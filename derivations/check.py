r"""Check your own reverse-mode rule the way jaxsmx checks its own.

:func:`check_vjp` takes a JAX function (typically with a hand-written
``jax.custom_vjp``), a SymPy definition of it in the derivations' vocabulary
(indexed inputs such as ``z`` and ``y`` over the symbolic class count
``n``, ``Sum``, ``exp``, ``log``) and the inputs to differentiate. It

1. derives the gradient (or, for a vector output, the VJP) for symbolic
   :math:`n` with ``sympy.diff`` and closes the sums over Kronecker deltas
   (:func:`derivations.engine.close_sums`), where that rewriting closes them;
2. checks that closed form at :math:`n = 1 \dots 8` against
   ``Matrix.jacobian`` of the explicit definition;
3. compares the closed form, in float64 and with random cotangents, with
   ``jax.vjp`` of the user's function, and the definition's value with the
   function's value;

and returns a :class:`VJPCheck` whose steps render as a report section in
Markdown or LaTeX, each with its verdict. A failing numeric step says which
input, which :math:`n` and which entry.

See notebooks/05_check_your_own_vjp.ipynb for a worked example (a poly-1
loss, right and subtly wrong).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp

from . import engine
from .agreement import lambdify_general
from .engine import outcome

SIZES = tuple(range(1, 9))
TOLERANCE = 1e-10

# The SymPy constructs the rewriting and the lambdified evaluation support.
_SUPPORTED = (
  sp.Add,
  sp.Mul,
  sp.Pow,
  sp.exp,
  sp.log,
  sp.tanh,
  sp.Sum,
  sp.KroneckerDelta,
  sp.Indexed,
  sp.IndexedBase,
  sp.Idx,
  sp.Symbol,
  sp.Number,
  sp.Tuple,
  sp.NumberSymbol,
)


class DefinitionError(ValueError):
  """The definition cannot be checked as given; the message says why and the fix."""


@dataclasses.dataclass(frozen=True)
class CheckStep:
  """One step of a check: what was shown, how it was checked, the verdict."""

  label: str
  latex: str
  ok: bool
  method: str
  detail: str = ""


@dataclasses.dataclass(frozen=True)
class VJPCheck:
  """The result of :func:`check_vjp`: steps with verdicts; renders as a report."""

  title: str
  steps: tuple[CheckStep, ...]

  @property
  def ok(self) -> bool:
    return all(s.ok for s in self.steps)

  @property
  def failures(self) -> list[CheckStep]:
    return [s for s in self.steps if not s.ok]

  def to_markdown(self) -> str:
    mark = outcome(self.ok)
    out = [f"## {self.title}\n", f"**Verdict: {mark}.**\n"]
    for r, s in enumerate(self.steps, 1):
      out.append(f"**Step {r}.** {s.label}\n")
      if s.latex:
        out.append(f"$$\n{s.latex}\n$$\n")
      m = outcome(s.ok)
      out.append(f"{m} {s.method}" + (f" — {s.detail}" if s.detail else "") + "\n")
    return "\n".join(out)

  def to_latex(self) -> str:
    out = [f"\\section{{{_tex(self.title)}}}"]
    out.append(f"Verdict: {'pass' if self.ok else 'FAIL'}.\n")
    for r, s in enumerate(self.steps, 1):
      out.append(f"\\paragraph{{Step {r}.}} {_tex(s.label)}")
      if s.latex:
        out.append(f"\\[\n{s.latex}\n\\]")
      verdict = "pass" if s.ok else "FAIL"
      out.append(
        f"{verdict}: {_tex(s.method)}" + (f" --- {_tex(s.detail)}" if s.detail else "")
      )
    return "\n".join(out) + "\n"

  def _repr_markdown_(self) -> str:
    return self.to_markdown()


def _tex(text: str) -> str:
  for a_, b_ in (
    ("\\", r"\textbackslash{}"),
    ("_", r"\_"),
    ("%", r"\%"),
    ("&", r"\&"),
    ("#", r"\#"),
    ("—", "---"),
  ):
    text = text.replace(a_, b_)
  return text


# ---------------------------------------------------------------------------
# Validation.


def _validate(
  expr: sp.Expr,
  inputs: Sequence[sp.IndexedBase],
  index: sp.Symbol,
  params: Mapping[sp.Symbol, float],
) -> None:
  for node in sp.preorder_traversal(expr):
    if isinstance(node, sp.Sum):
      for lim in node.limits:
        if len(lim) != 3 or lim[1] != 1 or lim[2] != engine.n:
          raise DefinitionError(
            f"check_vjp: every Sum must run over 1..n (the symbolic class count"
            f" derivations.engine.n); got the limits {lim}. Fix: write"
            f" Sum(body, (k, 1, n))."
          )
    if not isinstance(node, _SUPPORTED) and not node.is_Atom:
      raise DefinitionError(
        f"check_vjp: the definition uses {type(node).__name__} ({node}), which"
        " the closed-form rewriting and the lambdified evaluation do not"
        " support. Supported: + - * / powers, exp, log, tanh, Sum over 1..n,"
        " KroneckerDelta and indexed inputs. Fix: write it with these (e.g."
        " sigmoid(x) as 1/(1 + exp(-x)), max by a smooth form), or check a"
        " smooth piece of the function."
      )
  bound = {lim[0] for s in expr.atoms(sp.Sum) for lim in s.limits}
  allowed = {engine.n, index, *bound, *params, *(b.label for b in inputs)}
  for x in expr.free_symbols:
    if isinstance(x, sp.Symbol) and x not in allowed:
      raise DefinitionError(
        f"check_vjp: the definition has the free symbol {x}, which is neither"
        f" an input ({', '.join(b.name for b in inputs)}), n, the output index"
        f" nor a parameter. Fix: pass its value in params={{{x}: value}}, or"
        " make it an input."
      )
  for b in expr.atoms(sp.Indexed):
    if b.base not in inputs:
      raise DefinitionError(
        f"check_vjp: the definition reads {b.base}, which is not among the"
        f" inputs {[str(x) for x in inputs]}. Fix: add it to inputs, in the"
        " order the function takes its arguments."
      )


# ---------------------------------------------------------------------------
# The checks.


def _seed(title: str, size: int) -> int:
  return zlib.crc32(f"check_vjp/{title}/{size}".encode())


def check_vjp(
  fn: Callable[..., Any],
  definition: sp.Expr | Callable[[sp.Symbol], sp.Expr],
  inputs: Sequence[sp.IndexedBase],
  *,
  wrt: Sequence[sp.IndexedBase] | None = None,
  params: Mapping[sp.Symbol, float] | None = None,
  draw: Mapping[sp.IndexedBase, Callable[[np.random.Generator, int], np.ndarray]]
  | None = None,
  sizes: Sequence[int] = SIZES,
  title: str = "",
) -> VJPCheck:
  """Derives the gradient of ``definition`` and checks ``fn``'s VJP against it.

  Args:
    fn: ``fn(*arrays) -> array``: one ``[n]`` array per input, in the order
      of ``inputs``; it returns a scalar or an ``[n]`` vector.
    definition: a SymPy expression of the inputs (a scalar, e.g. a loss
      with ``Sum(..., (k, 1, n))``), or ``i -> expression`` for a vector
      output with entries :math:`f_i`.
    inputs: the ``IndexedBase`` inputs, e.g. ``(z, y)``.
    wrt: the differentiable inputs (default: all).
    params: values of scalar parameters of the definition (e.g. a focal
      loss's :math:`\\gamma`), passed to ``fn`` only through its closure.
    draw: ``base -> (rng, n) -> array`` to draw an input (default: normal
      values, scale 1.5); e.g. probabilities for labels.
    sizes: the concrete class counts (default 1..8).
    title: the report section's title.

  Returns:
    A :class:`VJPCheck`; ``.ok`` is True when every step passes.

  Raises:
    DefinitionError: the definition uses a construct the derivation cannot
      handle, or does not match the function's output shape.
  """
  import jax

  inputs = tuple(inputs)
  wrt = tuple(inputs if wrt is None else wrt)
  params = dict(params or {})
  draw = dict(draw or {})
  out_index = sp.Symbol("i_out", integer=True, positive=True)
  vector = callable(definition) and not isinstance(definition, sp.Basic)
  expr = definition(out_index) if vector else sp.sympify(definition)
  _validate(expr, inputs, out_index, params)
  title = title or f"VJP of {getattr(fn, '__name__', 'fn')}"
  expr = expr.xreplace({s: sp.Float(v, 17) for s, v in params.items()})
  steps = [
    CheckStep(
      "The definition.", _latex_definition(expr, vector, out_index), True, "as given"
    )
  ]
  j = sp.Symbol("j", integer=True, positive=True)
  gvec = sp.IndexedBase("g", real=True)
  gs = sp.Symbol("g", real=True)

  closed = {}
  for base in wrt:
    if vector:
      body = sp.diff(expr, base[j]) * gvec[out_index]
      vjp = sp.Sum(body, (out_index, 1, engine.n))
    else:
      vjp = gs * sp.diff(expr, base[j])
    vjp = engine.close_sums(vjp)
    closed[base] = vjp
    unclosed = [s for s in vjp.atoms(sp.Sum) if s.has(sp.KroneckerDelta)]
    label = (
      f"The VJP with respect to ${sp.latex(base)}$ for symbolic $n$"
      " (sympy.diff, sums closed)."
    )
    tex = rf"\bar{{{sp.latex(base)}}}_{{j}} = {sp.latex(vjp)}"
    if unclosed:
      steps.append(
        CheckStep(
          label, tex, True, "general n: left as a sum (the rewriting does not close it)"
        )
      )
    else:
      steps.append(CheckStep(label, tex, True, "general n: closed form"))
    steps.append(
      _concrete_step(expr, vjp, base, inputs, vector, out_index, j, gvec, gs, sizes)
    )

  # numeric: the function against the closed forms
  with jax.enable_x64(True):
    steps.extend(
      _numeric_steps(
        fn,
        expr,
        closed,
        inputs,
        wrt,
        vector,
        out_index,
        j,
        gvec,
        gs,
        draw,
        sizes,
        title,
      )
    )
  return VJPCheck(title, tuple(steps))


def _latex_definition(expr, vector, out_index):
  lhs = r"f_{i}" if vector else "f"
  return f"{lhs} = {sp.latex(expr.xreplace({out_index: sp.Symbol('i')}))}"


def _explicit(expr, size, out_index, vector):
  """The definition at n = size in plain symbols: a scalar or a column Matrix."""
  e = expr.xreplace({engine.n: sp.Integer(size)})
  if vector:
    rows = [
      engine.concretize(
        engine.expand_finite_sums(e.xreplace({out_index: sp.Integer(r)}))
      )
      for r in range(1, size + 1)
    ]
    return sp.Matrix(rows)
  return sp.Matrix([engine.concretize(engine.expand_finite_sums(e))])


def _concrete_step(
  expr, vjp, base, inputs, vector, out_index, j, gvec, gs, sizes
) -> CheckStep:
  label = (
    f"The closed form for ${sp.latex(base)}$ at concrete $n$ against"
    " Matrix.jacobian of the definition."
  )
  method = f"n = {min(sizes)}..{max(sizes)} vs Matrix.jacobian(...).T g"
  for size in sizes:
    ref_f = _explicit(expr, size, out_index, vector)
    jac = ref_f.jacobian(engine.vec(base, size))
    cot = sp.Matrix(engine.vec(gvec, size)) if vector else sp.Matrix([gs])
    ref = jac.T * cot
    e = engine.expand_finite_sums(vjp.xreplace({engine.n: sp.Integer(size)}))
    for r in range(size):
      mine = engine.concretize(e.xreplace({j: sp.Integer(r + 1)}))
      if not engine.concrete_zero(sp.expand(mine - ref[r, 0])):
        return CheckStep(label, "", False, method, f"n={size}: entry {r + 1} differs")
  return CheckStep(label, "", True, method)


def _default_draw(rng, size):
  return 1.5 * rng.standard_normal(size)


def _numeric_steps(
  fn, expr, closed, inputs, wrt, vector, out_index, j, gvec, gs, draw, sizes, title
):
  import jax
  import jax.numpy as jnp

  label_v = "The function's value against the definition (float64, random points)."
  worst_v, where_v = 0.0, ""
  worst = {b: (0.0, "") for b in wrt}
  for size in sizes:
    rng = np.random.default_rng(_seed(title, size))
    arrays = [
      np.asarray(draw.get(b, _default_draw)(rng, size), np.float64) for b in inputs
    ]
    cot = rng.standard_normal(size) if vector else np.asarray(rng.standard_normal())
    value, pull = jax.vjp(lambda *xs: fn(*xs), *[jnp.asarray(x) for x in arrays])
    want_shape = (size,) if vector else ()
    if tuple(np.shape(value)) != want_shape:
      raise DefinitionError(
        f"check_vjp: at n = {size} the function returns shape"
        f" {np.shape(value)}, but the definition is"
        f" {'a vector [n]' if vector else 'a scalar'} (shape {want_shape})."
        " Fix: pass the definition as `lambda i: f_i` for a vector output or"
        " as one expression for a scalar, or make fn return one value per"
        " call (no batch axis)."
      )
    grads = pull(jnp.asarray(cot))
    padded = [x[None] for x in arrays]
    f_val = lambdify_general(
      expr, (out_index,) if vector else (), list(inputs), 1, size, numpy=True
    )
    want_v = np.asarray(f_val(np.array([size]), np.array([1]), *padded))[0].reshape(
      want_shape
    )
    err = float(np.max(np.abs(np.asarray(value) - want_v)))
    if err > worst_v:
      worst_v, where_v = err, f"n={size}"
    for base in wrt:
      extra = [gvec] if vector else [gs]
      f = lambdify_general(
        closed[base], (j,), list(inputs) + extra, 1, size, numpy=True
      )
      with np.errstate(all="ignore"):
        want = np.asarray(
          f(
            np.array([size]),
            np.array([1]),
            *padded,
            cot[None] if vector else cot.reshape(1),
          )
        )[0]
      got = np.asarray(grads[inputs.index(base)])
      diff = np.abs(got - want[:size])
      e = float(np.max(diff))
      if not np.isfinite(e) or e > worst[base][0]:
        worst[base] = (
          e if np.isfinite(e) else float("inf"),
          f"n={size}, entry {int(np.argmax(diff)) + 1}: jax.vjp gives"
          f" {got[np.argmax(diff)]:.6g}, the closed form"
          f" {want[np.argmax(diff)]:.6g}",
        )
  out = [_bound_step(label_v, worst_v, where_v, "value vs definition")]
  for base in wrt:
    e, where = worst[base]
    out.append(
      _bound_step(
        f"jax.vjp of the function with respect to ${sp.latex(base)}$ against"
        " the closed form, random cotangents.",
        e,
        where,
        f"{sp.latex(base)}: jax.vjp vs closed form, n = {min(sizes)}..{max(sizes)}",
      )
    )
  return out


def _bound_step(label, err, where, method):
  ok = err <= TOLERANCE
  detail = "" if ok else f"max error {err:.2e} at {where}"
  return CheckStep(
    label, "", ok, method + (f", max error < {TOLERANCE:.0e}" if ok else ""), detail
  )
