"""A partner that misbehaves at the socket level, for wire tests.

An HTTP/1.1 server written on asyncio streams (not a framework), running on its own thread and loop, so each
behaviour is exactly the bytes a real server, proxy or load balancer sends: compressed bodies, chunked framing,
connections closed or reset mid-answer, HTML error pages, answers that drip. The answer it gives is OpenAI-shaped.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import json
import socket
import ssl
import struct
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import brotli
import zstandard
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value

    @property
    def prompt(self) -> str:
        messages = self.json().get("messages")
        assert isinstance(messages, list)
        return str(messages[-1]["content"])


Behaviour = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]  # returns: keep the connection open


def completion(text: str = "wire says hi") -> bytes:
    return json.dumps({
        "id": "chatcmpl-wire", "object": "chat.completion", "created": 1, "model": "wire-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }).encode()


def encode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "br":
        return bytes(brotli.compress(body))
    if encoding == "zstd":
        return bytes(zstandard.ZstdCompressor().compress(body))
    if encoding == "identity":
        return body
    raise ValueError(encoding)


def head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN, as a crashed peer or a killed proxy does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --- behaviours --------------------------------------------------------------------------------------------------

def answer(encoding: str = "identity", *, text: str = "wire says hi", chunked: bool = False,
           close: bool = False) -> Behaviour:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        body = encode(completion(text), encoding)
        headers = {"Content-Type": "application/json"}
        if encoding != "identity":
            headers["Content-Encoding"] = encoding
        if close:
            headers["Connection"] = "close"
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
            writer.write(head("200 OK", headers))
            for start in range(0, len(body), 7):
                piece = body[start:start + 7]
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            headers["Content-Length"] = str(len(body))
            writer.write(head("200 OK", headers) + body)
        await writer.drain()
        return not close

    return respond


def raw(status: str, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> Behaviour:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)), **(extra or {})}
        writer.write(head(status, headers) + body)
        await writer.drain()
        return True

    return respond


HTML_502 = raw("502 Bad Gateway", b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
               b"Gateway</h1></center><hr><center>nginx</center></body></html>", "text/html")


async def reset_before_answer(request: Request, writer: asyncio.StreamWriter) -> bool:
    reset(writer)
    return False


async def reset_mid_body(request: Request, writer: asyncio.StreamWriter) -> bool:
    body = completion()
    writer.write(head("200 OK", {"Content-Type": "application/json", "Content-Length": str(len(body))})
                 + body[: len(body) // 2])
    await writer.drain()
    reset(writer)
    return False


async def truncated_body(request: Request, writer: asyncio.StreamWriter) -> bool:
    body = completion()
    writer.write(head("200 OK", {"Content-Type": "application/json", "Content-Length": str(len(body))})
                 + body[: len(body) // 2])
    await writer.drain()
    writer.close()  # a clean FIN, but the body is short of its Content-Length
    return False


async def not_really_gzip(request: Request, writer: asyncio.StreamWriter) -> bool:
    body = b"this is not gzip at all, whatever the header says"
    writer.write(head("200 OK", {"Content-Type": "application/json", "Content-Encoding": "gzip",
                                 "Content-Length": str(len(body))}) + body)
    await writer.drain()
    return True


def oversized(size: int, encoding: str = "identity") -> Behaviour:
    """An answer `size` bytes long once decoded (with gzip: a few kilobytes on the wire)."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        body = encode(b'{"pad": "' + b"a" * size + b'"}', encoding)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        if encoding != "identity":
            headers["Content-Encoding"] = encoding
        writer.write(head("200 OK", headers) + body)
        await writer.drain()
        return True

    return respond


def drip(interval_s: float) -> Behaviour:
    """Headers at once, then one byte of the body every `interval_s`: every read is quick, the whole is not."""

    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        body = completion()
        writer.write(head("200 OK", {"Content-Type": "application/json", "Content-Length": str(len(body))}))
        for byte in body:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(interval_s)
        return True

    return respond


def slow(delay_s: float) -> Behaviour:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(delay_s)
        return await answer()(request, writer)

    return respond


# --- the server --------------------------------------------------------------------------------------------------

@dataclass
class WireServer:
    """Serves `behaviour` (swap it at any time) and records every request it read."""

    behaviour: Behaviour = field(default_factory=answer)
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def prompts(self) -> list[str]:
        with self._lock:
            return [r.prompt for r in self.requests]

    def start(self) -> WireServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop

            async def serve() -> None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()
                async with self._server:
                    await self._server.serve_forever()

            try:
                loop.run_until_complete(serve())
            except asyncio.CancelledError:
                pass
            finally:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending))
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="wire-server")
        self._thread.start()
        assert ready.wait(10), "wire server did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            if self._thread is not None:
                self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                with self._lock:
                    self.requests.append(request)
                if not await self.behaviour(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            if not writer.transport.is_closing():
                writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head_bytes = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head_bytes.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)


@contextmanager
def wire_server(behaviour: Behaviour | None = None, tls: ssl.SSLContext | None = None) -> Iterator[WireServer]:
    server = WireServer(behaviour or answer(), tls=tls).start()
    try:
        yield server
    finally:
        server.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed_tls(directory: Path) -> ssl.SSLContext:
    """A server context with a certificate no client trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "untrusted.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "untrusted.pem", directory / "untrusted.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context
