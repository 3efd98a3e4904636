"""The recurrent terms against the reference model measured on CPU: parameters and FLOPs
exact, saved activations exact per component, at fixed and seeded random configurations."""

from __future__ import annotations

import random
import warnings

import pytest

torch = pytest.importorskip("torch")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from estimator.spec.recurrent import CharCNN, RecurrentSpec  # noqa: E402
from estimator.terms.recurrent import (  # noqa: E402
    recurrent_forward_flops,
    recurrent_params,
    recurrent_saved_bytes,
)
from profiler.params import measure_params  # noqa: E402
from profiler.saved import measure_saved  # noqa: E402
from reference_model.recurrent import build_recurrent, recurrent_inputs  # noqa: E402

FIXED = [
    (
        RecurrentSpec(
            n_layers=2,
            hidden=32,
            proj_size=8,
            bidirectional="concat",
            vocab=50,
            d_embed=16,
            head_vocab=40,
        ),
        3,
        5,
    ),
    (
        RecurrentSpec(
            n_layers=2,
            hidden=32,
            bidirectional="separate",
            vocab=50,
            d_embed=16,
            char_cnn=CharCNN(max_chars=10, filters=((1, 4), (2, 8), (3, 4)), highway=2),
        ),
        2,
        6,
    ),
    (
        RecurrentSpec(
            kind="seq2seq", n_layers=2, hidden=24, vocab=50, tgt_vocab=30, head_vocab=30, d_embed=12
        ),
        4,
        7,
    ),
    (
        RecurrentSpec(
            cell="gru", n_layers=3, hidden=24, bidirectional="concat", vocab=50, d_embed=12
        ),
        1,
        9,
    ),
    (RecurrentSpec(cell="rnn", n_layers=2, hidden=20, vocab=50, d_embed=12), 8, 1),
]


def _random_cases(n: int, seed: int = 25) -> list[tuple[RecurrentSpec, int, int]]:
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        cell = rng.choice(["lstm", "lstm", "gru", "rnn"])
        hidden = rng.choice([8, 16, 24, 40])
        proj = rng.choice([0, hidden // 2]) if cell == "lstm" else 0
        kind = rng.choice(["lm", "lm", "lm", "seq2seq"])
        bidir = "none" if kind == "seq2seq" else rng.choice(["none", "concat", "separate"])
        char = None
        if kind == "lm" and rng.random() < 0.3:
            char = CharCNN(
                max_chars=rng.choice([7, 12]),
                char_dim=rng.choice([4, 8]),
                filters=((1, rng.choice([2, 4])), (3, rng.choice([4, 6]))),
                highway=rng.choice([0, 1, 2]),
            )
        spec = RecurrentSpec(
            cell=cell,
            kind=kind,
            n_layers=rng.choice([1, 2, 3]),
            hidden=hidden,
            proj_size=proj,
            bidirectional=bidir,
            vocab=rng.choice([17, 50]),
            d_embed=rng.choice([6, 12]),
            char_cnn=char,
            head_vocab=rng.choice([0, 23]) if kind == "lm" else 19,
            tgt_vocab=19 if kind == "seq2seq" else 0,
        )
        cases.append((spec, rng.choice([1, 2, 5, 8]), rng.choice([1, 3, 16, 40])))
    return cases


def _measure(spec: RecurrentSpec, b: int, t: int):
    torch.manual_seed(0)
    model = build_recurrent(spec)
    inputs = recurrent_inputs(spec, b, t)

    def fwd_bwd() -> None:
        model(*inputs).float().pow(2).mean().backward()

    with warnings.catch_warnings(), torch.backends.mkldnn.flags(enabled=False):
        warnings.simplefilter("ignore")  # "LSTM with projections is not supported with oneDNN"
        saved = measure_saved(model, fwd_bwd)
        model.zero_grad(set_to_none=True)
        with FlopCounterMode(display=False) as counter:
            model(*inputs)
    return model, saved, counter.get_total_flops()


_PARAM_SUFFIXES = (".weight_ih", ".weight_hh", ".bias", ".weight_hr")


def _by_module(predicted: dict[str, int], measured: dict[str, int]) -> dict[str, int]:
    """The predicted parameters summed per measured module (``rnn.weight_ih`` -> ``rnn``,
    ``char_cnn.highway`` -> ``char_cnn.highway.layers``)."""
    out: dict[str, int] = {}
    for name, n in predicted.items():
        module = next((name[: -len(x)] for x in _PARAM_SUFFIXES if name.endswith(x)), name)
        owner = next(m for m in measured if m == module or m.startswith(module + "."))
        out[owner] = out.get(owner, 0) + n
    return out


def _check(spec: RecurrentSpec, b: int, t: int) -> None:
    model, saved, flops = _measure(spec, b, t)
    measured_params = measure_params(model).terms
    assert _by_module(recurrent_params(spec).terms, measured_params) == measured_params
    assert flops == recurrent_forward_flops(spec, b, t).total
    measured = {k: v for k, v in saved.activations.terms.items() if k != "(outside)"}
    assert measured == recurrent_saved_bytes(spec, b, t).terms


@pytest.mark.parametrize("case", FIXED, ids=lambda c: f"{c[0].cell}-{c[0].kind}-b{c[1]}-t{c[2]}")
def test_fixed_cases_exact(case: tuple[RecurrentSpec, int, int]) -> None:
    _check(*case)


@pytest.mark.parametrize("index", range(24))
def test_seeded_random_cases_exact(index: int) -> None:
    _check(*_random_cases(24)[index])
