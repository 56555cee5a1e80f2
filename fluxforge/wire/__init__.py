"""Rules of the raw feed shared by every venue, each written once: the decimal format of prices
and sizes (``decimal``), plausible event times and the civil-date formula (``times``), and the
byte layout of the segment envelope (``envelope``). The venue normalizers, the numba scanners
of ``fluxforge.demux`` and the segment writer/reader import them from here."""
