"""Where deliveries may go: http(s) URLs whose every address is public, unless allow-listed (SSRF protection)."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from gateway_core.webhooks.errors import WebhookDestinationRefused, WebhookDestinationUnresolved
from gateway_core.webhooks.policy import webhook_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_allow(allow: Iterable[str]) -> tuple[list[IPNetwork], set[str]]:
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for entry in allow:
        item = entry.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            hosts.add(item.lower().rstrip("."))
    return networks, hosts


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forbidden_kind(address: IPAddress) -> str | None:
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),  # e.g. 100.64.0.0/10 (carrier-grade NAT, some cloud metadata)
    )
    return next((kind for kind, hit in checks if hit), None)


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookDestinationUnresolved(f"webhook host {host!r} does not resolve ({exc})") from None
    addresses: list[str] = []
    for family, *_rest, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            addr = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 scope id
            if addr not in addresses:
                addresses.append(addr)
    if not addresses:
        raise WebhookDestinationUnresolved(f"webhook host {host!r} resolves to no IPv4 or IPv6 address")
    return addresses


def resolve_destination(url: str, allow: Iterable[str] = ()) -> list[str]:
    """Vet a webhook URL; return the addresses to connect to ([] when the host name itself is allow-listed).

    Refused (WebhookDestinationRefused): anything but http(s), and a host any of whose addresses is private,
    loopback, link-local, reserved, multicast, unspecified or otherwise non-public, unless that address is
    inside an allow-listed CIDR or the host name is allow-listed. Connecting to the returned addresses (not
    resolving again) keeps a DNS answer that changes between check and connect from slipping through.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookDestinationRefused(f"webhook URL is malformed ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookDestinationRefused(
            f"webhook URL must start with http:// or https://, not {parts.scheme + '://' if parts.scheme else url!r}"
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise WebhookDestinationRefused("webhook URL has no host")
    networks, hosts = _parse_allow(allow)
    if host.lower() in hosts:
        return []
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    candidates = [str(literal)] if literal is not None else _resolve(host, port)
    for candidate in candidates:
        address = _unmapped(ipaddress.ip_address(candidate))
        kind = _forbidden_kind(address)
        if kind is None or any(address.version == net.version and address in net for net in networks):
            continue
        if literal is not None:
            what, remedy = f"{host} is a {kind} address", f"allow-list {address} or a CIDR containing it"
        else:
            what = f"{host} resolves to {address}, a {kind} address"
            remedy = f"allow-list {host}, or {address} or a CIDR containing it"
        raise WebhookDestinationRefused(
            f"webhook destination {what}; fedgate refuses these to prevent SSRF. "
            f"Use a public endpoint, or {remedy} in the webhook allow list (config webhooks.allow)"
        )
    return candidates


def check_destination(url: str, allow: list[str]) -> None:
    """Raise WebhookDestinationRefused (or WebhookDestinationUnresolved) unless `url` may receive webhooks."""
    resolve_destination(url, allow)


def allow_list(config: Any, settings: Any = None) -> list[str]:
    """Config `webhooks.allow`, plus FEDGATE_WEBHOOK_ALLOW (comma-separated) for operators and tests."""
    extra = getattr(settings, "webhook_allow", None) or os.environ.get("FEDGATE_WEBHOOK_ALLOW", "")
    return [*webhook_settings(config).allow, *(item.strip() for item in extra.split(",") if item.strip())]
