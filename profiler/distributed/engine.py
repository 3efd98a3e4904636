"""The engines as torch ships them, around a model built the same way on every rank.

Imports torch at import: import this module only from inside the functions that need it.

- ``zero2`` / ``zero3``: FSDP2 ``fully_shard`` (torch/distributed/fsdp/_fully_shard/
  _fully_shard.py) on every block, then on the root, ``reshard_after_forward`` False / True,
  over an explicit CPU ``DeviceMesh`` (``init_device_mesh("cpu", ...)``): given only a gloo
  group, ``fully_shard`` picks the accelerator of a machine that has one;
  with ``wrap="torchtitan"`` the units of torchtitan's ``apply_fsdp``
  (torchtitan/models/llama3/infra/parallelize.py): the token embedding, each block, the final
  norm and LM head together (``reshard_after_forward=False``), then the root; tied
  embeddings: embedding, final norm and head one unit (``reshard_after_forward=False``);
- ``zero1``: DDP (torch/nn/parallel/distributed.py) for the gradients and
  ``ZeroRedundancyOptimizer`` (torch/distributed/optim/zero_redundancy_optimizer.py) for the
  optimizer states; ``none`` over more than one rank: DDP alone;
- ``tp``: DTensor ``parallelize_module`` (torch/distributed/tensor/parallel/style.py):
  ``ColwiseParallel`` on q/k/v and the FFN's up (and gate), ``RowwiseParallel`` on o and down,
  the embedding vocabulary-parallel (``RowwiseParallel`` of an ``nn.Embedding``) and the LM head
  ``ColwiseParallel``; with ``sp``, ``SequenceParallel`` on the norms and the residual stream
  split on the sequence between blocks (the layout of torchtitan's Llama plan);
- FSDP x TP: a 2-D mesh ``(dp, tp)``: TP on the ``tp`` dimension first, then ``fully_shard``
  on ``dp``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from estimator.spec import UnsupportedError
from estimator.spec.parallel import Parallel


def meshes(parallel: Parallel) -> tuple[Any, Any]:
    """(dp mesh, tp mesh) on CPU; None where that dimension has one rank."""
    from torch.distributed.device_mesh import init_device_mesh

    if parallel.tp == 1:
        return init_device_mesh("cpu", (parallel.world,), mesh_dim_names=("dp",)), None
    mesh = init_device_mesh("cpu", (parallel.dp, parallel.tp), mesh_dim_names=("dp", "tp"))
    return (mesh["dp"] if parallel.dp > 1 else None), mesh["tp"]


def blocks(model: nn.Module) -> list[nn.Module]:
    """The Transformer blocks: the children of every ``nn.ModuleList`` named ``layers``
    (reference model: ``<stack>.layers``; Hugging Face: ``model.layers``, ``encoder.layer``)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layers", "layer", "h"):
            found += list(module)
    return found


def apply_fsdp(model: nn.Module, mesh: Any, reshard_after_forward: bool) -> None:
    """``fully_shard`` per block, then the root with FSDP2's default for it
    (``reshard_after_forward=None``: the root keeps its parameters gathered from forward to
    backward, ``FSDPState._lazy_init`` in _fsdp_state.py, ``_auto_reshard_after_forward``)."""
    from torch.distributed.fsdp import fully_shard

    for block in blocks(model):
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=None)


def _ends(model: nn.Module) -> tuple[Any, Any, Any]:
    """(token embedding, final norm, LM head) of the reference model (``embed``, the last
    stack's ``final_norm``, ``lm_head``) or of a Hugging Face causal LM
    (get_input_embeddings, ``model.norm``, get_output_embeddings); None where absent."""
    if hasattr(model, "get_input_embeddings"):
        inner = getattr(model, "model", model)
        norm = getattr(inner, "norm", None)
        return model.get_input_embeddings(), norm, model.get_output_embeddings()
    spec = model.spec
    last = getattr(model, spec.stacks[-1][0], None)
    norm = getattr(last, "final_norm", None)
    return getattr(model, "embed", None), norm, getattr(model, "lm_head", None)


def apply_fsdp_torchtitan(model: nn.Module, mesh: Any, reshard_after_forward: bool) -> None:
    """torchtitan's ``apply_fsdp`` (torchtitan/models/llama3/infra/parallelize.py, policy
    "default" without pipeline parallelism): ``fully_shard`` on the token embedding
    (``reshard_after_forward`` as the blocks), on each block, on ``[norm, output]`` with
    ``reshard_after_forward=False`` ("do not reshard_after_forward the last layers by default
    since FSDP would prefetch them immediately after the forward pass"), then the root. Tied
    weights: ``[tok_embeddings, norm, output]`` as one unit, ``reshard_after_forward=False``
    (torchtitan's ``enable_weight_tying`` branch)."""
    from torch.distributed.fsdp import fully_shard

    embed, norm, head = _ends(model)
    if embed is None or head is None or norm is None:
        raise UnsupportedError(
            "wrap='torchtitan' wraps a token embedding, a final norm and an LM head: "
            f"{type(model).__name__} lacks one"
        )
    tied = head.weight is embed.weight
    if tied:
        fully_shard([embed, norm, head], mesh=mesh, reshard_after_forward=False)
    else:
        fully_shard(embed, mesh=mesh, reshard_after_forward=reshard_after_forward)
    for block in blocks(model):
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward)
    if not tied:
        fully_shard([norm, head], mesh=mesh, reshard_after_forward=False)
    fully_shard(model, mesh=mesh)


