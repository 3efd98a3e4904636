"""transformers/activations.py's written-out activations as op programs: the forward replay
(``replay.ffn.act``) follows the Python evaluation order of each definition, and the saved
tensors (``saved.ffn.act``) are the ACT_SAVES count of estimator/spec/hf_keys.py, derived from
the same definitions. gelu_new's backward keeps its op-by-op rule (decoders.act_backward);
the other written-out ones use ``written_out_backward``.

A program is a tuple of ops (out, op, args) over [n, d_ff] tensors named by strings, ``x``
the input; op is "t" (a new tensor from its tensor args) — scalars are not written. An arg
is freed after its last use (Python's temporaries); x is freed when the module returns.
"""

from __future__ import annotations

from typing import Any

from estimator.rules.live import Live

Op = tuple[str, tuple[str, ...]]

#: the tensors each written-out ACT2CLS forward makes, in evaluation order (out, tensor args)
PROGRAMS: dict[str, tuple[Op, ...]] = {
    # NewGELUActivation / AccurateGELUActivation:
    # 0.5 * x * (1 + tanh(c * (x + 0.044715 * pow(x, 3))))
    "gelu_new": (("a", ("x",)), ("p", ("x",)), ("c", ("p",)), ("d", ("x", "c")),
                 ("e", ("d",)), ("g", ("e",)), ("h", ("g",)), ("y", ("a", "h"))),
    # GELUTanh(use_gelu_tanh_python): x * 0.5 * (1 + tanh(c * (x + 0.044715 * pow(x, 3))))
    "gelu_python_tanh": (("a", ("x",)), ("p", ("x",)), ("c", ("p",)), ("d", ("x", "c")),
                         ("e", ("d",)), ("g", ("e",)), ("h", ("g",)), ("y", ("a", "h"))),
    # FastGELUActivation: 0.5 * x * (1 + tanh(x * 0.7978845608 * (1 + 0.044715 * x * x)))
    "gelu_fast": (("a", ("x",)), ("b", ("x",)), ("c", ("x",)), ("d", ("c", "x")),
                  ("e", ("d",)), ("f", ("b", "e")), ("g", ("f",)), ("h", ("g",)),
                  ("y", ("a", "h"))),
    # GELUActivation(use_gelu_python): x * 0.5 * (1 + erf(x / sqrt(2)))
    "gelu_python": (("a", ("x",)), ("b", ("x",)), ("e", ("b",)), ("h", ("e",)),
                    ("y", ("a", "h"))),
    # QuickGELUActivation: x * sigmoid(1.702 * x)
    "quick_gelu": (("a", ("x",)), ("g", ("a",)), ("y", ("x", "g"))),
}  # fmt: skip
PROGRAMS["gelu_accurate"] = PROGRAMS["gelu_new"]


def program_forward(live: Live, inner: int, program: tuple[Op, ...]) -> None:
    """A no-grad forward of ``program`` on up's output (``inner`` bytes each tensor): each
    op takes its output, an arg goes after its last use, x when the module returns; -> the
    output y live, x dropped."""
    last = {arg: i for i, (_, args) in enumerate(program) for arg in args}
    for i, (_, args) in enumerate(program):
        live.take(inner)
        gone = [a for a in dict.fromkeys(args) if a != "x" and last[a] == i]
        live.drop(len(gone) * inner)
    live.drop(inner)  # x


def written_out_backward(bw: Any, name: str, inner: Any, d_out: Any, saves: int) -> Any:
    """Backward of a written-out activation without an op-by-op rule: the last mul's two
    grads (+2 F) replace d_out, the saved tensors go as their nodes run (all of them by the
    time x's grads meet), the grads of x (one per use) summed into one. -> x's grad."""
    live, F = bw.live, inner
    live.take(F, F)  # the last mul's grads of its two factors
    live.drop(d_out)
    bw.free(name, (saves - 1) * F)  # every saved tensor but x
    live.take(F)  # the chain's grad of x
    live.drop(F)
    live.take(F)  # x's grads summed
    live.drop(2 * F)
    bw.free(name)  # x
    return F


def act_programmed(activation_fn: str | None) -> tuple[Op, ...] | None:
    return PROGRAMS.get(activation_fn or "")


def gelu_python_backward(bw: Any, name: str, inner: Any, d_out: Any) -> Any:
    """GELUActivation(use_gelu_python): x * 0.5 * (1 + erf(x / sqrt(2))) backward, node by
    node in autograd's order: MulBackward0 (a grad per factor; x * 0.5 and 1 + erf freed),
    AddBackward0 passes its grad, ErfBackward0 (derivatives.yaml: 2 / sqrt(pi) *
    exp(-(b.pow(2))) * grad, one expression: its temporaries live to its end; b freed),
    DivBackward0 (/
    sqrt(2)), MulBackward0 (* 0.5), x's two grads summed. -> x's grad."""
    live, F = bw.live, inner
    live.take(F, F)  # grad * (1 + erf), grad * x * 0.5
    live.drop(d_out)
    bw.free(name, 2 * F)  # x * 0.5, 1 + erf
    # one C++ expression: its temporaries live until it ends
    live.take(F, F, F, F, F)  # b.pow(2), its negation, exp, * 2 / sqrt(pi), * grad
    live.drop(4 * F)
    live.drop(F)  # the grad of 1 + erf
    bw.free(name)  # b = x / sqrt(2), saved by erf
    live.take(F)  # DivBackward0
    live.drop(F)
    live.take(F)  # MulBackward0: grad * 0.5
    live.drop(F)
    live.take(F)  # x's two grads summed
    live.drop(2 * F)
    return F


#: written-out activations with a node-by-node backward (others: ``written_out_backward``)
BACKWARDS = {"gelu_python": gelu_python_backward}
