// A background run's stream, dropped by the client and resumed from the last event it
// saw: `runs.messages.stream(run_id, {starting_after: seq_id})` gives what came after.
import { client, collect, done, model, pieces, step } from "./steps.mjs";

const agent = await step("agent", async () => {
  const a = await client.agents.create({ name: "ts-sdk-background", model });
  return { id: a.id };
});

const first = await step("first", async () => {
  const stream = await client.agents.messages.create(agent.id, {
    messages: [{ role: "user", content: "Take your time" }],
    streaming: true,
    stream_tokens: true,
    background: true,
  });
  // Drop the connection after the first event that names its run and position (while the
  // model is slow: the reply has not begun).
  const chunks = await collect(stream, { until: (c) => c.run_id && c.seq_id != null });
  stream.controller.abort();
  const last = chunks.at(-1);
  return { run_id: last.run_id, seq_id: last.seq_id, pieces: pieces(chunks) };
});

await step("resumed", async () => {
  const stream = await client.runs.messages.stream(first.run_id, { starting_after: first.seq_id });
  const chunks = await collect(stream);
  return {
    types: [...new Set(chunks.map((c) => c.message_type))],
    pieces: pieces(chunks),
    seq_ids: [...new Set(chunks.filter((c) => c.seq_id != null).map((c) => c.seq_id))],
    stop: chunks.find((c) => c.message_type === "stop_reason")?.stop_reason ?? null,
  };
});

await step("run", async () => {
  const run = await client.runs.retrieve(first.run_id);
  return { status: run.status, background: run.background ?? null };
});

done();
