"""One rank's share of a training step spread over ranks (``estimator.spec.parallel.Parallel``):
its parameter tensors, gradients and optimizer states, what FSDP2 gathers, and the layout of
its tensor-parallel shard, as torch.distributed's engines hold them.

Engines mirrored (torch 2.13):
- FSDP2 ``fully_shard`` (torch/distributed/fsdp/_fully_shard/_fsdp_param.py,
  FSDPParam._init_sharded_param): every parameter's (tensor-parallel local) tensor is chunked
  on dim 0 into dp pieces with torch.chunk and padded to ceil(dim0 / dp) rows, so a rank holds
  ceil(dim0 / dp) * prod(rest) elements of it. The sharded gradient (foreach_reduce's
  reduce-scatter output) has the same padded size; the optimizer states are ``zeros_like`` the
  rank's unpadded local shard (torch.chunk's piece: max(0, min(c, dim0 - i c)) rows with
  c = ceil(dim0 / dp), i the rank's dp coordinate).
  One FSDP unit (FSDPParamGroup) per transformer layer and one at the root (embeddings,
  positions, final norm, head: every parameter outside the layers). The all-gather output of a
  unit is dp * its padded shard (FSDPParamGroup.unshard -> foreach_all_gather).
- ZeRO-1: torch.distributed.optim.ZeroRedundancyOptimizer._partition_parameters: whole tensors,
  largest first, each to the rank with the fewest elements so far (ties: the lowest rank);
  the rank's own tensors have optimizer states (and the fp32 master copy) on it.
- Tensor parallelism: DTensor ``parallelize_module`` with the plan of torchtitan's
  ``apply_tp`` (docs/formulas.md, "Per-rank training"): ColwiseParallel q_proj, k_proj,
  v_proj, ffn.up, ffn.gate (weight and bias Shard(0): [out / t, in]); RowwiseParallel o_proj,
  ffn.down (weight Shard(1): [out, in / t], bias replicated); the token embedding
  RowwiseParallel (vocabulary-parallel, weight Shard(0): [V / t, d]); the LM head
  ColwiseParallel (weight Shard(0)); norms, positions and everything else replicated. A rank's
  layer computes h / t heads (h_kv / t key/value heads) and d_ff / t FFN columns: its saved
  activations are those of the ``local_spec`` (tensor-parallel local widths). Uneven splits
  follow torch.chunk: rank i holds max(0, min(c, n - i c)) rows, c = ceil(n / t), in a
  storage of c rows (DTensor's Shard._shard_tensor scatters padded chunks and narrows the
  received one: ``_maybe_unpad_tensor_with_sizes``, torch/distributed/tensor/placement_types.py),
  while its gradient and optimizer states are allocated at the unpadded size.

Every figure is that of ``parallel.rank`` (issue 18i; dp coordinate ``rank // tp``, tp
coordinate ``rank % tp``, the row-major mesh of ``init_device_mesh``); the default is rank 0.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from estimator.rules.live import GATHERED, GRADS, RS_INPUT, SHARDED
from estimator.spec.dtypes import nbytes
from estimator.spec.errors import UnsupportedError
from estimator.spec.model import ModelSpec
from estimator.spec.parallel import Parallel

Shape = tuple[int, ...]
#: module term name suffix -> tensor-parallel style (DTensor ParallelStyle)
COLWISE = ("q_proj", "k_proj", "v_proj", "ffn.up", "ffn.gate", "lm_head")
ROWWISE = ("o_proj", "ffn.down")
ROOT = "root"  # the FSDP unit of every parameter outside the layers
#: wrap="torchtitan" (issue 18): the token embedding's unit, the final norm + LM head's
EMBED, HEAD = "embed", "head"


def _linear(d_in: int, d_out: int, bias: bool) -> list[Shape]:
    """nn.Linear(d_in, d_out): weight [d_out, d_in] (+ bias [d_out])."""
    return [(d_out, d_in), (d_out,)] if bias else [(d_out, d_in)]


@functools.lru_cache(maxsize=64)
def tensor_entries(spec: ModelSpec) -> tuple[tuple[str, Shape, int], ...]:
    """(module term name, shape, copies) of every distinct parameter tensor, the names of
    estimator/terms/params.py (copies: the stack's n_layers for a layer's tensors)."""
    if spec.fused_qkv:
        raise UnsupportedError("parallel= with fused_qkv (one c_attn projection) is not modelled")
    if spec.kv_lora_rank:  # issue 22l: latent attention's per-rank parts not measured
        raise UnsupportedError(
            f"parallel= with kv_lora_rank={spec.kv_lora_rank} (latent attention) is not modelled"
        )
    if spec.parallel_block != "none":  # issue 22: per-rank parts not measured for it
        raise UnsupportedError(
            f"parallel= with parallel_block={spec.parallel_block!r} (attention and FFN on one "
            "input) is not modelled"
        )
    if spec.n_experts:  # issue 22e: the experts' shards (expert parallelism) not modelled
        raise UnsupportedError(
            f"parallel= with n_experts={spec.n_experts} (a mixture of experts) is not modelled"
        )
    if spec.layer_pattern is not None:  # issue 22p: per-rank parts not measured for it
        raise UnsupportedError("parallel= with layer_pattern (per layer) is not modelled")
    d, d_q, d_kv, d_ff, bias = spec.d_model, spec.q_dim, spec.kv_dim, spec.d_ff, spec.qkv_bias
    norm: list[Shape] = [(d,), (d,)] if spec.norm == "layernorm" else [(d,)]
    out: list[tuple[str, Shape, int]] = []

    def add(name: str, shapes: list[Shape], copies: int = 1) -> None:
        out.extend((name, s, copies) for s in shapes)

    if spec.vocab_size is not None:
        add("embed", [(spec.vocab_size, d)])
    for stack, L in spec.stacks:
        if spec.is_patch_input:
            p, c = spec.patch_size, spec.n_channels
            add(f"{stack}.patch", [(1, 1, d)])
            add(f"{stack}.patch.proj", [(d, c, p, p), (d,)])
        if spec.position == "learned":
            rows = spec.n_positions if spec.is_patch_input else spec.max_seq_len
            add(f"{stack}.pos", [(rows + (0 if spec.is_patch_input else spec.position_offset), d)])
        elif spec.position == "relative":
            add(f"{stack}.pos", [(spec.relative_buckets, spec.n_heads)])
        if spec.n_token_types and stack == spec.stacks[0][0]:
            add(f"{stack}.token_type", [(spec.n_token_types, d)])
        if spec.embed_norm:
            add(f"{stack}.embed_norm", norm)
        lay = f"{stack}.layers"
        attns = ["self_attn"] + (
            ["cross_attn"] if stack == "decoder" and spec.arch == "encoder-decoder" else []
        )
        for attn, nrm in zip(attns, ["attn_norm", "cross_norm"], strict=False):
            add(f"{lay}.{nrm}", norm, L)
            add(f"{lay}.{attn}.q_proj", _linear(d, d_q, bias), L)
            add(f"{lay}.{attn}.k_proj", _linear(d, d_kv, bias), L)
            add(f"{lay}.{attn}.v_proj", _linear(d, d_kv, bias), L)
            add(f"{lay}.{attn}.o_proj", _linear(d_q, d, spec.o_bias), L)
        add(f"{lay}.ffn_norm", norm, L)
        add(f"{lay}.ffn.up", _linear(d, d_ff, spec.ffn_bias), L)
        if spec.gated:
            add(f"{lay}.ffn.gate", _linear(d, d_ff, spec.ffn_bias), L)
        add(f"{lay}.ffn.down", _linear(d_ff, d, spec.ffn_bias), L)
        if spec.final_norm:
            add(f"{stack}.final_norm", norm)
    if spec.pooler:
        add("pooler.proj", _linear(d, d, True))
    if spec.head_transform:
        add("head_transform.dense", _linear(d, d, True))
        add("head_transform.norm", norm)
    if spec.lm_head and not spec.tie_embeddings:
        add("lm_head", _linear(d, spec.vocab_size, spec.lm_head_bias))
    elif spec.lm_head_bias:
        add("lm_head", [(spec.vocab_size,)])
    if spec.n_labels:
        add("classifier", _linear(d, spec.n_labels, True))
    return tuple(out)


def unit_of(name: str) -> str:
    """The FSDP unit a module's parameters belong to: its stack's layers, else the root."""
    return name.split(".layers.")[0] + ".layers" if ".layers." in name else ROOT


def unit_in(spec: ModelSpec, parallel: Parallel, name: str) -> str:
    """The FSDP unit of module ``name`` under ``parallel.wrap``: ``blocks``, ``unit_of``;
    ``torchtitan`` (torchtitan/models/llama3/infra/parallelize.py, apply_fsdp): the token
    embedding its own unit (EMBED), the last stack's final norm and the LM head one unit
    (HEAD; with tied embeddings the embedding too), the layers theirs, the rest the root."""
    unit = unit_of(name)
    if parallel.wrap != "torchtitan" or unit != ROOT:
        return unit
    if name == "embed":
        return HEAD if spec.tie_embeddings else EMBED
    if name in ("lm_head", f"{spec.stacks[-1][0]}.final_norm"):
        return HEAD
    return ROOT


def check_wrap(spec: ModelSpec, parallel: Parallel) -> None:
    """UnsupportedError where torchtitan's units do not exist: it wraps one stack's token
    embedding, final norm and LM head."""
    if parallel.wrap != "torchtitan":
        return
    if len(spec.stacks) != 1 or not spec.lm_head or not spec.final_norm or not spec.vocab_size:
        raise UnsupportedError(
            f"wrap='torchtitan' on {spec.name}: its units (token embedding, final norm + LM "
            "head) are those of a decoder-only LM with a final norm"
        )


def _chunk(n: int, k: int, i: int | None = None) -> int:
    """torch.chunk(n, k)'s chunk size ceil(n / k) (FSDP2's and DTensor's padded piece); with
    ``i``, the rows of piece i: max(0, min(c, n - i c)) (the last pieces are smaller or
    empty, torch.chunk)."""
    c = -(-n // k)
    return c if i is None else max(0, min(c, n - i * c))


def tp_local(name: str, shape: Shape, tp: int, tp_rank: int | None = 0) -> Shape:
    """The tensor-parallel local shape of the tensor ``shape`` of module ``name`` on the
    tensor-parallel coordinate ``tp_rank`` (None: the padded chunk, the storage DTensor
    keeps)."""
    if tp == 1:
        return shape
    if name == "embed" or name.endswith(COLWISE):  # Shard(0): weight rows, bias
        return (_chunk(shape[0], tp, tp_rank), *shape[1:])
    if name.endswith(ROWWISE) and len(shape) == 2:  # Shard(1): weight columns; bias replicated
        return (shape[0], _chunk(shape[1], tp, tp_rank))
    return shape


def fsdp_local(shape: Shape, dp: int, dp_rank: int | None = None) -> Shape:
    """FSDP2's dim-0 shard of a (tensor-parallel local) tensor: ceil(dim0 / dp) rows padded
    (``dp_rank`` None, its storage), else the unpadded rows of coordinate ``dp_rank``."""
    return (_chunk(shape[0], dp, dp_rank), *shape[1:])


def check_parallel(spec: ModelSpec, parallel: Parallel) -> None:
    """UnsupportedError for layouts the per-rank model does not cover."""
    t = parallel.tp
    if t > 1:
        for what, n in (("n_heads", spec.n_heads), ("n_kv_heads", spec.n_kv_heads)):
            if n % t:
                raise UnsupportedError(f"tp={t} must divide {what}={n} of {spec.name}")
        if spec.arch == "encoder-decoder" or spec.position == "relative" or spec.is_patch_input:
            raise UnsupportedError(
                f"tp={t} on {spec.name}: tensor parallelism is modelled for decoder / encoder "
                "stacks of token inputs without relative positions"
            )
    tensor_entries(spec)  # refuses fused_qkv
    check_wrap(spec, parallel)


def local_spec(spec: ModelSpec, parallel: Parallel) -> ModelSpec:
    """The widths one tensor-parallel rank computes: h / t heads, h_kv / t key/value heads,
    d_ff / t FFN columns (head_dim and d_model unchanged); under ``loss_parallel`` the
    logits and the loss over V / t vocabulary entries (else the LM head's output is
    all-gathered to the full vocabulary, ColwiseParallel(output_layouts=Replicate()))."""
    t = parallel.tp
    if t == 1:
        return spec
    i = parallel.tp_rank
    update: dict[str, Any] = {
        "n_heads": spec.n_heads // t,
        "n_kv_heads": spec.n_kv_heads // t,
        "head_dim": spec.head_dim,
        "d_ff": _chunk(spec.d_ff, t, i),
    }
    if parallel.loss_parallel and spec.vocab_size:
        update["vocab_size"] = _chunk(spec.vocab_size, t, i)
    return spec.model_copy(update=update)


def local_tensors(spec: ModelSpec, parallel: Parallel) -> list[tuple[str, Shape, Shape, int]]:
    """(module, tensor-parallel local shape, held shape, copies) of every tensor of the rank:
    the local shape is its unpadded TP piece (what autograd's gradient has), the held shape
    the storage of its parameter: FSDP2's padded shard under zero2 / zero3, else DTensor's
    padded TP chunk (the local shape without TP)."""
    fsdp = parallel.shard in ("zero2", "zero3")
    out = []
    for name, shape, copies in tensor_entries(spec):
        loc = tp_local(name, shape, parallel.tp, parallel.tp_rank)
        held = fsdp_local(loc, parallel.dp) if fsdp else tp_local(name, shape, parallel.tp, None)
        out.append((name, loc, held, copies))
    return out


def owned_shapes(spec: ModelSpec, parallel: Parallel) -> list[Shape]:
    """The unpadded shape of every parameter tensor (one per layer copy) the rank holds: its
    FSDP2 piece of its TP piece under zero2 / zero3, else its TP piece. What the rank's
    parameters count (``params``) and what ``zeros_like`` gives its optimizer states."""
    fsdp = parallel.shard in ("zero2", "zero3")
    return [
        fsdp_local(loc, parallel.dp, parallel.dp_rank) if fsdp else loc
        for _, loc, _, c in local_tensors(spec, parallel)
        for _ in range(c)
    ]


def zero1_partition(shapes: list[Shape], world: int, rank: int = 0) -> list[int]:
    """Indices of the tensors ``rank`` owns under
    ZeroRedundancyOptimizer._partition_parameters: sorted by numel (largest first, stable),
    each to the rank with the fewest elements so far (the lowest such rank)."""
    import heapq

    ranks = [(0, r) for r in range(world)]  # (elements, rank): a heap
    mine = []
    order = sorted(range(len(shapes)), key=lambda i: -math.prod(shapes[i]))
    for i in order:
        size, r = heapq.heappop(ranks)  # the fewest elements, then the lowest rank
        heapq.heappush(ranks, (size + math.prod(shapes[i]), r))
        if r == rank:
            mine.append(i)
    return sorted(mine)


def optimizer_shapes(spec: ModelSpec, parallel: Parallel) -> list[Shape]:
    """Shapes of the tensors the rank's optimizer steps (holds states for): every owned
    (unpadded) shard, its ZeRO-1 partition (zero1)."""
    owned = owned_shapes(spec, parallel)
    if parallel.shard == "zero1" and parallel.dp > 1:
        return [owned[i] for i in zero1_partition(owned, parallel.dp, parallel.dp_rank)]
    return owned


def local_params(spec: ModelSpec, parallel: Parallel) -> int:
    """Parameters the rank holds: the elements of its unpadded shards (a tied tensor once)."""
    return sum(math.prod(s) for s in owned_shapes(spec, parallel))


def param_bytes(spec: ModelSpec, parallel: Parallel, dtype: str) -> int:
    """Bytes of the parameter tensors the rank holds in ``dtype`` (their padded storage)."""
    return sum(nbytes(math.prod(h), dtype) * c for _, _, h, c in local_tensors(spec, parallel))


def unit_bytes(spec: ModelSpec, parallel: Parallel, dtype: str) -> dict[str, dict[str, int]]:
    """Per FSDP unit (``{stack}.layers``: ONE layer; ``root``): ``shard`` the padded shard
    bytes, ``gathered`` the all-gather output (dp * shard: FSDPParamGroup's unsharded
    parameters), ``grads`` the unsharded gradients autograd makes (unpadded local shapes)."""
    dp = parallel.dp if parallel.shard in ("zero2", "zero3") else 1
    out: dict[str, dict[str, int]] = {}
    for name, loc, held, _ in local_tensors(spec, parallel):
        u = out.setdefault(unit_in(spec, parallel, name), {"shard": 0, "gathered": 0, "grads": 0})
        u["shard"] += nbytes(math.prod(held), dtype)
        u["gathered"] += nbytes(dp * math.prod(held), dtype)
        u["grads"] += nbytes(math.prod(loc), dtype)
    return out


def local_grads(spec: ModelSpec, parallel: Parallel, dtype: str) -> dict[str, int]:
    """Unsharded gradient bytes per module term (the names of params(spec), summed over the
    layers), tensor-parallel local: what autograd's AccumulateGrad makes on the rank."""
    out: dict[str, int] = {}
    for name, loc, _, copies in local_tensors(spec, parallel):
        out[name] = out.get(name, 0) + nbytes(math.prod(loc), dtype) * copies
    return out


class Gathers:
    """FSDP2's unsharded parameters and gradient buffers over a training step of the rank
    (FSDPParamGroup.pre_forward / post_forward / pre_backward / post_backward, torch/
    distributed/fsdp/_fully_shard/_fsdp_param_group.py), in bytes:
      root       the root unit's all-gather output, unsharded from the root's pre-forward to
                 its post-backward (the root is never resharded after forward:
                 FSDPState._lazy_init sets its post_forward_mesh_info to None)
      block      per stack, ONE layer's all-gather output: zero3 gathers it in its forward
                 and again in its backward (pre_backward; the root's pre_backward prefetches
                 the last layer, each layer's the one before it: _backward_prefetch); zero2
                 keeps every layer gathered from its forward to its backward
      shard      per stack, one layer's reduce-scatter output (its sharded gradients)
      grads      per stack, one layer's unsharded gradients (autograd's, freed when
                 foreach_reduce has copied them into the reduce-scatter input)
    The reduce-scatter input (dp * shard) of a unit stays until the next unit's post_backward
    (reduce_scatter_max_input_buffers = 1). An unshard's copy-out holds the flat all-gather
    output and the per-parameter outputs at once (foreach_all_gather_copy_out): 2 x gathered
    for a moment. Recompute under checkpointing gathers nothing: the layer is unsharded by
    its pre_backward, so the recompute's pre_forward unshard is a no-op
    (FSDPParamGroup.unshard: ``if self.is_unsharded: return``)."""

    def __init__(
        self, spec: ModelSpec, parallel: Parallel, dtype: str, orig: str, gloo: bool = False
    ) -> None:
        """``dtype``: MixedPrecisionPolicy's param_dtype (= reduce_dtype), what is gathered
        and reduced; ``orig``: the sharded parameters' own dtype (fp32 under master
        weights), which the sharded gradients are cast to (foreach_reduce); ``gloo``: the
        process group is gloo (CPU), whose reduce-scatter clones its input (``reduce``)."""
        self.gloo = gloo
        self.last_grad = last_grads(spec, parallel, dtype)
        units = unit_bytes(spec, parallel, dtype)
        kept = unit_bytes(spec, parallel, orig)
        empty = {"shard": 0, "gathered": 0, "grads": 0}
        root = units.get(ROOT, empty)
        self.reshard = parallel.shard == "zero3"
        self.root, self.root_shard = root["gathered"], kept.get(ROOT, root)["shard"]
        self.root_grads = root["grads"]
        # wrap="torchtitan" (issue 18): (gathered, grads, shard) of the embedding's unit and
        # of the final norm + head's (with tied embeddings the embedding is in the head's)
        self.titan = parallel.wrap == "torchtitan"
        self.tied = self.titan and spec.tie_embeddings
        e, h = units.get(EMBED, empty), units.get(HEAD, empty)
        self.embed = (e["gathered"], e["grads"], kept.get(EMBED, e)["shard"])
        self.head = (h["gathered"], h["grads"], kept.get(HEAD, h)["shard"])
        self.n_layers = dict(spec.stacks)
        self.block = {s: units.get(f"{s}.layers", {}).get("gathered", 0) for s in self.n_layers}
        self.shard = {s: kept.get(f"{s}.layers", {}).get("shard", 0) for s in self.n_layers}
        self.grads = {s: units.get(f"{s}.layers", {}).get("grads", 0) for s in self.n_layers}
        self.last = spec.stacks[-1][0]
        self.first_stack = spec.stacks[0][0]
        self.rs_input = 0  # the reduce-scatter input still held (one unit's)

    @property
    def all_blocks(self) -> int:
        return sum(self.block[s] * self.n_layers[s] for s in self.n_layers)

    def _through(self) -> int:
        """Gathered through the layers' forward besides them: the root; torchtitan's tied
        head unit (unsharded at the embedding's forward, never resharded after forward) or,
        untied under zero2, the embedding's unit."""
        if not self.titan:
            return self.root
        if self.tied:
            return self.root + self.head[0]
        return self.root + (0 if self.reshard else self.embed[0])

    def forward_extra(self) -> int:
        """Gathered at the loss: the root (+ every layer under zero2), and the last layer's
        flat all-gather output, which forward keeps in ``comm_ctx.all_gather_state`` until
        the next unit's unshard or the root's post_forward (FSDPParamGroup.unshard: "Defer
        free to allow for overlap of this copy-out with next all-gather"). torchtitan
        untied: the head unit unsharded after the layers, its flat output the one kept."""
        layers = 0 if self.reshard else self.all_blocks
        if self.titan and not self.tied:
            return self._through() + 2 * self.head[0] + layers
        return self._through() + self.block[self.last] + layers

    def head_unshard_extra(self) -> int | None:
        """torchtitan untied: gathered at the head unit's forward unshard (its copy-out:
        flat and per-parameter outputs, 2 x the unit; the last layer's flat freed), with
        what stays gathered; None for the other wraps (the head is in the root's unit or
        in the tied one, unsharded before the layers)."""
        if not self.titan or self.tied:
            return None
        flat = max(self.head[0], self.block[self.last])  # the all-gather beside the kept flat
        layers = 0 if self.reshard else self.all_blocks
        return self._through() + self.head[0] + flat + layers

    def embed_unshard_extra(self) -> int | None:
        """torchtitan untied: gathered at the embedding unit's forward unshard (2 x the
        unit, and the root), before any activation; None for the other wraps."""
        if not self.titan or self.tied:
            return None
        return self.root + self.embed[0] + max(self.root, self.embed[0])  # the root's flat kept

    def moment_extra(self) -> int:
        """Gathered inside the last layer's attention: the root and that layer, its flat
        all-gather output kept (zero2: every layer)."""
        block = self.block[self.last]
        return self._through() + block + (block if self.reshard else self.all_blocks)

    def unshard_extra(self) -> int:
        """Gathered at the last layer's forward unshard (its copy-out: the flat all-gather
        output beside the per-parameter outputs, 2 x the layer), with the root (and, zero2,
        every earlier layer)."""
        block = self.block[self.last]
        return self._through() + 2 * block + (0 if self.reshard else self.all_blocks - block)

    def backward_extra(self) -> int:
        """Gathered when backward starts: the root and the last layer (the root's
        pre_backward prefetch; zero2: every layer); the root's post_forward freed the kept
        flat output. torchtitan: the root's pre_backward prefetches the head unit, still
        unsharded (a no-op); the last layer is prefetched by the head's pre_backward
        (``head_pre_backward``)."""
        if self.titan:
            head = 0 if self.tied else self.head[0]
            return self._through() + head + (0 if self.reshard else self.all_blocks)
        return self.root + (self.block[self.last] if self.reshard else self.all_blocks)

    def head_pre_backward(self, live: Any) -> None:
        """torchtitan: the head unit's pre_backward, once the logits' gradient exists (its
        hook is on the head's output): the prefetch of the last layer's flat all-gather
        output (zero3; FSDPParamGroup._backward_prefetch)."""
        if self.titan and self.reshard:
            live.take(self.block[self.last], label=GATHERED)

    def head_post_backward(self, live: Any) -> None:
        """torchtitan untied: the head unit's post_backward after the final norm's backward:
        resharded, its gradients reduce-scattered (foreach_reduce: input, copy-in, the
        unsharded gradients freed, output), as ``post_layer``."""
        if not self.titan or self.tied:
            return
        gathered, grads, shard = self.head
        live.drop(gathered, label=GATHERED)
        live.drop(self.rs_input, label=RS_INPUT)
        self.reduce(live, gathered, grads, shard, HEAD)

    def first_layer(self, stack: str) -> bool:
        """Whether the stack's first layer prefetches another unit: torchtitan untied under
        zero3, where it prefetches the embedding's unit (its post_forward comes before the
        first layer's) instead of a layer (``pre_layer``, ``after_stack``)."""
        return self.titan and not self.tied and self.reshard and stack == self.first_stack

    def pre_layer(self, live: Any, stack: str, prefetch: bool = True) -> None:
        """A layer's pre_backward under zero3: the copy-out of its prefetched all-gather
        (held as the flat output since the prefetch) into the per-parameter outputs, the flat
        one freed (wait_for_unshard), then, unless it is the stack's first layer
        (``prefetch`` False: FSDPParamGroup._backward_prefetch finds no unit before it, issue
        18p), the prefetch of the layer before it: its flat all-gather output."""
        if self.reshard:
            g = self.block[stack]
            live.take(g, label=GATHERED)
            live.drop(g, label=GATHERED)
            if prefetch:
                live.take(g, label=GATHERED)
            elif self.first_layer(stack):  # torchtitan: the embedding's unit
                live.take(self.embed[0], label=GATHERED)

    def post_layer(self, live: Any, stack: str) -> None:
        """A layer's post_backward: resharded (its gathered parameters freed); the previous
        unit's reduce-scatter input reclaimed; foreach_reduce's input (dp * shard)
        allocated and the unsharded gradients copied in, then freed ("Only after the
        copy-in finishes can we free the gradients"), then its output (the sharded
        gradients) allocated (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py,
        foreach_reduce; issue 18i: the output was taken before the gradients were freed)."""
        live.drop(self.block[stack], label=GATHERED)
        live.drop(self.rs_input, label=RS_INPUT)
        unit = f"{stack}.layers"
        self.reduce(live, self.block[stack], self.grads[stack], self.shard[stack], unit)

    def reduce(self, live: Any, rs_input: int, grads: int, shard: int, unit: str) -> None:
        """foreach_reduce (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py) of one
        unit: its reduce-scatter input allocated (reduce_scatter_comm.allocate) and the
        unsharded gradients copied in (foreach_reduce_scatter_copy_in); ``unsharded_grads
        .clear()`` frees them but the last: the loop over ``zip(fsdp_params,
        unsharded_grads)`` that checks Shard(i > 0) placements (run when world_size > 1)
        leaves its loop variable ``unsharded_grad`` bound to the group's last gradient
        until foreach_reduce returns (issue 18p: the HF Llama lm_head's [V, d] at the
        root, measured beside the reduce-scatter output). Then the output (the sharded
        gradients); on gloo, ProcessGroupGloo::reduce_scatter_tensor_coalesced
        (torch/csrc/distributed/c10d/ProcessGroupGloo.cpp) all-reduces a clone of the input
        (``buffers.push_back(inputTensors[i].clone())``), freed with its work after the
        wait's copy into the output; nccl reduce-scatters without one. The input stays
        until the next unit's post_backward (``rs_input``)."""
        last = self.last_grad.get(unit, 0)
        self.rs_input = rs_input
        live.take(rs_input, label=RS_INPUT)
        live.drop(grads - last, label=GRADS)
        live.take(shard, label=SHARDED)
        if self.gloo:
            live.take(rs_input, label=RS_INPUT)
            live.drop(rs_input, label=RS_INPUT)
        live.drop(last, label=GRADS)

    def after_stack(self, live: Any, stack: str) -> None:
        """torchtitan untied zero3, after the first layer: the embedding unit's pre_backward,
        the copy-out of the prefetch its first layer made (``pre_layer``)."""
        if self.first_layer(stack):
            live.take(self.embed[0], label=GATHERED)
            live.drop(self.embed[0], label=GATHERED)

    def end(self, live: Any) -> None:
        """The root's post_backward after the embeddings (FSDPState's final callback):
        resharded first (FSDPParamGroup.post_backward: ``if self.reshard_after_backward:
        self.reshard()`` frees the root's unsharded parameters, which it kept since its
        pre-forward), the previous unit's reduce-scatter input reclaimed, then
        foreach_reduce (``reduce``). torchtitan: the root's (when it holds parameters), then
        the embedding's (tied: the head's) unit, in the root's post-backward callback (their
        inputs, the token ids, need no gradient), each resharded first."""
        units = [(self.root, self.root_grads, self.root_shard, ROOT)]
        if self.titan:
            units = units if self.root else []
            units.append((*self.head, HEAD) if self.tied else (*self.embed, EMBED))
        for gathered, grads, shard, unit in units:
            live.drop(gathered, label=GATHERED)
            live.drop(self.rs_input, label=RS_INPUT)
            self.reduce(live, gathered, grads, shard, unit)


def last_grads(spec: ModelSpec, parallel: Parallel, dtype: str) -> dict[str, int]:
    """Per FSDP unit (``{stack}.layers``, ``root``; torchtitan's ``embed`` and ``head``), the
    unsharded gradient bytes of the parameter its FSDPParamGroup lists last
    (``fsdp_params``: module.parameters() order, the order the modules register their
    parameters): a whole-model unit's last entry of ``tensor_entries`` (its order is the
    reference model's registration order: embeddings, positions, final norm, head); a
    layer's per the implementation (rule ``fsdp.last_layer_param``: the module whose last
    tensor is registered last)."""
    from estimator.rules.registry import rule

    last_layer = rule("fsdp.last_layer_param", spec)(spec)
    out: dict[str, int] = {}
    for name, loc, _, _ in local_tensors(spec, parallel):
        unit = unit_in(spec, parallel, name)
        if unit in (ROOT, EMBED, HEAD) or name.endswith(f".layers.{last_layer}"):
            out[unit] = nbytes(math.prod(loc), dtype)
    return out


def fsdp(parallel: Parallel) -> bool:
    """Whether FSDP2 shards the parameters (zero2 / zero3 over more than one rank)."""
    return parallel.shard in ("zero2", "zero3") and parallel.dp > 1


def rank_state_terms(spec: ModelSpec, parallel: Parallel, sh: Any) -> dict[str, int]:
    """weights, gradients, optimizer.<state> (and optimizer.master_weights) as the rank holds
    them. Under FSDP2 with master weights the sharded parameters ARE the fp32 copy
    (MixedPrecisionPolicy(param_dtype=dtype) gathers them in ``dtype``; their sharded
    gradients are cast back to fp32): ``weights`` and ``gradients`` are fp32 shards and there
    is no separate master copy."""
    from estimator.terms.optimizer import optimizer_dtype, states_of

    master = sh.master_weights
    kept = "fp32" if master and fsdp(parallel) else sh.dtype
    t = {"weights": param_bytes(spec, parallel, kept)}
    if fsdp(parallel):
        t["gradients"] = t["weights"]
    else:
        t["gradients"] = sum(local_grads(spec, parallel, sh.dtype).values())
    shapes = tuple(optimizer_shapes(spec, parallel))
    t.update(states_of(shapes, sh.optimizer, optimizer_dtype(sh)))
    if master and not fsdp(parallel):
        t["optimizer.master_weights"] = sum(nbytes(math.prod(s), "fp32") for s in shapes)
    return t


#: saved tensors over the sequence that SequenceParallel shards by t (names after
#: ``{stack}.layers.``): the norms' saved sets and the residual dropout masks
_SEQ_LAYER = ("attn_norm", "ffn_norm", "cross_norm", "dropout")
#: the column-parallel linears' saved inputs (the norm output they all-gather)
_SEQ_INPUTS = ("self_attn.q_proj", "ffn.gate", "ffn.up")


def rank_activations(local: ModelSpec, sh: Any, parallel: Parallel) -> dict[str, Any]:
    """Saved activation terms of the rank (names without ``activations.``): the local widths'
    (``local_spec``); under ``sp`` the sequence-sharded ones divided by t (ceil): the norms
    (SequenceParallel), the residual and embedding dropout masks, the checkpointed layer
    inputs, and with ``sp_input="shard"`` (Megatron-LM) the column-parallel linears' inputs
    and the head's input; DTensor (``gathered``) saves those all-gathered, whole."""
    from estimator.terms.activations import activations

    acts = activations(local, sh)
    if not parallel.sp:
        return acts
    t = parallel.tp
    stacks = {stack for stack, _ in local.stacks}
    out = {}
    for name, v in acts.items():
        leaf = name.split(".layers.", 1)[1] if ".layers." in name else None
        seq = leaf in _SEQ_LAYER or name in stacks  # (checkpointed layer inputs: {stack})
        seq = seq or name.endswith((".final_norm", ".embed_norm", ".dropout")) and leaf is None
        if parallel.sp_input == "shard":
            seq = seq or leaf in _SEQ_INPUTS or name == "lm_head"
        out[name] = -(-v // t) if seq else v
    return out


def ddp_bucket_bytes(spec: ModelSpec, parallel: Parallel, dtype: str) -> int:
    """DDP's gradient buckets on the rank (shard none / zero1 over dp > 1): flat buffers
    that hold every local gradient once, allocated when DDP is built
    (torch/csrc/distributed/c10d/reducer.cpp, Reducer::initialize_buckets:
    ``bucket.gradients = at::empty({offset}, options)``) and live as long as the model;
    with gradient_as_bucket_view=False (DDP's default) each gradient is copied into its
    bucket (mark_variable_ready_dense: ``bucket_view.copy_(grad)``), beside the gradient
    itself. 0 for FSDP2 and TP-only layouts."""
    if parallel.shard not in ("none", "zero1") or parallel.dp == 1:
        return 0
    return sum(local_grads(spec, parallel, dtype).values())


def tp_logits(spec: ModelSpec, parallel: Parallel, sh: Any) -> tuple[int, int]:
    """(extra bytes at the loss, bytes live at the logits' all-gather) of a tensor-parallel
    rank whose LM head gathers its logits (ColwiseParallel(output_layouts=Replicate()), no
    loss_parallel); (0, 0) otherwise; both plus SP's held stack output
    (``sp_stack_output``). DTensor's Shard(-1) -> Replicate
    (torch/distributed/tensor/placement_types.py, Shard._to_replicate_tensor) pads a short
    piece to c = ceil(V / t) columns (pad_tensor: a copy, beside the piece), all-gathers
    [t n, c] (_functional_collectives.all_gather_tensor, on dim 0) and concatenates the
    chunks on the vocabulary dim, [n, t c], while the gathered buffer and the local piece
    [n, c_r] are still held; the unpadded logits are a narrow view of that [n, t c] storage,
    which stays the logits' storage through the loss (n t c instead of n V)."""
    held = sp_stack_output(spec, parallel, sh)
    if parallel.tp == 1 or parallel.loss_parallel or not spec.lm_head or not spec.vocab_size:
        return held, 0
    t, v = parallel.tp, spec.vocab_size
    c, mine = _chunk(v, t), _chunk(v, t, parallel.tp_rank)
    n, cb = sh.b * sh.s_out, sh.cb
    padded = n * c * cb if mine < c else 0  # the short piece's padded copy
    gather = n * mine * cb + padded + 2 * n * t * c * cb  # piece, gathered, concatenated
    return n * (t * c - v) * cb + held, gather + held


def sp_stack_output(spec: ModelSpec, parallel: Parallel, sh: Any) -> int:
    """Bytes of the last stack's output held to the loss by no saved tensor under DTensor
    sequence parallelism (``sp``, ``sp_input="gathered"``): the final norm (SequenceParallel)
    returns the rank's sequence shard [b, ceil(s / t), d], which Transformer.forward binds to
    ``h`` (reference_model/model.py) until it returns, while the LM head
    (ColwiseParallel(input_layouts=Shard(1)), torch/distributed/tensor/parallel/style.py
    ColwiseParallel._prepare_input_fn: ``input_tensor.redistribute(placements=
    desired_input_layouts)``, an all-gather to Replicate) saves the all-gathered [b, s, d]
    copy, not the shard (on one device and without SP the head saves ``h`` itself).
    Measured: tp2-sp-2 without an optimizer, forward 4,096 B = [2, 16, 32] fp32 above the
    estimate before this term (issue 18p). Megatron's layout (``sp_input="shard"``) saves
    the shard itself: 0."""
    if not parallel.sp or parallel.sp_input != "gathered" or not spec.lm_head:
        return 0
    return sh.b * _chunk(sh.s_out, parallel.tp, parallel.tp_rank) * spec.d_model * sh.cb
