"""SFT dataset export: examples rendered in SQL from the trace store (messages laid out by
`prompts.build_messages`), streamed to one writer per format; `validate` checks any JSONL."""

from crafter_exp.export.formats import JSONL_FORMATS
from crafter_exp.export.layout import Layout, conversation_layout, derive_layout, prompt_config
from crafter_exp.export.writer import ExportPlan, Written, write_dataset

__all__ = [
    "JSONL_FORMATS",
    "Layout",
    "conversation_layout",
    "derive_layout",
    "prompt_config",
    "ExportPlan",
    "Written",
    "write_dataset",
]
