"""jaxsmx under XLA SPMD sharding, on 8 simulated CPU devices.

The device count is fixed when jax is first imported, so the sharded checks
run in a subprocess (``tests/sharding_cases.py``, which sets
``XLA_FLAGS=--xla_force_host_platform_device_count=8``). It runs every case
once; this module turns its JSON report into assertions. One test runs it,
so that pytest-xdist starts it once.

What the subprocess checks, on a 2 x 4 ("data", "model") mesh, in JAX's
``auto`` and ``explicit`` sharding modes:

* every public function under ``jax.jit`` with sharded inputs: values and
  VJPs equal one device's (rtol 1e-5), and the output and gradient shardings
  follow the inputs' (no silent replication);
* every public function inside a user's ``jax.shard_map`` (rows split over
  "data", ``w`` and the vocabulary-sized arrays invariant): the same values
  and VJPs;
* under explicit sharding, each function with its other inputs sharded
  unlike the logits (a target replicated or split over the rows only, a
  replicated bias or weights beside a vocabulary-sharded ``w``, a replicated
  input under a sharded mask): the same values and VJPs, and each gradient
  with its primal's sharding;
* every function with two differentiable inputs inside ``jax.shard_map``
  with those inputs varying over different mesh axes (per-device logits
  against a replicated target distribution, or one per "model" index): the
  same values and VJPs, so each cotangent is summed over the axes its input
  does not vary along; a rule without that cast is caught;
* in the compiled HLO of value_and_grad of the integer-label and the linear
  cross-entropy, vocabulary-parallel, no collective has a result as large as
  a per-device logits block (N/dp x V/mp elements);
* that check flags a careless implementation that gathers the logits;
* the fused loss's reduced modes ("sum" and "mean" with weights and every
  option), rows over "data" and the vocabulary over "model", in both modes
  and (for "sum") inside a user's shard_map: values and gradients equal one
  device's;
* the README's "Scaling out" example runs, and its table of collectives is
  what the HLO has at the size it states.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import sharding_cases

SCRIPT = pathlib.Path(sharding_cases.__file__)


def _run_cases() -> dict:
  env = dict(os.environ)
  # the script sets the device count itself; other flags (make test's quick
  # compile settings) pass through
  flags = env.get("XLA_FLAGS", "").split()
  env["XLA_FLAGS"] = " ".join(f for f in flags if "device_count" not in f)
  proc = subprocess.run(
    [sys.executable, str(SCRIPT)],
    capture_output=True,
    text=True,
    env=env,
    cwd=SCRIPT.parents[1],
    timeout=600,
    check=False,
  )
  try:
    report = json.loads(proc.stdout)
  except json.JSONDecodeError:
    raise AssertionError(
      f"{SCRIPT.name} exited with {proc.returncode} without a report:\n"
      f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    ) from None
  assert proc.returncode in (0, 1), proc.stderr[-6000:]
  return report


def test_every_function_sharded_on_8_simulated_devices():
  report = _run_cases()
  assert len(report["devices"]) == 8, report["devices"]
  names = [c["name"] for c in report["checks"]]
  # the cases that matter are there, in both modes
  for mode in ("auto", "explicit", "shard_map"):
    for key in (
      "softmax_cross_entropy_with_integer_labels",
      "linear_softmax_cross_entropy",
      "collectives of value_and_grad",
      "checker flags a careless all-gather",
    ):
      if mode == "shard_map" and key.startswith(("collectives", "checker")):
        continue
      assert any(n.startswith(f"{mode}: ") and key in n for n in names), (mode, key)
  # two differentiable inputs varying over different mesh axes, for every
  # function that has two
  for key in (
    "softmax_cross_entropy[",
    "cross_entropy[",
    "kl_divergence[",
    "sigmoid_binary_cross_entropy[",
    "logsumexp[",
  ):
    assert any(n.startswith(f"shard_map mixed varying axes: {key}") for n in names), key
  assert (
    "shard_map mixed varying axes: checker rejects a rule without the cast" in names
  )
  # explicit and automatic sharding with targets, masks, bias and weights
  # sharded unlike the logits: every gradient has its primal's sharding
  for key in (
    "softmax_cross_entropy[labels rows",
    "softmax_cross_entropy[labels replicated",
    "sigmoid_binary_cross_entropy[labels replicated",
    "kl_divergence[targets rows",
    "cross_entropy[q replicated",
    "logsumexp[b rows",
    "softmax[input replicated, where sharded",
    "logsumexp[input replicated, where sharded",
    "linear_softmax_cross_entropy[bias replicated,mean",
    "linear_softmax_cross_entropy[weights replicated,sum",
  ):
    for mode in ("auto", "explicit"):
      assert any(n.startswith(f"{mode} mismatched shardings: {key}") for n in names), (
        mode,
        key,
      )
  # the fused loss's reduced modes (once in the test_linear module's own
  # process, now here: one 8-device process for the whole suite)
  for reduction in ("sum", "mean"):
    for mode in ("auto", "explicit"):
      assert f"{mode}: reduced linear CE ({reduction}, weights)" in names
  assert "shard_map: reduced linear CE (sum, weights), psum of rows" in names
  failed = [c for c in report["checks"] if not c["ok"]]
  message = "\n".join(
    f"- {c['name']}: {json.dumps(c['detail'])[:1500]}" for c in failed
  )
  assert not failed, f"{len(failed)} of {len(names)} sharded checks failed:\n{message}"


# ---------------------------------------------------------------------------
# the HLO checker itself, on text (no devices needed)

HLO = """
HloModule jit_f, entry_computation_layout={(f32[32,256]{1,0})->f32[]}

