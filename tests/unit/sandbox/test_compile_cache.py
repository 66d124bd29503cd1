"""Compile cache: keys, LRU eviction, pinning, remembered failures."""

from sandbox.compile_cache import CompileCache, cache_key
from sandbox.protocol import ProcessResult, ProcessStatus

OK = ProcessResult(status=ProcessStatus.ok, return_code=0)
ERR = ProcessResult(status=ProcessStatus.nonzero_exit, return_code=1, stderr="error: x")


def test_key_depends_on_compiler_flags_and_source():
    k = cache_key("g++ 12", ("-O2",), "int main(){}")
    assert k == cache_key("g++ 12", ("-O2",), "int main(){}")
    assert len({k, cache_key("g++ 13", ("-O2",), "int main(){}"),
                cache_key("g++ 12", ("-O0",), "int main(){}"),
                cache_key("g++ 12", ("-O2",), "int main(){ }")}) == 4
    assert cache_key("a", ("b",), "c") != cache_key("a", (), "bc")   # no ambiguous joins


def test_lru_eviction_removes_files(tmp_path):
    c = CompileCache(tmp_path, capacity=2)
    for key in ("a", "b"):
        c.store(key, key.encode(), OK)
    assert c.lookup("a") == OK          # a is now most recent
    c.store("c", b"c", OK)
    assert c.lookup("b") is None and not c.path("b").exists()
    assert c.path("a").read_bytes() == b"a" and c.path("c").stat().st_mode & 0o777 == 0o755


def test_pinned_entries_survive_eviction_until_unpinned(tmp_path):
    c = CompileCache(tmp_path, capacity=1)
    c.store("a", b"a", OK)
    c.pin("a")
    c.store("b", b"b", OK)
    assert c.path("a").exists()          # in use by a run: kept for now
    c.unpin("a")
    assert not c.path("a").exists() and c.path("b").exists()


def test_failures_are_remembered_and_counted(tmp_path):
    c = CompileCache(tmp_path, capacity=4)
    assert c.lookup("k") is None
    c.store_failure("k", ERR)
    assert c.lookup("k") == ERR and (c.hits, c.misses) == (1, 1)


def test_existing_binaries_are_reused_after_restart(tmp_path):
    CompileCache(tmp_path, capacity=4).store("k", b"bin", OK)
    again = CompileCache(tmp_path, capacity=4)
    assert again.lookup("k").status == ProcessStatus.ok and len(again) == 1
