// The GAP game page: a thin client over the JSON API, no framework, no build step.
// The server's deadline is the truth: the countdown only displays the server's `seconds_left`, and
// the page asks the server again whenever it reaches zero or the phone wakes up.
const $ = (id) => document.getElementById(id);
const storage = {
  get(key) { try { return localStorage.getItem(key); } catch { return null; } },
  set(key, value) { try { localStorage.setItem(key, value); } catch { /* private mode */ } },
  remove(key) { try { localStorage.removeItem(key); } catch { /* private mode */ } },
};
const state = {
  token: storage.get("gap.token"),
  me: null,
  session: null,        // { session_id, images_total }
  round: null,          // the round being played, as the server sent it (turns included)
  deadline: 0,          // performance.now() at which the round ends, from the server's seconds_left
  busy: false,          // a question or verdict is on its way
  epoch: 0,             // bumped by every action of the player: a reload sent before one is stale
  timedOut: false,      // the last round ran out of time (said with the next picture's toast)
  retry: null,          // what the Retry button does after a failure
  board: "all",
  tg: null,             // Telegram.WebApp inside Telegram, else null
  mainAction: null,     // what Telegram's main button does now
};
const SECTIONS = ["login", "lobby", "round", "end"];
const ASK_TIMEOUT_MS = 90_000;  // above the server's model timeout, so the server reports it first

// --- talking to the server -----------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status, kind) { super(message); this.status = status; this.kind = kind; }
}

function describe(status, detail) {
  if (status === 504) return "The AI is taking too long to answer. Your question is kept: try again.";
  if (status === 502) return "The AI is not available right now. Your question is kept: try again in a moment.";
  if (status >= 500) return "Something went wrong on the server. Try again.";
  if (status === 422) return detail || "Please check what you typed.";
  return detail || `Request failed (${status}).`;
}

async function api(method, path, body, { timeout = 20_000 } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const control = new AbortController();
  const timer = setTimeout(() => control.abort(), timeout);
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal: control.signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    const message = control.signal.aborted
      ? "The server did not answer in time. Check your connection and try again."
      : navigator.onLine === false
        ? "You are offline. Reconnect, then try again."
        : "Network problem: the server could not be reached. Try again.";
    throw new ApiError(message, 0, "network");
  } finally {
    clearTimeout(timer);
  }
  const data = (res.headers.get("content-type") || "").includes("json") ? await res.json().catch(() => null) : null;
  if (!res.ok) {
    let detail = data && data.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    throw new ApiError(describe(res.status, typeof detail === "string" ? detail : ""), res.status, "http");
  }
  return data;
}

// --- small view helpers --------------------------------------------------------------------

function show(section) {
  for (const id of SECTIONS) $(id).hidden = id !== section;
  const playing = section === "round";
  document.body.classList.toggle("playing", playing);
  $("progress").hidden = $("countdown").hidden = $("timebar").hidden = !playing;
  $("board").hidden = playing;  // one thing at a time on a small screen
  setMainButton(section);
}

function error(message, retry = null) {
  state.retry = retry;
  $("error-text").textContent = message || "";
  $("error").hidden = !message;
  $("retry").hidden = !retry;
  if (message) haptic("error");
}

let toastTimer = 0;
function toast(message) {
  $("toast").textContent = message;
  $("toast").hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { $("toast").hidden = true; }, 2500);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function haptic(kind) {
  const h = state.tg && state.tg.HapticFeedback;
  if (!h) return;
  try {
    if (kind === "success" || kind === "error" || kind === "warning") h.notificationOccurred(kind);
    else h.impactOccurred(kind || "light");
  } catch { /* old Telegram clients */ }
}

function handleAuthLoss(e) {
  if (e.status !== 401) return false;
  state.token = null;
  storage.remove("gap.token");
  storage.remove("gap.session");
  show("login");
  error("Your login has expired. Enter a name to play again.");
  return true;
}

// --- leaderboard ---------------------------------------------------------------------------

