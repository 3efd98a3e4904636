"""Per-rank measurement of one training step on real torch.distributed ranks (gloo, CPU).

Oracles, derived by hand from the spec (not read from the model):
- FSDP2 ``fully_shard`` shards dim 0 of every parameter in chunks of c = ceil(dim0 / W)
  (``torch.chunk``); rank r holds clamp(dim0 - r c, 0, c) rows, in a storage padded to c rows
  (``FSDPParam._init_sharded_param``); the gradient is a view of its group's reduce-scatter
  output (c rows per parameter, ``foreach_reduce``); AdamW's exp_avg / exp_avg_sq are
  ``zeros_like`` the unpadded local shard, ``step`` one fp32 scalar per parameter;
- FSDP2's schedule: one all-gather per group in forward (root + L blocks), again per block in
  backward when resharded (zero3; the root stays gathered), one reduce-scatter per group;
- DDP: one all-reduce per bucket (all of a tiny model fits the first, 1 MiB, bucket);
  ``ZeroRedundancyOptimizer`` partitions whole parameters greedily (largest first, to the rank
  with the smallest total) and broadcasts every parameter from its owner after the step.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest

pytest.importorskip("torch")

from estimator.spec import ModelSpec, Workload  # noqa: E402
from estimator.spec.parallel import Parallel  # noqa: E402
from profiler.distributed.launch import RankFailure, run_ranks  # noqa: E402
from profiler.distributed.results import Job  # noqa: E402

SPEC = ModelSpec.model_validate(
    json.loads(Path(__file__).parents[2].joinpath("docs/validation/tiny-decoder.json").read_text())
)
WORKLOAD = Workload(mode="train", batch_size=2, seq_len=16, device="cpu")
FP32 = 4
BUILDER = "tgauge.rank_targets:reference"


def shapes() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(root parameters, one block's parameters) as (dim0, elements per row) of the tiny
    decoder: learned positions, pre-norm LayerNorms with bias, biased linears, tied head."""
    d, d_ff, v, s_max = SPEC.d_model, SPEC.d_ff, SPEC.vocab_size, SPEC.max_seq_len
    root = [(v, d), (s_max, d), (d, 1), (d, 1)]  # embed (= lm_head), pos, final norm w, b
    block = [(d, 1), (d, 1)]  # attn_norm
    block += [(d, d), (d, 1)] * 4  # q, k, v, o
    block += [(d, 1), (d, 1)]  # ffn_norm
    block += [(d_ff, d), (d_ff, 1), (d, d_ff), (d, 1)]  # up, down
    return root, block


def rows(dim0: int, world: int, rank: int) -> int:
    c = math.ceil(dim0 / world)
    return max(0, min(c, dim0 - rank * c))


def run(tmp_path: Path, **layout: object) -> list:
    parallel = Parallel(**layout)
    job = Job(
        builder=BUILDER, spec=SPEC, workload=WORKLOAD, parallel=parallel, out_dir=str(tmp_path)
    )
    return run_ranks(job, timeout_s=300)


def _fsdp_expected(
    world: int, rank: int, zero3: bool, model: tuple | None = None
) -> dict[str, int]:
    """``model``: (root shapes, block shapes, n_layers); default the tiny decoder's."""
    root, block, n_layers = model or (*shapes(), SPEC.n_layers)
    group = [root, *[block] * n_layers]
    padded = [sum(math.ceil(d0 / world) * rest for d0, rest in g) for g in group]
    local = sum(rows(d0, world, rank) * rest for g in group for d0, rest in g)
    gathers = [padded[0], *padded[1:], *(padded[1:] if zero3 else [])]
    return {
        "params": local,
        "memory.weights": sum(padded) * FP32,
        "memory.gradients": sum(padded) * FP32,
        "memory.optimizer.exp_avg": local * FP32,
        "memory.optimizer.exp_avg_sq": local * FP32,
        "memory.optimizer.step": FP32 * sum(len(g) for g in group),
        "comm.all_gather.count": len(gathers),
        "comm.all_gather.bytes": world * sum(gathers) * FP32,
        "comm.reduce_scatter.count": len(group),
        "comm.reduce_scatter.bytes": world * sum(padded) * FP32,
    }