%max (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %maximum = f32[] maximum(%a, %b)
}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add.1 = f32[] add(%a, %b)
}

ENTRY %main.1 (p: f32[32,256]) -> f32[] {
  %p = f32[32,256]{1,0} parameter(0)
  %all-reduce = f32[32]{0} all-reduce(%x), channel_id=1, replica_groups=[2,4]<=[8], to_apply=%max
  %all-reduce.1 = (f32[32]{0}, f32[32]{0}) all-reduce(%a, %b), channel_id=2, replica_groups={{0,1,2,3},{4,5,6,7}}, to_apply=%add
  %all-gather = f32[32,1024]{0,1} all-gather(%p), channel_id=3, replica_groups=[2,4]<=[8], dimensions={1}
  %ags = (bf16[4,8]{1,0}, bf16[16,8]{1,0}) all-gather-start(%q), channel_id=4, dimensions={0}
  %agd = bf16[16,8]{1,0} all-gather-done(%ags)
  %cp = f32[2,2]{1,0} collective-permute(%r), channel_id=5, source_target_pairs={{0,1},{1,0}}
  ROOT %a2a = s32[64]{0} all-to-all(%s), channel_id=6, dimensions={0}
}
"""  # noqa: E501


def test_collectives_are_parsed_with_their_sizes():
  found = sharding_cases.collectives(HLO)
  assert [c["op"] for c in found] == [
    "all-reduce",
    "all-reduce",
    "all-gather",
    "all-gather",
    "collective-permute",
    "all-to-all",
  ]
  assert found[1]["arrays"] == [["f32", [32]], ["f32", [32]]]
  assert found[1]["bytes"] == 256
  assert found[2]["max_elements"] == 32 * 1024
  assert found[3]["arrays"] == [["bf16", [16, 8]]]  # the start's result
  assert found[3]["bytes"] == 16 * 8 * 2
  assert found[5]["bytes"] == 64 * 4
  assert [c["devices"] for c in found] == [4, 4, 4, None, None, None]
  assert [c["reduction"] for c in found[:2]] == ["maximum", "add"]


def test_checker_flags_a_gather_as_large_as_a_logits_block():
  found = sharding_cases.collectives(HLO)
  block = 32 * 256  # N/dp x V/mp
  bad = sharding_cases.too_large(found, block)
  assert [c["op"] for c in bad] == ["all-gather"]
  # one element smaller: the per-row statistics and the small moves pass
  assert sharding_cases.too_large(found, 32 * 1024 + 1) == []
  # all-reduces count only when asked
  small = sharding_cases.too_large(found, 32)
  assert [c["op"] for c in small] == ["all-gather", "all-gather", "all-to-all"]
  assert len(sharding_cases.too_large(found, 32, moving_only=False)) == 5
