"""MODEL arguments: a preset name, a spec file (JSON or YAML), a Hugging Face config.json, or
a Hub id (``org/name``) whose config.json is in the local Hugging Face cache (never downloaded).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from estimator.spec import ModelSpec
from tgauge.app import UserError


def read_mapping(path: Path) -> dict[str, Any]:
    """A JSON or YAML file holding one mapping (bounded read, strict parser: unique keys, no
    YAML aliases); SpecError when unreadable."""
    from estimator.spec.files import read_mapping_file, short_repr

    data = read_mapping_file(path)
    if data is None:
        raise UserError(f"{path} is empty: it must hold a mapping of spec fields")
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of fields, not {type(data).__name__}")
    if "model_type" in data and not isinstance(data["model_type"], str):
        raise UserError(f"{path}: model_type={short_repr(data['model_type'])} must be a string")
    return data


#: ``--impl``: which implementation of MODEL to predict (and, for validate / profile, run)
IMPLEMENTATIONS = ("reference", "hf")


def load_spec(model: str, impl: str | None = None) -> ModelSpec:
    """Resolve MODEL: preset name first, then a file (HF config when it has model_type).
    ``impl`` (--impl): None keeps what MODEL describes (a preset or spec file: our reference
    model; a config.json: its Hugging Face class); see ``load_model``."""
    return load_model(model, impl)[0]


def load_model(model: str, impl: str | None = None) -> tuple[ModelSpec, dict[str, Any] | None]:
    """The spec of MODEL under ``impl`` and, for the Hugging Face implementation, the
    config.json it was read from (a preset's: its twin, estimator/spec/hf_twins.py).

    ``impl="reference"``: our reference model of any MODEL; ``impl="hf"``: a preset with a
    twin or a config.json (UserError for a spec file or a preset without a twin)."""
    from estimator.spec.hf_twins import hf_twin_config, hf_twin_spec

    if impl not in (None, *IMPLEMENTATIONS):
        raise UserError(f"--impl={impl!r} is invalid: use {' or '.join(IMPLEMENTATIONS)}")
    if impl == "hf" and _is_preset(model):
        return hf_twin_spec(model), hf_twin_config(model)
    spec, config = _load(model)
    if impl == "reference" and spec.implementation != "reference":
        return spec.model_copy(update={"implementation": "reference"}), None
    if impl == "hf" and config is None:
        raise UserError(
            f"--impl hf needs a preset with a Hugging Face twin or a config.json; {model} is "
            "a tgauge spec file (our reference model)"
        )
    return spec, config


def _is_preset(model: str) -> bool:
    from estimator.spec.presets import PRESETS

    return model.lower() in {name.lower() for name in PRESETS}


def _load(model: str) -> tuple[ModelSpec, dict[str, Any] | None]:
    """The spec MODEL describes and, for a Hugging Face config.json, its dict."""
    from estimator.spec.presets import PRESETS, get_preset

    if _is_preset(model):
        return get_preset(model), None
    path = Path(model)
    if not path.exists() and is_hub_id(model):
        path = _cached_config(model)
    elif not path.exists():
        if path.suffix.lower() in _SPEC_SUFFIXES or "/" in model:
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
        if path.parent.parent.name == "snapshots":  # from the Hub cache: name it by its id
            data.setdefault("_name_or_path", model)
        return ModelSpec.from_hf_config(data), data
    return ModelSpec.model_validate(data), None


_SPEC_SUFFIXES = (".json", ".yaml", ".yml")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name, as the Hub spells repo ids
_SIZE = re.compile(r"(\d+(?:\.\d+)?)b(?![a-z])")  # "7b" in llama-2-7b-hf, "8b" in ...-3-8B


def is_hub_id(model: str) -> bool:
    """``org/name`` (not a spec file's name): looked up in the Hugging Face cache."""
    return bool(_HUB_ID.match(model)) and Path(model).suffix.lower() not in _SPEC_SUFFIXES


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache, resolved as huggingface_hub does (without importing it):
    HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub (default ~/.cache/huggingface/hub)."""
    env = os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(env[name]).expanduser()
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


def cached_hub_config(repo_id: str) -> Path | None:
    """config.json of Hub model ``repo_id`` in the local cache, or None.

    Layout: ``models--{org}--{name}/refs/main`` holds the revision of
    ``snapshots/{revision}/config.json``; without refs/main, the newest snapshot holding one.
    """
    root = hub_cache_dir()
    folder_name = "models--" + repo_id.replace("/", "--")
    folder = root / folder_name
    if not folder.is_dir() and root.is_dir():  # the Hub treats ids case-insensitively
        same = [p for p in root.iterdir() if p.name.lower() == folder_name.lower()]
        folder = same[0] if same else folder
    ref = folder / "refs" / "main"
    if ref.is_file():
        config = folder / "snapshots" / ref.read_text().strip() / "config.json"
        if config.is_file():
            return config
    snapshots = folder / "snapshots"
    found = list(snapshots.glob("*/config.json")) if snapshots.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def closest_preset(name: str) -> str | None:
    """The preset a Hub name most likely means (``meta-llama/Llama-2-7b-hf`` -> llama-2-7b):
    one of the same family (llama, gpt2, bert, ...), never of another size (13b vs 7b)."""
    from estimator.spec.presets import PRESETS

    key = name.rpartition("/")[2].lower()
    if key in _HUB_NAMES:
        return _HUB_NAMES[key]
    size = _SIZE.findall(key)
    candidates = [
        p
        for p in PRESETS
        if re.search(rf"(?<![a-z0-9]){_family(p)}(?![a-z])", key)
        and (not size or _SIZE.findall(p) in ([], size))
    ]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return close[0] if close else None


_HUB_NAMES = {"gpt2": "gpt2-small"}  # the Hub's name of a preset that fuzzy matching misses


def _family(preset: str) -> str:
    """'llama' of llama-2-7b, 'gpt2' of gpt2-small, 't5' of t5-base."""
    return re.match(r"[a-z]+\d*", preset).group()  # type: ignore[union-attr]


def _cached_config(repo_id: str) -> Path:
    """The cached config.json of ``repo_id``; UserError saying what to give instead."""
    config = cached_hub_config(repo_id)
    if config is not None:
        return config
    preset = closest_preset(repo_id)
    hint = f"use the preset {preset!r}, or " if preset else ""
    raise UserError(
        f"MODEL={repo_id!r} is neither a file nor a model in the local Hugging Face cache "
        f"({hub_cache_dir()}) and tgauge never downloads: {hint}give the path to its config.json"
    )
