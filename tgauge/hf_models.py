"""The real Hugging Face model of a config.json: the class its ``architectures`` names, with
random init (never the hub), the workload's attention kernel and dropout, and the inputs its
task needs (ids, decoder ids, pixels, labels for the loss the model computes itself).

torch and transformers are imported inside the functions. Errors from a config or workload the
class cannot run raise UserError (one line in the CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from estimator.spec import Workload
from tgauge.app import UserError

#: Workload.dtype -> the name of the torch dtype the model is built in
_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

#: Workload.attention_impl -> transformers' attn_implementation
ATTN_IMPLEMENTATION = {"eager": "eager", "fused": "sdpa"}

#: config fields holding a dropout probability that the workload's ``dropout`` sets (not
#: layerdrop, nor the classifier / summary heads' own dropout)
DROPOUT_FIELDS = (
    "resid_pdrop", "embd_pdrop", "attn_pdrop",  # gpt2
    "hidden_dropout_prob", "attention_probs_dropout_prob",  # bert, vit
    "dropout_rate",  # t5
    "dropout", "attention_dropout", "activation_dropout",  # bart, llama, mistral
)  # fmt: skip

#: config.json keys that give a mixture of experts' routed experts (mixtral, qwen*_moe,
#: deepseek_v3)
EXPERT_COUNTS = ("num_local_experts", "num_experts", "n_routed_experts")

#: the task of a class, from the end of its name (first match wins)
TASKS = (
    ("ForCausalLM", "causal-lm"),
    ("LMHeadModel", "causal-lm"),
    ("ForMaskedLM", "masked-lm"),
    ("ForConditionalGeneration", "seq2seq-lm"),
    ("ForImageClassification", "image-classification"),
    ("ForSequenceClassification", "sequence-classification"),
    ("Model", "base"),
)
GENERATING = ("causal-lm", "seq2seq-lm")


@dataclass
class HFModel:
    """A built model, its task and the config it was built from."""

    model: Any
    config: Any  # transformers.PretrainedConfig
    architecture: str
    task: str


def task_of(architecture: str) -> str:
    return next((task for suffix, task in TASKS if architecture.endswith(suffix)), "base")


def _architecture(config: dict[str, Any], transformers: Any, cfg: Any) -> str:
    """The class ``architectures`` names; without one, the causal LM of the model type, else
    its base model (what AutoModel builds)."""
    names = config.get("architectures") or []
    if names:
        if not hasattr(transformers, names[0]):
            raise UserError(
                f"architectures={names!r}: transformers {transformers.__version__} has no "
                f"class {names[0]!r}"
            )
        return names[0]
    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModel):
        mapping = auto._model_mapping
        if type(cfg) in mapping:
            return mapping[type(cfg)].__name__
    raise UserError(f"model_type={config.get('model_type')!r} has no model class")


def _torch_dtype(workload: Workload) -> Any:
    import torch

    name = workload.dtype
    if name not in _TORCH_DTYPES:
        raise UserError(f"--dtype={name!r} cannot be profiled; use fp32, fp16 or bf16")
    return getattr(torch, _TORCH_DTYPES[name])


def build_hf_model(config: dict[str, Any], workload: Workload, device: str) -> HFModel:
    """The class ``architectures`` names, random init on ``device`` in the workload's dtype."""
    import torch
    import transformers

    # this process only builds and measures: transformers' advice on the config (token ids
    # outside a small vocabulary, an unset loss_type) is noise in the output
    transformers.logging.set_verbosity_error()
    attn = ATTN_IMPLEMENTATION[workload.attention_impl]
    try:  # any failure here comes from the user's config: say so in one line
        cfg = transformers.AutoConfig.for_model(**config, attn_implementation=attn)
        if any(config.get(key) for key in EXPERT_COUNTS):  # issue 22: a mixture of experts
            # runs the workload's experts code (integrations/moe.py); a dense class refuses
            # any (PreTrainedModel._grouped_mm_can_dispatch)
            cfg._experts_implementation = workload.experts_impl
        for name in DROPOUT_FIELDS:
            if hasattr(cfg, name):
                setattr(cfg, name, workload.dropout)
        architecture = _architecture(config, transformers, cfg)
        with torch.device(device):
            model = getattr(transformers, architecture)(cfg)
    except UserError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split()).split(". Should contain")[0] or type(exc).__name__
        raise UserError(
            f"transformers {transformers.__version__} cannot build "
            f"model_type={config.get('model_type')!r} from this config: {text[:200]}"
        ) from None
    model = model.to(dtype=_torch_dtype(workload))
    return HFModel(model, cfg, architecture, task_of(architecture))


def hf_inputs(built: HFModel, workload: Workload, device: str) -> dict[str, Any]:
    """Forward kwargs of a training step or a prefill: b sequences of s tokens (seq2seq: s
    source and target_len or s decoder tokens; images: pixel_values [b, c, H, W]); in
    training, the labels from which the model computes its own loss."""
    import torch

    cfg, task = built.config, built.task
    b, s = workload.batch_size, workload.seq_len
    gen = torch.Generator().manual_seed(0)
    train = workload.mode == "train"

    def ids(length: int) -> Any:
        return torch.randint(0, cfg.vocab_size, (b, length), generator=gen).to(device)

    if hasattr(cfg, "image_size") and hasattr(cfg, "patch_size"):
        size = (b, cfg.num_channels, cfg.image_size, cfg.image_size)
        dtype = next(built.model.parameters()).dtype
        inputs: dict[str, Any] = {
            "pixel_values": torch.randn(size, generator=gen).to(device, dtype)
        }
    else:
        inputs = {"input_ids": ids(s)}
    if task == "seq2seq-lm":
        targets = ids(workload.target_len or s)
        # training: the model shifts the labels right behind decoder_start_token_id itself
        inputs["labels" if train else "decoder_input_ids"] = targets
    elif train and task in ("causal-lm", "masked-lm"):
        inputs["labels"] = inputs["input_ids"].clone()  # causal: shifted inside the model
    elif train and task.endswith("classification"):
        inputs["labels"] = torch.randint(0, cfg.num_labels, (b,), generator=gen).to(device)
    if train and task in GENERATING and workload.use_cache is not None:
        inputs["use_cache"] = workload.use_cache  # else the model's default (config.use_cache)
    return inputs


def stand_in_loss(out: Any) -> Any:
    """A base model computes no loss: train it on reference_model.train.objective's stand-in,
    the mean square of its pooled (else last hidden) output, so backward covers every layer."""
    pooled = getattr(out, "pooler_output", None)
    hidden = pooled if pooled is not None else out.last_hidden_state
    return hidden.float().pow(2).mean()


def check_mode(built: HFModel, workload: Workload) -> None:
    """Decode needs a class that generates (a causal or seq2seq LM)."""
    if workload.mode == "decode" and built.task not in GENERATING:
        raise UserError(
            f"--mode decode needs a generating class; {built.architecture} ({built.task}) "
            "has no decoder cache: use --mode train or prefill"
        )
