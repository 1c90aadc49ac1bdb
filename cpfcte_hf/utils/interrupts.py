# Copyright 2026 The cpfcte_hf developers. Licensed under the Apache License, Version 2.0.
"""SIGINT and SIGTERM as one exception, so that a long job stops cleanly and its command says so in one line.

```python
>>> with stop_on_signals():
...     run_long_job()          # Ctrl-C, `kill`, `docker stop`, a timeout: raises Interrupted in the main thread
```

A command catches `Interrupted` (a `KeyboardInterrupt`), prints `str(error)` and exits with `error.exit_code`:
128 + the signal number, the shell's convention: 130 for SIGINT, 143 for SIGTERM. While the job cleans up
(`finally` blocks, stopping worker processes, removing temporary files), further signals are ignored so that a
second Ctrl-C cannot leave a half-cleaned output; SIGKILL still ends the process at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(KeyboardInterrupt):
    """The process received `signum` (SIGINT or SIGTERM); `exit_code` is 128 + `signum`."""

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(signum)
        self.signum = int(signum)
        self.detail = detail  # what the interrupted job leaves behind, e.g. "rerun to resume"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    def __str__(self) -> str:
        text = f"interrupted by {self.signal_name} (exit status {self.exit_code})"
        return f"{text}: {self.detail}" if self.detail else text


def interrupt_exit_code(error: BaseException) -> int:
    """Exit status for an interrupted command: `Interrupted.exit_code`, 130 for a plain KeyboardInterrupt."""
    return getattr(error, "exit_code", 128 + signal.SIGINT)


def as_interrupted(error: KeyboardInterrupt, detail: str = "") -> Interrupted:
    """`error` as an `Interrupted`: itself, or a plain KeyboardInterrupt (Python's own SIGINT handler) as SIGINT's."""
    if isinstance(error, Interrupted):
        return Interrupted(error.signum, error.detail or detail)
    return Interrupted(signal.SIGINT, detail)


def interrupting_signal(exit_status: int | None) -> int | None:
    """The signal (SIGINT or SIGTERM) of a command that ended with `exit_status` 130 or 143 (`Interrupted.exit_code`),
    else None: how a caller that ran the command tells "stopped by the user" from "failed"."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if exit_status == 128 + signum:
            return int(signum)
    return None


@contextmanager
def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """
    Inside the block, the first of `signals` raises `Interrupted` in the main thread; later ones are ignored until
    the block is left (the cleanup runs to its end). Outside the main thread (where Python cannot install signal
    handlers) the block runs unchanged. The previous handlers are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in signals}
    received: list[int] = []

    def handler(signum, frame):
        if received:  # already stopping: let the cleanup finish
            return
        received.append(signum)
        raise Interrupted(signum)

    for signum in signals:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


__all__ = ["Interrupted", "as_interrupted", "interrupt_exit_code", "interrupting_signal", "stop_on_signals"]
