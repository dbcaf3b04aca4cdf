"""Webhook delivery over https to a real local TLS receiver, through the pinned (SSRF-vetted) address.

The delivery connects to the IP address the SSRF check vetted, yet must verify the receiver's certificate against
the URL's host name (SNI and hostname check), never against the IP. Certificates come from a throwaway CA made
here; the delivery client trusts it through SSL_CERT_FILE (httpx reads it when a client is created).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from standardwebhooks import Webhook

from gateway_core import webhooks as wh
from gateway_core.webhooks import delivery, destinations, new_secret
from tests.helpers import free_port
from tests.integration import test_webhooks as deliveries
from tests.integration.test_webhook_delivery import Received, Receiver
from tests.integration.test_webhooks import Env

env = deliveries.env  # the fixture: webhook deliveries on the test's own Redis database

ALLOW = ["127.0.0.0/8"]  # the receiver is local; SSRF rules refuse loopback otherwise
HOOK_HOST = "hooks.fedgate.test"  # resolved by the SSRF check only (see pinned_dns): the system cannot resolve it


# --- a throwaway CA and leaf certificates --------------------------------------------------------------------


@dataclass
class Pki:
    directory: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    ca_file: Path

    def leaf(self, name: str, dns: Sequence[str], ips: Sequence[str] = ()) -> tuple[Path, Path]:
        """(cert file, key file) for a server certificate naming `dns` and `ips`, signed by the CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        cert_file, key_file = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
        return cert_file, key_file


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("webhook-pki")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedgate test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Pki(directory, key, cert, ca_file)


# --- a TLS receiver ------------------------------------------------------------------------------------------


@dataclass
class TlsReceiver:
    """The integration tests' scripted Receiver behind TLS, recording the SNI name of every handshake."""

    receiver: Receiver
    server: ThreadingHTTPServer
    sni: list[str | None] = field(default_factory=list)

    def url(self, host: str, path: str) -> str:
        return f"https://{host}:{self.receiver.port}{path}"


