"""Serving numbers: latency and throughput of a run, and how many sequences a server holds.

Throughput of a StepTimes (estimator.plan.hardware.step_times), per GPU and for all GPUs:
- a replica is tp GPUs; n_gpus = dp x tp. The roofline times one replica's work on one GPU;
  tensor parallelism is taken as an ideal split (FLOPs and bytes divided by tp, so the time
  too; communication not modelled). Data-parallel replicas run independently.
- train / prefill: tokens per step b x s; decode: time to first token (TTFT) = the prefill,
  time per output token (TPOT) = one decode step, at the first and at the last step;
  generation throughput = b x N tokens over the N decode steps (prefill excluded).

Capacity of a paged KV cache, as vLLM allocates it (Kwon et al. 2023, PagedAttention):
- one block holds ``block_size`` tokens of keys and values of every layer:
    block_bytes = 2 x L x block_size x h_kv' x d_h x bytes(kv dtype),  h_kv' = max(1, h_kv // tp)
  (vllm/worker/cache_engine.py, CacheEngine.get_cache_block_size:
   key_cache_block = block_size * num_heads * head_size; total = num_layers * (key + value);
   dtype_size * total; num_heads = ModelConfig.get_num_kv_heads(parallel_config));
- the cache gets what is left of ``gpu_memory_utilization`` x total device memory after the
  weights and the activation peak of a profiling forward pass
  (vllm/worker/worker.py, Worker.determine_num_available_blocks:
   available = total_gpu_memory * gpu_memory_utilization - peak_memory;
   num_gpu_blocks = int(available // cache_block_size)). Here the profiling pass is the
  prefill of one prompt (b = 1) as engine 'vllm' runs it (estimator/replay/engines.py:
  chunked to max_num_batched_tokens, logits of the sampled position only, fused attention;
  its own KV blocks left out), and the peak adds the CUDA context and cuBLAS workspace
  (estimator.plan.hardware.Overheads);
- a sequence of prompt + new tokens holds ceil(T / block_size) blocks; under a sliding window
  or chunk of w positions, at most ceil(w / block_size) + 1 (a window not aligned to blocks
  spans one block more), never more than ceil(T / block_size);
- concurrent sequences = blocks // blocks per sequence (every sequence at full length, the
  conservative admission), per replica.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from estimator.plan.hardware import GPU, Efficiency, Overheads, StepTimes, step_times
from estimator.replay.engines import engine
from estimator.shapes import resolve
from estimator.spec.dtypes import nbytes
from estimator.spec.errors import UnsupportedError
from estimator.spec.model import ModelSpec
from estimator.spec.workload import Workload

BLOCK_SIZE = 16  # vLLM's default --block-size
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default --gpu-memory-utilization


class Throughput(BaseModel):
    """Latency and tokens/s of one workload, labelled per GPU and for all GPUs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: str
    n_gpus: int
    tp: int
    step_s: float | None = Field(None, description="train / prefill: one step of one replica")
    ttft_s: float | None = Field(
        None, description="decode: time to first token, the prefill of all b prompts at once"
    )
    tpot_first_s: float | None = Field(None, description="decode: time per output token, step 1")
    tpot_last_s: float | None = Field(None, description="decode: time per output token, step N")
    tokens_per_s_per_gpu: float = Field(
        description="train/prefill: tokens processed; decode: tokens generated (prefill "
        "excluded), per GPU"
    )
    tokens_per_s_all_gpus: float = Field(description="the same, for all n_gpus GPUs")
    end_to_end_tokens_per_s_per_gpu: float | None = Field(
        None, description="decode: generated tokens over prefill + decode time, per GPU"
    )


def throughput(
    times: StepTimes, n_gpus: int = 1, tp: int = 1, per_rank: bool = False
) -> Throughput:
    """Labelled serving / training numbers of ``times`` for dp = n_gpus / tp replicas.
    ``per_rank``: ``times`` are already one rank's (estimate(parallel=): its local widths and
    collectives), not a whole replica's to split ideally by tp."""
    dp = n_gpus // tp
    split = 1 if per_rank else tp

    def rate(tokens: int, seconds: float) -> float:
        # per GPU: a replica takes seconds / tp (ideal split) on tp GPUs -> tokens / seconds
        replica_s = seconds / split
        return tokens / replica_s / tp if seconds else float("inf")

    if times.mode != "decode":
        per_gpu = rate(times.tokens, times.step.time_s)
        return Throughput(
            mode=times.mode,
            n_gpus=n_gpus,
            tp=tp,
            step_s=times.step.time_s / split,
            tokens_per_s_per_gpu=per_gpu,
            tokens_per_s_all_gpus=per_gpu * n_gpus,
        )
    gen_s = sum(s.time_s for s in times.decode_steps)
    per_gpu = rate(times.tokens, gen_s)
    return Throughput(
        mode=times.mode,
        n_gpus=n_gpus,
        tp=tp,
        ttft_s=times.step.time_s / tp,
        tpot_first_s=times.decode_steps[0].time_s / tp,
        tpot_last_s=times.decode_steps[-1].time_s / tp,
        tokens_per_s_per_gpu=per_gpu,
        tokens_per_s_all_gpus=per_gpu * tp * dp,
        end_to_end_tokens_per_s_per_gpu=rate(times.tokens, times.total_s),
    )


