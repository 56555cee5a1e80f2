"""demux: envelope parsing, quarantine reasons, line accounting, vectorized casts and splits.

A tiny in-test normalizer stands in for the venue modules so these tests pin the demux rules
alone (the real venues are exercised end to end in tests/integration/test_process_*.py)."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pyarrow as pa
import pytest

from fluxforge.demux import (
    ALL_SYMBOLS,
    NS_PER_DAY,
    UNKNOWN_EXCHANGE,
    cast_prices,
    demux_segment,
    split_by_partition,
)
from fluxforge.events import BookMessage, EventSink, NormalizeError
from fluxforge.segments import Envelope, encode_ctl, encode_envelope

SEG = "segment_20240102T03_00001.ndjson"
TS = 1_704_164_400_000_000_000  # 2024-01-02T03:00:00Z


def _normalize(env: Envelope, sink: EventSink) -> str:
    kind = env.data.get("t")
    if kind == "trade":
        sink.trade(
            env.ex, env.data.get("sym", "BTC-USD"), "BTCUSD", env.ts, env.ts,
            str(env.seq), env.data.get("px", "1.5"), "0.00000100", "buy", env.seq,
        )  # fmt: skip
        return "data"
    if kind == "book":
        sink.book(
            BookMessage(env.ex, "BTC-USD", "BTCUSD", "l2", env.ts, env.ts, env.seq, False,
                        [("1", "2")], [])
        )  # fmt: skip
        return "data"
    if kind == "hb":
        return "control"
    if kind == "partial":
        sink.trade(env.ex, "BTC-USD", "BTCUSD", env.ts, env.ts, "x", "1", "1", "buy", env.seq)
        raise NormalizeError("partial: second half missing")
    if kind == "boom":
        raise RuntimeError("normalizer bug")
    raise NormalizeError(f"unknown type {kind!r}")


def _dispatch(env: Envelope, sink: EventSink) -> str:
    if env.ex != "fakex":
        raise NormalizeError(f"no normalizer for exchange {env.ex!r} (known: fakex)")
    return _normalize(env, sink)


def _line(seq: int, payload: dict, ex: str = "fakex", ts: int = TS) -> bytes:
    return encode_envelope(ts + seq, "src", ex, seq, "msg", orjson.dumps(payload))


def _demux(data: bytes):
    return demux_segment(data, SEG, normalize=_dispatch)


def test_demux_mixed_lines_accounting_balances() -> None:
    data = b"".join(
        [
            _line(1, {"t": "trade"}),
            _line(2, {"t": "hb"}),
            encode_ctl(TS, "src", "fakex", 3, "connect"),
            b"\n   \n",  # blank lines are not messages
            _line(4, {"t": "nope"}),
            _line(5, {"t": "trade"}),
        ]
    )
    res = _demux(data)
    assert (res.lines_in, res.data, res.control, res.quarantined) == (5, 2, 2, 1)
    assert res.trades.num_rows == 2
    assert res.quarantine.column("reason").to_pylist() == ["unknown type 'nope'"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"ts":1,"src":"s","ex":"fakex"', "envelope: not valid JSON"),
        (b"\xff\xfe garbage \x80", "envelope: not valid JSON"),
        (b'{"ts":1,"src":"s","ex":"fakex","seq":1,"kind":"msg"}', "misses key 'data'"),
        (b'{"ts":-5,"src":"s","ex":"fakex","seq":1,"kind":"msg","data":{}}', "ts=-5"),
        (b'{"ts":1,"src":"s","ex":"fakex","seq":1,"kind":"zzz","data":{}}', "kind='zzz'"),
        (b"[1,2,3]", "not a JSON object"),
    ],
)
def test_demux_bad_envelope_quarantined_with_reason(raw: bytes, reason: str) -> None:
    res = _demux(_line(1, {"t": "trade"}) + raw + b"\n")
    assert res.quarantined == 1 and res.data == 1
    row = res.quarantine.to_pylist()[0]
    assert reason in row["reason"]
    assert row["raw"] == raw
    assert row["line_no"] == 2
    assert row["exchange"] == UNKNOWN_EXCHANGE


def test_demux_normalizer_error_rolls_back_partial_rows() -> None:
    res = _demux(_line(1, {"t": "partial"}) + _line(2, {"t": "trade"}))
    assert res.trades.column("seq").to_pylist() == [2]
    assert res.quarantine.column("reason").to_pylist() == ["partial: second half missing"]


def test_demux_normalizer_bug_quarantined_not_raised() -> None:
    res = _demux(_line(1, {"t": "boom"}))
    assert res.quarantined == 1 and res.normalizer_errors == 1
    assert "RuntimeError: normalizer bug" in res.quarantine.column("reason")[0].as_py()


def test_demux_unknown_exchange_quarantined_under_unknown_partition() -> None:
    res = _demux(_line(1, {"t": "trade"}, ex="../../etc"))
    assert res.quarantined == 1
    row = res.quarantine.to_pylist()[0]
    assert row["exchange"] == UNKNOWN_EXCHANGE
    assert "no normalizer for exchange" in row["reason"]


def test_demux_uncastable_price_quarantines_whole_line() -> None:
    data = _line(1, {"t": "trade", "px": "12.5"}) + _line(2, {"t": "trade", "px": "NaN"})
    data += _line(3, {"t": "trade", "px": "1" * 30})
    res = _demux(data)
    assert res.trades.column("seq").to_pylist() == [1]
    assert res.quarantined == 2 and res.data == 1
    reasons = res.quarantine.column("reason").to_pylist()
    assert all("does not fit the lake's decimal(38,12)" in r for r in reasons)


def test_demux_path_traversal_symbol_quarantined() -> None:
    res = _demux(_line(1, {"t": "trade", "sym": "../../etc"}) + _line(2, {"t": "trade"}))
    assert res.trades.column("symbol").to_pylist() == ["BTC-USD"]
    assert "unsafe symbol" in res.quarantine.column("reason")[0].as_py()


def test_demux_ctl_reconnect_recorded_at_book_position() -> None:
    data = b"".join(
        [
            _line(1, {"t": "book"}),
            encode_ctl(TS + 5, "src", "fakex", 2, "disconnect"),
            encode_ctl(TS + 6, "src", "fakex", 3, "subscribe"),
            _line(4, {"t": "book"}),
        ]
    )
    res = _demux(data)
    assert [(c.event, c.book_pos) for c in res.ctl] == [("disconnect", 2)]  # line numbers
    assert [pos for pos, _ in res.books_by_instrument()[("fakex", "BTC-USD")]] == [1, 4]


def test_cast_prices_exact_wire_strings() -> None:
    res = _demux(_line(1, {"t": "trade", "px": "0.30000000000000000"}))
    cast = cast_prices(res.trades, "trades")
    assert cast.column("price")[0].as_py() == Decimal("0.3")
    assert cast.column("size")[0].as_py() == Decimal("0.000001")


def test_split_by_partition_splits_dates_and_keeps_receive_order() -> None:
    ts = [TS, TS + NS_PER_DAY, TS + 1, TS + 2]
    table = pa.table(
        {
            "exchange": ["a", "a", "b", "a"],
            "symbol": ["X-Y", "X-Y", "X-Y", "X-Y"],
            "ts_recv": pa.array(ts, pa.int64()),
            "n": [0, 1, 2, 3],
        }
    )
    parts = split_by_partition(table)
    assert sorted(parts) == [
        ("a", "X-Y", "2024-01-02"),
        ("a", "X-Y", "2024-01-03"),
        ("b", "X-Y", "2024-01-02"),
    ]
    assert parts[("a", "X-Y", "2024-01-02")].column("n").to_pylist() == [0, 3]
    assert "exchange" not in parts[("b", "X-Y", "2024-01-02")].column_names


def test_split_by_partition_of_one_instrument_by_date_keeps_receive_order() -> None:
    # book engine output: no exchange/symbol columns, the instrument is given
    one_day = pa.table({"ts_recv": pa.array([TS + 5, TS, TS + 9], pa.int64()), "n": [0, 1, 2]})
    parts = split_by_partition(one_day, "ts_recv", "a", "X-Y")
    assert list(parts) == [("a", "X-Y", "2024-01-02")]
    assert parts[("a", "X-Y", "2024-01-02")].column("n").to_pylist() == [0, 1, 2]
    two_days = pa.table(
        {"ts_to": pa.array([TS + NS_PER_DAY, TS, TS + 1], pa.int64()), "n": [0, 1, 2]}
    )
    parts = split_by_partition(two_days, "ts_to", "a", None)
    assert sorted(parts) == [("a", ALL_SYMBOLS, "2024-01-02"), ("a", ALL_SYMBOLS, "2024-01-03")]
    assert parts[("a", ALL_SYMBOLS, "2024-01-02")].column("n").to_pylist() == [1, 2]
    assert parts[("a", ALL_SYMBOLS, "2024-01-03")].column("n").to_pylist() == [0]


def _cb(seq: int, payload: bytes, ex: bytes = b"coinbase") -> bytes:
    return b'{"ts":%d,"src":"s","ex":"%b","seq":%d,"kind":"msg","data":%b}\n' % (
        TS + seq,
        ex,
        seq,
        payload,
    )


_T = b'"time":"2024-01-02T03:00:01.123456Z"'
TRICKY = [
    b'{"type":"snapshot","product_id":"BTC-USD","bids":[["100.5","1"]],"asks":[["101","2"]]}',
    b'{"type":"snapshot","product_id":"BTC-USD","asks":[["101","2"]],"bids":[["100.5","1"]]}',
    b'{"type":"snapshot","product_id":"BTC-USD","bids":[],"asks":[],"time":"garbage"}',
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","100.1","0"]],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["sell","1","2"],["buy","3","4"],'
    b'["offer","5","6","x"]],' + _T + b"}",
    b'{ "type" : "l2update", "product_id":"ETH-USD","changes":[["bid","1.0","2"]],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","0","1"]],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","0.0","1"]],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","-1","1"]],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy",1,"1"]],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["up","1","1"]],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1","1"]]}',
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1.0000000000000000001",'
    b'"1"]],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1","1e5"]],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1","1"]],'
    b'"time":"2024-13-02T03:00:01Z"}',
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1","1"]],'
    b'"time":"2024-02-31T03:00:01.1234567891Z"}',
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1","1"]],'
    b'"time":"1999-01-01T00:00:00Z"}',
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1","1"]],'
    b'"time":"2024-01-02 03:00:01+00:00"}',
    b'{"type":"l2update","product_id":"BTC\\u002dUSD","changes":[["buy","1","1"]],' + _T + b"}",
    b'{"type":"l2update","product_id":"../../etc","changes":[["buy","1","1"]],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTCUSD","changes":[["buy","1","1"]],' + _T + b"}",
    b'{"type":"l2update","type":"l2update","product_id":"BTC-USD","changes":[],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[],"extra":1,' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","channel":"x","changes":[],' + _T + b"}",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1","1"]],' + _T + b"} x",
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1","1"]],' + _T,
    b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1","\xff"]],' + _T + b"}",
    b'{"type":"snapshot","product_id":"BTC-USD","bids":[["1"]],"asks":[]}',
    b'{"type":"snapshot","product_id":"BTC-USD","bids":[["1","1"]]}',
]


def test_demux_fast_path_equals_per_line_path_on_tricky_lines() -> None:
    """Every tricky variant of the Coinbase book shapes, among enough normal lines for the
    columnar path to engage: same book messages, same quarantine, same accounting."""
    normal = b'{"type":"l2update","product_id":"BTC-USD","changes":[["sell","101.5","3"]],'
    lines = [_cb(i, normal + _T + b"}") for i in range(40)]
    lines += [_cb(100 + i, p) for i, p in enumerate(TRICKY)]
    lines.append(_cb(200, normal + _T + b"}", ex=b"coinbasepro"))
    lines.append(_cb(201, b'{"type":"l2update"}')[:-1] + b"\r\n")
    data = b"".join(lines) + _cb(300, normal + _T + b"}")
    fast = demux_segment(data, SEG, fast=True)
    slow = demux_segment(data, SEG, fast=False)
    assert sum(len(f) for f in fast.fast_books.values()) >= 45  # the columnar path engaged
    assert slow.fast_books == {}
    got = sorted([*fast.books_by_instrument_all()], key=lambda item: item[0])
    want = sorted(
        [(ln, m) for ms in slow.books_by_instrument().values() for ln, m in ms],
        key=lambda item: item[0],
    )
    assert [ln for ln, _ in got] == [ln for ln, _ in want]
    assert [m for _, m in got] == [m for _, m in want]
    assert fast.quarantine.to_pylist() == slow.quarantine.to_pylist()
    assert (fast.lines_in, fast.data, fast.control, fast.quarantined) == (
        slow.lines_in,
        slow.data,
        slow.control,
        slow.quarantined,
    )
    assert slow.quarantined >= 15


def _at(seq: int, events: bytes, head: bytes | None = None) -> bytes:
    head = head or (
        b'"channel":"l2_data","client_id":"","timestamp":"2024-01-02T03:00:02.5Z",'
        b'"sequence_num":%d' % seq
    )
    return _cb(seq, b"{" + head + b',"events":' + events + b"}")


_UPD = (
    b'{"side":"bid","event_time":"2024-01-02T03:00:01.25Z","price_level":"10.5","new_quantity":"2"}'
)
AT_TRICKY = [
    b'[{"type":"snapshot","product_id":"BTC-USD","updates":[{"side":"bid","event_time":'
    b'"1970-01-01T00:00:00Z","price_level":"10","new_quantity":"1"},{"side":"offer",'
    b'"event_time":"1970-01-01T00:00:00Z","price_level":"11","new_quantity":"1"}]}]',
    b'[{"type":"update","product_id":"BTC-USD","updates":[' + _UPD + b"]},"
    b'{"type":"update","product_id":"ETH-USD","updates":[' + _UPD + b"," + _UPD + b"]}]",
    b"[]",
    b'[{"type":"update","product_id":"BTC-USD","updates":[]}]',
    b'[{"type":"update","product_id":"BTC-USD","updates":[{"side":"ask","price_level":"12",'
    b'"new_quantity":"0"}]}]',
    b'[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid","event_time":'
    b'"1969-12-31T23:59:59Z","price_level":"9","new_quantity":"1"}]}]',
    b'[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid","event_time":'
    b'"1970-01-01T00:00:00Z","price_level":"9","new_quantity":"1"}]}]',
    b'[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid","event_time":'
    b'"2200-01-01T00:00:00Z","price_level":"9","new_quantity":"1"}]}]',
    b'[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid","event_time":'
    b'"yesterday","price_level":"9","new_quantity":"1"}]}]',
    b'[{"type":"update","product_id":"BTC-USD","updates":[{"side":"up","price_level":"9",'
    b'"new_quantity":"1"}]}]',
    b'[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid","price_level":"0",'
    b'"new_quantity":"1"}]}]',
    b'[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid","price_level":"1",'
    b'"new_quantity":"1","extra":"x"}]}]',
    b'[{"type":"weird","product_id":"BTC-USD","updates":[]}]',
    b'[{"product_id":"BTC-USD","updates":[' + _UPD + b'],"type":"update"}]',
    b'[{"type":"update","product_id":"../etc","updates":[' + _UPD + b"]}]",
    b'[{"type":"update","product_id":"BTC-USD","updates":[' + _UPD + b"]},{}]",
]


def test_demux_fast_path_equals_per_line_path_on_advanced_trade_lines() -> None:
    normal = b'[{"type":"update","product_id":"BTC-USD","updates":[' + _UPD + b"]}]"
    lines = [_at(i, normal) for i in range(30)]
    lines += [_at(100 + i, ev) for i, ev in enumerate(AT_TRICKY)]
    lines += [
        _at(200, normal, b'"client_id":"","channel":"l2_data","timestamp":"2024-01-02T03:00:02Z"'),
        _at(201, normal, b'"channel":"l2_data","timestamp":"2024-01-02T03:00:02Z"'),
        _at(
            202, normal, b'"channel":"l2_data","timestamp":"2024-01-02T03:00:02Z","sequence_num":-4'
        ),
        _at(203, normal, b'"channel":"l2_data","timestamp":"not a time","sequence_num":4'),
        _at(204, normal, b'"channel":"l2_data","timestamp":"2024-01-02T03:00:02Z","other":1'),
        _at(205, normal, b'"channel":"market_trades","timestamp":"2024-01-02T03:00:02Z"'),
    ]
    data = b"".join(lines)
    fast = demux_segment(data, SEG, fast=True)
    slow = demux_segment(data, SEG, fast=False)
    assert sum(len(f) for f in fast.fast_books.values()) >= 35  # the columnar path engaged
    want = slow.books_by_instrument_all()
    got = fast.books_by_instrument_all()
    assert [ln for ln, _ in got] == [ln for ln, _ in want]
    assert [m for _, m in got] == [m for _, m in want]
    assert fast.quarantine.to_pylist() == slow.quarantine.to_pylist()
    assert (fast.lines_in, fast.data, fast.control, fast.quarantined) == (
        slow.lines_in,
        slow.data,
        slow.control,
        slow.quarantined,
    )
    assert slow.quarantined >= 6
