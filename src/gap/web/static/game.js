// The GAP game page: a thin client over the JSON API. The server's deadline is the truth;
// the countdown here is display only.
const $ = (id) => document.getElementById(id);
const state = { token: localStorage.getItem("gap.token"), session: null, round: null, deadline: 0, timer: null };

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) {
    const err = new Error((data && (typeof data.detail === "string" ? data.detail : "invalid input")) || res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

function show(section) {
  for (const id of ["login", "lobby", "round", "end"]) $(id).hidden = id !== section;
  $("progress").hidden = $("countdown").hidden = section !== "round";
}

function error(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

async function refreshBoard() {
  const rows = await api("GET", "/api/leaderboard?window=all&limit=10");
  $("leaders").replaceChildren(...rows.map((r) => {
    const li = document.createElement("li");
    li.textContent = `${r.name} — ${r.points}`;
    return li;
  }));
}

async function lobby() {
  const me = await api("GET", "/api/me");
  $("hello").textContent = `Hi ${me.name}!`;
  $("my-points").textContent = me.points;
  show("lobby");
}

function renderRound(round) {
  state.round = round;
  if (!round) return;
  show("round");
  $("progress").textContent = `${round.index}/${state.session.images_total}`;
  if ($("image").dataset.src !== round.image_url) {
    $("image").src = round.image_url;
    $("image").dataset.src = round.image_url;
  }
  const items = [];
  for (const t of round.turns) {
    const q = document.createElement("li"); q.className = "q"; q.textContent = t.question; items.push(q);
    const a = document.createElement("li"); a.className = `a ${t.verdict || ""}`; a.textContent = t.answer ?? "…"; items.push(a);
  }
  $("chat").replaceChildren(...items);
  const last = round.turns.at(-1);
  const awaiting = Boolean(last && last.answer !== null && !last.verdict);
  $("verdict").hidden = !awaiting;
  $("ask-form").hidden = awaiting;
  $("correction-form").hidden = true;
  state.deadline = performance.now() + round.seconds_left * 1000;
  tick();
}

function tick() {
  const left = Math.max(0, Math.ceil((state.deadline - performance.now()) / 1000));
  $("countdown").textContent = `${left}s`;
  $("countdown").classList.toggle("low", left <= 10);
  if (left === 0 && state.round) { state.round = null; reload(); }
}

async function reload() {
  const s = await api("GET", `/api/sessions/${state.session.session_id}`);
  state.session = { ...state.session, ...s };
  if (s.status === "finished") return finish(s);
  renderRound(s.round);
}

async function finish(s) {
  state.round = null;
  $("session-points").textContent = s.points ?? 0;
  show("end");
  refreshBoard();
}

async function start() {
  error("");
  const s = await api("POST", "/api/sessions");
  state.session = { session_id: s.session_id, images_total: s.images_total };
  if (!s.round) return reload();
  renderRound(s.round);
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || !state.round) return;
  $("ask").disabled = true;
  error("");
  try {
    const turn = await api("POST", `/api/rounds/${state.round.round_id}/questions`, { question });
    state.round.turns.push({ turn_id: turn.turn_id, question, answer: turn.answer, verdict: null });
    $("question").value = "";  // only cleared once the answer arrived: a failed ask keeps the text
    renderRound({ ...state.round, seconds_left: Math.max(0, (state.deadline - performance.now()) / 1000) });
  } catch (e) {
    error(e.status === 409 ? "This round is over." : `Could not get an answer (${e.message}). Try again.`);
    if (e.status === 409) await reload();
  } finally {
    $("ask").disabled = false;
  }
}

async function judge(verdict, correction = null) {
  const turn = state.round.turns.at(-1);
  error("");
  try {
    const r = await api("POST", `/api/turns/${turn.turn_id}/verdict`, { verdict, correction });
    turn.verdict = verdict;
    if (r.session_status === "finished") return reload();
    if (r.round_status === "ended") return renderRound(r.next_round);
    renderRound({ ...state.round, seconds_left: Math.max(0, (state.deadline - performance.now()) / 1000) });
  } catch (e) {
    error(e.message);
    await reload();
  }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const r = await api("POST", "/api/auth/guest", { name: $("name").value });
    state.token = r.token;
    localStorage.setItem("gap.token", r.token);
    await lobby();
  } catch (e) { error(e.message); }
});
$("start").addEventListener("click", () => start().catch((e) => error(e.message)));
$("again").addEventListener("click", () => start().catch((e) => error(e.message)));
$("ask-form").addEventListener("submit", ask);
$("correct").addEventListener("click", () => judge("correct"));
$("wrong").addEventListener("click", () => { $("verdict").hidden = true; $("correction-form").hidden = false; $("correction").focus(); });
$("correction-form").addEventListener("submit", (event) => { event.preventDefault(); judge("wrong", $("correction").value.trim() || null); $("correction").value = ""; });

setInterval(() => state.round && tick(), 250);
(async () => {
  refreshBoard().catch(() => {});
  if (!state.token) return show("login");
  try { await lobby(); } catch { localStorage.removeItem("gap.token"); state.token = null; show("login"); }
})();
