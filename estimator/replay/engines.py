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
vllm          not modelled yet: refused by name (plan/serving.py sizes vLLM's paged blocks).

Not modelled: sampling (``do_sample=True``: softmax [b, V] fp32 and torch.multinomial, no
MinLength processors without min_new_tokens), other logits processors a generation_config may
add (repetition penalty, top-k / top-p warpers), ``cache_implementation="static"``.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.live import Live
from estimator.shapes import Shapes
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec

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
    def unsupported(self) -> str | None:
        return (
            "engine='vllm' is not modelled for a peak yet (paged blocks: tgauge fit's serving "
            "table, estimator/plan/serving.py); use engine='hf-generate' or 'forward'"
        )


def engine(spec: ModelSpec, sh: Shapes) -> Engine:
    """The engine of ``sh.engine`` for this run."""
    return ENGINES[sh.engine](spec, sh)
