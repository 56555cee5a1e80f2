"""Order-book engine: numba batch kernel, venue checksums and update-id chains, book epochs,
snapshot injection and checkpoints (docs/integrity.md)."""

from fluxforge.book.batch import BookBatch, BookInputError
from fluxforge.book.engine import BookEngine, BookOutput, BookStateError, BookStats

__all__ = [
    "BookBatch",
    "BookEngine",
    "BookInputError",
    "BookOutput",
    "BookStateError",
    "BookStats",
]