def apply_tp(model: nn.Module, mesh: Any, sp: bool) -> None:
    """The TP (and SP) plan of the reference model: attention heads and FFN columns split
    over ``mesh``; each attention module then holds ``h / tp`` (``h_kv / tp``) heads."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    tp = mesh.size()
    spec = model.spec
    if spec.arch != "decoder":
        raise UnsupportedError(f"arch={spec.arch!r}: the TP plan covers decoder-only models")
    if spec.n_heads % tp or spec.n_kv_heads % tp:
        raise UnsupportedError(
            f"tp={tp} must divide n_heads={spec.n_heads} and n_kv_heads={spec.n_kv_heads}"
        )
    residual = Shard(1) if sp else Replicate()  # the residual stream between blocks
    for layer in model.decoder.layers:
        plan: dict[str, Any] = {
            "self_attn.q_proj": ColwiseParallel(),
            "self_attn.k_proj": ColwiseParallel(),
            "self_attn.v_proj": ColwiseParallel(),
            "self_attn.o_proj": RowwiseParallel(output_layouts=residual),
            "ffn.up": ColwiseParallel(),
            "ffn.down": RowwiseParallel(output_layouts=residual),
        }
        if getattr(layer.ffn, "gate", None) is not None:
            plan["ffn.gate"] = ColwiseParallel()
        if sp:
            plan |= {
                "attn_norm": SequenceParallel(),
                "ffn_norm": SequenceParallel(),
                # the gathered input stays a DTensor into q/k/v (up): their input gradients
                # sum as Partial and leave through one reduce-scatter (torchtitan's plan)
                "self_attn": PrepareModuleInput(
                    input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)
                ),
                "ffn": PrepareModuleInput(
                    input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)
                ),
            }
        parallelize_module(layer, mesh, plan)
        layer.self_attn.h //= tp
        layer.self_attn.h_kv //= tp
    _tp_ends(model, mesh, sp)


def _tp_ends(model: nn.Module, mesh: Any, sp: bool) -> None:
    """Vocabulary-parallel embedding and LM head; with SP the stream enters the first block
    split on the sequence (after the positions are added) and the final norm runs on it."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    tied = getattr(model, "lm_head", None) is not None and model.spec.tie_embeddings
    plan: dict[str, Any] = {"embed": RowwiseParallel(input_layouts=Replicate())}
    if hasattr(model, "lm_head"):
        plan["lm_head"] = ColwiseParallel(
            input_layouts=Shard(1) if sp else Replicate(), output_layouts=Replicate()
        )
    if sp:
        first = model.decoder.layers[0]
        n_args = 7  # Layer.forward(x, start, pos, key_padding, memory, memory_padding, cache)
        parallelize_module(
            first,
            mesh,
            PrepareModuleInput(
                input_layouts=(Replicate(), *[None] * (n_args - 1)),
                desired_input_layouts=(Shard(1), *[None] * (n_args - 1)),
                use_local_output=True,
            ),
        )
        plan["decoder.final_norm"] = SequenceParallel()
    parallelize_module(model, mesh, plan)
    if tied:  # both shard the vocabulary rows (Shard(0)): one parameter again, as built
        model.lm_head.weight = model.embed.weight


def wrap(model: nn.Module, parallel: Parallel, hf: bool = False) -> nn.Module:
    """``model`` wrapped for ``parallel`` (TP first, then the data-parallel engine)."""
    from torch.nn.parallel import DistributedDataParallel

    dp_mesh, tp_mesh = meshes(parallel)
    if tp_mesh is not None:
        if hf:
            raise UnsupportedError("--impl hf runs under FSDP2 (--zero 2|3) only, not --tp")
        if parallel.shard in ("none", "zero1") and parallel.dp > 1:
            raise UnsupportedError(
                f"--zero {parallel.shard[-1] if parallel.shard != 'none' else 0} with tp: "
                "data parallelism over TP runs as FSDP2 (--zero 2|3)"
            )
        if parallel.loss_parallel:
            raise UnsupportedError("loss_parallel is not measured yet")
        apply_tp(model, tp_mesh, parallel.sp)
    if parallel.shard in ("zero2", "zero3") and dp_mesh is not None:
        fsdp = apply_fsdp_torchtitan if parallel.wrap == "torchtitan" else apply_fsdp
        fsdp(model, dp_mesh, reshard_after_forward=parallel.shard == "zero3")
    elif parallel.shard in ("none", "zero1") and parallel.dp > 1:
        model = DistributedDataParallel(model)
    return model


def zero1(optimizer: Any, model: nn.Module, parallel: Parallel) -> Any:
    """``optimizer`` as it is; under ``zero1`` replaced by ``ZeroRedundancyOptimizer`` of the
    same class and flags (lr, foreach, fused) over the same parameters."""
    if parallel.shard != "zero1" or optimizer is None:
        return optimizer
    from torch.distributed.optim import ZeroRedundancyOptimizer

    params = [p for p in model.parameters() if p.requires_grad]
    defaults = {k: v for k, v in optimizer.defaults.items() if k in ("lr", "foreach", "fused")}
    return ZeroRedundancyOptimizer(params, optimizer_class=type(optimizer), **defaults)
