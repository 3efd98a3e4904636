"""The validation matrix's HF section (tgauge.matrix.hf_cases): the estimate of
ModelSpec.from_hf_config against the real transformers class of every tiny family, eager and
fused attention, train / prefill / decode, at two (b, s) points, on CPU in fp32 (issue 9).

Exact: parameters, eager FLOPs, the KV cache after the prefill and after every decode step.
Within 2%: every saved-activation term, the training peak (and its phase), the prefill and
decode peaks. HF_KNOWN_GAPS and HF_EXACT_GAPS list the points that miss today, with the
figures measured; they are strict xfails, so a rule that closes a gap fails the test until
its entry is removed here.
"""

from __future__ import annotations

import functools

import pytest

pytest.importorskip("transformers")

from tgauge.matrix import hf_cases  # noqa: E402
from tgauge.validate import Point, validate_point  # noqa: E402

CASES = {c.name: c for c in hf_cases()}
# One point per family in the default run (each mode and attention kernel at least once);
# the whole section is slow (about 2-5 minutes on 2 CPU cores).
FAST = {
    "hf gpt2 train eager b=2 s=32",
    "hf llama decode fused b=2 s=32",
    "hf mistral prefill fused b=8 s=64",
    "hf bert prefill eager b=2 s=32",
    "hf t5 decode eager b=2 s=32",
    "hf bart prefill fused b=2 s=32",
    "hf vit train fused b=8 s=65",
}
TOLERANCE = 0.02

