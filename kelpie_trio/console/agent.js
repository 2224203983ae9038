// One agent: chat (streamed), its core memory, pending approvals, runs, archival memory
// and tools. Every number and word here comes from the public API.

import { api, stream } from "./api.js";
import { deleteAgent } from "./agents.js";
import { announce, describe, errorBox, h, pretty, replace, shortId, when } from "./dom.js";
import { chronological, mergeEvent, renderTranscript, textOf } from "./messages.js";

const PAGE = 50; // messages per page of history

const TABS = [
  ["chat", "Chat"],
  ["runs", "Runs"],
  ["archival", "Archival memory"],
  ["tools", "Tools"],
];

export async function agentView(main, { id, tab = "chat", runId }) {
  let agent;
  try {
    agent = await api.get(`/v1/agents/${id}`);
  } catch (error) {
    replace(main, h("h1", {}, "Agent"), errorBox(error), h("p", {}, h("a", { href: "#/agents" }, "All agents")));
    return undefined;
  }
  const body = h("div", { class: "tab-body" });
  const actorLine = h("p", { class: "meta actor-status", "aria-live": "polite" });
  const refreshActor = () => showActor(id, actorLine);
  refreshActor();
  const title = h("h1", {}, agent.name || agent.id);
  replace(main,
    h("p", { class: "crumbs" }, h("a", { href: "#/agents" }, "Agents"), " / "),
    h("div", { class: "page-head" }, title,
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (await deleteAgent(agent)) location.hash = "#/agents";
      } }, "Delete agent")),
    h("p", { class: "meta" }, h("code", {}, agent.id), " · ", agent.model || "", " · ",
      agent.agent_type || "",
      agent.tags && agent.tags.length ? [" · tags: ", agent.tags.join(", ")] : null),
    actorLine,
    h("nav", { class: "tabs", "aria-label": "Agent" }, h("ul", {}, TABS.map(([key, label]) =>
      h("li", {}, h("a", { href: `#/agents/${id}/${key}`, "aria-current": key === tab ? "page" : false },
        label))))),
    body);
  document.title = `${agent.name} · kelpie-trio console`;
  if (tab === "runs") return runId ? runDetail(body, agent, runId) : runsTab(body, agent);
  if (tab === "archival") return archivalTab(body, agent);
  if (tab === "tools") return toolsTab(body, agent);
  return chatTab(body, agent, refreshActor);
}

// Where the agent runs: its lease in the store says which node holds its actor.
async function showActor(id, line) {
  let snap;
  try {
    snap = await api.get("/v1/_kelpie/runtime");
  } catch {
    replace(line);
    return;
  }
  const lease = snap.leases.find((l) => l.key === id);
  const actor = snap.actors.find((a) => a.key === id);
  const runtime = h("a", { href: "#/runtime" }, "runtime");
  if (lease && lease.live) {
    const here = lease.node_id === snap.node_id ? " (this node)" : "";
    replace(line, "Actor: active on ", h("code", {}, lease.node_id), here, `, lease epoch ${lease.epoch}`,
      actor ? `, mailbox ${actor.mailbox_depth}` : "", " · ", runtime);
  } else if (lease) {
    replace(line, "Actor: inactive (last on ", h("code", {}, lease.node_id), `, epoch ${lease.epoch}) · `, runtime);
  } else {
    replace(line, "Actor: not activated yet (the first message activates it) · ", runtime);
  }
}

// -- chat ---------------------------------------------------------------------------

