"""A user message's images, sans-IO: what the prompt budget counts for them, how a summary's
transcript mentions them, and the shapes they take toward the model and the client."""

from __future__ import annotations

from kelpie_trio.agent.content import ContentPart, ImageSource, letta_content, llm_parts
from kelpie_trio.agent.context import IMAGE_TOKENS, estimate_tokens, transcript
from kelpie_trio.agent.messages import Message
from kelpie_trio.llm.types import ChatMessage, ImagePart, TextPart

IMAGE = ContentPart(type="image", source=ImageSource(type="url", url="https://x.test/a.png"))


def test_an_image_costs_its_tokens_in_the_prompt_budget() -> None:
    plain = ChatMessage("user", "look")
    with_image = ChatMessage("user", "look", parts=(TextPart("look"), ImagePart(url="u")))
    assert estimate_tokens([with_image]) - estimate_tokens([plain]) == IMAGE_TOKENS


def test_a_summary_transcript_says_images_were_left_out() -> None:
    message = Message(id="m", agent_id="a", seq=0, role="user", content="look",
                      parts=[ContentPart(type="text", text="look"), IMAGE, IMAGE])  # fmt: skip
    assert transcript([message], 1_000) == "[user] look [2 images omitted]"


def test_parts_keep_their_order_toward_the_model_and_the_client() -> None:
    parts = [IMAGE, ContentPart(type="text", text="this?")]
    assert llm_parts(parts) == (ImagePart(url="https://x.test/a.png"), TextPart("this?"))
    assert letta_content(parts) == [
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
        {"type": "text", "text": "this?", "signature": None},
    ]