async function refreshBoard() {
  const rows = await api("GET", `/api/leaderboard?window=${state.board}&limit=10`);
  $("leaders").replaceChildren(...rows.map((r) => {
    const li = el("li", state.me && r.name === state.me.name ? "me" : "");
    li.append(el("span", "rank", `${r.rank}`), el("span", "who", r.name), el("b", "pts", `${r.points}`));
    return li;
  }));
  $("leaders-empty").hidden = rows.length > 0;
}

function selectBoard(windowName) {
  state.board = windowName;
  for (const tab of document.querySelectorAll("#board [data-window]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.window === windowName));
  }
  refreshBoard().catch(() => {});
}

const WINDOW_WORDS = { all: "of all time", week: "this week", day: "today" };

async function rankText() {
  const ranks = await Promise.all(["all", "day"].map((w) => api("GET", `/api/me/rank?window=${w}`).catch(() => null)));
  return ranks.filter((r) => r && r.rank).map((r) => `#${r.rank} ${WINDOW_WORDS[r.window]}`).join(" · ");
}

// --- lobby and sessions --------------------------------------------------------------------

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
const formatPoints = (value) => String(Math.round(value * 100) / 100);

/** "140 points, 60 credited so far": Wrong verdicts count 20 each until settlement credits them. */
function pointsText(me) {
  const credited = Number(me.points) || 0;
  const total = credited + (Number(me.points_pending) || 0);
  const text = `${formatPoints(total)} points`;
  return total === credited ? text : `${text}, ${formatPoints(credited)} credited so far`;
}

async function lobby() {
  state.me = await api("GET", "/api/me");
  $("hello").textContent = `Hi ${state.me.name}!`;
  $("my-points").textContent = pointsText(state.me);
  $("my-rank").textContent = "";
  show("lobby");
  rankText().then((text) => { $("my-rank").textContent = text ? ` · ${text}` : ""; }).catch(() => {});
}

async function start() {
  if (state.busy) return;
  state.busy = true;
  error("");
  try {
    const s = await api("POST", "/api/sessions");
    state.session = { session_id: s.session_id, images_total: s.images_total };
    storage.set("gap.session", s.session_id);
    if (!s.round) await reload();
    else renderRound(s.round);
  } catch (e) {
    if (!handleAuthLoss(e)) error(e.message, start);
  } finally {
    state.busy = false;
  }
}

async function reload() {
  const epoch = state.epoch;
  const s = await api("GET", `/api/sessions/${state.session.session_id}`);
  // An answer or verdict that arrived meanwhile is newer than this view: drop the stale one.
  if (epoch !== state.epoch) return;
  state.session = { ...state.session, images_total: s.images_total };
  if (s.status === "finished") return finish(s);
  renderRound(s.round);
}

/** What the player did, in plain words: nothing here depends on which pictures were which. */
function summaryText(summary) {
  if (!summary) return "";
  const asked = `You asked ${plural(summary.questions, "question", "questions")}`;
  const caught = summary.caught === 0 ? "caught no mistakes" : `caught ${plural(summary.caught, "mistake", "mistakes")}`;
  if (summary.corrections === 0) return `${asked} and ${caught}.`;
  return `${asked}, ${caught} and gave ${plural(summary.corrections, "correction", "corrections")}.`;
}

async function finish(s) {
  state.round = null;
  state.timedOut = false;
  storage.remove("gap.session");
  $("toast").hidden = true;
  $("end-summary").textContent = summaryText(s.summary);
  $("end-points").textContent = "";
  $("end-rank").textContent = "";
  show("end");
  api("GET", "/api/me").then((me) => { state.me = me; $("end-points").textContent = `Your total: ${pointsText(me)}.`; }).catch(() => {});
  haptic("success");
  rankText().then((text) => { $("end-rank").textContent = text ? `You rank ${text}.` : ""; }).catch(() => {});
  refreshBoard().catch(() => {});
}

// --- a round -------------------------------------------------------------------------------

function renderRound(round) {
  const previous = state.round;
  state.round = round;
  if (!round) return;
  show("round");
  $("progress").textContent = `${round.index}/${state.session.images_total}`;
  if ($("image").dataset.src !== round.image_url) {
    $("image").src = round.image_url;
    $("image").dataset.src = round.image_url;
    if ((previous && previous.round_id !== round.round_id) || state.timedOut) {
      toast(`${state.timedOut ? "Time's up! " : ""}Picture ${round.index} of ${state.session.images_total}`);
    }
  }
  state.timedOut = false;
  renderChat(round.turns);
  const last = round.turns.at(-1);
  const pending = Boolean(last && last.answer === null);
  const awaiting = Boolean(last && last.answer !== null && !last.verdict);
  if (last && $("question").value.trim() === last.question) $("question").value = "";
  // A refresh of the same answer (network back, phone awake) leaves a correction being typed open.
  const typingCorrection = Boolean(awaiting && previous && previous.round_id === round.round_id && !$("correction-form").hidden);
  setHidden("verdict", !awaiting || typingCorrection);
  setHidden("ask-form", awaiting || pending);
  setHidden("correction-form", !typingCorrection);
  $("round").classList.toggle("judging", typingCorrection);
  setVerdictDisabled(false);
  checkLength($("question"));
  if (!previous || previous.round_id !== round.round_id) {
    // The bar's full length is the round's length: the server's, or what is left if more.
    state.roundTotal = Math.max(state.roundSeconds, round.seconds_left);
  }
  state.deadline = performance.now() + round.seconds_left * 1000;
  tick();
  if (pending) setTimeout(() => state.round && reload().catch(() => {}), 1500);
}

function renderChat(turns, pendingQuestion) {
  const items = [];
  for (const t of turns) {
    items.push(el("li", "q", t.question));
    items.push(t.answer === null ? thinking() : el("li", `a ${t.verdict || ""}`, t.answer));
  }
  if (pendingQuestion) items.push(el("li", "q", pendingQuestion), thinking());
  $("chat").replaceChildren(...items);
  const end = items.at(-1);
  if (end) end.scrollIntoView({ block: "nearest" });
}

/** Hide or show a part of the page; focus inside a part being hidden goes back to the page, so the
 *  next key is a shortcut, not typing into a hidden box (Chromium moves it only a task later). */
function setHidden(id, hidden) {
  const node = $(id);
  if (hidden && node.contains(document.activeElement)) document.activeElement.blur();
  node.hidden = hidden;
}

function thinking() {
  const li = el("li", "a thinking");
  li.setAttribute("aria-label", "The AI is thinking");
  li.append(el("span"), el("span"), el("span"));
  return li;
}

function secondsLeft() {
  return Math.max(0, (state.deadline - performance.now()) / 1000);
}

function tick() {
  if (!state.round) return;
  const exact = secondsLeft();
  const left = Math.ceil(exact);
  $("countdown").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  $("countdown").classList.toggle("low", left <= 10);
  // The bar and the number come from the same instant, so they agree from the first frame.
  $("timebar").firstElementChild.style.width = `${Math.min(100, (100 * exact) / state.roundTotal)}%`;
  $("timebar").classList.toggle("low", left <= 10);
  if (!$("correction-form").hidden && exact <= 2 && !state.busy) {
    // The player chose Wrong and is still typing: send it before the round closes (a correction
    // over the limit is left out rather than cut, so the verdict is never lost).
    judge("wrong", (checkLength($("correction")) && $("correction").value.trim()) || null);
    return;
  }
  if (left === 0 && !state.busy) {
    state.round = null;
    state.timedOut = true;
    toast("Time's up!");
    haptic("warning");
    reload().catch((e) => error(e.message, () => reload().then(() => error(""))));
  }
}

function setVerdictDisabled(disabled) {
  for (const id of ["correct", "wrong", "skip-correction", "send-correction"]) $(id).disabled = disabled;
}

async function ask(event) {
  if (event) event.preventDefault();
  const question = $("question").value.trim();
  if (!question || !state.round || state.busy || !checkLength($("question"))) return;
  state.busy = true;
  state.epoch += 1;
  $("ask").disabled = true;
  $("question").readOnly = true;
  error("");
  renderChat(state.round.turns, question);
  try {
    const turn = await api("POST", `/api/rounds/${state.round.round_id}/questions`, { question }, { timeout: ASK_TIMEOUT_MS });
    state.round.turns.push({ turn_id: turn.turn_id, question, answer: turn.answer, verdict: null });
    $("question").value = "";  // cleared only once the answer arrived: a failed ask keeps the text
    haptic("light");
    renderRound({ ...state.round, seconds_left: secondsLeft() });
  } catch (e) {
    if (state.round) renderChat(state.round.turns);
    if (handleAuthLoss(e)) return;
    if (e.status === 409 || e.status === 404) {
      error(e.message);
      await reload().catch(() => {});
    } else {
      // Network or model trouble: the question stays in the box; Retry first asks the server what
      // happened (the answer may have arrived after all), then sends it again if needed.
      error(e.message, retryAsk);
    }
  } finally {
    state.busy = false;
    $("ask").disabled = false;
    $("question").readOnly = false;
  }
}

/** The round's suggested question (hints on: the page has a Hint button), put in the question box
 *  for the player to ask as it is or to change. The server gives one per picture, always the same. */
async function hint() {
  if (!state.round || state.busy || $("ask-form").hidden) return;
  const round = state.round;
  state.busy = true;
  $("hint").disabled = true;
  error("");
  try {
    const r = await api("POST", `/api/rounds/${round.round_id}/hint`, undefined, { timeout: ASK_TIMEOUT_MS });
    if (state.round && state.round.round_id === round.round_id) {
      $("question").value = r.hint;
      checkLength($("question"));
      $("question").focus();
    }
  } catch (e) {
    if (handleAuthLoss(e)) return;
    error(e.message, e.kind === "network" || e.status >= 500 ? hint : null);
    if (e.status === 409) await reload().catch(() => {});
  } finally {
    state.busy = false;
    $("hint").disabled = false;
  }
}

async function retryAsk() {
  error("");
  try {
    await reload();
  } catch (e) {
    error(e.message, retryAsk);
    return;
  }
  if (!$("ask-form").hidden && $("question").value.trim()) await ask();
}

async function judge(verdict, correction = null) {
  const turn = state.round && state.round.turns.at(-1);
  if (!turn || state.busy) return;
  if (correction !== null && !checkLength($("correction"))) return;
  state.busy = true;
  state.epoch += 1;
  setVerdictDisabled(true);
  error("");
  try {
    const r = await api("POST", `/api/turns/${turn.turn_id}/verdict`, { verdict, correction });
    turn.verdict = verdict;
    $("correction").value = "";
    haptic(verdict === "wrong" ? "medium" : "light");
    if (r.session_status === "finished") await reload();
    else if (r.round_status === "ended") renderRound(r.next_round);
    else renderRound({ ...state.round, seconds_left: secondsLeft() });
  } catch (e) {
    if (handleAuthLoss(e)) return;
    if (e.kind === "network" || e.status >= 500) {
      error(e.message, () => { state.busy = false; return judge(verdict, correction); });
      setVerdictDisabled(false);
    } else {
      error(e.status === 409 ? "This picture is over." : e.message);
      await reload().catch(() => {});
    }
  } finally {
    state.busy = false;
  }
}

function openCorrection() {
  if (!state.round || state.busy) return;
  setHidden("verdict", true);
  setHidden("correction-form", false);
  $("round").classList.add("judging");  // a smaller picture: the answer being judged stays in view
  checkLength($("correction"));
  $("correction").focus({ preventScroll: true });
  const answer = $("chat").lastElementChild;
  if (answer) answer.scrollIntoView({ block: "nearest" });
}

function closeCorrection() {
  setHidden("correction-form", true);
  $("round").classList.remove("judging");
  setHidden("verdict", false);
  $("wrong").focus();  // back where the player was; a key pressed next is a shortcut again
}

// --- length limits: a counter near the limit, and refusal beyond it (text is never cut) -------

/** True when the box's text is within its limit; near the limit a counter shows, beyond it the
 *  send button is disabled with a message. The server counts the same (stripped, in characters). */
function checkLength(input) {
  const limit = Number(input.dataset.limit);
  const counter = $(`${input.id}-count`);
  const used = [...input.value.trim()].length;
  const over = used > limit;
  counter.hidden = used < limit * 0.8;
  counter.textContent = over
    ? `Too long: ${used}/${limit} characters. Please shorten it.`
    : `${used}/${limit}`;
  counter.classList.toggle("over", over);
  input.setAttribute("aria-invalid", String(over));
  $(input.dataset.sends).disabled = over;
  return !over;
}

// --- zoom: pinch, drag, wheel and double-tap -----------------------------------------------

const zoom = { scale: 1, x: 0, y: 0, pointers: new Map(), pinch: null };

function applyZoom() {
  zoom.scale = Math.min(6, Math.max(1, zoom.scale));
  if (zoom.scale === 1) zoom.x = zoom.y = 0;
  $("zoom-img").style.transform = `translate(${zoom.x}px, ${zoom.y}px) scale(${zoom.scale})`;
}

function openZoom() {
  if (!$("image").src) return;
  $("zoom-img").src = $("image").src;
  Object.assign(zoom, { scale: 1, x: 0, y: 0, pinch: null });
  zoom.pointers.clear();
  applyZoom();
  $("zoom").hidden = false;
  if (state.tg && state.tg.BackButton) state.tg.BackButton.show();
}

function closeZoom() {
  $("zoom").hidden = true;
  if (state.tg && state.tg.BackButton) state.tg.BackButton.hide();
}

function pinchDistance() {
  const [a, b] = [...zoom.pointers.values()];
  return Math.hypot(a.x - b.x, a.y - b.y);
}

function setupZoom() {
  const area = $("zoom");
  area.addEventListener("pointerdown", (e) => {
    if (e.target.closest("button")) return;
    area.setPointerCapture(e.pointerId);
    zoom.pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (zoom.pointers.size === 2) zoom.pinch = { distance: pinchDistance(), scale: zoom.scale };
  });
  area.addEventListener("pointermove", (e) => {
    const before = zoom.pointers.get(e.pointerId);
    if (!before) return;
    zoom.pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (zoom.pointers.size === 2 && zoom.pinch) {
      zoom.scale = zoom.pinch.scale * (pinchDistance() / Math.max(1, zoom.pinch.distance));
    } else if (zoom.pointers.size === 1 && zoom.scale > 1) {
      zoom.x += e.clientX - before.x;
      zoom.y += e.clientY - before.y;
    }
    applyZoom();
  });
  const release = (e) => { zoom.pointers.delete(e.pointerId); if (zoom.pointers.size < 2) zoom.pinch = null; };
  area.addEventListener("pointerup", release);
  area.addEventListener("pointercancel", release);
  area.addEventListener("wheel", (e) => { e.preventDefault(); zoom.scale *= Math.exp(-e.deltaY * 0.002); applyZoom(); }, { passive: false });
  area.addEventListener("dblclick", () => { zoom.scale = zoom.scale > 1 ? 1 : 2.5; applyZoom(); });
  $("zoom-in").addEventListener("click", () => { zoom.scale *= 1.5; applyZoom(); });
  $("zoom-out").addEventListener("click", () => { zoom.scale /= 1.5; applyZoom(); });
  $("zoom-close").addEventListener("click", closeZoom);
  $("image").addEventListener("click", openZoom);
  $("image").addEventListener("load", () => {
    const img = $("image");
    if (img.naturalHeight) img.parentElement.style.setProperty("--ratio", String(img.naturalWidth / img.naturalHeight));
  });
  $("zoom-btn").addEventListener("click", openZoom);
}

// --- help, themes, keys --------------------------------------------------------------------

function openHelp() { $("help").hidden = false; $("help-ok").focus(); }
function closeHelp() { $("help").hidden = true; storage.set("gap.onboarded", "1"); }

function effectiveTheme() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen) return chosen;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function toggleTheme() {
  const next = effectiveTheme() === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  storage.set("gap.theme", next);
}

