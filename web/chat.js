// The chat page (GET /chat): the API's first client in a browser. Bundled
// with markdown-it by scripts/page.sh into docs/chat.html, which the
// api-docs function serves under a Content-Security-Policy that allows
// this one script by its hash and connections to the page's own origin.
import MarkdownIt from "markdown-it";

// Markdown without raw HTML (`html: false` escapes it), links checked by
// markdown-it's validateLink (no javascript:, vbscript:, file:, data:).
const md = new MarkdownIt({ html: false, linkify: true });
const renderLink = md.renderer.rules.link_open ||
  ((tokens, i, options, env, self) => self.renderToken(tokens, i, options));
md.renderer.rules.link_open = (tokens, i, options, env, self) => {
  tokens[i].attrSet("target", "_blank");
  tokens[i].attrSet("rel", "noopener noreferrer nofollow");
  return renderLink(tokens, i, options, env, self);
};

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
};

const state = {
  token: sessionStorage.getItem("chat-token") || "",
  listCursor: undefined, // undefined: not loaded; null: no more pages
  listLoading: false,
  conversation: null, // {id, title, settings, messages, olderCursor}
  models: [],
  draftSettings: {}, // settings for a new conversation's first send
  live: null, // {controller, conversationId, messageId, lastId, text}
};

// ---- the API ------------------------------------------------------------

/** The caller's token as a header, beside `extra`. */
const bearer = (extra = {}) => ({ ...extra, authorization: `Bearer ${state.token}` });

async function api(method, path, body, headers = {}) {
  const init = { method, headers: state.token ? bearer(headers) : { ...headers } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    return { status: 0, data: null, headers: new Headers() };
  }
  const type = resp.headers.get("content-type") || "";
  const data = type.includes("json") ? await resp.json().catch(() => null) : null;
  return { status: resp.status, data, headers: resp.headers, resp };
}

/** A refusal as a sentence for the person typing. */
function explain(status, data, headers) {
  const code = data?.error?.code;
  const message = data?.error?.message || "";
  if (status === 0) return "The service cannot be reached. Check the connection and try again.";
  if (status === 401) return "Your token is missing, invalid or expired: paste a new one.";
  if (status === 409 && code === "reply_pending") return "A reply is still being written in this conversation: wait for it or press Stop.";
  if (status === 409) return message || "That conflicts with what is happening in this conversation.";
  if (status === 413) return "That message is too long to send (bodies are limited to 64 KiB).";
  if (status === 422) return message || "The request was refused.";
  if (status === 429) {
    const secs = Number(headers?.get("retry-after") || 0);
    if (code === "quota_exceeded") return `You have reached today's limit. It resets in ${duration(secs)}.`;
    return `Too many replies at once: try again in ${duration(secs || 1)}.`;
  }
  if (status === 503) return "The service is busy: try again in a moment.";
  if (status === 404) return "That conversation or message no longer exists.";
  return message || `The request failed (${status}).`;
}

function duration(secs) {
  const h = Math.floor(secs / 3600), m = Math.ceil((secs % 3600) / 60);
  if (h > 0) return `${h} h ${m} min`;
  if (secs >= 60) return `${m} min`;
  return `${secs} s`;
}

function showError(text) {
  const box = $("error");
  box.textContent = text || "";
  box.hidden = !text;
}

// ---- Server-Sent Events over fetch (EventSource cannot send a token) -----

/** Reads `resp`'s events into `on(name, data, id)`; resolves with the
 * last `retry:` (ms) when the stream ends. */
async function readEvents(resp, on) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", retry = 1000;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let id = null, name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const at = line.indexOf(":");
        const field = at < 0 ? line : line.slice(0, at);
        const text = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
        if (field === "id") id = Number(text);
        else if (field === "event") name = text;
        else if (field === "data") data += text;
        else if (field === "retry") retry = Number(text) || retry;
      }
      if (data) on(name, JSON.parse(data), id);
    }
  }
  return retry;
}

// ---- the conversation list ----------------------------------------------

