"""What each rank of `tgauge validate --nproc` builds: the model, its inputs, its loss and its
optimizer, named in the job (``Job.builder``, "module:function") so that profiler/distributed
measures any model without importing the application.

Every rank builds the same weights (the job's seed); the data is the data-parallel rank's own
(the ranks of one TP group see one batch). torch, transformers and the reference model are
imported inside the functions.
"""

from __future__ import annotations

from typing import Any

from profiler.distributed.results import Built, Job


def reference(job: Job, dp_rank: int) -> Built:
    """Our reference model of ``job.spec`` (reference_model.build_model), its inputs,
    ``objective`` and the workload's optimizer (reference_model.train.make_optimizer)."""
    import torch

    from reference_model import build_model
    from reference_model.inputs import make_inputs
    from reference_model.train import make_optimizer, objective

    torch.manual_seed(job.seed)
    model = build_model(job.spec, job.workload, device="cpu")
    model.train()
    inputs = make_inputs(job.spec, job.workload, device="cpu", seed=job.seed + dp_rank)

    def optimizer(wrapped: Any) -> Any:
        return make_optimizer(wrapped, job.workload, lr=1e-4)

    return Built(model=model, inputs=inputs, loss_fn=objective, make_optimizer=optimizer)


def hugging_face(job: Job, dp_rank: int) -> Built:
    """The Hugging Face class of ``job.hf_config`` (tgauge/hf_models.py, random init), its
    inputs (labels included: the model's own loss) and the workload's optimizer."""
    import torch

    from reference_model.train import make_optimizer
    from tgauge.hf_models import build_hf_model, hf_inputs, stand_in_loss

    torch.manual_seed(job.seed)
    built = build_hf_model(job.hf_config, job.workload, "cpu")
    built.model.train()
    torch.manual_seed(job.seed + dp_rank)
    inputs = hf_inputs(built, job.workload, "cpu")
    loss_fn = stand_in_loss if built.task == "base" else _own_loss

    def optimizer(wrapped: Any) -> Any:
        return make_optimizer(wrapped, job.workload, lr=1e-4)

    return Built(model=built.model, inputs=inputs, loss_fn=loss_fn, make_optimizer=optimizer)


def _own_loss(out: Any) -> Any:
    return out.loss
