"""Stop signals of `aspo run` / `aspo experiment`: KeyboardInterrupt even when SIGINT arrived ignored."""

import os
import signal
import time

import pytest

from aspo.signals import deferred_signals, interrupt_on_signals


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.5)  # the handler runs at the next bytecode boundary; never reached when it raises


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stop_signals_raise_keyboard_interrupt_even_when_sigint_started_ignored(signum, code):
    before = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}  # as under `nohup cmd &`
    try:
        with pytest.raises(KeyboardInterrupt), interrupt_on_signals() as received:
            _deliver(signum)
            pytest.fail("the signal was ignored")
        assert received.signum == signum and received.exit_code() == code
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the previous handlers are back
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_second_signal_does_not_cut_a_clean_stop_short():
    with interrupt_on_signals() as received:
        with deferred_signals():
            _deliver(signal.SIGINT)
            _deliver(signal.SIGTERM)
        assert received.signum is None and received.exit_code() == 130
