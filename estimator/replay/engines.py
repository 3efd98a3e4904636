"""Serving engines: what the code around the model's forward keeps live while it serves a
prefill and decode steps (``Workload.engine``), one class per engine registered by name, the
way estimator/rules/registry.py keeps one rule per module kind. The drivers of
estimator/replay/inference.py ask ``engine(sh)`` what the prefill's head computes, what the
engine holds across a forward, and what choosing the next token allocates.

forward       a plain model call (today's validation harness, profiler/run.py HFDecoder): the
              head's logits for every prompt position [b, P, V]; argmax of the last [b, 1].
hf-generate   transformers 5.24 ``GenerationMixin.generate`` -> ``_sample``
              (transformers/generation/utils.py), greedy, ``min_new_tokens = max_new_tokens``
              (every sequence runs every step; the decode of ``new_tokens`` steps is
              ``generate(max_new_tokens=new_tokens + 1)``: the prefill picks the first token):
              - before the prefill (``_prepare_attention_mask_for_generation``,
                ``_cache_dependant_input_preparation``): attention_mask ones [b, P] int64, held
                and grown by torch.cat each step (``_update_model_kwargs_for_generation``);
                position_ids from its cumsum [b, P] int64 for the prefill's forward; the
                ``unfinished_sequences`` ones [b] int64;
              - the prefill passes ``logits_to_keep=1`` (``_prefill``: "set it to 1 to avoid
                computing the whole logit matrix"): logits [b, 1, V], not [b, P, V];
              - per forward, ``next_token_logits = outputs.logits[:, -1].to(copy=True,
                dtype=torch.float32)`` [b, V] fp32, then the LogitsProcessorList: with an eos
                token, MinLengthLogitsProcessor and MinNewTokensLengthLogitsProcessor
                (generation/logits_process.py), each ``arange(V)`` int64, ``isin`` [V] bool,
                ``scores.clone()`` and ``torch.where(eos_mask, -inf, scores)`` [b, V] fp32;
                ``torch.argmax`` [b]; ``input_ids = torch.cat([input_ids, next_tokens[:,
                None]])`` [b, T + 1] int64; the fp32 logits and the processed scores stay
                bound (``next_token_logits``, ``next_token_scores``) through the next forward;
              - the cache: DynamicCache, each layer's keys / values grown by torch.cat
                (cache_utils.py DynamicLayer.update; the replay of the pass,
                estimator/rules/hf/decoders_pass.py).
vllm          vLLM's model runner (class VLLM): paged blocks preallocated and written in place,
              chunked prefill, logits of the sampled positions; fit's paged table
              (estimator/plan/serving.py) reserves its profiling forward. CUDA graphs, the
              sampler's other tensors and the allocator are in ``Estimate.unchecked``.

Not modelled: sampling (``do_sample=True``: softmax [b, V] fp32 and torch.multinomial, no
MinLength processors without min_new_tokens), other logits processors a generation_config may
add (repetition penalty, top-k / top-p warpers), ``cache_implementation="static"``.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.live import Live
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES, nbytes
from estimator.spec.model import ModelSpec
from estimator.sym import ceil_div, vmin

FP32_BYTES = 4
BOOL_BYTES = 1

#: engine name -> its class (``register_engine``)
ENGINES: dict[str, type[Engine]] = {}


def register_engine(name: str):
    """Class decorator: ``cls`` serves ``Workload.engine == name``."""

    def deco(cls: type[Engine]) -> type[Engine]:
        ENGINES[name] = cls
        cls.name = name
        return cls

    return deco


class Engine:
    """The plain forward (module docstring): every position's logits, an argmax."""

    name = "forward"

    def __init__(self, spec: ModelSpec, sh: Shapes) -> None:
        self.spec, self.sh, self.b = spec, sh, sh.b

    def unsupported(self) -> str | None:
        """Why this engine cannot serve the run (one line), None when it can."""
        return None

    def prefill_logits_positions(self, prompt: Any) -> Any:
        """Positions per sequence whose logits the prefill's LM head computes."""
        return prompt

    def before_prefill(self, live: Live, prompt: Any) -> Any:
        """Take what the engine allocates before the prefill's forward; -> the bytes of it
        that the forward's return frees (its own arguments)."""
        return 0

    def after_forward(self, live: Live, length: Any) -> None:
        """After a forward over ``length`` tokens so far (logits live): the engine's
        bookkeeping before choosing the next token."""

    def select(self, live: Live, logits: Any, length: Any, first: bool) -> None:
        """Choose the next token from the forward's logits (``logits`` bytes, live), the
        sequences holding ``length`` tokens; ``first``: the prefill's choice."""
        live.take(self.b * INDEX_BYTES)  # argmax of the last position [b, 1]

    def step_held(self, length: Any) -> Any:
        """Bytes the engine holds when a one-token step starts (sequences of ``length``
        tokens, the newest not yet in the cache), besides the cache and the prompt ids."""
        return self.b * INDEX_BYTES  # the previous token id [b, 1]

    def prefill_tokens(self, prompt: Any) -> Any:
        """Tokens per sequence of the prefill's last (largest) forward: the whole prompt."""
        return prompt

    def held_cache(self, cache_bytes: Any) -> Any:
        """Cache bytes live when a forward starts, given the positions held so far
        (``cache_bytes``): the grown cache itself."""
        return cache_bytes

    def preallocated(self) -> Any:
        """Cache bytes the engine allocates before the prefill (0: the cache grows)."""
        return 0

    def pass_cache(self, cache: Any) -> Any:
        """The (held, kept) positions the forward's attention replays its cache with (a
        torch.cat per layer), or None where the engine writes keys / values in place."""
        return cache