async function loadMoreConversations() {
  if (state.listLoading || state.listCursor === null || !state.token) return;
  state.listLoading = true;
  const cursor = state.listCursor ? `&cursor=${encodeURIComponent(state.listCursor)}` : "";
  const { status, data, headers } = await api("GET", `/api/chat/conversations?limit=20${cursor}`);
  state.listLoading = false;
  if (status !== 200) return showError(explain(status, data, headers));
  for (const c of data.conversations) $("conversations").append(conversationItem(c));
  state.listCursor = data.next_cursor || null;
  // The sentinel may still be in view: keep filling the list.
  if (state.listCursor && isVisible($("list-end"))) loadMoreConversations();
}

function isVisible(node) {
  const r = node.getBoundingClientRect();
  return r.top < window.innerHeight && r.bottom >= 0 && node.offsetParent !== null;
}

function resetList() {
  $("conversations").replaceChildren();
  state.listCursor = undefined;
  loadMoreConversations();
}

function conversationItem(c) {
  const li = el("li", { className: state.conversation?.id === c.id ? "current" : "" });
  li.dataset.id = c.id;
  const open = el("button", { type: "button", className: "open", textContent: c.title, title: c.title });
  open.addEventListener("click", () => openConversation(c.id));
  const rename = el("button", { type: "button", className: "small", textContent: "Rename" });
  rename.setAttribute("aria-label", `Rename ${c.title}`);
  rename.addEventListener("click", () => {
    const input = el("input", { value: c.title });
    input.setAttribute("aria-label", "New title");
    const save = async () => {
      const title = input.value.trim();
      if (!title || title === c.title) return li.replaceWith(conversationItem(c));
      const { status, data, headers } = await api("PATCH", `/api/chat/conversations/${c.id}`, { title });
      if (status !== 200) return showError(explain(status, data, headers));
      c.title = data.title;
      li.replaceWith(conversationItem(c));
      if (state.conversation?.id === c.id) $("title").textContent = c.title;
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); save(); }
      if (e.key === "Escape") li.replaceWith(conversationItem(c));
    });
    li.replaceChildren(input);
    input.focus();
  });
  const del = el("button", { type: "button", className: "small", textContent: "Delete" });
  del.setAttribute("aria-label", `Delete ${c.title}`);
  del.addEventListener("click", () => {
    // Asked inline: no dialog.
    const yes = el("button", { type: "button", className: "small", textContent: "Delete it" });
    const no = el("button", { type: "button", className: "small", textContent: "Keep" });
    yes.addEventListener("click", async () => {
      const { status, data, headers } = await api("DELETE", `/api/chat/conversations/${c.id}`);
      if (status !== 204) return showError(explain(status, data, headers));
      li.remove();
      if (state.conversation?.id === c.id) newChat();
    });
    no.addEventListener("click", () => li.replaceWith(conversationItem(c)));
    li.replaceChildren(el("span", { className: "open", textContent: `Delete “${c.title}”?` }), yes, no);
    yes.focus();
  });
  li.append(open, rename, del);
  return li;
}

function markCurrent() {
  for (const li of $("conversations").children) {
    li.classList.toggle("current", li.dataset.id === state.conversation?.id);
  }
}

// ---- one conversation ---------------------------------------------------

function newChat() {
  stopFollowing();
  state.conversation = null;
  $("messages").replaceChildren();
  $("title").textContent = "New chat";
  $("older").hidden = true;
  $("tools").hidden = true;
  $("share-url").hidden = true;
  showSettings(state.draftSettings);
  markCurrent();
  closeListOnNarrow();
  $("input").focus();
}

async function openConversation(id) {
  stopFollowing();
  const { status, data, headers } = await api("GET", `/api/chat/conversations/${id}?limit=50`);
  if (status !== 200) return showError(explain(status, data, headers));
  state.conversation = {
    id: data.id, title: data.title, settings: data.settings,
    messages: data.messages, olderCursor: data.next_cursor || null,
  };
  $("title").textContent = data.title;
  $("tools").hidden = false;
  $("share-url").hidden = true;
  showSettings(data.settings);
  renderMessages();
  markCurrent();
  closeListOnNarrow();
  // A reply still being written (a reload mid-reply, another tab): follow it.
  const last = data.messages[data.messages.length - 1];
  if (last && last.role === "assistant" && last.status === "pending") {
    follow(id, last.id);
  }
}