@pytest.fixture()
def tls_receiver(pki: Pki, request: pytest.FixtureRequest) -> Iterator[TlsReceiver]:
    """A receiver on 127.0.0.1 only, serving a leaf for (DNS names, IPs) given as the indirect parameter
    (default: localhost and 127.0.0.1)."""
    dns, ips = getattr(request, "param", (["localhost"], ["127.0.0.1"]))
    cert_file, key_file = pki.leaf(dns[0] if dns else ips[0], dns, ips)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    receiver = Receiver(free_port())
    sni: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = dict(self.headers.items())
            headers["x-served-on"] = self.connection.getsockname()[0]  # the address the client connected to
            status, _ = receiver.answer(Received(self.path, headers, body, time.monotonic()))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    # The handshake runs in accept(); a failed one is an OSError there, which the server drops silently.
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="tls-webhook-receiver", daemon=True).start()
    try:
        yield TlsReceiver(receiver, server, sni)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def trust_ca(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make delivery clients created from now on trust the throwaway CA (httpx honours SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture()
def pinned_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SSRF check's resolver answers 127.0.0.1 for localhost and HOOK_HOST; returns the names it resolved.

    Only the check resolves through this; the HTTP client could not resolve HOOK_HOST at all, so a delivery to it
    that arrives went to the pinned address. Pinning localhost to 127.0.0.1 keeps a ::1-first resolver out of it.
    """
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host in ("localhost", HOOK_HOST):
            return ["127.0.0.1"]
        raise wh.WebhookDestinationUnresolved(f"webhook host {host!r} does not resolve (test DNS)")

    monkeypatch.setattr(destinations, "_resolve", resolve)
    return asked


def deliver_over(env: Env, delivery_id: str, attempt: int, *, shared: bool = False,
                 sent: list[httpx.Request] | None = None) -> str:
    """One attempt through a real client: the worker's shared per-loop client, or a fresh client (http=None)."""

    async def go(client: aioredis.Redis) -> str:
        if not shared:
            return await delivery.deliver(client, env.cipher, delivery_id, attempt, allow=ALLOW)
        http = delivery.http_client(10)
        if sent is not None:
            async def record(request: httpx.Request) -> None:
                sent.append(request)

            http.event_hooks["request"] = [record]
        try:
            return await delivery.deliver(client, env.cipher, delivery_id, attempt, allow=ALLOW, http=http)
        finally:
            delivery._http_clients.pop(id(asyncio.get_running_loop()), None)
            await http.aclose()

    return env.run(go)


def deliver_both_over_one_client(env: Env, first: str, second: str) -> tuple[str, str]:
    """Attempt 1 of two deliveries, one after the other, over the worker's shared client (keep-alive pool)."""

    async def go(client: aioredis.Redis) -> tuple[str, str]:
        http = delivery.http_client(10)
        try:
            one = await delivery.deliver(client, env.cipher, first, 1, allow=ALLOW, http=http)
            two = await delivery.deliver(client, env.cipher, second, 1, allow=ALLOW, http=http)
            return one, two
        finally:
            delivery._http_clients.pop(id(asyncio.get_running_loop()), None)
            await http.aclose()

    return env.run(go)


# --- the tests -----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("trust_ca")
def test_https_delivery_is_signed_and_verified_against_the_host_name(
    env: Env, tls_receiver: TlsReceiver, pinned_dns: list[str]
) -> None:
    secret = new_secret()
    url = tls_receiver.url("localhost", "/hook?x=1")
    delivery_id = env.enqueue(url, [secret])
    sent: list[httpx.Request] = []

    result = deliver_over(env, delivery_id, 1, shared=True, sent=sent)

    assert result == "delivered (HTTP 200) on attempt 1", result
    stored = env.hash(delivery_id)
    assert stored["state"] == "delivered" and stored["last_status"] == "200"
    [received] = tls_receiver.receiver.seen("/hook?x=1")
    event = Webhook(secret).verify(received.body, received.headers)
    wh.verify(secret, received.headers, received.body)
    assert received.headers["webhook-id"] == stored["msg_id"] and event["type"] == "job.succeeded"
    # Pinned: the check resolved the name, the client connected to the vetted IP with the name as SNI and Host.
    assert pinned_dns == ["localhost"]
    assert [(r.url.host, r.extensions.get("sni_hostname")) for r in sent] == [("127.0.0.1", "localhost")]
    assert tls_receiver.sni == ["localhost"]
    assert received.headers["host"] == f"localhost:{tls_receiver.receiver.port}"
    assert received.headers["x-served-on"] == "127.0.0.1"


@pytest.mark.parametrize("tls_receiver", [([HOOK_HOST], [])], indirect=True, ids=["leaf-for-name-only"])
@pytest.mark.usefixtures("trust_ca")
def test_a_name_only_the_ssrf_check_resolves_is_reached_through_the_pinned_address(
    env: Env, tls_receiver: TlsReceiver, pinned_dns: list[str]
) -> None:
    secret = new_secret()
    delivery_id = env.enqueue(tls_receiver.url(HOOK_HOST, "/pinned"), [secret])

    assert deliver_over(env, delivery_id, 1).startswith("delivered"), env.hash(delivery_id)

    [received] = tls_receiver.receiver.seen("/pinned")
    Webhook(secret).verify(received.body, received.headers)
    assert pinned_dns == [HOOK_HOST] and tls_receiver.sni == [HOOK_HOST]
    assert received.headers["host"] == f"{HOOK_HOST}:{tls_receiver.receiver.port}"


@pytest.mark.parametrize(
    "tls_receiver",
    [(["other.example"], []), ([], ["127.0.0.1"])],  # another name; the pinned IP only (not the name)
    indirect=True,
    ids=["leaf-for-other.example", "leaf-for-127.0.0.1-only"],
)
@pytest.mark.usefixtures("trust_ca", "pinned_dns")
def test_a_certificate_not_for_the_host_name_is_refused(env: Env, tls_receiver: TlsReceiver) -> None:
    delivery_id = env.enqueue(tls_receiver.url("localhost", "/mismatch"), [new_secret()])

    result = deliver_over(env, delivery_id, 1)

    assert result.startswith("attempt 1 failed (connection failed (ConnectError)); retry in"), result
    stored = env.hash(delivery_id)
    assert stored["state"] == "pending" and stored["next_attempt"] == "2" and stored["last_status"] == ""
    assert env.zscore(wh.DELAYED_KEY, f"{delivery_id}:2") is not None
    assert tls_receiver.receiver.seen("/mismatch") == []
    assert tls_receiver.sni == ["localhost"]  # it reached the receiver and asked for the name, then refused


@pytest.mark.usefixtures("pinned_dns")
def test_an_untrusted_ca_is_refused(env: Env, tls_receiver: TlsReceiver) -> None:
    delivery_id = env.enqueue(tls_receiver.url("localhost", "/untrusted"), [new_secret()])
    assert "connection failed (ConnectError)" in deliver_over(env, delivery_id, 1)
    assert tls_receiver.receiver.seen("/untrusted") == []


@pytest.mark.parametrize("tls_receiver", [(["localhost"], [])], indirect=True, ids=["leaf-for-localhost"])
@pytest.mark.usefixtures("trust_ca", "pinned_dns")
def test_a_kept_alive_connection_is_not_reused_for_another_host_name(env: Env, tls_receiver: TlsReceiver) -> None:
    """Two host names pinned to one address and port: the second must get its own handshake and be refused,
    not ride the first one's connection (verified for a different name).

    The pinned URL carries the IP, and httpcore pools connections by (scheme, IP, port) whatever the SNI name, so
    a pooled TLS connection would carry the second tenant's signed event unverified. It holds today because the
    delivery never reads the response body, so each connection is closed with its response: this test guards it.
    """
    first = env.enqueue(tls_receiver.url("localhost", "/first"), [new_secret()])
    second = env.enqueue(tls_receiver.url(HOOK_HOST, "/second"), [new_secret()])

    one, two = deliver_both_over_one_client(env, first, second)

    assert one.startswith("delivered"), one
    assert "connection failed (ConnectError)" in two, two
    assert tls_receiver.receiver.seen("/second") == []
    assert tls_receiver.sni == ["localhost", HOOK_HOST]
