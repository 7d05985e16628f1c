"""The README's example runs as written and does what it says."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

README = pathlib.Path(__file__).parents[1] / "README.md"


def test_readme_example_runs_and_matches_autodiff():
  code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
  scope: dict = {}
  exec(compile(code, "README.md", "exec"), scope)
  grads, per_example = scope["grads"], scope["per_example_grads"]
  params, x, labels = scope["params"], scope["x"], scope["labels"]

  def reference(params, x, labels):
    logits = jnp.tanh(x @ params["w1"]) @ params["w2"]
    c = logits.shape[-1]
    smooth = 0.9 * jax.nn.one_hot(labels, c) + 0.1 / c
    nll = -jnp.sum(smooth * jax.nn.log_softmax(logits), -1)
    keep = labels != -100
    return jnp.sum(jnp.where(keep, nll, 0.0)) / keep.sum()

  expected = jax.grad(reference)(params, x, labels)
  for k in grads:
    np.testing.assert_allclose(grads[k], expected[k], rtol=1e-5, atol=1e-6)
  # the ignored example contributes nothing; the others sum to the batch grad
  assert np.all(np.asarray(per_example["w2"][2]) == 0)
  assert per_example["w1"].shape == (8, 16, 32)