# Points whose saved activations (a term or the total) or peak miss 2%, or whose peak is in
# another phase, as measured on main at c3a7c9a (transformers 5.24.0, torch 2.14, CPU fp32):
# predicted/measured, (predicted - measured) / measured; `self_attn*` is the attention core's
# mapped row. Measured with `tgauge validate --matrix --section hf --out DIR`, written by
# `python scripts/hf_gap_table.py DIR/validation.jsonl`. The lead updates this table as the
# per-family rules land (a closed gap fails here as an XPASS).
HF_KNOWN_GAPS: dict[str, str] = {
    "hf gpt2 train eager b=2 s=32": (
        "peak 2,094,224/2,552,952 B (-18.0%); saved dec.ffn.act -75.0%, total -37.6%"
    ),
    "hf gpt2 train fused b=2 s=32": (
        "peak 2,030,736/2,555,000 B (-20.5%); saved dec.ffn.act -75.0%, dec.self_attn* -33.0%, "
        "total -43.8%"
    ),
    "hf gpt2 prefill eager b=2 s=32": "peak 705,024/901,888 B (-21.8%)",
    "hf gpt2 prefill fused b=2 s=32": "peak 705,024/860,928 B (-18.1%)",
    "hf gpt2 decode eager b=2 s=32": "peak 680,400/855,328 B (-20.5%)",
    "hf gpt2 decode fused b=2 s=32": "peak 680,400/821,688 B (-17.2%)",
    "hf gpt2 train eager b=8 s=64": (
        "peak 7,479,956/11,012,472 B (-32.1%); saved dec.ffn.act -75.0%, total -35.4%"
    ),
    "hf gpt2 train fused b=8 s=64": (
        "peak 6,447,764/10,504,568 B (-38.6%); saved dec.ffn.act -75.0%, dec.self_attn* -33.0%, "
        "total -43.8%"
    ),
    "hf gpt2 prefill eager b=8 s=64": "peak 2,552,832/4,395,520 B (-41.9%)",
    "hf gpt2 prefill fused b=8 s=64": "peak 2,543,616/3,740,160 B (-32.0%)",
    "hf gpt2 decode eager b=8 s=64": "peak 2,445,120/4,180,936 B (-41.5%)",
    "hf gpt2 decode fused b=8 s=64": "peak 2,445,120/3,585,576 B (-31.8%)",
    "hf llama train eager b=2 s=32": "saved dec.self_attn* +7.3%",
    "hf llama train fused b=2 s=32": "saved dec.self_attn* +11.8%",
    "hf llama prefill eager b=2 s=32": "peak 563,456/589,888 B (-4.5%)",
    "hf llama decode eager b=2 s=32": "peak 539,401/563,680 B (-4.3%)",
    "hf llama train eager b=8 s=64": "phase backward/forward",
    "hf llama train fused b=8 s=64": "saved dec.self_attn* +3.0%",
    "hf mistral train eager b=2 s=32": "saved dec.self_attn* +7.3%",
    "hf mistral train fused b=2 s=32": "saved dec.self_attn* -18.7%, total -4.2%",
    "hf mistral prefill eager b=2 s=32": "peak 555,264/589,904 B (-5.9%)",
    "hf mistral prefill fused b=2 s=32": "peak 519,936/549,968 B (-5.5%)",
    "hf mistral decode eager b=2 s=32": "peak 532,745/563,696 B (-5.5%)",
    "hf mistral decode fused b=2 s=32": "peak 504,528/530,897 B (-5.0%)",
    "hf mistral train eager b=8 s=64": "phase backward/forward",
    "hf mistral train fused b=8 s=64": (
        "peak 6,610,776/7,139,244 B (-7.4%); saved dec.self_attn* -35.0%, total -8.3%; phase "
        "backward/forward"
    ),
    "hf mistral prefill eager b=8 s=64": "peak 2,490,624/2,588,496 B (-3.8%)",
    "hf mistral prefill fused b=8 s=64": "peak 1,694,976/1,937,232 B (-12.5%)",
    "hf mistral decode eager b=8 s=64": "peak 2,344,482/2,454,168 B (-4.5%)",
    "hf mistral decode fused b=8 s=64": "peak 1,633,344/1,862,529 B (-12.3%)",
    "hf bert train eager b=2 s=32": "saved enc.pos 256/0 B, enc.token_type +100.0%",
    "hf bert train fused b=2 s=32": "saved enc.pos 256/0 B, enc.token_type +100.0%",
    "hf bert prefill eager b=2 s=32": "peak 477,328/494,224 B (-3.4%)",
    "hf bert prefill fused b=2 s=32": "peak 444,048/461,456 B (-3.8%)",
    "hf bert train eager b=8 s=64": "saved enc.pos 512/0 B, enc.token_type +700.0%",
    "hf bert train fused b=8 s=64": "saved enc.pos 512/0 B, enc.token_type +700.0%",
    "hf bert prefill fused b=8 s=64": "peak 1,254,032/1,386,128 B (-9.5%)",
    "hf t5 train eager b=2 s=32": (
        "saved dec.self_attn* +10.0%, dec.pos -100.0%, enc.self_attn* +10.0%, enc.pos -100.0%"
    ),
    "hf t5 train fused b=2 s=32": (
        "peak 3,304,124/3,442,372 B (-4.0%); saved dec.self_attn.o_proj -100.0%, dec.cross_attn* "
        "-11.0%, dec.self_attn* -9.9%, dec.pos -100.0%, enc.self_attn.o_proj -100.0%, "
        "enc.self_attn* -8.8%, enc.pos -100.0%, total -9.8%; phase backward/forward"
    ),
    "hf t5 prefill eager b=2 s=32": "peak 980,992/1,054,720 B (-7.0%)",
    "hf t5 prefill fused b=2 s=32": "peak 964,608/997,376 B (-3.3%)",
    "hf t5 train eager b=8 s=64": (
        "saved dec.self_attn* +3.6%, dec.pos -100.0%, enc.self_attn* +3.6%, enc.pos -100.0%"
    ),
    "hf t5 train fused b=8 s=64": (
        "peak 11,803,840/14,060,740 B (-16.1%); saved dec.self_attn.o_proj -100.0%, "
        "dec.cross_attn* -5.8%, dec.self_attn* -38.7%, dec.pos -100.0%, enc.self_attn.o_proj "
        "-100.0%, enc.self_attn* -38.4%, enc.pos -100.0%, total -18.2%; phase backward/forward"
    ),
    "hf t5 prefill eager b=8 s=64": "peak 3,576,832/4,363,264 B (-18.0%)",
    "hf t5 prefill fused b=8 s=64": "peak 2,921,472/3,052,544 B (-4.3%)",
    "hf t5 decode fused b=8 s=64": "peak 1,737,792/1,803,328 B (-3.6%)",
    "hf bart train eager b=2 s=32": "saved enc.pos -50.0%",
    "hf bart train fused b=2 s=32": "saved enc.pos -50.0%",
    "hf bart prefill eager b=2 s=32": "peak 1,009,664/1,059,472 B (-4.7%)",
    "hf bart train eager b=8 s=64": "saved enc.pos -87.5%",
    "hf bart train fused b=8 s=64": "saved enc.pos -87.5%",
    "hf bart prefill eager b=8 s=64": "peak 3,490,816/4,163,472 B (-16.2%)",
    "hf bart decode eager b=8 s=64": "peak 2,439,232/2,569,680 B (-5.1%)",
    "hf bart decode fused b=8 s=64": "peak 1,651,776/1,783,248 B (-7.4%)",
    "hf vit train eager b=2 s=17": "saved enc.{patch,pos} 136/0 B",
    "hf vit train fused b=2 s=17": "saved enc.{patch,pos} 136/0 B",
    "hf vit train eager b=8 s=65": (
        "peak 6,583,464/6,189,736 B (+6.4%); saved enc.{patch,pos} 520/0 B"
    ),
    "hf vit train fused b=8 s=65": (
        "peak 5,518,504/5,124,776 B (+7.7%); saved enc.{patch,pos} 520/0 B"
    ),
}
# Exact quantities that are not exact today: MistralForCausalLM's sliding-window cache keeps the
# whole prompt until the first decode step (the estimate: the last `window` positions), so
# after the prefill of a prompt longer than the window (8) the cache is larger; after each step
# it is exact.
HF_EXACT_GAPS: dict[str, str] = {
    "hf mistral decode eager b=2 s=32": "kv_cache.after_step.0 8,192/29,696 B (prompt 29)",
    "hf mistral decode fused b=2 s=32": "kv_cache.after_step.0 8,192/29,696 B (prompt 29)",
    "hf mistral decode eager b=8 s=64": "kv_cache.after_step.0 32,768/249,856 B (prompt 61)",
    "hf mistral decode fused b=8 s=64": "kv_cache.after_step.0 32,768/249,856 B (prompt 61)",
}


