// An agent's tools: those attached (detach one, or make it wait for approval) and the
// server's other tools (attach one). Through the tools routes of the public API.

import { api } from "./api.js";
import { announce, errorBox, h, replace } from "./dom.js";

const MAX_TOOLS = 200; // the server's tools listed: base tools and custom ones, newest last

function firstLine(text) {
  return text ? text.split("\n")[0] : "";
}

function needsApproval(agent, name) {
  return (agent.tool_rules || []).some((r) => r.type === "requires_approval" && r.tool_name === name);
}

export async function toolsTab(body, agent) {
  const problem = h("div", { "aria-live": "assertive" });
  const attachedList = h("div");
  const availableList = h("div");
  const filter = h("input", { id: "tool-filter", type: "search", autocomplete: "off", placeholder: "name" });
  replace(body,
    h("h2", { id: "tools-attached" }, "Attached tools"), problem, attachedList,
    h("h2", { id: "tools-available" }, "The server's other tools"),
    h("div", { class: "field" }, h("label", { for: "tool-filter" }, "Filter by name"), filter),
    availableList);

  let current = agent;
  let server = [];

  async function change(tool, attach) {
    const verb = attach ? "attach" : "detach";
    try {
      current = await api.patch(`/v1/agents/${agent.id}/tools/${verb}/${tool.id}`, {});
      replace(problem);
      announce(`${tool.name} ${attach ? "attached" : "detached"}`);
      render();
      // Focus stays with the tool's new place, so a keyboard user can undo at once.
      const moved = body.querySelector(`[data-tool-name="${CSS.escape(tool.name)}"] button`);
      if (moved) moved.focus();
    } catch (error) {
      replace(problem, errorBox(error));
    }
  }

  async function setApproval(tool, required, box) {
    try {
      current = await api.patch(`/v1/agents/${agent.id}/tools/approval/${encodeURIComponent(tool.name)}`,
        { requires_approval: required });
      replace(problem);
      announce(`${tool.name} ${required ? "now waits for approval" : "runs without approval"}`);
    } catch (error) {
      box.checked = !required;
      replace(problem, errorBox(error));
    }
  }

  function attachedItem(tool) {
    const boxId = `approval-${tool.name}`;
    const box = h("input", { type: "checkbox", id: boxId, checked: needsApproval(current, tool.name),
      onchange: () => setApproval(tool, box.checked, box) });
    return h("li", { class: "card tool-card", dataset: { toolName: tool.name } },
      h("h3", {}, tool.name), h("p", { class: "meta" }, tool.tool_type || ""),
      tool.description ? h("p", {}, firstLine(tool.description)) : null,
      h("div", { class: "choices" }, box, h("label", { for: boxId }, "Wait for approval before it runs")),
      h("div", { class: "actions" }, h("button", { type: "button", class: "danger",
        "aria-label": `Detach ${tool.name}`, onclick: () => change(tool, false) }, "Detach")));
  }

  function availableItem(tool) {
    return h("li", { class: "card tool-card", dataset: { toolName: tool.name } },
      h("h3", {}, tool.name), h("p", { class: "meta" }, tool.tool_type || ""),
      tool.description ? h("p", {}, firstLine(tool.description)) : null,
      h("div", { class: "actions" }, h("button", { type: "button",
        "aria-label": `Attach ${tool.name}`, onclick: () => change(tool, true) }, "Attach")));
  }

  function render() {
    const attached = current.tools || [];
    const ids = new Set(attached.map((t) => t.id));
    const wanted = filter.value.trim().toLowerCase();
    const available = server.filter((t) => !ids.has(t.id) && (!wanted || t.name.toLowerCase().includes(wanted)));
    replace(attachedList, attached.length
      ? h("ul", { class: "cards attached-tools", "aria-labelledby": "tools-attached" }, attached.map(attachedItem))
      : h("p", { class: "empty" }, "This agent has no tools."));
    replace(availableList, available.length
      ? h("ul", { class: "cards available-tools", "aria-labelledby": "tools-available" }, available.map(availableItem))
      : h("p", { class: "empty" }, wanted ? "No other tool matches." : "Every tool of the server is attached."));
  }

  filter.addEventListener("input", render);
  try {
    server = await api.get("/v1/tools/", { limit: MAX_TOOLS });
  } catch (error) {
    replace(problem, errorBox(error));
  }
  render();
}
