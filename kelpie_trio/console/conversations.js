// An agent's conversations: each its own history and actor, sharing the agent's memory.
// Listed newest first, created from a form, and opened into a chat (chat.js) that streams
// like the default one.

import { api } from "./api.js";
import { chatTab } from "./chat.js";
import { announce, errorBox, h, replace, shortId, when } from "./dom.js";

export async function conversationsTab(body, agent, refreshActor, conversationId) {
  if (conversationId) return conversationChat(body, agent, refreshActor, conversationId);
  const list = h("div", { "aria-live": "polite" });
  const summary = h("input", { id: "conversation-summary", name: "summary", autocomplete: "off",
    placeholder: "what it is about" });
  const problem = h("div", { "aria-live": "assertive" });
  const create = h("form", { class: "filters new-conversation", onsubmit: async (event) => {
    event.preventDefault();
    const button = create.querySelector("button");
    button.disabled = true;
    try {
      const made = await api.post("/v1/conversations/", { summary: summary.value.trim() || undefined },
        { query: { agent_id: agent.id } });
      announce("Conversation created");
      location.hash = `#/agents/${agent.id}/conversations/${made.id}`;
    } catch (error) {
      replace(problem, errorBox(error));
      button.disabled = false;
    }
  } },
  h("div", { class: "field" }, h("label", { for: "conversation-summary" }, "Summary (optional)"), summary),
  h("button", { type: "submit", class: "primary" }, "New conversation"));
  replace(body, h("h2", {}, "Conversations"),
    h("p", { class: "meta" }, "Besides its default conversation (the Chat tab), an agent can hold others: ",
      "each has its own history and its own actor, and all share the agent's core memory."),
    create, problem, list);

  try {
    const found = await api.get("/v1/conversations/", { agent_id: agent.id, limit: 50, order: "desc" });
    replace(list, found.length
      ? h("ul", { class: "cards conversations", "aria-label": "Conversations" }, found.map((c) =>
        h("li", { class: "card conversation", dataset: { conversationId: c.id } },
          h("h3", {}, h("a", { href: `#/agents/${agent.id}/conversations/${c.id}` }, label(c))),
          h("p", { class: "meta" }, h("code", {}, shortId(c.id)), ` · created ${when(c.created_at)}`,
            c.last_message_at ? ` · last message ${when(c.last_message_at)}` : " · no message yet"))))
      : h("p", { class: "empty" }, "No other conversation yet."));
  } catch (error) {
    replace(list, errorBox(error));
  }
  return undefined;
}

function label(conversation) {
  return conversation.summary || `Conversation ${shortId(conversation.id)}`;
}

async function conversationChat(body, agent, refreshActor, conversationId) {
  let conversation;
  try {
    conversation = await api.get(`/v1/conversations/${conversationId}`);
  } catch (error) {
    replace(body, errorBox(error));
    return undefined;
  }
  const chat = h("div");
  replace(body,
    h("p", { class: "crumbs" }, h("a", { href: `#/agents/${agent.id}/conversations` }, "Conversations"), " / "),
    h("h2", { class: "conversation-title" }, label(conversation)),
    h("p", { class: "meta" }, h("code", {}, conversation.id)),
    chat);
  const refresh = () => refreshActor(conversation.id);
  refresh();
  return chatTab(chat, agent, refresh, conversation);
}
