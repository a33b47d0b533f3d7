"""The host's message parser: frames split across chunks or packed into one, handed to a
handler as they complete or queued for receive(), and the ways a stream ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sandbox import _wire


def frames(*messages: dict[str, Any]) -> bytes:
    return b"".join(_wire.encode(m) for m in messages)


async def test_frames_split_and_packed_any_way_arrive_whole_and_in_order() -> None:
    sent = [{"op": "step", "n": n, "text": "é" * n} for n in range(40)]
    data = frames(*sent)
    for size in (1, 3, 7, 64, len(data)):
        messages = _wire.Messages()
        for start in range(0, len(data), size):
            messages.feed(data[start:start + size])
        got = [await messages.receive() for _ in sent]
        assert got == sent, size


async def test_a_handler_gets_each_message_as_it_completes_and_drops_the_old_queue() -> None:
    messages = _wire.Messages()
    messages.feed(frames({"op": "old"}))  # queued: nobody handles it yet
    seen: list[dict[str, Any]] = []
    ended: list[BaseException] = []
    messages.take_handler(seen.append, ended.append)
    data = frames({"op": "a"}, {"op": "b"})
    messages.feed(data[:5])
    assert seen == []
    messages.feed(data[5:])
    assert seen == [{"op": "a"}, {"op": "b"}]  # the left-over 'old' one was dropped
    messages.release_handler()
    messages.feed(frames({"op": "c"}))
    assert await messages.receive() == {"op": "c"}
    assert seen == [{"op": "a"}, {"op": "b"}] and ended == []


async def test_the_end_of_the_stream_reaches_a_waiting_receive_and_a_handler() -> None:
    messages = _wire.Messages()
    waiting = asyncio.ensure_future(messages.receive())
    await asyncio.sleep(0)
    messages.feed(frames({"op": "x"})[:6])  # half a frame, then the end
    messages.end()
    with pytest.raises(asyncio.IncompleteReadError):
        await waiting
    ended: list[BaseException] = []
    messages.take_handler(lambda m: None, ended.append)  # taken after the end: told at once
    assert len(ended) == 1 and isinstance(ended[0], asyncio.IncompleteReadError)


@pytest.mark.parametrize(("data", "words"), [
    ((_wire.MAX_MESSAGE_BYTES + 1).to_bytes(4, "big"), "announced"),
    (b"\x00\x00\x00\x05hello", "malformed JSON"),
    (b"\x00\x00\x00\x02[]", "without an 'op'"),
])
async def test_malformed_data_ends_the_stream_with_a_wire_error(data: bytes, words: str) -> None:
    messages = _wire.Messages()
    ended: list[BaseException] = []
    seen: list[dict[str, Any]] = []
    messages.take_handler(seen.append, ended.append)
    messages.feed(frames({"op": "fine"}) + data + frames({"op": "never"}))
    assert seen == [{"op": "fine"}]
    assert len(ended) == 1 and isinstance(ended[0], _wire.WireError)
    assert words in str(ended[0])
    messages.feed(frames({"op": "after"}))  # nothing more is read
    assert seen == [{"op": "fine"}]
    messages.release_handler()
    with pytest.raises(_wire.WireError):
        await messages.receive()
