"""SIGINT / SIGTERM become one exception with the shell's exit status; a second signal waits for the cleanup."""

import os
import signal

import pytest

from cpfcte_hf.utils.interrupts import Interrupted, interrupt_exit_code, stop_on_signals


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_raises_interrupted_and_cleanup_is_not_cut_short(signum, code):
    before = signal.getsignal(signal.SIGTERM)
    cleaned = False
    with pytest.raises(Interrupted) as error:
        with stop_on_signals():
            try:
                os.kill(os.getpid(), signum)
                for _ in range(1000):  # the handler runs between bytecodes of the main thread
                    pass
            finally:
                os.kill(os.getpid(), signum)  # a second Ctrl-C during the cleanup is ignored
                cleaned = True
    assert cleaned
    assert error.value.exit_code == code == interrupt_exit_code(error.value)
    assert str(error.value) == f"interrupted by {signal.Signals(signum).name} (exit status {code})"
    error.value.detail = "rerun to resume."
    assert str(error.value).endswith("): rerun to resume.")
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
    assert interrupt_exit_code(KeyboardInterrupt()) == 130
