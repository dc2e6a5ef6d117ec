// Sarvam's chat page: conversations through /api, replies streamed as server-sent events.
// Model and user text only ever reaches the page through textContent and text nodes: the markdown
// renderer builds DOM nodes itself and never parses text as HTML. Nothing is loaded from elsewhere.
"use strict";
const $ = (id) => document.getElementById(id);
// Signed in by the session cookie (HttpOnly: this script never sees it). An API key typed instead is
// kept in memory only: nothing secret is written to the browser's storage.
const state = { key: "", conv: null, convs: [], offset: 0, total: 0, models: [], running: false };

// ---- DOM helpers: text only ever goes in through text nodes ----
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  if (attrs) for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(typeof c === "string" ? document.createTextNode(c) : c);
  return e;
}
function showError(message) { const e = $("error"); e.textContent = message || ""; e.style.display = message ? "block" : "none"; }

// ---- Markdown: a small, safe subset (fenced code, headings, lists, quotes, paragraphs, inline code/bold/italic/links) ----
function inline(text, parent) {
  const re = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|_([^_\s][^_]*)_|\[([^\]]+)\]\(([^)\s]+)\)/g;
  let last = 0, m;
  while ((m = re.exec(text)) !== null) {
    if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
    if (m[1]) parent.append(el("code", { text: m[2] }));
    else if (m[3] || m[4]) { const b = el("strong"); inline(m[3] || m[4], b); parent.append(b); }
    else if (m[5] || m[6]) { const i = el("em"); inline(m[5] || m[6], i); parent.append(i); }
    else if (m[7]) {
      let url = null;
      try { const u = new URL(m[8], location.href); if (u.protocol === "http:" || u.protocol === "https:") url = u.href; } catch (_) {}
      if (url) parent.append(el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: m[7] }));
      else parent.append(document.createTextNode(m[0]));
    }
    last = re.lastIndex;
  }
  if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
}
function copyText(text, button) {
  const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1200); };
  if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(text).then(done, () => {}); return; }
  const t = el("textarea"); t.value = text; document.body.append(t); t.select();
  try { document.execCommand("copy"); done(); } catch (_) {} t.remove();
}
function renderMarkdown(text) {
  const root = document.createDocumentFragment();
  const lines = text.split("\n");
  let i = 0, para = [];
  const flush = () => { if (para.length) { const p = el("p"); inline(para.join("\n"), p); root.append(p); para = []; } };
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```+|~~~+)\s*([\w+#.-]*)/);
    if (fence) {
      flush();
      const code = []; i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) { code.push(lines[i]); i++; }
      i++;
      const body = code.join("\n");
      const c = el("code", { text: body }); if (fence[2]) c.className = "language-" + fence[2];
      const button = el("button", { class: "copy", type: "button", text: "Copy" });
      button.addEventListener("click", () => copyText(body, button));
      root.append(el("pre", null, button, c));
      continue;
    }
    const h = line.match(/^(#{1,6})\s+(.*)$/);
    if (h) { flush(); const e = el("h" + Math.min(6, h[1].length + 2)); inline(h[2], e); root.append(e); i++; continue; }
    if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
      flush();
      const ordered = /^\s*\d/.test(line);
      const list = el(ordered ? "ol" : "ul");
      while (i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) {
        const li = el("li"); inline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ""), li); list.append(li); i++;
      }
      root.append(list); continue;
    }
    if (/^>\s?/.test(line)) {
      flush();
      const q = [];
      while (i < lines.length && /^>\s?/.test(lines[i])) { q.push(lines[i].replace(/^>\s?/, "")); i++; }
      const b = el("blockquote"); inline(q.join("\n"), b); root.append(b); continue;
    }
    if (line.trim() === "") { flush(); i++; continue; }
    para.push(line); i++;
  }
  flush();
  return root;
}

// ---- API ----
// Every request carries the CSRF header the server asks of cookie-signed requests that change something
// (another site's page cannot send it); the key, when one was typed instead of signing in, goes as a bearer token.
function apiHeaders() {
  const h = { "Content-Type": "application/json", "X-Sarvam-CSRF": "1" };
  if (state.key) h["Authorization"] = "Bearer " + state.key;
  return h;
}
async function api(method, path, body) {
  const r = await fetch(path, { method, headers: apiHeaders(), credentials: "same-origin",
                                body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) {
    // Not signed in yet: the form alone; a session that ended or a key refused: the reason.
    const message = await errorText(r);
    showSignIn(!state.key && message.startsWith("Missing") ? "" : message);
    throw new Error("unauthorized");
  }
  if (!r.ok) throw new Error(await errorText(r));
  return r;
}
async function errorText(r) {
  try { const j = await r.json(); if (j && j.error && j.error.message) return j.error.message; } catch (_) {}
  return "HTTP " + r.status;
}

// ---- Sign-in, sign-out, password ----
function showSignIn(message) {
  $("signinError").textContent = message || "";
  $("signinDialog").classList.add("open");
  $("signin-user").focus();
}
function hideSignIn() { $("signinDialog").classList.remove("open"); $("signin-password").value = ""; $("keyInput").value = ""; }
$("signinForm").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("signinError").textContent = "";
  $("signin-submit").disabled = true;
  try {
    const r = await fetch("/api/session", { method: "POST", headers: { "Content-Type": "application/json", "X-Sarvam-CSRF": "1" },
      credentials: "same-origin", body: JSON.stringify({ name: $("signin-user").value.trim(), password: $("signin-password").value }) })
      .catch(() => null);
    if (!r) { $("signinError").textContent = "The server cannot be reached."; return; }
    if (!r.ok) { $("signinError").textContent = await errorText(r); return; }
    state.key = "";
    hideSignIn();
    start();
  } finally { $("signin-submit").disabled = false; }
});
$("keySubmit").addEventListener("click", async () => {
  const key = $("keyInput").value.trim();
  if (!key) return;
  const r = await fetch("/api/me", { headers: { "Authorization": "Bearer " + key } }).catch(() => null);
  if (!r || !r.ok) { $("signinError").textContent = r ? await errorText(r) : "The server cannot be reached."; return; }
  state.key = key;
  hideSignIn();
  start();
});
$("signout").addEventListener("click", async () => {
  if (state.running) await stop();
  await fetch("/api/session", { method: "DELETE", headers: { "X-Sarvam-CSRF": "1" }, credentials: "same-origin" }).catch(() => null);
  state.key = ""; state.conv = null; state.convs = [];
  $("convs").replaceChildren(); $("whoami").textContent = "";
  $("messages").replaceChildren(el("p", { class: "empty", text: "Start a conversation." }));
  showSignIn("Signed out.");
});
$("changePassword").addEventListener("click", () => {
  $("passwordForm").reset(); $("passwordError").textContent = "";
  $("passwordDialog").classList.add("open"); $("password-current").focus();
});
$("password-cancel").addEventListener("click", () => $("passwordDialog").classList.remove("open"));
$("passwordForm").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if ($("password-new").value !== $("password-repeat").value) { $("passwordError").textContent = "The new passwords differ."; return; }
  try {
    await api("POST", "/api/me/password", { current_password: $("password-current").value, new_password: $("password-new").value });
    $("passwordDialog").classList.remove("open"); $("passwordForm").reset();
  } catch (e) { if (e.message !== "unauthorized") $("passwordError").textContent = e.message; else $("passwordDialog").classList.remove("open"); }
});

// ---- Conversations ----
async function loadConversations(append) {
  const offset = append ? state.convs.length : 0;
  const j = await (await api("GET", "/api/conversations?limit=30&offset=" + offset)).json();
  state.convs = append ? state.convs.concat(j.data) : j.data;
  state.total = j.total;
  renderConversations();
}
function renderConversations() {
  const ul = $("convs"); ul.replaceChildren();
  for (const c of state.convs) {
    const li = el("li", { class: state.conv && state.conv.id === c.id ? "active" : "" },
      el("span", { class: "t", text: c.title, title: c.title }),
      el("button", { title: "Rename", "aria-label": "Rename", text: "✎", onclick: (e) => { e.stopPropagation(); renameConversation(c); } }),
      el("button", { title: "Delete", "aria-label": "Delete", text: "✕", onclick: (e) => { e.stopPropagation(); deleteConversation(c); } }));
    li.addEventListener("click", () => { openConversation(c.id); document.body.classList.remove("nav"); });
    ul.append(li);
  }
  $("more").hidden = state.convs.length >= state.total;
}
async function renameConversation(c) {
  const title = prompt("New title", c.title);
  if (title === null || !title.trim()) return;
  try { await api("PATCH", "/api/conversations/" + encodeURIComponent(c.id), { title: title.trim() }); await loadConversations(); if (state.conv && state.conv.id === c.id) { state.conv.title = title.trim(); $("convTitle").textContent = state.conv.title; } }
  catch (e) { showError(e.message); }
}
async function deleteConversation(c) {
  if (!confirm("Delete “" + c.title + "”?")) return;
  try { await api("DELETE", "/api/conversations/" + encodeURIComponent(c.id)); if (state.conv && state.conv.id === c.id) newChat(); await loadConversations(); }
  catch (e) { showError(e.message); }
}
async function openConversation(id) {
  showError("");
  try {
    const c = await (await api("GET", "/api/conversations/" + encodeURIComponent(id))).json();
    state.conv = c;
    $("convTitle").textContent = c.title;
    if (c.model && state.models.includes(c.model)) $("model").value = c.model;
    const box = $("messages"); box.replaceChildren();
    const shown = c.messages.filter((m) => m.role !== "system");
    shown.forEach((m, i) => box.append(messageView(m, c.running && i === shown.length - 1 && m.status === "interrupted")));
    markLastReply();
    renderConversations();
    box.scrollTop = box.scrollHeight;
  } catch (e) { showError(e.message); }
}
function newChat() {
  state.conv = null; $("convTitle").textContent = "New chat";
  $("messages").replaceChildren(el("p", { class: "empty", text: "Start a conversation." }));
  renderConversations(); $("input").focus();
}

// ---- Messages ----
function leftOutText(n) { return n + " old turn" + (n > 1 ? "s" : "") + " left out"; }
function statsText(m) {
  const parts = [];
  if (m.token_count != null) parts.push(m.token_count + " tokens");
  if (m.tokens_per_second != null) parts.push(m.tokens_per_second.toFixed(1) + " tok/s");
  if (m.prompt_tokens != null) parts.push("prompt " + m.prompt_tokens);
  if (m.dropped_turns) parts.push(leftOutText(m.dropped_turns));
  if (m.finish_reason === "length") parts.push("cut at the token limit");
  if (m.status === "error") parts.push("error: " + (m.error || "unknown"));
  return parts.join(" · ");
}
// A reply that did not end: "interrupted" (cut off: the connection or the server went away; the text
// is what was saved) or "stopped" (its user stopped it). A reply still being generated is stored as
// interrupted until it ends, so `writing` (the conversation is running) shows it as such instead.
function statusMarker(m, writing) {
  if (writing) return el("span", { class: "marker", text: "being written…" });
  if (m.status === "interrupted") return el("span", { class: "marker interrupted", text: "interrupted", title: "The reply was cut off before its end; this is the text saved." });
  if (m.status === "stopped") return el("span", { class: "marker", text: "stopped", title: "Stopped before its end." });
  return null;
}
function messageView(m, writing) {
  const body = el("div", { class: "body" });
  if (m.role === "assistant") body.append(renderMarkdown(m.content)); else body.textContent = m.content;
  const view = el("div", { class: "msg " + m.role }, el("div", { class: "who", text: m.role === "user" ? "You" : (m.model || "Assistant") }), body);
  if (m.role === "assistant") {
    view.append(el("div", { class: "stats" + (m.status === "error" ? " bad" : "") }, statusMarker(m, writing), statsText(m)));
  }
  return view;
}
function markLastReply() {
  document.querySelectorAll(".msg .actions").forEach((a) => a.remove());
  if (state.running) return;
  const views = document.querySelectorAll("#messages .msg");
  const last = views[views.length - 1];
  if (!last) return;
  const regen = el("button", { type: "button", text: last.classList.contains("user") ? "Reply" : "Regenerate", onclick: () => regenerate() });
  last.append(el("div", { class: "actions" }, regen));
}
function setRunning(running) {
  state.running = running;
  $("send").hidden = running; $("stop").hidden = !running;
  markLastReply();
}

async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith(":")) continue;
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

// Resolves to whether the server took the request (false: refused or unreachable, nothing was stored).
async function stream(path, body) {
  showError(""); setRunning(true);
  let taken = false;
  const box = $("messages");
  let reply = null, text = "", pending = false, started = 0;
  const ensureReply = () => {
    if (reply) return;
    reply = messageView({ role: "assistant", content: "", model: $("model").value });
    reply.querySelector(".stats").textContent = "thinking…";
    box.append(reply); box.scrollTop = box.scrollHeight;
  };
  const paint = () => {
    pending = false;
    const b = reply.querySelector(".body"); b.replaceChildren(renderMarkdown(text));
    const near = box.scrollHeight - box.scrollTop - box.clientHeight < 120; if (near) box.scrollTop = box.scrollHeight;
  };
  try {
    const r = await api("POST", path, body);
    taken = true;
    ensureReply();
    let count = 0;
    await readEvents(r, (name, data) => {
      if (name === "user_message") { box.insertBefore(messageView(data), reply); box.scrollTop = box.scrollHeight; }
      else if (name === "start") {
        started = performance.now();
        const left = data.dropped_turns ? " · " + leftOutText(data.dropped_turns) : "";
        reply.querySelector(".stats").textContent = "prompt " + data.prompt_tokens + left;
      }
      else if (name === "delta") {
        text += data.content; count++;
        if (!pending) { pending = true; requestAnimationFrame(paint); }
        const secs = (performance.now() - started) / 1000;
        if (secs > 0.2) reply.querySelector(".stats").textContent = count + " tokens · " + (count / secs).toFixed(1) + " tok/s";
      }
      else if (name === "done" || name === "error") {
        const m = data.message;
        if (m) { const v = messageView(m); reply.replaceWith(v); reply = v; }
        else if (!text) { reply.remove(); reply = null; }
        if (name === "error") showError(data.error.message);
      }
    });
  } catch (e) {
    if (e.message !== "unauthorized") showError(e.message);
    if (reply && !text) { reply.remove(); }
  } finally {
    setRunning(false);
    await loadConversations().catch(() => {});
  }
  return taken;
}

async function send() {
  const content = $("input").value;
  if (!content.trim() || state.running) return;
  try {
    if (!state.conv) {
      const c = await (await api("POST", "/api/conversations", { model: $("model").value || undefined })).json();
      state.conv = c; $("messages").replaceChildren(); $("convTitle").textContent = c.title;
    }
    $("input").value = ""; autosize();
    const path = "/api/conversations/" + encodeURIComponent(state.conv.id) + "/messages";
    const taken = await stream(path, { content, model: $("model").value || undefined, think_harder: thinkHarder() });
    // A refused message (too long, say) goes back into the empty box, to be shortened rather than typed again.
    if (!taken && !$("input").value) { $("input").value = content; autosize(); }
    const c = state.convs.find((x) => x.id === state.conv.id); if (c) $("convTitle").textContent = c.title;
  } catch (e) { showError(e.message); }
}
// "Think harder" asks model auto for the larger model; it means nothing for a named model.
function thinkHarder() { return $("model").value === "auto" && $("thinkHarder").checked ? true : undefined; }
async function regenerate() {
  if (!state.conv || state.running) return;
  const views = document.querySelectorAll("#messages .msg");
  const last = views[views.length - 1];
  if (last && last.classList.contains("assistant")) last.remove();
  await stream("/api/conversations/" + encodeURIComponent(state.conv.id) + "/regenerate", {
    model: $("model").value || undefined, think_harder: thinkHarder(),
  });
}
async function stop() {
  if (!state.conv) return;
  try { await api("POST", "/api/conversations/" + encodeURIComponent(state.conv.id) + "/stop"); } catch (e) { showError(e.message); }
}

function autosize() {
  const t = $("input"); t.style.height = "auto";
  const h = t.scrollHeight + 2;   // + the borders: the box is border-box
  t.style.height = Math.max(44, Math.min(200, h)) + "px"; t.style.overflowY = h > 200 ? "auto" : "hidden";
}
$("input").addEventListener("input", autosize);
$("input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); } });
$("send").addEventListener("click", send);
$("stop").addEventListener("click", stop);
$("newChat").addEventListener("click", () => { newChat(); document.body.classList.remove("nav"); });
$("more").addEventListener("click", () => loadConversations(true).catch((e) => showError(e.message)));
$("menu").addEventListener("click", (e) => { e.stopPropagation(); document.body.classList.toggle("nav"); });
$("main").addEventListener("click", () => document.body.classList.remove("nav"));

async function start() {
  try {
    const me = await (await api("GET", "/api/me")).json();
    state.models = me.models;
    $("whoami").textContent = me.name;
    $("changePassword").hidden = !!state.key;
    const select = $("model"); select.replaceChildren();
    for (const id of me.models) select.append(el("option", { value: id, text: id }));
    select.hidden = me.models.length < 2;
    $("thinkLabel").hidden = !me.models.includes("auto");
    select.addEventListener("change", () => { $("thinkLabel").hidden = select.value !== "auto"; });
    await loadConversations();
    if (state.convs.length) openConversation(state.convs[0].id); else newChat();
  } catch (e) { if (e.message !== "unauthorized") showError(e.message); }
}
// The session cookie, if any, signs the first request in; a 401 opens the sign-in form.
start();
