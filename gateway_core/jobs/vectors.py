"""Embedding vectors as a job's output is stored: packed float32, not JSON numbers.

`f32le:{count}:{dimensions}:{base64 of the little-endian float32 rows, one after another}`. A 1,000 x 1,536 batch
is 6.1 MB of floats, 8.2 MB in base64 and about 10.9 MB in Redis once encrypted (Fernet base64-encodes again),
against about 40 MB as encrypted JSON numbers. Float32 is what OpenAI's own `base64` encoding carries and what
embedding models produce, so nothing a client could read is lost. The header lets a job's view say how many
vectors of what size it holds without decoding them.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence

PREFIX = "f32le"
FLOAT_BYTES = 4


def _little_endian(floats: array[float]) -> array[float]:
    if sys.byteorder == "big":
        floats.byteswap()
    return floats


def pack(vectors: Sequence[Sequence[float]]) -> str:
    """Vectors of one dimension, packed; ValueError when they are empty, ragged or not numbers."""
    if not vectors:
        raise ValueError("no vectors")
    dimensions = len(vectors[0])
    floats: array[float] = array("f")
    for vector in vectors:
        if len(vector) != dimensions or not dimensions:
            raise ValueError("vectors of different or zero dimensions")
        floats.extend(float(value) for value in vector)
    return pack_bytes(len(vectors), dimensions, _little_endian(floats).tobytes())


def pack_bytes(count: int, dimensions: int, data: bytes) -> str:
    """`count` rows of `dimensions` little-endian float32 values, already packed (e.g. decoded from base64)."""
    if count < 1 or dimensions < 1 or len(data) != count * dimensions * FLOAT_BYTES:
        raise ValueError(f"{len(data)} bytes are not {count} vectors of {dimensions} float32 values")
    return f"{PREFIX}:{count}:{dimensions}:{base64.b64encode(data).decode()}"


def shape(packed: str) -> tuple[int, int]:
    """(count, dimensions) from the header alone."""
    prefix, count, dimensions, _ = packed.split(":", 3)
    if prefix != PREFIX:
        raise ValueError("not packed vectors")
    return int(count), int(dimensions)


def rows_bytes(packed: str) -> list[bytes]:
    """Each vector's little-endian float32 bytes: what OpenAI's `encoding_format: base64` encodes."""
    count, dimensions = shape(packed)
    data = base64.b64decode(packed.split(":", 3)[3])
    width = dimensions * FLOAT_BYTES
    return [data[row * width:(row + 1) * width] for row in range(count)]


def rows_base64(packed: str) -> list[str]:
    return [base64.b64encode(row).decode() for row in rows_bytes(packed)]


def rows_float(packed: str) -> list[list[float]]:
    """The vectors as numbers, each float32 written with the 9 significant digits that round-trip it (JSON's
    shortest form of the double would print noise digits: 0.1f is 0.10000000149011612)."""
    out: list[list[float]] = []
    for row in rows_bytes(packed):
        floats: array[float] = array("f")
        floats.frombytes(row)
        out.append([float(f"{value:.9g}") for value in _little_endian(floats)])
    return out
