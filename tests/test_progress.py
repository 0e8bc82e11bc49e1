"""Progress bars: lively in a terminal, a few lines in a log file."""

import io
import sys

from crafter_exp.progress import LOG_INTERVAL_S, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _redraws(stream: io.StringIO, monkeypatch) -> int:
    monkeypatch.setattr(sys, "stderr", stream)
    with progress_bar(total=2000, desc="train") as bar:
        for _ in range(2000):
            bar.update(1)
            bar.last_print_t -= 1.0  # as if a second passed between steps
    return stream.getvalue().count("\r")


def test_a_log_file_gets_few_redraws_a_terminal_many(monkeypatch):
    log = _redraws(io.StringIO(), monkeypatch)
    terminal = _redraws(_Terminal(), monkeypatch)
    assert log <= 2000 / LOG_INTERVAL_S + 3
    assert terminal > 1000


def test_the_caller_can_still_disable_the_bar(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress_bar(range(10), disable=True):
        pass
    assert stream.getvalue() == ""
