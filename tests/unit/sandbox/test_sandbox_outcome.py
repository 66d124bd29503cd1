"""Status rules: output kill beats timeout, memory beats time, exit codes and signals."""

import signal

from sandbox.outcome import to_process_result
from sandbox.protocol import ProcessStatus
from sandbox.worker import RawOutcome


def raw(report=None, stdout=b"", stderr=b"", out_trunc=False, killed=False, error=""):
    return RawOutcome(report, stdout, stderr, out_trunc, False, b"", error, killed)


def rep(**kw):
    base = {"exit_code": None, "signal": None, "elapsed_s": 0.5, "cpu_s": 0.1,
            "timed_out": False, "oom_kills": 0, "clean": True}
    return {**base, **kw}


def test_ok_and_nonzero_exit():
    r = to_process_result(raw(rep(exit_code=0), stdout=b"hi\n"), 10)
    assert r.status == ProcessStatus.ok and r.return_code == 0 and r.stdout == "hi\n"
    r = to_process_result(raw(rep(exit_code=2)), 10)
    assert r.status == ProcessStatus.nonzero_exit and r.return_code == 2


def test_signal_is_negative_return_code():
    r = to_process_result(raw(rep(signal=signal.SIGSEGV)), 10)
    assert r.status == ProcessStatus.signaled and r.return_code == -11 and "SIGSEGV" in r.message


def test_output_kill_is_truncation_not_timeout():
    report = rep(signal=signal.SIGKILL, cpu_s=20.0, killed_by_host=True)
    r = to_process_result(raw(report, out_trunc=True, killed=True), 10)
    assert r.status == ProcessStatus.signaled and r.stdout_truncated and not r.timed_out
    assert "max_output_bytes" in r.message


def test_program_that_exited_before_the_output_kill_keeps_its_status():
    r = to_process_result(raw(rep(exit_code=0), out_trunc=True, killed=True), 10)
    assert r.status == ProcessStatus.ok and r.stdout_truncated


def test_wall_and_cpu_timeouts():
    r = to_process_result(raw(rep(signal=signal.SIGKILL, timed_out=True)), 10)
    assert r.status == ProcessStatus.timeout and r.timed_out and "wall" in r.message
    r = to_process_result(raw(rep(signal=signal.SIGXCPU)), 1)
    assert r.status == ProcessStatus.timeout and "CPU" in r.message
    r = to_process_result(raw(rep(signal=signal.SIGKILL, cpu_s=2.0)), 1)   # hard RLIMIT_CPU
    assert r.status == ProcessStatus.timeout
    r = to_process_result(raw(rep(signal=signal.SIGKILL, cpu_s=0.2)), 1)   # someone else's kill
    assert r.status == ProcessStatus.signaled


def test_memory_from_cgroup_or_allocation_failure():
    r = to_process_result(raw(rep(signal=signal.SIGKILL, oom_kills=1, timed_out=True)), 10)
    assert r.status == ProcessStatus.memory_exceeded and r.memory_exceeded
    r = to_process_result(raw(rep(exit_code=1), stderr=b"Traceback...\nMemoryError\n"), 10)
    assert r.status == ProcessStatus.memory_exceeded
    r = to_process_result(raw(rep(signal=signal.SIGABRT), stderr=b"what():  std::bad_alloc\n"), 10)
    assert r.status == ProcessStatus.memory_exceeded
    # A successful program that merely prints the word is not a memory failure.
    r = to_process_result(raw(rep(exit_code=0), stderr=b"MemoryError\n"), 10)
    assert r.status == ProcessStatus.ok


def test_worker_failure_is_sandbox_error_keeping_output():
    r = to_process_result(raw(None, stdout=b"partial", error="worker w0g1 hung"), 10)
    assert r.status == ProcessStatus.sandbox_error and r.stdout == "partial" and "hung" in r.message


def test_invalid_utf8_output_is_replaced_not_raised():
    r = to_process_result(raw(rep(exit_code=0), stdout=b"\xff\xfeok"), 10)
    assert r.stdout.endswith("ok") and "\ufffd" in r.stdout
