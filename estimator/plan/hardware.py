"""GPUs (memory, peak dense FLOP/s per dtype, bandwidth) and roofline step times.

Every preset cites its vendor datasheet. Peaks are DENSE tensor-core numbers: where a datasheet
prints "with sparsity" figures (marked *), the dense peak is half of it. Memory capacities are
the datasheet's "GB" read as GiB: HBM and GDDR parts are built from binary-sized dies (an A100
80GB reports 81920 MiB in nvidia-smi); what the driver keeps for itself is part of
``Overheads.cuda_context_bytes``.

Roofline (Williams, Waterman, Patterson 2009): a step takes
``max(flops / (peak[dtype] * mfu), bytes_moved / (bandwidth * bw_util))``; the larger term
names the bound. The bytes moved per step are stated below: ``train_bytes_moved`` (training),
``inference_bytes_moved`` (a prefill) and ``step_times`` (each decode step).
"""

from __future__ import annotations

import difflib
import inspect
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from estimator.spec.errors import SpecError

MathDType = Literal["fp32", "tf32", "fp16", "bf16", "fp8", "int8"]
MATH_DTYPES: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")

GiB = 2**30
MiB = 2**20
T = 10**12  # tera (FLOP/s are decimal)


class GPU(BaseModel):
    """One accelerator: what the estimator needs to size and time a step on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    total_bytes: int = Field(gt=0, description="device memory")
    peak_flops_per_s: dict[MathDType, Annotated[float, Field(gt=0, allow_inf_nan=False)] | None] = (
        Field(description="dense peak per math dtype; None where the part has no such unit")
    )
    bandwidth_bytes_per_s: float = Field(
        gt=0, allow_inf_nan=False, description="device-memory bandwidth"
    )
    source: str = ""
    # issue 18: the links collectives run over (per GPU, per direction, decimal bytes / s)
    link_bytes_per_s: float | None = Field(
        None, gt=0, description="inside a node: NVLink or PCIe, per GPU and direction"
    )
    link: str = ""
    network_bytes_per_s: float | None = Field(
        None, gt=0, description="between nodes: InfiniBand / RoCE NIC bandwidth per GPU"
    )
    gpus_per_node: int = Field(8, gt=0)

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; SpecError when the part has none."""
        value = self.peak_flops_per_s.get(dtype)  # type: ignore[call-overload]
        if value is None:
            have = [k for k, v in self.peak_flops_per_s.items() if v]
            raise SpecError(f"dtype={dtype!r} has no peak on {self.name}; it has {', '.join(have)}")
        return value


G = 10**9  # giga (link bandwidths are decimal)
#: name -> (link, per GPU and direction GB/s inside a node, NIC GB/s per GPU between nodes).
#: NVLink per generation (datasheets: total bidirectional bandwidth per GPU, halved per
#: direction): NVLink 4 (H100 / H200 SXM) 900 GB/s -> 450; NVLink 3 (A100 SXM) 600 -> 300.
#: PCIe per direction x16: Gen5 64 GB/s (H100 PCIe), Gen4 32 GB/s (L4, L40S, RTX 4090).
#: Between nodes of 8 (assumed, the reference systems' fabric): one NIC per GPU, ConnectX-7
#: 400 Gb/s InfiniBand NDR = 50 GB/s (DGX H100 / H200), ConnectX-6 200 Gb/s HDR = 25 GB/s
#: (DGX A100), 100 Gb/s RoCE Ethernet = 12.5 GB/s for the PCIe parts.
LINKS: dict[str, tuple[str, float, float]] = {
    "h100-sxm": ("NVLink 4", 450, 50),
    "h200": ("NVLink 4", 450, 50),
    "h100-pcie": ("PCIe Gen5 x16", 64, 50),
    "a100-40gb": ("NVLink 3", 300, 25),
    "a100-80gb": ("NVLink 3", 300, 25),
    "l4": ("PCIe Gen4 x16", 32, 12.5),
    "l40s": ("PCIe Gen4 x16", 32, 12.5),
    "rtx-4090": ("PCIe Gen4 x16", 32, 12.5),
}