async function loadOlder() {
  const c = state.conversation;
  if (!c?.olderCursor) return;
  const { status, data, headers } = await api(
    "GET", `/api/chat/conversations/${c.id}?limit=50&cursor=${encodeURIComponent(c.olderCursor)}`);
  if (status !== 200) return showError(explain(status, data, headers));
  c.messages = data.messages.concat(c.messages);
  c.olderCursor = data.next_cursor || null;
  renderMessages();
}

function renderMessages() {
  const c = state.conversation;
  $("older").hidden = !c?.olderCursor;
  $("messages").replaceChildren(...(c ? c.messages.map(messageItem) : []));
  scrollToEnd();
}

function scrollToEnd() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function setText(node, m) {
  if (m.role === "assistant") {
    node.innerHTML = md.render(m.content || ""); // markdown-it with html: false
  } else {
    node.textContent = m.content;
  }
}

function messageItem(m) {
  const li = el("li", { className: `message ${m.role}` });
  li.dataset.id = m.id;
  const who = el("div", { className: "who" },
    el("span", { textContent: m.role === "user" ? "You" : "Assistant" }));
  if (m.model && m.role === "assistant") who.append(el("span", { textContent: m.model }));
  const versions = m.sibling_ids || [m.id];
  if (versions.length > 1) who.append(switcher(m, versions));
  const text = el("div", { className: "text" });
  setText(text, m);
  li.append(who, text);
  const status = statusText(m);
  if (status) li.append(el("div", { className: "status", textContent: status }));
  if (!state.live || state.live.messageId !== m.id) li.append(actions(m, li));
  return li;
}

function statusText(m) {
  if (m.status === "pending") return "Writing…";
  if (m.status === "cancelled") return "Stopped.";
  if (m.status === "failed") return `Failed${m.error ? `: ${m.error}` : "."}`;
  if (m.truncated) return "Cut at the longest reply kept.";
  return "";
}

function switcher(m, versions) {
  const at = versions.indexOf(m.id);
  const box = el("span", { className: "switch" });
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", "Versions");
  const prev = el("button", { type: "button", textContent: "<", disabled: at <= 0 });
  prev.setAttribute("aria-label", "Previous version");
  const next = el("button", { type: "button", textContent: ">", disabled: at >= versions.length - 1 });
  next.setAttribute("aria-label", "Next version");
  const where = el("span", { className: "where", textContent: `${at + 1} / ${versions.length}` });
  prev.addEventListener("click", () => switchTo(versions[at - 1]));
  next.addEventListener("click", () => switchTo(versions[at + 1]));
  box.append(prev, where, next);
  return box;
}

async function switchTo(id) {
  const c = state.conversation;
  const { status, data, headers } = await api("PATCH", `/api/chat/conversations/${c.id}`, { active_message_id: id });
  if (status !== 200) return showError(explain(status, data, headers));
  await openConversation(c.id);
}

function actions(m, li) {
  const row = el("div", { className: "row" });
  if (m.status === "pending") return row;
  if (m.role === "user") {
    const edit = el("button", { type: "button", textContent: "Edit" });
    edit.addEventListener("click", () => editMessage(m, li));
    row.append(edit);
    return row;
  }
  const again = el("button", { type: "button", textContent: "Regenerate" });
  again.addEventListener("click", () => send({ conversation_id: state.conversation.id, regenerate: m.id }));
  row.append(again);
  for (const rating of ["up", "down"]) {
    // Words, not emoji: a system without an emoji font shows those as boxes.
    const b = el("button", { type: "button", textContent: rating === "up" ? "Good" : "Bad" });
    b.setAttribute("aria-label", rating === "up" ? "Good reply" : "Bad reply");
    b.setAttribute("aria-pressed", String(m.feedback?.rating === rating));
    b.addEventListener("click", () => rate(m, rating, row));
    row.append(b);
  }
  if (m.feedback?.comment) row.append(el("span", { className: "note", textContent: `“${m.feedback.comment}”` }));
  return row;
}

