// The agents: a searchable list (by name or text, and by tags), the create form, delete.

import { api } from "./api.js";
import { announce, confirmDialog, errorBox, h, replace, shortId, when } from "./dom.js";

export async function agentsView(main) {
  const results = h("div", { class: "results", "aria-live": "polite" });
  const query = h("input", { id: "agent-search", type: "search", name: "q", autocomplete: "off",
    placeholder: "name or text" });
  const tagSelect = h("select", { id: "agent-tag", name: "tag" }, h("option", { value: "" }, "Any tag"));
  const form = h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); load(); } },
    h("div", { class: "field" }, h("label", { for: "agent-search" }, "Search agents"), query),
    h("div", { class: "field" }, h("label", { for: "agent-tag" }, "Tag"), tagSelect),
    h("button", { type: "submit" }, "Search"));
  replace(main,
    h("div", { class: "page-head" },
      h("h1", {}, "Agents"),
      h("a", { class: "button primary", href: "#/agents/new" }, "New agent")),
    form, results);
  tagSelect.addEventListener("change", () => load());

  let timer;
  query.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(load, 250); });

  api.get("/v1/tags/").then((tags) => {
    for (const tag of tags || []) tagSelect.append(h("option", { value: tag }, tag));
  }).catch(() => {});

  async function load() {
    try {
      const agents = await api.get("/v1/agents/", {
        limit: 100, order: "desc", query_text: query.value.trim(), tags: tagSelect.value || undefined,
      });
      renderList(agents);
    } catch (error) {
      replace(results, errorBox(error));
    }
  }

  function renderList(agents) {
    if (!agents.length) {
      replace(results, h("p", { class: "empty" },
        query.value || tagSelect.value ? "No agent matches." : "No agents yet. ",
        query.value || tagSelect.value ? null : h("a", { href: "#/agents/new" }, "Create the first one.")));
      return;
    }
    replace(results, h("ul", { class: "cards", "aria-label": "Agents" }, agents.map((agent) =>
      h("li", { class: "card agent-card", dataset: { agentId: agent.id } },
        h("h2", {}, h("a", { href: `#/agents/${agent.id}` }, agent.name || agent.id)),
        h("p", { class: "meta" }, h("code", {}, shortId(agent.id)), " · ", agent.model || "",
          " · ", agent.agent_type || ""),
        agent.description ? h("p", {}, agent.description) : null,
        agent.tags && agent.tags.length
          ? h("ul", { class: "tags", "aria-label": "Tags" }, agent.tags.map((t) => h("li", {}, t)))
          : null,
        h("p", { class: "meta" }, `Created ${when(agent.created_at)}`),
        h("div", { class: "actions" },
          h("a", { class: "button", href: `#/agents/${agent.id}` }, "Open"),
          h("button", { type: "button", class: "danger",
            "aria-label": `Delete ${agent.name || agent.id}`,
            onclick: () => deleteAgent(agent, load) }, "Delete"))))));
  }

  await load();
  query.focus();
}

export async function deleteAgent(agent, then) {
  const ok = await confirmDialog(`Delete ${agent.name || agent.id}?`,
    "The agent, its messages, runs and archival passages are deleted. This cannot be undone.");
  if (!ok) return false;
  await api.del(`/v1/agents/${agent.id}`);
  announce(`Deleted ${agent.name || agent.id}`);
  if (then) await then();
  return true;
}

const DEFAULT_BLOCKS = [
  { label: "persona", value: "I am a helpful assistant with a persistent memory." },
  { label: "human", value: "" },
];

export async function createView(main) {
  const errors = h("div", { "aria-live": "assertive" });
  const models = h("select", { id: "new-model", name: "model", required: true });
  const blocks = h("div", { class: "blocks-editor" });
  let counter = 0;

  function addBlock(label = "", value = "") {
    const n = ++counter;
    const row = h("fieldset", { class: "block-row" },
      h("legend", {}, `Memory block ${n}`),
      h("div", { class: "field" }, h("label", { for: `block-label-${n}` }, "Label"),
        h("input", { id: `block-label-${n}`, name: "label", value: label, required: true,
          pattern: "[A-Za-z0-9_\\-]+", title: "letters, digits, _ and -" })),
      h("div", { class: "field" }, h("label", { for: `block-value-${n}` }, "Value"),
        h("textarea", { id: `block-value-${n}`, name: "value", rows: 3 }, value)),
      h("button", { type: "button", class: "quiet", onclick: () => { row.remove(); } },
        `Remove block ${n}`));
    blocks.append(row);
    return row;
  }

  const form = h("form", { class: "create", onsubmit: submit },
    h("div", { class: "field" }, h("label", { for: "new-name" }, "Name"),
      h("input", { id: "new-name", name: "name", required: true, autocomplete: "off" })),
    h("div", { class: "field" }, h("label", { for: "new-model" }, "Model"), models),
    h("div", { class: "field" }, h("label", { for: "new-type" }, "Agent type"),
      h("select", { id: "new-type", name: "agent_type" },
        h("option", { value: "letta_v1_agent" }, "letta_v1_agent (default)"),
        h("option", { value: "memgpt_v2_agent" }, "memgpt_v2_agent"),
        h("option", { value: "memgpt_agent" }, "memgpt_agent"))),
    h("div", { class: "field" }, h("label", { for: "new-tags" }, "Tags (comma-separated)"),
      h("input", { id: "new-tags", name: "tags", autocomplete: "off" })),
    h("h2", {}, "Core memory"),
    blocks,
    h("button", { type: "button", onclick: () => addBlock().querySelector("input").focus() },
      "Add a memory block"),
    errors,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Create agent"),
      h("a", { class: "button", href: "#/agents" }, "Cancel")));
  for (const b of DEFAULT_BLOCKS) addBlock(b.label, b.value);
  replace(main, h("h1", {}, "New agent"), form);
  form.querySelector("#new-name").focus();

  try {
    const list = await api.get("/v1/models/");
    replace(models, list.map((m) => h("option", { value: m.handle }, m.display_name
      ? `${m.handle} (${m.display_name})` : m.handle)));
  } catch (error) {
    replace(errors, errorBox(error));
  }

  async function submit(event) {
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      name: data.get("name").trim(),
      model: data.get("model"),
      agent_type: data.get("agent_type"),
      tags: String(data.get("tags") || "").split(",").map((t) => t.trim()).filter(Boolean),
      memory_blocks: [...blocks.querySelectorAll(".block-row")].map((row) => ({
        label: row.querySelector("input[name=label]").value.trim(),
        value: row.querySelector("textarea[name=value]").value,
      })),
    };
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const agent = await api.post("/v1/agents/", body);
      announce(`Agent ${agent.name} created`);
      location.hash = `#/agents/${agent.id}`;
    } catch (error) {
      replace(errors, errorBox(error));
      button.disabled = false;
    }
  }
}
