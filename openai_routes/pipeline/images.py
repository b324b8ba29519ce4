"""The images of a chat request: found in its messages, counted against the model and the ``media:`` limits, then
loaded (data URLs, http(s) URLs through the safe fetcher, files of ``/v1/files`` read for the caller) and decoded
with PIL into the ``ImageInput``s the engine takes.

Loading comes after every check a request can fail without its images (``prepare.prepare_chat`` runs the limits
first), so nothing is fetched for a request that is refused anyway. Every refusal is a 400 naming the part
(``messages[0].content[1].image_url``; a Responses ``input_image`` names its own field) and never echoes the URL.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from openai_routes.core.engine import ImageInput, ModelCapabilities
from openai_routes.core.errors import APIError, bad_request
from openai_routes.core.limits import MediaLimits
from openai_routes.pipeline.image_fetch import FetchPolicy, ImageRefused, decode_data_url, fetch_image
from openai_routes.protocol.chat import ChatMessage, ImagePart

FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})  # what OpenAI takes
FileReader = Callable[[str, int], Awaitable[bytes]]  # (file id, byte cap) -> the caller's file; LookupError if none


@dataclass(frozen=True)
class FoundImage:
    part: ImagePart
    param: str


@dataclass
class MediaAccess:
    """How one request reaches its images: the ``media:`` limits, and its caller's files (Responses ``file_id``).
    Loaded images are kept for the request, so a prompt rendered again (``truncation: auto``) fetches nothing twice."""

    limits: MediaLimits = field(default_factory=MediaLimits)
    read_file: FileReader | None = None
    loaded: dict[tuple[str | None, str], Any] = field(default_factory=dict)


def find_images(messages: Sequence[ChatMessage], input_param: str = "messages") -> list[FoundImage]:
    """The image parts of ``messages`` in order, each with the request field it came from."""
    found = []
    for i, message in enumerate(messages):
        for j, part in enumerate(message.content or []):
            if isinstance(part, ImagePart):
                found.append(FoundImage(part, part.source_param or f"{input_param}[{i}].content[{j}].image_url"))
    return found


def check_images(found: Sequence[FoundImage], capabilities: ModelCapabilities, limits: MediaLimits) -> None:
    """A model that reads no images refuses them; more than the model or the config allow is a 400 too."""
    if not found:
        return
    if capabilities.max_images == 0:
        raise bad_request("This model does not accept image input: send text content parts only.", found[0].param)
    allowed = min(capabilities.max_images, limits.max_images_per_request)
    if len(found) > allowed:
        raise bad_request(f"At most {allowed} images are allowed in one request to this model.", found[allowed].param)


async def load_images(found: Sequence[FoundImage], media: MediaAccess) -> list[ImageInput]:
    """Every image fetched or read, and decoded, at once (the first failure is the answer)."""
    images = await asyncio.gather(*(load_image(image, media) for image in found))
    return [ImageInput(image, one.param, one.part.image_url.detail) for image, one in zip(images, found, strict=True)]


async def load_image(found: FoundImage, media: MediaAccess) -> Any:
    key = (found.part.file_id, found.part.image_url.url)
    if key not in media.loaded:
        data = await image_bytes(found, media)
        media.loaded[key] = await asyncio.to_thread(decode, data, found.param, media.limits.max_image_pixels)
    return media.loaded[key]


async def image_bytes(found: FoundImage, media: MediaAccess) -> bytes:
    limits, file_id, url = media.limits, found.part.file_id, found.part.image_url.url
    try:
        if file_id is not None:
            return await file_bytes(file_id, found.param, media)
        if url.startswith("data:"):
            return decode_data_url(url, limits.max_image_bytes)[0]
        if url.startswith(("http://", "https://")):
            return (await fetch_image(url, FetchPolicy.from_limits(limits)))[0]
    except ImageRefused as exc:
        raise bad_request(exc.message, found.param, exc.code) from None
    raise bad_request("An image URL must be a data URL or an http(s) URL.", found.param)


async def file_bytes(file_id: str, param: str, media: MediaAccess) -> bytes:
    if media.read_file is None:
        raise bad_request("Images by 'file_id' are taken by the Responses API only.", param)
    try:
        return await media.read_file(file_id, media.limits.max_image_bytes)
    except LookupError:
        raise APIError(
            404, "No such file: the 'file_id' names none of yours.", param=param, code="file_not_found"
        ) from None
    except ValueError as exc:  # over the byte cap
        raise bad_request(str(exc), param) from None


def decode(data: bytes, param: str, max_pixels: int) -> Any:
    """The image as RGB, checked: a format OpenAI takes, at most ``max_pixels`` (read from the header, before the
    pixels are decoded), and decodable to the end."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise bad_request("The image could not be decoded: send a PNG, JPEG, WebP or GIF image.", param) from None
    if image.format not in FORMATS:
        raise bad_request(f"Unsupported image format {image.format}: send PNG, JPEG, WebP or GIF.", param)
    width, height = image.size
    if width * height > max_pixels:
        raise bad_request(f"The image is {width}x{height} pixels, more than the {max_pixels} allowed.", param)
    try:
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        raise bad_request("The image could not be decoded: its data is damaged or truncated.", param) from None
