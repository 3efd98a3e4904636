"""The recurrent training step measured on the reference model (reference_model/recurrent.py):
the live tracker of profiler.run (``_tracked_train_step``) on CPU with oneDNN's fused LSTM off
(the composite cells the estimator's terms mirror), AdamW for-loop step, the stand-in
objective ``out.float().pow(2).mean()``. Shared by tests/recurrent/test_recurrent_peak.py and
scripts/recurrent_peak_table.py."""

from __future__ import annotations

from estimator.spec.recurrent import CharCNN, RecurrentSpec

#: the two sizes of issue 25's check: an ELMo-shaped model (character CNN, separate
#: directions, LSTMP) and a torch bidirectional LSTM LM with a softmax head
ELMO_SMALL = RecurrentSpec(
    name="elmo-small",
    n_layers=2,
    hidden=256,
    proj_size=64,
    bidirectional="separate",
    vocab=50,
    d_embed=64,
    char_cnn=CharCNN(max_chars=12, char_dim=8, filters=((1, 16), (2, 16), (3, 32)), highway=2),
)
LM_HEAD = RecurrentSpec(
    name="lm-head",
    n_layers=2,
    hidden=128,
    bidirectional="concat",
    vocab=500,
    d_embed=64,
    head_vocab=500,
)


def objective(out):
    """reference_model/train.py's stand-in objective for a model without an LM loss."""
    return out.float().pow(2).mean()


def measured_recurrent_peak(spec: RecurrentSpec, b: int, t: int) -> tuple[int, str]:
    """(live peak bytes, phase) of one training step after a first step made AdamW's states."""
    import warnings

    import torch

    from profiler.run import _tracked_train_step
    from reference_model.recurrent import build_recurrent, recurrent_inputs

    torch.manual_seed(0)
    model = build_recurrent(spec)
    inputs = recurrent_inputs(spec, b, t)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with warnings.catch_warnings(), torch.backends.mkldnn.flags(enabled=False):
        warnings.simplefilter("ignore")  # "LSTM with projections is not supported with oneDNN"
        objective(model(*inputs)).backward()  # creates the optimizer state
        opt.step()
        model.zero_grad(set_to_none=True)
        peak, _ = _tracked_train_step(model, inputs, opt, objective, "cpu")
    return peak.peak_bytes, peak.phase
