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
params from estimator.params (every module); the activations saved for backward in training,
the KV cache in prefill/decode. ratio = exact / formula.
"""

from __future__ import annotations

from estimator.breakdown import Breakdown, Textbook, TextbookTerm
from estimator.dtypes import nbytes
from estimator.kv_cache import decoder_len
from estimator.spec import ModelSpec, Workload, resolved_prompt_len


def textbook_params(spec: ModelSpec) -> int:
    """L x 3 x (d^2 + d)."""
    d, L = spec.d_model, spec.n_layers
    return L * 3 * (d * d + d)


def _tokens(spec: ModelSpec, workload: Workload) -> int:
    """T: tokens of one sequence (decode: prompt + new tokens)."""
    if workload.mode == "decode":
        return resolved_prompt_len(spec, workload) + workload.new_tokens
    return decoder_len(spec, workload) if spec.arch != "encoder" else workload.seq_len


def textbook_cache_bytes(spec: ModelSpec, workload: Workload) -> int:
    """Training: b x L x (3 T d + T^2 + T d) activations in the compute dtype.
    Inference: the KV cache, 2 x b x L x T x d in the KV cache dtype (no T^2 term)."""
    d, L, b, T = spec.d_model, spec.n_layers, workload.batch_size, _tokens(spec, workload)
    if workload.is_training:
        per_layer = T * d * 3 + T * T + T * d  # Q, K, V; scores; output
        return nbytes(b * L * per_layer, workload.compute_dtype)
    L_cache = spec.n_decoder_layers or L
    return nbytes(2 * b * L_cache * T * d, workload.kv_cache_dtype)  # keys and values


def textbook(spec: ModelSpec, workload: Workload, params: Breakdown, memory: Breakdown) -> Textbook:
    """The notes' params and cache against the exact params and (KV cache | activations)."""
    if workload.is_training:
        exact_cache, what = memory.group("activations"), "activations saved for backward"
        formula = "b x L x (3 T d + T^2 + T d) x bytes"
    else:
        exact_cache, what = memory.group("kv_cache"), "KV cache"
        formula = "2 x b x L x T x d x bytes"
    return Textbook(
        terms=[
            TextbookTerm(
                name="params",
                formula="L x 3 x (d^2 + d)",
                textbook=textbook_params(spec),
                exact=params.total,
            ),
            TextbookTerm(
                name=f"cache_bytes ({what})",
                formula=formula,
                textbook=textbook_cache_bytes(spec, workload),
                exact=exact_cache,
            ),
        ]
    )
