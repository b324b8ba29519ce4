"""Images a request names by URL, fetched so that the URL cannot be turned against the server's network (SSRF).

``fetch_image`` takes an http(s) URL, ``decode_data_url`` a ``data:image/...;base64,`` URL; both return the bytes and
their media type or raise ``ImageRefused``, whose message is safe to show the client (it never holds the URL, its
query or userinfo, nor an address or a path of this server). The caller fetches only for a request that has passed
validation, and answers a refusal with 400 naming the part in ``param``.

Why a remote fetch cannot reach what it must not:
- Only http and https. The host is checked before anything connects: a literal address directly (non-standard
  numeric forms like ``127.1`` or ``2130706433`` are refused outright), a name after resolving it off the event loop.
  EVERY address it resolves to must be public (``is_public_address``): no loopback, private (RFC 1918, CGNAT, unique
  local), link-local (the cloud metadata address among them), multicast, unspecified, reserved or documentation
  ranges, for IPv4 and IPv6, including IPv4 addresses inside IPv6 (mapped, 6to4, NAT64; Teredo is refused).
- The connection goes to the checked addresses and no others: aiohttp's connector asks its resolver for a name's
  addresses, and ours (``_PinnedResolver``) answers only with those checked for that hop, never resolving again, so a
  DNS answer that changes between the check and the connect (rebinding) is never used. A literal address aiohttp
  connects to directly: it is the one checked. The request still carries the URL's name in its Host header and, over
  https, as SNI and the name the certificate is verified against.
- No proxy from the environment (``trust_env=False``: a proxy would connect on our behalf), no cookies, no connection
  kept between hops, no decompression (``Accept-Encoding: identity``; an encoded answer is refused).
- Redirects are followed by hand, at most ``max_redirects``; each target is checked like the first URL (scheme,
  allowlist, addresses). One timeout covers the whole fetch, resolving and redirects included. The size cap counts
  bytes as they arrive (a Content-Length above it refuses at once; its absence or a lie changes nothing), and only an
  ``image/*`` answer is read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from openai_routes.core.limits import MediaLimits

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], Awaitable[list[str]]]

REDIRECTS = frozenset({301, 302, 303, 307, 308})
HEADERS = {"Accept": "image/*", "Accept-Encoding": "identity", "User-Agent": "bento-oai-image-fetch"}
CHUNK = 64 * 1024
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,62}/[a-z0-9][a-z0-9.+-]{0,62}")
UNSUPPORTED = frozenset({"image/svg+xml"})  # markup, not pixels


class ImageRefused(Exception):
    """An image the server will not take; ``message`` says why, fit to show the client."""

    def __init__(self, message: str, code: str = "invalid_image_url") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class FetchPolicy:
    """How remote images are fetched, from the config's ``media:`` section (``from_limits``)."""

    remote: bool  # false: no http(s) URL is fetched at all (data URLs and file ids still work)
    allowed_domains: tuple[str, ...]  # empty: any public host; else the host equals one or is a subdomain of one
    max_bytes: int
    timeout: float  # seconds for the whole fetch, redirects included
    max_redirects: int = 3

    @classmethod
    def from_limits(cls, media: MediaLimits) -> FetchPolicy:
        return cls(
            remote=media.remote_fetch,
            allowed_domains=tuple(media.allowed_domains),
            max_bytes=media.max_image_bytes,
            timeout=media.fetch_timeout,
        )


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, by the system's resolver in the loop's thread pool."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Network:
    """How names are resolved and TLS verified. Production uses the default; it is a seam for tests only, which
    point a made-up public name at a local test server (``unchecked_hosts``: names whose addresses are not checked)
    and trust its certificate. Nothing derived from a request may ever build one."""

    resolve: Resolve = system_resolve
    unchecked_hosts: frozenset[str] = field(default_factory=frozenset)
    tls: ssl.SSLContext | None = None  # None: the system's trust store


