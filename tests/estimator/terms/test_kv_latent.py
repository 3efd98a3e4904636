"""Multi-head latent attention's KV cache and decode FLOPs against transformers 5's
DeepseekV3ForCausalLM (tiny config of tgauge/hf_tiny_families.py EVERY, CPU, fp32): its
DeepseekV3Attention.forward caches the latent (``cache.update(kv_nope, k_rot)``: the normed
[b, 1, T, kv_lora_rank] and the rotated [b, 1, T, qk_rope_head_dim]) and decompresses every
cached position with kv_b_proj in each pass (``expand_kv``). Oracles: the DynamicCache's
tensors after the prefill and after each decode step; FlopCounterMode on one decode step."""

import pytest

from estimator.shapes import resolve
from estimator.spec import ModelSpec, Workload
from estimator.terms.flops import decode_step
from estimator.terms.kv_cache import kv_cache_at

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from test_flops_families import real_model  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from tgauge.hf_tiny_families import EVERY  # noqa: E402


def cache_bytes(cache) -> int:
    return sum(t.numel() * t.element_size() for layer in cache.layers
               for t in (layer.keys, layer.values))  # fmt: skip


def test_mla_kv_cache_and_decode_flops_match_the_real_class():
    cfg = EVERY["deepseek_v3"]
    spec = ModelSpec.from_hf_config(cfg)
    model = real_model(cfg).eval()
    b, p, n = 2, 9, 3
    sh = resolve(spec, Workload(batch_size=b, seq_len=p, mode="decode", new_tokens=n,
                                attention_impl="eager"))  # fmt: skip
    ids = torch.randint(0, cfg["vocab_size"], (b, p))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        assert cache_bytes(cache) == sum(kv_cache_at(spec, sh, 0).values())
        for t in range(1, n + 1):
            with FlopCounterMode(display=False) as counter:
                cache = model(input_ids=ids[:, :1], past_key_values=cache).past_key_values
            assert cache_bytes(cache) == sum(kv_cache_at(spec, sh, t).values())
            assert sum(decode_step(spec, sh, t, True).values()) == counter.get_total_flops()
