"""The console's agent views beyond the chat, in a real browser (headless Chromium) against
a real server with the offline sim model: transfer a session, chat in a new conversation,
attach and detach tools, and see transfers and crash recoveries in the runtime view.

Waits are bounded waits for a condition (WebDriverWait), never sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import running_server, server_process
from tests.console.conftest import _missing
from tests.console.test_console_browser import (
    _CONTRAST,
    _css,
    _overflows,
    _send,
    _text_in,
    _turns,
    _unlabelled_controls,
    _until_approval,
    _wait,
)

CAREFUL = {
    "model": "sim/agent",
    "tools": ["archival_memory_insert"],
    "tool_rules": [{"type": "requires_approval", "tool_name": "archival_memory_insert"}],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    with running_server(tmp_path_factory.mktemp("console-agent-server")) as url:
        yield url


def _agent(server: str, name: str, **fields: Any) -> str:
    created = httpx.post(
        f"{server}/v1/agents/", json={"name": name, "model": "sim/agent", **fields}
    )
    assert created.status_code == 200, created.text
    return created.json()["id"]


def _accessible(driver: Any, where: str) -> None:
    assert _unlabelled_controls(driver) == [], where
    assert driver.execute_script(_CONTRAST) == [], where


def test_a_session_waiting_for_approval_moves_to_another_agent_and_goes_on_there(
    browser: Any, server: str
) -> None:
    source = _agent(server, "Sender", **{k: v for k, v in CAREFUL.items() if k != "model"})
    target = _agent(server, "Heir", **{k: v for k, v in CAREFUL.items() if k != "model"})
    browser.get(f"{server}/#/agents/{source}")
    _css(browser, "#chat-input")
    _until_approval(browser)  # the session is parked: unfinished, so it may move

    browser.find_element("link text", "Sessions").click()
    card = _css(browser, ".session .transfer")
    _text_in(browser, ".sessions", "waiting for approval")
    session_id = browser.find_element("css selector", ".session:has(.transfer)").get_attribute(
        "data-session-id"
    )
    _accessible(browser, "sessions")
    from selenium.webdriver.support.ui import Select

    Select(card.find_element("css selector", "select")).select_by_value(target)
    card.find_element("css selector", "button[type=submit]").click()
    _text_in(browser, ".transfer-result", "moved to Heir")
    _text_in(browser, ".transfer-result", "waiting for approval")
    assert "notice" in browser.switch_to.active_element.get_attribute("class")  # focus kept
    _accessible(browser, "the transfer's result")
    # The store agrees: the session is the target's now, the source's no more.
    moved = httpx.get(f"{server}/v1/agents/{target}/sessions/{session_id}")
    assert moved.status_code == 200 and moved.json()["agent_id"] == target
    assert httpx.get(f"{server}/v1/agents/{source}/sessions/{session_id}").status_code == 404

    # At the target, the call waits for an answer; approved, the session ends there.
    browser.find_element("css selector", ".transfer-result a").click()
    _text_in(browser, "main h1", "Heir")
    browser.find_element("link text", "Chat").click()
    _css(browser, "form.approval")
    before = _turns(browser)
    browser.find_element("css selector", "form.approval button[type=submit]").click()
    _wait(browser, lambda d: _turns(d) > before, "the answered turn ends")
    _text_in(browser, ".transcript", "Approved")
    done = httpx.get(f"{server}/v1/agents/{target}/sessions/{session_id}").json()
    assert done["agent_id"] == target and done["stop_reason"]

    # The runtime view: the session left one actor and came to the other.
    browser.find_element("link text", "Runtime").click()
    _wait(
        browser,
        lambda d: d.execute_script(
            """return [...document.querySelectorAll('table.events tbody tr')]
                 .filter((r) => r.textContent.includes(arguments[0])).map((r) => r.textContent);""",
            session_id,
        ),
        "the transfer's events",
    )
    rows = browser.execute_script(
        """return [...document.querySelectorAll('table.events tbody tr')]
             .filter((r) => r.textContent.includes(arguments[0]))
             .map((r) => [...r.children].map((c) => c.textContent));""",
        session_id,
    )
    kinds = {(row[1], row[2]) for row in rows}
    assert any(k == "Session moved out" and source in a for k, a in kinds), rows
    assert any(k == "Session moved in" and target in a for k, a in kinds), rows
    _accessible(browser, "runtime")


def test_chat_in_a_new_conversation_streams_and_stays_in_it(browser: Any, server: str) -> None:
    agent_id = _agent(server, "Many Threads")
    browser.get(f"{server}/#/agents/{agent_id}/conversations")
    _text_in(browser, ".tab-body", "No other conversation yet")
    _css(browser, "#conversation-summary").send_keys("Trip planning")
    _accessible(browser, "conversations")
    browser.find_element("css selector", ".new-conversation button[type=submit]").click()
    _text_in(browser, ".conversation-title", "Trip planning")
    conversation_id = browser.current_url.rsplit("/", 1)[-1]
    assert conversation_id.startswith("conv-")

    # Streamed as the default chat is: every rendering of the reply in progress recorded.
    browser.execute_script(
        """
        window.seenReplies = [];
        new MutationObserver((records) => {
          for (const r of records) for (const node of r.addedNodes) {
            if (node.classList && node.classList.contains('assistant_message')) {
              window.seenReplies.push(node.querySelector('.text').textContent);
            }
          }
        }).observe(document.querySelector('.transcript.live'), {childList: true});
        """
    )
    _send(browser, "Where shall we go?")
    _text_in(browser, ".transcript .user_message", "Where shall we go?")
    _text_in(browser, ".turn-status", "Stop reason: end_turn")
    reply = browser.find_element("css selector", ".transcript .assistant_message .text").text
    seen = [t for t in browser.execute_script("return window.seenReplies;") if t]
    assert len(set(seen)) >= 2 and seen[-1].strip() == reply.strip(), (seen, reply)
    # Its actor is the conversation's own.
    _text_in(browser, ".actor-status", "Actor: active on node-")

    # The message is the conversation's, not the default conversation's.
    theirs = httpx.get(f"{server}/v1/conversations/{conversation_id}/messages").json()
    assert any(m.get("content") == "Where shall we go?" for m in theirs)
    default = httpx.get(
        f"{server}/v1/agents/{agent_id}/messages", params={"conversation_id": "default"}
    ).json()
    assert not any(m.get("content") == "Where shall we go?" for m in default)

    # Listed, and opened again with its history.
    browser.find_element("css selector", ".tab-body .crumbs a").click()  # "Conversations"
    _text_in(browser, ".conversations", "Trip planning")
    browser.find_element("link text", "Trip planning").click()
    _text_in(browser, ".transcript .user_message", "Where shall we go?")
    browser.find_element("link text", "Chat").click()
    _css(browser, "#chat-input")
    assert not browser.find_elements("css selector", ".transcript .user_message")


def test_tools_are_attached_and_detached_from_the_agent_view(browser: Any, server: str) -> None:
    agent_id = _agent(server, "Handy", tools=[])

    def names(selector: str) -> list[str]:
        return browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.dataset.toolName);",
            selector,
        )

    def attached() -> set[str]:
        agent = httpx.get(f"{server}/v1/agents/{agent_id}").json()
        return {t["name"] for t in agent["tools"]}

    browser.get(f"{server}/#/agents/{agent_id}/tools")
    _css(browser, ".available-tools")
    start = attached()
    assert set(names(".attached-tools .tool-card")) == start
    assert "web_search" in names(".available-tools .tool-card")
    _accessible(browser, "tools")

    _css(browser, "#tool-filter").send_keys("web_se")
    assert names(".available-tools .tool-card") == ["web_search"]
    browser.find_element("css selector", "[aria-label='Attach web_search']").click()
    _wait(browser, lambda d: "web_search" in names(".attached-tools .tool-card"), "attached")
    assert attached() == start | {"web_search"}
    # Focus follows the tool, so the undo is one key away.
    assert browser.switch_to.active_element.get_attribute("aria-label") == "Detach web_search"

    # It can be made to wait for approval.
    browser.find_element("id", "approval-web_search").click()
    _wait(
        browser,
        lambda d: any(
            r["type"] == "requires_approval" and r["tool_name"] == "web_search"
            for r in httpx.get(f"{server}/v1/agents/{agent_id}").json()["tool_rules"]
        ),
        "the approval rule stored",
    )

    browser.find_element("css selector", "[aria-label='Detach web_search']").click()
    _wait(browser, lambda d: "web_search" not in names(".attached-tools .tool-card"), "detached")
    assert attached() == start


def test_a_crash_recovery_shows_in_the_runtime_view(browser: Any, tmp_path: Path) -> None:
    """A server dies (SIGKILL) with a turn in flight; started again on the same store, it
    resumes the run from its checkpoint, and the runtime view says so."""
    slow = {"KELPIE_SIM_LATENCY": "60", "KELPIE_LEASE_TTL": "1"}
    with server_process(tmp_path, env=slow) as (url, process):
        agent_id = _agent(url, "Survivor")
        run = httpx.post(
            f"{url}/v1/agents/{agent_id}/messages/async",
            json={"messages": [{"role": "user", "content": "Think hard."}]},
        ).json()
        browser.get(f"{url}/#/agents/{agent_id}/runs")
        _text_in(browser, "table.runs", "running")  # its input stored, the model asked
        process.kill()
        process.wait(timeout=20)
    with server_process(tmp_path, env={"KELPIE_LEASE_TTL": "1"}) as (url, _):
        browser.get(f"{url}/#/runtime")
        _text_in(browser, "table.events", "Recovered from checkpoint")
        _text_in(browser, "table.events", run["id"])
        _text_in(browser, "table.events", "after iteration 0")
        _wait(
            browser,
            lambda d: httpx.get(f"{url}/v1/runs/{run['id']}").json()["status"] == "completed",
            "the recovered run ends",
        )


def test_the_new_views_fit_a_phone(browser: Any, server: str) -> None:
    browser.set_window_size(390, 844)
    agent_id = _agent(server, "Pocket views")
    other = _agent(server, "Other")
    assert other
    httpx.post(
        f"{server}/v1/agents/{agent_id}/messages",
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    for tab, ready in (
        ("sessions", ".sessions"),
        ("conversations", ".new-conversation"),
        ("tools", ".available-tools"),
    ):
        browser.get(f"{server}/#/agents/{agent_id}/{tab}")
        _css(browser, ready)
        assert not _overflows(browser), (tab, _wider_than_the_window(browser))


def _wider_than_the_window(driver: Any) -> list[str]:
    return driver.execute_script(
        """return [...document.querySelectorAll('body *')]
             .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
             .map((e) => `${e.tagName}.${e.className}`).slice(0, 10);"""
    )


def test_a_block_changed_elsewhere_shows_without_a_turn(browser: Any, server: str) -> None:
    """Between turns the chat page reads core memory again every few seconds: an edit by
    another client (or conversation, or companion agent) shows, marked, with no message sent."""
    agent_id = _agent(server, "Watcher", memory_blocks=[{"label": "human", "value": "Name: Kim."}])
    browser.get(f"{server}/#/agents/{agent_id}")
    _text_in(browser, ".memory [data-label=human] .block-value", "Name: Kim.")
    changed = httpx.patch(
        f"{server}/v1/agents/{agent_id}/core-memory/blocks/human",
        json={"value": "Name: Kim. Plays the cello."},
    )
    assert changed.status_code == 200
    _text_in(browser, ".memory [data-label=human] .block-value", "Plays the cello.")
    _text_in(browser, ".memory [data-label=human] .badge", "updated")
    assert _turns(browser) == 0


def test_a_call_waiting_in_a_conversation_is_answered_there(browser: Any, server: str) -> None:
    """A conversation's waiting call is read from its own history (the agent's
    pending_approval is its default conversation's), and answered through its routes."""
    agent_id = _agent(
        server, "Careful Threads", **{k: v for k, v in CAREFUL.items() if k != "model"}
    )
    made = httpx.post(f"{server}/v1/conversations/", params={"agent_id": agent_id}, json={})
    conversation_id = made.json()["id"]
    browser.get(f"{server}/#/agents/{agent_id}/conversations/{conversation_id}")
    _css(browser, "#chat-input")
    _until_approval(browser)
    assert not browser.find_element("id", "chat-input").is_enabled()  # answer first
    assert httpx.get(f"{server}/v1/agents/{agent_id}").json()["pending_approval"] is None
    # Opened afresh, the page finds the waiting call again.
    browser.refresh()
    _css(browser, "form.approval")
    browser.find_element("id", "deny-0").click()
    browser.find_element("id", "reason-0").send_keys("not in this thread")
    before = _turns(browser)
    browser.find_element("css selector", "form.approval button[type=submit]").click()
    _wait(browser, lambda d: _turns(d) > before, "the answered turn ends")
    _text_in(browser, ".transcript", "Denied")
    _text_in(browser, ".transcript", "not in this thread")
    theirs = httpx.get(f"{server}/v1/conversations/{conversation_id}/messages").json()
    assert any(m["message_type"] == "approval_response_message" for m in theirs)
