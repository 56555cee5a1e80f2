"""Wire-field checks shared by the normalizers: exact decimals, float conversion, times."""

from __future__ import annotations

import pytest

from fluxforge.events import NormalizeError
from fluxforge.venues.common import (
    dec,
    float_to_decimal,
    iso_to_ns,
    ms_to_ns,
    seconds_to_ns,
    split_concat,
    venue_symbol,
)


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "0.00000100",
        "30236",
        "0.5000",
        "99999999999999999999999999.999999999999",
        "1." + "0" * 12,
        # zeros past the 12th decimal: venue padding, the same number, kept verbatim (venue
        # checksums are computed over the text)
        "0.10000000000000000000",
        "1." + "0" * 40,
    ],
)
def test_dec_valid_string_is_returned_verbatim(text):
    assert dec(text, "px") == text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("NaN", "not finite"),
        ("inf", "not finite"),
        ("-1.5", "negative"),
        (-3, "negative"),
        ("1e5", "not a plain decimal"),
        ("1,5", "not a plain decimal"),
        ("", "not a plain decimal"),
        (" 1", "not a plain decimal"),
        ("0x10", "not a plain decimal"),
        ("1." + "0" * 12 + "1", "13 decimals with a non-zero digit past the 12th: the lake keeps"),
        ("0.10000000000000000001", "20 decimals with a non-zero digit past the 12th"),
        ("1" + "0" * 26, "1e26 or larger"),
        ("1" + "0" * 25 + "1", "1e26 or larger"),
        ("9" * 40, "1e26 or larger"),
        (1.5, "JSON float"),
        (None, "expected a decimal string"),
        (True, "expected a decimal string"),
        ([1], "expected a decimal string"),
    ],
)
def test_dec_bad_value_raises_with_reason(value, reason):
    with pytest.raises(NormalizeError, match=reason) as info:
        dec(value, "book.bids[0].price")
    assert "book.bids[0].price" in str(info.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (36500.1, "36500.1"),
        (36500.0, "36500"),
        (1e-05, "0.00001"),
        (0.1 + 0.3, "0.4"),
        # past the lake's 12 decimals a float's digits are arithmetic noise: rounded
        (0.1 + 0.2, "0.3"),
        (1e-13, "0"),
        (123.4567890123456, "123.456789012346"),
        (1e19, "10000000000000000000"),
        (1e25, "10000000000000000000000000"),
        (2, "2"),
        ("0.00000100", "0.00000100"),
    ],
)
def test_float_to_decimal_gives_shortest_round_trip_without_exponent(value, text):
    assert float_to_decimal(value, "amount") == text


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -1.0, 1e26, 1e27, "0.30000000000000004", None, True]
)
def test_float_to_decimal_rejects_non_finite_negative_and_out_of_range(value):
    # a string is the venue's own text: a non-zero digit past the 12th decimal is refused
    with pytest.raises(NormalizeError, match="amount"):
        float_to_decimal(value, "amount")


def test_iso_to_ns_is_exact_to_the_nanosecond():
    assert iso_to_ns("2021-04-17T16:43:30.244075Z", "t") == 1_618_677_810_244_075_000
    assert iso_to_ns("2023-02-09T20:32:50.714964855Z", "t") == 1_675_974_770_714_964_855
    assert iso_to_ns("2024-02-29T00:00:00Z", "t") == 1_709_164_800_000_000_000
    assert iso_to_ns("2024-02-29T00:00:00+00:00", "t") == 1_709_164_800_000_000_000


@pytest.mark.parametrize(
    "value", ["2021-04-17", "2021-13-01T00:00:00Z", "1970-01-01T00:00:00Z", 1618677810, None]
)
def test_iso_to_ns_rejects_malformed_or_implausible_times(value):
    with pytest.raises(NormalizeError, match="time"):
        iso_to_ns(value, "match.time")


def test_ms_and_seconds_to_ns_are_exact_and_checked():
    assert ms_to_ns(1626992741037, "E") == 1_626_992_741_037_000_000
    assert ms_to_ns("1652459225453", "ts") == 1_652_459_225_453_000_000
    assert seconds_to_ns("1618678133.136361", "t") == 1_618_678_133_136_361_000
    for bad in (1626992741, "-1", "12a", 1.5e12, True):
        with pytest.raises(NormalizeError):
            ms_to_ns(bad, "E")


@pytest.mark.parametrize(
    "name", ["../etc", "a/../b", "BTC\x00USD", "", "-BTC", "BTC USD", "x" * 80]
)
def test_venue_symbol_rejects_path_tricks_and_junk(name):
    with pytest.raises(NormalizeError, match="not a valid instrument name"):
        venue_symbol(name, "product_id")


def test_split_concat_prefers_longest_quote_and_needs_a_base():
    assert split_concat("XYZBUSD") == ("XYZ", "BUSD")
    assert split_concat("USDT") is None
    assert split_concat("FOOBAR") is None
