"""Run uids: two live pools never share one; a released uid is reused."""

from sandbox.uids import UidAllocator


def test_two_allocators_never_share_a_uid(tmp_path):
    a, b = UidAllocator(70000, tmp_path), UidAllocator(70000, tmp_path)
    first = [a.claim() for _ in range(3)]
    second = [b.claim() for _ in range(3)]
    assert first == [70000, 70001, 70002] and second == [70003, 70004, 70005]
    a.close()
    assert b.claim() == 70000          # released by a: free again
    b.close()


def test_claims_of_one_allocator_are_distinct(tmp_path):
    a = UidAllocator(80000, tmp_path)
    assert len({a.claim() for _ in range(5)}) == 5 and a.held == list(range(80000, 80005))
    a.close()