function typing(target) {
  const box = target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement;
  return box && !target.closest("[hidden]");  // a hidden box keeps focus a moment: not typing
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "Escape") {
    if (!$("zoom").hidden) closeZoom();
    else if (!$("help").hidden) closeHelp();
    else if (!$("correction-form").hidden) closeCorrection();
    return;
  }
  if (typing(e.target) || !$("help").hidden) return;
  const playing = !$("round").hidden;
  const key = e.key.toLowerCase();
  if (key === "?") { e.preventDefault(); openHelp(); }
  else if (playing && key === "c" && !$("verdict").hidden) { e.preventDefault(); judge("correct"); }
  else if (playing && key === "w" && !$("verdict").hidden) { e.preventDefault(); openCorrection(); }
  else if (playing && key === "z") { e.preventDefault(); if ($("zoom").hidden) openZoom(); else closeZoom(); }
  else if (playing && (key === "/" || key === "q") && !$("ask-form").hidden) { e.preventDefault(); $("question").focus(); }
  else if (playing && key === "h" && $("hint") && !$("ask-form").hidden) { e.preventDefault(); hint(); }
  else if (key === "enter" && !$("lobby").hidden) { e.preventDefault(); start(); }
  else if (key === "enter" && !$("end").hidden) { e.preventDefault(); start(); }
}