class ServingCapacity(BaseModel):
    """How many sequences of prompt + new tokens a paged KV cache holds, and their speed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    gpu: str
    n_gpus: int
    tp: int
    block_size: int
    gpu_memory_utilization: float
    sequence_tokens: int = Field(description="prompt + new tokens of one sequence")
    blocks_per_sequence: int
    block_bytes: int = Field(description="one block, all layers, keys + values, per GPU")
    budget_bytes: int = Field(description="gpu_memory_utilization x device memory, per GPU")
    reserved_bytes: int = Field(
        description="weights + prefill activation peak + CUDA context + workspace, per GPU"
    )
    kv_cache_bytes: int = Field(description="budget - reserved (0 when negative), per GPU")
    n_blocks: int = Field(description="kv_cache_bytes // block_bytes")
    ttft_one_sequence_s: float = Field(description="time to first token of one lone prompt")
    max_concurrent_sequences: int = Field(description="per replica (tp GPUs)")
    max_concurrent_sequences_all_gpus: int
    at_max_concurrency: Throughput | None = Field(
        None, description="decode at that concurrency (None when not one sequence fits)"
    )


def blocks_per_sequence(spec: ModelSpec, workload: Workload, block_size: int) -> int:
    """Blocks one sequence of prompt + new tokens holds at its longest (see module doc)."""
    sh = resolve(spec, workload)
    tokens = sh.prompt + sh.new_tokens
    full = -(-tokens // block_size)
    st = sh.stack("decoder")
    if st.pattern in ("sliding_window", "chunked") and st.window is not None:
        return min(full, -(-st.window // block_size) + 1)
    return full


def block_bytes(spec: ModelSpec, workload: Workload, block_size: int, tp: int = 1) -> int:
    """2 x L x block_size x max(1, h_kv // tp) x d_h elements of the KV cache dtype."""
    h_kv = max(1, spec.n_kv_heads // tp)
    per_layer = nbytes(2 * block_size * h_kv * spec.head_dim, workload.kv_cache_dtype)
    return spec.n_decoder_layers * per_layer


def serving_capacity(
    spec: ModelSpec,
    workload: Workload,
    gpu: GPU,
    *,
    block_size: int = BLOCK_SIZE,
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
    n_gpus: int = 1,
    tp: int = 1,
    overheads: Overheads | None = None,
    efficiency: Efficiency | None = None,
) -> ServingCapacity:
    """Concurrent sequences of ``workload``'s prompt + new tokens that fit a paged KV cache
    on ``gpu`` (per replica of tp GPUs), and the decode throughput at that concurrency."""
    from estimator.estimate import estimate
    from estimator.plan.capacity import Sharding, peak_bytes
    from estimator.spec.workload import check_compatible, resolved_defaults

    workload = resolved_defaults(spec, workload)[0]  # the model's usual settings, as estimate
    if spec.arch != "decoder" or workload.mode != "decode" or not workload.kv_cache:
        raise UnsupportedError(
            f"serving capacity is modelled for decoder-only models in mode='decode' with a KV "
            f"cache, not arch={spec.arch!r}, mode={workload.mode!r}, kv_cache={workload.kv_cache}"
        )
    if block_size <= 0 or not 0 < gpu_memory_utilization <= 1:
        raise UnsupportedError(
            f"block_size={block_size}, gpu_memory_utilization={gpu_memory_utilization} are "
            "invalid: block_size > 0 and 0 < gpu_memory_utilization <= 1"
        )
    check_compatible(spec, workload)
    o = overheads or Overheads()
    prompt = resolve(spec, workload).prompt
    # vLLM's profiling forward (engine vllm, estimator/replay/engines.py): one prompt, fused
    # attention, logits of the sampled position only; its KV blocks are not part of it
    profile = workload.model_copy(
        update={
            "mode": "prefill",
            "batch_size": 1,
            "seq_len": prompt,
            "engine": "vllm",
            "attention_impl": "fused",
            "block_size": block_size,
        }
    )
    est = estimate(spec, profile)
    sharding = Sharding(n_gpus=tp, tp=tp)
    peak, _ = peak_bytes(est, sharding)
    blocks_in_peak = engine(spec, resolve(spec, est.workload)).preallocated()
    reserved = peak - blocks_in_peak + o.cuda_context_bytes + o.workspace_bytes
    budget = int(gpu.total_bytes * gpu_memory_utilization)
    kv_bytes = max(budget - reserved, 0)
    per_block = block_bytes(spec, workload, block_size, tp)
    n_blocks = kv_bytes // per_block
    per_seq = blocks_per_sequence(spec, workload, block_size)
    concurrent = n_blocks // per_seq
    ttft = step_times(est, gpu, efficiency).step.time_s / tp
    at_max = None
    if concurrent:
        batch = workload.model_copy(update={"batch_size": concurrent})
        times = step_times(estimate(spec, batch), gpu, efficiency)
        at_max = throughput(times, n_gpus, tp)
    return ServingCapacity(
        model=spec.name,
        gpu=gpu.name,
        n_gpus=n_gpus,
        tp=tp,
        block_size=block_size,
        gpu_memory_utilization=gpu_memory_utilization,
        sequence_tokens=prompt + workload.new_tokens,
        blocks_per_sequence=per_seq,
        block_bytes=per_block,
        budget_bytes=budget,
        reserved_bytes=reserved,
        kv_cache_bytes=kv_bytes,
        n_blocks=n_blocks,
        ttft_one_sequence_s=ttft,
        max_concurrent_sequences=concurrent,
        max_concurrent_sequences_all_gpus=concurrent * (n_gpus // tp),
        at_max_concurrency=at_max,
    )
