"""Reading the user's input files safely: bounded size, regular files only, strict parsers.

Every file tgauge reads (spec files, Hugging Face configs, GPU files, sweep.json,
validation.jsonl) goes through ``read_text``: the path is checked with ``stat`` before it is
opened (a FIFO or a device such as /dev/zero is refused, never read), it is opened
non-blocking, and at most ``limit`` bytes are read. ``parse_json`` and ``parse_yaml`` reject
duplicate keys (the last one would silently win), YAML aliases (a "billion laughs" bomb
expands from a few hundred bytes) and nesting deep enough to exhaust the stack.
Errors are SpecError with the file named; values are shown through ``short_repr``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from estimator.spec.errors import SpecError

MiB = 2**20
MAX_CONFIG_BYTES = 16 * MiB  # spec files, HF configs, GPU files: a few KiB in practice
MAX_DATA_BYTES = 512 * MiB  # sweep.json, validation.jsonl
MAX_SHOWN_CHARS = 80  # a value quoted in a message is cut to this


def short_repr(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (a message never quotes a huge value)."""
    if isinstance(value, (list, dict, tuple, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value):,} items>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_text(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes; SpecError otherwise."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path} is not UTF-8 text (byte {exc.start})") from None


def read_bytes(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; SpecError otherwise (a folder,
    a FIFO or a device is refused, not read)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise SpecError(f"cannot read {path}: {kind} (give a file)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
            raise SpecError(f"cannot read {path}: not a regular file (give a file)")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, MiB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise SpecError(f"{path} is larger than {limit // MiB} MiB: not an input tgauge reads")
    return b"".join(chunks)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {short_repr(key)}")
        out[key] = value
    return out


def parse_json(text: str, where: str, kind: str = "JSON") -> Any:
    """JSON with unique keys; SpecError naming ``where`` (a file, or file:line)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise SpecError(f"{where} is not valid {kind}: nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError, duplicate key
        raise SpecError(f"{where} is not valid {kind}: {str(exc).splitlines()[0]}") from None


def _yaml_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader without aliases (bounded expansion) and with unique mapping keys."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(
                    f"YAML aliases (*name) are not accepted (line {mark.line + 1}): "
                    "write the value out"
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # an unhashable key: SafeLoader's own error follows
                if key in seen:
                    raise yaml.YAMLError(
                        f"duplicate key {short_repr(key)} (line {key_node.start_mark.line + 1})"
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def parse_yaml(text: str, where: str, kind: str = "YAML") -> Any:
    """YAML without aliases and with unique keys; SpecError naming ``where``."""
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise SpecError(f"{where} is not valid {kind}: nested too deeply") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{where} is not valid {kind}: {str(exc).splitlines()[0]}") from None


def read_mapping_file(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> Any:
    """The parsed content of a JSON file (YAML for .yaml / .yml): not yet checked for shape."""
    path = Path(path)
    text = read_text(path, limit)
    kind = path.suffix.lstrip(".") or "JSON"
    if path.suffix.lower() in (".yaml", ".yml"):
        return parse_yaml(text, str(path), kind)
    return parse_json(text, str(path), kind)