def _gpu(name: str, mib: int, tb_s: float, source: str, **peaks: float | None) -> GPU:
    """``mib``: the memory the device reports (nvidia-smi memory.total, NVML's
    nvmlDeviceGetMemoryInfo total, in MiB), not the marketed GB: an "80GB" H100 reports
    81,559 MiB, a "141GB" H200 143,771 MiB, a "24GB" L4 23,034 MiB (issue 23)."""
    full = {k: (None if peaks.get(k) is None else peaks[k] * T) for k in MATH_DTYPES}
    link, link_gb_s, nic_gb_s = LINKS[name]
    return GPU(
        name=name,
        total_bytes=mib * MiB,
        peak_flops_per_s=full,
        bandwidth_bytes_per_s=tb_s * T,
        source=f"{source}; memory: {mib:,} MiB as nvidia-smi reports it (memory.total)",
        link_bytes_per_s=link_gb_s * G,
        link=link,
        network_bytes_per_s=nic_gb_s * G,
    )


_H100_DS = "NVIDIA H100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h100)"
_A100_DS = "NVIDIA A100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/a100)"
GPUS: dict[str, GPU] = {
    # H100 SXM5: 80GB HBM3, 3.35 TB/s; FP32 67 TF; TF32 989*, BF16/FP16 1979*, FP8 3958*,
    # INT8 3958* TOPS (* with sparsity -> dense is half).
    "h100-sxm": _gpu(
        "h100-sxm",
        81559,
        3.35,
        _H100_DS,
        fp32=67,
        tf32=494.5,
        fp16=989.5,
        bf16=989.5,
        fp8=1979,
        int8=1979,
    ),
    # H100 PCIe: 80GB HBM2e, 2.0 TB/s; FP32 51 TF; TF32 756*, BF16/FP16 1513*, FP8 3026*,
    # INT8 3026* TOPS.
    "h100-pcie": _gpu(
        "h100-pcie",
        81559,
        2.0,
        _H100_DS,
        fp32=51,
        tf32=378,
        fp16=756.5,
        bf16=756.5,
        fp8=1513,
        int8=1513,
    ),
    # H200 SXM: 141GB HBM3e, 4.8 TB/s; same tensor cores as H100 SXM (FP32 67 TF, TF32 989*,
    # BF16/FP16 1979*, FP8 3958*, INT8 3958*). NVIDIA H200 datasheet (nvidia.com/en-us/
    # data-center/h200).
    "h200": _gpu(
        "h200",
        143771,
        4.8,
        "NVIDIA H200 Tensor Core GPU datasheet",
        fp32=67,
        tf32=494.5,
        fp16=989.5,
        bf16=989.5,
        fp8=1979,
        int8=1979,
    ),
    # A100 SXM 40GB: HBM2 1,555 GB/s; FP32 19.5 TF; TF32 156 (312*), BF16/FP16 312 (624*),
    # INT8 624 (1248*) TOPS; no FP8.
    "a100-40gb": _gpu(
        "a100-40gb",
        40960,
        1.555,
        _A100_DS,
        fp32=19.5,
        tf32=156,
        fp16=312,
        bf16=312,
        fp8=None,
        int8=624,
    ),
    # A100 SXM 80GB: HBM2e 2,039 GB/s; same compute as the 40GB part.
    "a100-80gb": _gpu(
        "a100-80gb",
        81920,
        2.039,
        _A100_DS,
        fp32=19.5,
        tf32=156,
        fp16=312,
        bf16=312,
        fp8=None,
        int8=624,
    ),
    # L4: 24GB GDDR6, 300 GB/s; FP32 30.3 TF; TF32 120*, BF16/FP16 242*, FP8 485*, INT8 485*.
    # NVIDIA L4 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/l4).
    "l4": _gpu(
        "l4",
        23034,
        0.300,
        "NVIDIA L4 Tensor Core GPU datasheet",
        fp32=30.3,
        tf32=60,
        fp16=121,
        bf16=121,
        fp8=242.5,
        int8=242.5,
    ),
    # L40S: 48GB GDDR6, 864 GB/s; FP32 91.6 TF; TF32 183 | 366*, BF16/FP16 362.05 | 733*,
    # FP8 733 | 1466*, INT8 733 | 1466* (dense | sparse). NVIDIA L40S datasheet.
    "l40s": _gpu(
        "l40s",
        46068,
        0.864,
        "NVIDIA L40S GPU datasheet",
        fp32=91.6,
        tf32=183,
        fp16=362.05,
        bf16=362.05,
        fp8=733,
        int8=733,
    ),
    # RTX 4090: 24GB GDDR6X, 1008 GB/s; FP32 82.6 TF; tensor peaks with FP32 accumulate (as
    # training uses): TF32 82.6, FP16/BF16 165.2, FP8 330.3; INT8 660.6 TOPS (dense).
    # NVIDIA Ada Lovelace GPU Architecture whitepaper v2.1, Appendix A, Table 2.
    "rtx-4090": _gpu(
        "rtx-4090",
        24564,
        1.008,
        "NVIDIA Ada GPU Architecture whitepaper",
        fp32=82.6,
        tf32=82.6,
        fp16=165.2,
        bf16=165.2,
        fp8=330.3,
        int8=660.6,
    ),
}
_ALIASES = {"h100": "h100-sxm", "a100": "a100-80gb", "4090": "rtx-4090", "l40": "l40s"}


