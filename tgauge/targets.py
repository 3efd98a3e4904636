"""What `tgauge profile` and `tgauge validate --impl hf` measure: a ``Target`` (the model, its
forward inputs, optimizer, loss and decoder hooks) built from a MODEL argument. ``load_target``
picks the Hugging Face class of a config.json (``hf_target``, tgauge/hf_models.py) or our
reference model of a preset / spec file (``reference_target``, with its KV-cache decoder); the
optimizer is built as reference_model.train builds it (``make_optimizer``). torch, transformers
and the reference model are imported inside the functions.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from estimator.spec import Workload
from tgauge.app import UserError, require


@dataclass
class Target:
    """What to measure: a model, its forward inputs, optimizer, loss and decode hooks."""

    model: Any
    inputs: Any
    optimizer: Any = None
    loss_fn: Any = None
    decoder: Any = None  # an object with prefill(), step(i), cache_bytes()
    implementation: str = "reference"  # or "hf <transformers class>"


def refuse_quantized(workload: Workload, command: str) -> None:
    """UserError for int8 / int4 weights: the models tgauge builds hold fp32 / fp16 / bf16
    tensors and nothing quantizes them, so a measurement would be of bf16 weights under an
    int8 label (issue 23)."""
    if workload.dtype in ("int8", "int4"):
        raise UserError(
            f"--dtype {workload.dtype} cannot be measured: {command} builds fp32 / fp16 / bf16 "
            "weights and does not quantize them; `tgauge estimate --dtype "
            f"{workload.dtype}` predicts it, or measure --dtype bf16"
        )


def make_optimizer(model: Any, workload: Workload) -> Any:
    """The workload's optimizer, built as reference_model.train builds it (optimizer_impl, or
    torch's default on the device; on meta, on the target ``workload.device``)."""
    from reference_model.train import make_optimizer as build_optimizer

    meta = next(iter(model.parameters())).device.type == "meta"
    if meta and (
        workload.optimizer in ("adafactor", "adamw-8bit") or (workload.optimizer_impl == "fused")
    ):
        impl = f" --optimizer-impl {workload.optimizer_impl}" if workload.optimizer_impl else ""
        raise UserError(
            f"--optimizer {workload.optimizer}{impl} "
            "cannot step on meta tensors (fused kernels check the device, Adafactor reads "
            "norms with .item()): profile on cpu, or use `tgauge estimate`"
        )
    try:
        return build_optimizer(model, workload, lr=1e-4)
    except ImportError as exc:
        raise UserError(
            f"--optimizer {workload.optimizer} needs {exc.name}: pip install it"
        ) from None


def hf_target(config: dict[str, Any], workload: Workload, device: str) -> Target:
    """The Hugging Face model of ``config`` (tgauge/hf_models.py: the class ``architectures``
    names, random init, never downloads), its inputs, optimizer or decoder."""
    require("transformers", "tgauge profile CONFIG.json")
    import torch

    from profiler.run import HFDecoder
    from tgauge.hf_models import build_hf_model, check_mode, hf_inputs, stand_in_loss

    built = build_hf_model(config, workload, device)
    check_mode(built, workload)
    model = built.model
    if workload.finetune != "full":  # issue 20: peft's LoRA on the HF class
        model = _finetuned(model, config, workload)
    impl = f"hf {built.architecture}"
    if workload.mode == "train":
        model.train()
        target = Target(model=model, inputs=hf_inputs(built, workload, device), implementation=impl)
        target.optimizer = make_optimizer(model, workload)
        if built.task == "base":  # no loss of its own
            target.loss_fn = stand_in_loss
        return target
    model.eval()
    target = Target(model=model, inputs=hf_inputs(built, workload, device), implementation=impl)
    if workload.mode == "decode":
        # the prompt as estimator.shapes resolves it: seq2seq starts from 1 token
        seq2seq = built.task == "seq2seq-lm"
        p = workload.prompt_len or (1 if seq2seq else workload.seq_len)
        gen = torch.Generator().manual_seed(1)
        prompt = torch.randint(0, built.config.vocab_size, (workload.batch_size, p), generator=gen)
        source = target.inputs["input_ids"] if seq2seq else None
        target.decoder = HFDecoder(model, prompt.to(device), encoder_input_ids=source)
    return target


class _ReferenceDecoder:
    """prefill / step / cache_bytes over reference_model's KVCache."""

    def __init__(self, model: Any, spec: Any, workload: Workload, device: str) -> None:
        import torch

        from estimator.shapes import resolve
        from reference_model.cache import KVCache
        from reference_model.inputs import make_inputs

        self.model, self.spec = model, spec
        b, prompt = workload.batch_size, resolve(spec, workload).prompt
        self.source = None
        if spec.arch == "encoder-decoder":
            self.source = make_inputs(spec, workload, device=device)["input_ids"]
            self.prompt = torch.zeros(b, prompt, dtype=torch.long, device=device)  # start ids
        else:
            gen = torch.Generator().manual_seed(0)
            self.prompt = torch.randint(0, spec.vocab_size, (b, prompt), generator=gen).to(device)
        self.cache = KVCache(n_layers=spec.n_decoder_layers)
        self.next_ids: Any = None

    def prefill(self) -> None:
        import torch

        with torch.no_grad():
            logits = self.model.prefill(self.prompt, self.cache, encoder_input_ids=self.source)
        self.next_ids = logits[:, -1:].argmax(-1)  # [b, 1]

    def step(self, _: int) -> None:
        import torch

        with torch.no_grad():
            logits = self.model.decode_step(self.next_ids, self.cache)
        self.next_ids = logits[:, -1:].argmax(-1)

    def cache_bytes(self) -> int:
        return int(self.cache.nbytes())


