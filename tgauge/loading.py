"""MODEL arguments: a preset name, a spec file (JSON or YAML) or a Hugging Face config.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from estimator.spec import ModelSpec
from tgauge.app import UserError


def read_mapping(path: Path) -> dict[str, Any]:
    """A JSON or YAML file holding one mapping; UserError when unreadable."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise UserError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of fields, not {type(data).__name__}")
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
        raise UserError(
            f"MODEL={model!r} is neither a preset nor a file; presets: {', '.join(sorted(PRESETS))}"
        )
    if path.is_dir():
        path = path / "config.json"
    data = read_mapping(path)
    if "model_type" in data:
        return ModelSpec.from_hf_config(data)
    return ModelSpec.model_validate(data)
