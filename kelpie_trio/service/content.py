"""A send's message content, parsed: a string, or Letta's TextContent and ImageContent parts.

An image's source is a URL (`http`, `https`, or a `data:` URL, which becomes base64 as
Letta makes it) or base64 data with its media type. Unlike Letta, the server does not
fetch an http(s) image itself: the URL goes to the provider, which fetches it (OpenAI and
Anthropic both take image URLs). Letta's `letta` source (an image already in its file
store) has no store here and is refused. Base64 must be an image type every provider
takes (JPEG, PNG, GIF, WebP) and valid base64, so the provider does not refuse it later,
in the middle of the turn.
"""

from __future__ import annotations

import binascii
from typing import Any

from kelpie_trio.agent.content import ContentPart, ImageSource
from kelpie_trio.agent.runs import RunInput
from kelpie_trio.errors import Invalid, NotFound
from kelpie_trio.llm.model_traits import takes_images
from kelpie_trio.models.agents import Agent
from kelpie_trio.service.common import read_record
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = ["IMAGE_MEDIA_TYPES", "check_model_takes", "parse_content", "sized_parts"]

Loc = list[str | int]

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def parse_content(content: Any, where: Loc) -> tuple[str, list[ContentPart] | None]:
    """The text of `content`, and its parts when it has an image (None: text only)."""
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        raise Invalid.field(where, "content must be a string or a list of text and image parts")
    parts: list[ContentPart] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise Invalid.field([*where, i, "text"], "a text part's text must be a string")
            parts.append(ContentPart(type="text", text=text))
        elif kind == "image":
            source = _source(part.get("source"), [*where, i, "source"])
            parts.append(ContentPart(type="image", source=source))
        else:
            raise Invalid.field([*where, i, "type"], "a content part is of type 'text' or 'image'")
    text = "".join(p.text or "" for p in parts)
    return text, parts if any(p.type == "image" for p in parts) else None


def _source(source: Any, where: Loc) -> ImageSource:
    if not isinstance(source, dict):
        raise Invalid.field(where, "an image part needs a source (url or base64)")
    kind = source.get("type")
    detail = source.get("detail")
    if detail is not None and detail not in ("low", "high", "auto"):
        raise Invalid.field([*where, "detail"], "detail is 'low', 'high' or 'auto'")
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise Invalid.field([*where, "url"], "an image url is required")
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            header, _, data = url.partition(",")
            if not header.endswith(";base64"):
                raise Invalid.field([*where, "url"], "a data URL image must be base64")
            media_type = header.removeprefix("data:").removesuffix(";base64") or "image/jpeg"
            return _base64(data, media_type, detail, where)
        if scheme not in ("http", "https"):
            raise Invalid.field(
                [*where, "url"],
                f"unsupported image URL scheme {scheme or '<missing>'!r}: only http, https "
                "and data URLs",
            )
        return ImageSource(type="url", url=url)
    if kind == "base64":
        data, media_type = source.get("data"), source.get("media_type")
        if not isinstance(data, str) or not isinstance(media_type, str):
            raise Invalid.field(where, "a base64 image needs data and media_type (strings)")
        return _base64(data, media_type, detail, where)
    if kind == "letta":
        raise Invalid.field([*where, "type"], "images from Letta's file store are not served")
    raise Invalid.field([*where, "type"], "an image source is of type 'url' or 'base64'")


def _base64(data: str, media_type: str, detail: Any, where: Loc) -> ImageSource:
    if media_type not in IMAGE_MEDIA_TYPES:
        raise Invalid.field(
            [*where, "media_type"],
            f"image type {media_type!r} is not taken; use one of {sorted(IMAGE_MEDIA_TYPES)}",
        )
    try:
        binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise Invalid.field([*where, "data"], "the image data is not valid base64") from None
    if not data:
        raise Invalid.field([*where, "data"], "the image data is empty")
    return ImageSource(type="base64", data=data, media_type=media_type, detail=detail)


async def check_model_takes(
    tr: Transaction, agent_id: str, inputs: list[RunInput], llm_config: dict[str, Any] | None
) -> None:
    """Within the send's transaction: a 422 when it has images and the model the run would
    use (`llm_config`, else the agent's) takes none. NotFound for a missing agent."""
    if not any(i.parts for i in inputs):
        return
    if llm_config is None:
        agent = await read_record(tr, keys.AGENTS.pack((agent_id,)), Agent)
        if agent is None:
            raise NotFound("Agent", agent_id)
        llm_config = agent.llm_config
    if not takes_images(llm_config):
        where = next(i for i, given in enumerate(inputs) if given.parts)
        raise Invalid.field(
            ["body", "messages", where, "content"],
            f"model {llm_config.get('handle') or llm_config.get('model')!r} does not take "
            "images; send text only, or use a model that takes images",
        )


def sized_parts(where: Loc, text: str, parts: list[ContentPart] | None) -> list[tuple[Loc, str]]:
    """What of one message counts against the send's budget, each with where it was sent:
    its text, and each image's data (or URL), which is stored with it."""
    sized: list[tuple[Loc, str]] = [(where, text)]
    for i, part in enumerate(parts or []):
        if part.source is not None:
            field = "data" if part.source.data is not None else "url"
            sized.append(([*where, i, "source", field], part.source.data or part.source.url or ""))
    return sized