def _check(profiles: list, expected_of) -> None:
    for prof in profiles:
        got = prof.terms()
        want = expected_of(prof.rank)
        assert {k: got.get(k) for k in want} == want, f"rank {prof.rank}"


@pytest.mark.parametrize("world", [2, 4])
def test_fsdp2_zero3_match_hand_derived_shards_and_schedule(tmp_path: Path, world: int) -> None:
    profiles = run(tmp_path, world=world, shard="zero3")
    _check(profiles, lambda r: _fsdp_expected(world, r, zero3=True))
    n_layers = SPEC.n_layers
    for prof in profiles:  # root + every block in forward, every block again in backward
        assert prof.comm_by_phase["forward"]["comm.all_gather.count"] == 1 + n_layers
        assert prof.comm_by_phase["backward"]["comm.all_gather.count"] == n_layers
        assert prof.comm_by_phase["backward"]["comm.reduce_scatter.count"] == 1 + n_layers
    assert all(p.live_peak.peak_bytes > p.live_peak.baseline_bytes for p in profiles)
    assert set(profiles[0].comm) == {
        "comm.all_gather.count",
        "comm.all_gather.bytes",
        "comm.reduce_scatter.count",
        "comm.reduce_scatter.bytes",
    }


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_fsdp2_zero2_match_hand_derived_shards_and_schedule(tmp_path: Path, world: int) -> None:
    _check(run(tmp_path, world=world, shard="zero2"), lambda r: _fsdp_expected(world, r, False))


def _zero1_expected(world: int, rank: int) -> dict[str, int]:
    root, block = shapes()
    sizes = [d0 * rest for d0, rest in [*root, *block * SPEC.n_layers]]
    totals, counts = [0] * world, [0] * world
    for size in sorted(sizes, reverse=True):  # ZeroRedundancyOptimizer._partition_parameters
        owner = totals.index(min(totals))
        totals[owner] += size
        counts[owner] += 1
    full = sum(sizes)
    return {
        "params": full,
        "memory.weights": full * FP32,
        "memory.gradients": full * FP32,
        "memory.optimizer.exp_avg": totals[rank] * FP32,
        "memory.optimizer.exp_avg_sq": totals[rank] * FP32,
        "memory.optimizer.step": counts[rank] * FP32,
        "comm.all_reduce.count": 1,
        "comm.all_reduce.bytes": full * FP32,
        "comm.broadcast.count": len(sizes),
        "comm.broadcast.bytes": full * FP32,
    }


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_zero1_matches_greedy_partition_and_ddp_bucket(tmp_path: Path, world: int) -> None:
    _check(run(tmp_path, world=world, shard="zero1"), lambda r: _zero1_expected(world, r))


