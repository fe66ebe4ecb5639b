"""The Batcher's own guarantees, under a mock clock: a caller's wait ends at its deadline
even when its frame never returns (no cancel scope per record: the sweeper ends it), and
records travel as the bytes they were encoded to once."""

from __future__ import annotations

import cbor2
import pytest
import trio
import trio.testing

from p2plog.client.batcher import SWEEP_S, Batcher, Outcome
from p2plog.client.errors import Ack, SubmitFailed
from p2plog.client.records import Record, id_text


def make_batcher(send: object) -> Batcher:
    return Batcher(
        send,  # type: ignore[arg-type]
        linger_s=0.001,
        max_records=100,
        max_bytes=1 << 20,
        max_inflight=4,
        queue_records=1000,
    )


async def test_wait_ends_at_the_deadline_when_the_frame_never_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def never(records: list[Record], datas: list[bytes], ack: str) -> list[Outcome]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    b = make_batcher(never)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.run)
        t0 = trio.current_time()
        with pytest.raises(SubmitFailed) as info:
            await b.submit_one({"id": "a", "msg": "m"}, "quorum", timeout_s=5.0)
        assert info.value.code == "timeout"
        assert 5.0 <= trio.current_time() - t0 <= 5.0 + SWEEP_S + 0.01
        nursery.cancel_scope.cancel()


async def test_records_travel_as_their_one_encoding(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[tuple[list[Record], list[bytes]]] = []

    async def ack_all(records: list[Record], datas: list[bytes], ack: str) -> list[Outcome]:
        sent.append((records, datas))
        return [Ack(id_text(r["id"]), k, 1, False) for k, r in enumerate(records)]

    b = make_batcher(ack_all)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.run)
        rec = {"id": bytes(range(16)), "msg": "m"}
        got = await b.submit_one(rec, "quorum", timeout_s=5.0)
        assert got == Ack("00010203-0405-0607-0809-0a0b0c0d0e0f", 0, 1, False)
        assert sent == [([rec], [cbor2.dumps(rec)])]
        nursery.cancel_scope.cancel()
