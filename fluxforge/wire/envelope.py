"""The byte layout of a raw segment line, written once.

::

    {"ts":<ns>,"src":"<src>","ex":"<ex>","seq":<n>,"kind":"msg|rest|ctl",["url":..,]"data":<payload>}

The key order is fixed and ``data`` is last, so the writer builds a line from these literals,
the reader slices the payload out verbatim, and the demux's one numba envelope pass
(``fluxforge.demux.bytescan.envelopes``) recognises a line by comparing bytes with the same
literals; the venue scanners start from the payload position it finds.
"""

from __future__ import annotations

import numpy as np

HEAD = b'{"ts":'
SRC = b',"src":'
EX = b',"ex":'
SEQ = b',"seq":'
KIND = b',"kind":'
URL = b',"url":'
DATA = b',"data":'


def as_bytes(literal: bytes) -> np.ndarray:
    """A literal as the uint8 array the numba scanners compare with."""
    return np.frombuffer(literal, np.uint8).copy()


def ex_seq(exchange: str) -> bytes:
    """The bytes from the end of the source string to the seq value, for one exchange."""
    return EX + b'"' + exchange.encode() + b'"' + SEQ


def kind_data(kind: str) -> bytes:
    """The bytes from the end of seq to the payload of a line of `kind` without url."""
    return KIND + b'"' + kind.encode() + b'"' + DATA


def kind_url(kind: str) -> bytes:
    """The bytes from the end of seq to the url value of a line of `kind` with a url."""
    return KIND + b'"' + kind.encode() + b'"' + URL


# what the envelope pass compares: `{"ts":` <int> `,"src":"` <str> `,"ex":"X","seq":` <int> ...
SCAN_HEAD = as_bytes(HEAD)
SCAN_SRC = as_bytes(SRC + b'"')
SCAN_MSG = as_bytes(kind_data("msg"))
SCAN_REST = as_bytes(kind_url("rest"))
SCAN_DATA = as_bytes(DATA)


def scan_ex(exchange: str) -> np.ndarray:
    return as_bytes(ex_seq(exchange))
