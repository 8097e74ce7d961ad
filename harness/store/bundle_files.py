"""Reading bundle files for `harness ingest`: plain or gzip-compressed, with or without a UTF-8
byte-order mark. `read_lines(path, log)` yields the good records of a bundle, in order, and sends every
other line, with its number and reason, to a `RejectLog` (`<bundle>.rejected.jsonl`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import IO

from harness.bundle import RECORD_TYPES, Record
from harness.store.validate import LineError, RejectLog, check_line

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"


def open_bundle(path: str | os.PathLike[str]) -> IO[bytes]:
    """A bundle's bytes: gzip-compressed bundles (a CI artifact, `b.jsonl.gz`) are read as they are."""
    fh = open(path, "rb")  # noqa: SIM115 - the caller closes it
    if fh.read(2) == GZIP_MAGIC:
        import gzip

        fh.seek(0)
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    fh.seek(0)
    return fh


def _lines(fh: IO[bytes]) -> Iterator[bytes]:
    """The lines of a bundle, without the byte-order mark some Windows tools put first."""
    for number, raw in enumerate(fh, 1):
        yield raw[len(BOM):] if number == 1 and raw.startswith(BOM) else raw


def read_lines(path: str | os.PathLike[str], log: RejectLog) -> Iterator[Record]:
    """The storable records of a bundle, in order; every other non-blank line goes to `log`."""
    number = 0
    with open_bundle(path) as fh:
        try:
            for number, raw in enumerate(_lines(fh), 1):
                try:
                    record = check_line(raw)
                except LineError as exc:
                    log.reject(number, str(exc), raw)
                    continue
                if record is not None:
                    yield record
        except (EOFError, OSError) as exc:  # a truncated or corrupt .gz: what follows is unreadable, and said so
            log.reject(number + 1, f"compressed bundle unreadable from here: {exc}", b"")


def looks_like_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether some line of the file is a JSON object with a known record kind (read up to it)."""
    with open_bundle(path) as fh:
        try:
            for raw in _lines(fh):
                try:
                    data = json.loads(raw)
                except ValueError:
                    continue
                if type(data) is dict and data.get("kind") in RECORD_TYPES:
                    return True
        except (EOFError, OSError):  # a corrupt .gz before any record
            return False
    return False