@functools.cache
def measured(name: str) -> Point:
    case = CASES[name]
    point = validate_point(case.spec, case.workload, device="cpu", hf_config=case.hf_config)
    assert point.status == "ok", point.notes
    assert point.implementation == "hf"
    return point


def _param(name: str, gaps: dict[str, str] | None = None) -> object:
    marks = [] if name in FAST else [pytest.mark.slow]
    if gaps is not None and name in gaps:
        marks.append(pytest.mark.xfail(strict=True, reason=gaps[name]))
    return pytest.param(name, id=name, marks=marks)


def test_section_covers_every_family_kernel_mode_and_two_points() -> None:
    from tgauge.hf_tiny import DECODERS, FAMILIES

    cases = CASES.values()
    assert {c.hf_config["model_type"] for c in cases} == set(FAMILIES)
    for family in FAMILIES:
        mine = [c for c in cases if c.hf_config["model_type"] == family]
        modes = {"train", "prefill"} | ({"decode"} if family in DECODERS else set())
        combos = {(c.workload.mode, c.workload.attention_impl) for c in mine}
        assert combos == {(m, a) for m in modes for a in ("eager", "fused")}
        assert len({(c.workload.batch_size, c.workload.seq_len) for c in mine}) == 2
    assert FAST <= set(CASES) and set(HF_KNOWN_GAPS) | set(HF_EXACT_GAPS) <= set(CASES)


@pytest.mark.parametrize("name", [_param(n, HF_EXACT_GAPS) for n in CASES])
def test_hf_params_eager_flops_and_kv_cache_are_exact(name: str) -> None:
    point, case = measured(name), CASES[name]
    rows = {r.term: r for r in point.rows}
    exact = [t for t in rows if t.startswith(("params.", "memory.weights", "kv_cache."))]
    assert any(t.startswith("params.") for t in exact)
    if case.workload.attention_impl == "eager":
        exact += [t for t in rows if t.startswith("flops.")]
    else:  # sdpa: FlopCounterMode has no formula for the CPU kernel, the rest is exact
        flops = [r for t, r in rows.items() if t.startswith("flops.")]
        assert all(r.verdict == "exact" or "sdpa" in r.term for r in flops), flops
    if case.workload.mode != "decode":
        assert any(t.startswith("flops.forward.") for t in rows)
    else:
        steps = [t for t in rows if t.startswith("kv_cache.after_step.")]
        assert len(steps) == case.workload.new_tokens + 1  # after the prefill, then each step
    assert [rows[t] for t in exact if rows[t].verdict != "exact"] == []


@pytest.mark.parametrize("name", [_param(n, HF_KNOWN_GAPS) for n in CASES])
def test_hf_saved_activations_and_peak_within_2_percent(name: str) -> None:
    point = measured(name)
    misses = [
        r
        for r in point.rows
        if r.term.startswith("memory.activations.") or r.term == "peak_memory"
        if r.rel_error is None or r.rel_error > TOLERANCE
    ]
    assert misses == []
    assert any(r.term == "peak_memory" for r in point.rows)
    assert point.peak_phase_predicted == point.peak_phase_measured