def get_gpu(name: str) -> GPU:
    """A preset by name (case-insensitive, aliases h100/a100/4090) or a JSON file of fields."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key in GPUS:
        return GPUS[key]
    path = Path(name)
    if path.suffix.lower() == ".json" and path.exists():  # read_text refuses a non-file
        return gpu_from_json(path)
    close = difflib.get_close_matches(key, [*GPUS, *_ALIASES], n=1, cutoff=0.6)
    hint = f"did you mean {_ALIASES.get(close[0], close[0])!r}? " if close else ""
    raise SpecError(f"gpu={name!r} is unknown; {hint}presets: {', '.join(GPUS)} (or a .json file)")


def gpu_from_json(path: str | Path) -> GPU:
    """A custom GPU from a JSON file: name, total_bytes (or total_gib), peak_tflops per dtype
    (or peak_flops_per_s), bandwidth_bytes_per_s (or bandwidth_tb_s)."""
    from estimator.spec.files import parse_json, read_text

    data = parse_json(read_text(path), f"gpu file {path}")
    if not isinstance(data, dict):
        raise SpecError(f"gpu file {path} must hold a mapping of fields")
    fields = inspect.signature(custom_gpu).parameters
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(
            f"gpu file {path}: unknown field(s) {', '.join(unknown)}; fields: {', '.join(fields)}"
        )
    return custom_gpu(**data)


def _check_numbers(**values: object) -> None:
    """SpecError for a value that is neither None nor a finite number > 0 (a JSON string, 0,
    a negative or Infinity would divide by zero, overflow or time a step negatively)."""
    from estimator.spec.files import short_repr

    for field, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{field}={short_repr(value)} is invalid: a number")
        if not (math.isfinite(value) and value > 0):
            raise SpecError(f"{field}={short_repr(value)} is invalid: a finite number > 0")


def custom_gpu(
    name: str = "custom",
    total_bytes: int | None = None,
    total_gib: float | None = None,
    peak_flops_per_s: dict[str, float | None] | None = None,
    peak_tflops: dict[str, float | None] | None = None,
    bandwidth_bytes_per_s: float | None = None,
    bandwidth_tb_s: float | None = None,
    source: str = "user",
    link_bytes_per_s: float | None = None,
    network_bytes_per_s: float | None = None,
    gpus_per_node: int = 8,
) -> GPU:
    """A GPU from user values (either unit of each); SpecError naming a missing field."""
    _check_numbers(
        total_bytes=total_bytes,
        total_gib=total_gib,
        bandwidth_bytes_per_s=bandwidth_bytes_per_s,
        bandwidth_tb_s=bandwidth_tb_s,
        link_bytes_per_s=link_bytes_per_s,
        network_bytes_per_s=network_bytes_per_s,
        gpus_per_node=gpus_per_node,
    )
    if not isinstance(name, str) or not isinstance(source, str):
        raise SpecError("name and source of a custom GPU are strings")
    for field, peaks_in in (("peak_tflops", peak_tflops), ("peak_flops_per_s", peak_flops_per_s)):
        if peaks_in is not None and not isinstance(peaks_in, dict):
            raise SpecError(f"{field}={str(peaks_in)[:80]!r} is invalid: a mapping dtype -> number")
        _check_numbers(**{f"{field}.{k}": v for k, v in (peaks_in or {}).items()})
    if total_bytes is None and total_gib is not None:
        if not math.isfinite(total_gib * GiB):
            raise SpecError(f"total_gib={total_gib!r} is invalid: too large")
        total_bytes = math.ceil(total_gib * GiB)
    if peak_flops_per_s is None and peak_tflops is not None:
        peak_flops_per_s = {k: None if v is None else v * T for k, v in peak_tflops.items()}
    if bandwidth_bytes_per_s is None and bandwidth_tb_s is not None:
        bandwidth_bytes_per_s = bandwidth_tb_s * T
    for field, value in (
        ("total_bytes", total_bytes),
        ("peak_flops_per_s", peak_flops_per_s),
        ("bandwidth_bytes_per_s", bandwidth_bytes_per_s),
    ):
        if value is None:
            raise SpecError(f"{field}=None is invalid: a custom GPU needs it")
    peaks = {k: None for k in MATH_DTYPES} | dict(peak_flops_per_s)  # type: ignore[arg-type]
    try:
        return GPU(
            name=name,
            total_bytes=total_bytes,
            peak_flops_per_s=peaks,
            bandwidth_bytes_per_s=bandwidth_bytes_per_s,
            source=source,
            link_bytes_per_s=link_bytes_per_s,
            network_bytes_per_s=network_bytes_per_s,
            gpus_per_node=gpus_per_node,
        )
    except ValidationError as exc:
        raise SpecError(
            f"custom GPU is invalid: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
        ) from None


class Overheads(BaseModel):
    """Device memory a model cannot use, as named terms (each overridable).

    Defaults: a CUDA 12 context with lazy module loading plus driver-reserved memory is about
    500 MiB on Hopper/Ampere (torch.cuda.mem_get_info before vs after init); cuBLAS keeps a
    32 MiB workspace per stream on Hopper; the caching allocator loses a fraction of what is
    left to fragmentation and rounding (5% is a common rule of thumb, not a measurement).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cuda_context_bytes: int = Field(500 * MiB, ge=0)
    workspace_bytes: int = Field(32 * MiB, ge=0)
    allocator_reserve_fraction: float = Field(0.05, ge=0.0, lt=1.0)


