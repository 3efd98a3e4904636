"""Optimizer states per state name, as ``optimizer.state[p]`` holds them (bytes; d = the
optimizer's dtype: fp32 under master_weights, else the weight dtype; n_t = numel of tensor t):
  adam, adamw   exp_avg, exp_avg_sq: sum n_t in d; step: one fp32 0-dim tensor per parameter
  sgd-momentum  momentum_buffer: sum n_t in d;  sgd: none
  adafactor     per tensor of >= 2 dims [.., r, c]: row_var [.., r, 1] and col_var [.., 1, c];
                per vector: variance [n]; all in d; step: fp32 0-dim (torch/optim/_adafactor.py
                Adafactor._init_group)
  adamw-8bit    bitsandbytes AdamW8bit (optim/optimizer.py Optimizer2State.init_state): per
                tensor of >= 4096 elements state1, state2 uint8 [n] and absmax1, absmax2 fp32
                [ceil(n / 256)] (block-wise constants); qmap1, qmap2 fp32 [256] shared by all;
                smaller tensors: state1, state2 fp32 [n]; step is a Python int
Fine-tuning (estimator/terms/finetune.py): the states of the trainable tensors only, in their
dtype (LoRA adapters: fp32).
The temporaries of one step are estimator/replay/optimizer_step.py's.
"""

from __future__ import annotations

import functools
import math

from estimator.shapes import Shapes
from estimator.spec.dtypes import nbytes
from estimator.spec.model import ModelSpec
from estimator.terms.finetune import trainable_dtype, trainable_shapes
from estimator.terms.params import param_tensor_shapes

FP32_BYTES = 4
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes Optimizer2State(min_8bit_size=4096)
BNB_BLOCKSIZE = 256  # Optimizer2State.init_state: blocksize = 256
BNB_QMAP_LEN = 256  # functional.create_dynamic_map: 2**8 values


def optimizer_dtype(sh: Shapes) -> str:
    """The dtype of the optimizer's states and step: fp32 under master_weights, else the
    weight dtype."""
    return "fp32" if sh.master_weights else trainable_dtype(sh)


def state_terms(spec: ModelSpec, sh: Shapes) -> dict[str, int]:
    """``optimizer.<state>`` bytes (see the module docstring), of the trainable tensors
    (estimator/terms/finetune.py: all of them unless the run fine-tunes)."""
    if sh.finetune.kind != "full":
        return dict(_states(trainable_shapes(spec, sh), sh.optimizer, optimizer_dtype(sh)))
    return dict(_states(param_tensor_shapes(spec), sh.optimizer, optimizer_dtype(sh)))


@functools.lru_cache(maxsize=256)
def _states(shapes: tuple[tuple[int, ...], ...], opt: str, d: str) -> tuple[tuple[str, int], ...]:
    return states_of(shapes, opt, d)


def states_of(shapes: tuple[tuple[int, ...], ...], opt: str, d: str) -> tuple[tuple[str, int], ...]:
    """``optimizer.<state>`` bytes of an optimizer over tensors of ``shapes`` (a rank's
    shards under parallel=, estimator/terms/ranks.py)."""
    numels = [math.prod(s) for s in shapes]
    t: dict[str, int] = {}
    if opt in ("adam", "adamw"):
        t["exp_avg"] = t["exp_avg_sq"] = sum(nbytes(n, d) for n in numels)
        t["step"] = FP32_BYTES * len(shapes)
    elif opt == "sgd-momentum":
        t["momentum_buffer"] = sum(nbytes(n, d) for n in numels)
    elif opt == "adafactor":
        matrices = [s for s in shapes if len(s) > 1]
        t["row_var"] = sum(nbytes(math.prod(s[:-1]), d) for s in matrices)  # [.., r, 1]
        t["col_var"] = sum(nbytes(math.prod(s[:-2]) * s[-1], d) for s in matrices)  # [.., 1, c]
        t["variance"] = sum(nbytes(math.prod(s), d) for s in shapes if len(s) <= 1)
        t["step"] = FP32_BYTES * len(shapes)
    elif opt == "adamw-8bit":
        big = [n for n in numels if n >= BNB_MIN_8BIT_SIZE]
        small = sum(n for n in numels if n < BNB_MIN_8BIT_SIZE)
        t["state1"] = t["state2"] = sum(big) + FP32_BYTES * small
        if big:
            blocks = sum(-(-n // BNB_BLOCKSIZE) for n in big)
            t["absmax1"] = t["absmax2"] = FP32_BYTES * blocks
            t["qmap1"] = t["qmap2"] = FP32_BYTES * BNB_QMAP_LEN
    return tuple((f"optimizer.{k}", v) for k, v in t.items() if v)
