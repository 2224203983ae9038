// A client-side tool through a token stream, as Letta's CLI handles one: the tool is offered
// with the send (client_tools), the streamed approval_request_message deltas are put together
// by tool_call_id, the client runs the call and sends its result back as an approval.
import { client, collect, done, model, pieces, step } from "./steps.mjs";

const weather = {
  name: "get_weather",
  description: "The weather in a city.",
  parameters: {
    type: "object",
    properties: { city: { type: "string", description: "The city" } },
    required: ["city"],
  },
};

const agent = await step("agent", async () => {
  const a = await client.agents.create({ name: "ts-sdk-client-tool", model });
  return { id: a.id };
});

const asked = await step("asked", async () => {
  const stream = await client.agents.messages.stream(agent.id, {
    messages: [{ role: "user", content: "Weather in Oslo?" }],
    client_tools: [weather],
    stream_tokens: true,
  });
  const chunks = await collect(stream);
  const calls = {};
  for (const c of chunks.filter((c) => c.message_type === "approval_request_message")) {
    const id = c.tool_call?.tool_call_id ?? "(no id)";
    calls[id] ??= { name: "", arguments: "" };
    calls[id].name += c.tool_call?.name ?? "";
    calls[id].arguments += c.tool_call?.arguments ?? "";
  }
  return { calls, stop: chunks.find((c) => c.message_type === "stop_reason")?.stop_reason ?? null };
});

await step("answered", async () => {
  const [id, call] = Object.entries(asked.calls)[0];
  const city = JSON.parse(call.arguments || "{}").city ?? "(no city)";
  const stream = await client.agents.messages.stream(agent.id, {
    messages: [
      { type: "approval", approvals: [{ type: "tool", tool_call_id: id, tool_return: `Sunny in ${city}`, status: "success" }] },
    ],
    client_tools: [weather],
    stream_tokens: true,
  });
  const chunks = await collect(stream);
  return {
    returned: chunks.filter((c) => c.message_type === "tool_return_message").map((c) => c.tool_return),
    reply: pieces(chunks).join(""),
    stop: chunks.find((c) => c.message_type === "stop_reason")?.stop_reason ?? null,
  };
});

done();
