"""Declared wire shapes: a venue message (or one item of it) written down once as
``ObjectShape``: per key, what its value must be and which output column receives it.

Two readers run on one declaration, so a venue rule is never written twice:

- the numba byte scanners (``fluxforge.demux.bytescan.flat_object``) read ``shape.args`` or
  ``shape.args_for(layout)``: they accept only the plain form of each value and leave
  anything else (escapes, JSON numbers for prices, unknown containers...) to
- the per-line normalizers (``fluxforge.venues.common.read_fields``), which read an
  orjson-parsed object by the same declaration and give the reason of any refusal.

A field is ``(key, kind, column[, words])``. `column` is a scanner column number (int; -1:
checked, not kept) or an output column name (str; None: checked, not kept) resolved by the
scanner's layout. A null value counts as absent unless the field is required. Several keys may
name the same column (a venue's alternative names, e.g. Bitget v1 ``bestBid`` and v2
``bidPr``): the per-line reader takes the first declared key that is present, and the scanner
refuses an object that carries two of them (the per-line path decides). ``required`` names
keys or columns that must be present (a column: any of its keys). ``open``: other keys are
allowed and ignored (the scanner still needs their values to be plain JSON scalars, so that
the line surely parses). ``array``: the fields are the positions of a JSON array instead of
the keys of an object (extra trailing elements: the per-line path).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

V_INT = 0  # non-negative integer (int64): the value -> out[col] (col -1: only checked)
V_INT_SPAN = 1  # non-negative integer: its digits' span -> out[col], out[col + 1]
V_MS = 2  # epoch milliseconds (a JSON integer) in the plausible range: ns -> out[col]
V_STR = 3  # string without escapes: span -> out[col], out[col + 1]
V_DEC = 4  # plain decimal string (fluxforge.wire.decimal): span
V_POS = 5  # plain decimal string > 0: span
V_BOOL = 6  # true / false -> 1 / 0 in out[col]
V_ENUM = 7  # one of the field's words: 1 + its index -> out[col]
V_BIDS = 8  # level list [[price, size, ...], ...] -> bid rows of lv
V_ASKS = 9  # level list -> ask rows of lv
V_SINT = 10  # integer with optional '-' (at most 18 digits) -> out[col]
V_MS_ANY = 11  # epoch ms as an integer or a digit string, in the plausible range: ns
V_OPT_DEC = 12  # plain decimal string, or "" / null for "no value": span (none: left -1)
V_ID = 13  # an id: non-empty string without escapes or non-negative integer: its text span
V_ISO = 14  # RFC 3339 UTC time string in the plausible range: ns -> out[col]
V_SCALAR = 15  # any JSON scalar (string, number, true, false, null): checked, not kept
V_TEXT = 16  # non-empty string without escapes: span
# decimals that a venue sends as JSON numbers (Kraken v2): the number's exact text, never a
# float (a plain decimal string is accepted too)
V_NUM = 17  # plain decimal number or string, or null for "no value": span
V_NUM_POS = 18  # plain decimal number or string > 0: span
V_BIDS_OBJ = 19  # level list [{"price": num, "qty": num}, ...] -> bid rows of lv
V_ASKS_OBJ = 20  # the same -> ask rows of lv
V_SECONDS = 21  # epoch seconds as a decimal string ("1618678133.136361"), plausible: ns
# level list [[side word, price, size, ...], ...] -> rows of lv, each on the side its word
# names: the field's words are a mapping {word: "bid" | "ask"} (per line: (bids, asks))
V_SIDED_LEVELS = 22
V_ISO_OPT = 23  # RFC 3339 UTC time; the epoch or earlier means "no time", else plausible: ns
# a JSON array, whatever it holds (its items are read by their own declaration): span ->
# out[col], out[col + 1] (per line: the list)
V_LIST = 24
# level list [[price, size(, epoch seconds string(, string...))], ...] -> rows of lv, and the
# latest level time (ns, 0 when none) -> out[col] (per line: (levels, latest time))
V_TIMED_BIDS = 25
V_TIMED_ASKS = 26
V_DIGITS = 27  # non-negative integer written as a digit string (at most 18 digits) -> out[col]
# a JSON object or array, whatever it holds (a wrapper's payload, read by its own declaration):
# span -> out[col], out[col + 1] (per line: the dict or list)
V_NESTED = 28

KIND_NAMES = {
    V_INT: "a non-negative integer",
    V_INT_SPAN: "a non-negative integer",
    V_MS: "epoch milliseconds",
    V_STR: "a string",
    V_DEC: "a decimal string",
    V_POS: "a decimal string > 0",
    V_BOOL: "true/false",
    V_ENUM: "one of its words",
    V_BIDS: "a level list",
    V_ASKS: "a level list",
    V_SINT: "an integer",
    V_MS_ANY: "epoch milliseconds",
    V_OPT_DEC: "a decimal string",
    V_ID: "an id",
    V_ISO: "an RFC 3339 time",
    V_SCALAR: "a scalar",
    V_TEXT: "a non-empty string",
    V_NUM: "a decimal",
    V_NUM_POS: "a decimal > 0",
    V_BIDS_OBJ: "a level list",
    V_ASKS_OBJ: "a level list",
    V_SECONDS: "epoch seconds",
    V_SIDED_LEVELS: "a level list",
    V_ISO_OPT: "an RFC 3339 time",
    V_LIST: "a JSON array",
    V_TIMED_BIDS: "a level list",
    V_TIMED_ASKS: "a level list",
    V_DIGITS: "a digit string",
    V_NESTED: "a JSON object or array",
}
SIDES = ("bid", "ask")  # a side's number in the level rows is its index

# header of the packed argument (``ObjectShape.args_for``): field count, flags, count of
# required groups, then where each section starts: key offsets (positions of the key bytes in
# the array), kinds, columns, first and end word per field, word offsets (positions), required
# groups, side of each word, the field a key's first byte names (``A_FIRST``)
A_NF, A_FLAGS, A_NNEED, A_KOFF, A_KIND, A_COL, A_WLO, A_WHI, A_WOFF, A_NEED, A_WSIDE = range(11)
A_FIRST = 11
A_HEADER = 12
# per ASCII byte: the one declared key that starts with it (its field), NO_KEY when none does,
# SEVERAL_KEYS when more than one does (then each is compared)
NO_KEY, SEVERAL_KEYS = -1, -2

SPAN_KINDS = frozenset({V_INT_SPAN, V_STR, V_DEC, V_POS, V_OPT_DEC, V_ID, V_TEXT, V_NUM, V_NUM_POS})
F_OPEN = 1  # flag bits of the packed header A_FLAGS
F_ARRAY = 2


def pack_words(words: tuple[str | bytes, ...] | list) -> tuple[np.ndarray, np.ndarray]:
    """Words as one byte array and offsets (word k = flat[off[k]:off[k + 1]]): what the
    scanners index at run time (numba indexes a tuple of arrays by a run-time index ~15x
    slower than this)."""
    raw = [w.encode() if isinstance(w, str) else bytes(w) for w in words]
    flat = np.frombuffer(b"".join(raw), np.uint8).copy() if raw else np.zeros(0, np.uint8)
    off = np.zeros(len(raw) + 1, np.int64)
    off[1:] = np.cumsum([len(w) for w in raw])
    return flat, off


class ObjectShape:
    """The declared fields of a flat JSON object (or array): see the module doc. A field's
    words may be a mapping {word: "bid" | "ask"} (``V_SIDED_LEVELS``): ``sides`` holds the
    side number of each word."""

    def __init__(
        self,
        *fields: tuple,
        required: tuple[str, ...] = (),
        open: bool = False,
        array: bool = False,
    ) -> None:
        self.fields = fields
        self.names = tuple(f[0] for f in fields)
        self.kinds = tuple(int(f[1]) for f in fields)
        self.columns = tuple(f[2] for f in fields)
        self.words = tuple(tuple(f[3]) if len(f) > 3 else () for f in fields)
        self.sides = tuple(
            tuple(SIDES.index(f[3][w]) for w in f[3])
            if len(f) > 3 and isinstance(f[3], Mapping)
            else ()
            for f in fields
        )
        self.required = required
        self.open = open
        self.array = array
        for name in required:
            if not self.bits(name):
                raise ValueError(f"required {name!r} is neither a key nor a column of the shape")
        # a key names one field (the scan may meet the fields in any order)
        if not array and len(set(self.names)) != len(self.names):
            raise ValueError(f"a key is declared twice: {self.names}")
        # the scanner compares a declared key with the wire bytes in place
        # (``bytescan.declared_key_at``): only plain keys, whose wire text is the key itself
        for name in self.names if not array else ():
            if not all(32 <= ord(ch) < 127 and ch not in '"\\' for ch in name):
                raise ValueError(f"key {name!r}: only printable ASCII without quotes/escapes")
        self._args: dict[tuple, tuple] = {}

    def bits(self, *names: str) -> int:
        """The `seen` mask of these keys, or of every key of these columns."""
        out = 0
        for name in names:
            for k, (key, col) in enumerate(zip(self.names, self.columns, strict=True)):
                if key == name or (isinstance(col, str) and col == name):
                    out |= 1 << k
        return out

    def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """(column, its keys in declaration order) for the columns named by several keys."""
        by_col: dict[str, list[str]] = {}
        for key, col in zip(self.names, self.columns, strict=True):
            if isinstance(col, str):
                by_col.setdefault(col, []).append(key)
        return [(c, tuple(keys)) for c, keys in by_col.items() if len(keys) > 1]

    @property
    def args(self) -> np.ndarray:
        """The numba argument, columns given as numbers in the declaration."""
        return self.args_for({})

    def args_for(self, layout: Mapping[str, int]) -> np.ndarray:
        """The numba argument with named columns resolved by the scanner's `layout`: one int64
        array, header ``A_*`` then the sections it points to (key offsets, kinds, columns,
        first and end word per field, word offsets, required groups, side of each word (0 for
        words that name no side), key bytes, word bytes). One array, not eleven: numba counts
        the references of every array argument atomically on each call, which had been most
        of the time of a small object."""
        cache_key = tuple(sorted(layout.items()))
        if cache_key in self._args:
            return self._args[cache_key]
        cols = []
        for col in self.columns:
            if col is None:
                cols.append(-1)
            elif isinstance(col, str):
                cols.append(layout[col])
            else:
                cols.append(int(col))
        words: list[str] = []
        sides: list[int] = []
        lo, hi = [], []
        for ws, ss in zip(self.words, self.sides, strict=True):
            lo.append(len(words))
            words.extend(ws)
            sides.extend(ss or [0] * len(ws))
            hi.append(len(words))
        need = [self.bits(name) for name in self.required] or [0]
        flags = (F_OPEN if self.open else 0) | (F_ARRAY if self.array else 0)
        kflat, koff = pack_words(self.names)
        wflat, woff = pack_words(words)
        first = [NO_KEY] * 128
        for f, name in enumerate(self.names if not self.array else ()):
            b = name.encode()[0] if name else ord('"')  # ("": the byte after is its close)
            first[b] = f if first[b] == NO_KEY else SEVERAL_KEYS
        sections = [koff, self.kinds, cols, lo, hi, woff, need, sides, first, kflat, wflat]
        base = [A_HEADER]
        for sec in sections:
            base.append(base[-1] + len(sec))
        out = np.zeros(base[-1], np.int64)
        for at, sec in zip(base[:-1], sections, strict=True):
            out[at : at + len(sec)] = np.asarray(sec, np.int64)
        # key and word offsets as positions of their bytes in `out`
        out[base[0] : base[1]] += base[9]
        out[base[5] : base[6]] += base[10]
        out[:A_HEADER] = (len(self.kinds), flags, len(need), *base[:9])
        self._args[cache_key] = out
        return out
