"""One rank's collectives per training step: ``comm.<op>.count`` and ``comm.<op>.bytes`` for
op in all_gather, reduce_scatter, all_reduce, broadcast (estimator.spec.parallel.Parallel).

Bytes convention (that of nccl-tests, which the ring time of estimator/plan/hardware.py uses):
the size S of the collective's LARGER side on one rank, summed over the calls:
  all_gather      the gathered output (group size x each rank's input)
  reduce_scatter  the input (group size x each rank's output)
  all_reduce      the tensor reduced (input = output)
  broadcast       the tensor broadcast
Counts are the process-group calls (one per ``dist.all_gather_into_tensor`` etc.), as
CommDebugMode counts the functional collectives and the c10d ops.

Engines and what they call (torch 2.13; n = b s tokens, d = d_model, cb the compute dtype):
- FSDP2 (zero2 / zero3 over dp ranks; estimator/terms/ranks.py), wrapped as
  ``fully_shard(layer, reshard_after_forward=zero3)`` per transformer layer, then
  ``fully_shard(model)`` at the root with reshard_after_forward left at its default (None:
  the root is not resharded after forward); per unit (one per layer, the root) one
  all_gather of its padded parameters in the forward (FSDPParamGroup.pre_forward ->
  foreach_all_gather) and, under zero3, one again in the backward (pre_backward) for the
  layers; one reduce_scatter of its gradients. ``wrap="torchtitan"`` (units: embedding,
  layers, final norm + head, root; estimator/terms/ranks.py ``unit_in``): the embedding is
  gathered again in backward too, the norm + head unit (never resharded after forward) not
  (post_backward -> foreach_reduce). Parameters and gradients in ``dtype``
  (MixedPrecisionPolicy param_dtype = reduce_dtype). The recompute under checkpointing
  gathers nothing (the layer is already unsharded by its pre_backward).
- DDP (shard none or zero1 over dp > 1 ranks): the gradients all-reduced in buckets
  (torch/nn/parallel/distributed.py, Reducer after its bucket rebuild): the gradients in the
  order backward produces them (reverse registration order), a bucket closed once it holds
  >= its cap (1 MiB for the first, dist._DEFAULT_FIRST_BUCKET_BYTES, then bucket_cap_mb=25).
- ZeRO-1 (ZeroRedundancyOptimizer.step -> _sync_params): one broadcast per parameter tensor
  from the rank that owns it (parameters_as_bucket_view=False).
- Tensor parallelism (DTensor ``parallelize_module`` with torchtitan's apply_tp plan; every
  collective over [n, d] in cb unless said):
    without sp: per layer, forward: the all_reduce of o_proj's and ffn.down's partial outputs
    (RowwiseParallel, output Replicate); backward: one all_reduce per column-parallel linear
    (q, k, v, up, gate: ColwiseParallel._prepare_input_fn makes each linear's input a
    Replicate DTensor of its own, DTensor.from_local, whose backward turns that linear's
    Partial input gradient into Replicate: torch/distributed/tensor/parallel/style.py; issue
    18i, measured: 3 + 1 per layer of the tiny decoder, not 1 + 1). The embedding
    (RowwiseParallel, vocabulary-parallel): forward all_reduce of its partial output. The LM
    head (ColwiseParallel): backward all_reduce of its input gradient; forward all_gather of the
    logits [n, V] (output Replicate) unless ``loss_parallel``; an uneven vocabulary split is
    padded to t ceil(V / t) columns before the all_gather (Shard._to_replicate_tensor pads to
    the full chunk, torch/distributed/tensor/placement_types.py).
    with sp: the norms and dropout on sequence shards (SequenceParallel); per layer, forward
    an all_gather of the attention's and the FFN's input (Shard(1) -> Replicate) and a
    reduce_scatter of o_proj's and ffn.down's outputs (output Shard(1)); backward the
    reverse (reduce_scatter of the input grads, all_gather of the output grads). The
    embedding: forward all_reduce (RowwiseParallel's default Replicate output; the stream is
    split on the sequence at the first layer, after the positions are added:
    profiler/distributed/engine.py ``_tp_ends``), backward all_gather of its gradient
    (Shard(1) -> Replicate); the LM head's input: forward all_gather, backward
    reduce_scatter. The norms' parameters (Replicate under SequenceParallel) get Partial
    gradients (computed from sequence shards); AdamW's step reads each such gradient three
    times (exp_avg.lerp_(grad), exp_avg_sq.addcmul_(grad, grad): torch/optim/adam.py) and
    DTensor redistributes it to Replicate at every read: 3 all_reduce per norm parameter
    tensor (issue 18i, measured); under FSDP2 x TP one per tensor, in backward, when FSDP2
    takes the gradient (torch/distributed/fsdp/_fully_shard/_fsdp_param.py,
    FSDPParam._get_grad_inner_tensor redistributes it to the parameter's Replicate).
    loss_parallel (torch/distributed/tensor/parallel/loss.py): forward all_reduce of the
    row max and of the sum of exponentials [n, 1] (_log_softmax) and of the target's
    log-probability [n] (_nll_loss_forward's _MaskPartial); backward none.
    Checkpointing "full" runs each layer's forward collectives again in backward.
"""