def unusable_terms(gpu: GPU, overheads: Overheads | None = None) -> dict[str, int]:
    """Bytes of ``gpu`` the model cannot use, by term."""
    o = overheads or Overheads()
    rest = max(gpu.total_bytes - o.cuda_context_bytes - o.workspace_bytes, 0)
    return {
        "cuda_context": o.cuda_context_bytes,
        "workspace": o.workspace_bytes,
        "allocator_reserve": int(rest * o.allocator_reserve_fraction),
    }


def usable_bytes(gpu: GPU, overheads: Overheads | None = None) -> int:
    """total_bytes - cuda_context - workspace - allocator_reserve (never below 0)."""
    return max(gpu.total_bytes - sum(unusable_terms(gpu, overheads).values()), 0)


class Efficiency(BaseModel):
    """Fractions of the peaks a real step reaches; defaults are stated assumptions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mfu: float = Field(0.4, gt=0.0, le=1.0, description="model FLOPs utilization")
    bw_util: float = Field(0.8, gt=0.0, le=1.0, description="achieved / peak bandwidth")


class Roofline(BaseModel):
    """Time of one step: compute time, memory time, and which of them bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flops: int
    bytes_moved: int
    math_dtype: MathDType
    compute_s: float
    memory_s: float
    bound: Literal["compute", "memory", "communication"]
    # issue 18: one rank's collectives (``comm_times``): data-parallel ones overlap with the
    # step (FSDP2 prefetch, DDP buckets during backward), tensor-parallel ones are on its path
    overlapped_comm_s: float = 0.0
    serial_comm_s: float = 0.0

    @property
    def time_s(self) -> float:
        return max(self.compute_s, self.memory_s, self.overlapped_comm_s) + self.serial_comm_s


