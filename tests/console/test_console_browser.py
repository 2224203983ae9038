"""The web console in a real browser (headless Chromium), against a real server with the
offline sim model: what a new user does, without reading any API documentation.

Waits are bounded waits for a condition on the page (WebDriverWait), never sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import running_server, server_process
from tests.console.conftest import _missing

WAIT = 20  # seconds: a bound on each wait, far above what a step takes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    with running_server(tmp_path_factory.mktemp("console-server")) as url:
        yield url


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    with running_server(tmp_path_factory.mktemp("console-guarded"), "--password", "s3cret") as url:
        yield url


def _wait(driver: Any, condition: Any, message: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(condition, message)


def _css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    return _wait(driver, ec.visibility_of_element_located((By.CSS_SELECTOR, selector)), selector)


def _text_in(driver: Any, selector: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    _wait(
        driver,
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, selector), text),
        f"{text!r} in {selector}",
    )


def _unlabelled_controls(driver: Any) -> list[str]:
    """Form controls a screen reader could not name."""
    return driver.execute_script(
        """
        return [...document.querySelectorAll('input, select, textarea, button')]
          .filter((el) => el.offsetParent !== null)
          .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                          && !(el.tagName === 'BUTTON' && el.textContent.trim()))
          .map((el) => el.outerHTML.slice(0, 120));
        """
    )


def _overflows(driver: Any) -> bool:
    return driver.execute_script(
        "return document.documentElement.scrollWidth > window.innerWidth + 1;"
    )


def _create_agent(driver: Any, server: str, name: str, human: str) -> str:
    from selenium.webdriver.support.ui import Select

    driver.get(f"{server}/")
    _css(driver, "a.button.primary").click()  # "New agent"
    _css(driver, "#new-model option")
    driver.find_element("id", "new-name").send_keys(name)
    Select(driver.find_element("id", "new-model")).select_by_value("sim/agent")
    driver.find_element("id", "new-tags").send_keys("demo, console")
    human_value = driver.find_element("id", "block-value-2")  # persona first, then human
    human_value.clear()
    human_value.send_keys(human)
    assert _unlabelled_controls(driver) == []
    driver.find_element("css selector", "form.create button[type=submit]").click()
    _text_in(driver, "main h1", name)
    return driver.current_url.rsplit("/", 1)[-1]


def _turns(driver: Any) -> int:
    """Turns the chat page has finished (and read history, memory and approvals after)."""
    return int(_css(driver, ".turn-status").get_attribute("data-turns") or 0)


def _finish_turn(driver: Any, before: int) -> None:
    _wait(driver, lambda d: _turns(d) > before, "the turn ends")


def _send(driver: Any, text: str, *, wait: bool = True) -> None:
    box = _css(driver, "#chat-input")
    _wait(driver, lambda d: box.is_enabled(), "the chat input is enabled")
    before = _turns(driver)
    box.send_keys(text + "\n")  # Enter sends
    if wait:
        _finish_turn(driver, before)


def test_create_chat_remember_and_see_the_actor(browser: Any, server: str) -> None:
    agent_id = _create_agent(browser, server, "Ada", "The user likes green tea.")
    assert agent_id.startswith("agent-")

    # Not running yet: the first message activates its actor.
    _text_in(browser, ".actor-status", "not activated yet")

    # The agent's core memory, as created.
    _text_in(browser, ".memory [data-label=human] .block-value", "likes green tea")
    _text_in(browser, ".memory [data-label=persona] .block-value", "helpful assistant")

    # Chat: the user's message, the agent's reply, the turn's stop reason and usage. Every
    # rendering of the reply in progress is recorded: the tokens show as they arrive.
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
    _send(browser, "Hello, who are you?")
    _text_in(browser, ".transcript .user_message", "Hello, who are you?")
    _css(browser, ".transcript .assistant_message .text")
    _text_in(browser, ".turn-status", "Stop reason: end_turn")
    _text_in(browser, ".turn-status", "tokens in 1 step")
    _text_in(browser, ".actor-status", "Actor: active on node-")
    _text_in(browser, ".actor-status", "(this node), lease epoch 1")
    reply = browser.find_element("css selector", ".transcript .assistant_message .text").text
    assert reply.strip()
    seen = [t for t in browser.execute_script("return window.seenReplies;") if t]
    assert len(set(seen)) >= 2, seen  # the sim model streams its reply word by word
    assert all(reply.startswith(t.strip()) for t in seen), (reply, seen)
    assert seen[-1].strip() == reply.strip()
    assert _unlabelled_controls(browser) == []

    # The block changes between turns (here through the API, as an agent's memory tool or
    # another client would): after the next turn the console shows it, marked as updated.
    changed = httpx.patch(
        f"{server}/v1/agents/{agent_id}/core-memory/blocks/human",
        json={"value": "The user likes green tea and lives in Oslo."},
    )
    assert changed.status_code == 200
    _send(browser, "Remember that?")
    _text_in(browser, ".memory [data-label=human] .block-value", "lives in Oslo")
    _text_in(browser, ".memory [data-label=human] .badge", "updated")
    _wait(
        browser,
        lambda d: len(d.find_elements("css selector", ".transcript .assistant_message")) == 2,
        "two replies in the transcript",
    )

    # Edit a block from the console itself.
    browser.find_element("css selector", "[aria-label='Edit block persona']").click()
    area = _css(browser, "#edit-persona")
    area.clear()
    area.send_keys("A patient guide.")
    browser.find_element("css selector", ".block-edit button[type=submit]").click()
    _text_in(browser, ".memory [data-label=persona] .block-value", "A patient guide.")
    persona = httpx.get(f"{server}/v1/agents/{agent_id}/core-memory/blocks/persona").json()
    assert persona["value"] == "A patient guide."

    # Runs: both sends, completed with their stop reason; one opened shows its usage.
    browser.find_element("link text", "Runs").click()
    _css(browser, "table.runs tbody tr")
    rows = browser.find_elements("css selector", "table.runs tbody tr")
    assert len(rows) == 2
    assert all("completed" in r.text and "end_turn" in r.text for r in rows)
    rows[0].find_element("css selector", "a").click()
    _text_in(browser, ".facts", "completed")
    facts = browser.find_element("css selector", ".facts").text
    assert "Total tokens" in facts and "Checkpoint iteration" in facts
    _text_in(browser, "ol.transcript", "Remember that?")  # the newest run first

    # Archival memory: add a passage, find it by search.
    browser.find_element("link text", "Archival memory").click()
    _css(browser, ".add-passage summary").click()
    _css(browser, "#archival-text").send_keys("The user's cat is called Miso.")
    browser.find_element("css selector", ".add-passage button[type=submit]").click()
    _text_in(browser, ".passages", "called Miso")
    browser.find_element("id", "archival-query").send_keys("cat Miso\n")
    _text_in(browser, ".passages", "called Miso")

    # The runtime: the actor that runs this agent, on this node, holding its lease.
    browser.find_element("link text", "Runtime").click()
    _text_in(browser, "table.actors", agent_id)
    _text_in(browser, "table.actors", "Ada")  # named from the next refresh on
    _text_in(browser, "table.nodes", "live")
    _text_in(browser, "table.leases", agent_id)
    _text_in(browser, "table.leases", "held")
    stats = browser.find_element("css selector", "#main .facts").text.split("\n")
    assert float(stats[stats.index("Activations") + 1]) >= 1  # other tests share the server
    assert _unlabelled_controls(browser) == []

    # Delete, with confirmation: cancelled first, then confirmed.
    browser.find_element("link text", "Agents").click()
    _css(browser, f"[data-agent-id='{agent_id}'] button.danger").click()
    _css(browser, "#confirm button[value=cancel]").click()
    assert httpx.get(f"{server}/v1/agents/{agent_id}").status_code == 200
    _css(browser, f"[data-agent-id='{agent_id}'] button.danger").click()
    _css(browser, "#confirm-ok").click()
    _text_in(browser, ".results", "No agents yet")
    assert httpx.get(f"{server}/v1/agents/{agent_id}").status_code == 404


def test_the_console_asks_for_the_password_and_sends_it(browser: Any, guarded_server: str) -> None:
    browser.get(f"{guarded_server}/")
    _css(browser, "#login-password").send_keys("wrong\n")
    _text_in(browser, "#login-error", "not the server's password")
    field = browser.find_element("id", "login-password")
    field.clear()
    field.send_keys("s3cret\n")
    _text_in(browser, ".results", "No agents yet")
    assert not browser.find_element("id", "login").get_attribute("open")
    # Every view sends it: the runtime reads /v1/_kelpie/runtime and /metrics with it.
    browser.find_element("link text", "Runtime").click()
    _text_in(browser, "table.nodes", "live")
    _css(browser, "#main .facts")
    assert not browser.find_elements("css selector", "#main .error")
    # The token lives in this tab only; forgetting it asks again.
    browser.find_element("id", "sign-out").click()
    _css(browser, "#login-password")


def _approval_shown(driver: Any) -> bool:
    return bool(driver.find_elements("css selector", "form.approval"))


def _until_approval(driver: Any, attempts: int = 40) -> None:
    """Send until the sim model calls the tool that needs approval. It draws that call
    with probability 0.4 per step, so 40 turns all without one is a 1-in-10^9 event."""
    for _ in range(attempts):
        if _approval_shown(driver):
            return
        _send(driver, "Please note this down.")
    assert _approval_shown(driver), f"no approval request in {attempts} turns"


def test_a_pending_tool_call_is_approved_or_denied_from_the_console(
    browser: Any, server: str
) -> None:
    created = httpx.post(
        f"{server}/v1/agents/",
        json={
            "name": "Careful",
            "model": "sim/agent",
            "tools": ["archival_memory_insert"],
            "tool_rules": [{"type": "requires_approval", "tool_name": "archival_memory_insert"}],
        },
    )
    agent_id = created.json()["id"]
    browser.get(f"{server}/#/agents/{agent_id}")
    _css(browser, "#chat-input")

    # Denied, with a reason the agent is told.
    _until_approval(browser)
    legend = browser.find_element("css selector", "form.approval legend").text
    assert legend == "archival_memory_insert()"
    assert not browser.find_element("id", "chat-input").is_enabled()  # answer first
    browser.find_element("id", "deny-0").click()
    browser.find_element("id", "reason-0").send_keys("not now")
    before = _turns(browser)
    browser.find_element("css selector", "form.approval button[type=submit]").click()
    _finish_turn(browser, before)
    _text_in(browser, ".transcript", "Denied")
    _text_in(browser, ".transcript", "not now")

    # Approved: the call runs, and its return is folded under it.
    _until_approval(browser)
    passages_before = len(httpx.get(f"{server}/v1/agents/{agent_id}/archival-memory").json())
    before = _turns(browser)
    browser.find_element("css selector", "form.approval button[type=submit]").click()  # approve
    _finish_turn(browser, before)
    _text_in(browser, ".transcript", "Approved")
    _wait(
        browser,
        lambda d: any(
            "archival_memory_insert()" in t.text and "success" in t.text
            for t in d.find_elements("css selector", ".transcript details.tool")
        ),
        "the approved call with its return",
    )
    passages = httpx.get(f"{server}/v1/agents/{agent_id}/archival-memory").json()
    assert len(passages) > passages_before

    browser.find_element("link text", "Tools").click()
    _text_in(browser, ".tab-body .cards", "archival_memory_insert")


def test_stop_cancels_a_running_turn(browser: Any, tmp_path: Path) -> None:
    # Each model call takes a minute here: the turn is surely running when Stop is pressed.
    with server_process(tmp_path, env={"KELPIE_SIM_LATENCY": "60"}) as (url, _):
        agent_id = httpx.post(f"{url}/v1/agents/", json={"name": "Slow", "model": "sim/agent"})
        browser.get(f"{url}/#/agents/{agent_id.json()['id']}")
        before = _turns(browser)
        _send(browser, "Take your time.", wait=False)
        _css(browser, ".composer button:not(.primary)").click()  # Stop
        _finish_turn(browser, before)
        _text_in(browser, ".turn-status", "Stop reason: cancelled")
        runs = httpx.get(f"{url}/v1/runs/", params={"agent_id": agent_id.json()["id"]}).json()
        assert [r["stop_reason"] for r in runs] == ["cancelled"]


def test_the_agent_s_own_memory_edit_shows_in_its_block(browser: Any, server: str) -> None:
    """A memgpt agent on the sim model calls core_memory_append on its human block with
    probability 0.25 per turn: 60 turns without one is a 1-in-30-million event."""
    agent_id = httpx.post(
        f"{server}/v1/agents/",
        json={
            "name": "Rememberer",
            "model": "sim/agent",
            "agent_type": "memgpt_agent",
            "memory_blocks": [{"label": "human", "value": "Name: Sam."}],
        },
    ).json()["id"]
    browser.get(f"{server}/#/agents/{agent_id}")
    _text_in(browser, ".memory [data-label=human] .block-value", "Name: Sam.")

    def appended(d: Any) -> list[str]:
        return d.execute_script(
            """
            return [...document.querySelectorAll('.transcript:not(.live) details.tool')]
              .filter((t) => t.querySelector('.tool-name').textContent === 'core_memory_append()')
              .map((t) => JSON.parse(t.querySelector('pre').textContent).content);
            """
        )

    for _ in range(60):
        if appended(browser):
            break
        _send(browser, "I like hiking.")
    [content, *_] = appended(browser)
    _text_in(browser, ".memory [data-label=human] .block-value", content)
    _text_in(browser, ".memory [data-label=human] .badge", "updated")
    stored = httpx.get(f"{server}/v1/agents/{agent_id}/core-memory/blocks/human").json()
    assert content in stored["value"]


def test_older_messages_load_page_by_page(browser: Any, server: str) -> None:
    agent_id = httpx.post(
        f"{server}/v1/agents/", json={"name": "Chatty", "model": "sim/agent"}
    ).json()["id"]
    for n in range(30):  # 60 stored messages at least: more than a page
        sent = httpx.post(
            f"{server}/v1/agents/{agent_id}/messages",
            json={"messages": [{"role": "user", "content": f"message number {n}"}]},
        )
        assert sent.status_code == 200

    def user_messages(d: Any) -> list[str]:
        # Read in one go: the list is rendered anew as pages arrive.
        return d.execute_script(
            "return [...document.querySelectorAll("
            "'.transcript:not(.live) .user_message .text')].map((e) => e.textContent);"
        )

    browser.get(f"{server}/#/agents/{agent_id}")
    _text_in(browser, ".transcript", "message number 29")
    first_page = user_messages(browser)
    assert "message number 0" not in first_page
    for _ in range(5):
        buttons = browser.find_elements("css selector", ".older button")
        if not buttons:
            break
        shown = len(user_messages(browser))
        buttons[0].click()
        _wait(
            browser,
            lambda d, shown=shown: (
                len(user_messages(d)) > shown
                or not d.find_elements("css selector", ".older button")
            ),
            "an older page, or the start",
        )
    assert user_messages(browser) == [f"message number {n}" for n in range(30)]
    assert not browser.find_elements("css selector", ".older button")


_CONTRAST = """
const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
const channel = (v) => {
  v /= 255;
  return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
};
const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
const background = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const c = parse(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
  }
  return parse(getComputedStyle(document.body).backgroundColor).slice(0, 3);
};
const low = [];
for (const el of document.querySelectorAll('body *')) {
  if (!el.offsetParent && el !== document.body) continue;
  if (el.closest('[disabled], .visually-hidden, svg')) continue;
  const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own) continue;
  const style = getComputedStyle(el);
  const fg = parse(style.color), bg = background(el);
  const [a, b] = [luminance(fg), luminance(bg)].sort((x, y) => y - x);
  const ratio = (a + 0.05) / (b + 0.05);
  const large = parseFloat(style.fontSize) >= 24 ||
    (parseFloat(style.fontSize) >= 18.66 && Number(style.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) low.push(`${el.tagName}.${el.className}: ${ratio.toFixed(2)}`);
}
return low;
"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_is_at_least_wcag_aa(browser: Any, server: str, scheme: str) -> None:
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )
    agent_id = _create_agent(browser, server, f"Contrast {scheme}", "Colours.")
    _send(browser, "hi")
    for hash_ in ("#/agents", f"#/agents/{agent_id}", f"#/agents/{agent_id}/runs", "#/runtime"):
        browser.get(f"{server}/{hash_}")
        _css(browser, "main h1")
        if "agents/" in hash_ and "runs" not in hash_:
            _css(browser, ".transcript .assistant_message")
        if hash_ == "#/runtime":
            _css(browser, "table.actors")
        assert browser.execute_script(_CONTRAST) == [], hash_


