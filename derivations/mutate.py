r"""Mutation test of the derivations: do their checks catch a wrong rule?

``python -m derivations.mutate`` applies each plausible one-line bug of
:data:`MUTATIONS` to a temporary copy of ``jaxsmx`` (never to the real files),
imports the copy in a fresh subprocess and runs the derivations' numeric
checks alone on it: the plain-case comparisons of :mod:`derivations.agreement.numeric`
and the option, edge and dtype cases of :mod:`derivations.agreement.cases`, for the
functions whose file the mutation touches (every function for the shared
numerics). A mutation is caught when a check fails. ``--sample N`` runs the
first N of a fixed spread; ``--out`` writes the table for the report.
``--keys K ...`` runs only those mutations and puts their rows into the
``--out`` table, keeping the rows of the others (for a mutation added or
changed, without rerunning the whole list).

A mutation whose ``old`` text no longer occurs in its file, or occurs more
than once, is *stale*: it fails the run (and counts as not caught in the
rate), so that moving code cannot silently shrink what is tested. Fix a
stale mutation by pointing it at the line's new text. :func:`stale` checks
every mutation without running anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jaxsmx as _jaxsmx_location  # only its path: the copy is imported elsewhere

SOURCE = pathlib.Path(_jaxsmx_location.__file__).resolve().parent
del _jaxsmx_location

SOFTMAX = ("softmax", "log_softmax", "logsumexp")
ENTROPY = ("softmax_entropy", "entropy", "cross_entropy")
KL = ("kl_divergence",)
KL_FAMILY = (*KL, "kl_divergence_with_log_targets", "convex_kl_divergence")
SOFT = ("softmax_cross_entropy",)
INTEGER = ("softmax_cross_entropy_with_integer_labels",)
SIGMOID = ("sigmoid_binary_cross_entropy", "sigmoid_focal_loss")
POLY = ("poly_loss_cross_entropy",)
LOSSES = SOFT + INTEGER + SIGMOID + POLY
LINEAR = ("linear_softmax_cross_entropy",)
BY_FILE = {
  "_softmax.py": SOFTMAX,
  "_entropy.py": ENTROPY,
  "_kl.py": KL_FAMILY,
  "_soft_labels.py": SOFT + POLY,
  "_poly.py": POLY,
  "_integer_labels.py": INTEGER,
  "_sigmoid.py": SIGMOID,
  "_linear": LINEAR,  # the package
  "_numerics.py": SOFTMAX + ENTROPY + KL_FAMILY + LOSSES + LINEAR,
  "_checks.py": INTEGER + LINEAR,  # the label bounds
}


@dataclasses.dataclass(frozen=True)
class Mutation:
  """One plausible bug: replace ``old`` (a unique line fragment) by ``new``."""

  key: str
  file: str
  old: str
  new: str
  what: str
  kind: str  # term, mask, option, guard, chunk, dtype, cotangent


M = Mutation
MUTATIONS = (
  M(
    "softmax-dot",
    "_softmax.py",
    "jnp.sum(g * a, -1, keepdims=True)), None",
    "jnp.sum(g, -1, keepdims=True)), None",
    "softmax: ⟨g, a⟩ as sum(g)",
    "term",
  ),
  M(
    "softmax-sign",
    "_softmax.py",
    "a * (g - jnp.sum(g * a",
    "a * (g + jnp.sum(g * a",
    "softmax: sign of the inner product",
    "term",
  ),
  M(
    "log_softmax-mask",
    "_softmax.py",
    "    g = jnp.where(where, g, 0.0)\n",
    "    g = g\n",
    "log_softmax: masked cotangents not dropped",
    "mask",
  ),
  M(
    "log_softmax-sum",
    "_softmax.py",
    "return g - a * jnp.sum(g, -1, keepdims=True)",
    "return g - a * jnp.sum(g * a, -1, keepdims=True)",
    "log_softmax: sum(g) as ⟨g, a⟩",
    "term",
  ),
  M(
    "lse-cot",
    "_softmax.py",
    "return g * w, None, None",
    "return w, None, None",
    "logsumexp: cotangent dropped",
    "cotangent",
  ),
  M(
    "lse-b",
    "_softmax.py",
    "b * jnp.where(b == 0, 0.0, w)",
    "jnp.where(b == 0, 0.0, w)",
    "logsumexp(b): d/da without the factor b",
    "option",
  ),
  M(
    "lse-db",
    "_softmax.py",
    "return da, times_cotangent(g, w), None",
    "return da, times_cotangent(g, b * w), None",
    "logsumexp(b): d/db with a factor b",
    "option",
  ),
  M(
    "lse-empty",
    "_softmax.py",
    "w = jnp.where(empty, 0.0, _exp_from(z, shift) / jnp.where(empty, 1.0, s))",
    "w = _exp_from(z, shift) / s",
    "logsumexp: empty-slice guard removed",
    "guard",
  ),
  M(
    "lse-sign",
    "_softmax.py",
    "/ jnp.where(empty, 1.0, s))",
    "/ jnp.where(empty, 1.0, jnp.abs(s)))",
    "logsumexp(b): |S| for S in the gradient",
    "option",
  ),
  M(
    "sce-sumy",
    "_soft_labels.py",
    "dz = ratio(e, s) * jnp.sum(y, axes, keepdims=True) - y",
    "dz = ratio(e, s) - y",
    "softmax_cross_entropy: a sum(y) as a",
    "term",
  ),
  M(
    "sce-alpha",
    "_soft_labels.py",
    "dy = jnp.where(keep, -(1.0 - alpha) * lp, 0.0)",
    "dy = jnp.where(keep, -lp, 0.0)",
    "softmax_cross_entropy: d/dy without (1 - alpha)",
    "option",
  ),
  M(
    "sce-live",
    "_soft_labels.py",
    "dz_out = jnp.where(live, g * upcast(dz), 0.0)",
    "dz_out = g * upcast(dz)",
    "softmax_cross_entropy: empty slices not zeroed",
    "guard",
  ),
  M(
    "sce-cot",
    "_soft_labels.py",
    "jnp.where(live, g * upcast(dz), 0.0)",
    "jnp.where(live, upcast(dz), 0.0)",
    "softmax_cross_entropy: cotangent dropped (d/dz)",
    "cotangent",
  ),
  M(
    "sce-guard",
    "_soft_labels.py",
    "times_cotangent(g, upcast(dy))",
    "g * upcast(dy)",
    "softmax_cross_entropy: 0 * inf guard on d/dy removed",
    "guard",
  ),
  M(
    "sce-dtype",
    "_soft_labels.py",
    "dy.astype(labels.dtype), live, where)",
    "dy.astype(logits.dtype), live, where)",
    "softmax_cross_entropy: d/dy residual in the logits' dtype",
    "dtype",
  ),
  M(
    "ice-alpha",
    "_integer_labels.py",
    "grad = ratio(e, s) * total - (1.0 - alpha) * target",
    "grad = ratio(e, s) * total - target",
    "integer CE: one-hot without (1 - alpha)",
    "option",
  ),
  M(
    "ice-spread-mask",
    "_integer_labels.py",
    "grad = grad - (spread if where is None else jnp.where(where, spread, 0.0))",
    "grad = grad - spread",
    "integer CE: smoothing spread onto masked classes",
    "mask",
  ),
  M(
    "ice-classes",
    "_integer_labels.py",
    "spread = alpha / num_classes(z.shape, axes, where, z.dtype)",
    "spread = alpha / num_classes(z.shape, axes, None, z.dtype)",
    "integer CE: C counts masked classes",
    "mask",
  ),
  M(
    "ice-cw-total",
    "_integer_labels.py",
    "total = (1.0 - alpha) * w_c + alpha * share",
    "total = (1.0 - alpha) * w_c + alpha",
    "class weights: the smoothing's share of the total target mass unweighted",
    "option",
  ),
  M(
    "ice-cw-spread",
    "_integer_labels.py",
    "spread = spread if w is None else spread * w",
    "spread = spread",
    "class weights: the smoothing spread in d/dz unweighted",
    "option",
  ),
  M(
    "ice-cw-value",
    "_integer_labels.py",
    "weighted_lp = kept_lp if w is None else _weighted(w, kept_lp)",
    "weighted_lp = kept_lp",
    "class weights: the smoothing term of the value unweighted",
    "value",
  ),
  M(
    "ice-cw-dw",
    "_integer_labels.py",
    "dw = (1.0 - alpha) * jnp.where(onehot, nll, 0.0)",
    "dw = jnp.where(onehot, nll, 0.0)",
    "class weights: d/dw without (1 - alpha)",
    "term",
  ),
  M(
    "ice-cw-dw-smooth",
    "_integer_labels.py",
    "dw = dw - alpha * kept_lp / count",
    "dw = dw + alpha * kept_lp / count",
    "class weights: sign of the smoothing term in d/dw",
    "term",
  ),
  M(
    "ice-cw-cot",
    "_integer_labels.py",
    "per_example = _finish(times_cotangent(g_, dw), void, invalid)",
    "per_example = _finish(dw, void, invalid)",
    "class weights: cotangent dropped from d/dw",
    "cotangent",
  ),
  M(
    "ice-cw-void",
    "_integer_labels.py",
    "per_example = _finish(times_cotangent(g_, dw), void, invalid)",
    "per_example = times_cotangent(g_, dw)",
    "class weights: ignored and dropped rows counted in d/dw",
    "guard",
  ),
  M(
    "ice-void",
    "_integer_labels.py",
    "return _finish(dz, void, invalid).astype(grad.dtype)",
    "return dz.astype(grad.dtype)",
    "integer CE: ignored rows not zeroed",
    "guard",
  ),
  M(
    "ice-cot",
    "_integer_labels.py",
    "dz = jnp.expand_dims(upcast(g), axes) * upcast(grad)",
    "dz = upcast(grad)",
    "integer CE: cotangent dropped",
    "cotangent",
  ),
  M(
    "ice-dtype",
    "_integer_labels.py",
    "return out, (grad.astype(logits.dtype), void, invalid, dw, cw)",
    "return out, (grad.astype(jnp.bfloat16), void, invalid, dw, cw)",
    "integer CE: residual kept in bfloat16",
    "dtype",
  ),
  M(
    "bce-dz",
    "_sigmoid.py",
    "dz = g * (jax.nn.sigmoid(z) - y)",
    "dz = g * (jax.nn.sigmoid(-z) - y)",
    "sigmoid BCE: sigma(-z) for sigma(z)",
    "term",
  ),
  M(
    "bce-dy",
    "_sigmoid.py",
    "dy = times_cotangent(g, -z)",
    "dy = times_cotangent(g, z)",
    "sigmoid BCE: sign of d/dy",
    "term",
  ),
  M(
    "bce-dtype",
    "_sigmoid.py",
    "return dz.astype(logits.dtype), dy.astype(labels.dtype), None",
    "return dz.astype(logits.dtype), dy.astype(logits.dtype), None",
    "sigmoid BCE: d/dy rounded to the logits' dtype",
    "dtype",
  ),
  M(
    "se-h",
    "_entropy.py",
    "return h, -a * (lp + h)",
    "return h, -a * (lp - h)",
    "softmax_entropy: sign of H",
    "term",
  ),
  M(
    "se-cot",
    "_entropy.py",
    "return g * grad, None",
    "return grad, None",
    "softmax_entropy: cotangent dropped",
    "cotangent",
  ),
  M(
    "entropy-one",
    "_entropy.py",
    "-(jnp.log(fill_masked(where, p, 1.0)) + 1.0)",
    "-jnp.log(fill_masked(where, p, 1.0))",
    "entropy: the +1 dropped",
    "term",
  ),
  M(
    "entropy-mask",
    "_entropy.py",
    "return keep_unmasked(where, dp), None",
    "return dp, None",
    "entropy: masked entries get a gradient",
    "mask",
  ),
  M(
    "ce-00",
    "_entropy.py",
    "-p / jnp.where((p == 0) & (q == 0), 1.0, q)",
    "-p / q",
    "cross_entropy: 0/0 guard removed",
    "guard",
  ),
  M(
    "ce-dp",
    "_entropy.py",
    "dp = times_cotangent(g, -jnp.log(q))",
    "dp = times_cotangent(g, jnp.log(q))",
    "cross_entropy: sign of d/dp",
    "term",
  ),
  M(
    "ce-guard",
    "_entropy.py",
    "dp = times_cotangent(g, -jnp.log(q))",
    "dp = g * -jnp.log(q)",
    "cross_entropy: 0 * inf guard removed",
    "guard",
  ),
  M(
    "kl-cot",
    "_kl.py",
    "keep_unmasked(where, -g * t)",
    "keep_unmasked(where, -t)",
    "kl_divergence: cotangent dropped (d/dlog q)",
    "cotangent",
  ),
  M(
    "kl-mask",
    "_kl.py",
    "keep_unmasked(where, -g * t)",
    "-g * t",
    "kl_divergence: masked entries get a gradient",
    "mask",
  ),
  M(
    "kl-one",
    "_kl.py",
    "dt = jnp.log(jnp.where(zero, 1.0, t)) + 1.0 -",
    "dt = jnp.log(jnp.where(zero, 1.0, t)) -",
    "kl_divergence: the +1 dropped",
    "term",
  ),
  M(
    "times-cotangent",
    "_numerics.py",
    "return g * jnp.where((g == 0) & ~jnp.isfinite(d), 0.0, d)",
    "return g * d",
    "times_cotangent: 0 * inf guard removed",
    "guard",
  ),
  M(
    "ratio",
    "_numerics.py",
    "return e / jnp.where(s == 0.0, 1.0, s)",
    "return e / s",
    "ratio: empty-slice guard removed",
    "guard",
  ),
  M(
    "label-bound-overflow",
    "_checks.py",
    "  elif num_classes <= info.max:\n"
    "    in_range = in_range & (labels < np.asarray(num_classes, labels.dtype))",
    "  elif True:\n"
    "    in_range = in_range & (labels < np.asarray(num_classes).astype(labels.dtype))",
    "label_index: the class count cast into a narrow label dtype, no overflow guard",
    "guard",
  ),
  M(
    "log-of-sum-empty",
    "_numerics.py",
    "jnp.where(empty, -jnp.inf, jnp.log(jnp.where(empty, 1.0, s)))",
    "jnp.where(empty, -jnp.inf, jnp.log(s))",
    "log_of_sum: the empty-slice guard inside the log removed (second order)",
    "guard",
  ),
  M(
    "ce-value-mask",
    "_entropy.py",
    "p_, q_ = fill_masked(where, p, 0.0), fill_masked(where, q, 1.0)\n",
    "p_, q_ = p, q\n",
    "cross_entropy: the forward value sums masked terms",
    "value",
  ),
  M(
    "linear-offset",
    "_linear/_rows.py",
    "cols = start + lax.broadcasted_iota(",
    "cols = lax.broadcasted_iota(",
    "linear CE: one-hot without the chunk offset",
    "chunk",
  ),
  M(
    "linear-dw",
    "_linear/_chunked.py",
    "_x_t_d(xc, parts, start, mm).astype(dw.dtype), start)",
    "_x_t_d(xc, parts, start, mm).astype(dw.dtype), start + 1)",
    "linear CE: dw one column off",
    "chunk",
  ),
  M(
    "linear-dx",
    "_linear/_chunked.py",
    "    dx = _add_rows(dx, parts, wc.astype(parts[0].dtype), mm)",
    "    dx = _add_rows(jnp.zeros_like(dx), parts, wc.astype(parts[0].dtype), mm)",
    "linear CE: dx not accumulated over chunks",
    "chunk",
  ),
  M(
    "linear-spread-mask",
    "_linear/_rows.py",
    "d = d - (s if mask is None else jnp.where(mask, s, 0.0))",
    "d = d - s",
    "linear CE: smoothing spread onto masked classes",
    "mask",
  ),
  M(
    "linear-cap",
    "_linear/_rows.py",
    "d = d * (1.0 - t * t)",
    "d = d * (1.0 - t)",
    "linear CE: tanh' as 1 - tanh",
    "option",
  ),
  M(
    "linear-zloss",
    "_linear/_rows.py",
    "g_a = g * (mass + 2.0 * opts.z_loss * (shift + live_norm))",
    "g_a = g * (mass + opts.z_loss * (shift + live_norm))",
    "linear CE: z-loss gradient without its factor 2",
    "option",
  ),
  M(
    "linear-zloss-value",
    "_linear/_rows.py",
    "loss = loss + opts.z_loss * lse * lse",
    "loss = loss + opts.z_loss * lse",
    "linear CE: z-loss value as lambda lse",
    "value",
  ),
  M(
    "linear-alpha",
    "_linear/_rows.py",
    "per_row(g_t * (1.0 - opts.alpha))",
    "per_row(g_t)",
    "linear CE: one-hot without (1 - alpha)",
    "option",
  ),
  M(
    "linear-classes",
    "_linear/_rows.py",
    "spread = per_row(g * (opts.alpha / num_classes(where, vocab, g.dtype)))",
    "spread = per_row(g * (opts.alpha / vocab))",
    "linear CE: C counts masked classes",
    "mask",
  ),
  M(
    "linear-dropped",
    "_linear/_rows.py",
    "return _poisoned(jnp.where(dropped | empty, 0.0, coef), invalid)",
    "return _poisoned(jnp.where(empty, 0.0, coef), invalid)",
    "linear CE: dropped rows not zeroed",
    "guard",
  ),
  M(
    "linear-masked-value",
    "_linear/_rows.py",
    "    z = jnp.where(m, z, -jnp.inf)\n",
    "    z = z\n",
    "linear CE: masked classes kept in the forward value",
    "value",
  ),
  M(
    "linear-one-pass-rows",
    "_linear/_reduced.py",
    "dx, mm(d, wc, (((1,), (1,)), ((), ()))), start, 0",
    "dx, mm(d, wc, (((1,), (1,)), ((), ()))), 0, 0",
    "linear CE, one pass: every row block's dx written at row 0",
    "chunk",
  ),
  M(
    "linear-one-pass-dw",
    "_linear/_reduced.py",
    "dw = dw + mm(xb, d, (((0,), (0,)), ((), ())))",
    "dw = mm(xb, d, (((0,), (0,)), ((), ())))",
    "linear CE, one pass: dw not accumulated over row blocks",
    "chunk",
  ),
  M(
    "linear-weights-mean",
    "_linear/_reduced.py",
    "(losses - counted * value) / denom",
    "losses / denom",
    "linear CE: weights' gradient under 'mean' without the quotient rule",
    "term",
  ),
  M(
    "linear-cw-mass",
    "_linear/_rows.py",
    "mass = (1.0 - opts.alpha) * cwt.target + opts.alpha * cwt.share",
    "mass = cwt.target",
    "linear CE, class weights: W without the smoothing's share",
    "option",
  ),
  M(
    "linear-cw-spread",
    "_linear/_rows.py",
    "s = coef.s[:, None] if cw is None else coef.s[:, None] * cw[None, :]",
    "s = coef.s[:, None]",
    "linear CE, class weights: the smoothing spread in d/du unweighted",
    "option",
  ),
  M(
    "linear-cw-value",
    "_linear/_rows.py",
    "smooth = (cwt.share * shift - mean_z) + cwt.share * log_norm",
    "smooth = (shift - mean_z) + log_norm",
    "linear CE, class weights: the smoothing term's value without the mean weight",
    "value",
  ),
  M(
    "linear-cw-mean",
    "_linear/_rows.py",
    "counted = jnp.where(dropped, 0.0, cwt.target)",
    "counted = counted",
    "linear CE, class weights: 'mean' divides by the count, not the labels' weights",
    "term",
  ),
  M(
    "linear-cw-dw",
    "_linear/_rows.py",
    "dw = by_class((1.0 - opts.alpha) * g * nll",
    "dw = by_class(g * nll",
    "linear CE, class weights: d/dw's label term without (1 - alpha)",
    "term",
  ),
  M(
    "linear-cw-gap",
    "_linear/_rows.py",
    "gap = shift[:, None] - z",
    "gap = -z",
    "linear CE, class weights: d/dw's smoothing term without the shift",
    "term",
  ),
  M(
    "linear-cw-norm",
    "_linear/_rows.py",
    "norm = jnp.sum(s * live_norm)",
    "norm = jnp.sum(s)",
    "linear CE, class weights: d/dw's smoothing term with log_norm as 1",
    "term",
  ),
  M(
    "linear-cw-zsum",
    "_linear/_chunked.py",
    "kept = kept * _tiling.take(cw, start, size)[None, :]",
    "kept = kept",
    "linear CE, class weights: the chunked sum of the logits unweighted",
    "chunk",
  ),
  M(
    "linear-cw-part",
    "_linear/_chunked.py",
    "part = _tiling.put(part, chunk.astype(part.dtype), start)",
    "part = _tiling.put(part, chunk.astype(part.dtype), 0)",
    "linear CE, class weights: every chunk's d/dw part written at class 0",
    "chunk",
  ),
  M(
    "linear-cw-quotient",
    "_linear/_reduced.py",
    "d_cw = d_cw - _denominator_part(r, labels, where, vocab, value)",
    "d_cw = d_cw",
    "linear CE, class weights: d/dw under 'mean' without the quotient rule",
    "term",
  ),
  M(
    "linear-cw-one-pass-part",
    "_linear/_reduced.py",
    "part = part + _rows.chunk_class_weight_part(coef, block_stats[0], z, mask)",
    "part = _rows.chunk_class_weight_part(coef, block_stats[0], z, mask)",
    "linear CE, one pass, class weights: d/dw not accumulated over row blocks",
    "chunk",
  ),
  M(
    "linear-cw-one-pass-zsum",
    "_linear/_reduced.py",
    "z_sum = jnp.sum(kept if cw is None else kept * cw[None, :], axis=1)",
    "z_sum = jnp.sum(kept, axis=1)",
    "linear CE, one pass, class weights: the sum of the logits unweighted",
    "chunk",
  ),
  M(
    "linear-16bit-low",
    "_linear/_chunked.py",
    "return hi, (d - hi.astype(d.dtype)).astype(dtype)",
    "return hi, jnp.zeros_like(hi)",
    "linear CE, 16-bit backward: the low part of d dropped",
    "dtype",
  ),
  M(
    "bce-pw-dz",
    "_sigmoid.py",
    "- w * y * jax.nn.sigmoid(-z))",
    "- w * y * jax.nn.sigmoid(z))",
    "pos_weight: sigma(z) for sigma(-z) in the positive term",
    "option",
  ),
  M(
    "bce-pw-dy",
    "_sigmoid.py",
    "_bce_terms(z, w, 0.0) - _bce_terms(z, 0.0, 1.0)",
    "_bce_terms(z, 1.0, 0.0) - _bce_terms(z, 0.0, 1.0)",
    "pos_weight: d/dy without the weight",
    "option",
  ),
  M(
    "bce-pw-dw",
    "_sigmoid.py",
    "dw = times_cotangent(g, _bce_terms(z, y, 0.0))",
    "dw = times_cotangent(g, _bce_terms(z, w * y, 0.0))",
    "pos_weight: d/dw carries the weight",
    "term",
  ),
  M(
    "focal-power",
    "_sigmoid.py",
    "pow_u = jnp.exp(gamma * jnp.where(",
    "pow_u = jnp.exp((gamma - 1.0) * jnp.where(",
    "focal: u^(gamma - 1) for u^gamma",
    "term",
  ),
  M(
    "focal-sign",
    "_sigmoid.py",
    "gm * ((1.0 - y) - y) * c_r",
    "gm * (y - (1.0 - y)) * c_r",
    "focal: sign of the focusing term in d/dz",
    "term",
  ),
  M(
    "focal-r-hard",
    "_sigmoid.py",
    "r = jnp.where(one, p, jnp.where(zero, q,",
    "r = jnp.where(one, q, jnp.where(zero, q,",
    "focal: r = sigma(-z) for a positive hard label",
    "guard",
  ),
  M(
    "focal-dy",
    "_sigmoid.py",
    "_times(gm * (q - p), _times(pow_u, c_u))",
    "_times(gm * (p - q), _times(pow_u, c_u))",
    "focal: sign of du/dy",
    "term",
  ),
  M(
    "focal-cu-hard",
    "_sigmoid.py",
    "    _softplus_over_sigmoid(-z),\n",
    "    _softplus_over_sigmoid(z),\n",
    "focal: c/u of a positive hard label at -z",
    "guard",
  ),
  M(
    "focal-series",
    "_sigmoid.py",
    "series = 1.0 - t * (0.5 - t",
    "series = 1.0 + t * (0.5 - t",
    "focal: sign in the series of log1p(t)/t",
    "guard",
  ),
  M(
    "focal-alpha-dy",
    "_sigmoid.py",
    "dy = dy + _times(2.0 * a - 1.0, cw)",
    "dy = dy + _times(1.0 - 2.0 * a, cw)",
    "focal: sign of d alpha_t / dy",
    "option",
  ),
  M(
    "poly-sign",
    "_poly.py",
    "a * total - y - eps * a * (y - mean_a)",
    "a * total - y + eps * a * (y - mean_a)",
    "poly: sign of the polynomial term in d/dz",
    "term",
  ),
  M(
    "poly-mean",
    "_poly.py",
    "a * total - y - eps * a * (y - mean_a)",
    "a * total - y - eps * a * y",
    "poly: <y, a> dropped from d/dz",
    "term",
  ),
  M(
    "poly-dy",
    "_poly.py",
    "+ eps * (1.0 - a), 0.0)",
    "+ eps * a, 0.0)",
    "poly: d/dy's eps (1 - a) as eps a",
    "term",
  ),
  M(
    "poly-mask",
    "_poly.py",
    "y = _masked_labels(y, where)",
    "y = y",
    "poly: label mass on masked classes kept",
    "mask",
  ),
  M(
    "kllt-dtau",
    "_kl.py",
    "dlt = jnp.where(zero, at_zero, t * (gap + 1.0))",
    "dlt = jnp.where(zero, at_zero, t * gap)",
    "KL with log-targets: the +1 of d/dtau dropped",
    "term",
  ),
  M(
    "kllt-zero",
    "_kl.py",
    "jnp.where(jnp.isnan(lq_), lq_, 0.0))",
    "jnp.where(jnp.isnan(lq_), lq_, -jnp.inf))",
    "KL with log-targets: d/dtau at a zero target as kl_divergence's -inf",
    "guard",
  ),
  M(
    "ckl-dq",
    "_kl.py",
    "dlq = dlq + keep_unmasked(where, g * q)",
    "dlq = dlq - keep_unmasked(where, g * q)",
    "convex KL: sign of q in d/dlog q",
    "term",
  ),
  M(
    "ckl-dt",
    "_kl.py",
    "dt = dt - keep_unmasked(where, jnp.broadcast_to(g, dt.shape))",
    "dt = dt + keep_unmasked(where, jnp.broadcast_to(g, dt.shape))",
    "convex KL: d/dt as log t + 2 - log q",
    "term",
  ),
)
del M

# A spread over functions and kinds, for the test suite's sample: each is
# caught by a case early in its function's list, so the sample, run with
# ``first``, is cheap (a shared-numerics mutation runs every function's checks)
SAMPLE = ("kl-cot", "linear-offset", "ice-spread-mask", "bce-dtype", "sce-guard")


@dataclasses.dataclass(frozen=True)
class Outcome:
  mutation: Mutation
  status: str  # "caught", "survived", "stale" (old text gone or not unique)
  failed: tuple[str, ...] = ()  # the failing checks; for "stale", the reason


def functions_of(m: Mutation) -> tuple[str, ...]:
  """The public functions whose checks can see a bug in ``m.file``."""
  if m.file in BY_FILE:
    return BY_FILE[m.file]
  return BY_FILE[m.file.split("/", 1)[0]]  # a module of a package: _linear/x.py


def problem(m: Mutation, source: pathlib.Path = SOURCE) -> str:
  """Why ``m`` cannot be applied to ``source`` (stale); "" when it can.

  It can when ``m.old`` occurs exactly once in ``m.file``.
  """
  path = source / m.file
  if not path.is_file():
    return f"{m.file} does not exist"
  count = path.read_text(encoding="utf-8").count(m.old)
  if count == 1:
    return ""
  if count == 0:
    return f"the old text no longer occurs in {m.file}"
  return f"the old text occurs {count} times in {m.file}"


def stale(
  mutations=MUTATIONS, source: pathlib.Path = SOURCE
) -> list[tuple[Mutation, str]]:
  """The mutations that cannot be applied, each with the reason; fast (reads files)."""
  out = []
  for m in mutations:
    why = problem(m, source)
    if why:
      out.append((m, why))
  return out


def apply(m: Mutation, root: pathlib.Path) -> bool:
  """Writes the mutated copy of jaxsmx under root; False if ``old`` is not unique."""
  if problem(m):
    return False
  dest = root / "jaxsmx"
  shutil.copytree(SOURCE, dest, ignore=shutil.ignore_patterns("__pycache__"))
  path = dest / m.file
  text = path.read_text(encoding="utf-8")
  path.write_text(text.replace(m.old, m.new, 1), encoding="utf-8")
  return True


CHILD = """
import json, sys
sys.path.insert(0, {root!r})
import jaxsmx
assert jaxsmx.__file__.startswith({root!r}), jaxsmx.__file__
from derivations import mutate
print("RESULT " + json.dumps(mutate.failing({functions!r}, first={first!r})))
"""
# with ``first``, the child runs the cases in groups of this many, one
# compiled program each, and stops at the first group with a failure
FIRST_GROUP = 8


def failing(functions: tuple[str, ...], first: bool = False) -> list[str]:
  """The derivation checks of these functions that fail (run in the child).

  With ``first``, only enough to call the mutant caught: the cases run first,
  a few at a time, and the run stops at the first group with a failure (the
  numeric checks run only if no case fails). The answer, caught or not, is
  the same; only the list of failing checks is shorter.
  """
  from . import all_derivations, cases
  from .agreement.cases import run_cases
  from .agreement.numeric import attached, run_numerics

  every = all_derivations()
  by_key = {d.key: d for d in every}
  checks = [c for c in attached(every) if c.function in functions]
  selected = [c for c in cases() if c.function in functions]
  if first:
    for start in range(0, len(selected), FIRST_GROUP):
      group = selected[start : start + FIRST_GROUP]
      bad = [r.case.name for r in run_cases(group) if not r.ok]
      if bad:
        return bad
    return [r.check.name for r in run_numerics(checks, by_key) if not r.ok]
  bad = [r.check.name for r in run_numerics(checks, by_key) if not r.ok]
  bad += [r.case.name for r in run_cases(selected) if not r.ok]
  return bad


def run_one(m: Mutation, first: bool = False) -> Outcome:
  """Applies ``m`` to a copy of jaxsmx and runs the checks on it in a fresh
  process; ``first`` stops at the first failing check (see :func:`failing`)."""
  with tempfile.TemporaryDirectory(prefix="jaxsmx-mutant-") as tmp:
    why = problem(m)
    if why or not apply(m, pathlib.Path(tmp)):
      return Outcome(m, "stale", (why,))
    code = CHILD.format(root=tmp, functions=functions_of(m), first=first)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
  if proc.returncode != 0 or not lines:
    # the mutant broke the import or the run itself: the checks saw it fail
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
    return Outcome(m, "caught", (f"run failed: {tail[0][:120]}",))
  failed = tuple(json.loads(lines[-1][len("RESULT ") :]))
  return Outcome(m, "caught" if failed else "survived", failed)


def run_all(
  mutations=MUTATIONS, workers: int = 2, first: bool = False
) -> list[Outcome]:
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(functools.partial(run_one, first=first), mutations))


def rate(outcomes: list[Outcome]) -> float:
  """The share caught; a stale mutation counts as not caught."""
  return sum(o.status == "caught" for o in outcomes) / max(len(outcomes), 1)


def markdown(outcomes: list[Outcome]) -> str:
  """The table of ``outcomes``, one row each, under a head line with the rate."""
  return _table([row(o) for o in outcomes])


def row_head(m: Mutation) -> str:
  """The start of ``m``'s row in the table: key, kind and bug, without the result."""
  return f"| `{m.key}` | {m.kind} | {m.what} |"


