"""Hardware presets: YAML files in this folder, composed and loaded into a `HardwareSpec`.

A preset may name one or more `base` presets; their resolved dictionaries are deep-merged in order
and the preset's own keys are merged on top (a PIM system = a memory preset + accelerator settings).
`--set dotted.key=value` overrides are applied last; values are parsed as YAML scalars.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pimrec.errors import PimrecError
from pimsim.spec import HardwareSpec

PRESET_DIR = Path(__file__).resolve().parent
_SECTIONS = ("dram", "host", "bank_pim", "rank_nmp", "xbar")


def list_presets() -> list[str]:
    """Names of the built-in presets, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name_or_path: str | Path, *, search_dir: Path | None = None) -> Path:
    """The file of a preset given by built-in name or by path; a clear error when there is none."""
    text = str(name_or_path)
    candidates = []
    if text.endswith((".yaml", ".yml")) or "/" in text:
        candidates.append(Path(text))
    else:
        if search_dir is not None:
            candidates.append(search_dir / f"{text}.yaml")
        candidates.append(PRESET_DIR / f"{text}.yaml")
    for path in candidates:
        if path.is_file():
            return path
    raise PimrecError(
        "no such preset or file",
        file=text,
        expected=f"a file path or one of: {', '.join(list_presets())}",
    )


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Safe-load a YAML file whose top level must be a mapping."""
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise PimrecError(f"cannot read file: {exc.strerror}", file=path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise PimrecError(f"invalid YAML{where}: {problem}", file=path) from None
    if not isinstance(data, dict):
        raise PimrecError(
            "top level must be a mapping of keys", file=path, expected="'name:', 'dram:', ... keys"
        )
    return data


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `top` merged into `base`, recursing into nested dicts."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_preset_dict(name_or_path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The preset's dictionary with its bases merged in (no `base` key left)."""
    search_dir = _chain[-1].parent if _chain else None
    path = preset_path(name_or_path, search_dir=search_dir).resolve()
    if path in _chain:
        names = " -> ".join(p.stem for p in (*_chain, path))
        raise PimrecError(f"preset bases form a cycle: {names}", file=_chain[0], field="base")
    data = read_yaml_mapping(path)
    bases = data.pop("base", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise PimrecError("must be a preset name or a list of names", file=path, field="base")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = deep_merge(merged, resolve_preset_dict(base, (*_chain, path)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `dotted.key=value`; the value is a YAML scalar (4 -> int, 0.5 -> float, open -> str)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise PimrecError(
            "override must look like section.key=value",
            file="--set",
            field=text,
            expected="e.g. dram.channels=4",
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise PimrecError("value is not a YAML scalar", file="--set", field=key) from None
    if isinstance(value, dict | list) or value is None:
        raise PimrecError("value must be a single number or word", file="--set", field=key)
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `data` with every `--set` override applied; each key must already exist."""
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = out
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or not isinstance(node.get(part), dict):
                where = ".".join(parts[: depth + 1])
                raise PimrecError(
                    f"preset '{data.get('name')}' has no section '{where}'",
                    file="--set",
                    field=".".join(parts),
                    expected=f"a section of: {', '.join(k for k in out if isinstance(out[k], dict))}",
                )
            node = node[part]
        node[parts[-1]] = value
    return out


def _error_from_validation(exc: ValidationError, file: str | Path) -> PimrecError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    msg = err["msg"].removeprefix("Value error, ")
    if msg.startswith("[") and "]" in msg:  # model validators name their field as "[field] ..."
        field, _, msg = msg[1:].partition("] ")
        loc.append(field)
    expected = None
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
        expected = None
        msg = f"{msg}, got {err['input']!r}"
    return PimrecError(msg, file=file, field=".".join(loc) or None, expected=expected)


def load_preset(name_or_path: str | Path, overrides: list[str] | None = None) -> HardwareSpec:
    """Resolve, override and validate a preset into a frozen `HardwareSpec`."""
    path = preset_path(name_or_path)
    data = resolve_preset_dict(path)
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        return HardwareSpec.model_validate(data)
    except ValidationError as exc:
        error = _error_from_validation(exc, path)
        for text in overrides or []:
            key = text.partition("=")[0].strip()
            if error.field and (error.field == key or error.field.startswith(key + ".")):
                error = PimrecError(error.message, file=f"--set {text}", field=error.field)
        raise error from None


def spec_to_dict(spec: HardwareSpec) -> dict[str, Any]:
    """The resolved preset as plain data (None sections left out), for reports and `--json`."""
    return spec.model_dump(mode="json", exclude_none=True)