// --- Telegram Mini App ---------------------------------------------------------------------

function looksLikeTelegram() {
  let stored = null;
  try { stored = sessionStorage.getItem("__telegram__initParams"); } catch { /* no storage */ }
  return /tgWebApp/.test(location.hash) || Boolean(window.TelegramWebviewProxy) || Boolean(stored && stored.includes("tgWebApp"));
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = reject;
    document.head.append(script);
  });
}

async function telegramApp() {
  // The vendored script is only fetched inside Telegram; plain browsers skip its ~110 kB.
  if (!(window.Telegram && window.Telegram.WebApp) && looksLikeTelegram()) {
    await loadScript("/static/vendor/telegram-web-app.js").catch(() => {});
  }
  const app = window.Telegram && window.Telegram.WebApp;
  return app && app.initData ? app : null;
}

const TG_COLORS = {
  bg_color: "--bg", text_color: "--fg", secondary_bg_color: "--card", hint_color: "--muted",
  button_color: "--accent", button_text_color: "--accent-fg",
};

function applyTelegramTheme() {
  const tg = state.tg;
  const root = document.documentElement;
  root.dataset.theme = tg.colorScheme === "dark" ? "dark" : "light";
  for (const [key, variable] of Object.entries(TG_COLORS)) {
    const value = tg.themeParams && tg.themeParams[key];
    if (value) root.style.setProperty(variable, value);
    else root.style.removeProperty(variable);
  }
}

