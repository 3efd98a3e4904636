"""Parameters, gradients, optimizer state, saved activations and live memory: exact bytes."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from profiler.live import LiveMemoryTracker, nvml_used_bytes
from profiler.naming import term_name
from profiler.params import grad_bytes, measure_params, optimizer_bytes, param_bytes
from profiler.run import profile_train_step
from profiler.saved import measure_saved

FP32 = 4  # bytes per float32 element


class ReluMatmul(nn.Module):
    """y = relu(x @ W): autograd saves x (for dW) and the relu output."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_in, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.weight)


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([ReluMatmul(8, 16), ReluMatmul(16, 16)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def test_term_name_drops_numeric_components():
    assert term_name("decoder.layers.3.ffn.up") == "decoder.layers.ffn.up"
    assert term_name("model.layers.7.mlp") == "model.layers.mlp"
    assert term_name("") == "(root)"


def test_saved_tensors_are_x_and_relu_output_exactly():
    layer = ReluMatmul(8, 16)
    x = torch.randn(4, 8)
    saved = measure_saved(layer, lambda: layer(x).sum().backward())
    # x [4, 8] and relu(x @ W) [4, 16]; W is a parameter and excluded
    assert saved.activations.terms == {"(root)": (4 * 8 + 4 * 16) * FP32}
    assert saved.recompute.total == 0


def test_saved_tensors_first_saver_wins_and_layers_are_summed():
    model = Stack()
    x = torch.randn(4, 8)
    saved = measure_saved(model, lambda: model(x).sum().backward())
    # layer 0 saves x [4,8] and its output [4,16]; layer 1 saves that same output (already
    # counted by layer 0) and its own output [4,16]; both layers share the term "layers"
    assert saved.activations.terms == {"layers": (4 * 8 + 4 * 16 + 4 * 16) * FP32}


def test_saved_view_counts_the_whole_storage():
    layer = ReluMatmul(4, 16)
    base = torch.randn(4, 8)
    saved = measure_saved(layer, lambda: layer(base[:, :4]).sum().backward())
    # the [4, 4] view keeps the whole [4, 8] storage alive
    assert saved.activations.terms == {"(root)": (4 * 8 + 4 * 16) * FP32}


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.lm_head = nn.Linear(4, 10, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.embed(ids))


def test_tied_weight_counts_once_at_first_owner():
    n = measure_params(Tied())
    assert n.terms == {"embed": 10 * 4}
    assert param_bytes(Tied()).terms == {"embed": 10 * 4 * FP32}


def test_grads_and_adamw_state_bytes_match_hand_count():
    model = nn.Linear(3, 2)  # weight [2, 3], bias [2]: 8 params
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    assert grad_bytes(model).total == 8 * FP32
    # exp_avg and exp_avg_sq per parameter element, one float32 scalar `step` per parameter
    assert optimizer_bytes(opt).terms == {"step": 2 * FP32, "exp_avg": 32, "exp_avg_sq": 32}


def test_live_tracker_peak_of_a_hand_made_allocation_sequence():
    weights = torch.empty(250)  # 1000 bytes, existing before: the baseline
    tracker = LiveMemoryTracker()
    tracker.track_existing([weights], "weights")
    with tracker:
        tracker.set_phase("forward")
        a = torch.empty(1000)  # +4000 -> 5000
        b = torch.empty(500, dtype=torch.float64)  # +4000 -> 9000
        a.add_(1.0)  # in place: no new storage
        view = b.view(50, 10)  # a view: no new storage
        del a  # -4000 -> 5000
        tracker.set_phase("backward")
        c = torch.empty(2000)  # +8000 -> 13000, the peak
        del c  # -> 5000
        d = torch.empty(100)  # +400 -> 5400
    assert tracker.peak.peak_bytes == 1000 + 4000 + 8000
    assert tracker.peak.phase == "backward"
    assert tracker.peak.baseline_bytes == 1000
    assert tracker.peak.by_category == {
        "weights": 1000,
        "allocated_in.forward": 4000,
        "allocated_in.backward": 8000,
    }
    assert tracker.current == 1000 + 4000 + 400
    del b, view, d


def test_train_step_live_peak_is_consistent_with_its_parts():
    torch.manual_seed(0)
    model = Stack()
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(4, 8)
    prof = profile_train_step(model, x, opt, repeats=1, fvcore=False)
    peak = prof.live_peak
    assert sum(peak.by_category.values()) == peak.peak_bytes
    # baseline: weights + AdamW state (exp_avg, exp_avg_sq, step) + the input
    expected = 3 * prof.weights.total + prof.optimizer.terms["step"] + x.numel() * FP32
    assert peak.baseline_bytes == expected
    assert peak.phase in ("forward", "forward_end", "backward", "optimizer_step")
    assert prof.gradients.total == prof.weights.total


def test_cuda_and_nvml_are_not_measured_on_cpu():
    model = Stack()
    prof = profile_train_step(model, torch.randn(4, 8), None, repeats=1, fvcore=False)
    for field in (prof.cuda.max_allocated_bytes, prof.cuda.max_reserved_bytes):
        assert field.value is None and field.note.startswith("not measured")
    if not torch.cuda.is_available():
        nvml = nvml_used_bytes(0)
        assert nvml.value is None and nvml.note.startswith("not measured")


@pytest.mark.parametrize("package", ["profiler", "tgauge.commands.profile", "tgauge.targets"])
def test_import_does_not_load_torch(package):
    code = f"import sys, {package}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_checkpoint_keeps_only_its_input_and_unseen_recompute_is_flagged():
    from torch.utils.checkpoint import checkpoint

    class Checkpointed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = ReluMatmul(8, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return checkpoint(self.block, x, use_reentrant=False)

    model = Checkpointed()
    x = torch.randn(4, 8)
    saved = measure_saved(model, lambda: model(x).sum().backward())
    # forward keeps only the checkpoint's input x [4, 8], saved outside the block
    assert saved.activations.terms == {"(root)": 4 * 8 * FP32}
    # the recompute's saves go through checkpoint's own hooks: flagged, not reported as zero
    assert saved.recompute.terms == {}
    assert saved.notes and "not measured" in saved.notes[0]
