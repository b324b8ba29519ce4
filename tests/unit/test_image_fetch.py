"""The image fetcher (``pipeline/image_fetch.py``) against a real local HTTP(S) server, and data URLs.

The fetcher refuses loopback, so the test server on 127.0.0.1 is reached as ``images.example.com`` through the test
seam (``Network``: a fake resolver, and that one name exempt from the address check). Every other name and literal
goes through the real check, and the server's log shows that a refused URL was never requested.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from openai_routes.core.limits import MediaLimits
from openai_routes.pipeline.image_fetch import (
    FetchPolicy,
    ImageRefused,
    Network,
    decode_data_url,
    fetch_image,
    is_public_address,
)
from settings import ServiceConfig

PUBLIC = "images.example.com"  # stands for a public host: resolves to the test server, exempt from the check
REBOUND = "rebind.example.com"  # a public-looking name whose DNS answer is loopback: checked, refused
PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)
SECRET = "sig=s3cr3t-token"
POLICY = FetchPolicy(remote=True, allowed_domains=(), max_bytes=1024, timeout=2)


async def fake_resolve(host: str, port: int) -> list[str]:
    answers = {PUBLIC: ["127.0.0.1"], REBOUND: ["127.0.0.1"], "mixed.example.com": ["93.184.216.34", "127.0.0.1"]}
    if host not in answers:
        raise socket.gaierror(socket.EAI_NONAME, "unknown")
    return answers[host]


NETWORK = Network(resolve=fake_resolve, unchecked_hosts=frozenset({PUBLIC}))


@dataclass
class Server:
    port: int
    seen: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header) of every request

    def url(self, path: str, host: str = PUBLIC, scheme: str = "http") -> str:
        return f"{scheme}://user:pa55word@{host}:{self.port}{path}?{SECRET}"


def routes() -> web.RouteTableDef:
    table = web.RouteTableDef()

    @table.get("/image.png")
    async def image(_: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    @table.get("/hops/{n}")
    async def hops(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=PNG, content_type="image/png")
        raise web.HTTPFound(f"/hops/{n - 1}")

    @table.get("/to")
    async def to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["location"])

    @table.get("/big")
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=bytes(4096), content_type="image/png")

    @table.get("/streamed")  # no Content-Length: chunked, and more than the cap
    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(8):
            await response.write(bytes(512))
        return response

    @table.get("/slow")
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(body=PNG, content_type="image/png")

    @table.get("/drip")  # answers at once, then sends its body too slowly
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"x")
            await asyncio.sleep(0.05)
        return response

    @table.get("/page")
    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    @table.get("/gzip")
    async def gzip(_: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png", headers={"Content-Encoding": "gzip"})

    return table


async def serve(tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    """The test server on 127.0.0.1, logging every request it gets."""
    seen: list[tuple[str, str]] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append((request.path, request.host))
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.add_routes(routes())
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    try:
        yield Server(runner.addresses[0][1], seen)
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async for running in serve():
        yield running


async def refused(url: str, policy: FetchPolicy = POLICY, network: Network = NETWORK) -> str:
    """The refusal of ``url``, checked never to show its query or password."""
    with pytest.raises(ImageRefused) as refusal:
        await fetch_image(url, policy, network=network)
    message = refusal.value.message
    assert SECRET not in message and "pa55word" not in message and "sig=" not in message
    return message


async def test_a_public_image_is_fetched_with_its_host_header(server: Server) -> None:
    data, media_type = await fetch_image(server.url("/image.png"), POLICY, network=NETWORK)
    assert (data, media_type) == (PNG, "image/png")
    assert server.seen == [("/image.png", f"{PUBLIC}:{server.port}")]


async def test_a_name_resolving_to_loopback_is_refused_unrequested(server: Server) -> None:
    assert "not public" in await refused(server.url("/image.png", host=REBOUND))
    assert "not public" in await refused(server.url("/image.png", host="mixed.example.com"))  # every address counts
    assert "not public" in await refused(server.url("/image.png", host="localhost"), network=Network())  # real DNS
    assert server.seen == []


async def test_the_connection_goes_to_the_address_checked(server: Server) -> None:
    """A name's answer changes after the check (DNS rebinding): the fetch still connects to the first one."""
    answers = [["127.0.0.1"], ["127.0.0.2"]]  # the server listens on 127.0.0.1 only

    async def flipping(host: str, port: int) -> list[str]:
        return answers.pop(0)

    network = Network(resolve=flipping, unchecked_hosts=frozenset({PUBLIC}))
    assert await fetch_image(server.url("/image.png"), POLICY, network=network) == (PNG, "image/png")
    assert answers == [["127.0.0.2"]], "resolved once, for the check, and never again"