async function rate(m, rating, row) {
  const c = state.conversation;
  const path = `/api/chat/conversations/${c.id}/messages/${m.id}/feedback`;
  if (m.feedback?.rating === rating) {
    const { status, data, headers } = await api("DELETE", path);
    if (status !== 204) return showError(explain(status, data, headers));
    delete m.feedback;
    return row.replaceWith(actions(m, row.parentElement));
  }
  const comment = el("input", { placeholder: "Add a comment (optional), Enter to save", maxLength: 2000 });
  comment.setAttribute("aria-label", "Comment on this reply");
  const save = async () => {
    const body = { rating };
    if (comment.value.trim()) body.comment = comment.value.trim();
    const { status, data, headers } = await api("PUT", path, body);
    if (status !== 200) return showError(explain(status, data, headers));
    m.feedback = data.feedback;
    row.replaceWith(actions(m, row.parentElement));
  };
  comment.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); save(); }
    if (e.key === "Escape") row.replaceWith(actions(m, row.parentElement));
  });
  row.replaceChildren(comment);
  comment.focus();
}

function editMessage(m, li) {
  const area = el("textarea", { value: m.content, rows: 3 });
  area.setAttribute("aria-label", "Edited message");
  const save = el("button", { type: "button", className: "primary", textContent: "Send edit" });
  const cancel = el("button", { type: "button", textContent: "Cancel" });
  save.addEventListener("click", () =>
    send({ conversation_id: state.conversation.id, edit_of: m.id, message: area.value }));
  cancel.addEventListener("click", () => li.replaceWith(messageItem(m)));
  li.replaceChildren(area, el("div", { className: "row" }, save, cancel));
  area.focus();
}

// ---- sending and following a reply --------------------------------------

/** Sends `body` as a streamed send; `false` when it was refused (the
 * caller's text stays where it was). */
