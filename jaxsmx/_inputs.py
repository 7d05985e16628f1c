"""Array arguments at the public entry: a non-array (None, text, a ragged
list, an object array, an object without a dtype) gets the library's error,
naming the function and the argument, before JAX converts anything.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import reprlib
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxsmx._checks import dtype_kind

_P = ParamSpec("_P")
_R = TypeVar("_R")
_short = reprlib.Repr()
_short.maxlist = _short.maxtuple = 4
_short.maxstring = _short.maxother = 40
_SHOULD_BE = (
  "an array: a jax.Array, a NumPy array, a Python number, or a (nested) list"
  " of numbers with a rectangular shape"
)


def array_inputs(f: Callable[_P, _R]) -> Callable[_P, _R]:
  """Decorates a public function: every argument annotated ``ArrayLike`` goes
  through :func:`_array_input` before the body runs, so a non-array gets the
  library's error, naming the function and the argument, before JAX converts
  anything. Arguments annotated ``ArrayLike | None`` may be None.
  """
  fn = f.__name__
  params = list(inspect.signature(f).parameters.values())
  arrays = {
    p.name: (i, "None" in str(p.annotation))
    for i, p in enumerate(params)
    if "ArrayLike" in str(p.annotation)
  }
  by_position = [(i, name, opt) for name, (i, opt) in arrays.items()]
  call = cast(Callable[..., _R], f)  # the arguments, checked, as given

  @functools.wraps(f)
  def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
    given = list(args)
    for i, name, optional in by_position:
      if i < len(given):
        given[i] = _array_input(given[i], name, fn, optional)
    for name in kwargs.keys() & arrays.keys():
      kwargs[name] = _array_input(kwargs[name], name, fn, arrays[name][1])
    return call(*given, **kwargs)

  return checked


def _array_input(value: object, name: str, fn: str, optional: bool = False):
  """An array argument as JAX will take it, or the library's error.

  Arrays, NumPy scalars and Python numbers pass unchanged (jit converts them);
  lists and tuples, and objects that convert themselves (``__array__``,
  ``__jax_array__``), become arrays. None (unless the argument is optional),
  text, ragged nested lists, object arrays and objects without a dtype raise
  a TypeError that names the function and the argument, shows what arrived
  and says what to pass.
  """
  if isinstance(value, (jax.Array, np.ndarray, np.generic, numbers.Number)):
    if (
      isinstance(value, (np.ndarray, np.generic)) and dtype_kind(value.dtype) == "other"
    ):
      raise TypeError(
        f"{fn}: {name} must be {_SHOULD_BE}; got a NumPy array of dtype"
        f" {value.dtype} with shape {value.shape}: {_short.repr(value)}."
        f" Convert it to numbers first, for example"
        f" np.asarray({name}, dtype=np.float32)."
      )
    return value
  if value is None and optional:
    return None
  if isinstance(value, (list, tuple)):
    convertible = not any(True for _ in _non_numbers(value))  # text, None
  else:
    convertible = hasattr(value, "__array__") or hasattr(value, "__jax_array__")
  if convertible:
    try:
      out = jnp.asarray(value)
    except (TypeError, ValueError):
      pass
    else:
      if dtype_kind(out.dtype) != "other":
        return out
  raise TypeError(
    f"{fn}: {name} must be {_SHOULD_BE}; got {_what(value)}. {_fix(value, name)}"
  )


def _what(value: object) -> str:
  shown = _short.repr(value)
  if value is None:
    return "None"
  if isinstance(value, (str, bytes)):
    return f"the {type(value).__name__} {shown}"
  if isinstance(value, (list, tuple)):
    kind = type(value).__name__
    if _ragged(value):
      return f"a ragged nested {kind}, {shown}, whose rows have different lengths"
    for bad in _non_numbers(value):
      held = "None" if bad is None else f"{type(bad).__name__} {_short.repr(bad)}"
      return f"a {kind} holding {held}: {shown}"
    return f"a {kind} that does not convert to one numeric array: {shown}"
  return f"a {type(value).__qualname__}, {shown}, which has no numeric dtype"


def _fix(value: object, name: str) -> str:
  if value is None:
    return f"Pass an array for {name}, for example jnp.asarray(values)."
  if isinstance(value, (list, tuple)) and _ragged(value):
    return (
      "Pad the rows to one length (and mask the padding with where=, or give"
      " padded labels ignore_index), or call the function once per row."
    )
  if isinstance(value, (str, bytes)) or (
    isinstance(value, (list, tuple)) and any(True for _ in _non_numbers(value))
  ):
    return (
      "Pass numbers, not text or None: map class names to class indices and"
      " text to numbers first."
    )
  return f"Convert it first, for example {name}=jnp.asarray(...) of its values."


def _ragged(value: object) -> bool:
  """True if a nested list has rows of different lengths at some depth."""
  if not isinstance(value, (list, tuple)):
    return False
  rows = [v for v in value if isinstance(v, (list, tuple))]
  if rows and len(rows) != len(value):
    return True
  if len({len(v) for v in rows}) > 1:
    return True
  return any(_ragged(v) for v in rows)


def _non_numbers(value: object):
  """The leaves of a nested list that are not numbers or arrays, in order."""
  if isinstance(value, (list, tuple)):
    for v in value:
      yield from _non_numbers(v)
  elif not isinstance(value, (numbers.Number, np.generic, np.ndarray, jax.Array)):
    yield value