function setMainButton(section) {
  const button = state.tg && state.tg.MainButton;
  if (!button) return;
  const text = section === "lobby" ? "START A SESSION" : section === "end" ? "PLAY AGAIN" : null;
  state.mainAction = text ? start : null;
  if (text) { button.setText(text); button.show(); } else button.hide();
}

async function telegramLogin() {
  const tg = await telegramApp();
  if (!tg) return false;
  state.tg = tg;
  document.documentElement.classList.add("in-telegram");
  try { tg.ready(); tg.expand(); } catch { /* old clients */ }
  try { if (tg.isVersionAtLeast && tg.isVersionAtLeast("7.7")) tg.disableVerticalSwipes(); } catch { /* old clients */ }
  applyTelegramTheme();
  tg.onEvent("themeChanged", applyTelegramTheme);
  if (tg.MainButton) document.documentElement.classList.add("tg-main");
  if (tg.MainButton) tg.MainButton.onClick(() => state.mainAction && state.mainAction());
  if (tg.BackButton) tg.BackButton.onClick(closeZoom);
  try {
    const r = await api("POST", "/api/auth/telegram", { init_data: tg.initData });
    state.token = r.token;
    storage.set("gap.token", r.token);
    return true;
  } catch (e) {
    const reason = e.status === 401 ? e.message : "the server could not be reached";
    $("tg-status").textContent = `Telegram sign-in failed: ${reason}. You can still play as a guest.`;
    $("tg-status").hidden = false;
    error(`Telegram sign-in failed (${e.status || "network"}).`);
    state.token = null;
    storage.remove("gap.token");
    return false;
  }
}

