"""Fetch media from http(s) URLs without becoming a server-side request forgery (SSRF) tool.

Every hop (the URL and each redirect) is checked: scheme http/https only; the host is resolved here and
every address it resolves to must be public (no loopback, private, link-local, multicast, unspecified,
reserved, CGNAT or cloud-metadata address); the connection then goes to the checked IP itself (pinned, so
a second DNS answer cannot rebind it) while the original Host header and TLS SNI / certificate name are
sent. Downloads stream and stop at ``limits.max_bytes`` and ``limits.fetch_seconds``. httpx errors are
translated into :class:`InputError` here.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from polymodal.errors import InputError
from polymodal.media.limits import Limits

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud instance-metadata endpoints; refused even with ``allow_private=True``.
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack...
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
METADATA_HOSTNAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fetched:
    """A completed download."""

    data: bytes
    url: str  # the final URL, after redirects
    content_type: str | None


Resolver = Callable[[str, int], list[IPAddress]]


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def address_problem(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why ``address`` must not be fetched from, or ``None`` when it may be."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None:
            problem = address_problem(embedded, allow_private=allow_private)
            if problem:
                return f"{problem} (embedded in {address})"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if allow_private:
        return None
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT, "a CGNAT (100.64/10) address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    for hit, why in checks:
        if hit:
            return why
    return None


def _resolve_within(resolver: Resolver, host: str, port: int, seconds: float) -> list[IPAddress] | None:
    """Run ``resolver`` with a deadline (getaddrinfo itself has none); ``None`` when it ran out of time."""
    outcome: list[list[IPAddress] | BaseException] = []

    def run() -> None:
        try:
            outcome.append(resolver(host, port))
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)

    thread = threading.Thread(target=run, name="polymodal-resolve", daemon=True)
    thread.start()
    thread.join(max(seconds, 0.0))
    if not outcome:
        return None
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _checked_address(
    url: httpx.URL,
    source: str,
    resolver: Resolver,
    *,
    allow_private: bool,
    redirected: bool,
    seconds: float,
    limits: Limits,
) -> IPAddress:
    hop = f" (redirected to {url})" if redirected else ""
    if url.scheme not in ("http", "https"):
        raise InputError(source, f"URL scheme {url.scheme!r} is not allowed; use http or https{hop}")
    host = url.host
    if not host:
        raise InputError(source, f"URL has no host{hop}")
    if host.rstrip(".").lower() in METADATA_HOSTNAMES:
        raise InputError(source, f"host {host!r} is a cloud metadata endpoint{hop}")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = _resolve_within(resolver, url.raw_host.decode("ascii"), port, seconds)
    except (OSError, UnicodeError) as exc:
        raise InputError(source, f"cannot resolve host {host!r} ({exc}){hop}") from exc
    if addresses is None:
        raise _timeout(source, limits)
    if not addresses:
        raise InputError(source, f"host {host!r} resolves to no address{hop}")
    for address in addresses:
        problem = address_problem(address, allow_private=allow_private)
        if problem:
            raise InputError(
                source,
                f"refusing to fetch: {host!r} resolves to {address}, {problem}{hop}",
                limit="public addresses only (pass allow_private=True for a trusted local server)",
            )
    return addresses[0]


def _pinned_request(client: httpx.Client, url: httpx.URL, address: IPAddress) -> httpx.Request:
    host_header = url.raw_host.decode("ascii")
    if ":" in host_header:
        host_header = f"[{host_header}]"
    if url.port is not None:
        host_header += f":{url.port}"
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    return client.build_request(
        "GET",
        url.copy_with(host=str(address)),
        headers={
            "Host": host_header,
            "Accept": "image/*, application/pdf;q=0.9, */*;q=0.5",
            "Accept-Encoding": "identity",  # sizes are checked on what arrives; no decompression bombs
        },
        extensions=extensions,
    )


def fetch(
    url: str,
    *,
    limits: Limits,
    allow_private: bool = False,
    resolver: Resolver = resolve,
    transport: httpx.BaseTransport | None = None,
) -> Fetched:
    """Download ``url`` under ``limits`` with the SSRF checks described in the module docstring.

    Args:
        url: an http or https URL.
        limits: ``max_bytes``, ``fetch_seconds`` and ``max_redirects`` apply.
        allow_private: allow loopback and private-network addresses (a trusted local server). Metadata
            endpoints, multicast and unspecified addresses stay refused.
        resolver: host name resolution (injectable for tests).
        transport: httpx transport (injectable for tests).
    """
    deadline = time.monotonic() + limits.fetch_seconds
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InputError(url, f"invalid URL ({exc})") from exc
    url = str(url)  # errors name the URL exactly as given
    with httpx.Client(
        transport=transport,
        trust_env=False,  # a proxy would resolve the host itself and undo the pinning
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),  # never reuse a connection across hosts
    ) as client:
        for hop in range(limits.max_redirects + 1):
            address = _checked_address(
                current,
                url,
                resolver,
                allow_private=allow_private,
                redirected=hop > 0,
                seconds=deadline - time.monotonic(),
                limits=limits,
            )
            request = _pinned_request(client, current, address)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout(url, limits)
            request.extensions["timeout"] = httpx.Timeout(remaining).as_dict()
            try:
                response = client.send(request, stream=True)
                try:
                    if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
                        current = _redirect_target(current, response.headers["location"], url)
                        continue
                    if response.status_code != 200:
                        raise InputError(url, f"download failed: HTTP {response.status_code}")
                    data = _read_capped(response, url, limits, deadline)
                    return Fetched(data, str(current), response.headers.get("content-type"))
                finally:
                    response.close()
            except httpx.TimeoutException as exc:
                raise _timeout(url, limits) from exc
            except httpx.HTTPError as exc:
                raise InputError(url, f"download failed ({type(exc).__name__}: {exc})") from exc
    raise InputError(
        url, f"more than {limits.max_redirects} redirects", limit=f"max_redirects={limits.max_redirects}"
    )


def _redirect_target(current: httpx.URL, location: str, source: str) -> httpx.URL:
    try:
        return current.join(location)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InputError(source, f"invalid redirect location {location!r}") from exc


def _timeout(source: str, limits: Limits) -> InputError:
    return InputError(
        source,
        f"download did not finish within {limits.fetch_seconds:g} s",
        limit=f"fetch_seconds={limits.fetch_seconds:g}",
    )


def _read_capped(response: httpx.Response, source: str, limits: Limits, deadline: float) -> bytes:
    too_big = InputError(source, "download is too large", limit=f"max_bytes={limits.max_bytes}")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise too_big
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_bytes(_CHUNK):
        received += len(chunk)
        if received > limits.max_bytes:
            raise too_big
        if time.monotonic() > deadline:
            raise _timeout(source, limits)
        chunks.append(chunk)
    return b"".join(chunks)


__all__ = ["METADATA_ADDRESSES", "METADATA_HOSTNAMES", "Fetched", "address_problem", "fetch", "resolve"]
