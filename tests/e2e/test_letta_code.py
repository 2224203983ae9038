"""Letta's CLI (`letta` from @letta-ai/letta-code, pinned in tests/e2e/js) run headless
against a real kelpie-trio server whose model is the scripted fake provider, with a
recording proxy between them: a new agent, a conversation of three messages across a server
restart, a streamed reply, a client-side tool run by the CLI, a background run resumed after
its stream dropped, and one finished after its client was killed.

The CLI keeps its agents' turns in conversations (`POST /v1/conversations/` right after
creating the agent, then `POST /v1/conversations/{id}/messages` with `background: true`, its
client tools and its bundled skills). A failure names the calls the server refused.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.e2e.harness import LETTA, MODEL, LettaCli, Server
from tests.e2e.recording_proxy import RecordingProxy, recording
from tests.e2e.scripted_provider import Say, ScriptedProvider


def refused(proxy: RecordingProxy) -> str:
    """The calls the server refused, with its answer: what a failure shows first."""
    lines = [
        f"{c.method} {c.path}{'?' + c.query if c.query else ''} -> {c.status} "
        f"{json.dumps(c.response)[:300]}"
        for c in proxy.calls
        if c.status is None or c.status >= 400
    ]
    return "\n".join(lines) or "(none)"


def result_of(done: subprocess.CompletedProcess[bytes], proxy: RecordingProxy) -> dict[str, Any]:
    """The CLI's closing `result` record: all its output (`--output-format json`, indented) or
    its last such line (`stream-json`)."""
    text = done.stdout.decode(errors="replace")
    for line in [text, *reversed(text.splitlines())]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("type") == "result":
            assert record.get("subtype") == "success", (record, refused(proxy))
            return record
    raise AssertionError(
        f"letta exited {done.returncode} without a result.\nrefused calls:\n{refused(proxy)}\n"
        f"stdout:\n{done.stdout.decode(errors='replace')[-2000:]}\n"
        f"stderr:\n{done.stderr.decode(errors='replace')[-2000:]}"
    )


async def history(url: str, conversation: str) -> list[tuple[str, str]]:
    """The conversation's user and assistant messages, oldest first (asked through the proxy,
    which lives on this event loop: hence async)."""
    async with httpx.AsyncClient(base_url=url) as client:
        listed = await client.get(
            f"/v1/conversations/{conversation}/messages", params={"order": "asc"}
        )
    assert listed.status_code == 200, listed.text
    return [
        (m["message_type"], m["content"] if isinstance(m["content"], str) else str(m["content"]))
        for m in listed.json()
        if m["message_type"] in ("user_message", "assistant_message")
    ]


def completions(provider: ScriptedProvider) -> list[dict[str, Any]]:
    return [r.json for r in provider.received if r.path.endswith("/chat/completions")]


def _server(tmp_path: Path, provider: ScriptedProvider) -> Server:
    (tmp_path / "server").mkdir()
    return Server(tmp_path / "server", provider.url)


async def test_a_new_agent_holds_a_conversation_across_a_server_restart(
    js_clients: Path, provider: ScriptedProvider, tmp_path: Path
) -> None:
    provider.say("Hello, I am your agent.", "Second answer", "Third answer, streamed")
    server = _server(tmp_path, provider)
    cli = LettaCli(tmp_path / "home", tmp_path / "project")
    with trio.fail_after(60):
        await server.start()
        try:
            async with recording(server.url) as proxy:
                first = result_of(
                    await cli.run(proxy.url, "-p", "First message", "--new-agent", "-m", MODEL,
                                  "--output-format", "json"),
                    proxy,
                )  # fmt: skip
                conversation = first["conversation_id"]
                second = result_of(
                    await cli.run(proxy.url, "-p", "Second message", "--conv", conversation,
                                  "--output-format", "json"),
                    proxy,
                )  # fmt: skip
                await server.stop()  # everything above must be in the store
                await server.start()
                streamed = await cli.run(
                    proxy.url, "-p", "Third message", "--conv", conversation,
                    "--output-format", "stream-json", "--include-partial-messages",
                )  # fmt: skip
                third = result_of(streamed, proxy)
                created = [c for c in proxy.calls if (c.method, c.path) == ("POST", "/v1/agents/")]
                sends = [c for c in proxy.calls
                         if c.method == "POST" and c.path.endswith("/messages")]  # fmt: skip
                said = await history(proxy.url, conversation)
        finally:
            await server.stop()
    assert first["result"] == "Hello, I am your agent."
    assert first["agent_id"] == second["agent_id"] == third["agent_id"]
    assert second["result"] == "Second answer"
    assert third["result"] == "Third answer, streamed"
    events = [json.loads(line) for line in streamed.stdout.decode().splitlines() if line]
    pieces = [
        e["event"]["content"]
        for e in events
        if e.get("type") == "stream_event" and e["event"].get("message_type") == "assistant_message"
    ]
    assert pieces == ["Third ", "answer, ", "streamed"]  # relayed token by token
    assert created[-1].status == 200 and created[-1].body["model"] == MODEL
    # It sends its skills and client tools with every message, in the background, into a
    # conversation; the skills reach the model's system prompt.
    assert all(c.path.startswith("/v1/conversations/") and c.status == 200 for c in sends)
    skills = sends[0].body["client_skills"]
    assert skills and sends[0].body["background"] is True and sends[0].body["client_tools"]
    asked = [r.json for r in provider.received if r.path.endswith("/chat/completions")]
    system = str(asked[0]["messages"][0]["content"])
    assert "<available_skills>" in system and skills[0]["name"] in system
    assert [kind for kind, _ in said] == ["user_message", "assistant_message"] * 3
    assert said[0][1].endswith("First message") and said[4][1].endswith("Third message")
    assert [text for kind, text in said if kind == "assistant_message"] == [
        "Hello, I am your agent.", "Second answer", "Third answer, streamed"]  # fmt: skip


async def test_the_cli_runs_a_client_side_tool_and_the_agent_reads_its_result(
    js_clients: Path, provider: ScriptedProvider, tmp_path: Path
) -> None:
    shell = ("call_sh1", "ShellCommand", {"command": "echo kelpie-$((6*7))"})
    provider.say(Say(tool_calls=[shell]), "The shell said kelpie-42.")
    server = _server(tmp_path, provider)
    cli = LettaCli(tmp_path / "home", tmp_path / "project")
    with trio.fail_after(60):
        await server.start()
        try:
            async with recording(server.url) as proxy:
                done = result_of(
                    await cli.run(proxy.url, "-p", "Run the shell", "--new-agent", "-m", MODEL,
                                  "--output-format", "json"),
                    proxy,
                )  # fmt: skip
        finally:
            await server.stop()
    assert done["result"] == "The shell said kelpie-42."
    sends = [c for c in proxy.calls if c.method == "POST" and c.path.endswith("/messages")]
    # The CLI got the call as an approval request, ran the tool itself and sent its output back.
    answer = sends[-1].body["messages"][0]
    assert answer["type"] == "approval"
    [returned] = answer["approvals"]
    assert returned["tool_call_id"] == "call_sh1"
    assert returned.get("status") == "success", returned
    assert "kelpie-42" in str(returned["tool_return"])
    # ... and the model saw it as the call's result.
    asked = completions(provider)
    tool_turn = [m for m in asked[-1]["messages"] if m["role"] == "tool"]
    assert tool_turn and "kelpie-42" in str(tool_turn[-1]["content"])


async def _bidirectional_turn(process: trio.Process, text: str) -> list[dict[str, Any]]:
    """One user message into `letta --input-format stream-json`; its records up to `result`."""
    assert process.stdin is not None and process.stdout is not None
    line = {"type": "user", "message": {"role": "user", "content": text}}
    await process.stdin.send_all(json.dumps(line).encode() + b"\n")
    records: list[dict[str, Any]] = []
    buffer = b""
    while True:
        chunk = await process.stdout.receive_some()
        if not chunk:
            raise AssertionError(f"letta closed its output mid-turn: {records[-3:]}")
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            if raw.strip():
                records.append(json.loads(raw))
                if records[-1].get("type") == "result":
                    return records


async def test_a_background_run_is_resumed_after_its_stream_drops(
    js_clients: Path, provider: ScriptedProvider, tmp_path: Path
) -> None:
    """The CLI sends with `background: true`; when the stream breaks before the reply, it
    reads the rest of the run from the server instead of sending again."""
    provider.say(Say("Worth the wait", delay=1.0))
    server = _server(tmp_path, provider)
    cli = LettaCli(tmp_path / "home", tmp_path / "project")
    with trio.fail_after(60):
        await server.start()
        try:
            async with recording(server.url) as proxy:
                proxy.cut_next = ("/messages", 1)  # the connection drops after the first event
                process = await trio.lowlevel.open_process(
                    [str(LETTA), "-p", "--new-agent", "-m", MODEL, "--input-format",
                     "stream-json", "--output-format", "stream-json"],
                    cwd=cli.project, env=cli.env(proxy.url),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    records = await _bidirectional_turn(process, "Take your time")
                finally:
                    process.kill()
                    await process.wait()
        finally:
            await server.stop()
    [result] = [r for r in records if r.get("type") == "result"]
    assert result.get("subtype") == "success", (result, refused(proxy))
    assert result["result"] == "Worth the wait"
    assert proxy.cut, "the stream was never cut"
    resumed = [c for c in proxy.calls if c.method == "POST" and c.path.endswith("/stream")]
    assert resumed, f"no resume call; calls: {proxy.routes()}"
    assert resumed[0].body.get("starting_after", 0) >= 0
    sends = [c for c in proxy.calls if c.method == "POST" and c.path.endswith("/messages")]
    assert len(sends) == 1  # resumed, not sent twice
    assert len(completions(provider)) == 1


async def test_a_turn_finishes_on_the_server_when_its_client_is_killed(
    js_clients: Path, provider: ScriptedProvider, tmp_path: Path
) -> None:
    provider.say("Hello", Say("Finished without you", delay=1.0), "Welcome back")
    server = _server(tmp_path, provider)
    cli = LettaCli(tmp_path / "home", tmp_path / "project")
    with trio.fail_after(60):
        await server.start()
        try:
            async with recording(server.url) as proxy:
                first = result_of(
                    await cli.run(proxy.url, "-p", "Hi", "--new-agent", "-m", MODEL,
                                  "--output-format", "json"),
                    proxy,
                )  # fmt: skip
                conversation = first["conversation_id"]
                killed = await cli.start(proxy.url, "-p", "Slow one", "--conv", conversation)
                while len(completions(provider)) < 2:  # noqa: ASYNC110 - the model has the turn
                    await trio.sleep(0.05)
                killed.kill()
                await killed.wait()
                back = result_of(
                    await cli.run(proxy.url, "-p", "Are you there?", "--conv", conversation,
                                  "--output-format", "json"),
                    proxy,
                )  # fmt: skip
                said = await history(proxy.url, conversation)
        finally:
            await server.stop()
    assert back["result"] == "Welcome back"
    answers = [text for kind, text in said if kind == "assistant_message"]
    assert answers[-2:] == ["Finished without you", "Welcome back"]  # in order, none lost
