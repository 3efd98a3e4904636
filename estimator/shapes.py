"""The run resolved once: every size, pattern, dtype and implementation that a (spec, workload)
leaves to be worked out, computed in one place and passed to every term, rule and replay.

``resolve(spec, workload)`` answers, once per estimate, what the workload leaves unset or
implied (estimator/spec/workload.py states each default):
  b, s            batch_size, seq_len (the encoder input of an encoder-decoder model)
  s_dec           tokens of one full decoder pass: target_len (default s), encoder-decoder;
                  else s
  s_out           positions the head sees in a full pass: s (encoder-only), else s_dec
  s_src           keys of the cross-attention: s for encoder-decoder, else 0
  prompt, new     decode: the prompt (default s, or 1 start token for encoder-decoder) and
                  the number of one-token steps
  stacks          per stack: its layers, self-attention pattern and window, whether causal
  cb, ib, kv      bytes per element of the compute dtype, of what matmuls make (the autocast
                  dtype under autocast, else cb) and the KV cache dtype's name
  optimizer_impl  the step's implementation (given, else what torch picks on the device)
  finetune        what the step trains: full, frozen patterns, LoRA targets, rank, adapter
                  dtype, a 4-bit base (estimator/spec/finetune.py)
A term function reads these; it never calls the ``resolved_*`` functions itself.

The sizes (b, s, s_dec, s_out, s_src, prompt, new) may be symbolic numbers (estimator/sym.py):
estimator/compiled/ resolves a workload with symbols for its sizes and runs the same term
functions once per structure to get every term as an expression of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from estimator.spec.dtypes import bits
from estimator.spec.finetune import FinetuneShapes, resolve_finetune
from estimator.spec.model import ModelSpec
from estimator.spec.workload import (
    Workload,
    resolved_optimizer_impl,
    resolved_pattern,
)
from estimator.sym import ceil_div, vmin

#: a size: an int, or a symbolic number of estimator/sym.py while a program is traced
Size = Any


def cached_positions(pattern: str, window: int | None, seen: Size) -> Size:
    """Positions a self-attention cache of ``pattern`` keeps once ``seen`` tokens went
    through it (reference_model's Pattern.keep_last): a sliding window its last w, a chunk
    the current chunk's (seen - 1) % c + 1, else all of them."""
    if pattern == "sliding_window":
        return vmin(seen, window)
    if pattern == "chunked":
        return (seen - 1) % window + 1
    return seen


def attention_pairs(
    pattern: str, window: int | None, causal: bool, s: Size, convention: str
) -> Size:
    """(query, key) pairs per head of a full self-attention pass over s tokens: the s x s
    rectangle (``convention`` "full", what eager attention and FlopCounterMode compute), or
    under "triangle" only the unmasked pairs (causal s(s+1)/2, a sliding window's band, per
    chunk). Chunked attention computes ceil(s / c) blocks of c x c (the last one padded)."""
    triangle = convention == "triangle"
    if pattern == "chunked":
        n_chunks = ceil_div(s, window)  # the last chunk is padded to c and computed in full
        if not triangle:
            return n_chunks * window * window
        full, rest = s // window, s % window
        tri = window * (window + 1) // 2 if causal else window * window
        return full * tri + (rest * (rest + 1) // 2 if causal else rest * rest)
    if not triangle:
        return s * s
    if pattern == "sliding_window":
        w = window
        if causal:
            return s * (s + 1) // 2 if s <= w else w * (w + 1) // 2 + (s - w) * w
        return s * s - (s - w) * (s - w + 1) if s > w else s * s
    return s * (s + 1) // 2 if causal else s * s


def is_causal(pattern: str, stack: str) -> bool:
    """Causal stacks: decoders unless the pattern is full; encoders only under 'causal'."""
    return pattern != "full" if stack == "decoder" else pattern == "causal"


@dataclass(frozen=True)
class StackShapes:
    """One stack of the model as this workload runs it."""

    name: str  # "encoder" | "decoder"
    n_layers: int
    pattern: str  # self-attention: full | causal | sliding_window | chunked
    window: int | None  # the sliding window's width or the chunk size
    causal: bool


@dataclass(frozen=True)
class Shapes:
    """The resolved run (module docstring). ``workload`` is the Workload as given."""

    workload: Workload
    mode: str
    training: bool
    b: Size
    s: Size
    s_dec: Size
    s_out: Size
    s_src: Size
    prompt: Size
    new_tokens: Size
    stacks: tuple[StackShapes, ...]
    dtype: str
    compute_dtype: str
    kv_dtype: str
    autocast: str | None
    master_weights: bool
    cb: int
    ib: int
    optimizer: str
    optimizer_impl: str | None
    attention_impl: str
    checkpointing: str
    dropout: float
    device: str
    kv_cache: bool
    use_cache: bool | None
    causal_flops: str
    # issue 19
    engine: str = "forward"  # the serving engine (estimator/replay/engines.py)
    quant: str | None = None  # the weights' format (estimator/terms/quant.py)
    group_size: int | None = None
    block_size: int | None = None  # engine vllm: paged KV block
    max_num_batched_tokens: int | None = None  # engine vllm: chunked prefill
    # issue 20: what the step trains (estimator/spec/finetune.py)
    finetune: FinetuneShapes = FinetuneShapes("full")
    # issue 22: Workload.experts_impl (estimator/rules/hf/moe.py)
    experts_impl: str = "grouped_mm"
    # issue 22e: Workload.routing (estimator/rules/reference/moe.py)
    routing: str = "uniform"

    def stack(self, name: str) -> StackShapes:
        """The stack called ``name`` ("encoder" or "decoder")."""
        for st in self.stacks:
            if st.name == name:
                return st
        raise KeyError(name)

    @property
    def last(self) -> StackShapes:
        """The stack that feeds the head (the decoder, else the encoder)."""
        return self.stacks[-1]

    @property
    def fused(self) -> bool:
        return self.attention_impl == "fused"

    def with_sizes(self, spec: ModelSpec, **sizes: Size) -> Shapes:
        """The same run with other sizes (``mode``, ``b``, ``s``, ``target_len``,
        ``prompt_len``, ``new_tokens``), the implied ones (s_dec, s_out, ...) re-derived."""
        given = {
            "mode": self.mode,
            "b": self.b,
            "s": self.s,
            "target_len": self.s_dec if spec.arch == "encoder-decoder" else None,
            "prompt_len": self.prompt,
            "new_tokens": self.new_tokens,
        }
        given.update(sizes)
        return dataclasses.replace(self, **_sizes(spec, **given))


def _sizes(
    spec: ModelSpec,
    mode: str,
    b: Size,
    s: Size,
    target_len: Size | None,
    prompt_len: Size | None,
    new_tokens: Size,
) -> dict[str, Any]:
    encdec = spec.arch == "encoder-decoder"
    s_dec = (s if target_len is None else target_len) if encdec else s
    return {
        "mode": mode,
        "training": mode == "train",
        "b": b,
        "s": s,
        "s_dec": s_dec,
        "s_out": s if spec.arch == "encoder" else s_dec,
        "s_src": s if encdec else 0,
        "prompt": prompt_len if prompt_len is not None else (1 if encdec else s),
        "new_tokens": new_tokens,
    }


def resolve(spec: ModelSpec, workload: Workload, **sizes: Size) -> Shapes:
    """The run of ``workload`` on ``spec`` (module docstring); ``sizes`` replace the
    workload's b, s, target_len, prompt_len, new_tokens (symbols, when a program is traced)."""
    w = workload
    given = {
        "mode": w.mode,
        "b": w.batch_size,
        "s": w.seq_len,
        "target_len": w.target_len,
        "prompt_len": w.prompt_len,
        "new_tokens": w.new_tokens,
    }
    given.update(sizes)
    stacks = tuple(
        StackShapes(name, n, *(pw := resolved_pattern(spec, w, name)), is_causal(pw[0], name))
        for name, n in spec.stacks
    )
    return Shapes(
        workload=w,
        stacks=stacks,
        dtype=w.dtype,
        compute_dtype=w.compute_dtype,
        kv_dtype=w.kv_cache_dtype,
        autocast=w.autocast,
        master_weights=w.master_weights,
        cb=bits(w.compute_dtype) // 8,
        ib=bits(w.autocast or w.compute_dtype) // 8,
        optimizer=w.optimizer,
        optimizer_impl=resolved_optimizer_impl(w),
        attention_impl=w.attention_impl,
        checkpointing=w.checkpointing,
        dropout=w.dropout,
        device=w.device,
        kv_cache=w.kv_cache,
        use_cache=w.use_cache,
        causal_flops=w.causal_flops,
        engine=w.engine,
        quant=w.quant,
        group_size=w.group_size,
        block_size=w.block_size,
        max_num_batched_tokens=w.max_num_batched_tokens,
        finetune=resolve_finetune(spec, w),
        experts_impl=w.experts_impl,
        routing=w.routing,
        **_sizes(spec, **given),
    )


# issue 22p
def for_layer_kind(sh: Shapes, kind: str) -> Shapes:
    """The run as one decoder layer of ``kind`` under a per-layer pattern (``spec.layer_pattern``,
    reference_model/masks.py ``layer_patterns``) sees it: a 'sliding' layer the decoder's own
    sliding window (the stack's pattern), a 'full' layer causal attention over every position."""
    if kind == "sliding":
        return sh
    stacks = tuple(
        dataclasses.replace(st, pattern="causal", window=None, causal=True)
        if st.name == "decoder"
        else st
        for st in sh.stacks
    )
    return dataclasses.replace(sh, stacks=stacks)
