"""Result types: a Breakdown of named leaf terms, and the Estimate that gathers them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field

Unit = Literal["params", "bytes", "flops"]


class Breakdown(BaseModel):
    """Named leaf terms of one quantity, exact integers; the total is derived, never stored.

    Term names are module paths of the reference model with the layer index removed
    (``decoder.layers.self_attn.q_proj``), optionally prefixed by a category
    (``forward.``, ``backward.``, ``activations.``); see docs/glossary.md.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: Unit
    terms: dict[str, int]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        return sum(self.terms.values())

    def group(self, prefix: str) -> int:
        """Sum of the terms named ``prefix`` or starting with ``prefix + '.'``."""
        return sum(v for k, v in self.terms.items() if k == prefix or k.startswith(prefix + "."))

    def subset(self, prefix: str) -> Breakdown:
        """The terms under ``prefix``, with the prefix stripped."""
        cut = len(prefix) + 1
        return Breakdown(
            unit=self.unit,
            terms={k[cut:]: v for k, v in self.terms.items() if k.startswith(prefix + ".")},
        )
