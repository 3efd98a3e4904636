"""Back-of-envelope formulas, beside tgauge's exact counts (``tgauge estimate --textbook``).

  params      = L x 3 x (d^2 + d)                 the project's seed notes: the Q, K, V
                                                  projections with biases only
  activations = b x L x (3 T d + T^2 + T d) x bytes   the seed notes: Q, K, V; the T x T
                                                  scores; the attention output (training)
  KV cache    = 2 x b x L x T x d x bytes         keys and values of every layer, all heads
                                                  cached (Pope et al. 2022, "Efficiently
                                                  Scaling Transformer Inference", sec. 2)
with L all layers and T the tokens of one sequence (decode: prompt + new tokens). The KV
cache has no T^2 term: it keeps keys and values, never scores. The exact counterparts:
params from estimator.terms.params (every module); the activations saved for backward in training,
the KV cache in prefill/decode. ratio = exact / formula.
"""

from __future__ import annotations

from typing import Any

from estimator.breakdown import Textbook, TextbookTerm
from estimator.shapes import Shapes
from estimator.spec.dtypes import nbytes
from estimator.spec.model import ModelSpec
from estimator.terms.memory import group


def textbook_params(spec: ModelSpec) -> int:
    """L x 3 x (d^2 + d)."""
    d, L = spec.d_model, spec.n_layers
    return L * 3 * (d * d + d)


def _tokens(sh: Shapes) -> Any:
    """T: tokens of one sequence (decode: prompt + new tokens)."""
    if sh.mode == "decode":
        return sh.prompt + sh.new_tokens
    return sh.s_out


def textbook_cache_bytes(spec: ModelSpec, sh: Shapes) -> Any:
    """Training: b x L x (3 T d + T^2 + T d) activations in the compute dtype.
    Inference: the KV cache, 2 x b x L x T x d in the KV cache dtype (no T^2 term)."""
    d, L, b, T = spec.d_model, spec.n_layers, sh.b, _tokens(sh)
    if sh.training:
        per_layer = T * d * 3 + T * T + T * d  # Q, K, V; scores; output
        return nbytes(b * L * per_layer, sh.compute_dtype)
    L_cache = spec.n_decoder_layers or L
    return nbytes(2 * b * L_cache * T * d, sh.kv_dtype)  # keys and values


def textbook(spec: ModelSpec, sh: Shapes, n_params: int, memory: dict[str, int]) -> Textbook:
    """The notes' params and cache against the exact params and (KV cache | activations)."""
    if sh.training:
        exact_cache, what = group(memory, "activations"), "activations saved for backward"
        formula = "b x L x (3 T d + T^2 + T d) x bytes"
    else:
        exact_cache, what = group(memory, "kv_cache"), "KV cache"
        formula = "2 x b x L x T x d x bytes"
    return Textbook(
        terms=[
            TextbookTerm(
                name="params",
                formula="L x 3 x (d^2 + d)",
                textbook=textbook_params(spec),
                exact=n_params,
            ),
            TextbookTerm(
                name=f"cache_bytes ({what})",
                formula=formula,
                textbook=textbook_cache_bytes(spec, sh),
                exact=exact_cache,
            ),
        ]
    )
