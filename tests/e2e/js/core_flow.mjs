// The core flow of Letta's TypeScript SDK against a kelpie-trio server (LETTA_BASE_URL):
// create an agent, send a message, stream a reply, list the history, edit a memory block,
// delete the agent. Prints one JSON line: what each step saw, for pytest to assert.
import { NotFoundError } from "@letta-ai/letta-client";
import { client, collect, done, model, pieces, step } from "./steps.mjs";

const agent = await step("agent", async () => {
  const a = await client.agents.create({
    name: "ts-sdk-e2e",
    model,
    memory_blocks: [{ label: "human", value: "Ada" }],
  });
  return { id: a.id, name: a.name, blocks: a.memory.blocks.map((b) => [b.label, b.value]) };
});

await step("sent", async () => {
  const sent = await client.agents.messages.create(agent.id, {
    messages: [{ role: "user", content: "Hello there" }],
  });
  return {
    types: sent.messages.map((m) => m.message_type),
    reply: sent.messages.filter((m) => m.message_type === "assistant_message").map((m) => m.content),
    stop: sent.stop_reason?.stop_reason ?? null,
  };
});

await step("streamed", async () => {
  const stream = await client.agents.messages.stream(agent.id, {
    messages: [{ role: "user", content: "Now stream it" }],
    stream_tokens: true,
  });
  const chunks = await collect(stream);
  const answer = chunks.filter((c) => c.message_type === "assistant_message");
  return {
    types: [...new Set(chunks.map((c) => c.message_type))],
    pieces: pieces(chunks),
    ids: new Set(answer.map((c) => c.id)).size,
    stop: chunks.find((c) => c.message_type === "stop_reason")?.stop_reason ?? null,
  };
});

await step("listed", async () => {
  const listed = [];
  for await (const m of client.agents.messages.list(agent.id, { limit: 50, order: "asc" })) listed.push(m);
  return listed
    .filter((m) => m.message_type === "user_message" || m.message_type === "assistant_message")
    .map((m) => [m.message_type, m.content]);
});

await step("block", async () => {
  const updated = await client.agents.blocks.update("human", { agent_id: agent.id, value: "Ada Lovelace" });
  const again = await client.agents.blocks.retrieve("human", { agent_id: agent.id });
  return { updated: updated.value, retrieved: again.value };
});

await step("after_delete", async () => {
  await client.agents.delete(agent.id);
  try {
    await client.agents.retrieve(agent.id);
    return "still there";
  } catch (error) {
    return error instanceof NotFoundError ? error.status : String(error);
  }
});

done();
