// The sandbox page: every person's private chat with the bot, live over server-sent events.
// Plain script, no build step, no dependencies: the page must work offline.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  const state = {
    bot: null,
    people: [],          // Person objects, in the server's order (client first)
    chats: new Map(),    // person id -> Map(message_id -> Message)
    selected: null,      // the person id whose chat the main pane shows
    panes: [],           // the main pane, then the one beside (see Pane)
    unread: new Map(),   // person id -> count of messages that came while not shown
    loaded: false,       // /sandbox/state read since the last (re)connection
    pending: [],         // events that arrived while the state was loading
    everConnected: false,
  };

  // ---- safe rendering -------------------------------------------------------------------
  // The server sends Telegram's HTML; the page copies only Telegram's tags into new
  // elements, so nothing from a message (script, style, handlers) ever reaches the DOM.
  const ALLOWED = new Set([
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
    "span", "tg-spoiler", "blockquote", "tg-emoji",
  ]);
  const SAFE_HREF = /^(https?:|tg:)/i;

  function copyNodes(from, to) {
    for (const node of from.childNodes) {
      if (node.nodeType === Node.TEXT_NODE) {
        to.appendChild(document.createTextNode(node.nodeValue));
      } else if (node.nodeType === Node.ELEMENT_NODE) {
        const tag = node.tagName.toLowerCase();
        if (!ALLOWED.has(tag)) {
          copyNodes(node, to);  // keep the text, drop the element
          continue;
        }
        let out;
        if (tag === "tg-spoiler" || (tag === "span" && node.classList.contains("tg-spoiler"))) {
          out = document.createElement("span");
          out.className = "spoiler";
          out.title = "spoiler: click to show";
          out.addEventListener("click", () => out.classList.add("shown"));
        } else if (tag === "span" || tag === "tg-emoji") {
          out = document.createElement("span");
        } else if (tag === "a") {
          const href = (node.getAttribute("href") || "").trim();
          if (!SAFE_HREF.test(href)) {
            copyNodes(node, to);
            continue;
          }
          out = document.createElement("a");
          out.href = href;
          out.target = "_blank";
          out.rel = "noopener noreferrer";
        } else if (tag === "code") {
          out = document.createElement("code");
          const lang = /^language-([\w+-]{1,32})$/.exec(node.getAttribute("class") || "");
          if (lang) out.className = "language-" + lang[1];
        } else {
          out = document.createElement(tag);
        }
        copyNodes(node, out);
        to.appendChild(out);
      }
    }
  }

  function parsedBody(html) {
    return new DOMParser().parseFromString("<body>" + html + "</body>", "text/html").body;
  }

  function renderHtml(html, into) {
    into.replaceChildren();
    copyNodes(parsedBody(html), into);
  }

  function plainText(html) {
    return (parsedBody(html).textContent || "").replace(/\s+/g, " ").trim();
  }

  // ---- helpers --------------------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role")
        node.setAttribute(key, String(value));
      else node[key] = value;
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function person(id) {
    return state.people.find((p) => p.id === id) || null;
  }

  function chat(id) {
    if (!state.chats.has(id)) state.chats.set(id, new Map());
    return state.chats.get(id);
  }

  function sortedMessages(id) {
    return [...chat(id).values()].sort((a, b) => a.message_id - b.message_id);
  }

  function timeOf(date) {
    const d = new Date(date * 1000);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function initials(p) {
    return (p.first_name || "?").trim().charAt(0).toUpperCase() || "?";
  }

  async function api(path, body) {
    const response = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok || !data || data.ok !== true) {
      const reason = (data && data.error) || `HTTP ${response.status}`;
      throw new Error(reason);
    }
    return data;
  }

  // ---- toasts ---------------------------------------------------------------------------
  function toast(text, opts = {}) {
    const box = el("div", {
      class: "toast" + (opts.alert ? " alert" : "") + (opts.error ? " error" : ""),
      role: opts.alert || opts.error ? "alert" : "status",
      "data-chat-id": opts.chatId ?? null,
    });
    if (opts.who) box.append(el("strong", { class: "toast-who", text: opts.who }));
    box.append(el("span", { class: "toast-text", text }));
    const close = el("button", { type: "button", class: "icon-btn", "aria-label": "Dismiss", text: "✕" });
    close.addEventListener("click", () => box.remove());
    box.append(close);
    $("toasts").append(box);
    if (!opts.alert) {
      setTimeout(() => box.classList.add("leaving"), 4500);
      setTimeout(() => box.remove(), 5000);
    }
  }

  // ---- people ---------------------------------------------------------------------------
  function lastPreview(id) {
    const messages = sortedMessages(id);
    if (!messages.length) return "No messages yet";
    const last = messages[messages.length - 1];
    return (last.from_bot ? "" : "You: ") + plainText(last.html);
  }

  // The list is updated in place (one button per person, kept), so a focused entry keeps
  // the keyboard focus while messages arrive.
  function renderPeople() {
    const list = $("people");
    const keep = new Set();
    state.people.forEach((p, index) => {
      keep.add(String(p.id));
      let button = list.querySelector(`button[data-person-id="${p.id}"]`);
      if (!button) {
        button = el("button", { type: "button", class: "person", "data-person-id": p.id });
        button.addEventListener("click", () => select(p.id));
      }
      const item = button.parentElement || el("li", {}, button);
      if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
      const unread = state.unread.get(p.id) || 0;
      button.className = "person" + (p.id === state.selected ? " selected" : "");
      button.classList.toggle("beside", p.id === besidePane().personId);
      button.dataset.role = p.role;
      if (p.id === state.selected) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
      button.replaceChildren(
        el("span", { class: "avatar " + p.role, "aria-hidden": "true", text: initials(p) }),
        el(
          "span",
          { class: "person-main" },
          el(
            "span",
            { class: "person-line" },
            el("span", { class: "person-name", text: p.first_name }),
            el("span", { class: "badge " + p.role, text: p.role === "admin" ? "admin" : "client" }),
            p.role === "client"
              ? el("span", { class: "badge lang", text: p.language_code })
              : null,
          ),
          el("span", { class: "person-preview", text: lastPreview(p.id) }),
        ),
        unread
          ? el("span", { class: "unread", "aria-label": `${unread} new`, text: String(unread) })
          : "",
      );
    });
    for (const button of [...list.querySelectorAll("button[data-person-id]")]) {
      if (!keep.has(button.dataset.personId)) button.parentElement.remove();
    }
  }

  function fillClientForm() {
    const client = state.people.find((p) => p.role === "client");
    const form = $("client-form");
    form.hidden = !client;
    if (!client) return;
    form.dataset.personId = String(client.id);
    if (document.activeElement && form.contains(document.activeElement)) return;
    $("client-first-name").value = client.first_name;
    $("client-username").value = client.username || "";
    const select = $("client-language");
    if (![...select.options].some((o) => o.value === client.language_code)) {
      select.append(el("option", { value: client.language_code, text: client.language_code }));
    }
    select.value = client.language_code;
  }

  // ---- panes ---------------------------------------------------------------------------
  // A pane shows one person's chat with its own composer and reply; the main pane follows
  // the list, the one beside (optional) shows a second person, e.g. the client while an
  // administrator decides.
  class Pane {
    constructor(root) {
      this.root = root;
      this.personId = null;
      this.replyTo = null;
      this.box = root.querySelector(".messages");
      this.text = root.querySelector(".composer textarea");
      const form = root.querySelector(".composer");
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.send();
      });
      this.text.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.send();
        } else if (event.key === "Escape" && this.replyTo !== null) {
          this.clearReply();
        }
      });
      this.text.addEventListener("input", () => this.autosize());
      root.querySelector(".reply-cancel").addEventListener("click", () => {
        this.clearReply();
        this.text.focus();
      });
    }

    q(selector) {
      return this.root.querySelector(selector);
    }

    show(id) {
      if (this.personId !== id) this.clearReply();
      this.personId = id;
      if (id !== null) state.unread.delete(id);
      this.renderHeader();
      this.renderMessages();
    }

    renderHeader() {
      const p = person(this.personId);
      if (!p) return;
      this.q(".chat-title").textContent = p.first_name;
      const avatar = this.q(".avatar");
      avatar.textContent = initials(p);
      avatar.className = "avatar " + p.role;
      const bits = [p.role === "admin" ? "administrator" : "client"];
      if (p.username) bits.push("@" + p.username);
      bits.push("id " + p.id, "language " + p.language_code);
      this.q(".chat-sub").textContent = bits.join(" · ");
      this.root.dataset.personId = String(p.id);
    }

    renderMessages() {
      const box = this.box;
      box.replaceChildren();
      if (this.personId === null) return;
      const messages = sortedMessages(this.personId);
      if (!messages.length) {
        const p = person(this.personId);
        const hint =
          p && p.role === "client"
            ? "Send /start, or /request followed by a few words about yourself."
            : "Requests arrive here as cards with Approve and Reject buttons.";
        box.append(el("p", { class: "empty", text: "No messages yet. " + hint }));
      }
      for (const m of messages) box.append(messageNode(m, this));
      box.scrollTop = box.scrollHeight;
    }

    upsert(m) {
      const box = this.box;
      const existing = box.querySelector(`.message[data-message-id="${m.message_id}"]`);
      if (existing) {
        fillMessage(existing, m, this);
      } else {
        const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 120 || !m.from_bot;
        const empty = box.querySelector(".empty");
        if (empty) empty.remove();
        const node = messageNode(m, this);
        const after = [...box.querySelectorAll(".message")].find(
          (n) => Number(n.dataset.messageId) > m.message_id,
        );
        box.insertBefore(node, after || null);
        if (stick) box.scrollTop = box.scrollHeight;
      }
      if (this.replyTo === m.message_id) this.showReplyBar(m);
    }

    startReply(m) {
      this.replyTo = m.message_id;
      this.showReplyBar(m);
      this.text.focus();
    }

    showReplyBar(m) {
      this.q(".reply-text").textContent = plainText(m.html);
      const bar = this.q(".reply-bar");
      bar.hidden = false;
      bar.dataset.replyTo = String(m.message_id);
    }

    clearReply() {
      this.replyTo = null;
      const bar = this.q(".reply-bar");
      bar.hidden = true;
      delete bar.dataset.replyTo;
    }

    autosize() {
      const box = this.text;
      box.style.height = "auto";
      box.style.height = Math.max(40, Math.min(box.scrollHeight + 2, 160)) + "px";
      box.style.overflowY = box.scrollHeight > 160 ? "auto" : "hidden";
    }

    async send() {
      const text = this.text.value;
      if (!text.trim() || this.personId === null) return;
      const button = this.q(".composer .send");
      button.disabled = true;
      try {
        const answer = await api("/sandbox/send", {
          person_id: this.personId,
          text,
          reply_to: this.replyTo,
        });
        this.text.value = "";
        this.autosize();
        this.clearReply();
        if (answer.message) upsert(answer.message, false);
      } catch (error) {
        toast("Not sent: " + error.message, { error: true });
      } finally {
        button.disabled = false;
        this.text.focus();
      }
    }
  }

  function mainPane() {
    return state.panes[0];
  }

  function besidePane() {
    return state.panes[1] || { personId: null };
  }

  function shown(id) {
    return state.panes.some((pane) => pane.personId === id);
  }

  function select(id) {
    if (!person(id)) return;
    const previous = state.selected;
    state.selected = id;
    // The person beside moves to the main pane: the one shown there takes their place.
    if (besidePane().personId === id) showBeside(previous);
    mainPane().show(id);
    renderPeople();
    renderBesideChoice();
    mainPane().text.focus();
  }

  function showBeside(id) {
    const side = state.panes[1];
    side.root.hidden = id === null;
    $("panes").classList.toggle("split", id !== null);
    side.show(id);
    renderPeople();
    renderBesideChoice();
  }

  function renderBesideChoice() {
    const choice = $("beside-select");
    const current = besidePane().personId;
    choice.replaceChildren(el("option", { value: "", text: "nobody" }));
    for (const p of state.people) {
      if (p.id === state.selected) continue;
      const label = p.first_name + (p.role === "admin" ? " (admin)" : " (client)");
      choice.append(el("option", { value: String(p.id), text: label }));
    }
    choice.value = current === null ? "" : String(current);
  }

  // ---- messages -------------------------------------------------------------------------
  function messageNode(m, pane) {
    const node = el("article", {
      class: "message " + (m.from_bot ? "bot" : "own"),
      "data-message-id": m.message_id,
      "data-chat-id": m.chat_id,
      "data-from-bot": m.from_bot ? "true" : "false",
    });
    fillMessage(node, m, pane);  // sets data-edited, which an edit changes
    return node;
  }

  function fillMessage(node, m, pane) {
    node.dataset.edited = m.edited ? "true" : "false";
    const bubble = el("div", { class: "bubble" });
    if (m.reply_to) {
      const quoted = chat(m.chat_id).get(m.reply_to);
      const quote = el(
        "button",
        {
          type: "button",
          class: "quote",
          "data-reply-to": m.reply_to,
          title: "Show the message replied to",
        },
        el("span", { class: "quote-who", text: quoted && !quoted.from_bot ? "You" : botName() }),
        el("span", { class: "quote-text", text: quoted ? plainText(quoted.html) : "a message" }),
      );
      quote.addEventListener("click", () => {
        const target = pane.box.querySelector(`.message[data-message-id="${m.reply_to}"]`);
        if (target) {
          target.scrollIntoView({ block: "center", behavior: "smooth" });
          target.classList.add("flash");
          setTimeout(() => target.classList.remove("flash"), 1200);
        }
      });
      bubble.append(quote);
    }
    const text = el("div", { class: "text" });
    renderHtml(m.html, text);
    bubble.append(text);
    const meta = el("div", { class: "meta" });
    if (m.edited) meta.append(el("span", { class: "edited", text: "edited" }));
    meta.append(el("time", { dateTime: new Date(m.date * 1000).toISOString(), text: timeOf(m.date) }));
    bubble.append(meta);

    const rows = (m.buttons || []).filter((row) => row.length);
    let keyboard = null;
    if (rows.length) {
      keyboard = el("div", { class: "keyboard", role: "group", "aria-label": "Buttons" });
      for (const row of rows) {
        const line = el("div", { class: "kb-row" });
        for (const b of row) {
          if (b.url && SAFE_HREF.test(b.url)) {
            line.append(
              el("a", {
                class: "kb-btn",
                href: b.url,
                target: "_blank",
                rel: "noopener noreferrer",
                text: b.text + " ↗",
              }),
            );
          } else if (b.callback_data !== null && b.callback_data !== undefined) {
            const button = el("button", {
              type: "button",
              class: "kb-btn",
              "data-callback": b.callback_data,
              text: b.text,
            });
            button.addEventListener("click", () => press(m, b.callback_data, button));
            line.append(button);
          } else {
            line.append(el("span", { class: "kb-btn disabled", text: b.text }));
          }
        }
        keyboard.append(line);
      }
    }

    const actions = el("div", { class: "actions" });
    if (m.from_bot) {
      const reply = el("button", {
        type: "button",
        class: "reply-btn",
        "aria-label": "Reply to this message",
        text: "↩ Reply",
      });
      reply.addEventListener("click", () => pane.startReply(m));
      actions.append(reply);
    }
    node.replaceChildren(bubble, ...(keyboard ? [keyboard] : []), actions);
  }

  function botName() {
    return (state.bot && state.bot.first_name) || "Bot";
  }

  function upsert(m, isEdit) {
    const messages = chat(m.chat_id);
    const known = messages.has(m.message_id);
    messages.set(m.message_id, m);
    if (!shown(m.chat_id) && !known && !isEdit && m.from_bot) {
      state.unread.set(m.chat_id, (state.unread.get(m.chat_id) || 0) + 1);
    }
    for (const pane of state.panes) if (pane.personId === m.chat_id) pane.upsert(m);
    renderPeople();
  }

  // ---- actions --------------------------------------------------------------------------
  async function press(m, data, button) {
    button.disabled = true;
    button.classList.add("busy");
    try {
      // A private chat's id is its person's id: the one who sees the button presses it.
      await api("/sandbox/press", {
        person_id: m.chat_id,
        message_id: m.message_id,
        callback_data: data,
      });
    } catch (error) {
      toast("The button could not be pressed: " + error.message, { error: true });
    } finally {
      button.disabled = false;
      button.classList.remove("busy");
    }
  }

  async function saveClient(event) {
    event.preventDefault();
    const form = $("client-form");
    const status = $("client-status");
    const username = $("client-username").value.trim().replace(/^@/, "");
    status.textContent = "saving…";
    status.className = "form-status";
    try {
      const answer = await api("/sandbox/person", {
        person_id: Number(form.dataset.personId),
        first_name: $("client-first-name").value.trim(),
        username: username || null,
        language_code: $("client-language").value,
      });
      applyPerson(answer.person);
      status.textContent = "saved";
      status.className = "form-status ok";
    } catch (error) {
      status.textContent = error.message;
      status.className = "form-status error";
    }
  }

  function applyPerson(p) {
    const index = state.people.findIndex((q) => q.id === p.id);
    if (index >= 0) state.people[index] = p;
    else state.people.push(p);
    renderPeople();
    renderBesideChoice();
    for (const pane of state.panes) if (pane.personId === p.id) pane.renderHeader();
    fillClientForm();
  }

  // ---- live events ----------------------------------------------------------------------
  function setLive(kind, text) {
    const live = $("live");
    live.dataset.state = kind;
    live.querySelector(".live-text").textContent = text;
  }

  function onDelivery(d) {
    const note = $("delivery-note");
    if (d.ok) {
      note.hidden = true;
      note.textContent = "";
      return;
    }
    const why = d.error || (d.status ? `HTTP ${d.status}` : "no answer");
    note.textContent = `Update ${d.update_id} did not reach the bot (${why}); trying again.`;
    note.hidden = false;
  }

  function handle(kind, data) {
    if (!state.loaded) {
      state.pending.push([kind, data]);
      return;
    }
    if (kind === "message") upsert(data.message, false);
    else if (kind === "edit") upsert(data.message, true);
    else if (kind === "person") applyPerson(data);
    else if (kind === "delivery") onDelivery(data);
    else if (kind === "toast") {
      const p = person(data.chat_id);
      toast(data.text, {
        alert: data.show_alert,
        chatId: data.chat_id,
        who: p && data.chat_id !== state.selected ? p.first_name + ":" : null,
      });
    }
  }

  async function loadState() {
    state.loaded = false;
    const data = await api("/sandbox/state");
    state.bot = data.bot;
    state.people = data.people;
    state.chats = new Map();
    for (const [id, messages] of Object.entries(data.chats || {})) {
      const map = new Map();
      for (const m of messages) map.set(m.message_id, m);
      state.chats.set(Number(id), map);
    }
    $("bot-name").textContent = data.bot
      ? `${data.bot.first_name} · @${data.bot.username}`
      : "the bot";
    if (state.selected === null || !person(state.selected)) {
      state.selected = state.people.length ? state.people[0].id : null;
    }
    state.loaded = true;
    fillClientForm();
    mainPane().show(state.selected);
    const beside = besidePane().personId;
    if (beside !== null) showBeside(person(beside) && beside !== state.selected ? beside : null);
    renderPeople();
    renderBesideChoice();
    const queued = state.pending;
    state.pending = [];
    for (const [kind, d] of queued) handle(kind, d);
    document.body.dataset.ready = "true";
  }

  function reload() {
    loadState().catch((error) => {
      setLive("error", "state: " + error.message);
      setTimeout(reload, 2000);  // the server answers again soon, or the stream drops
    });
  }

  function connect() {
    const source = new EventSource("/sandbox/events");
    for (const kind of ["message", "edit", "toast", "person", "delivery"]) {
      source.addEventListener(kind, (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch (_) {
          return;
        }
        handle(kind, data);
      });
    }
    source.addEventListener("open", () => {
      setLive("live", "live");
      state.everConnected = true;
      // (Re)load the whole state on every (re)connection: events missed while away are in it.
      reload();
    });
    source.addEventListener("error", () => {
      state.loaded = false;
      document.body.dataset.ready = "false";
      setLive(state.everConnected ? "down" : "connecting", "reconnecting…");
    });
  }

  // ---- wiring ---------------------------------------------------------------------------
  function init() {
    state.panes = [new Pane($("chat")), new Pane($("side"))];
    $("beside-select").addEventListener("change", (event) => {
      showBeside(event.target.value ? Number(event.target.value) : null);
    });
    $("side").querySelector(".close-side").addEventListener("click", () => {
      showBeside(null);
      $("beside-select").focus();
    });
    $("client-form").addEventListener("submit", saveClient);
    // Arrow keys move between people in the list.
    $("people").addEventListener("keydown", (event) => {
      if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
      const buttons = [...$("people").querySelectorAll("button.person")];
      const at = buttons.indexOf(document.activeElement);
      if (at < 0) return;
      event.preventDefault();
      const next = buttons[(at + (event.key === "ArrowDown" ? 1 : -1) + buttons.length) % buttons.length];
      next.focus();
    });
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
