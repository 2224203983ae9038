// Letta's conversations through the TypeScript SDK: a conversation of an agent, a message
// sent into it (the route always streams), its own history, the agent's default
// conversation addressed as "default" with agent_id, and that the two histories stay apart.
import { client, collect, done, model, pieces, step } from "./steps.mjs";

const agent = await step("agent", async () => {
  const a = await client.agents.create({ name: "ts-sdk-conversations", model });
  return { id: a.id };
});

const conversation = await step("conversation", async () => {
  const c = await client.conversations.create({ agent_id: agent.id });
  return { id: c.id, agent_id: c.agent_id };
});

await step("retrieved", async () => {
  const c = await client.conversations.retrieve(conversation.id);
  return { id: c.id, agent_id: c.agent_id };
});

await step("sent", async () => {
  const stream = await client.conversations.messages.create(conversation.id, {
    messages: [{ role: "user", content: "Into the conversation" }],
    stream_tokens: true,
  });
  const chunks = await collect(stream);
  return {
    pieces: pieces(chunks),
    stop: chunks.find((c) => c.message_type === "stop_reason")?.stop_reason ?? null,
  };
});

await step("listed", async () => {
  const listed = [];
  for await (const m of client.conversations.messages.list(conversation.id, { order: "asc" })) listed.push(m);
  return listed
    .filter((m) => m.message_type === "user_message" || m.message_type === "assistant_message")
    .map((m) => [m.message_type, m.content]);
});

await step("default_sent", async () => {
  const stream = await client.conversations.messages.create("default", {
    agent_id: agent.id,
    messages: [{ role: "user", content: "Into the default" }],
  });
  const chunks = await collect(stream);
  return { pieces: pieces(chunks) };
});

await step("default_listed", async () => {
  const listed = [];
  for await (const m of client.conversations.messages.list("default", { agent_id: agent.id, order: "asc" }))
    listed.push(m);
  return listed
    .filter((m) => m.message_type === "user_message" || m.message_type === "assistant_message")
    .map((m) => [m.message_type, m.content]);
});

await step("listed_conversations", async () => {
  const listed = await client.conversations.list({ agent_id: agent.id });
  return listed.map((c) => c.id);
});

done();