// --- start-up ------------------------------------------------------------------------------

function wire() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    error("");
    try {
      const r = await api("POST", "/api/auth/guest", { name: $("name").value });
      state.token = r.token;
      storage.set("gap.token", r.token);
      await lobby();
    } catch (e) { error(e.message); }
  });
  $("start").addEventListener("click", start);
  $("again").addEventListener("click", start);
  $("ask-form").addEventListener("submit", ask);
  if ($("hint")) $("hint").addEventListener("click", hint);
  for (const id of ["question", "correction"]) $(id).addEventListener("input", () => checkLength($(id)));
  $("correct").addEventListener("click", () => judge("correct"));
  $("wrong").addEventListener("click", openCorrection);
  $("skip-correction").addEventListener("click", () => judge("wrong", null));
  $("correction-form").addEventListener("submit", (event) => {
    event.preventDefault();
    judge("wrong", $("correction").value.trim() || null);
  });
  $("retry").addEventListener("click", () => { const again = state.retry; error(""); if (again) again(); });
  $("dismiss").addEventListener("click", () => error(""));
  $("help-btn").addEventListener("click", openHelp);
  $("help-ok").addEventListener("click", closeHelp);
  $("theme-btn").addEventListener("click", toggleTheme);
  for (const tab of document.querySelectorAll("#board [data-window]")) {
    tab.addEventListener("click", () => selectBoard(tab.dataset.window));
  }
  document.addEventListener("keydown", onKey);
  window.addEventListener("offline", () => { $("offline").hidden = false; });
  window.addEventListener("online", () => { $("offline").hidden = true; if (state.round && !state.busy) reload().catch(() => {}); });
  document.addEventListener("visibilitychange", () => {
    // Timers sleep with the phone: resync with the server's deadline when the page is back.
    if (document.visibilityState === "visible" && state.round && !state.busy) reload().catch(() => {});
  });
  // Phones open the soft keyboard over the page (only the visual viewport shrinks): while playing,
  // the page takes the visible height, so the picture, the judged answer and the box all stay on
  // screen (times the pinch-zoom scale, so zooming in does not squeeze the layout).
  const viewport = window.visualViewport;
  if (viewport) {
    const fit = () => document.documentElement.style.setProperty("--visible-height", `${viewport.height * viewport.scale}px`);
    viewport.addEventListener("resize", fit);
    fit();
  }
  // The chat shrinks with it: keep its end (the answer being judged) in view.
  new ResizeObserver(() => { $("chat").scrollTop = $("chat").scrollHeight; }).observe($("chat"));
  setupZoom();
  setInterval(tick, 250);
}

async function resume() {
  const id = storage.get("gap.session");
  if (!id) return false;
  try {
    const s = await api("GET", `/api/sessions/${id}`);
    if (s.status !== "active") { storage.remove("gap.session"); return false; }
    state.session = { session_id: s.session_id, images_total: s.images_total };
    renderRound(s.round);
    return true;
  } catch {
    storage.remove("gap.session");
    return false;
  }
}

async function main() {
  state.roundSeconds = Number(document.body.dataset.roundSeconds) || 120;
  state.roundTotal = state.roundSeconds;
  wire();
  $("offline").hidden = navigator.onLine !== false;
  if (!storage.get("gap.onboarded")) openHelp();
  await telegramLogin();
  refreshBoard().catch(() => {});
  if (!state.token) return show("login");
  await enter();
}

async function enter() {
  try {
    await lobby();
    await resume();
  } catch (e) {
    if (!handleAuthLoss(e)) error(e.message, enter);
  }
}

main();