LITERALS = [
    "127.0.0.1", "[::1]", "0.0.0.0", "[::]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "169.254.169.254",
    "[fe80::1]", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "[fd00::1]", "224.0.0.1", "[ff02::1]",
    "255.255.255.255", "240.0.0.1", "[2002:7f00:1::]", "[64:ff9b::a9fe:a9fe]", "[::127.0.0.1]",
]  # fmt: skip
LEGACY = ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.0.0.1", "017700000001"]


@pytest.mark.parametrize("host", LITERALS)
async def test_a_literal_address_that_is_not_public_is_refused_unrequested(server: Server, host: str) -> None:
    assert "not public" in await refused(server.url("/image.png", host=host), network=Network())
    assert server.seen == []


@pytest.mark.parametrize("host", LEGACY)
async def test_legacy_numeric_hosts_are_refused_unrequested(server: Server, host: str) -> None:
    assert "standard form" in await refused(server.url("/image.png", host=host), network=Network())
    assert server.seen == []


@pytest.mark.parametrize(
    ("address", "public"),
    [("93.184.216.34", True), ("2606:4700::1111", True), ("::ffff:93.184.216.34", True), ("64:ff9b::808:808", True),
     ("2002:808:808::", True), ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False), ("fec0::1", False),
     ("2001:db8::1", False), ("192.0.2.1", False), ("198.18.0.1", False), ("fe80::1%eth0", False)],
)  # fmt: skip
def test_the_address_check(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


async def test_a_redirect_to_loopback_is_refused(server: Server) -> None:
    for location in (f"http://127.0.0.1:{server.port}/image.png", f"http://{REBOUND}:{server.port}/image.png"):
        server.seen.clear()
        message = await refused(server.url(f"/to?location={location}"))
        assert "redirected to points to an address that is not public" in message
        assert [path for path, _ in server.seen] == ["/to"]


async def test_three_redirects_are_followed_and_a_fourth_refused(server: Server) -> None:
    assert await fetch_image(server.url("/hops/3"), POLICY, network=NETWORK) == (PNG, "image/png")
    server.seen.clear()
    assert "more than 3 times" in await refused(server.url("/hops/4"))
    assert [path for path, _ in server.seen] == ["/hops/4", "/hops/3", "/hops/2", "/hops/1"]


async def test_a_redirect_to_another_scheme_is_refused(server: Server) -> None:
    assert "must use http or https" in await refused(server.url("/to?location=file:///etc/passwd"))


async def test_oversized_images_are_refused(server: Server) -> None:
    assert "larger than 1024 bytes" in await refused(server.url("/big"))  # by its Content-Length
    assert "larger than 1024 bytes" in await refused(server.url("/streamed"))  # counted as it arrives


async def test_the_timeout_covers_the_whole_fetch(server: Server) -> None:
    policy = replace(POLICY, timeout=0.3)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert "within 0.3 s" in await refused(server.url("/slow"), policy)
    assert "within 0.3 s" in await refused(server.url("/drip"), policy)
    assert loop.time() - start < 1.5


@pytest.mark.parametrize(("path", "reason"), [("/page", "(text/html)"), ("/gzip", "encoded")])
async def test_what_is_not_a_plain_image_is_refused(server: Server, path: str, reason: str) -> None:
    assert reason in await refused(server.url(path))


async def test_the_allowlist(server: Server) -> None:
    policy = replace(POLICY, allowed_domains=("example.com",))
    assert await fetch_image(server.url("/image.png"), policy, network=NETWORK) == (PNG, "image/png")
    network = replace(NETWORK, unchecked_hosts=frozenset({PUBLIC, "images.example.org", "notexample.com"}))
    for host in ("images.example.org", "notexample.com"):
        assert "does not fetch images from" in await refused(server.url("/image.png", host=host), policy, network)
    location = f"http://images.example.org:{server.port}/image.png"
    assert "does not fetch images from" in await refused(server.url(f"/to?location={location}"), policy, network)
    assert [path for path, _ in server.seen] == ["/image.png", "/to"]


async def test_remote_fetching_off(server: Server) -> None:
    assert "send the image as a base64 data URL" in await refused(
        server.url("/image.png"), replace(POLICY, remote=False)
    )
    assert server.seen == []


async def test_other_schemes_and_unknown_names(server: Server) -> None:
    assert "must use http or https" in await refused(f"ftp://{PUBLIC}/image.png?{SECRET}")
    assert "could not be resolved" in await refused(server.url("/image.png", host="nowhere.example.net"))
    assert "HTTP status 404" in await refused(server.url("/missing"))


def certificate(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for ``PUBLIC`` only, and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PUBLIC)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder(subject_name=name, issuer_name=name, public_key=key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(PUBLIC)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    return server, client


async def test_https_sends_the_name_as_sni_and_verifies_it(tmp_path: Path) -> None:
    server_tls, client_tls = certificate(tmp_path)
    names: list[str | None] = []

    def sni(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        names.append(name)

    server_tls.sni_callback = sni
    network = replace(NETWORK, tls=client_tls, unchecked_hosts=frozenset({PUBLIC, "other.example.com"}))
    resolve = network.resolve

    async def also_other(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "other.example.com" else await resolve(host, port)

    async for server in serve(server_tls):
        url = server.url("/image.png", scheme="https")
        assert await fetch_image(url, POLICY, network=network) == (PNG, "image/png")
        assert names == [PUBLIC]
        wrong_name = server.url("/image.png", host="other.example.com", scheme="https")
        assert "certificate could not be verified" in await refused(
            wrong_name, network=replace(network, resolve=also_other)
        )
        assert [path for path, _ in server.seen] == ["/image.png"]


def data_url(payload: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(payload).decode()}"


def test_a_data_url_decodes() -> None:
    assert decode_data_url(data_url(PNG), 1024) == (PNG, "image/png")
    unpadded = data_url(PNG[:10]).rstrip("=")
    assert decode_data_url(unpadded[:40] + "\n" + unpadded[40:], 1024) == (PNG[:10], "image/png")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png;base64,@@not base64@@", "not valid base64"),
        (data_url(b"hello", "text/plain"), "not an image"),
        (data_url(b"<svg/>", "image/svg+xml"), "not an image"),
        ("data:image/png,rawbytes", "must be base64"),
        ("data:image/png;base64,", "no data"),
        ("image/png;base64,AAAA", "malformed"),
        (data_url(bytes(1025)), "larger than 1024 bytes"),
        ("data:image/png;base64," + "@" * 10_000, "larger than 1024 bytes"),  # refused before decoding
    ],
)
def test_bad_data_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ImageRefused) as refusal:
        decode_data_url(url, 1024)
    assert reason in refusal.value.message


def test_the_media_config() -> None:
    media = MediaLimits(allowed_domains=[" Images.Example.COM. ", "cdn.example.org"])
    assert media.allowed_domains == ["images.example.com", "cdn.example.org"]
    policy = FetchPolicy.from_limits(media)
    assert policy == FetchPolicy(True, ("images.example.com", "cdn.example.org"), 20 * 1024 * 1024, 10, 3)
    for bad in ("https://example.com", "*.example.com", "example.com:443", "example.com/images", ""):
        with pytest.raises(ValidationError, match="allowed_domains"):
            MediaLimits(allowed_domains=[bad])
    config = ServiceConfig.model_validate({"models": [{"id": "m", "source": {"bentoml": "m"}}], "media": {}})
    assert (config.media.max_images_per_request, config.media.max_image_pixels) == (8, 25_000_000)
