"""Correct and wrong programs in both languages, stdin, output, concurrency."""

from __future__ import annotations

import hashlib

from sandbox.protocol import ExecutionLimits, ProcessStatus, RunRequest

CPP_SUM = "#include <iostream>\nint main(){long a,b; std::cin>>a>>b; std::cout<<a+b<<'\\n';}\n"


def test_python_echo_stdin(sbx):
    r = sbx.run(code="import sys\nprint(input()[::-1]); print(sys.stdin.read().split())",
                stdin=b"hello\nrest of it")
    assert r.run.status == ProcessStatus.ok and r.run.return_code == 0
    assert r.run.stdout == "olleh\n['rest', 'of', 'it']\n"
    r = sbx.run(code="import sys\nprint(sys.stdin.buffer.read())", stdin=b"\x00\xffraw")
    assert r.run.stdout == "b'\\x00\\xffraw'\n"


def test_python_exception_is_nonzero_exit_with_clean_traceback(sbx):
    r = sbx.run(code="x = 1\nraise ValueError('boom')\n")
    assert r.run.status == ProcessStatus.nonzero_exit and r.run.return_code == 1
    assert "ValueError: boom" in r.run.stderr and "main.py\", line 2" in r.run.stderr
    assert "server.py" not in r.run.stderr   # the fork server's frames are not shown


def test_python_exit_codes_and_syntax_error(sbx):
    assert sbx.run(code="import sys; sys.exit(3)").run.return_code == 3
    assert sbx.run(code="raise SystemExit('bad')").run.stderr == "bad\n"
    r = sbx.run(code="def f(:\n")
    assert r.run.status == ProcessStatus.nonzero_exit and "SyntaxError" in r.run.stderr


def test_python_threads_and_atexit_run_before_exit(sbx):
    code = ("import threading, atexit, time\natexit.register(lambda: print('bye'))\n"
            "t = threading.Thread(target=lambda: (time.sleep(0.05), print('thread')))\nt.start()\n")
    r = sbx.run(code=code)
    assert r.run.status == ProcessStatus.ok and r.run.stdout == "thread\nbye\n"


def test_runs_get_fresh_random_state(sbx):
    outs = {sbx.run(code="import random; print(random.random())").run.stdout for _ in range(4)}
    assert len(outs) == 4


def test_cpp_correct_wrong_and_cached(sbx):
    before = sbx.pool.stats()
    r1 = sbx.run(language="cpp", code=CPP_SUM, stdin=b"2 40")
    assert r1.compile.status == ProcessStatus.ok and r1.run.stdout == "42\n"
    r2 = sbx.run(language="cpp", code=CPP_SUM, stdin=b"-5 3")
    assert r2.run.stdout == "-2\n"
    after = sbx.pool.stats()
    assert after["compile_cache_hits"] == before["compile_cache_hits"] + 1
    assert after["compile_cache_misses"] == before["compile_cache_misses"] + 1


def test_cpp_compile_error_has_no_run(sbx):
    r = sbx.run(language="cpp", code="int main() { return undefined_name; }\n")
    assert r.compile.status == ProcessStatus.nonzero_exit and r.run is None
    assert "undefined_name" in r.compile.stderr


def test_cpp_crash_and_exit_code(sbx):
    r = sbx.run(language="cpp", code="int main(){ volatile int *p = nullptr; return *p; }")
    assert r.run.status == ProcessStatus.signaled and r.run.return_code == -11
    assert sbx.run(language="cpp", code="int main(){ return 7; }").run.return_code == 7


def test_large_stdin_is_fed_whole(sbx):
    data = bytes(range(256)) * 4096 + b"end"   # 1 MiB + 3: far past a pipe buffer
    r = sbx.run(code="import sys, hashlib\nprint(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
                stdin=data)
    assert r.run.stdout.strip() == hashlib.sha256(data).hexdigest()


def test_large_stdin_not_read_does_not_hang(sbx):
    r = sbx.run(code="print('ignored my input')", stdin=b"x" * (4 << 20))
    assert r.run.status == ProcessStatus.ok and r.run.stdout == "ignored my input\n"


def test_large_legitimate_output_comes_back_whole(sbx):
    r = sbx.run(code="import sys\nsys.stdout.write('y' * (5 << 20))",
                max_output_bytes=8 << 20)
    assert r.run.status == ProcessStatus.ok and not r.run.stdout_truncated
    assert len(r.run.stdout) == 5 << 20
    r = sbx.run(language="cpp", code="#include <cstdio>\nint main(){for(int i=0;i<(5<<20);i++)"
                "putchar('z');}", max_output_bytes=8 << 20)
    assert r.run.status == ProcessStatus.ok and len(r.run.stdout) == 5 << 20