function chatTab(body, agent, refreshActor) {
  const id = agent.id;
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
      // The chat is the agent's default conversation (with none named, the route lists
      // every conversation's messages, as Letta's does).
      const page = await api.get(`/v1/agents/${id}/messages`,
        { limit: PAGE, order: "desc", conversation_id: "default" });
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
      const page = await api.get(`/v1/agents/${id}/messages`,
        { limit: PAGE, order: "desc", after: first.id, conversation_id: "default" });
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

  async function loadMemory({ highlight = false } = {}) {
    let list;
    try {
      list = await api.get(`/v1/agents/${id}/core-memory/blocks`);
    } catch (error) {
      replace(memory, h("h2", { id: "memory-title" }, "Core memory"), errorBox(error));
      return;
    }
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

  async function loadApprovals() {
    let current;
    try {
      current = await api.get(`/v1/agents/${id}`);
    } catch {
      return;
    }
    const pending = current.pending_approval;
    if (!pending) {
      replace(approvals);
      input.disabled = false;
      send.disabled = false;
      return;
    }
    const calls = pending.tool_calls && pending.tool_calls.length ? pending.tool_calls : [pending.tool_call];
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
      for await (const event of stream(`/v1/agents/${id}/messages`,
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
    await Promise.all([loadHistory(), loadMemory({ highlight: true }), loadApprovals(), refreshActor()]);
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
      await api.post(`/v1/agents/${id}/messages/cancel`, {});
    } catch (error) {
      if (controller) status.textContent = describe(error);
    }
  }

  loadHistory();
  loadMemory();
  loadApprovals();
  input.focus();
  return () => { if (controller) controller.abort(); };
}

// -- runs ---------------------------------------------------------------------------

async function runsTab(body, agent) {
  replace(body, h("h2", {}, "Runs"), h("p", {}, "Loading…"));
  let runs;
  try {
    runs = await api.get("/v1/runs/", { agent_id: agent.id, order: "desc", limit: 50 });
  } catch (error) {
    replace(body, h("h2", {}, "Runs"), errorBox(error));
    return;
  }
  if (!runs.length) {
    replace(body, h("h2", {}, "Runs"), h("p", { class: "empty" }, "No runs yet: every message sent starts one."));
    return;
  }
  replace(body, h("h2", {}, "Runs"), h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Runs" },
    h("table", { class: "runs" },
      h("thead", {}, h("tr", {}, ["Run", "Status", "Stop reason", "Started", "Duration"].map((c) =>
        h("th", { scope: "col" }, c)))),
      h("tbody", {}, runs.map((run) => h("tr", {},
        h("th", { scope: "row" }, h("a", { href: `#/agents/${agent.id}/runs/${run.id}` }, shortId(run.id))),
        h("td", {}, statusBadge(run.status)),
        h("td", {}, run.stop_reason || ""),
        h("td", {}, when(run.created_at)),
        h("td", {}, duration(run))))))));
}

function statusBadge(status) {
  const tone = { completed: "good", failed: "bad", cancelled: "bad", running: "", created: "" }[status] ?? "";
  return h("span", { class: `badge ${tone}` }, status);
}

function duration(run) {
  if (run.total_duration_ns) return `${(run.total_duration_ns / 1e9).toFixed(2)} s`;
  return "";
}

async function runDetail(body, agent, runId) {
  replace(body, h("p", {}, "Loading…"));
  try {
    const [run, usage, messages, session] = await Promise.all([
      api.get(`/v1/runs/${runId}`),
      api.get(`/v1/runs/${runId}/usage`),
      api.get(`/v1/runs/${runId}/messages`, { limit: 200 }),
      api.get(`/v1/agents/${agent.id}/sessions/${runId}`).catch(() => null),
    ]);
    const facts = [
      ["Status", statusBadge(run.status)],
      ["Stop reason", run.stop_reason || "—"],
      ["Started", when(run.created_at)],
      ["Completed", when(run.completed_at) || "—"],
      ["Duration", duration(run) || "—"],
      ["Prompt tokens", usage.prompt_tokens ?? "—"],
      ["Completion tokens", usage.completion_tokens ?? "—"],
      ["Total tokens", usage.total_tokens ?? "—"],
      ["Steps", usage.step_count ?? "—"],
    ];
    if (session) {
      facts.push(
        ["Checkpoint iteration", session.iteration],
        ["Pending tool calls", (session.pending_tool_calls || []).length],
        ["Waiting for approval", session.awaiting_approval ? "yes" : "no"],
        ["Paused", session.is_paused ? `until ${session.pause_until ?? "resumed"}` : "no"],
      );
    }
    replace(body,
      h("p", { class: "crumbs" }, h("a", { href: `#/agents/${agent.id}/runs` }, "Runs"), " / "),
      h("h2", { class: "run-title" }, `Run ${shortId(run.id)}`),
      h("p", { class: "meta" }, h("code", {}, run.id)),
      h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("h3", {}, "Messages"),
      h("ol", { class: "transcript", "aria-label": "Messages of this run" }, renderTranscript(messages)));
    body.querySelector(".run-title").focus?.();
  } catch (error) {
    replace(body, errorBox(error));
  }
}

// -- archival memory ----------------------------------------------------------------

async function archivalTab(body, agent) {
  const results = h("div", { "aria-live": "polite" });
  const query = h("input", { id: "archival-query", type: "search", autocomplete: "off" });
  const text = h("textarea", { id: "archival-text", rows: 3, required: true });
  const problem = h("div", { "aria-live": "assertive" });
  replace(body,
    h("h2", {}, "Archival memory"),
    h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); load(); } },
      h("div", { class: "field" }, h("label", { for: "archival-query" }, "Search passages"), query),
      h("button", { type: "submit" }, "Search")),
    results,
    h("details", { class: "add-passage" }, h("summary", {}, "Add a passage"),
      h("form", { onsubmit: add },
        h("label", { for: "archival-text" }, "Text"), text, problem,
        h("button", { type: "submit", class: "primary" }, "Add"))));

  async function load() {
    const q = query.value.trim();
    try {
      let items;
      if (q) {
        const found = await api.get(`/v1/agents/${agent.id}/archival-memory/search`, { query: q, top_k: 20 });
        items = found.results.map((r) => ({ text: r.content, tags: r.tags, at: r.timestamp }));
      } else {
        const list = await api.get(`/v1/agents/${agent.id}/archival-memory`, { limit: 50, ascending: false });
        items = list.map((p) => ({ text: p.text, tags: p.tags, at: p.created_at }));
      }
      replace(results, items.length
        ? h("ul", { class: "passages", "aria-label": q ? `Passages matching ${q}` : "Latest passages" },
          items.map((p) => h("li", { class: "card" }, h("p", {}, p.text),
            h("p", { class: "meta" }, when(p.at), p.tags && p.tags.length ? ` · ${p.tags.join(", ")}` : ""))))
        : h("p", { class: "empty" }, q ? "No passage matches." : "No passages yet."));
    } catch (error) {
      replace(results, errorBox(error));
    }
  }

  async function add(event) {
    event.preventDefault();
    try {
      await api.post(`/v1/agents/${agent.id}/archival-memory`, { text: text.value });
      text.value = "";
      replace(problem);
      announce("Passage added");
      await load();
    } catch (error) {
      replace(problem, errorBox(error));
    }
  }

  await load();
}

// -- tools --------------------------------------------------------------------------

function toolsTab(body, agent) {
  const tools = agent.tools || [];
  replace(body, h("h2", {}, "Tools"), tools.length
    ? h("ul", { class: "cards" }, tools.map((t) => h("li", { class: "card" },
      h("h3", {}, t.name), h("p", { class: "meta" }, t.tool_type || ""),
      t.description ? h("p", {}, t.description.split("\n")[0]) : null)))
    : h("p", { class: "empty" }, "This agent has no tools."));
}