from __future__ import annotations

import math

from estimator.spec.dtypes import nbytes
from estimator.spec.model import ModelSpec
from estimator.spec.parallel import Parallel
from estimator.terms.ranks import EMBED, fsdp, local_tensors, tensor_entries, unit_bytes

OPS = ("all_gather", "reduce_scatter", "all_reduce", "broadcast")
DDP_FIRST_BUCKET_BYTES = 1024 * 1024  # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES
DDP_BUCKET_BYTES = 25 * 1024 * 1024  # DistributedDataParallel(bucket_cap_mb=25)


class _Calls:
    def __init__(self) -> None:
        self.count = dict.fromkeys(OPS, 0)
        self.bytes = dict.fromkeys(OPS, 0)

    def add(self, op: str, nbytes_: int, times: int = 1) -> None:
        self.count[op] += times
        self.bytes[op] += nbytes_ * times

    def terms(self) -> dict[str, int]:
        out = {}
        for op in OPS:
            out[f"comm.{op}.count"] = self.count[op]
            out[f"comm.{op}.bytes"] = self.bytes[op]
        return out


def ddp_buckets(grad_bytes: list[int]) -> int:
    """Number of DDP buckets over gradients of ``grad_bytes`` (in backward's order)."""
    n, filled, cap = 0, 0, DDP_FIRST_BUCKET_BYTES
    for g in grad_bytes:
        filled += g
        if filled >= cap:
            n, filled, cap = n + 1, 0, DDP_BUCKET_BYTES
    return n + (1 if filled else 0)


def comm(spec: ModelSpec, parallel: Parallel, sh) -> dict[str, int]:
    """Collectives of the rank (``parallel.rank``) over one training step of ``sh`` (module
    docstring)."""
    groups = comm_groups(spec, parallel, sh)
    return {k: groups["dp"][k] + groups["tp"][k] for k in groups["dp"]}


def comm_groups(spec: ModelSpec, parallel: Parallel, sh) -> dict[str, dict[str, int]]:
    """``comm``'s terms per process group: ``dp`` (data parallel: FSDP2, DDP, ZeRO-1) and
    ``tp`` (tensor parallel), for the time each takes on its links."""
    dp, tp = _Calls(), _Calls()
    if parallel.dp > 1:
        _data_parallel(spec, parallel, sh, dp)
    if parallel.tp > 1:
        _tensor_parallel(spec, parallel, sh, tp)
    return {"dp": dp.terms(), "tp": tp.terms()}


