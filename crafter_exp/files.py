"""Writing files so that nothing is ever half-written: write a temporary sibling, then rename it over the target."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` all at once (readers see the old file or the new one, never a partial one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | Path, obj: Any, indent: int = 1) -> Path:
    """`obj` as JSON (non-JSON values via str), written atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, default=str) + "\n")
