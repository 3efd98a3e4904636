"""One rank: ``python -m profiler.distributed.worker JOB.json`` with RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT set (profiler/distributed/launch.py sets them).

The rank joins the process group (gloo on CPU), builds the model with the same seed as every
other rank, wraps it (profiler/distributed/engine.py) and measures one training step in
separate passes: the saved activations (forward + backward), a first full step (it creates
the optimizer states), then the measured step under the live tracker and ``CommBytesMode``
together. It writes ``rank<r>.json`` (a RankProfile) and ``rank<r>.phase`` (where it is)
into the job's folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from profiler.distributed.results import Job, RankProfile

LR = 1e-4


def _phase(job: Job, rank: int, text: str) -> None:
    Path(job.out_dir, f"rank{rank}.phase").write_text(text)


def _build(job: Job, rank: int, dp_rank: int) -> tuple[Any, Any, Any]:
    """(model, inputs, loss_fn) on CPU; the same weights on every rank, the data of its
    data-parallel rank (ranks of one TP group see one batch)."""
    import torch

    torch.manual_seed(job.seed)
    if job.hf_config is not None:
        from tgauge.hf_models import build_hf_model, hf_inputs, stand_in_loss

        built = build_hf_model(job.hf_config, job.workload, "cpu")
        built.model.train()
        inputs = hf_inputs(built, job.workload.model_copy(), "cpu")
        loss_fn = stand_in_loss if built.task == "base" else (lambda out: out.loss)
        return built.model, inputs, loss_fn
    from reference_model import build_model
    from reference_model.inputs import make_inputs
    from reference_model.train import objective

    model = build_model(job.spec, job.workload, device="cpu")
    model.train()
    inputs = make_inputs(job.spec, job.workload, device="cpu", seed=job.seed + dp_rank)
    return model, inputs, objective


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
        model, inputs, loss_fn = _build(job, rank, dp_rank)
        model = engine.wrap(model, job.parallel, hf=job.hf_config is not None)
        optimizer = engine.make_optimizer(model, job.workload, job.parallel, LR)

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
        live, comm = _measured_step(model, inputs, loss_fn, optimizer, memory, CommBytesMode)
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
            notes=saved.notes,
        )
        dist.barrier()
        return profile
    finally:
        dist.destroy_process_group()


def _measured_step(
    model: Any, inputs: Any, loss_fn: Any, optimizer: Any, memory: Any, mode: Any
) -> tuple[Any, Any]:
    from profiler.run import call_model

    live = memory.LocalLiveTracker()
    live.track_existing(list(model.parameters()), "weights")
    live.track_existing(memory.optimizer_states(optimizer), "optimizer")
    live.track_existing(inputs, "inputs")
    comm = mode()
    with comm, live:
        live.set_phase("forward")
        loss = loss_fn(call_model(model, inputs))
        live.set_phase("backward")
        loss.backward()
        del loss
        if optimizer is not None:
            live.set_phase("optimizer_step")
            optimizer.step()
    return live, comm


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
