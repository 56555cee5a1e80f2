"""The rotation's COPY stream decoder keeps working when the decoder's view of its buffer
outlives the call (a retained numpy export made ``del buf[:n]`` raise BufferError in CI)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fluxforge.lifecycle import _StreamDecoder


class _RetainingDecoder:
    """Consumes whole 4-byte records and keeps a view of every buffer it was given."""

    def __init__(self) -> None:
        self.views: list[np.ndarray] = []
        self.values: list[int] = []

    def decode(self, data: bytearray) -> tuple[pa.RecordBatch | None, int]:
        view = np.frombuffer(data, dtype=np.uint8)
        self.views.append(view)  # what a lingering reference does
        used = len(view) - len(view) % 4
        if not used:
            return None, 0
        vals = view[:used].view(">u4").astype(np.int64)
        self.values.extend(vals.tolist())
        return pa.record_batch([pa.array(vals)], names=["v"]), used


class _Sink:
    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []

    def add(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)


class _Digest:
    def __init__(self) -> None:
        self.size = 0

    def update(self, data: bytes) -> None:
        self.size += len(data)


def test_stream_decoder_with_retained_buffer_views_decodes_every_record() -> None:
    payload = b"".join(i.to_bytes(4, "big") for i in range(1000))
    decoder, sink, digest = _RetainingDecoder(), _Sink(), _Digest()
    stream = _StreamDecoder(decoder, sink, digest)  # type: ignore[arg-type]
    for start in range(0, len(payload), 7):  # blocks that split records
        stream.feed(payload[start : start + 7])
    assert decoder.values == list(range(1000))
    assert sum(b.num_rows for b in sink.batches) == 1000
    assert digest.size == len(payload) and len(stream.buf) == 0
