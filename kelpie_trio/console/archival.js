// An agent's archival memory: the latest passages, search, and adding one.

import { api } from "./api.js";
import { announce, errorBox, h, replace, when } from "./dom.js";

export async function archivalTab(body, agent) {
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
