"""aibridge.ids: real version-4 UUIDs (unique, never shared with a forked child) and
time-ordered version-7 ones."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from aibridge import ids
from aibridge.ids import new_uuid4


def test_is_a_version_4_rfc_4122_uuid() -> None:
    for _ in range(1000):
        u = new_uuid4()
        assert isinstance(u, uuid.UUID)
        assert u.version == 4
        assert u.variant == uuid.RFC_4122
        assert u.is_safe is uuid.SafeUUID.unknown
        # Round-trips and compares like any other UUID.
        assert uuid.UUID(str(u)) == u
        assert hash(uuid.UUID(bytes=u.bytes)) == hash(u)


def test_unique_across_refills() -> None:
    seen = {new_uuid4() for _ in range(10 * ids._BATCH + 7)}
    assert len(seen) == 10 * ids._BATCH + 7


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_reuse_parent_ids() -> None:
    new_uuid4()  # the parent now holds pre-made ids
    assert ids._pool
    pending = set(ids._pool)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_end)
            os.write(write_end, new_uuid4().bytes)
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        data = os.read(read_end, 16)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert len(data) == 16
    assert uuid.UUID(bytes=data).int not in pending


def test_uuid7_is_a_version_7_uuid_that_sorts_by_millisecond() -> None:
    from aibridge.ids import new_uuid7

    before = time.time_ns() // 1_000_000
    made = []
    for _ in range(3 * ids._BATCH):  # across refills
        made.append(new_uuid7())
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == len(made)
    for u in made:
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert uuid.UUID(str(u)) == u
        assert before <= u.int >> 80 <= after
    # Ids of different milliseconds sort by time.
    stamps = [u.int >> 80 for u in made]
    assert stamps == sorted(stamps)
    first = new_uuid7()
    deadline = time.monotonic() + 5
    while (later := new_uuid7()).int >> 80 == first.int >> 80:
        assert time.monotonic() < deadline
    assert later > first
