"""How an answer goes on the wire, as real partners send it: compressed, chunked, on a connection then closed.

Real APIs compress when the client's Accept-Encoding allows it (httpx and aiohttp always offer gzip and deflate,
and br / zstd when brotli / zstandard are installed); OpenAI, behind Cloudflare, answers `br` when offered. A
load balancer in front of a partner answers its own HTML error page when the upstream fails.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.responses import Response, StreamingResponse

try:
    import brotli
except ImportError:  # pragma: no cover - brotli is a dependency; without it `br` is simply not offered
    brotli = None
try:
    import zstandard
except ImportError:  # pragma: no cover - likewise for zstd
    zstandard = None  # type: ignore[assignment]

# Fast levels, as servers use for dynamic content (nginx's gzip_comp_level defaults to 1): a client decodes every
# level the same way, so the level only sets the simulator's CPU per answer (br q2 ~4 us for a 400-byte answer).
BROTLI_QUALITY = 2
ZSTD_LEVEL = 3
GZIP_LEVEL = 1
CHUNK_PIECES = 3

BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _brotli(body: bytes) -> bytes:
    return bytes(brotli.compress(body, quality=BROTLI_QUALITY))


def _gzip(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


def _deflate(body: bytes) -> bytes:
    # HTTP's "deflate" is the zlib format (RFC 9110 section 8.4.1.2), not a raw deflate stream.
    return zlib.compress(body, GZIP_LEVEL)


def _zstd_compressor() -> Callable[[bytes], bytes]:
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return compressor.compress


def _available_codings() -> dict[str, Callable[[bytes], bytes]]:
    """Server preference order first: what real APIs pick when a client offers several."""
    codings: dict[str, Callable[[bytes], bytes]] = {}
    if brotli is not None:
        codings["br"] = _brotli
    if zstandard is not None:
        codings["zstd"] = _zstd_compressor()
    codings["gzip"] = _gzip
    codings["deflate"] = _deflate
    return codings


CODINGS = _available_codings()


def choose_encoding(accept_encoding: str | None) -> str | None:
    """The content-coding to answer with, or None for identity (RFC 9110 section 12.5.3).

    The client's q-values rank first; among equals the server's preference (`CODINGS` order) decides. `q=0`
    refuses a coding; `*` stands for any coding not named.
    """
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    wildcard: float | None = None
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        weight = _q_value(params)
        if name == "*":
            wildcard = weight
        else:
            weights[name] = weight
    best: tuple[float, int] | None = None
    chosen: str | None = None
    for rank, coding in enumerate(CODINGS):
        weight = weights.get(coding, wildcard if wildcard is not None else 0.0)
        if weight <= 0:
            continue
        key = (weight, -rank)
        if best is None or key > best:
            best, chosen = key, coding
    return chosen


def _q_value(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                return min(1.0, max(0.0, float(value)))
            except ValueError:
                return 0.0
    return 1.0


@dataclass(slots=True, frozen=True)
class WireShape:
    """How to send one answer: content-coding (None = identity), chunked framing, close the connection after."""

    encoding: str | None = None
    chunked: bool = False
    close: bool = False


PLAIN = WireShape()


def shape(response: Response, wire: WireShape) -> Response:
    """`response` as it goes on the wire: compressed, then chunked, then with `Connection: close`."""
    if wire == PLAIN:
        return response
    body = bytes(response.body)
    headers = response.headers
    if wire.encoding is not None and body:
        body = CODINGS[wire.encoding](body)
        headers["content-encoding"] = wire.encoding
        headers["vary"] = "accept-encoding"
    if wire.close:
        headers["connection"] = "close"
    if not wire.chunked:
        response.body = body
        headers["content-length"] = str(len(body))
        return response
    # No content-length on a streamed response: the server frames it with Transfer-Encoding: chunked.
    kept = {name: value for name, value in headers.items() if name != "content-length"}
    return StreamingResponse(_pieces(body), status_code=response.status_code, headers=kept)


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    size = max(1, -(-len(body) // CHUNK_PIECES))
    for start in range(0, len(body), size):
        yield body[start : start + size]
        await asyncio.sleep(0)  # let each piece go out as its own write


def bad_gateway_page() -> Response:
    """The page nginx (or a cloud load balancer) answers when the partner behind it fails."""
    return Response(BAD_GATEWAY_HTML, status_code=502, media_type="text/html")
