"""What the program says: one `crafter_exp` logger tree (`logging.getLogger(__name__)` in every module).

The entrypoint calls `configure()` once, so the CLI's output looks as it did when stages printed: information on
stdout as the bare message, warnings and errors on stderr as `crafter-exp: warning: ...`. A library user who never
calls it gets the standard `logging` behaviour (their own handlers; warnings only, by default). Progress bars are
tqdm's (crafter_exp/progress.py), not log records.
"""

from __future__ import annotations

import logging
import sys

ROOT = "crafter_exp"


class ConsoleHandler(logging.Handler):
    """INFO and below to stdout as the message alone; WARNING and above to stderr with a `crafter-exp: <level>:`
    prefix. The streams are looked up per record (not bound once) so that a redirected `sys.stdout` (pytest's
    capsys, `contextlib.redirect_stdout`) receives the output."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                stream = sys.stderr
                message = f"crafter-exp: {record.levelname.lower()}: {message}"
            else:
                stream = sys.stdout
            stream.write(message + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break the program (logging's own convention)
            self.handleError(record)


def configure(level: int = logging.INFO, propagate: bool = False) -> logging.Logger:
    """Send the `crafter_exp` loggers to the console (idempotent: a second call replaces the handler).

    `propagate=False` under Hydra, whose own root handler would print every line a second time in its log format;
    tests keep propagation on so that pytest's `caplog` sees the records too.
    """
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(ConsoleHandler())
    logger.setLevel(level)
    logger.propagate = propagate
    return logger
