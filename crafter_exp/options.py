"""`python -m crafter_exp.options [section] [overrides...]`: every setting of a config section with its value and
what it does, read from the schema's `metadata={"help": ...}` (crafter_exp/config.py).

The overrides are the command line's (`model=hf_local trainer=local_lora`), so the listing shows the schema of the
options chosen and the values they compose to. Without a section it lists the sections.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from crafter_exp.config import Config, compose_config
from crafter_exp.errors import UserError
from crafter_exp.paths import field_metadata, in_identity


def field_help(cls: type, name: str) -> str:
    """The help text of field `name`, as declared in `cls` or, for a field a subclass only re-defaults, its bases."""
    return str(field_metadata(cls, name, "help") or "")


def describe(obj: Any, prefix: str) -> list[str]:
    """One line per setting of dataclass `obj` (nested sections expanded): `key = value` then its help."""
    lines: list[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            lines.append(f"{key}:  {field_help(type(obj), f.name)}".rstrip())
            lines += describe(value, key)
            continue
        mark = "" if in_identity(type(obj), f.name) else "  [not part of the output's identity]"
        lines.append(f"{key} = {value!r}{mark}")
        text = field_help(type(obj), f.name)
        if text:
            lines.append(f"    {text}")
    return lines


def sections(cfg: Config) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]


def listing(section: str | None, overrides: list[str]) -> str:
    cfg = compose_config(overrides)
    names = sections(cfg)
    if section is None:
        return "sections (python -m crafter_exp.options <section> [overrides...]): " + ", ".join(names)
    if section not in names:
        raise UserError(f"unknown config section {section!r} (known: {', '.join(names)})")
    node = getattr(cfg, section)
    return "\n".join([f"{section}: {type(node).__name__}", *describe(node, section)])


def main(argv: list[str]) -> int:
    section = argv[0] if argv and "=" not in argv[0] else None
    overrides = argv[1:] if section else argv
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        text = listing(section, overrides)
    except (UserError, HydraException, OmegaConfBaseException) as exc:
        print(f"crafter-exp: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    try:
        print(text)
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
