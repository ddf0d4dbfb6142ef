"""SIGINT / SIGTERM as an exception, so a stopped run can still be recorded as ``killed``.

Inside :func:`catch_interrupts` both signals raise :class:`Interrupted` in the main thread
(SIGTERM would otherwise end the process on the spot, with no results row and its MLflow run
left RUNNING). Inside ``deferred()`` — while a run is being recorded — a signal is held and
raised when the section ends, so a record is never cut in half.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The process received SIGINT or SIGTERM (``signum``)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        self.recorded = False  # set once the interrupted run has its row and MLflow end
        super().__init__(self.name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + self.signum


def as_interrupted(exc: KeyboardInterrupt) -> Interrupted:
    """A plain KeyboardInterrupt (raised before the handlers were in place) as SIGINT."""
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)


class _Catcher:
    def __init__(self) -> None:
        self.holding = 0
        self.pending: int | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.holding:
            self.pending = self.pending or signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold SIGINT/SIGTERM for the duration; raise the first one held at the end."""
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        if not self.holding and self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)


@contextlib.contextmanager
def catch_interrupts() -> Iterator[_Catcher]:
    """Install the handlers (main thread only; elsewhere a no-op) and restore the previous
    ones on exit."""
    catcher = _Catcher()
    if threading.current_thread() is not threading.main_thread():
        yield catcher
        return
    previous = {  # a signal the process was told to ignore (nohup, `&`) stays ignored
        s: signal.signal(s, catcher.handler)
        for s in SIGNALS
        if signal.getsignal(s) is not signal.SIG_IGN
    }
    try:
        yield catcher
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
