// An agent's runs (status, stop reason, usage, messages) and its sessions: a run seen with
// its checkpoint (iteration, pending calls, approval, pause), which can be transferred to
// another agent while it is unfinished.

import { api } from "./api.js";
import { announce, errorBox, h, replace, shortId, when } from "./dom.js";
import { renderTranscript } from "./messages.js";

// -- runs ---------------------------------------------------------------------------

export async function runsTab(body, agent) {
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

export function statusBadge(status) {
  const tone = { completed: "good", failed: "bad", cancelled: "bad", running: "", created: "" }[status] ?? "";
  return h("span", { class: `badge ${tone}` }, status);
}

function duration(run) {
  if (run.total_duration_ns) return `${(run.total_duration_ns / 1e9).toFixed(2)} s`;
  return "";
}

export async function runDetail(body, agent, runId) {
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
        ["Paused", session.is_paused ? pausedUntil(session) : "no"],
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

// -- sessions -----------------------------------------------------------------------

const FINISHED = new Set(["completed", "failed", "cancelled"]);

// Unfinished: still running, paused, or parked waiting for approval (shown as completed
// by Letta's run status, but its checkpoint says it waits).
function unfinished(session) {
  return !FINISHED.has(session.status) || (session.awaiting_approval && !session.stop_reason);
}

// pause_until is in seconds on the server's clock (since the epoch), like the runtime's times.
function pausedUntil(session) {
  return session.pause_until ? `until ${new Date(session.pause_until * 1000).toLocaleString()}` : "until resumed";
}

function sessionState(session) {
  if (session.awaiting_approval && !session.stop_reason) return "waiting for approval";
  if (session.is_paused && !session.stop_reason) return "paused";
  return session.status;
}

export async function sessionsTab(body, agent) {
  const heading = h("h2", {}, "Sessions");
  const result = h("div", { class: "transfer-result", "aria-live": "polite" });
  replace(body, heading, h("p", {}, "Loading…"));
  let sessions;
  let others;
  try {
    [sessions, others] = await Promise.all([
      api.get(`/v1/agents/${agent.id}/sessions`, { order: "desc", limit: 50 }),
      api.get("/v1/agents/", { limit: 100, order: "desc" }),
    ]);
  } catch (error) {
    replace(body, heading, errorBox(error));
    return;
  }
  others = others.filter((a) => a.id !== agent.id);
  const intro = h("p", { class: "meta" }, "A session is a run with its checkpoint. An unfinished one ",
    "(running, paused or waiting for approval) can move to another agent, which goes on from the checkpoint.");
  if (!sessions.length) {
    replace(body, heading, intro, h("p", { class: "empty" }, "No sessions yet: every message sent starts one."));
    return;
  }
  replace(body, heading, intro, result, h("ul", { class: "cards sessions" }, sessions.map((s) => h("li",
    { class: "card session", dataset: { sessionId: s.session_id } },
    h("h3", {}, h("a", { href: `#/agents/${agent.id}/runs/${s.session_id}` }, `Session ${shortId(s.session_id)}`),
      statusBadge(sessionState(s))),
    h("dl", { class: "facts" },
      h("dt", {}, "Checkpoint iteration"), h("dd", {}, String(s.iteration)),
      h("dt", {}, "Pending tool calls"), h("dd", {}, String((s.pending_tool_calls || []).length)),
      h("dt", {}, "Stop reason"), h("dd", {}, s.stop_reason || "—"),
      s.is_paused && !s.stop_reason ? [h("dt", {}, "Paused"), h("dd", {}, pausedUntil(s))] : null,
      h("dt", {}, "Started"), h("dd", {}, when(s.created_at))),
    unfinished(s) ? transferForm(agent, s, others, result) : null))));
}

function transferForm(agent, session, others, result) {
  const fieldId = `transfer-${session.session_id}`;
  if (!others.length) return h("p", { class: "meta" }, "Create another agent to move this session to it.");
  const target = h("select", { id: fieldId, name: "target", required: true },
    others.map((a) => h("option", { value: a.id }, `${a.name || a.id} (${shortId(a.id)})`)));
  const button = h("button", { type: "submit", "aria-label": `Transfer session ${shortId(session.session_id)}` },
    "Transfer");
  const form = h("form", { class: "transfer", onsubmit: async (event) => {
    event.preventDefault();
    button.disabled = true;
    replace(result, h("p", {}, "Moving the session…"));
    try {
      const moved = await api.post(`/v1/agents/${agent.id}/sessions/${session.session_id}/transfer`,
        { target_agent_id: target.value });
      const to = others.find((a) => a.id === moved.agent_id);
      const notice = h("p", { class: "notice", role: "status", tabindex: "-1" },
        `Session ${shortId(moved.session_id)} moved to `,
        h("a", { href: `#/agents/${moved.agent_id}/sessions` }, to ? to.name : moved.agent_id),
        ` at iteration ${moved.iteration}; it goes on there (${sessionState(moved)}).`);
      replace(result, notice);
      announce(`Session moved to ${to ? to.name : moved.agent_id}`);
      form.replaceWith(h("p", { class: "meta" }, "Moved."));
      notice.focus(); // the form that had focus is gone: the keyboard goes on from here
    } catch (error) {
      replace(result, errorBox(error));
      button.disabled = false;
    }
  } },
  h("label", { for: fieldId }, "Move to agent"),
  h("div", { class: "actions" }, target, button));
  return form;
}
