from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image as PILImage

from polymodal.errors import InputError
from polymodal.media import Image, Limits
from polymodal.media._fetch import IPAddress, address_problem, fetch
from tests.media.helpers import encode_pil, solid

PNG = encode_pil(solid((10, 200, 30)), "PNG")


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        if "Content_Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/image.png":
            self._send(200, PNG, Content_Type="image/png")
        elif self.path == "/to-image":
            self._send(302, Location="/image.png")
        elif self.path == "/to-metadata":
            self._send(302, Location="http://169.254.169.254/latest/meta-data/")
        elif self.path == "/to-file":
            self._send(302, Location="file:///etc/passwd")
        elif self.path == "/loop":
            self._send(302, Location="/loop")
        elif self.path == "/big-declared":
            self._send(200, b"x" * 10, Content_Length="5000000")
        elif self.path == "/big-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"y" * 4096
            for _ in range(100):
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, PNG)
        else:
            self._send(404, b"not found")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_from_a_local_server_when_explicitly_allowed(server: str) -> None:
    image = Image.from_url(f"{server}/to-image", allow_private=True)
    assert image.name == f"{server}/to-image"
    assert image.source_bytes == PNG
    assert image.to_pil().getpixel((0, 0)) == (10, 200, 30)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/x.png", "loopback"),
        ("http://[::1]/x.png", "loopback"),
        ("http://localhost/x.png", "loopback"),  # a name that resolves to loopback
        ("http://10.1.2.3/x.png", "private"),
        ("http://192.168.0.10/x.png", "private"),
        ("http://100.64.0.1/x.png", "CGNAT"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("ftp://example.com/x.png", "scheme"),
        ("file:///etc/passwd", "scheme"),
    ],
)
def test_private_and_special_destinations_are_refused(url: str, reason: str) -> None:
    with pytest.raises(InputError, match=reason) as caught:
        Image.from_url(url)
    assert caught.value.source == url


def test_allow_private_never_allows_metadata_or_other_schemes() -> None:
    for url in ("http://169.254.169.254/", "http://metadata.google.internal/", "file:///etc/passwd"):
        with pytest.raises(InputError):
            fetch(url, limits=Limits(), allow_private=True)


def test_every_redirect_hop_is_checked(server: str) -> None:
    with pytest.raises(InputError, match="metadata") as caught:
        fetch(f"{server}/to-metadata", limits=Limits(), allow_private=True)
    assert caught.value.source == f"{server}/to-metadata"
    with pytest.raises(InputError, match="scheme"):
        fetch(f"{server}/to-file", limits=Limits(), allow_private=True)


def test_redirect_limit(server: str) -> None:
    with pytest.raises(InputError) as caught:
        fetch(f"{server}/loop", limits=Limits(max_redirects=3), allow_private=True)
    assert caught.value.limit == "max_redirects=3"


@pytest.mark.parametrize("path", ["/big-declared", "/big-chunked"])
def test_download_size_is_capped(server: str, path: str) -> None:
    with pytest.raises(InputError) as caught:
        fetch(f"{server}{path}", limits=Limits(max_bytes=100_000), allow_private=True)
    assert caught.value.limit == "max_bytes=100000"


def test_download_time_is_capped(server: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InputError) as caught:
        fetch(f"{server}/slow", limits=Limits(fetch_seconds=0.3), allow_private=True)
    assert caught.value.limit == "fetch_seconds=0.3"
    assert time.perf_counter() - started < 2.5


def test_slow_name_resolution_is_bounded_by_fetch_seconds() -> None:
    def slow(host: str, port: int) -> list[IPAddress]:
        time.sleep(2)
        return [PUBLIC]

    started = time.perf_counter()
    with pytest.raises(InputError) as caught:
        fetch("http://slow-dns.example/", limits=Limits(fetch_seconds=0.2), resolver=slow)
    assert caught.value.limit == "fetch_seconds=0.2"
    assert time.perf_counter() - started < 1.5


def test_http_errors_become_input_errors(server: str) -> None:
    with pytest.raises(InputError, match="HTTP 404"):
        fetch(f"{server}/missing", limits=Limits(), allow_private=True)


PUBLIC = ipaddress.ip_address("93.184.216.34")


def _resolver(table: dict[str, str]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(table[host])]

    return resolve


def test_connection_is_pinned_to_the_checked_address_and_redirects_rechecked() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "https://internal.example/secret.png"})

    resolver = _resolver({"files.example": str(PUBLIC), "internal.example": "10.0.0.7"})
    with pytest.raises(InputError, match=r"10\.0\.0\.7") as caught:
        fetch(
            "https://files.example:8443/a.png",
            limits=Limits(),
            resolver=resolver,
            transport=httpx.MockTransport(handler),
        )
    assert caught.value.source == "https://files.example:8443/a.png"
    (request,) = seen  # the private second hop was never contacted
    assert request.url.host == str(PUBLIC) and request.url.port == 8443
    assert request.headers["host"] == "files.example:8443"
    assert request.extensions["sni_hostname"] == "files.example"


def test_pinned_fetch_returns_the_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})

    fetched = fetch(
        "http://files.example/a.png",
        limits=Limits(),
        resolver=_resolver({"files.example": str(PUBLIC)}),
        transport=httpx.MockTransport(handler),
    )
    assert fetched.data == PNG and fetched.content_type == "image/png"
    assert PILImage.open(__import__("io").BytesIO(fetched.data)).size == (32, 24)


def test_a_host_with_any_private_address_is_refused() -> None:
    def both(host: str, port: int) -> list[IPAddress]:
        return [PUBLIC, ipaddress.ip_address("127.0.0.1")]

    with pytest.raises(InputError, match="loopback"):
        fetch("http://mixed.example/", limits=Limits(), resolver=both)


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "127.0.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 wrapping 10.0.0.1
    ],
)
def test_address_policy_refuses(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address), allow_private=False) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_address_policy_allows_public(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address), allow_private=False) is None
