"""A user message's content parts as stored: text and images, in the order sent.

Letta's MessageCreate content is a string or a list of TextContent and ImageContent
parts. A message of text only is stored as its text (`Message.content`); one with an
image keeps its parts too, so the model gets them in order and the history shows them
as they came. Plain values and functions, no I/O.
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.llm.types import ContentPart as LlmPart
from kelpie_trio.llm.types import ImagePart, TextPart

__all__ = ["ContentPart", "ImageSource", "letta_content", "llm_parts", "text_of"]


@attrs.define(kw_only=True)
class ImageSource:
    """Letta's UrlImage (`type` "url") or Base64Image (`type` "base64")."""

    type: str
    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None


@attrs.define(kw_only=True)
class ContentPart:
    type: str  # "text" | "image"
    text: str | None = None
    source: ImageSource | None = None


def text_of(parts: list[ContentPart]) -> str:
    """The text of a message's parts, as the history's text and its search index see it."""
    return "".join(p.text or "" for p in parts if p.type == "text")


def letta_content(parts: list[ContentPart]) -> list[dict[str, Any]]:
    """The parts as Letta shows a user message's content (TextContent, ImageContent)."""
    shown: list[dict[str, Any]] = []
    for part in parts:
        if part.type == "text":
            shown.append({"type": "text", "text": part.text or "", "signature": None})
            continue
        source = part.source
        assert source is not None
        if source.type == "url":
            shown.append({"type": "image", "source": {"type": "url", "url": source.url}})
        else:
            wire = {"type": "base64", "media_type": source.media_type, "data": source.data,
                    "detail": source.detail}  # fmt: skip
            shown.append({"type": "image", "source": wire})
    return shown


def llm_parts(parts: list[ContentPart]) -> tuple[LlmPart, ...]:
    """The parts as the LLM request carries them (each provider writes its own shape)."""
    out: list[LlmPart] = []
    for part in parts:
        if part.type == "text":
            out.append(TextPart(part.text or ""))
        elif part.source is not None:
            s = part.source
            out.append(ImagePart(url=s.url, data=s.data, media_type=s.media_type, detail=s.detail))
    return tuple(out)
