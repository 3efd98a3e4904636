"""Peak live bytes of an inference pass (prefill, decode steps): the drivers that run the
forward replay of the spec's code (rule ``replay.pass`` for a prefill, ``replay.step`` for a
decode step: estimator/rules/reference/passes.py for our reference model, estimator/rules/hf/
for transformers' classes) over the embeddings, stacks and head, from the resident bytes.
"""

from __future__ import annotations

from typing import Any

from estimator.replay.engines import engine
from estimator.rules.live import Live
from estimator.rules.registry import rule
from estimator.shapes import Shapes, cached_positions
from estimator.spec.dtypes import nbytes
from estimator.spec.model import ModelSpec
from estimator.sym import vmax


def prefill_peak(spec: ModelSpec, sh: Shapes, start: Any) -> Any:
    """Highest live bytes of Transformer.forward (no grad) from ``start`` bytes (weights,
    buffers, inputs): embeddings, stacks, pooler / LM head."""
    live = Live(start)
    p = rule("replay.pass", spec)(spec, sh, live)
    b, s, d = sh.b, sh.s, spec.d_model
    if spec.is_patch_input:
        n_patches = (spec.image_size // spec.patch_size) ** 2
        conv = live.take(b * d * n_patches * p.cb)  # patch.proj
        live.take(p.act(n_patches + 1, d))  # cat([cls, x])
        live.drop(conv)
        s = n_patches + 1
    else:
        p.embed(s)  # embed: held by forward until it returns
    first = spec.stacks[0][0]
    h = p.stack(first, s, 0)
    s_out = s
    if spec.arch == "encoder-decoder":
        s_out = sh.s_dec
        live.take(p.act(s_out, d))  # embed(decoder_input_ids)
        p.stack("decoder", s_out, 0, cross_s=s)
    if spec.pooler:
        live.take(b * d * p.cb)  # pooler.proj on x[:, 0]
        live.take(b * d * p.cb)  # tanh
    if spec.n_labels:
        live.take(b * spec.n_labels * p.cb)  # classifier logits [b, n_labels]
    if spec.lm_head:
        p.logits(s_out)  # logits
    del h
    return live.peak


def _keep(sh: Shapes, length: Any) -> Any:
    """Positions the self-attention cache keeps after ``length`` tokens (Pattern.keep_last)."""
    st = sh.stack("decoder")
    return cached_positions(st.pattern, st.window, length)


def cached_prefill(
    spec: ModelSpec, sh: Shapes, start: Any, prompt: Any, next_id: bool = True
) -> Live:
    """Transformer.prefill of ``prompt`` decoder tokens (encoder-decoder: after the encoder on
    s source tokens) that keeps every layer's keys/values in the cache; then the argmax of the
    last logits (``next_id``). ``start``: weights, buffers, the token ids."""
    s, d = sh.s, spec.d_model
    live = Live(start)
    eng = engine(spec, sh)
    p = rule("replay.pass", spec)(spec, sh, live)
    args = eng.before_prefill(live, prompt) if next_id else 0
    cross = 0
    if spec.arch == "encoder-decoder":
        source = live.take(p.act(s, d))  # embed(source): the encoder's argument
        p.stack("encoder", s, 0)  # memory: live through the decoder
        live.drop(source)
        cross = s
    live.take(eng.preallocated())  # vLLM: the batch's KV blocks, before its first step
    chunk = eng.prefill_tokens(prompt)  # vLLM: the last chunk of a chunked prefill
    p.embed(chunk)  # embed(prompt)
    p.stack("decoder", chunk, prompt - chunk, cross, eng.pass_cache((0, _keep(sh, prompt))))
    positions = eng.prefill_logits_positions(prompt)  # generate(): logits_to_keep=1
    logits = p.logits(positions)  # logits (BART: + final_logits_bias)
    if next_id:  # the engine chooses the first new token
        live.drop(args)
        eng.after_forward(live, prompt)
        eng.select(live, logits, prompt, first=True)
    return live


def decode_peaks(spec: ModelSpec, sh: Shapes, start: Any) -> tuple[Any, Any]:
    """(prefill peak, highest one-token-step peak) of decoding: the prompt's cached prefill,
    then steps that start from the whole cache (self: held positions, cross: s per layer) and
    the previous token id [b, 1]; a step's cache grows by torch.cat (and a clone of the kept
    positions under a window or chunk). Steps replayed: the last one (the longest cache), and
    under chunks the last that starts with a full chunk (c held, the clone of 1)."""
    prompt = sh.prompt
    prefill = cached_prefill(spec, sh, start, prompt).peak
    st = sh.stack("decoder")
    pattern, window = st.pattern, st.window
    last = prompt + sh.new_tokens - 1  # cache.length before the last step
    steps = [last]
    if pattern == "chunked" and last - last % window >= prompt and last % window:
        steps.insert(0, last - last % window)  # the last step that starts a chunk
    cross = sh.s_src
    peaks = []
    for pos in steps:  # the cache's storage before the step (kv.positions)
        held = rule("kv.positions", spec)(pattern, window, pos, 1 if pos > prompt else prompt)
        eng = engine(spec, sh)  # tokens so far: pos cached + the newest one
        cache = eng.held_cache(_cache_bytes(spec, sh, held, cross, pos))
        live = Live(start + cache + eng.step_held(pos + 1))
        p = rule("replay.step", spec)(spec, sh, live)
        p.embed(1)  # embed(token)
        p.stack("decoder", 1, pos, cross, eng.pass_cache((held, _keep(sh, pos + 1))))
        logits = p.logits(1)  # logits [b, 1, V]
        eng.after_forward(live, pos + 1)
        eng.select(live, logits, pos + 1, first=False)
        peaks.append(live.peak)
    return prefill, vmax(*peaks)


def _cache_bytes(spec: ModelSpec, sh: Shapes, held: Any, cross_s: Any, seen: Any = 0) -> Any:
    """Keys + values of ``held`` self-attention and ``cross_s`` cross-attention positions of
    every decoder layer, in the KV cache's dtype (as terms/kv_cache.py). Issue 22g: under a
    per-layer pattern (Gemma 2) ``held`` is the sliding layers'; the full layers' DynamicLayer
    holds all ``seen`` positions."""
    per_pos = sh.b * spec.self_cache_width  # keys + values (MLA: the latent) of a position
    n_layers = dict(spec.stacks)["decoder"]
    if spec.layer_pattern is not None:
        n_sliding = spec.layer_pattern.count("sliding")
        rows = n_sliding * held + (n_layers - n_sliding) * seen
        return nbytes(per_pos * rows, sh.kv_dtype) + n_layers * nbytes(
            per_pos * cross_s, sh.kv_dtype
        )
    return n_layers * nbytes(per_pos * (held + cross_s), sh.kv_dtype)