def row(o: Outcome) -> str:
  """``o``'s row: the first failing check (caught), survived or stale."""
  if o.status == "stale":
    by = f"**FAIL: stale**, {o.failed[0] if o.failed else 'not applied'}"
  elif o.status == "survived":
    by = "**survived**"
  else:
    more = len(o.failed) - 1
    by = f"`{o.failed[0]}`" + (f" and {more} more" if more else "")
  return f"{row_head(o.mutation)} {by} |"


def _caught(rows: list[str]) -> int:
  # a caught row's last column names its first failing check, in backticks
  return sum(r.rsplit(" | ", 1)[1].startswith("`") for r in rows)


def table_rate(table: str) -> float:
  """The share of a table's rows that are caught."""
  rows = [line for line in table.splitlines() if line.startswith("| `")]
  return _caught(rows) / max(len(rows), 1)


def _table(rows: list[str]) -> str:
  results = [r.rsplit(" | ", 1)[1] for r in rows]
  caught = _caught(rows)
  stale_n = sum(r.startswith("**FAIL: stale") for r in results)
  head = (
    f"{caught} of {len(rows)} mutations caught "
    f"({100 * caught / max(len(rows), 1):.0f}%) by the derivation checks alone."
  )
  if stale_n:
    head += f" **{stale_n} stale** (FAIL: fix their text in derivations/mutate.py)."
  lines = [head, "", "| mutation | kind | bug | caught by |", "|---|---|---|---|"]
  return "\n".join(lines + rows) + "\n"


