"""The README's example runs as written, prints what its comments say, and its
gradient is autodiff's."""

import contextlib
import io
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

README = pathlib.Path(__file__).parents[1] / "README.md"


def _numbers(text: str) -> list[float]:
  return [float(s) for s in re.findall(r"-?\d+\.\d+", text)]


def test_readme_example_prints_its_comments_and_matches_autodiff():
  code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
  scope: dict = {}
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    exec(compile(code, "README.md", "exec"), scope)
  # the example says what it prints, in "# prints: ..." comments
  promised = [
    line.removeprefix("# prints:")
    for line in code.splitlines()
    if line.startswith("# prints:")
  ]
  lines = printed.getvalue().splitlines()
  assert len(lines) == len(promised) >= 1
  for got, want in zip(lines, promised, strict=True):
    np.testing.assert_allclose(_numbers(got), _numbers(want), rtol=2e-3)

  grads, params, x, labels = (scope[k] for k in ("grads", "params", "x", "labels"))

  def reference(params, x, labels):
    logits = jnp.tanh(x @ params["w1"]) @ params["w2"]
    c = logits.shape[-1]
    smooth = 0.9 * jax.nn.one_hot(labels, c) + 0.1 / c
    nll = -jnp.sum(smooth * jax.nn.log_softmax(logits), -1)
    keep = labels != -100
    return jnp.sum(jnp.where(keep, nll, 0.0)) / keep.sum()

  loss, expected = jax.value_and_grad(reference)(params, x, labels)
  np.testing.assert_allclose(scope["loss"], loss, rtol=1e-5)
  for k in grads:
    np.testing.assert_allclose(grads[k], expected[k], rtol=1e-5, atol=1e-6)
