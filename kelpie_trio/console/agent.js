// One agent: its header (id, model, where its actor runs) and its tabs: chat (chat.js),
// conversations, sessions and runs (runs.js), archival memory and tools. Every number
// and word here comes from the public API.

import { api } from "./api.js";
import { deleteAgent } from "./agents.js";
import { archivalTab } from "./archival.js";
import { chatTab } from "./chat.js";
import { conversationsTab } from "./conversations.js";
import { errorBox, h, replace } from "./dom.js";
import { runDetail, runsTab, sessionsTab } from "./runs.js";
import { toolsTab } from "./tools.js";

const TABS = [
  ["chat", "Chat"],
  ["conversations", "Conversations"],
  ["sessions", "Sessions"],
  ["runs", "Runs"],
  ["archival", "Archival memory"],
  ["tools", "Tools"],
];

export async function agentView(main, { id, tab = "chat", sub }) {
  let agent;
  try {
    agent = await api.get(`/v1/agents/${id}`);
  } catch (error) {
    replace(main, h("h1", {}, "Agent"), errorBox(error), h("p", {}, h("a", { href: "#/agents" }, "All agents")));
    return undefined;
  }
  const body = h("div", { class: "tab-body" });
  const actorLine = h("p", { class: "meta actor-status", "aria-live": "polite" });
  const refreshActor = (key = id) => showActor(key, actorLine);
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
  if (tab === "runs") return sub ? runDetail(body, agent, sub) : runsTab(body, agent);
  if (tab === "sessions") return sessionsTab(body, agent);
  if (tab === "conversations") return conversationsTab(body, agent, refreshActor, sub);
  if (tab === "archival") return archivalTab(body, agent);
  if (tab === "tools") return toolsTab(body, agent);
  return chatTab(body, agent, refreshActor);
}

// Where the agent runs: its lease in the store says which node holds its actor.
async function showActor(key, line) {
  let snap;
  try {
    snap = await api.get("/v1/_kelpie/runtime");
  } catch {
    replace(line);
    return;
  }
  const lease = snap.leases.find((l) => l.key === key);
  const actor = snap.actors.find((a) => a.key === key);
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
