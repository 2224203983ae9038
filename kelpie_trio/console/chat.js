// A chat with an agent, streamed: in its default conversation or in another one (the
// conversations' routes), beside its core memory and any tool call waiting for approval.

import { api, stream } from "./api.js";
import { announce, describe, errorBox, h, pretty, replace } from "./dom.js";
import { chronological, mergeEvent, renderTranscript, textOf } from "./messages.js";

const PAGE = 50; // messages per page of history
const MEMORY_EVERY_MS = 3000; // how often core memory is read again between turns

// Where a chat's messages live: the agent's default conversation, or `conversation`.
function routesOf(agent, conversation) {
  if (conversation) {
    const base = `/v1/conversations/${conversation.id}`;
    return { messages: `${base}/messages`, cancel: `${base}/cancel`, only: {} };
  }
  // With no conversation named, the agent's message list holds every conversation's
  // messages (as Letta's): the chat asks for its default conversation's alone.
  return { messages: `/v1/agents/${agent.id}/messages`, cancel: `/v1/agents/${agent.id}/messages/cancel`,
    only: { conversation_id: "default" } };
}

// The calls a conversation's last turn left waiting for approval, read from its history:
// an approval request that no approval answer came after.
export function waitingCalls(messages) {
  let waiting = null;
  for (const m of messages) {
    if (m.message_type === "approval_request_message") {
      waiting = m.tool_calls && m.tool_calls.length ? m.tool_calls : [m.tool_call];
    } else if (m.message_type === "approval_response_message" || m.message_type === "user_message") {
      waiting = null;
    }
  }
  return waiting;
}

