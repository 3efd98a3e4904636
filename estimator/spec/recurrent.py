"""RecurrentSpec: the recurrent networks the Transformer replaced (RNN, LSTM, GRU; ELMo's
bidirectional LSTM language model with its character CNN), sized with the same glossary.

A recurrent stack is ``n_layers`` cells of ``hidden`` units per direction. Conventions follow
``torch.nn.LSTM`` / ``torch.nn.GRU`` / ``torch.nn.RNN`` (torch/nn/modules/rnn.py): gates per
cell (RNN 1, GRU 3, LSTM 4), ``weight_ih`` [gates * H, in], ``weight_hh`` [gates * H, h_out],
``bias_ih`` and ``bias_hh`` (two biases: ``bias="torch"``), and for an LSTM with
``proj_size`` P a ``weight_hr`` [P, H] (LSTMP, Sak et al. 2014), so that h_out = P.

Two ways to be bidirectional:

- ``concat``: torch's ``bidirectional=True``: the layers above the first read both
  directions' outputs (in = 2 * h_out);
- ``separate``: two independent stacks, one per direction (AllenNLP's ``ElmoLstm``: the
  backward stack never sees the forward one; the outputs are concatenated only at the top).

ELMo's cell (allennlp/modules/lstm_cell_with_projection.py, ``LstmCellWithProjection``) has
one bias (``state_linearity`` has a bias, ``input_linearity`` none): ``bias="single"``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from estimator.spec.errors import SpecError

Cell = Literal["rnn", "lstm", "gru"]
#: gates per cell: one weight block of H rows each in weight_ih / weight_hh
GATES: dict[str, int] = {"rnn": 1, "gru": 3, "lstm": 4}


class CharCNN(BaseModel):
    """ELMo's token input: characters embedded, 1-D convolutions of several widths, max over
    the characters, highway layers, a projection (allennlp/modules/elmo.py,
    ``_ElmoCharacterEncoder``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    char_vocab: int = Field(262, gt=0)  # 256 bytes + begin/end of word/sentence + padding
    char_dim: int = Field(16, gt=0)
    max_chars: int = Field(50, gt=0)
    #: (width, number of filters) per convolution
    filters: tuple[tuple[int, int], ...] = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256))
    highway: int = Field(2, ge=0)

    @property
    def n_filters(self) -> int:
        return sum(n for _, n in self.filters)

    @model_validator(mode="after")
    def _check(self) -> CharCNN:
        if any(w > self.max_chars or w < 1 or n < 1 for w, n in self.filters):
            raise ValueError(f"filters={self.filters}: widths 1..max_chars, counts >= 1")
        return self


class RecurrentSpec(BaseModel):
    """A recurrent language model (``kind="lm"``) or an encoder-decoder (``kind="seq2seq"``,
    Sutskever et al. 2014: the encoder's last states start the decoder)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "recurrent"
    kind: Literal["lm", "seq2seq"] = "lm"
    cell: Cell = "lstm"
    n_layers: int = Field(gt=0)
    hidden: int = Field(gt=0, description="H: units per cell (the LSTM's cell state)")
    proj_size: int = Field(0, ge=0, description="LSTMP projection P of h (0: none)")
    bidirectional: Literal["none", "concat", "separate"] = "none"
    bias: Literal["torch", "single", "none"] = "torch"
    vocab: int = Field(gt=0, description="input vocabulary (word embeddings), or the LM's")
    d_embed: int = Field(gt=0, description="the first layer's input width")
    char_cnn: CharCNN | None = None
    #: the output vocabulary of the softmax; 0: none (ELMo's published count leaves it out)
    head_vocab: int = Field(0, ge=0)
    #: seq2seq: the decoder's vocabulary (its embeddings; head_vocab is its softmax)
    tgt_vocab: int = Field(0, ge=0)
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> RecurrentSpec:
        if self.proj_size and self.cell != "lstm":
            raise ValueError(f"proj_size needs an LSTM (torch.nn.{self.cell.upper()} has none)")
        if self.proj_size >= self.hidden and self.proj_size:
            raise ValueError(f"proj_size={self.proj_size} must be below hidden={self.hidden}")
        if self.kind == "seq2seq" and (self.tgt_vocab == 0 or self.bidirectional != "none"):
            raise ValueError("seq2seq needs tgt_vocab and a unidirectional stack")
        return self

    @property
    def gates(self) -> int:
        return GATES[self.cell]

    @property
    def h_out(self) -> int:
        """Width of a cell's output h (the projection's when there is one)."""
        return self.proj_size or self.hidden

    @property
    def directions(self) -> int:
        return 1 if self.bidirectional == "none" else 2

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Term-name prefix of each stack: ``encoder.`` and ``decoder.`` for seq2seq."""
        return ("encoder.", "decoder.") if self.kind == "seq2seq" else ("",)

    @property
    def stacks(self) -> int:
        """Stacks of n_layers cells: 2 for seq2seq (encoder, decoder), else 1."""
        return 2 if self.kind == "seq2seq" else 1

    def layer_input(self, layer: int) -> int:
        """Input width of layer ``layer`` (0-based) in one direction."""
        if layer == 0:
            return self.d_embed
        return self.h_out * (2 if self.bidirectional == "concat" else 1)


MiB = 1 << 20

RECURRENT_PRESETS: dict[str, RecurrentSpec] = {
    # AllenNLP's "Original" ELMo (Peters et al. 2018): elmo_2x4096_512_2048cnn_2xhighway
    # options.json: char_cnn {embedding dim 16, filters [[1,32],[2,32],[3,64],[4,128],[5,256],
    # [6,512],[7,1024]], n_highway 2, n_characters 262, max_characters_per_token 50},
    # lstm {dim 4096, projection_dim 512, n_layers 2, cell_clip 3, proj_clip 3}; the
    # published 93.6M parameters leave out the softmax over the 793,471-word vocabulary.
    "elmo": RecurrentSpec(
        name="elmo",
        cell="lstm",
        n_layers=2,
        hidden=4096,
        proj_size=512,
        bidirectional="separate",
        bias="single",
        vocab=262,
        d_embed=512,
        char_cnn=CharCNN(
            filters=((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024)),
            highway=2,
        ),
        source="https://allennlp.s3.amazonaws.com/models/elmo/2x4096_512_2048cnn_2xhighway/"
        "elmo_2x4096_512_2048cnn_2xhighway_options.json; Peters et al. 2018 (93.6M)",
    ),
    # Sutskever, Vinyals and Le 2014, "Sequence to Sequence Learning with Neural Networks":
    # 4-layer LSTMs of 1000 cells, 1000-dim embeddings, 160,000 source and 80,000 target
    # words, a softmax over the 80,000; "384M parameters" (section 3.4).
    "lstm-seq2seq": RecurrentSpec(
        name="lstm-seq2seq",
        kind="seq2seq",
        cell="lstm",
        n_layers=4,
        hidden=1000,
        vocab=160_000,
        d_embed=1000,
        tgt_vocab=80_000,
        head_vocab=80_000,
        source="Sutskever et al. 2014, section 3.4: 4 layers x 1000 cells, 1000-dim "
        "embeddings, 160k/80k vocabularies, 384M parameters",
    ),
}


def get_recurrent_preset(name: str) -> RecurrentSpec:
    spec = RECURRENT_PRESETS.get(name.lower())
    if spec is None:
        raise SpecError(
            f"recurrent preset={name!r} is unknown; "
            f"recurrent presets: {', '.join(RECURRENT_PRESETS)}"
        )
    return spec
