"""Random forward inputs of a training or prefill step, sized by the workload."""

from __future__ import annotations

import torch

from estimator.spec import ModelSpec, Workload
from reference_model.model import torch_dtype


def make_inputs(
    spec: ModelSpec, workload: Workload, *, device: torch.device | str = "cpu", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Forward kwargs for ``Transformer.forward``: b = batch_size sequences of s = seq_len
    tokens (encoder-decoder: s source and s_t = target_len decoder tokens), no padding.

    Token models get random ids; ViT gets pixel_values [b, c, H, W] in the compute dtype;
    BERT-style models get token_type_ids (all segment 0). With an LM head and mode "train",
    labels: decoder-only the input ids (shifted inside the model); encoder-decoder random
    targets with decoder_input_ids = targets shifted right behind start token 0; encoder-only
    random targets per position.
    """
    gen = torch.Generator().manual_seed(seed)
    b, s = workload.batch_size, workload.seq_len

    def ids(length: int) -> torch.Tensor:
        return torch.randint(0, spec.vocab_size, (b, length), generator=gen).to(device)

    out: dict[str, torch.Tensor] = {}
    if spec.is_patch_input:
        size = (b, spec.n_channels, spec.image_size, spec.image_size)
        pixels = torch.randn(size, generator=gen).to(device, torch_dtype(workload.compute_dtype))
        out["pixel_values"] = pixels
    else:
        out["input_ids"] = ids(s)
    if spec.n_token_types:
        out["token_type_ids"] = torch.zeros(b, s, dtype=torch.long, device=device)
    train = workload.mode == "train" and spec.lm_head
    if spec.arch == "encoder-decoder":
        targets = ids(workload.target_len or s)
        start = torch.zeros(b, 1, dtype=torch.long, device=device)
        out["decoder_input_ids"] = torch.cat([start, targets[:, :-1]], dim=1)  # shift right
        if train:
            out["labels"] = targets
    elif train:
        out["labels"] = out["input_ids"].clone() if spec.arch == "decoder" else ids(s)
    return out