@register_engine("forward")
class Forward(Engine):
    pass


@register_engine("hf-generate")
class HFGenerate(Engine):
    """transformers' generate(), greedy (module docstring)."""

    #: processors that generate() adds with min_new_tokens and an eos token (utils.py
    #: _get_logits_processor): MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor
    N_MIN_LENGTH_PROCESSORS = 2

    def unsupported(self) -> str | None:
        if self.spec.arch != "decoder" or not self.spec.lm_head:
            return (
                f"engine='hf-generate' is modelled for decoder-only LMs, not "
                f"arch={self.spec.arch!r} ({self.spec.name})"
            )
        return None

    def prefill_logits_positions(self, prompt: Any) -> Any:
        return 1  # logits_to_keep=1

    def _scores(self) -> Any:
        return self.b * self.spec.vocab_size * FP32_BYTES  # [b, V] fp32

    def before_prefill(self, live: Live, prompt: Any) -> Any:
        b = self.b
        live.take(b * prompt * INDEX_BYTES)  # attention_mask: ones [b, P] int64
        live.take(b * INDEX_BYTES)  # unfinished_sequences: ones [b] int64
        return live.take(b * prompt * INDEX_BYTES)  # position_ids (cumsum - 1, a clone)

    def after_forward(self, live: Live, length: Any) -> None:
        b = self.b
        live.take(b * (length + 1) * INDEX_BYTES)  # torch.cat([attention_mask, ones])
        live.drop(b * length * INDEX_BYTES)

    def select(self, live: Live, logits: Any, length: Any, first: bool) -> None:
        b, V, scores = self.b, self.spec.vocab_size, self._scores()
        live.take(scores)  # next_token_logits: .to(copy=True, dtype=float32)
        if not first:
            live.drop(scores)  # the previous step's next_token_logits
        for _ in range(self.N_MIN_LENGTH_PROCESSORS):  # arange, isin, clone, where
            live.take(V * INDEX_BYTES, V * BOOL_BYTES, scores, FP32_BYTES, scores)
            live.drop(V * INDEX_BYTES, V * BOOL_BYTES, scores, FP32_BYTES)
        live.drop(scores)  # the first processor's output (the loop variable rebound)
        if not first:
            live.drop(scores)  # the previous step's next_token_scores
        live.take(b * INDEX_BYTES)  # argmax [b]
        live.take(b * (length + 1) * INDEX_BYTES)  # torch.cat([input_ids, next_tokens])
        live.drop(b * INDEX_BYTES)
        if not first:  # the previous input_ids (the prompt itself is the caller's)
            live.drop(b * length * INDEX_BYTES)
        live.drop(logits)  # del outputs

    def step_held(self, length: Any) -> Any:
        b = self.b
        ids_and_mask = 2 * b * length * INDEX_BYTES  # input_ids, attention_mask [b, T]
        return ids_and_mask + b * INDEX_BYTES + 2 * self._scores()  # unfinished; fp32 logits


