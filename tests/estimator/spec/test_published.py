"""Issue 22's presets against their sources and the published numbers they must reproduce."""

import json
from pathlib import Path

import pytest

from estimator.estimate import estimate
from estimator.shapes import resolve
from estimator.spec import Workload
from estimator.spec.presets import PRESET_DEFAULTS, PRESETS, PUBLISHED, get_preset
from estimator.spec.published import CONFIGS, SOURCES
from estimator.terms.kv_cache import kv_cache, mla_latent_bytes_per_token
from estimator.terms.params import params

DATA = Path(__file__).parent / "hf_configs"


def test_every_published_preset_names_its_config_address():
    assert set(PUBLISHED) == set(CONFIGS) == set(SOURCES)
    for name in PUBLISHED:
        assert SOURCES[name].startswith("https://huggingface.co/")
        assert SOURCES[name] in PRESET_DEFAULTS[name].source


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA.glob("*.json") if p.stem in CONFIGS))
def test_preset_config_is_the_test_data_file(name):
    assert CONFIGS[name] == json.loads((DATA / f"{name}.json").read_text())


def test_deepseek_v3_kv_cache_per_token_is_the_latent():
    spec = get_preset("deepseek-v3")
    # DeepSeek-V2 paper, Table 1 / DeepSeek-V3: (d_c + d_h^R) * l = (512 + 64) * 61 elements
    # per token, 70,272 bytes in bf16: the latent vLLM caches
    assert mla_latent_bytes_per_token(spec, "bf16") == 70_272
    # transformers 5's DeepseekV3Attention caches the same latent (kv_nope, k_rot), not the
    # decompressed K [h, 192] and V [h, 128] of transformers 4 (tests/estimator/terms/
    # test_kv_latent.py measures it)
    sh = resolve(spec, Workload(batch_size=1, seq_len=1, mode="prefill", dtype="bf16"))
    assert kv_cache(spec, sh) == {"decoder.layers.self_attn": 70_272}


def test_llama_31_405b_kv_cache_per_token_bf16():
    # 126 layers * 8 KV heads * 128 * (K + V) * 2 bytes = 516,096 bytes per token
    w = Workload(batch_size=1, seq_len=1, mode="prefill", dtype="bf16")
    assert estimate(get_preset("llama-3.1-405b"), w).kv_cache.total == 516_096


@pytest.mark.parametrize(
    ("name", "published"),
    [
        ("gopher-280b", 280e9),  # Rae et al. 2021, Table 1
        ("chinchilla-70b", 70e9),  # Hoffmann et al. 2022, Table 4
        ("gpt-3-175b", 175e9),  # Brown et al. 2020, Table 2.1
    ],
)
def test_papers_parameter_counts_within_half_a_percent(name, published):
    total = params(get_preset(name)).total
    assert abs(total - published) <= 0.005 * published


def test_transformer_xl_position_projections_are_what_closes_gophers_count():
    # without its per-layer W_{k,R} (d x h d_h) Gopher would count 258 B, 8% short of 280 B
    t = params(PRESETS["gopher-280b"]).terms
    without = params(PRESETS["gopher-280b"]).total - t["decoder.layers.self_attn.r_proj"]
    assert abs(without - 280e9) > 0.05 * 280e9