export function chatTab(body, agent, refreshActor, conversation = null) {
  const id = agent.id;
  const routes = routesOf(agent, conversation);
  const history = h("ol", { class: "transcript", "aria-label": "Messages" });
  const live = h("ol", { class: "transcript live", "aria-label": "Reply in progress" });
  const older = h("div", { class: "older" });
  const scroller = h("div", { class: "scroller", tabindex: "0", "aria-label": "Conversation" },
    older, history, live);
  const status = h("p", { class: "turn-status", role: "status" });
  const approvals = h("div", { class: "approvals" });
  const input = h("textarea", { id: "chat-input", name: "message", rows: 3, required: true,
    "aria-describedby": "chat-hint" });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const stop = h("button", { type: "button", hidden: true, onclick: cancel }, "Stop");
  const composer = h("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); submit(); } },
    h("label", { for: "chat-input" }, `Message to ${agent.name}`), input,
    h("p", { id: "chat-hint", class: "hint" }, "Enter sends; Shift+Enter starts a new line."),
    h("div", { class: "actions" }, send, stop));
  const memory = h("section", { class: "memory", "aria-labelledby": "memory-title" });
  replace(body, h("div", { class: "chat-layout" },
    h("section", { class: "chat", "aria-label": "Chat" }, scroller, status, approvals, composer),
    memory));

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  let controller = null;
  let blocks = new Map();
  let baseline = null; // the blocks as a turn found them

  // The latest page of history, and the older pages the user asked for, oldest first.
  let earlier = [];
  let latest = [];
  let atStart = false;

  function showHistory() {
    replace(history, renderTranscript([...earlier, ...latest]));
    replace(older, atStart || !(earlier.length || latest.length)
      ? null
      : h("button", { type: "button", class: "quiet", onclick: loadOlder }, "Show older messages"));
  }

  async function loadHistory() {
    try {
      const page = await api.get(routes.messages, { limit: PAGE, order: "desc", ...routes.only });
      latest = chronological(page);
      // Keep the older pages shown that end before the new latest page begins.
      const ids = new Set(latest.map((m) => m.id));
      earlier = earlier.filter((m) => !ids.has(m.id));
      showHistory();
    } catch (error) {
      replace(history, h("li", {}, errorBox(error)));
    }
    scroller.scrollTop = scroller.scrollHeight;
  }

  async function loadOlder() {
    const first = [...earlier, ...latest][0];
    try {
      // Newest first, "after" a message is older than it (the cursor follows the order).
      const page = await api.get(routes.messages,
        { limit: PAGE, order: "desc", after: first.id, ...routes.only });
      if (!page.length) atStart = true;
      earlier = [...chronological(page), ...earlier];
      const height = scroller.scrollHeight;
      showHistory();
      scroller.scrollTop = scroller.scrollHeight - height; // stay where the reader was
      const button = older.querySelector("button");
      if (button) button.focus();
      else announce("This is the start of the conversation");
    } catch (error) {
      replace(older, errorBox(error));
    }
  }

  async function loadMemory({ highlight = false, onlyIfChanged = false } = {}) {
    let list;
    try {
      list = await api.get(`/v1/agents/${id}/core-memory/blocks`);
    } catch (error) {
      if (!onlyIfChanged) replace(memory, h("h2", { id: "memory-title" }, "Core memory"), errorBox(error));
      return;
    }
    // A look between turns that finds nothing new leaves the page (and its marks) alone.
    const same = list.length === blocks.size && list.every((b) => blocks.get(b.label) === b.value);
    if (onlyIfChanged && same) return;
    const changed = [];
    // Changed since the turn began (so a block edited mid-turn stays marked at its end).
    const previous = baseline || blocks;
    const shown = blocks;
    blocks = new Map(list.map((b) => [b.label, b.value]));
    for (const b of list) if (highlight && previous.get(b.label) !== b.value) changed.push(b.label);
    const fresh = changed.filter((label) => shown.get(label) !== blocks.get(label));
    replace(memory, h("h2", { id: "memory-title" }, "Core memory"),
      h("ul", { class: "blocks" }, list.map((b) => blockItem(b, changed.includes(b.label)))));
    if (fresh.length) announce(`Memory updated: ${fresh.join(", ")}`);
  }

  function blockItem(block, changed) {
    const value = h("pre", { class: "block-value" }, block.value || "");
    const item = h("li", { class: `block${changed ? " changed" : ""}`, dataset: { label: block.label } },
      h("h3", {}, block.label, changed ? h("span", { class: "badge good" }, "updated") : null),
      block.description ? h("p", { class: "meta" }, block.description) : null,
      value,
      h("p", { class: "meta" }, `${(block.value || "").length} / ${block.limit} characters`,
        block.read_only ? " · read-only" : ""),
      block.read_only ? null : h("button", { type: "button", class: "quiet",
        "aria-label": `Edit block ${block.label}`, onclick: () => edit(item, block) }, "Edit"));
    return item;
  }

  function edit(item, block) {
    const fieldId = `edit-${block.label}`;
    const area = h("textarea", { id: fieldId, rows: 6 }, block.value || "");
    const problem = h("div", { "aria-live": "assertive" });
    const form = h("form", { class: "block-edit", onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api.patch(`/v1/agents/${id}/core-memory/blocks/${encodeURIComponent(block.label)}`,
          { value: area.value });
        announce(`Block ${block.label} saved`);
        await loadMemory({ highlight: true });
      } catch (error) {
        replace(problem, errorBox(error));
      }
    } },
    h("label", { for: fieldId }, `Value of ${block.label}`), area, problem,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Save"),
      h("button", { type: "button", onclick: () => loadMemory() }, "Cancel")));
    item.replaceWith(h("li", { class: "block" }, form));
    area.focus();
  }

  // The default conversation's waiting calls are on the agent; another's in its history.
  async function pendingCalls() {
    if (conversation) return waitingCalls(latest);
    const pending = (await api.get(`/v1/agents/${id}`)).pending_approval;
    if (!pending) return null;
    return pending.tool_calls && pending.tool_calls.length ? pending.tool_calls : [pending.tool_call];
  }

  async function loadApprovals() {
    let calls;
    try {
      calls = await pendingCalls();
    } catch {
      return;
    }
    if (!calls) {
      replace(approvals);
      input.disabled = false;
      send.disabled = false;
      return;
    }
    const form = h("form", { class: "approval", onsubmit: (e) => {
      e.preventDefault();
      const data = new FormData(form);
      const answers = calls.map((call, n) => ({
        type: "approval",
        tool_call_id: call.tool_call_id,
        approve: data.get(`decision-${n}`) === "approve",
        reason: String(data.get(`reason-${n}`) || "") || undefined,
      }));
      turn({ messages: [{ type: "approval", approvals: answers }] });
    } },
    h("h2", {}, "Waiting for your approval"),
    calls.map((call, n) => h("fieldset", {},
      h("legend", {}, `${call.name}()`),
      h("pre", {}, pretty(call.arguments || "")),
      h("div", { class: "choices" },
        h("input", { type: "radio", id: `approve-${n}`, name: `decision-${n}`, value: "approve", checked: true }),
        h("label", { for: `approve-${n}` }, "Approve"),
        h("input", { type: "radio", id: `deny-${n}`, name: `decision-${n}`, value: "deny" }),
        h("label", { for: `deny-${n}` }, "Deny")),
      h("div", { class: "field" }, h("label", { for: `reason-${n}` }, "Reason (optional, told to the agent)"),
        h("input", { id: `reason-${n}`, name: `reason-${n}`, autocomplete: "off" })))),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Send answer")));
    replace(approvals, form);
    // A new message would be refused (409) while a run waits: answer first.
    input.disabled = true;
    send.disabled = true;
  }

  async function submit() {
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    await turn({ messages: [{ role: "user", content: text }] });
  }

  async function turn(request) {
    controller = new AbortController();
    baseline = new Map(blocks);
    const events = new Map();
    let stopReason = null;
    let usage = null;
    let failure = null;
    send.disabled = true;
    stop.hidden = false;
    replace(approvals);
    status.textContent = "The agent is working…";
    try {
      for await (const event of stream(routes.messages,
        { ...request, streaming: true, stream_tokens: true }, { signal: controller.signal })) {
        if (event.message_type === "stop_reason") stopReason = event.stop_reason;
        else if (event.message_type === "usage_statistics") usage = event;
        else if (event.message_type === "ping") continue;
        else if (event.message_type === "error_message") failure = event;
        else if (event.id) mergeEvent(events, event);
        // A tool's result is stored with the memory edits of its step: show them now.
        if (event.message_type === "tool_return_message") loadMemory({ highlight: true });
        replace(live, renderTranscript([...events.values()]));
        scroller.scrollTop = scroller.scrollHeight;
      }
    } catch (error) {
      if (error.name !== "AbortError") failure = { message: describe(error) };
    } finally {
      controller = null;
      send.disabled = false;
      stop.hidden = true;
    }
    const parts = [];
    if (stopReason) parts.push(`Stop reason: ${stopReason}`);
    if (usage) parts.push(`${usage.total_tokens} tokens in ${usage.step_count} step${usage.step_count === 1 ? "" : "s"}`);
    status.textContent = parts.join(" · ");
    await Promise.all([loadHistory().then(loadApprovals), loadMemory({ highlight: true }), refreshActor()]);
    baseline = null;
    replace(live);
    if (failure) {
      live.append(h("li", { class: "msg error_message", role: "alert" },
        failure.message || failure.detail || failure.error_type || "The turn failed"));
    }
    const reply = [...events.values()].filter((m) => m.message_type === "assistant_message").pop();
    announce(reply ? `Agent: ${textOf(reply.content)}` : status.textContent);
    // Counts finished turns (history, memory and approvals read again): what a test waits on.
    status.dataset.turns = String(Number(status.dataset.turns || 0) + 1);
    if (!input.disabled) input.focus();
  }

  async function cancel() {
    // The stream ends with stop reason "cancelled"; the turn's end writes the status then.
    status.textContent = "Stopping…";
    try {
      await api.post(routes.cancel, {});
    } catch (error) {
      if (controller) status.textContent = describe(error);
    }
  }

  // Between turns the blocks are looked at every few seconds, so an edit by another
  // conversation of the agent, another client or a sleeptime companion shows too (during
  // a turn, each tool return reads them). Not while a block is being edited here.
  let closed = false;
  let memoryTimer = null;
  async function watchMemory() {
    if (!controller && !document.hidden && !memory.querySelector(".block-edit")) {
      await loadMemory({ highlight: true, onlyIfChanged: true });
    }
    if (!closed) memoryTimer = setTimeout(watchMemory, MEMORY_EVERY_MS);
  }

  loadHistory().then(loadApprovals);
  loadMemory().then(() => { if (!closed) memoryTimer = setTimeout(watchMemory, MEMORY_EVERY_MS); });
  input.focus();
  return () => {
    closed = true;
    clearTimeout(memoryTimer);
    if (controller) controller.abort();
  };
}
