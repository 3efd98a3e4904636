"""The seed notes' back-of-envelope formulas, beside tgauge's exact counts.

The notes size a Transformer as
  params = L x 3 x (d^2 + d)                      (the Q, K, V projections with biases only)
  cache  = L x (T x d x 3 + T x T + T x d) elements x bytes per sequence
           (Q, K, V; the T x T scores; the attention output)
with L all layers and T the tokens of one sequence. The exact counterparts: params from
estimator.params (every module); the "cache" is what the notes meant to keep, the KV cache
in prefill/decode, the activations saved for backward in training; both taken for b
sequences (the notes' cache is multiplied by b). ratio = exact / textbook.
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


def textbook_cache_bytes(spec: ModelSpec, workload: Workload) -> int:
    """b x L x (3 T d + T^2 + T d) elements in the compute dtype (KV cache dtype at inference)."""
    d, L, b = spec.d_model, spec.n_layers, workload.batch_size
    if workload.mode == "decode":
        T = resolved_prompt_len(spec, workload) + workload.new_tokens
    else:
        T = decoder_len(spec, workload) if spec.arch != "encoder" else workload.seq_len
    dtype = workload.compute_dtype if workload.is_training else workload.kv_cache_dtype
    per_layer = T * d * 3 + T * T + T * d  # Q, K, V; scores; output
    return nbytes(b * L * per_layer, dtype)


def textbook(spec: ModelSpec, workload: Workload, params: Breakdown, memory: Breakdown) -> Textbook:
    """The notes' params and cache against the exact params and (KV cache | activations)."""
    if workload.is_training:
        exact_cache, what = memory.group("activations"), "activations saved for backward"
    else:
        exact_cache, what = memory.group("kv_cache"), "KV cache"
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
                formula="b x L x (3 T d + T^2 + T d) x bytes",
                textbook=textbook_cache_bytes(spec, workload),
                exact=exact_cache,
            ),
        ]
    )
