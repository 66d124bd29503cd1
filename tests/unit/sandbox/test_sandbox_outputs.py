"""Capped pipe reading keeps the first bytes, drains the rest, and reports overflow once."""

import asyncio
import os

from sandbox.outputs import CappedReader, PipeWriter


def test_capped_reader_keeps_prefix_and_drains_everything():
    async def scenario():
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        overflows = []
        reader = CappedReader(loop, r, 1000, lambda: overflows.append(1))
        payload = bytes(range(256)) * 1024           # 256 KiB: 4x a pipe buffer
        await PipeWriter(loop, w, payload).feed()      # completes only if the reader drains
        assert await reader.wait_closed(5)
        data = reader.data()
        reader.close()
        return data, reader.truncated, reader.total, overflows

    data, truncated, total, overflows = asyncio.run(scenario())
    assert data == (bytes(range(256)) * 4)[:1000] and truncated and total == 256 * 1024
    assert overflows == [1]


def test_writer_stops_quietly_when_reader_goes_away():
    async def scenario():
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        task = loop.create_task(PipeWriter(loop, w, b"x" * (1 << 20)).feed())
        await asyncio.sleep(0.05)
        os.close(r)                                    # EPIPE for the writer
        await asyncio.wait_for(task, 5)
        return task.exception()

    assert asyncio.run(scenario()) is None


def test_writer_closed_even_if_cancelled_before_it_started():
    async def scenario():
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        feeder = PipeWriter(loop, w, b"data")
        task = loop.create_task(feeder.feed())
        task.cancel()                                  # never entered feed()
        await asyncio.gather(task, return_exceptions=True)
        feeder.close()
        feeder.close()                                 # idempotent
        eof = os.read(r, 10)                           # write end closed: EOF, not a hang
        os.close(r)
        return eof

    assert asyncio.run(scenario()) == b""
