"""The fake providers refuse image content as the real APIs do: OpenAI takes `image_url`
parts (an http(s) URL or a base64 data URL) in user messages of models that see images;
Anthropic takes `image` blocks (base64 of JPEG, PNG, GIF or WebP, or a URL) in user turns."""

from __future__ import annotations

from typing import Any

import pytest

from tests.llm.test_fake_providers import ANTHROPIC_HEADERS, chat, fake, messages, post

__all__ = ["fake"]  # the fixture, shared with test_fake_providers.py

PNG = "iVBORw0KGgo="


def image_url(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


async def test_openai_accepts_text_and_image_url_parts(fake) -> None:
    body = chat(user({"type": "text", "text": "what?"}, image_url("https://x.test/a.png"),
                     image_url(f"data:image/png;base64,{PNG}", detail="low")))  # fmt: skip
    assert (await post(fake, "/v1/chat/completions", body)).status_code == 200


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (chat(user({"type": "image", "source": {"type": "url", "url": "https://x.test"}})),
         "messages[0].content[0].type", "Invalid value: 'image'"),
        (chat(user(image_url("file:///etc/passwd"))),
         "messages[0].content[0].image_url.url", "Invalid image URL"),
        (chat(user(image_url("https://x.test/a.png", detail="max"))),
         "messages[0].content[0].image_url.detail", "Invalid value"),
        (chat({"role": "system", "content": [image_url("https://x.test/a.png")]}),
         "messages[0].content[0].type", "Invalid value: 'image_url'"),
        (chat(user(image_url("https://x.test/a.png")), model="gpt-3.5-turbo"),
         "messages[0].content[0].type", "only supported by certain models"),
    ],
    ids=["anthropic-shape", "file-url", "bad-detail", "image-in-system", "text-only-model"],
)  # fmt: skip
async def test_openai_refuses_images_its_api_refuses(fake, body, param, words) -> None:
    fake.openai_models.append({"id": "gpt-3.5-turbo", "object": "model", "created": 1,
                               "owned_by": "fake"})  # fmt: skip
    refused = await post(fake, "/v1/chat/completions", body)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == param and words in error["message"]


def image(source: dict[str, Any]) -> dict[str, Any]:
    return {"type": "image", "source": source}


async def test_anthropic_accepts_base64_and_url_image_blocks(fake) -> None:
    body = messages(user(image({"type": "base64", "media_type": "image/png", "data": PNG}),
                         image({"type": "url", "url": "https://x.test/a.png"}),
                         {"type": "text", "text": "what?"}))  # fmt: skip
    assert (await post(fake, "/v1/messages", body, ANTHROPIC_HEADERS)).status_code == 200


@pytest.mark.parametrize(
    ("block", "words"),
    [
        (image({"type": "base64", "media_type": "image/tiff", "data": PNG}), "media_type"),
        (image({"type": "base64", "media_type": "image/png", "data": ""}), "data"),
        (image({"type": "url", "url": "file:///etc/passwd"}), "valid URL"),
        (image({"type": "file", "file_id": "f"}), "'base64', 'url'"),
        (image_url("https://x.test/a.png"), "Input tag 'image_url'"),
    ],
    ids=["tiff", "no-data", "file-url", "file-source", "openai-shape"],
)
async def test_anthropic_refuses_images_its_api_refuses(fake, block, words) -> None:
    refused = await post(fake, "/v1/messages", messages(user(block)), ANTHROPIC_HEADERS)
    assert refused.status_code == 400
    assert words in refused.json()["error"]["message"]


async def test_anthropic_refuses_an_image_in_an_assistant_turn(fake) -> None:
    body = messages(user({"type": "text", "text": "hi"}),
                    {"role": "assistant", "content": [image({"type": "url",
                                                             "url": "https://x.test"})]},
                    user({"type": "text", "text": "and?"}))  # fmt: skip
    refused = await post(fake, "/v1/messages", body, ANTHROPIC_HEADERS)
    assert refused.status_code == 400 and "messages.1.content.0.type" in refused.text
