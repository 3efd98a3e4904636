"""One entry point per workload kind: a training step, a forward (prefill), decode steps.

Each measurement runs in its own pass (saved tensors, FLOPs, live memory, time), so that no
instrument's bookkeeping disturbs another's. ``inputs`` is a tensor (``model(x)``), a tuple
(``model(*inputs)``) or a dict (``model(**inputs)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from profiler.kv import cache_nbytes
from profiler.params import grad_bytes, measure_params, optimizer_bytes, param_bytes
from profiler.results import DecodeProfile, ForwardProfile, Measured, Timing, TrainProfile

LossFn = Callable[[Any], Any]


def call_model(model: Any, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def loss_of(out: Any, loss_fn: LossFn | None = None) -> Any:
    """``loss_fn(out)``; else ``out.loss`` (HF with labels); else the sum of the output tensor."""
    from profiler.flops import primary_tensor

    if loss_fn is not None:
        return loss_fn(out)
    loss = getattr(out, "loss", None)
    return loss if loss is not None else primary_tensor(out).sum()


def autocast_region(device: str, dtype: Any = None) -> Any:
    """``torch.autocast(device type, dtype)`` around a forward and its loss (autocast's
    recommended scope: backward runs outside it, on the ops autocast chose in forward);
    a no-op context when ``dtype`` is None."""
    import contextlib

    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def model_device(model: Any) -> str:
    first = next(iter(model.parameters()), None)
    return str(first.device) if first is not None else "cpu"


def profile_train_step(
    model: Any,
    inputs: Any,
    optimizer: Any,
    *,
    loss_fn: LossFn | None = None,
    warmup: int = 1,
    repeats: int = 3,
    fvcore: bool = True,
    autocast: Any = None,
) -> TrainProfile:
    """Measure one training step (forward, loss, backward, optimizer.step; None: no step).

    ``autocast``: a torch dtype (torch.bfloat16, torch.float16): forward and loss run under
    torch.autocast(device, autocast), backward and the step outside it. No GradScaler is run
    (fp16 on CUDA trains with one: its scale and found-inf tensors are a few bytes).

    A first, untracked step creates the optimizer state; the live-memory step then starts from
    weights + optimizer state + inputs (gradients set to None) as its baseline. Gradients and
    optimizer bytes are read after that step.
    """
    from profiler.flops import count_flops, fvcore_flops
    from profiler.saved import measure_saved
    from profiler.timing import time_fn

    device = model_device(model)

    def forward_loss() -> Any:
        with autocast_region(device, autocast):
            return loss_of(call_model(model, inputs), loss_fn)

    def fwd_bwd() -> None:
        forward_loss().backward()

    def step() -> None:
        fwd_bwd()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)

    n_params, weights = measure_params(model), param_bytes(model)
    saved = measure_saved(model, fwd_bwd)
    model.zero_grad(set_to_none=True)
    flops = count_flops(model, fwd_bwd)
    model.zero_grad(set_to_none=True)
    step()  # creates the optimizer state
    live_peak, cuda = _tracked_train_step(model, inputs, optimizer, loss_fn, device, autocast)
    gradients, optimizer_state = grad_bytes(model), optimizer_bytes(optimizer)
    model.zero_grad(set_to_none=True)
    return TrainProfile(
        device=device,
        n_params=n_params,
        weights=weights,
        gradients=gradients,
        optimizer=optimizer_state,
        saved=saved,
        flops=flops,
        fvcore=_fvcore(fvcore_flops, model, inputs, fvcore),
        live_peak=live_peak,
        cuda=cuda,
        time=time_fn(step, device, warmup=warmup, repeats=repeats),
    )


def _tracked_train_step(
    model: Any,
    inputs: Any,
    optimizer: Any,
    loss_fn: LossFn | None,
    device: str,
    autocast: Any = None,
) -> tuple[Any, Any]:
    from profiler.live import CudaPhaseMemory, LiveMemoryTracker

    live, cuda = LiveMemoryTracker(), CudaPhaseMemory(device)
    states = [] if optimizer is None else [dict(s) for s in optimizer.state.values()]
    track_before_step(live, model, inputs, states)

    def phase(name: str) -> None:
        live.set_phase(name)
        cuda.set_phase(name)

    with live:
        train_step(model, inputs, optimizer, loss_fn, phase, device, autocast)
    return live.peak, cuda.result()


def track_before_step(live: Any, model: Any, inputs: Any, states: Any) -> None:
    """Count on ``live`` (a LiveMemoryTracker) what exists before a training step: weights,
    buffers, the gradients already there, the optimizer ``states`` and the inputs."""
    live.track_existing(list(model.parameters()), "weights")
    live.track_existing(quant_state_tensors(model), "weights")  # issue 20: QLoRA's base
    # the model's buffers exist before the step as the weights do (inference_tracker counts
    # them with the weights); a forward that only indexes one never returns its storage
    live.track_existing(list(model.buffers()), "buffers")
    live.track_existing([p.grad for p in model.parameters() if p.grad is not None], "gradients")
    live.track_existing(states, "optimizer")
    live.track_existing(inputs, "inputs")


def train_step(
    model: Any,
    inputs: Any,
    optimizer: Any,
    loss_fn: LossFn | None,
    phase: Callable[[str], None],
    device: str = "cpu",
    autocast: Any = None,
) -> None:
    """One training step (inside the caller's tracking mode), ``phase(name)`` told as it moves
    on: forward, forward_end (the loss), backward, optimizer_step (None: no step)."""
    with autocast_region(device, autocast):
        phase("forward")
        out = call_model(model, inputs)
        phase("forward_end")
        loss = loss_of(out, loss_fn)
        del out
    phase("backward")
    loss.backward()
    del loss
    if optimizer is not None:
        phase("optimizer_step")
        optimizer.step()


def quant_state_tensors(model: Any) -> list[Any]:
    """bitsandbytes' quant state of every 4-bit parameter (issue 20): absmax, code, offset
    and the nested state's absmax and code (bitsandbytes/functional.py QuantState), tensors
    held by the weight (``Params4bit.quant_state``) and so live all step, but neither
    parameters nor buffers."""
    out = []
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        if qs is None:
            continue
        out += [qs.absmax, qs.code, qs.offset]
        if qs.state2 is not None:
            out += [qs.state2.absmax, qs.state2.code]
    return [t for t in out if t is not None]


def inference_tracker(model: Any, inputs: Any) -> Any:
    """A LiveMemoryTracker whose baseline is the weights and buffers (category ``weights``)
    and ``inputs``: the starting point of every inference measurement."""
    from profiler.live import LiveMemoryTracker

    live = LiveMemoryTracker()
    live.track_existing([*model.parameters(), *model.buffers()], "weights")
    live.track_existing(inputs, "inputs")
    return live


def profile_forward(
    model: Any, inputs: Any, *, warmup: int = 1, repeats: int = 3, fvcore: bool = True
) -> ForwardProfile:
    """Measure one forward pass without autograd (inference / prefill)."""
    import torch

    from profiler.flops import count_flops, fvcore_flops
    from profiler.live import CudaPhaseMemory
    from profiler.timing import time_fn

    def forward() -> None:
        with torch.no_grad():
            call_model(model, inputs)

    device = model_device(model)
    live, cuda = inference_tracker(model, inputs), CudaPhaseMemory(device)
    with live:
        live.set_phase("forward")
        cuda.set_phase("forward")
        forward()
    return ForwardProfile(
        device=device,
        n_params=measure_params(model),
        weights=param_bytes(model),
        flops=count_flops(model, forward),
        fvcore=_fvcore(fvcore_flops, model, inputs, fvcore),
        live_peak=live.peak,
        cuda=cuda.result(),
        time=time_fn(forward, device, warmup=warmup, repeats=repeats),
    )


def _fvcore(fvcore_flops: Callable[..., Any], model: Any, inputs: Any, enabled: bool) -> Any:
    from profiler.results import FvcoreCount

    if not enabled:
        return FvcoreCount(flops=Measured.missing("fvcore disabled by the caller"))
    if model_device(model).startswith("meta"):
        return FvcoreCount(flops=Measured.missing("fvcore traces with real tensors, not meta"))
    return fvcore_flops(model, inputs)


def profile_decode(
    step_fn: Callable[[int], Any],
    n_steps: int,
    cache_bytes_fn: Callable[[], int],
    *,
    device: str = "cpu",
    prefill_fn: Callable[[], Any] | None = None,
    model: Any = None,
    inputs: Any = None,
) -> DecodeProfile:
    """Cache bytes after the prefill (if given) and after every step; per-step wall time.

    With ``model``: first a tracked pass (prefill, then the steps) under a LiveMemoryTracker
    from a baseline of the model's parameters + buffers (``weights``) and ``inputs``; its
    peak and phase (``prefill`` / ``decode``) go to ``live_peak``. ``prefill_fn`` must reset
    the cache, since the measured pass runs again after it."""
    import torch

    from profiler.timing import _cpu_time, _cuda_time

    kind = torch.device(device).type
    live_peak = None
    if model is not None:
        live_peak = _tracked_decode(model, inputs, step_fn, n_steps, prefill_fn)
    sizes: list[int] = []
    if prefill_fn is not None:
        prefill_fn()
        sizes.append(int(cache_bytes_fn()))
    times = []
    for i in range(n_steps):
        if kind == "meta":
            step_fn(i)
        else:
            clock = _cuda_time if kind == "cuda" else _cpu_time
            times.append(clock(lambda i=i: step_fn(i)))
        sizes.append(int(cache_bytes_fn()))
    return DecodeProfile(
        device=device,
        cache_bytes=sizes,
        step_time=_step_timing(times, kind),
        live_peak=live_peak,
    )


def _tracked_decode(
    model: Any,
    inputs: Any,
    step_fn: Callable[[int], Any],
    n_steps: int,
    prefill_fn: Callable[[], Any] | None,
) -> Any:
    live = inference_tracker(model, inputs)
    with live:
        if prefill_fn is not None:
            live.set_phase("prefill")
            prefill_fn()
        live.set_phase("decode")
        for i in range(n_steps):
            step_fn(i)
    return live.peak


def _step_timing(times: list[float], kind: str) -> Measured[Timing]:
    import statistics

    if not times:
        return Measured.missing("meta device: no kernels run" if kind == "meta" else "no steps")
    return Measured.of(
        Timing(
            median_s=statistics.median(times),
            min_s=min(times),
            max_s=max(times),
            repeats=len(times),
            warmup=0,
            clock="cuda_events" if kind == "cuda" else "perf_counter",
        )
    )


class HFDecoder:
    """Greedy decode of a Hugging Face causal or seq2seq LM: ``prefill()``, ``step(i)``,
    ``cache_bytes()``.

    ``input_ids`` is the prompt; a seq2seq model also takes ``encoder_input_ids`` (the source),
    encoded once by the prefill and passed to every step as ``encoder_outputs``. Pass its
    methods to ``profile_decode(decoder.step, n, decoder.cache_bytes,
    prefill_fn=decoder.prefill)``.
    """

    def __init__(self, model: Any, input_ids: Any, encoder_input_ids: Any = None) -> None:
        import inspect

        self.model, self.input_ids = model, input_ids
        self.encoder_input_ids = encoder_input_ids
        self.past_key_values: Any = None
        self.encoder_outputs: Any = None
        self.next_ids: Any = None
        # transformers 5.x names the cache argument and output `cache` (and deprecates
        # `past_key_values`, with a FutureWarning); earlier versions know only the old name
        forward = inspect.signature(model.forward).parameters
        self._cache_name = "cache" if "cache" in forward else "past_key_values"

    def _run(self, input_ids: Any) -> None:
        import torch

        kwargs = {self._cache_name: self.past_key_values, "use_cache": True}
        if self.encoder_input_ids is None:
            kwargs["input_ids"] = input_ids
        else:
            kwargs["decoder_input_ids"] = input_ids
            if self.encoder_outputs is None:
                kwargs["input_ids"] = self.encoder_input_ids
            else:
                kwargs["encoder_outputs"] = self.encoder_outputs
        with torch.no_grad():
            out = self.model(**kwargs)
        self.past_key_values = getattr(out, self._cache_name)
        if self.encoder_input_ids is not None and self.encoder_outputs is None:
            from transformers.modeling_outputs import BaseModelOutput

            self.encoder_outputs = BaseModelOutput(last_hidden_state=out.encoder_last_hidden_state)
        self.next_ids = out.logits[:, -1:].argmax(-1)  # [b, 1]

    def prefill(self) -> None:
        self.past_key_values = self.encoder_outputs = None
        self._run(self.input_ids)

    def step(self, _: int) -> None:
        self._run(self.next_ids)

    def cache_bytes(self) -> int:
        return cache_nbytes(self.past_key_values)


class HFGenerate:
    """transformers' own ``model.generate`` (greedy, ``min_new_tokens = max_new_tokens``, so
    every sequence runs all ``n_new`` steps), measured as it runs: the live peak with its phase
    (``prefill``: the first forward and the selection of the first token; ``decode``: from the
    second forward on) and the KV cache after the prefill and after each step (read by a
    forward hook from the model's output cache, transformers 5.x ``cache``)."""

    def __init__(self, model: Any, input_ids: Any, n_new: int, **generate_kwargs: Any) -> None:
        self.model, self.input_ids, self.n_new = model, input_ids, n_new
        self.kwargs = generate_kwargs
        self.cache_sizes: list[int] = []
        self.live_peak: Any = None

    def run(self) -> Any:
        """One tracked ``generate()``; -> its output ids (the live peak in ``live_peak``)."""
        import torch

        from profiler.kv import cache_nbytes

        live = inference_tracker(self.model, [self.input_ids])
        sizes: list[int] = []

        def before(_module: Any, _args: Any, _kwargs: Any) -> None:
            live.set_phase("prefill" if not sizes else "decode")

        def after(_module: Any, _args: Any, _kwargs: Any, out: Any) -> None:
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            sizes.append(cache_nbytes(cache))

        hooks = [
            self.model.register_forward_pre_hook(before, with_kwargs=True),
            self.model.register_forward_hook(after, with_kwargs=True),
        ]
        try:
            with live, torch.no_grad():
                out = self.model.generate(
                    self.input_ids,
                    max_new_tokens=self.n_new,
                    min_new_tokens=self.n_new,
                    do_sample=False,
                    **self.kwargs,
                )
        finally:
            for hook in hooks:
                hook.remove()
        self.cache_sizes, self.live_peak = sizes, live.peak
        return out
