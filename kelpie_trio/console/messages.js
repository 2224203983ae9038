// Letta messages as the console shows them: a transcript where each tool call is folded
// together with its return, and a stream's token deltas merged into their message.

import { h, pretty, when } from "./dom.js";

// Text of a message's content: a string, or a list of parts (text, image).
export function textOf(content) {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => (part.type === "text" ? part.text : part.type === "image" ? "[image]" : ""))
      .join("");
  }
  return String(content);
}

function callsOf(message) {
  if (Array.isArray(message.tool_calls) && message.tool_calls.length) return message.tool_calls;
  return message.tool_call ? [message.tool_call] : [];
}

// Merge one streamed event into `messages` (an ordered Map keyed by id and type). Deltas of
// one message share its id: text, reasoning and call arguments arrive piece by piece.
export function mergeEvent(messages, event) {
  const key = `${event.id}:${event.message_type}`;
  const known = messages.get(key);
  if (!known) {
    messages.set(key, structuredClone(event));
    return key;
  }
  switch (event.message_type) {
    case "assistant_message":
      known.content = textOf(known.content) + textOf(event.content);
      break;
    case "reasoning_message":
      known.reasoning = (known.reasoning || "") + (event.reasoning || "");
      break;
    case "tool_call_message":
    case "approval_request_message": {
      const calls = callsOf(known);
      for (const delta of callsOf(event)) {
        const call = calls.find((c) => c.tool_call_id === delta.tool_call_id) || calls[calls.length - 1];
        if (!call || (delta.tool_call_id && call.tool_call_id && call.tool_call_id !== delta.tool_call_id)) {
          calls.push({ ...delta });
          continue;
        }
        call.name = call.name || delta.name;
        call.arguments = (call.arguments || "") + (delta.arguments || "");
      }
      known.tool_calls = calls;
      known.tool_call = calls[0];
      break;
    }
    default:
      messages.set(key, { ...known, ...event });
  }
  return key;
}

// A history listed newest first (order=desc) in reading order. The server pages by stored
// message: the parts of one (reasoning, then its tool call) keep their order and share an id,
// so the groups are reversed, not the parts.
export function chronological(newestFirst) {
  const groups = [];
  for (const m of newestFirst) {
    const last = groups[groups.length - 1];
    if (last && m.id && last[0].id === m.id) last.push(m);
    else groups.push([m]);
  }
  return groups.reverse().flat();
}

const WHO = {
  user_message: "You",
  assistant_message: "Agent",
  system_message: "System",
};

// The transcript of `messages` (in order) into a list of elements.
export function renderTranscript(messages) {
  const returns = new Map();
  for (const m of messages) {
    if (m.message_type === "tool_return_message" && m.tool_call_id) returns.set(m.tool_call_id, m);
  }
  const folded = new Set();
  const items = [];
  for (const m of messages) {
    if (m.message_type === "tool_return_message" && folded.has(m.tool_call_id)) continue;
    const item = renderMessage(m, returns, folded);
    if (item) items.push(item);
  }
  return items;
}

export function renderMessage(m, returns = new Map(), folded = new Set()) {
  const type = m.message_type;
  const meta = h("span", { class: "meta" }, when(m.date));
  switch (type) {
    case "user_message":
    case "assistant_message":
      return h("li", { class: `msg ${type}`, dataset: { id: m.id || "" } },
        h("span", { class: "who" }, WHO[type]), " ", meta,
        h("div", { class: "text" }, textOf(m.content)));
    case "system_message":
      return h("li", { class: "msg system_message" },
        h("details", {}, h("summary", {}, "System message ", meta), h("pre", {}, textOf(m.content))));
    case "reasoning_message":
      return h("li", { class: "msg reasoning_message" },
        h("details", {}, h("summary", {}, "Reasoning"), h("div", { class: "text" }, m.reasoning || "")));
    case "hidden_reasoning_message":
      return h("li", { class: "msg note" }, "Reasoning hidden by the provider");
    case "tool_call_message":
    case "approval_request_message":
      return h("li", { class: `msg ${type}` }, callsOf(m).map((call) => {
        const returned = returns.get(call.tool_call_id);
        if (returned) folded.add(call.tool_call_id);
        return renderCall(call, returned, type === "approval_request_message");
      }));
    case "tool_return_message":
      return h("li", { class: "msg tool_call_message" }, renderCall(null, m, false));
    case "approval_response_message":
      return h("li", { class: "msg note" }, (m.approvals || []).map((a) =>
        h("div", {}, a.type === "tool"
          ? `Client tool result for ${a.tool_call_id}: ${a.status}`
          : `${a.approve ? "Approved" : "Denied"} ${a.tool_call_id}${a.reason ? `: ${a.reason}` : ""}`)));
    case "event_message":
    case "summary_message":
      return h("li", { class: "msg note" }, type === "summary_message" ? "Context summarised" : "Event");
    case "error_message":
      return h("li", { class: "msg error_message", role: "alert" }, m.message || m.detail || "The turn failed");
    default:
      return null;
  }
}

function renderCall(call, returned, approval) {
  const name = call ? call.name : returned.name || "tool";
  const status = returned ? returned.status : approval ? "waiting for approval" : "running";
  const summary = h("summary", {},
    h("span", { class: "tool-name" }, `${name}()`), " ",
    h("span", { class: `badge ${status === "error" ? "bad" : status === "success" ? "good" : ""}` }, status));
  return h("details", { class: "tool" }, summary,
    call ? [h("h4", {}, "Arguments"), h("pre", {}, pretty(call.arguments || ""))] : null,
    returned ? [h("h4", {}, "Returned"), h("pre", {}, pretty(returned.tool_return ?? ""))] : null,
    returned && returned.stderr && returned.stderr.length
      ? [h("h4", {}, "stderr"), h("pre", {}, returned.stderr.join("\n"))] : null);
}
