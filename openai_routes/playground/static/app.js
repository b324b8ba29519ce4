// The playground's page: the key (session storage only), the settings, the conversation, the streamed answer
// with its figures, Stop, Clear, images attached (picked or pasted) for models that take them, and the Code tab.
// Everything goes through api.js to this server's /v1 API.

import { APIError, chatBody, describe, fetchConfig, listModels, streamChat, userContent } from "./api.js";
import { Attachments, thumbnail } from "./images.js";
import { render } from "./markdown.js";
import { curlSnippet, pythonSnippet } from "./snippets.js";

const KEY_ITEM = "bento-oai.api-key";
const $ = (id) => document.getElementById(id);

const state = {
  keyRequired: true,
  key: null,
  history: [], // {role, content}: what the next request sends after the system prompt
  readsImages: new Set(), // the models that take image parts
  attached: null, // Attachments: the images the next user message carries
  controller: null, // the running generation's AbortController
};

function notify(message) {
  $("notice").textContent = message;
  $("notice").hidden = !message;
}

function settings() {
  const number = (id, parse) => ($(id).value.trim() === "" ? null : parse($(id).value));
  return {
    model: $("model").value,
    system: $("system").value.trim(),
    temperature: number("temperature", Number.parseFloat),
    maxTokens: number("max-tokens", (value) => Number.parseInt(value, 10)),
  };
}

// --- the key and the models --------------------------------------------------------------------------------

function setReady(ready) {
  for (const id of ["model", "prompt", "send"]) $(id).disabled = !ready;
}

async function loadModels() {
  setReady(false);
  $("key-status").textContent = "";
  try {
    const models = await listModels(state.key);
    const previous = $("model").value;
    state.readsImages = new Set(models.filter((model) => model.images).map((model) => model.id));
    $("model").replaceChildren(...models.map(({ id }) => new Option(id, id)));
    if (models.some(({ id }) => id === previous)) $("model").value = previous;
    offerImages();
    setReady(models.length > 0);
    notify(models.length ? "" : "This server serves no model.");
    if (state.keyRequired) $("key-status").textContent = `Key accepted: ${models.length} models.`;
    $("prompt").focus();
  } catch (error) {
    notify(describe(error));
    if (error instanceof APIError && error.status === 401) {
      $("settings").open = true;
      $("api-key").focus();
    }
  }
}

function useKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  state.key = key;
  sessionStorage.setItem(KEY_ITEM, key);
  $("api-key").value = "";
  $("api-key").placeholder = "saved for this tab";
  loadModels();
}

function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
  state.key = null;
  $("api-key").placeholder = "sk-...";
  $("model").replaceChildren();
  offerImages();
  setReady(false);
  $("key-status").textContent = "Key forgotten.";
  $("api-key").focus();
}

// --- attached images ------------------------------------------------------------------------------------------

/** The attach control only for a model that takes images; another model drops what was attached. */
function offerImages() {
  const offered = state.readsImages.has($("model").value);
  $("attach").hidden = !offered;
  if (!offered) state.attached.set([]);
}

function onPick() {
  state.attached.add([...$("attach-file").files]).catch((error) => notify(error.message));
  $("attach-file").value = ""; // the same file may be picked again
}

function onPaste(event) {
  const files = [...(event.clipboardData?.files ?? [])].filter((file) => file.type.startsWith("image/"));
  if (!files.length || $("attach").hidden) return; // text, or a model without images: the usual paste
  event.preventDefault();
  state.attached.add(files).catch((error) => notify(error.message));
}

// --- the conversation ---------------------------------------------------------------------------------------

function addMessage(role, text, thumbs = []) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role === "user" ? "You" : $("model").value;
  const content = document.createElement("div");
  content.className = "content";
  item.append(who, content);
  if (role === "user") content.textContent = text;
  if (thumbs.length) {
    const row = document.createElement("div");
    row.className = "thumbs";
    row.append(...thumbs.map(thumbnail));
    content.append(row);
  }
  $("log").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("log").setAttribute("aria-busy", String(busy));
}

/** The answer's figures under it, also as data attributes (the e2e test reads those). */
function showFigures(item, { started, first, finished, usage, pieces, stopped }) {
  const meta = document.createElement("div");
  meta.className = "meta";
  const parts = [];
  if (usage) {
    parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
    Object.assign(meta.dataset, { promptTokens: usage.prompt_tokens, completionTokens: usage.completion_tokens });
  } else if (pieces) {
    parts.push(`${pieces} chunks received`);
  }
  if (first !== null) {
    meta.dataset.ttftMs = Math.round(first - started);
    parts.push(`time to first token ${(meta.dataset.ttftMs / 1000).toFixed(2)} s`);
    const tokens = usage ? usage.completion_tokens : pieces;
    if (tokens > 1 && finished > first) {
      const perSecond = ((tokens - 1) * 1000) / (finished - first);
      parts.push(`${perSecond.toFixed(1)} tokens/s`);
      meta.dataset.tokensPerSecond = perSecond.toFixed(2);
    }
  }
  if (stopped) parts.push("stopped");
  meta.textContent = parts.join(" · ");
  item.append(meta);
}

