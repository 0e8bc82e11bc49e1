"""Which checkpoint an interrupted training resumes from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional


def last_complete_checkpoint(workdir: Path) -> Optional[str]:
    """The newest `checkpoint-N` in `workdir` that was saved whole, or None; newer partial ones are deleted.

    transformers writes a checkpoint's weights, optimizer, scheduler and RNG state, then `trainer_state.json`: a
    checkpoint whose trainer state is missing or cut short was interrupted while saving (Ctrl-C, a killed job)."""
    if not workdir.is_dir():
        return None
    found = [(int(p.name.split("-")[1]), p) for p in workdir.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
    return None