def roofline(
    flops: int,
    bytes_moved: int,
    gpu: GPU,
    math_dtype: str,
    efficiency: Efficiency | None = None,
    comm_s: tuple[float, float] = (0.0, 0.0),
) -> Roofline:
    """compute_s = flops / (peak * mfu); memory_s = bytes / (bandwidth * bw_util); ``comm_s``
    (overlapped, serial) seconds of collectives: time = max(compute, memory, overlapped) +
    serial; the bound is the largest part (communication when either comm part exceeds
    compute and memory)."""
    e = efficiency or Efficiency()
    compute_s = flops / (gpu.peak(math_dtype) * e.mfu)
    memory_s = bytes_moved / (gpu.bandwidth_bytes_per_s * e.bw_util)
    bound = "compute" if compute_s >= memory_s else "memory"
    if max(comm_s) > max(compute_s, memory_s):
        bound = "communication"
    return Roofline(
        flops=flops,
        bytes_moved=bytes_moved,
        math_dtype=math_dtype,  # type: ignore[arg-type]
        compute_s=compute_s,
        memory_s=memory_s,
        bound=bound,
        overlapped_comm_s=comm_s[0],
        serial_comm_s=comm_s[1],
    )


def ring_factor(op: str, n: int) -> float:
    """Bytes through each GPU's link per byte of S in a ring (nccl-tests doc/PERFORMANCE.md,
    bus bandwidth): all_reduce 2 (n - 1) / n, all_gather and reduce_scatter (n - 1) / n,
    broadcast 1 (a pipelined ring); 0 on one rank."""
    if n <= 1:
        return 0.0
    return {"all_reduce": 2 * (n - 1) / n, "broadcast": 1.0}.get(op, (n - 1) / n)


def comm_times(est: object, gpu: GPU) -> tuple[float, float]:
    """(overlapped, serial) seconds of one rank's collectives per step (0, 0 for one device
    or a GPU without link figures): each op's S (estimator/terms/comm.py convention) times
    its ring factor over the group's bus bandwidth, with no latency term. Ranks are laid out
    tensor-parallel first (tp neighbours share a node); a group whose ranks span more than
    ``gpus_per_node`` GPUs runs at the per-GPU network bandwidth, else at the link's. The
    data-parallel group's collectives (FSDP2 all-gathers and reduce-scatters, DDP's
    all-reduces, ZeRO-1's broadcasts) overlap with compute; the tensor-parallel ones
    (DTensor's, synchronous in the layer) do not."""
    parallel = getattr(est, "parallel", None)
    if parallel is None or parallel.single or gpu.link_bytes_per_s is None:
        return 0.0, 0.0
    from estimator.shapes import resolve
    from estimator.terms.comm import comm_groups
    from estimator.terms.ranks import local_spec

    spec, wl = est.spec, est.workload  # type: ignore[attr-defined]
    groups = comm_groups(spec, parallel, resolve(local_spec(spec, parallel), wl))
    network = gpu.network_bytes_per_s or gpu.link_bytes_per_s
    out = []
    for group, n, span in (
        ("dp", parallel.dp, parallel.world),
        ("tp", parallel.tp, parallel.tp),
    ):
        bw = gpu.link_bytes_per_s if span <= gpu.gpus_per_node else network
        seconds = 0.0
        for op in ("all_gather", "reduce_scatter", "all_reduce", "broadcast"):
            seconds += groups[group][f"comm.{op}.bytes"] * ring_factor(op, n) / bw
        out.append(seconds)
    return out[0], out[1]


def math_dtype(compute_dtype: str, tf32: bool = False) -> str:
    """Tensor-core dtype of the matmuls: the compute dtype (fp32 -> tf32 when allowed)."""
    return "tf32" if compute_dtype == "fp32" and tf32 else compute_dtype