def merge(table: str, outcomes: list[Outcome], mutations=None) -> tuple[str, list[str]]:
  """``table`` with the rows of ``outcomes`` put in, in the order of ``mutations``.

  A row of ``table`` is kept where its key, kind and bug still read as in
  ``mutations`` (default :data:`MUTATIONS`); a mutation that changed, or is
  new, needs an outcome.

  Returns:
    The merged table, and the keys of the mutations that have no row (run
    them).
  """
  mutations = MUTATIONS if mutations is None else mutations
  fresh = {o.mutation.key: row(o) for o in outcomes}
  old = [line for line in table.splitlines() if line.startswith("| `")]
  rows, missing = [], []
  for m in mutations:
    kept = [line for line in old if line.startswith(row_head(m) + " ")]
    line = fresh.get(m.key) or (kept[0] if kept else None)
    if line is None:
      missing.append(m.key)
    else:
      rows.append(line)
  return _table(rows), missing


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m derivations.mutate")
  parser.add_argument("--sample", type=int, default=0, help="run only N mutations")
  parser.add_argument(
    "--keys",
    nargs="+",
    default=(),
    help="run only these mutations and put their rows into the --out table",
  )
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--out", type=pathlib.Path, help="write the Markdown table here")
  args = parser.parse_args(argv)
  by_key = {m.key: m for m in MUTATIONS}
  chosen = MUTATIONS
  if args.sample:
    chosen = tuple(by_key[k] for k in SAMPLE[: args.sample])
  if args.keys:
    unknown = sorted(set(args.keys) - set(by_key))
    if unknown:
      parser.error(f"no mutation named {', '.join(unknown)} in derivations/mutate.py")
    chosen = tuple(m for m in MUTATIONS if m.key in set(args.keys))
  outcomes = run_all(chosen, args.workers)
  table, missing = markdown(outcomes), []
  if args.keys and args.out and args.out.exists():
    table, missing = merge(args.out.read_text(encoding="utf-8"), outcomes)
  print(table)
  if args.out:
    args.out.write_text(table, encoding="utf-8")
  for o in outcomes:
    if o.status == "stale":
      print(f"FAIL stale mutation {o.mutation.key}: {o.failed[0]}", file=sys.stderr)
  if missing:
    print(f"FAIL no row for {' '.join(missing)}: run them with --keys", file=sys.stderr)
  if missing or any(o.status == "stale" for o in outcomes):
    return 1
  return 0 if table_rate(table) >= 0.9 else 1


if __name__ == "__main__":
  sys.exit(main())
