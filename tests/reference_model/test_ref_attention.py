"""Attention patterns: causal/padding invariances, chunked and windowed == explicit mask,
eager == fused."""

from __future__ import annotations

import math

import pytest
import torch
from ref_specs import BART, BERT, GPT, LLAMA, T5, spec

from estimator.spec import Workload
from reference_model import build_model
from reference_model.attention import Attention
from reference_model.masks import Pattern
from reference_model.positions import RelativePositionBias, make_positions

B, S = 2, 11


def ids(s, n: int = S) -> torch.Tensor:
    return torch.randint(0, s.vocab_size, (B, n), generator=torch.Generator().manual_seed(n))


PATTERNS = [
    None,
    Workload(attention_pattern="sliding_window", window=3),
    Workload(attention_pattern="chunked", window=4),
]


@pytest.mark.parametrize("impl", ["eager", "fused"])
@pytest.mark.parametrize("workload", PATTERNS, ids=["causal", "window", "chunked"])
@pytest.mark.parametrize("kw", [GPT, LLAMA, T5], ids=["gpt", "llama", "t5"])
def test_causal_future_tokens_do_not_change_earlier_logits(kw, workload, impl) -> None:
    s = spec(**kw)
    w = (workload or Workload()).model_copy(update={"attention_impl": impl})
    model = build_model(s, w).eval()
    x = ids(s)
    y = x.clone()
    y[:, 7:] = (y[:, 7:] + 1) % s.vocab_size  # change the future from position 7 on
    if s.arch == "encoder-decoder":
        src = ids(s, 5)
        a, c = model.full_logits(x, src), model.full_logits(y, src)
    else:
        a, c = model(x).logits, model(y).logits
    torch.testing.assert_close(a[:, :7], c[:, :7])
    assert not torch.allclose(a[:, 7:], c[:, 7:])


@pytest.mark.parametrize("impl", ["eager", "fused"])
@pytest.mark.parametrize("kw", [GPT, BERT, T5, BART], ids=["gpt", "bert", "t5", "bart"])
def test_padding_tokens_do_not_change_outputs_at_tokens(kw, impl) -> None:
    s = spec(**kw)
    model = build_model(s, Workload(attention_impl=impl)).eval()
    x = ids(s)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[0, 8:] = 0  # right padding
    if s.arch == "decoder":
        mask[1, :3] = 0  # and left padding (keys masked; queries keep absolute positions)
    y = torch.where(mask.bool(), x, (x + 5) % s.vocab_size)  # other tokens in the padding
    kwargs = {}
    if s.arch == "encoder-decoder":
        kwargs["decoder_input_ids"] = ids(s, 6)
    a = model(x, attention_mask=mask, **kwargs)
    c = model(y, attention_mask=mask, **kwargs)
    if s.arch == "encoder-decoder":  # source padding is invisible to every target position
        torch.testing.assert_close(a.logits, c.logits)
    else:
        keep = mask.bool()
        torch.testing.assert_close(a.hidden_states[keep], c.hidden_states[keep])


def reference_attention(attn: Attention, pos, x: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Plain masked softmax attention of ``attn``'s weights under the explicit mask ``ok``."""
    b, s, _ = x.shape
    q = attn.heads(attn.q_proj(x), attn.h)
    k = attn.heads(attn.k_proj(x), attn.h_kv).repeat_interleave(attn.h // attn.h_kv, dim=1)
    v = attn.heads(attn.v_proj(x), attn.h_kv).repeat_interleave(attn.h // attn.h_kv, dim=1)
    positions = torch.arange(s)
    if pos is not None and not isinstance(pos, RelativePositionBias):
        q, k = pos(q, positions), pos(k, positions)
    scores = q @ k.transpose(-2, -1) / math.sqrt(attn.d_h)
    if isinstance(pos, RelativePositionBias):
        scores = scores + pos(positions, positions)
    probs = scores.masked_fill(~ok, float("-inf")).softmax(-1)
    return attn.o_proj((probs @ v).transpose(1, 2).reshape(b, s, -1))


def explicit_mask(kind: str, w: int, causal: bool, s: int) -> torch.Tensor:
    i, j = torch.arange(s)[:, None], torch.arange(s)[None, :]
    ok = (j <= i) if causal else torch.ones(s, s, dtype=torch.bool)
    if kind == "chunked":
        return ok & (i // w == j // w)
    return ok & ((i - j < w) if causal else ((i - j).abs() < w))


@pytest.mark.parametrize("impl", ["eager", "fused"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("kind,w", [("chunked", 4), ("chunked", 3), ("sliding_window", 4)])
@pytest.mark.parametrize("position", ["rotary", "relative", "none"])
def test_chunked_and_window_equal_full_attention_under_explicit_mask(
    kind, w, causal, position, impl
) -> None:
    s = spec(arch="decoder", position=position, n_kv_heads=2, relative_buckets=8)
    torch.manual_seed(0)
    stack = "decoder" if causal else "encoder"
    attn = Attention(s, impl, 0.0, Pattern.for_stack(kind, w, stack))
    pos = make_positions(s, stack)
    if isinstance(pos, RelativePositionBias):
        torch.nn.init.normal_(pos.weight)
    x = torch.randn(B, S, s.d_model)
    shapes = []
    if impl == "eager":
        attn.scores.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    out = attn(x, pos=pos)
    expected = reference_attention(attn, pos, x, explicit_mask(kind, w, causal, S))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    if impl == "eager" and kind == "chunked":  # block by block: no s x s scores
        assert shapes == [(B, math.ceil(S / w), s.n_heads, w, w)]


@pytest.mark.parametrize(
    "workload",
    [*PATTERNS, Workload(attention_pattern="full")],
    ids=["default", "window", "chunked", "full"],
)
@pytest.mark.parametrize(
    "kw",
    [GPT, {**LLAMA, "n_kv_heads": 1}, {**LLAMA, "n_kv_heads": 2}, T5, BERT],
    ids=["gpt", "mqa", "gqa", "t5", "bert"],
)
def test_eager_and_fused_attention_agree(kw, workload) -> None:
    s = spec(**kw)
    w = workload or Workload()
    if s.arch == "encoder-decoder" and w.attention_pattern == "full":
        pytest.skip("a non-causal decoder is not a use of an encoder-decoder")
    eager = build_model(s, w).eval()
    fused = build_model(s, w.model_copy(update={"attention_impl": "fused"})).eval()
    fused.load_state_dict(eager.state_dict())
    x = ids(s)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, 9:] = 0
    kwargs = {"attention_mask": mask}
    if s.arch == "encoder-decoder":
        kwargs["decoder_input_ids"] = ids(s, 6)
    a, c = eager(x, **kwargs), fused(x, **kwargs)
    torch.testing.assert_close(a.hidden_states, c.hidden_states, atol=1e-5, rtol=1e-4)
