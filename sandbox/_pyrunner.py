"""In-process Python runner: what a forked child of the fork server does for a Python run.

Lives next to `_server.py` inside the sandbox (stdlib only). It makes the
forked, already warm interpreter behave like a fresh `python3 main.py`: fresh
`__main__`, argv, sys.path[0], std streams on fds 0/1/2, the interpreter's
exit-code rules, tracebacks without the server's frames, non-daemon threads
joined and atexit handlers run before exit. What differs from a fresh
interpreter: modules the server pre-imported are already in sys.modules, and
the str hash seed is shared by the runs of one worker.
"""

import os
import signal
import sys


def run_python(path, workdir):
    """Run a Python program in this forked interpreter as `python3 path` would; never returns."""
    import builtins
    import io
    import types

    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = [path]
    sys.path.insert(0, workdir)  # the server runs with -I: its sys.path has no script dir
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(
        io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8")
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8",
        errors="backslashreplace", line_buffering=True)
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    code = 0
    try:
        with open(path, "rb") as fh:
            source = fh.read()
        exec(compile(source, path, "exec"), main.__dict__)  # noqa: S102 - running it is the point
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:  # noqa: BLE001 - print like the interpreter does, minus this frame
        etype, value, tb = sys.exc_info()
        tb = tb.tb_next if tb is not None else None
        sys.excepthook(etype, value.with_traceback(tb), tb)
        code = 1
    code = _finalize(code)
    os._exit(code)


def _exit_code(exc):
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _finalize(code):
    """Join non-daemon threads, run atexit handlers, flush; mirrors interpreter shutdown."""
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit
        atexit._run_exitfuncs()
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:  # noqa: BLE001, S110 - the interpreter's shutdown ignores these too
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - e.g. BrokenPipeError: the reader is gone
            code = code or 120
    return code
