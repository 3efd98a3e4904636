"""One rank: ``python -m profiler.distributed.worker JOB.json`` with RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT set (profiler/distributed/launch.py sets them).

The rank joins the process group (gloo on CPU), builds the model with the same seed as every
other rank, wraps it (profiler/distributed/engine.py) and measures one training step in
separate passes: the saved activations (forward + backward), a first full step (it creates
the optimizer states), then a step under the live tracker and one under ``CommBytesMode``
(apart: CommDebugMode's module tracker holds tensors the step frees, issue 18p). It writes
``rank<r>.json`` (a RankProfile) and ``rank<r>.phase`` (where it is) into the job's folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from profiler.distributed.results import Job, RankProfile


def _phase(job: Job, rank: int, text: str) -> None:
    Path(job.out_dir, f"rank{rank}.phase").write_text(text)


def _builder(job: Job) -> Any:
    import importlib

    module, _, name = job.builder.partition(":")
    return getattr(importlib.import_module(module), name)


def run_rank(job: Job, rank: int) -> RankProfile:
    import torch.distributed as dist

    from profiler.distributed import engine, memory
    from profiler.distributed.comm import CommBytesMode
    from profiler.run import call_model

    world = job.parallel.world
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        _phase(job, rank, "building")
        dp_rank = rank // job.parallel.tp
        built = _builder(job)(job, dp_rank)
        inputs, loss_fn = built.inputs, built.loss_fn
        model = engine.wrap(built.model, job.parallel, hf=job.hf_config is not None)
        optimizer = engine.zero1(built.make_optimizer(model), model, job.parallel)

        def fwd_bwd() -> None:
            loss_fn(call_model(model, inputs)).backward()

        _phase(job, rank, "saved activations")
        saved = memory.measure_saved(model, fwd_bwd)
        model.zero_grad(set_to_none=True)
        _phase(job, rank, "first step")
        fwd_bwd()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)
        _phase(job, rank, "measured step")
        # the live peak and the collectives in two steps (issue 18p): CommDebugMode's module
        # tracker (torch/distributed/tensor/debug/_comm_mode.py, _CommModeModuleTracker)
        # registers register_multi_grad_hook on every module's inputs and keeps its records,
        # which held tensors the step itself frees (one device: +68,608 B at the tiny
        # decoder's backward peak; zero3 on 2 ranks: +16,392 B)
        live = _measured_step(model, inputs, loss_fn, optimizer, memory.LocalLiveTracker())
        model.zero_grad(set_to_none=True)
        comm = _measured_step(model, inputs, loss_fn, optimizer, CommBytesMode())
        profile = RankProfile(
            rank=rank,
            world=world,
            n_params=memory.param_numel(model),
            weights=memory.param_bytes(model),
            gradients=memory.grad_bytes(model),
            optimizer=memory.optimizer_bytes(optimizer),
            activations=saved.activations,
            live_peak=live.peak,
            comm=comm.terms(),
            comm_by_phase=comm.by_phase,
            notes=saved.notes,
        )
        dist.barrier()
        return profile
    finally:
        dist.destroy_process_group()


def _measured_step(model: Any, inputs: Any, loss_fn: Any, optimizer: Any, mode: Any) -> Any:
    """One training step under ``mode`` (the live tracker, or CommBytesMode), its phases set
    as the step moves on (profiler/run.py train_step); -> ``mode``."""
    from profiler.distributed import memory
    from profiler.run import track_before_step, train_step

    tracking = isinstance(mode, memory.LocalLiveTracker)
    if tracking:  # as profiler/run.py; this rank's optimizer states (ZeRO-1: its shard's)
        track_before_step(mode, model, inputs, memory.optimizer_states(optimizer))

    def phase(name: str) -> None:
        if name == "forward_end":
            return  # a rank's profile counts the loss with the forward (peak and comm phase)
        if tracking:
            mode.set_phase(name)
        else:
            mode.phase = name

    with mode:
        train_step(model, inputs, optimizer, loss_fn, phase)
    return mode


def main(argv: list[str]) -> int:
    job = Job.model_validate_json(Path(argv[1]).read_text())
    rank = int(os.environ["RANK"])
    profile = run_rank(job, rank)
    out = Path(job.out_dir, f"rank{rank}.json")
    tmp = out.with_suffix(".tmp")
    derived = {name: {"total"} for name in ("weights", "gradients", "optimizer", "activations")}
    tmp.write_text(profile.model_dump_json(exclude=derived))  # Breakdown.total is derived
    tmp.replace(out)
    _phase(job, rank, "done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