def reference_target(
    model_arg: str, workload: Workload, device: str, impl: str | None = None
) -> Target:
    """Our reference model of a preset / spec file (or, with ``impl="reference"``, of a
    config.json's spec), with reference_model's own inputs."""
    from estimator.estimate import check_supported
    from tgauge.loading import load_spec

    spec = load_spec(model_arg, impl)
    check_supported(spec, workload)
    if device == "cpu":
        from tgauge.devices import available_bytes, check_host_memory

        check_host_memory([(spec, workload)], available_bytes("cpu"))
    try:
        from reference_model import build_model
        from reference_model.inputs import make_inputs
        from reference_model.train import objective
    except ImportError as exc:
        raise UserError(f"the reference model is not available: {exc}") from None
    model = build_model(spec, workload, device=device)
    target = Target(model=model, inputs=make_inputs(spec, workload, device=device))
    if workload.mode == "train":
        model.train()
        target.optimizer, target.loss_fn = make_optimizer(model, workload), objective
    else:
        model.eval()
        if workload.mode == "decode":
            target.decoder = _ReferenceDecoder(model, spec, workload, device)
    return target


def load_target(model_arg: str, workload: Workload, device: str, impl: str | None = None) -> Target:
    """A config.json with model_type -> Hugging Face (``impl="reference"``: our reference model
    of its spec); a preset with ``impl="hf"`` -> its twin's Hugging Face class
    (estimator/spec/hf_twins.py); anything else -> the reference model."""
    from tgauge.loading import cached_hub_config, is_hub_id, load_model, read_mapping
    from tgauge.user_model import is_python_model, python_target

    if is_python_model(model_arg):  # file.py:factory, your own nn.Module
        if impl is not None:
            raise UserError(f"--impl {impl} is for presets and config files, not {model_arg}")
        model, inputs, label = python_target(model_arg, workload, device)
        target = Target(model=model, inputs=inputs, implementation=label)
        if workload.mode == "train":
            model.train()
            target.optimizer = make_optimizer(model, workload)
        else:
            model.eval()
        return target
    if impl == "reference":
        return reference_target(model_arg, workload, device, impl)
    path = Path(model_arg)
    if path.is_dir():
        path = path / "config.json"
    elif not path.exists() and is_hub_id(model_arg):
        path = cached_hub_config(model_arg) or path
    if path.is_file() and path.suffix.lower() == ".json":
        data = read_mapping(path)
        if "model_type" in data:
            _check_hf_limits(data, workload)
            return hf_target(data, workload, device)
    if impl == "hf":  # a preset's twin (load_model refuses a spec file or no twin)
        spec, config = load_model(model_arg, impl)
        _check_hf_limits(config, workload)
        if device == "cpu":
            from tgauge.devices import available_bytes, check_host_memory

            check_host_memory([(spec, workload)], available_bytes("cpu"))
        return hf_target(config, workload, device)
    return reference_target(model_arg, workload, device)


def _check_hf_limits(config: dict[str, Any], workload: Workload) -> None:
    """The checks `estimate` makes (config values, max positions, decode on an encoder) for a
    config tgauge reads; a model_type or field combination it does not model is left to
    transformers."""
    from estimator.estimate import check_supported
    from estimator.spec import ModelSpec, UnsupportedError
    from estimator.spec.hf_config import READERS

    if config["model_type"] not in READERS:
        return
    try:
        spec = ModelSpec.from_hf_config(config)
    except UnsupportedError:
        return
    check_supported(spec, workload)


def _finetuned(model: Any, config: dict[str, Any], workload: Workload) -> Any:
    """peft's get_peft_model on ``model`` (tgauge/peft_lora.py), or freeze by pattern
    (``apply_freeze``); qlora on the 4-bit model transformers loads (``quantize_4bit``)."""
    from tgauge.peft_lora import apply_freeze, apply_lora, quantize_4bit

    family = config.get("model_type", "")
    if workload.finetune == "freeze":  # issue 20: requires_grad_(False) by glossary pattern
        return apply_freeze(model, family, workload)
    if workload.finetune == "qlora":  # issue 20: a 4-bit base (bitsandbytes), then LoRA
        model = quantize_4bit(model, workload)
    if workload.checkpointing == "full" and not workload.kbit_prep:  # issue 20c
        # transformers' own default (modeling_utils.py _activation_checkpointing_enable:
        # use_reentrant=False); kbit_prep's prepare_model_for_kbit_training enabled it already
        # (reentrant: peft passes gradient_checkpointing_kwargs={}, torch's default True)
        model.activation_checkpointing_enable()
    return apply_lora(model, family, workload, fused_qkv=family == "gpt2")
