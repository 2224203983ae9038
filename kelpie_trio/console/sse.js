// Server-sent events read from a fetch() body (EventSource cannot POST nor send a token).
// SseParser is plain: bytes in, data payloads out, so it is easy to reason about.

export class SseParser {
  constructor() {
    this.decoder = new TextDecoder();
    this.buffer = "";
    this.data = [];
  }

  // Feed a chunk (Uint8Array or string); returns the data payloads of the events it ended.
  push(chunk) {
    this.buffer += typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true });
    const events = [];
    let newline;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, newline);
      const width = this.buffer.startsWith("\r\n", newline) ? 2 : 1;
      this.buffer = this.buffer.slice(newline + width);
      if (line === "") {
        if (this.data.length) events.push(this.data.join("\n"));
        this.data = [];
      } else if (line.startsWith("data:")) {
        this.data.push(line.slice(5).replace(/^ /, ""));
      }
      // Comments (":") and other fields (event, id, retry) carry nothing this API uses.
    }
    return events;
  }

  // The stream ended: an event without its closing blank line still counts.
  end() {
    const events = this.push(this.decoder.decode());
    if (this.buffer.startsWith("data:")) this.data.push(this.buffer.slice(5).replace(/^ /, ""));
    this.buffer = "";
    if (this.data.length) events.push(this.data.join("\n"));
    this.data = [];
    return events;
  }
}

// Each event of a streaming response, parsed from JSON; stops at "[DONE]".
export async function* readEvents(response) {
  const reader = response.body.getReader();
  const parser = new SseParser();
  try {
    while (true) {
      const { value, done } = await reader.read();
      const payloads = done ? parser.end() : parser.push(value);
      for (const payload of payloads) {
        if (payload === "[DONE]") return;
        yield JSON.parse(payload);
      }
      if (done) return;
    }
  } finally {
    reader.releaseLock();
  }
}
