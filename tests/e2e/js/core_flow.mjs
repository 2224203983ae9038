// The core flow of Letta's TypeScript SDK against a kelpie-trio server (LETTA_BASE_URL):
// create an agent, send a message, stream a reply, list the history, edit a memory block,
// delete the agent. Prints one JSON line: what each step saw, for pytest to assert.
import Letta, { NotFoundError } from "@letta-ai/letta-client";

const client = new Letta({ baseURL: process.env.LETTA_BASE_URL, apiKey: "kelpie-e2e", maxRetries: 0 });
const out = {};

const agent = await client.agents.create({
  name: "ts-sdk-e2e",
  model: process.env.E2E_MODEL,
  memory_blocks: [{ label: "human", value: "Ada" }],
});
out.agent = { id: agent.id, name: agent.name, blocks: agent.memory.blocks.map((b) => [b.label, b.value]) };

const sent = await client.agents.messages.create(agent.id, {
  messages: [{ role: "user", content: "Hello there" }],
});
out.sent = {
  types: sent.messages.map((m) => m.message_type),
  reply: sent.messages.filter((m) => m.message_type === "assistant_message").map((m) => m.content),
  stop: sent.stop_reason?.stop_reason ?? null,
};

const stream = await client.agents.messages.stream(agent.id, {
  messages: [{ role: "user", content: "Now stream it" }],
  stream_tokens: true,
});
const chunks = [];
for await (const chunk of stream) chunks.push(chunk);
out.streamed = {
  types: [...new Set(chunks.map((c) => c.message_type))],
  pieces: chunks.filter((c) => c.message_type === "assistant_message").map((c) => c.content),
  ids: [...new Set(chunks.filter((c) => c.message_type === "assistant_message").map((c) => c.id))].length,
  stop: chunks.find((c) => c.message_type === "stop_reason")?.stop_reason ?? null,
};

const listed = [];
for await (const m of client.agents.messages.list(agent.id, { limit: 50, order: "asc" })) listed.push(m);
out.listed = listed
  .filter((m) => m.message_type === "user_message" || m.message_type === "assistant_message")
  .map((m) => [m.message_type, m.content]);

const updated = await client.agents.blocks.update("human", { agent_id: agent.id, value: "Ada Lovelace" });
const again = await client.agents.blocks.retrieve("human", { agent_id: agent.id });
out.block = { updated: updated.value, retrieved: again.value };

await client.agents.delete(agent.id);
try {
  await client.agents.retrieve(agent.id);
  out.after_delete = "still there";
} catch (error) {
  out.after_delete = error instanceof NotFoundError ? error.status : String(error);
}

console.log(JSON.stringify(out));
