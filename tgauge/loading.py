"""MODEL arguments: a preset name, a spec file (JSON or YAML) or a Hugging Face config.json."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from estimator.spec import ModelSpec
from tgauge.app import UserError


def read_mapping(path: Path) -> dict[str, Any]:
    """A JSON or YAML file holding one mapping (bounded read, strict parser: unique keys, no
    YAML aliases); SpecError when unreadable."""
    from estimator.inputfile import read_mapping_file, short_repr

    data = read_mapping_file(path)
    if data is None:
        raise UserError(f"{path} is empty: it must hold a mapping of spec fields")
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of fields, not {type(data).__name__}")
    if "model_type" in data and not isinstance(data["model_type"], str):
        raise UserError(f"{path}: model_type={short_repr(data['model_type'])} must be a string")
    return data


def load_spec(model: str) -> ModelSpec:
    """Resolve MODEL: preset name first, then a file (HF config when it has model_type)."""
    from estimator.presets import PRESETS, get_preset

    if model.lower() in {name.lower() for name in PRESETS}:
        return get_preset(model)
    path = Path(model)
    if not path.exists():
        if path.suffix.lower() in (".json", ".yaml", ".yml") or "/" in model:
            raise UserError(f"no such file: {model}")
        close = difflib.get_close_matches(model.lower(), PRESETS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(
            f"MODEL={model!r} is neither a preset nor a file; {hint}"
            f"presets: {', '.join(sorted(PRESETS))}"
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{model} is a folder without config.json (give the file itself)")
        path = path / "config.json"
    data = read_mapping(path)
    if "model_type" in data:
        return ModelSpec.from_hf_config(data)
    return ModelSpec.model_validate(data)