def test_files_are_written_into_the_work_dir(sbx):
    req = RunRequest(language="python", code="print(open('data/in.txt').read())",
                     files={"data/in.txt": b"payload"})
    assert sbx.gather([req])[0].run.stdout == "payload\n"


def test_concurrent_runs_on_small_pool_all_answered(sbx):
    reqs = [RunRequest(language="python", code=f"import time; time.sleep(0.01); print({i} * 2)",
                       limits=ExecutionLimits(wall_timeout_s=30)) for i in range(24)]
    reqs += [RunRequest(language="cpp", code=CPP_SUM, stdin=f"{i} {i}".encode()) for i in range(6)]
    results = sbx.gather(reqs)
    assert [r.run.stdout for r in results[:24]] == [f"{i * 2}\n" for i in range(24)]
    assert [r.run.stdout for r in results[24:]] == [f"{2 * i}\n" for i in range(6)]


def test_big_input_files_after_a_tight_memory_run(sbx):
    """Limits are lifted between runs: the server receives big files whatever the last run had."""
    big = RunRequest(language="python", code="import os; print(os.path.getsize('big.bin'))",
                     files={"big.bin": b"\1" * (48 << 20)},
                     limits=ExecutionLimits(memory_mb=64, workdir_size_mb=128))
    for _ in range(2):
        assert sbx.run(code="print('tight')", memory_mb=32).run.stdout == "tight\n"
    results = sbx.gather([big, big])
    assert [r.run.stdout for r in results] == [f"{48 << 20}\n"] * 2


def test_threads_are_not_starved_of_address_space(sbx):
    py = ("import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) "
          "for i in range(32)]\n[t.start() for t in ts]; [t.join() for t in ts]\nprint(len(out))")
    assert sbx.run(code=py, memory_mb=128).run.stdout == "32\n"
    cpp = ("#include <thread>\n#include <vector>\n#include <cstdio>\n#include <atomic>\n"
           "int main(){ std::atomic<int> n{0}; std::vector<std::thread> ts;"
           " for(int i=0;i<16;i++) ts.emplace_back([&]{ n++; }); for(auto&t:ts) t.join();"
           " printf(\"%d\\n\", n.load()); }")
    r = sbx.run(language="cpp", code=cpp, memory_mb=128)
    assert r.run.stdout == "16\n", r


def test_deep_recursion_gets_a_big_stack(sbx):
    cpp = ("#include <cstdio>\nint depth(int n){ volatile char pad[64]; pad[n % 64] = 1;"
           " if (n == 0) return 0; int r = depth(n - 1); return r + pad[n % 64]; }\n"
           "int main(){ printf(\"%d\\n\", depth(1000000)); }")   # ~100 MB of stack: 8 MB crashes
    r = sbx.run(language="cpp", code=cpp, memory_mb=512)
    assert r.run.status == ProcessStatus.ok and r.run.stdout == "1000000\n", r


def test_no_file_descriptor_leak_in_the_service(sbx):
    import os

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    sbx.run(code="print(1)")
    before = fds()
    for _ in range(3):
        sbx.run(code="print(input())", stdin=b"x\n")
        sbx.run(code="while True: print('z' * 1000)", max_output_bytes=4096)
        sbx.run(code="import time; time.sleep(9)", wall_timeout_s=0.2)
        sbx.run(code="print('unread')", stdin=b"y" * (1 << 20))
    assert fds() == before


def test_cancelled_runs_do_not_leak_into_later_runs(sbx):
    """A caller that gives up (client disconnect) must not leave a stale report behind."""
    import asyncio
    import os

    fds = len(os.listdir("/proc/self/fd"))

    async def give_up_then_run():
        slow = [RunRequest(language="python", code="import time; time.sleep(20); print('late')",
                           limits=ExecutionLimits(wall_timeout_s=30)) for _ in range(3)]
        for req in slow:
            try:
                await asyncio.wait_for(sbx.pool.run(req), 0.3)
            except asyncio.TimeoutError:
                pass
        reqs = [RunRequest(language="python", code=f"print({i})") for i in range(6)]
        return await asyncio.gather(*(sbx.pool.run(r) for r in reqs))

    results = sbx.loop.run_until_complete(give_up_then_run())
    assert [r.run.stdout for r in results] == [f"{i}\n" for i in range(6)]
    sbx.settle()
    assert len(os.listdir("/proc/self/fd")) == fds