def _tp_expected(tp: int, rank: int) -> dict[str, int]:
    """Megatron layout: q/k/v/up column shards, o/down row shards (their biases and the norms
    replicated), the vocabulary split in chunks of ceil(V / tp), positions replicated."""
    d, d_ff, v, s_max, n_layers = (
        SPEC.d_model, SPEC.d_ff, SPEC.vocab_size, SPEC.max_seq_len, SPEC.n_layers
    )  # fmt: skip
    per_layer = 3 * (d // tp * d + d // tp) + (d * d // tp + d)  # q, k, v; o
    per_layer += (d_ff // tp * d + d_ff // tp) + (d * d_ff // tp + d) + 4 * d  # up, down, norms
    local = rows(v, tp, rank) * d + s_max * d + n_layers * per_layer + 2 * d
    b, s = WORKLOAD.batch_size, WORKLOAD.seq_len
    return {
        "params": local,
        "memory.gradients": local * FP32,
        "memory.optimizer.exp_avg": local * FP32,
        # distribute_tensor scatters padded chunks (Shard._split_tensor with_padding=True)
        # and keeps a narrowed view: the embedding's storage has ceil(V / tp) rows
        "memory.weights": (local + (math.ceil(v / tp) - rows(v, tp, rank)) * d) * FP32,
        # forward: the embedding's partial sums, o and down per layer; backward: the input
        # gradient of each column-parallel linear (q, k, v, up) and of the LM head
        "comm.all_reduce.count": 1 + 2 * n_layers + 4 * n_layers + 1,
        # the logits gathered over the vocabulary, padded to tp * ceil(V / tp) columns
        "comm.all_gather.count": 1,
        "comm.all_gather.bytes": b * s * tp * math.ceil(v / tp) * FP32,
    }


@pytest.mark.slow
def test_tp2_matches_megatron_shards_and_collectives(tmp_path: Path) -> None:
    _check(run(tmp_path, world=2, tp=2), lambda r: _tp_expected(2, r))


def _sp_schedule(n_layers: int) -> dict[str, dict[str, int]]:
    """Megatron-SP per phase: each sublayer gathers its sequence shards and reduce-scatters
    its output in forward, and the reverse in backward; the LM head gathers its input and the
    logits; the vocabulary-parallel embedding all-reduces its partial sums. The SP norms'
    weight gradients stay Partial DTensors: the for-loop AdamW (torch/optim/adam.py
    _single_tensor_adam: exp_avg.lerp_(grad), exp_avg_sq.mul_().addcmul_(grad, grad))
    reduces one at each of its 3 uses."""
    n_norm_params = 2 * (2 * n_layers + 1)  # weight and bias of 2 norms per layer + final
    return {
        "forward": {
            "comm.all_reduce.count": 1,
            "comm.all_gather.count": 2 * n_layers + 2,
            "comm.reduce_scatter.count": 2 * n_layers,
        },
        "backward": {
            "comm.all_gather.count": 2 * n_layers + 1,
            "comm.reduce_scatter.count": 2 * n_layers + 1,
        },
        "optimizer_step": {"comm.all_reduce.count": 3 * n_norm_params},
    }


@pytest.mark.slow
def test_sp_follows_megatron_sp_schedule_and_saves_less_than_tp(tmp_path: Path) -> None:
    tp_only = run(tmp_path / "tp", world=2, tp=2)
    sp = run(tmp_path / "sp", world=2, tp=2, sp=True)
    want = _sp_schedule(SPEC.n_layers)
    for a, b in zip(tp_only, sp, strict=True):
        assert b.activations.total < a.activations.total
        counts = {
            phase: {k: v for k, v in terms.items() if k.endswith(".count")}
            for phase, terms in b.comm_by_phase.items()
        }
        assert counts == want
        assert b.terms()["memory.optimizer.exp_avg"] == a.terms()["memory.optimizer.exp_avg"]


@pytest.mark.slow
def test_fsdp_x_tp_four_ranks_split_each_tp_shard_over_dp(tmp_path: Path) -> None:
    """Mesh (dp, tp) = (2, 2), global rank = dp_rank * tp + tp_rank: the dp ranks of one tp
    rank hold, between them, exactly that tp rank's shard (FSDP2 splits it, unpadded)."""
    profiles = run(tmp_path, world=4, tp=2, shard="zero3")
    for tp_rank in range(2):
        mine = [p for p in profiles if p.rank % 2 == tp_rank]
        want = _tp_expected(2, tp_rank)
        assert sum(p.n_params for p in mine) == want["params"]
        exp_avg = sum(p.terms()["memory.optimizer.exp_avg"] for p in mine)
        assert exp_avg == want["memory.optimizer.exp_avg"]
    assert all(p.comm["comm.reduce_scatter.count"] == 1 + SPEC.n_layers for p in profiles)


def _alive(pid: int) -> bool:
    """A process of the rank's own session (the rank, or anything it started) still runs;
    a zombie (dead, waiting to be reaped by whoever inherited it) does not count."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # the group lives on in another member
    return state != "Z"


def test_killed_rank_is_named_and_no_process_survives(tmp_path: Path) -> None:
    started: list[int] = []

    def kill_rank_one(pids: list[int]) -> None:
        started.extend(pids)
        os.kill(pids[1], signal.SIGKILL)

    job = Job(
        builder=BUILDER,
        spec=SPEC,
        workload=WORKLOAD,
        parallel=Parallel(world=2, shard="zero3"),
        out_dir=str(tmp_path),
    )
    with pytest.raises(RankFailure, match="rank 1 killed by SIGKILL") as info:
        run_ranks(job, timeout_s=120, on_start=kill_rank_one)
    assert info.value.rank == 1
    assert len(started) == 2 and not any(_alive(pid) for pid in started)


def test_timeout_names_the_running_ranks_and_no_process_survives(tmp_path: Path) -> None:
    started: list[int] = []
    job = Job(
        builder=BUILDER,
        spec=SPEC,
        workload=WORKLOAD,
        parallel=Parallel(world=2, shard="zero2"),
        out_dir=str(tmp_path),
    )
    with pytest.raises(RankFailure, match=r"timed out after .*rank 0 in"):
        run_ranks(job, timeout_s=0.5, on_start=started.extend)
    assert len(started) == 2 and not any(_alive(pid) for pid in started)


LLAMA = json.loads(
    Path(__file__).parents[2].joinpath("docs/validation/hf-llama-tiny/config.json").read_text()
)


def llama_shapes() -> tuple[list, list, int]:
    """LlamaForCausalLM (transformers models/llama/modeling_llama.py): embed_tokens, final
    norm, lm_head (untied) at the root; per block q, k, v, o, gate, up, down (no biases) and
    two RMSNorm weights."""
    d, d_ff, v = LLAMA["hidden_size"], LLAMA["intermediate_size"], LLAMA["vocab_size"]
    d_kv = d // LLAMA["num_attention_heads"] * LLAMA["num_key_value_heads"]
    root = [(v, d), (d, 1), (v, d)]
    block = [(d, d), (d_kv, d), (d_kv, d), (d, d), (d_ff, d), (d_ff, d), (d, d_ff), (d, 1), (d, 1)]
    return root, block, LLAMA["num_hidden_layers"]


@pytest.mark.slow
@pytest.mark.parametrize(("world", "shard"), [(2, "zero3"), (2, "zero2"), (4, "zero3")])
def test_hf_llama_fsdp2_matches_hand_derived_shards(tmp_path: Path, world, shard) -> None:
    pytest.importorskip("transformers")
    spec = ModelSpec.from_hf_config(LLAMA)
    job = Job(
        builder="tgauge.rank_targets:hugging_face",
        spec=spec,
        workload=WORKLOAD,
        parallel=Parallel(world=world, shard=shard),
        hf_config=LLAMA,
        out_dir=str(tmp_path),
    )
    profiles = run_ranks(job, timeout_s=300)
    _check(profiles, lambda r: _fsdp_expected(world, r, shard == "zero3", llama_shapes()))


def test_failing_rank_is_named_with_its_error(tmp_path: Path) -> None:
    job = Job(
        builder="tgauge.rank_targets:no_such_builder",
        spec=SPEC,
        workload=WORKLOAD,
        parallel=Parallel(world=2, shard="zero2"),
        out_dir=str(tmp_path),
    )
    with pytest.raises(RankFailure, match=r"rank \d exited with code 1") as info:
        run_ranks(job, timeout_s=120)
    assert "AttributeError" in str(info.value) and "no_such_builder" in str(info.value)


LAUNCHER = """
import sys, time
from profiler.distributed.launch import run_ranks
from profiler.distributed.results import Job
job = Job.model_validate_json(open(sys.argv[1]).read())
def started(pids):
    open(sys.argv[2], "w").write(" ".join(map(str, pids)))
    time.sleep(600)  # the test kills this launcher here
run_ranks(job, timeout_s=600, on_start=started)
"""


@pytest.mark.skipif(not Path("/proc").exists(), reason="PR_SET_PDEATHSIG is Linux's")
def test_launcher_killed_leaves_no_rank_behind(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    job = Job(
        builder=BUILDER,
        spec=SPEC,
        workload=WORKLOAD,
        parallel=Parallel(world=2, shard="zero3"),
        out_dir=str(tmp_path / "ranks"),
    )
    job_file, pid_file = tmp_path / "job.json", tmp_path / "pids"
    job_file.write_text(job.model_dump_json())
    root = str(Path(__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(job_file), str(pid_file)], env=env
    )
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.05)
    pids = [int(p) for p in pid_file.read_text().split()]
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)