# ---- step times of an Estimate ------------------------------------------------------------
class StepTimes(BaseModel):
    """Roofline times of one workload on one GPU, and the throughput they imply."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu: str
    mode: str
    step: Roofline = Field(description="train: one step; prefill/decode: the prefill")
    decode_steps: list[Roofline] = Field([], description="decode: step t = decode_steps[t-1]")
    total_s: float
    tokens: int = Field(description="tokens processed (train/prefill) or generated (decode)")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s if self.total_s else float("inf")


def train_bytes_moved(memory_terms: dict[str, int], recompute: bool) -> int:
    """Bytes one training step moves through device memory (a lower bound, caches ignored).

    W weights, G gradients, O optimizer states (incl. master weights), A saved activations:
    forward reads W, backward reads W again (and a third time when checkpointing recomputes),
    backward writes G; the optimizer reads G and reads + writes O and W; activations are
    written in the forward and read in the backward.
    """
    w = memory_terms.get("weights", 0)
    g = memory_terms.get("gradients", 0)
    o = sum(v for k, v in memory_terms.items() if k.startswith("optimizer."))
    a = sum(v for k, v in memory_terms.items() if k.startswith("activations."))
    return w * (3 if recompute else 2) + g + (g + 2 * o + 2 * w) + 2 * a


def inference_bytes_moved(memory_terms: dict[str, int], kv_bytes: int) -> int:
    """Prefill: weights read once, activations written and read once, the KV cache written."""
    a = sum(v for k, v in memory_terms.items() if k.startswith("activations."))
    return memory_terms.get("weights", 0) + 2 * a + kv_bytes


def step_times(
    est: object, gpu: GPU, efficiency: Efficiency | None = None, tf32: bool = False
) -> StepTimes:
    """Roofline times of ``est`` (an estimator.Estimate) on ``gpu``.

    Decode step t with a cache reads the weights once and the whole cache after the step
    (P + t positions, capped by the pattern; the new entry is written then read); without a
    cache it re-runs the P + t prefix: weights read once, FLOPs of the full prefix.
    """
    from estimator.shapes import resolve
    from estimator.terms.kv_cache import kv_cache_growth_bytes

    wl, spec = est.workload, est.spec  # type: ignore[attr-defined]
    dtype = math_dtype(wl.autocast or wl.compute_dtype, tf32)  # autocast: matmuls run low
    terms = est.memory.terms  # type: ignore[attr-defined]
    b = wl.batch_size
    if wl.mode == "train":
        moved = train_bytes_moved(terms, wl.checkpointing == "full")
        comm = comm_times(est, gpu)
        step = roofline(est.flops.total, moved, gpu, dtype, efficiency, comm)  # type: ignore[attr-defined]
        return StepTimes(
            gpu=gpu.name, mode=wl.mode, step=step, total_s=step.time_s, tokens=b * wl.seq_len
        )
    if wl.mode == "prefill":
        moved = inference_bytes_moved(terms, est.kv_cache.total)  # type: ignore[attr-defined]
        step = roofline(est.flops.total, moved, gpu, dtype, efficiency)  # type: ignore[attr-defined]
        return StepTimes(
            gpu=gpu.name, mode=wl.mode, step=step, total_s=step.time_s, tokens=b * wl.seq_len
        )
    dec = est.decode  # type: ignore[attr-defined]
    # the cache after the prefill (step 0) and after each step (0 bytes without a cache)
    kv = kv_cache_growth_bytes(spec, resolve(spec, wl)) if wl.kv_cache else [0]
    prefill = roofline(
        dec.prefill_flops, inference_bytes_moved(terms, kv[0]), gpu, dtype, efficiency
    )
    w = terms.get("weights", 0)
    if wl.kv_cache:
        flops_t = list(dec.per_step_flops)
        moved_t = [w + after for after in kv[1:]]
    else:
        flops_t, moved_t = list(dec.per_step_flops_without_cache), [w] * wl.new_tokens
    steps = [
        roofline(flops, moved, gpu, dtype, efficiency)
        for flops, moved in zip(flops_t, moved_t, strict=True)
    ]
    total = prefill.time_s + sum(s.time_s for s in steps)
    return StepTimes(
        gpu=gpu.name,
        mode=wl.mode,
        step=prefill,
        decode_steps=steps,
        total_s=total,
        tokens=b * wl.new_tokens,
    )


def training_time_s(times: StepTimes, token_budget: int, n_gpus: int = 1) -> float:
    """Seconds to train on ``token_budget`` tokens with ``n_gpus`` data-parallel replicas,
    each running the step of ``times`` (communication not modelled): steps * step time."""
    per_step = times.tokens * n_gpus
    return -(-token_budget // per_step) * times.step.time_s