async function send(body) {
  showError("");
  if (!state.token) { showError(explain(401)); return false; }
  if (state.live) { showError(explain(409, { error: { code: "reply_pending" } })); return false; }
  if (!state.conversation && Object.keys(state.draftSettings).length) body.settings = state.draftSettings;
  const controller = new AbortController();
  const live = { controller, conversationId: body.conversation_id || null, messageId: null, lastId: 0, text: "", ended: false };
  state.live = live;
  setSending(true);
  let resp;
  try {
    resp = await fetch("/api/chat/send/stream", {
      method: "POST",
      headers: bearer({ "content-type": "application/json" }),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
  } catch (e) {
    state.live = null; setSending(false);
    showError(explain(0)); return false;
  }
  if (resp.status !== 200) {
    const data = await resp.json().catch(() => null);
    state.live = null; setSending(false);
    showError(explain(resp.status, data, resp.headers));
    return false;
  }
  await relay(resp, live, body);
  return true;
}

/** Applies one stream's events; on a stream that ends without its last
 * event, attaches again after its last id. */
async function relay(resp, live, sent) {
  let retry = 1000;
  try {
    retry = await readEvents(resp, (name, data, id) => onEvent(live, name, data, id, sent));
  } catch (e) {
    // Dropped: attach below (not when the page stopped following it on purpose).
  }
  if (!live.ended && state.live === live && live.conversationId) {
    await reattach(live, retry);
  }
}

async function reattach(live, retry) {
  for (let attempt = 0; attempt < 20 && !live.ended && state.live === live; attempt++) {
    await new Promise((r) => setTimeout(r, Math.min(retry * (attempt + 1), 5000)));
    if (state.live !== live) return;
    live.controller = new AbortController();
    let resp;
    try {
      resp = await fetch(`/api/chat/conversations/${live.conversationId}/stream`, {
        headers: bearer({ "last-event-id": String(live.lastId) }),
        signal: live.controller.signal,
      });
    } catch (e) { continue; }
    if (resp.status === 409) break; // nothing being written: read it back below
    if (resp.status !== 200) continue;
    try {
      retry = await readEvents(resp, (name, data, id) => onEvent(live, name, data, id, null));
    } catch (e) { /* dropped again */ }
  }
  if (!live.ended && state.live === live) finish(live);
}

/** Follows a reply already being written (after a reload): attached after
 * id 0 (`message.created`), its deltas bring the whole text so far. */
function follow(conversationId, messageId) {
  const live = { controller: new AbortController(), conversationId, messageId, lastId: 0, text: "", ended: false };
  state.live = live;
  setSending(true);
  reattach(live, 0);
}

function onEvent(live, name, data, id, sent) {
  if (state.live !== live) return;
  if (id !== null && id !== undefined) live.lastId = id;
  if (name === "message.created") {
    live.conversationId = data.conversation_id;
    live.messageId = data.message_id;
    if (sent) startReply(live, data, sent);
    // Stored: the composer's text is sent (an edit's is in its own box).
    if (sent?.message !== undefined && !sent.edit_of) $("input").value = "";
    return;
  }
  if (name === "message.delta") {
    live.text += data.text;
    paintLive(live);
    return;
  }
  if (name === "message.completed" || name === "message.cancelled" || name === "error") {
    live.ended = true;
    if (name === "error") showError(data?.error?.message || "The reply failed.");
    finish(live);
  }
}

/** Shows the question and an empty reply as soon as the send is stored. */
function startReply(live, created, sent) {
  const isNew = !state.conversation;
  if (isNew) {
    state.conversation = {
      id: created.conversation_id, title: sent.message.slice(0, 60), settings: null,
      messages: [], olderCursor: null,
    };
    $("title").textContent = state.conversation.title;
    $("tools").hidden = false;
  }
  const c = state.conversation;
  if (sent.regenerate) {
    const at = c.messages.findIndex((m) => m.id === sent.regenerate);
    if (at >= 0) c.messages = c.messages.slice(0, at);
  } else if (sent.edit_of) {
    const at = c.messages.findIndex((m) => m.id === sent.edit_of);
    if (at >= 0) c.messages = c.messages.slice(0, at);
    c.messages.push({ id: created.user_message_id, role: "user", content: sent.message, status: "complete" });
  } else {
    c.messages.push({ id: created.user_message_id, role: "user", content: sent.message, status: "complete" });
  }
  c.messages.push({ id: created.message_id, role: "assistant", content: "", status: "pending" });
  renderMessages();
  if (isNew) resetList();
}

let painting = false;
function paintLive(live) {
  if (painting) return;
  painting = true;
  requestAnimationFrame(() => {
    painting = false;
    const node = document.querySelector(`.message[data-id="${CSS.escape(live.messageId || "")}"] .text`);
    if (node) {
      node.innerHTML = md.render(live.text);
      scrollToEnd();
    }
  });
}

/** The reply ended (or cannot be followed): read the conversation back,
 * the stored reply being the truth. */
async function finish(live) {
  live.ended = true;
  if (state.live === live) state.live = null;
  setSending(false);
  if (state.conversation && state.conversation.id === live.conversationId) {
    await openConversation(live.conversationId);
  }
  refreshUsage();
}

function stopFollowing() {
  if (state.live) {
    const live = state.live;
    state.live = null;
    live.controller.abort();
    setSending(false);
  }
}

async function stop() {
  const live = state.live;
  if (!live?.conversationId) return;
  const { status, data, headers } = await api("POST", `/api/chat/conversations/${live.conversationId}/stop`);
  // 409: it ended meanwhile; the stream says how.
  if (status !== 200 && status !== 409) showError(explain(status, data, headers));
}

function setSending(on) {
  $("send").disabled = on;
  $("stop").hidden = !on;
}

// ---- settings, usage, export, share -------------------------------------

async function loadModels() {
  const { status, data } = await api("GET", "/api/chat/models");
  if (status !== 200) return;
  state.models = data.models;
  $("model").replaceChildren(...data.models.map((m) =>
    el("option", { value: m.id, textContent: m.name || m.id, selected: m.default })));
}

function showSettings(s) {
  s = s || {};
  const fallback = state.models.find((m) => m.default)?.id || "";
  $("model").value = s.model || fallback;
  $("instructions").value = s.instructions ?? "";
  $("temperature").value = s.temperature ?? "";
  $("max-tokens").value = s.max_tokens ?? "";
  $("settings-note").textContent = "";
}

function readSettings() {
  const number = (v) => (v === "" ? null : Number(v));
  return {
    model: $("model").value || null,
    instructions: $("instructions").value === "" ? null : $("instructions").value,
    temperature: number($("temperature").value),
    max_tokens: number($("max-tokens").value),
  };
}

async function saveSettings(e) {
  e.preventDefault();
  const settings = readSettings();
  if (!state.conversation) {
    // Sent with the first message of the new conversation.
    state.draftSettings = Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== null));
    $("settings-note").textContent = "Used for this new chat's first message.";
    return;
  }
  const { status, data, headers } = await api("PATCH", `/api/chat/conversations/${state.conversation.id}`, { settings });
  if (status !== 200) return showError(explain(status, data, headers));
  state.conversation.settings = data.settings;
  showSettings(data.settings);
  $("settings-note").textContent = "Saved.";
}

