"""Progress bars that suit both a terminal and a log file.

tqdm redraws up to ten times a second; in a terminal that is one line, but under nohup, Slurm or a CI log each
redraw is a new chunk of text (a 300 s training run wrote ~2,000 of them). When stderr is not a terminal the bar
redraws every `LOG_INTERVAL_S` seconds instead, so a log keeps a readable trace of progress.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0
"""Seconds between redraws when stderr is a file or a pipe."""


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)` on stderr, redrawn every LOG_INTERVAL_S seconds when stderr is not a terminal."""
    if not _interactive():
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), LOG_INTERVAL_S)
        kwargs.setdefault("dynamic_ncols", False)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, **kwargs)


def _interactive() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False