SYSTEM_NETWORK = Network()


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is globally reachable unicast: what a fetch may connect to."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None or address.is_site_local:
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(address.packed[12:])
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def literal_address(host: str, what: str = "the image URL") -> IPAddress | None:
    """``host`` as an IP address if it is one in standard form; ``ImageRefused`` for the legacy numeric IPv4 forms
    (``127.1``, ``2130706433``, ``0x7f.0.0.1``, octal) that resolvers accept and readers misread."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host):
        try:
            socket.inet_aton(host)
        except OSError:
            return None
        raise ImageRefused(f"The host of {what} must be a name or an IP address in standard form.")
    return None


def allowed_host(host: str, domains: tuple[str, ...]) -> bool:
    return not domains or any(host == domain or host.endswith("." + domain) for domain in domains)


async def checked_addresses(target: URL, policy: FetchPolicy, network: Network, what: str) -> list[IPAddress]:
    """The addresses ``target`` may be fetched from, all public; ``ImageRefused`` otherwise. ``what`` names the URL
    in messages (the image URL, or one it redirected to)."""
    subject = what[:1].upper() + what[1:]
    if target.scheme not in ("http", "https"):
        raise ImageRefused(f"{subject} must use http or https.")
    host = (target.raw_host or "").lower().rstrip(".")
    if not host:
        raise ImageRefused(f"{subject} has no host.")
    if not allowed_host(host, policy.allowed_domains):
        raise ImageRefused(f"{subject} is on a host this server does not fetch images from.")
    literal = literal_address(host, what)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = [ipaddress.ip_address(address) for address in await network.resolve(host, target.port or 0)]
        except (OSError, ValueError):
            raise ImageRefused(f"The host of {what} could not be resolved.") from None
        if host in network.unchecked_hosts:
            return addresses
    if not addresses or not all(is_public_address(address) for address in addresses):
        raise ImageRefused(f"{subject} points to an address that is not public.")
    return addresses


class _PinnedResolver(AbstractResolver):
    """aiohttp's resolver for one fetch: a name's checked addresses, nothing for a name not checked."""

    def __init__(self) -> None:
        self.pins: dict[str, list[IPAddress]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self.pins.get(host)
        if not addresses:
            raise OSError(f"no checked address for {host}")
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        self.pins.clear()


@asynccontextmanager
async def _session(network: Network) -> AsyncIterator[tuple[aiohttp.ClientSession, _PinnedResolver]]:
    resolver = _PinnedResolver()
    connector = aiohttp.TCPConnector(
        resolver=resolver, use_dns_cache=False, force_close=True, ssl=network.tls if network.tls else True
    )
    async with aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    ) as session:
        yield session, resolver


async def fetch_image(url: str, policy: FetchPolicy, *, network: Network = SYSTEM_NETWORK) -> tuple[bytes, str]:
    """The image at the http(s) ``url``: its bytes and media type, fetched under ``policy`` (module docstring)."""
    if not policy.remote:
        raise ImageRefused("This server does not fetch images by URL; send the image as a base64 data URL.")
    try:
        target = URL(url)
    except (ValueError, TypeError):
        raise ImageRefused("The image URL is not a valid URL.") from None
    try:
        async with asyncio.timeout(policy.timeout), _session(network) as (session, resolver):
            return await _follow(session, resolver, target, policy, network)
    except TimeoutError:
        raise ImageRefused(f"The image URL did not answer within {policy.timeout:g} s.") from None
    except aiohttp.ClientSSLError:
        raise ImageRefused("The image URL's TLS certificate could not be verified for its host.") from None
    except (aiohttp.ClientError, OSError, ValueError):
        raise ImageRefused("The image URL could not be fetched.") from None


async def _follow(
    session: aiohttp.ClientSession, resolver: _PinnedResolver, target: URL, policy: FetchPolicy, network: Network
) -> tuple[bytes, str]:
    for hop in range(policy.max_redirects + 1):
        what = "a URL the image URL redirected to" if hop else "the image URL"
        resolver.pins = {target.raw_host or "": await checked_addresses(target, policy, network, what)}
        async with session.get(target, allow_redirects=False, headers=HEADERS) as response:
            if response.status not in REDIRECTS:
                return await _read_image(response, policy)
            if hop == policy.max_redirects:
                break
            location = response.headers.get("Location")
            if not location:
                raise ImageRefused("The image URL redirected without a location.")
            target = target.join(URL(location))
    raise ImageRefused(f"The image URL redirected more than {policy.max_redirects} times.")


async def _read_image(response: aiohttp.ClientResponse, policy: FetchPolicy) -> tuple[bytes, str]:
    if not 200 <= response.status < 300:
        raise ImageRefused(f"The image URL answered with HTTP status {response.status}.")
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise ImageRefused("The image URL answered with an encoded (compressed) body; send the image itself.")
    media_type = response.content_type.lower()
    if not media_type.startswith("image/") or media_type in UNSUPPORTED:
        shown = f" ({media_type})" if MEDIA_TYPE.fullmatch(media_type) else ""
        raise ImageRefused(f"The image URL did not answer with an image{shown}.")
    too_large = ImageRefused(f"The image is larger than {policy.max_bytes} bytes.")
    if response.content_length is not None and response.content_length > policy.max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        body += chunk
        if len(body) > policy.max_bytes:
            raise too_large
    if not body:
        raise ImageRefused("The image URL answered with an empty body.")
    return bytes(body), media_type


def decode_data_url(url: str, max_bytes: int) -> tuple[bytes, str]:
    """The image in a ``data:image/...;base64,...`` URL: its bytes and media type (``ImageRefused`` otherwise)."""
    head, comma, payload = url.partition(",")
    if not comma or head[:5].lower() != "data:":
        raise ImageRefused(
            "The image data URL is malformed: expected data:image/...;base64,...", "invalid_image_format"
        )
    media_type, *params = (part.strip().lower() for part in head[5:].split(";"))
    if not params or params[-1] != "base64":
        raise ImageRefused(
            "The image data URL must be base64-encoded (data:image/...;base64,...).", "invalid_image_format"
        )
    if not media_type.startswith("image/") or media_type in UNSUPPORTED or not MEDIA_TYPE.fullmatch(media_type):
        raise ImageRefused("The data URL is not an image (data:image/...).", "invalid_image_format")
    encoded = "".join(payload.split())
    if len(encoded) // 4 * 3 > max_bytes + 3:  # checked before decoding: a large payload is never decoded
        raise ImageRefused(f"The image is larger than {max_bytes} bytes.", "invalid_image_format")
    try:
        data = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused("The image data URL is not valid base64.", "invalid_image_format") from None
    if not data:
        raise ImageRefused("The image data URL holds no data.", "invalid_image_format")
    if len(data) > max_bytes:
        raise ImageRefused(f"The image is larger than {max_bytes} bytes.", "invalid_image_format")
    return data, media_type
