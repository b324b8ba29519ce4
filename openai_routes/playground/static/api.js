// The page's client of this server's own OpenAI API, as any client would call it: /v1/models, a streamed
// /v1/chat/completions read off the wire (SSE), and OpenAI's error envelope turned into plain words.

export class APIError extends Error {
  constructor(message, { status = 0, code = null, inStream = false } = {}) {
    super(message);
    this.name = "APIError";
    this.status = status;
    this.code = code;
    this.inStream = inStream;
  }
}

/** Whether this server wants an API key (the only thing the page learns without one). */
export async function fetchConfig() {
  const response = await fetch("/playground/config");
  if (!response.ok) throw await failure(response);
  return response.json();
}

function headers(key) {
  const result = { "Content-Type": "application/json" };
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

async function failure(response) {
  let message = response.statusText || "no message";
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) ({ message, code } = body.error);
  } catch {
    // not JSON: keep the status text
  }
  return new APIError(message, { status: response.status, code });
}

/** The served models, each as {id, images}: whether it takes image parts (its ``input_modalities``). */
export async function listModels(key) {
  const response = await fetch("/v1/models", { headers: headers(key) });
  if (!response.ok) throw await failure(response);
  const body = await response.json();
  return body.data.map((model) => ({ id: model.id, images: (model.input_modalities ?? []).includes("image") }));
}

/** A user message's content: the text alone, or the text and the attached images as OpenAI's content parts. */
export function userContent(text, imageURLs) {
  if (!imageURLs.length) return text;
  const images = imageURLs.map((url) => ({ type: "image_url", image_url: { url } }));
  return text ? [{ type: "text", text }, ...images] : images;
}

/** The body of /v1/chat/completions for the page's settings: the one place it is built (snippets show it too). */
export function chatBody({ model, system, temperature, maxTokens }, messages) {
  const body = { model, messages: system ? [{ role: "system", content: system }, ...messages] : [...messages] };
  if (temperature !== null) body.temperature = temperature;
  if (maxTokens !== null) body.max_tokens = maxTokens;
  body.stream = true;
  body.stream_options = { include_usage: true };
  return body;
}

/** The parsed chunks of a streamed chat completion; aborting ``signal`` closes the connection, which makes the
 * server abort the generation in the engine. */
export async function* streamChat(key, body, signal) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(key),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const data = eventData(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (data === null) continue; // a comment (": keepalive")
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new APIError(chunk.error.message, { code: chunk.error.code, inStream: true });
        yield chunk;
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // a no-op once the stream has ended; else it closes the connection
  }
}

function eventData(event) {
  const lines = event.split("\n").filter((line) => line.startsWith("data:"));
  return lines.length ? lines.map((line) => line.slice(5).trimStart()).join("\n") : null;
}

/** An error as a person should read it. */
export function describe(error) {
  if (!(error instanceof APIError)) return `Could not reach the server: ${error.message}`;
  if (error.status === 401) {
    return `The server refused the API key (401): ${error.message} Enter the right key under Settings.`;
  }
  if (error.inStream) return `The generation failed part way: ${error.message}`;
  return `The server answered ${error.status}: ${error.message}`;
}
