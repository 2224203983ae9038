// Step bookkeeping for the end-to-end scripts: each step's result goes into one JSON object,
// printed as the last stdout line; the first failing step stops the script and is named
// there (`failed_at`, with the HTTP status and body the SDK saw), so pytest can say where.
import Letta from "@letta-ai/letta-client";

export const client = new Letta({
  baseURL: process.env.LETTA_BASE_URL,
  apiKey: "kelpie-e2e",
  maxRetries: 0,
});
export const model = process.env.E2E_MODEL;
export const out = {};

export async function step(name, fn) {
  try {
    out[name] = await fn();
    return out[name];
  } catch (error) {
    out.failed_at = { step: name, status: error?.status ?? null, error: String(error?.message ?? error) };
    console.log(JSON.stringify(out));
    process.exit(0);
  }
}

export function done() {
  console.log(JSON.stringify(out));
}

export async function collect(stream, { until } = {}) {
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    if (until && until(chunk, chunks)) break;
  }
  return chunks;
}

export function pieces(chunks) {
  return chunks.filter((c) => c.message_type === "assistant_message").map((c) => c.content);
}
