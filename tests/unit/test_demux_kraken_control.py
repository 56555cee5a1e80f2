"""Kraken v1 control objects (subscription and system status acks, heartbeats) are counted as
control by the scanner when they are surely valid JSON and the normalizer would count them so;
every other object goes to the per-line path. Both paths give the same result."""

from __future__ import annotations

import pytest

from fluxforge.demux import demux_segment
from fluxforge.segments import encode_envelope
from tests.unit.demux_compare import assert_same, both_paths

SEG = "segment_20231114T22_00001.ndjson"
BASE_TS = 1_699_999_200_000_000_000

TAKEN = [
    b'{"event":"heartbeat"}',
    b'{"channelID":1665,"channelName":"trade","event":"subscriptionStatus","pair":"WAVES/EUR",'
    b'"status":"subscribed","subscription":{"name":"trade"}}',
    b'{"channelID":1664,"channelName":"book-1000","event":"subscriptionStatus","pair":"WAVES/EUR",'
    b'"status":"subscribed","subscription":{"depth":1000,"name":"book"}}',
    b'{ "status" : "online", "event" : "systemStatus", "version" : "1.8.3",'
    b' "ok": true, "x": null }',
]
# integers as orjson reads them: an int, a float past 64 bits (Kraken's connectionID)
TAKEN += [
    b'{"connectionID":17843232920108168701,"event":"systemStatus","status":"online"}',
    b'{"connectionID":-9223372036854775809,"event":"systemStatus","status":"online"}',
    b'{"connectionID":%s,"event":"systemStatus","status":"online"}' % (b"9" * 300),
    b'{"connectionID":0,"event":"heartbeat"}',
]
LEFT = [
    b'{"connectionID":%s,"event":"systemStatus","status":"online"}' % (b"9" * 309),  # infinity
    b'{"connectionID":01,"event":"systemStatus","status":"online"}',  # not JSON
    b'{"connectionID":-,"event":"systemStatus","status":"online"}',  # not JSON
    b'{"connectionID":1e5,"event":"systemStatus","status":"online"}',  # an exponent
    b'{"event":"subscriptionStatus","event":"heartbeat"}',  # "event" twice
    b'{"event":"subscriptionStatus","channel":"book"}',  # a v2 key: the v2 normalizer's
    b'{"event":"pong","method":"ping"}',  # likewise
    b'{"event":"error","errorMessage":"Currency pair not supported"}',  # not a control word
    b'{"event":"unknownThing","status":"x"}',  # an unknown event: quarantined
    b'{"event":"subscriptionStatus","subscription":{"name":{"deep":1}}}',  # nested deeper
    b'{"event":"subscriptionStatus","reqid":1.5}',  # a float
    b'{"event":"subscriptionStatus","pairs":["XBT/USD"]}',  # an array
    b'{"event":"subscriptionStatus","pair":"XBT\\/USD"}',  # an escape
    b'{"status":"online"}',  # no event: quarantined
    b'{"event":"subscriptionStatus","status":online}',  # not JSON: quarantined
    b'{"event":"heartbeat",}',  # not JSON either
]


def _segment() -> bytes:
    payloads = TAKEN + LEFT
    return b"".join(
        encode_envelope(BASE_TS + i * 1000, "test", "kraken", i, "msg", p, None)
        for i, p in enumerate(payloads)
    )


def test_kraken_v1_control_objects_taken_only_when_surely_control(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _segment()
    fast = demux_segment(data, SEG)
    assert fast.per_line == len(LEFT)  # every TAKEN line counted by the scanner
    assert fast.control >= len(TAKEN)
    fast, slow = both_paths(data, monkeypatch)
    assert_same(fast, slow)
    assert slow.quarantined >= 4