async function send() {
  const text = $("prompt").value.trim();
  const attached = state.attached.images;
  if ((!text && !attached.length) || state.controller || $("send").disabled) return;
  notify("");
  const history = state.history; // Clear starts a new one: what this answer adds goes to the old one, unseen
  history.push({ role: "user", content: userContent(text, attached.map((image) => image.url)) });
  const turn = addMessage("user", text, attached.map((image) => image.thumb));
  $("prompt").value = "";
  state.attached.set([]);
  const answer = addMessage("assistant");
  const content = answer.querySelector(".content");
  const body = chatBody(settings(), history);
  const figures = { started: performance.now(), first: null, finished: 0, usage: null, pieces: 0, stopped: false };
  let reply = "";
  state.controller = new AbortController();
  setBusy(true);
  try {
    for await (const chunk of streamChat(state.key, body, state.controller.signal)) {
      if (chunk.usage) figures.usage = chunk.usage;
      const delta = chunk.choices?.[0]?.delta?.content;
      if (!delta) continue;
      figures.first ??= performance.now();
      figures.pieces += 1;
      reply += delta;
      content.replaceChildren(render(reply));
      answer.scrollIntoView({ block: "end" });
    }
  } catch (error) {
    if (error.name === "AbortError") figures.stopped = true;
    else notify(describe(error));
  } finally {
    figures.finished = performance.now();
    state.controller = null;
    setBusy(false);
  }
  if (history !== state.history) return;
  if (reply) {
    history.push({ role: "assistant", content: reply });
    showFigures(answer, figures);
  } else {
    // Nothing came back: take the turn out again and give the text back, to retry (after fixing the key, say).
    history.pop();
    turn.remove();
    answer.remove();
    $("prompt").value = text;
    if (!$("attach").hidden) state.attached.set(attached);
  }
  $("prompt").focus();
}

function stop() {
  state.controller?.abort();
}

function clear() {
  stop();
  state.history = [];
  $("log").replaceChildren();
  notify("");
  refreshCode();
  $("prompt").focus();
}

function onPromptKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  } else if (event.key === "Escape" && state.controller) {
    stop();
  }
}

// --- the Code tab ---------------------------------------------------------------------------------------------

function refreshCode() {
  if ($("panel-code").hidden) return;
  const draft = $("prompt").value.trim();
  const messages = [...state.history];
  const images = state.attached.images.map((image) => image.url);
  if (draft || images.length) messages.push({ role: "user", content: userContent(draft, images) });
  if (!messages.length) messages.push({ role: "user", content: "Hello!" });
  const body = chatBody(settings(), messages);
  const baseURL = `${location.origin}/v1`;
  $("code-python").textContent = pythonSnippet(baseURL, state.keyRequired, body);
  $("code-curl").textContent = curlSnippet(baseURL, state.keyRequired, body);
}

function selectTab(tab) {
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  tab.focus();
  refreshCode();
}

function onTabKey(event) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
  if (step) selectTab(tabs[(tabs.indexOf(event.target) + step + tabs.length) % tabs.length]);
}

async function copy(button) {
  const text = $(button.dataset.copy).textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // no clipboard API (a plain-http origin other than localhost): select the text for Ctrl+C instead
    getSelection().selectAllChildren($(button.dataset.copy));
    document.execCommand("copy");
  }
  button.textContent = "Copied";
  setTimeout(() => (button.textContent = "Copy"), 1500);
}

// --- start -------------------------------------------------------------------------------------------------

async function start() {
  state.attached = new Attachments($("attachments"), refreshCode);
  $("key-form").addEventListener("submit", useKey);
  $("forget-key").addEventListener("click", forgetKey);
  $("composer").addEventListener("submit", (event) => (event.preventDefault(), send()));
  $("prompt").addEventListener("keydown", onPromptKey);
  $("stop").addEventListener("click", stop);
  $("clear").addEventListener("click", clear);
  $("attach").addEventListener("click", () => $("attach-file").click());
  $("attach-file").addEventListener("change", onPick);
  $("prompt").addEventListener("paste", onPaste);
  $("model").addEventListener("change", offerImages);
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", onTabKey);
  }
  for (const button of document.querySelectorAll("[data-copy]")) button.addEventListener("click", () => copy(button));
  document.querySelector(".side").addEventListener("input", refreshCode);
  $("prompt").addEventListener("input", refreshCode);
  if (matchMedia("(max-width: 720px)").matches) $("settings").open = false;

  try {
    state.keyRequired = (await fetchConfig()).api_key_required;
  } catch (error) {
    notify(describe(error));
    return;
  }
  $("key-form").hidden = !state.keyRequired;
  state.key = state.keyRequired ? sessionStorage.getItem(KEY_ITEM) : null;
  if (state.keyRequired && !state.key) {
    $("settings").open = true;
    notify("Enter this server's API key under Settings to start.");
    $("api-key").focus();
    return;
  }
  if (state.key) $("api-key").placeholder = "saved for this tab";
  await loadModels();
}

start();