@register_engine("vllm")
class VLLM(Engine):
    """vLLM's model runner (module docstring): the paged KV blocks of the batch's sequences at
    their full length allocated before the first step and written in place
    (vllm/attention/ops/paged_attn.py ``write_to_paged_cache``: no torch.cat); a prefill
    chunked to ``max_num_batched_tokens`` tokens per scheduler step
    (vllm/config.py SchedulerConfig, enable_chunked_prefill), every sequence advancing by
    max_num_batched_tokens // b tokens; logits of the sampled positions only
    (vllm/model_executor/layers/logits_processor.py on ``logits_indices``: one per
    sequence), cast to fp32 by the sampler (vllm/v1/sample/sampler.py ``logits.to(
    torch.float32)``), argmax for greedy. Attention runs vLLM's kernels (fused)."""

    DEFAULT_BLOCK_SIZE = 16  # vllm/config.py CacheConfig block_size
    DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048  # SchedulerConfig with chunked prefill (V1)

    def unsupported(self) -> str | None:
        sh = self.sh
        if self.spec.arch != "decoder" or not self.spec.lm_head:
            return f"engine='vllm' is modelled for decoder-only LMs, not arch={self.spec.arch!r}"
        if sh.attention_impl != "fused":
            return "engine='vllm' runs its own fused attention kernels: give attention_impl='fused'"
        if not sh.kv_cache:
            return "engine='vllm' always serves with its paged KV cache (kv_cache=True)"
        if type(sh.b) is int and sh.b > self.budget:  # max_num_seqs <= the token budget
            return (
                f"engine='vllm' schedules at least one token per sequence: batch_size={sh.b} "
                f"exceeds max_num_batched_tokens={self.budget}"
            )
        if sh.stack("decoder").pattern == "chunked":
            return "engine='vllm' is not modelled for chunked attention"
        return None

    @property
    def budget(self) -> int:
        return self.sh.max_num_batched_tokens or self.DEFAULT_MAX_NUM_BATCHED_TOKENS

    @property
    def block(self) -> int:
        return self.sh.block_size or self.DEFAULT_BLOCK_SIZE

    def prefill_logits_positions(self, prompt: Any) -> Any:
        return 1  # logits_indices: the last scheduled position of each sequence

    def prefill_tokens(self, prompt: Any) -> Any:
        return vmin(prompt, self.budget // self.b)  # a chunk per sequence

    def held_cache(self, cache_bytes: Any) -> Any:
        """The blocks of b sequences at their longest (prompt + new tokens)."""
        sh, spec = self.sh, self.spec
        tokens = sh.prompt + sh.new_tokens if sh.mode == "decode" else sh.s_dec
        blocks = ceil_div(tokens, self.block)
        st = sh.stack("decoder")
        if st.pattern == "sliding_window":  # blocks out of the window are freed (V1
            # SlidingWindowManager): a window not aligned to blocks spans one more
            blocks = vmin(blocks, -(-st.window // self.block) + 1)
        positions = blocks * self.block
        per_layer = nbytes(2 * self.b * positions * spec.n_kv_heads * spec.head_dim, sh.kv_dtype)
        return spec.n_decoder_layers * per_layer

    def preallocated(self) -> Any:
        return self.held_cache(0)

    def pass_cache(self, cache: Any) -> Any:
        return None  # keys / values written into their blocks in place

    def select(self, live: Live, logits: Any, length: Any, first: bool) -> None:
        b, scores = self.b, self.b * self.spec.vocab_size * FP32_BYTES
        live.take(scores)  # sampler: logits.to(torch.float32) [b, V]
        live.take(b * INDEX_BYTES)  # argmax
        live.drop(scores, logits)


def engine(spec: ModelSpec, sh: Shapes) -> Engine:
    """The engine of ``sh.engine`` for this run."""
    return ENGINES[sh.engine](spec, sh)
