// The admin pages: sign in (token or Telegram initData), image actions, exports, the live view.
// Changes carry the X-GAP-Admin header: a cross-site form cannot send it, so the cookie alone
// never changes anything.
const $ = (id) => document.getElementById(id);
const HEADERS = { "X-GAP-Admin": "1" };

async function call(method, path, body) {
  const init = { method, headers: { ...HEADERS }, credentials: "same-origin" };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const res = await fetch(path, init);
  const data = (res.headers.get("content-type") || "").includes("json") ? await res.json() : null;
  if (!res.ok) {
    const detail = data && data.detail;
    if (Array.isArray(detail)) throw new Error(detail.map((d) => `${(d.loc || []).slice(-1)[0] || "input"}: ${d.msg}`).join("; "));
    throw new Error(typeof detail === "string" ? detail : `request failed (${res.status})`);
  }
  return data;
}

// --- sign in ---------------------------------------------------------------------------------

async function telegramInitData() {
  const inTelegram = /tgWebApp/.test(location.hash) || window.TelegramWebviewProxy;
  if (!inTelegram && !(window.Telegram && window.Telegram.WebApp)) return "";
  if (!(window.Telegram && window.Telegram.WebApp)) {
    await new Promise((resolve) => {
      const s = document.createElement("script");
      s.src = "/static/vendor/telegram-web-app.js";
      s.onload = s.onerror = resolve;
      document.head.append(s);
    });
  }
  return (window.Telegram && window.Telegram.WebApp && window.Telegram.WebApp.initData) || "";
}

async function setupLogin() {
  const fail = (message) => { $("login-error").textContent = message; $("login-error").hidden = false; };
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await call("POST", "/admin/login", { token: $("token").value });
      location.reload();
    } catch (e) { fail(e.message); }
  });
  if (document.body.dataset.telegram === "yes") {
    const initData = await telegramInitData();
    if (initData) {
      try { await call("POST", "/admin/login", { init_data: initData }); location.reload(); } catch (e) { fail(e.message); }
    }
  }
}

// --- dashboard -------------------------------------------------------------------------------

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function refreshLive() {
  try {
    const round = new URLSearchParams(location.search).get("round");
    const rows = await call("GET", `/admin/api/turns?limit=20${round ? `&round=${encodeURIComponent(round)}` : ""}`);
    $("live").tBodies[0].replaceChildren(...rows.map((t) => {
      const tr = document.createElement("tr");
      const when = t.asked_at.replace("T", " ").slice(5, 19);
      const verdict = (t.verdict || "") + (t.correction ? ` → ${t.correction}` : "");
      tr.append(cell(when), cell(t.player), cell(t.question), cell(t.answer ?? "…"), cell(verdict, `v-${t.verdict || "none"}`));
      return tr;
    }));
    $("live-status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $("live-status").textContent = `live view paused: ${e.message}`;
  }
}

async function imageAction(button) {
  const row = button.closest("tr");
  const change = button.dataset.action === "move"
    ? { pool: row.dataset.pool === "tainted" ? "untainted" : "tainted" }
    : { enabled: row.dataset.enabled !== "yes" };
  button.disabled = true;
  try {
    await call("PATCH", `/admin/api/images/${row.dataset.image}`, change);
    location.reload();
  } catch (e) {
    button.disabled = false;
    alert(e.message);
  }
}

async function upload(event) {
  event.preventDefault();
  const form = new FormData();
  for (const file of $("upload-files").files) form.append("files", file);
  form.append("pool", $("upload-pool").value);
  try {
    const { results } = await call("POST", "/admin/api/images", form);
    $("upload-results").replaceChildren(...results.map((r) => {
      const li = document.createElement("li");
      li.className = r.status;
      li.textContent = r.status === "added" ? `${r.file}: added` : `${r.file}: refused (${r.reason})`;
      return li;
    }));
    if (results.some((r) => r.status === "added")) setTimeout(() => location.reload(), 1200);
  } catch (e) {
    $("upload-results").replaceChildren(Object.assign(document.createElement("li"), { className: "refused", textContent: e.message }));
  }
}

async function exportSet(button) {
  const out = $("export-result");
  out.textContent = `Exporting ${button.textContent}…`;
  for (const b of document.querySelectorAll("button.export")) b.disabled = true;
  try {
    const r = await call("POST", "/admin/api/export", { format: button.dataset.format });
    out.textContent = `${r.records} records written to ${r.folder}` +
      (r.missing_references ? ` (${r.missing_references} kept turns still need a reference answer). ` : ". ");
    const link = Object.assign(document.createElement("a"), { href: r.download, textContent: "Download zip" });
    out.append(link);
  } catch (e) {
    out.textContent = `Export failed: ${e.message}`;
  } finally {
    for (const b of document.querySelectorAll("button.export")) b.disabled = false;
  }
}

async function openRound(event) {
  event.preventDefault();
  const error = $("round-error");
  const button = event.submitter || $("round-form").querySelector("button");
  const optional = (id) => $(id).value.trim() || null;
  error.hidden = true;
  button.disabled = true;
  try {
    await call("POST", "/admin/api/rounds", { model: $("round-model").value.trim(), adapter: optional("round-adapter"), note: optional("round-note") });
    location.reload();
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
    button.disabled = false;
  }
}

function filterByRound() {
  const url = new URL(location.href);
  const value = $("round-select").value;
  if (value) url.searchParams.set("round", value);
  else url.searchParams.delete("round");
  location.assign(url);
}

function setupDashboard() {
  $("round-form").addEventListener("submit", openRound);
  $("round-select").addEventListener("change", filterByRound);
  $("logout").addEventListener("click", async () => { await call("POST", "/admin/logout").catch(() => {}); location.reload(); });
  $("images").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) imageAction(button);
  });
  $("upload-form").addEventListener("submit", upload);
  for (const button of document.querySelectorAll("button.export")) button.addEventListener("click", () => exportSet(button));
  setInterval(refreshLive, 5000);
}

if ($("login-form")) setupLogin();
else setupDashboard();