def test_keyboard_users_skip_to_the_page_and_land_on_each_new_heading(
    browser: Any, server: str
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    def press(*keys: str, shift: bool = False) -> str:
        """Keys as a keyboard user types them; the text of what has focus after."""
        chain = ActionChains(browser)
        if shift:
            chain.key_down(Keys.SHIFT)
        chain.send_keys(*keys)
        if shift:
            chain.key_up(Keys.SHIFT)
        chain.perform()
        return browser.switch_to.active_element.text

    browser.get(f"{server}/#/runtime")
    _css(browser, "table.nodes")
    # On a page just opened, the first Tab reaches the skip link; it leads into the page.
    assert press(Keys.TAB) == "Skip to content"
    press(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    # Back to the sections' links; moving to another page puts focus on the field the page
    # is for, or on its heading.
    assert press(Keys.TAB, Keys.TAB, shift=True) == "Agents"
    press(Keys.ENTER)
    _wait(
        browser,
        lambda d: d.switch_to.active_element.get_attribute("id") == "agent-search",
        "focus on the agents search",
    )
    assert press(Keys.TAB, Keys.TAB, shift=True) == "Runtime"
    press(Keys.ENTER)
    _wait(
        browser,
        lambda d: d.switch_to.active_element.tag_name == "h1",
        "focus on the runtime heading",
    )
    assert browser.switch_to.active_element.text == "Runtime"


def test_usable_at_phone_width(browser: Any, server: str) -> None:
    browser.set_window_size(390, 844)
    agent_id = _create_agent(browser, server, "Pocket", "Small screens.")
    _css(browser, "#chat-input")
    _send(browser, "hi")
    _text_in(browser, ".turn-status", "Stop reason")
    assert not _overflows(browser), "the chat page scrolls sideways at 390 px"
    for hash_ in ("#/agents", f"#/agents/{agent_id}/runs", "#/runtime"):
        browser.get(f"{server}/{hash_}")
        _css(browser, "main h1")
        assert not _overflows(browser), f"{hash_} scrolls sideways at 390 px"


def test_the_scripts_parse_streams_and_metrics_as_the_server_sends_them(
    browser: Any, server: str
) -> None:
    """The console's plain functions, run in the browser itself."""
    browser.get(f"{server}/console/")
    _css(browser, "main h1")
    result = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        Promise.all([import('/console/sse.js'), import('/console/messages.js'),
                     import('/console/metrics.js')]).then(([sse, msgs, metrics]) => {
          // An event split across reads, CRLF line ends, and an event left unterminated.
          const parser = new sse.SseParser();
          const bytes = new TextEncoder().encode('data: {"a":1}\\r\\n\\r\\ndata: {"b"');
          const events = [...parser.push(bytes.slice(0, 9)), ...parser.push(bytes.slice(9)),
                          ...parser.push(':2}\\n\\ndata: [DONE]'), ...parser.end()];
          // Token deltas of one message merged; another type of the same id kept apart.
          const merged = new Map();
          const base = {id: 'message-1', date: null};
          for (const piece of ['Hel', 'lo', '!']) {
            msgs.mergeEvent(merged, {...base, message_type: 'assistant_message', content: piece});
          }
          msgs.mergeEvent(merged, {...base, message_type: 'reasoning_message', reasoning: 'I '});
          msgs.mergeEvent(merged, {...base, message_type: 'reasoning_message', reasoning: 'think'});
          const call = (args) => ({...base, id: 'message-2', message_type: 'tool_call_message',
            tool_call: {name: args === '{"q":' ? 'search' : null, arguments: args,
                        tool_call_id: 'call-1'}});
          msgs.mergeEvent(merged, call('{"q":'));
          msgs.mergeEvent(merged, call('"x"}'));
          const samples = metrics.parsePrometheus(
            '# HELP x\\nkelpie_activations_total 3.0\\n' +
            'kelpie_mailbox_depth_bucket{le="1.0"} 2.0\\n' +
            'kelpie_mailbox_depth_bucket{le="+Inf"} 5.0\\n' +
            'kelpie_mailbox_depth_count 5.0\\nkelpie_mailbox_depth_sum 9.0\\n');
          // Newest first, as order=desc lists them: the parts of one message stay in order.
          const listed = [{id: 'm3', t: 'reply'}, {id: 'm2', t: 'thought'}, {id: 'm2', t: 'call'},
                          {id: 'm1', t: 'question'}];
          done({
            events,
            chronological: msgs.chronological(listed).map((m) => m.t),
            merged: [...merged.values()].map((m) => m.content || m.reasoning ||
                                              m.tool_call.name + m.tool_call.arguments),
            activations: metrics.sampleValue(samples, 'kelpie_activations_total'),
            buckets: metrics.histogram(samples, 'kelpie_mailbox_depth').buckets
                       .map((b) => [String(b.le), b.count]),
          });
        }).catch((e) => done({error: String(e)}));
        """
    )
    assert result == {
        "events": ['{"a":1}', '{"b":2}', "[DONE]"],
        "chronological": ["question", "thought", "call", "reply"],
        "merged": ["Hello!", "I think", 'search{"q":"x"}'],
        "activations": 3,
        "buckets": [["1", 2], ["Infinity", 5]],
    }
