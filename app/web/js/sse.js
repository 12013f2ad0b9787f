// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, and the API key must never
// go in a URL, so the page reads the text/event-stream body itself with a ReadableStream reader.

import { ApiError, errorFrom, session } from "./api.js";

export function parseEvent(block) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }
  return data.length ? { event, id, data: data.join("\n") } : null;
}

// Calls onEvent({event, id, data}) for each event until the server closes the stream (resolves) or it breaks
// (rejects with an ApiError). Abort with `signal`.
export async function readEvents(path, onEvent, { signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      headers: { Authorization: `Bearer ${session.key}`, Accept: "text/event-stream" },
      cache: "no-store",
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", "The live updates could not connect.");
  }
  if (!response.ok) throw errorFrom(response.status, await response.json().catch(() => null));
  if (!response.body) throw new ApiError(0, "no_stream", "This browser cannot read a stream.");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network_error", "The live updates were interrupted.");
    }
    if (chunk.done) return;
    buffer += chunk.value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const parsed = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (parsed) onEvent(parsed);
    }
  }
}
