// The Code tab: the request the next Send would make (api.chatBody), written as an OpenAI SDK call in Python and
// as curl, ready to paste. The key is never written out: both read OPENAI_API_KEY from the environment.

const INDENT = "    ";

/** A JSON value as a Python literal (JSON strings are valid Python strings). */
export function python(value, depth = 0) {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value !== "object") return JSON.stringify(value);
  const inner = INDENT.repeat(depth + 1);
  const outer = INDENT.repeat(depth);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((item) => inner + python(item, depth + 1)).join(",\n")},\n${outer}]`;
  }
  const entries = Object.entries(value);
  if (entries.length <= 2 && entries.every(([, item]) => typeof item !== "object" || item === null)) {
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}: ${python(item)}`).join(", ")}}`;
  }
  const lines = entries.map(([key, item]) => `${inner}${JSON.stringify(key)}: ${python(item, depth + 1)}`);
  return `{\n${lines.join(",\n")},\n${outer}}`;
}

export function pythonSnippet(baseURL, keyRequired, body) {
  const client = keyRequired
    ? `client = OpenAI(base_url=${python(baseURL)})  # the API key comes from OPENAI_API_KEY`
    : `client = OpenAI(base_url=${python(baseURL)}, api_key="unused")  # this server asks for no key`;
  const args = Object.entries(body).map(([key, value]) => `${INDENT}${key}=${python(value, 1)},`);
  return [
    "from openai import OpenAI",
    "",
    client,
    "stream = client.chat.completions.create(",
    ...args,
    ")",
    "for chunk in stream:",
    "    if chunk.choices:",
    '        print(chunk.choices[0].delta.content or "", end="", flush=True)',
    "    if chunk.usage:",
    '        print(f"\\n[{chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} completion tokens]")',
    "",
  ].join("\n");
}

/** ``text`` in single quotes for a POSIX shell. */
function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

export function curlSnippet(baseURL, keyRequired, body) {
  const lines = [`curl -N ${baseURL}/chat/completions \\`];
  if (keyRequired) lines.push('  -H "Authorization: Bearer $OPENAI_API_KEY" \\');
  lines.push('  -H "Content-Type: application/json" \\', `  -d ${shellQuote(JSON.stringify(body, null, 2))}`, "");
  return lines.join("\n");
}