def _data_parallel(spec: ModelSpec, parallel: Parallel, sh, calls: _Calls) -> None:
    if fsdp(parallel):
        units = unit_bytes(spec, parallel, sh.dtype)
        layers = dict(spec.stacks)
        for unit, u in units.items():
            block = unit.endswith(".layers")
            n = layers[unit.removesuffix(".layers")] if block else 1
            # zero3 gathers again in backward the units resharded after forward: the layers
            # and, wrap="torchtitan", the token embedding (not the root, not norm + head)
            again = parallel.shard == "zero3" and (block or unit == EMBED)
            calls.add("all_gather", u["gathered"], n * (2 if again else 1))
            calls.add("reduce_scatter", u["gathered"], n)
        return
    tensors = [
        (name, loc) for name, loc, _, copies in local_tensors(spec, parallel) for _ in range(copies)
    ]
    grads = [nbytes(math.prod(loc), sh.dtype) for _, loc in reversed(tensors)]
    calls.count["all_reduce"] += ddp_buckets(grads)
    calls.bytes["all_reduce"] += sum(grads)
    if parallel.shard == "zero1":
        calls.add("broadcast", 0, len(tensors))
        calls.bytes["broadcast"] += sum(nbytes(math.prod(loc), sh.dtype) for _, loc in tensors)


def _tensor_parallel(spec: ModelSpec, parallel: Parallel, sh, calls: _Calls) -> None:
    n = sh.b * sh.s
    nd = n * spec.d_model * sh.cb
    L = sum(n_layers for _, n_layers in spec.stacks)
    again = 2 if sh.checkpointing == "full" else 1  # the recompute's forward collectives
    if parallel.sp:
        calls.add("all_gather", nd, 2 * L * again + 2 * L)  # inputs fwd (+recompute), out-grads
        calls.add("reduce_scatter", nd, 2 * L * again + 2 * L)  # outputs fwd, input grads
        norms = [s for name, s, c in tensor_entries(spec) for _ in range(c) if _sp_norm(name)]
        # FSDP2 makes each Partial gradient Replicate once in its post_backward
        # (FSDPParam._get_grad_inner_tensor: grad.redistribute(placements)), so the step
        # reads plain shards; without FSDP2 AdamW's 3 reads of the grad each reduce it
        reads = 1 if fsdp(parallel) else (3 if sh.optimizer in ("adam", "adamw") else 0)
        calls.add("all_reduce", 0, reads * len(norms))
        calls.bytes["all_reduce"] += reads * sum(nbytes(math.prod(s), sh.dtype) for s in norms)
    else:
        colwise = 3 + (2 if spec.gated else 1)  # q, k, v; up (+ gate): one input grad each
        calls.add("all_reduce", nd, 2 * L * again + colwise * L)
    if spec.vocab_size is not None:
        calls.add("all_reduce", nd)  # embedding output, forward (Replicate, then split)
        if parallel.sp:
            calls.add("all_gather", nd)  # its grad, backward
    if spec.lm_head:
        n = sh.b * sh.s_out
        nd = n * spec.d_model * sh.cb
        if parallel.sp:
            calls.add("all_gather", nd)  # the head's input, forward
            calls.add("reduce_scatter", nd)  # its grad, backward
        else:
            calls.add("all_reduce", nd)  # the head's input grad, backward
        if parallel.loss_parallel:
            calls.add("all_reduce", n * sh.cb, 3)  # max, sum exp [n, 1]; target log-prob [n]
        else:
            v_pad = -(-spec.vocab_size // parallel.tp) * parallel.tp  # padded uneven shards
            calls.add("all_gather", n * v_pad * sh.cb)  # the logits [n, V]


def _sp_norm(name: str) -> bool:
    """Whether module ``name``'s parameters are a norm's that SequenceParallel replicates
    (the layers' attn_norm / ffn_norm, the stacks' final norm: engine.py's SP plan)."""
    return name.endswith((".attn_norm", ".ffn_norm", ".final_norm"))