async function refreshUsage() {
  if (!state.token) return;
  const { status, data } = await api("GET", "/api/chat/usage");
  if (status !== 200) return;
  const of = (n, limit) => (limit === null ? `${n}` : `${n} / ${limit}`);
  $("usage").textContent = `Today: ${of(data.messages, data.message_limit)} messages · ${of(data.tokens, data.token_limit)} tokens`;
}

/** Saves what `path` answers as a file (a link cannot carry the token). */
async function download(path, fallback) {
  const resp = await fetch(path, { headers: bearer() });
  if (resp.status !== 200) {
    const data = await resp.json().catch(() => null);
    return showError(explain(resp.status, data, resp.headers));
  }
  const name = /filename="([^"]+)"/.exec(resp.headers.get("content-disposition") || "")?.[1] || fallback;
  const url = URL.createObjectURL(await resp.blob());
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function share() {
  const c = state.conversation;
  const { status, data, headers } = await api("POST", `/api/chat/conversations/${c.id}/shares`);
  if (status !== 201) return showError(explain(status, data, headers));
  const box = $("share-url");
  box.value = new URL(data.url, location.origin).href;
  box.hidden = false;
  box.select();
}

// ---- the page -----------------------------------------------------------

function closeListOnNarrow() {
  $("side").classList.remove("open");
  $("toggle-list").setAttribute("aria-expanded", "false");
}

function signIn(token) {
  state.token = token.trim();
  if (state.token) sessionStorage.setItem("chat-token", state.token);
  else sessionStorage.removeItem("chat-token");
  $("token").value = "";
  $("token").placeholder = state.token ? "signed in: paste another token to switch" : "paste a token";
  resetList();
  refreshUsage();
  loadModels().then(() => showSettings(state.conversation?.settings || state.draftSettings));
}

function start() {
  // A link from scripts/dev.sh carries the token in the fragment, which
  // never reaches a server; keep it for this tab and drop it from the URL.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem("chat-token", fragment.get("token"));
    state.token = fragment.get("token");
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("signin").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value); });
  $("new-chat").addEventListener("click", newChat);
  $("older").addEventListener("click", loadOlder);
  $("settings-form").addEventListener("submit", saveSettings);
  const exportOne = (format, extension) => {
    if (state.conversation) {
      download(`/api/chat/conversations/${state.conversation.id}/export?format=${format}`, `conversation.${extension}`);
    }
  };
  $("export-json").addEventListener("click", () => exportOne("json", "json"));
  $("export-md").addEventListener("click", () => exportOne("markdown", "md"));
  // Every conversation, one per line, then a line saying whether the file is whole.
  $("export-all").addEventListener("click", () => download("/api/chat/export", "conversations.ndjson"));
  $("share").addEventListener("click", share);
  $("stop").addEventListener("click", stop);
  $("toggle-list").addEventListener("click", () => {
    const open = $("side").classList.toggle("open");
    $("toggle-list").setAttribute("aria-expanded", String(open));
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value;
    if (!text.trim()) return;
    const body = { message: text };
    if (state.conversation) body.conversation_id = state.conversation.id;
    send(body);
  });
  $("input").addEventListener("input", () => showError(""));
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMoreConversations();
  }, { root: $("side") }).observe($("list-end"));
  newChat();
  if (state.token) signIn(state.token);
  else showError("Paste a token to start (scripts/dev.sh prints a link that signs you in).");
  // Reopen the conversation this tab had open (a reload mid-reply continues it).
  const open = sessionStorage.getItem("chat-open");
  if (open && state.token) openConversation(open);
  window.addEventListener("beforeunload", () => {
    if (state.conversation) sessionStorage.setItem("chat-open", state.conversation.id);
    else sessionStorage.removeItem("chat-open");
  });
}

start();
