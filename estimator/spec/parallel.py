"""Parallel: how one training step is spread over ranks, as torch.distributed runs it.

One description serves the estimator (one rank's memory and its collectives) and the
measurement (``tgauge validate --nproc``), so a predicted and a measured rank name the same
layout:

- ``shard``: what data parallelism shards, named by the engine that does it
  - ``none``: plain data parallelism (every rank holds everything);
  - ``zero1``: optimizer states, as ``torch.distributed.optim.ZeroRedundancyOptimizer``;
  - ``zero2``: FSDP2 ``fully_shard(..., reshard_after_forward=False)`` per block
    (parameters, gradients and optimizer states sharded; the unsharded parameters of a
    block stay gathered from its forward until its backward);
  - ``zero3``: FSDP2 ``fully_shard(..., reshard_after_forward=True)`` per block (the
    parameters are gathered again for backward);
- ``tp``: the tensor-parallel degree (DTensor ``parallelize_module``: Colwise / Rowwise for
  attention and FFN, vocabulary-parallel embedding and LM head), ``sp``: with
  ``SequenceParallel`` on norms and dropout, ``loss_parallel``: the loss on vocabulary shards;
- ``world``: all ranks; data parallelism spans ``world // tp`` of them (2-D FSDP x TP).
- ``sp_input`` (issue 18): what a column-parallel linear saves of its sequence-parallel input:
  ``gathered``, DTensor's (the all-gathered [n, d] input, which F.linear saves), or
  ``shard``, Megatron-LM's (LinearWithGradAccumulationAndAsyncCommunication saves the rank's
  sequence shard and all-gathers it again in backward; Korthikanti et al. 2022 eq. 3-4).
- ``wrap`` (issue 18): the FSDP2 units under zero2 / zero3: ``blocks``, ``fully_shard`` per
  block and at the root (every other parameter in the root's unit); ``torchtitan``, the units
  of torchtitan's ``apply_fsdp`` (torchtitan/models/llama3/infra/parallelize.py): the token
  embedding its own unit (resharded after forward as the blocks are), each block, the final
  norm and the LM head one unit that is never resharded after forward, then the root (what
  is left); with tied embeddings the embedding, final norm and head are one unit, never
  resharded after forward (torchtitan's ``enable_weight_tying`` branch of apply_fsdp).
- ``rank`` (issue 18i): the global rank estimated (default 0). The mesh is
  ``init_device_mesh(("dp", "tp"))``, row-major: ``dp_rank = rank // tp``,
  ``tp_rank = rank % tp``. Ranks differ where a split is uneven (torch.chunk gives the
  last ranks fewer rows, or none) and in ZeRO-1's partition.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Shard = Literal["none", "zero1", "zero2", "zero3"]


class Parallel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    world: int = Field(1, gt=0)
    tp: int = Field(1, gt=0)
    sp: bool = False
    shard: Shard = "none"
    loss_parallel: bool = False
    # issue 18
    sp_input: Literal["gathered", "shard"] = "gathered"
    # issue 18i
    rank: int = Field(0, ge=0)
    # issue 18 (wrapping)
    wrap: Literal["blocks", "torchtitan"] = "blocks"

    @model_validator(mode="after")
    def _check(self) -> Parallel:
        if self.world % self.tp:
            raise ValueError(f"tp={self.tp} must divide world={self.world}")
        if (self.sp or self.loss_parallel) and self.tp == 1:
            raise ValueError("sp and loss_parallel need tp > 1")
        if self.wrap != "blocks" and self.shard not in ("zero2", "zero3"):
            raise ValueError(f"wrap={self.wrap!r} names FSDP2 units: it needs shard zero2 or zero3")
        if self.rank >= self.world:
            raise ValueError(f"rank={self.rank} must be below world={self.world}")
        return self

    @property
    def dp(self) -> int:
        """Ranks that data parallelism (and its sharding) spans."""
        return self.world // self.tp

    @property
    def dp_rank(self) -> int:
        """The rank's coordinate on the data-parallel mesh dimension."""
        return self.rank // self.tp

    @property
    def tp_rank(self) -> int:
        """The rank's coordinate on the tensor-parallel mesh dimension."""
        return self.rank % self.tp

    @property
    def single(self) -> bool:
        return self.world == 1
