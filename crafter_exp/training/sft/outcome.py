"""What a fine-tuning run returns, and how it is saved."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SFTOutcome:
    model: Any
    """The trained model (a PeftModel for adapters)."""
    tokenizer: Any
    kind: str
    """`full` or `adapter`."""
    base_model: str
    """What the adapter applies to (hub id, path, or `tiny`)."""
    untrained_model: Any = None
    """The tiny student's initial weights (None for pretrained bases: the base itself is the untrained model)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)


def save_outcome(outcome: SFTOutcome, folder: Path, merge_adapter: bool = False) -> dict[str, Any]:
    """Write weights (or adapter) + tokenizer into `folder`; returns manifest fields describing what was saved."""
    folder.mkdir(parents=True, exist_ok=True)
    outcome.model.save_pretrained(str(folder))
    outcome.tokenizer.save_pretrained(str(folder))
    info: dict[str, Any] = {"kind": outcome.kind, "base_model": outcome.base_model}
    if outcome.kind == "adapter":
        if outcome.untrained_model is not None:
            outcome.untrained_model.save_pretrained(str(folder / "base_model"))
            outcome.tokenizer.save_pretrained(str(folder / "base_model"))
            info["base_model"] = "base_model"  # relative to the checkpoint folder
        if merge_adapter:
            merged = outcome.model.merge_and_unload()
            merged.save_pretrained(str(folder / "merged"))
            outcome.tokenizer.save_pretrained(str(folder / "merged"))
            info["merged"] = "merged"
    return info
