// taskcast dashboard: a live view of the hub's log through taskcast's own TypeScript SDK
// (its browser build, served by the hub under /dashboard/sdk/): `subscribe` resumes with
// `since` after any drop, so no row is lost or doubled; `HubClient` sends the commands.
import { HubClient, ResumePoint, subscribe } from "./sdk/index.js";

const MAX_ROWS = 3000;            // rows kept in the feed
const TASK_ROWS = 500;            // rows of the tasks table, in its sort order
const TASKS_PAGE = 1000;          // task summaries per /api/tasks request (its most)
const MAX_TASKS = 50000;          // task summaries loaded at most
const INITIAL_BACKLOG = 2000;     // events replayed on first load
const params = new URLSearchParams(location.search);
const token = params.get("token");
const withToken = (url) => (token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url);
const headers = token ? { Authorization: "Bearer " + token } : {};

const state = {
  lastSeq: null,          // last seq shown; resume point
  seqs: [],               // seqs in the feed, in order (tests read this)
  shownAt: {},            // seq -> time it reached the page (ms since the epoch)
  events: [],             // recent events (bounded)
  tasks: new Map(),       // taskId -> summary (server view, updated live)
  paused: false,
  pending: [],            // events received while paused
  stick: true,            // auto-scroll while the user is at the bottom
  sort: { key: "lastActivity", dir: -1 },
  selected: null,
  timelineSeq: 0,         // last seq shown in the open task's timeline
  perMinute: new Map(),   // minute (ms) -> count
  openedAt: Date.now(),     // requests older than the page are not notified
  requests: new Map(),    // requestId -> an open approval request or question ("Needs you")
  C: null,                // the closed sets, from /dashboard/constants.json (one definition)
};
window.taskcastDashboard = state;

const $ = (id) => document.getElementById(id);
// The closed sets, from /dashboard/constants.json (defined once, in taskcast/vocabulary.py);
// filled in by start() before any event arrives.
let T = {}, S = {};
const feed = $("feed");
// One formatter each, made once: toLocaleString builds a new one per call, and with
// 2,000 tasks in the table that was most of a slow machine's first load.
const timeFormat = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const numberFormat = new Intl.NumberFormat();
// A time an event names, if it is one a clock can show (any publisher may write any
// number there, and one a Date cannot hold used to stop the feed).
const MAX_TIME_MS = 8.64e15;
const validTime = (ms) => (typeof ms === "number" && ms > 0 && ms <= MAX_TIME_MS ? ms : undefined);
const fmtTime = (ms) => (validTime(ms) ? timeFormat.format(ms) : "");
const fmtDuration = (ms) => (ms < 1000 ? ms + " ms" : ms < 60000 ? (ms / 1000).toFixed(1) + " s" : Math.round(ms / 60000) + " min");
const fmtNum = (n) => numberFormat.format(n || 0);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- connection -------------------------------------------------------------

function setStatus(kind, text) {
  const badge = $("status");
  badge.className = "badge " + kind;
  badge.textContent = text;
}

async function start() {
  try {
    state.C = await (await fetch("/dashboard/constants.json")).json();
    T = state.C.eventTypes;
    S = state.C.taskStatuses;
    QUIET_TYPES = new Set([state.C.eventTypes.HISTORY_APPENDED]);
  } catch (err) { /* the needs panel stays hidden without them */ }
  setupNotifications();
  try {
    const reply = await fetch(`/api/tasks?limit=${TASKS_PAGE}`, { headers });
    if (reply.status === 401) {  // the hub requires a token and we have none (or a bad one)
      setStatus("down", "token required: open /?token=…");
      state.needsToken = true;
    } else if (reply.ok) {
      for (const task of await reply.json()) adoptSummary(task);
      renderTasks();
      loadOlderTasks(reply.headers.get("X-Taskcast-Next-Before"));  // not waited for
    }
    // The head is in /healthz only for admin or metrics tokens; otherwise the first
    // `subscribed` reply tells it (see connect).
    const health = await (await fetch("/healthz", { headers })).json();
    if (health.head !== undefined) state.lastSeq = Math.max(0, health.head - INITIAL_BACKLOG);
    const waiting = await fetch("/api/pending", { headers });
    if (waiting.ok) for (const request of await waiting.json()) state.requests.set(request.requestId, request);
    renderNeeds();
  } catch (err) {
    state.lastSeq = null;
  }
  follow();
  pollStats();
  setInterval(pollStats, 2000);
  pollWebhooks();
  setInterval(pollWebhooks, 5000);
  pollRates();
  setInterval(pollRates, 10000);
  renderTasks();
  renderCharts();  // at once, not after the first interval
  // The table is rebuilt only when a task changed: with thousands of tasks a rebuild
  // is a full layout of the page.
  setInterval(() => { if (state.tasksChanged) renderTasks(); renderCharts(); }, 2000);
}

// Every task the token may read, not just the most recent page: the table sorts them
// all. Page after page in the background, up to MAX_TASKS (the most recently active).
async function loadOlderTasks(before) {
  try {
    while (before && state.tasks.size < MAX_TASKS) {
      const reply = await fetch(`/api/tasks?limit=${TASKS_PAGE}&before=${before}`, { headers });
      if (!reply.ok) return;
      for (const task of await reply.json()) adoptSummary(task);
      state.tasksChanged = true;
      before = reply.headers.get("X-Taskcast-Next-Before");
    }
    state.tasksCapped = Boolean(before);
  } catch (err) { /* the table keeps what it has */ }
}

// The hub's summary counts all the task's events up to its lastSeq; what this page
// folded of the task from the events it holds (backlog, live) only some. The summary,
// then those events after it (a live one may be newer than the page the summary came in).
function adoptSummary(task) {
  const seen = state.tasks.get(task.taskId);
  state.tasks.set(task.taskId, task);
  if (seen && (seen.lastSeq || 0) > (task.lastSeq || 0)) {
    for (const event of state.events) {
      if (event.payload && event.payload.taskId === task.taskId) foldIntoTask(event);
    }
  }
}

const wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
const hub = new HubClient(location.origin, token ? { token } : {});

// The live feed: the SDK's subscribe, from the last seq shown (or the recent backlog
// before the head on first load), resumed by itself after every drop.
async function follow() {
  const point = new ResumePoint(state.lastSeq);
  const feed = subscribe(wsUrl, "tasks.>", {
    since: point,
    backlog: INITIAL_BACKLOG,
    token: token || undefined,
    onSubscribed: (frame) => { if (state.loadedAt === undefined) state.loadedAt = frame.head; },
    onStatus: (status) => {
      if (status === "subscribed") setStatus("live", "live");
      else if (status !== "closed") {
        setStatus(status === "connecting" ? "connecting" : "down",
          state.needsToken ? "token required: open /?token=…" : status === "connecting" ? "connecting…" : "reconnecting…");
      }
    },
  });
  for await (const frame of feed) {
    state.lastSeq = frame.seq;
    receive(frame);
  }
}

async function pollStats() {
  try {
    const health = await (await fetch("/healthz", { headers })).json();
    const known = health.head !== undefined;  // details need an admin or metrics token
    $("stat-publishers").textContent = known ? fmtNum(health.publishers) : "–";
    $("stat-subscribers").textContent = known ? fmtNum(health.subscribers) : "–";
    $("stat-tasks").textContent = fmtNum(Math.max(health.tasks || 0, state.tasks.size));
    $("stat-head").textContent = fmtNum(Math.max(health.head || 0, state.lastSeq || 0));
  } catch (err) { /* the websocket shows the connection state */ }
}

// The events-per-minute chart counts the hub's whole log (GET /api/stats), not just what
// this page has loaded; live events move the current minute between two polls.
async function pollRates() {
  try {
    const reply = await fetch("/api/stats?bucket=minute&buckets=60", { headers });
    if (!reply.ok) return;
    const stats = await reply.json();
    state.perMinute = new Map(stats.buckets.map((b) => [b.start, b.total]));
    state.ratesSince = stats.from;
    $("chart-range").textContent = `${fmtTime(stats.from)}–${fmtTime(stats.until)}, whole log`;
    renderCharts();
  } catch (err) { /* next poll */ }
}

async function pollWebhooks() {
  try {
    if (state.webhooksRefused) return;
    const reply = await fetch("/api/webhooks", { headers });
    if (!reply.ok) { state.webhooksRefused = reply.status === 403; return; }  // admin only
    const hooks = await reply.json();
    $("webhooks-panel").hidden = hooks.length === 0;
    $("webhooks").tBodies[0].replaceChildren(...hooks.map((h) => {
      const tr = el("tr");
      tr.dataset.webhook = h.id;
      const url = el("td", "", h.url);
      url.title = `${h.channel}${h.types.length ? " · " + h.types.join(", ") : ""}`;
      const state = el("td", "status s-" + (h.state === "active" ? (h.lastError && h.failingSince ? "failed" : "completed") : "failed"), h.state);
      state.title = h.lastError || "";
      tr.append(url, state, el("td", "num", "lag " + fmtNum(h.lag)), el("td", "num", fmtNum(h.delivered) + " sent"));
      return tr;
    }));
  } catch (err) { /* shown again at the next poll */ }
}

// --- events -------------------------------------------------------------------

// Event types for followers, not for reading (from /dashboard/constants.json).
let QUIET_TYPES = new Set();

function receive(event) {
  if (QUIET_TYPES.has(event.type)) return;  // lastSeq already moved past it
  state.shownAt[event.seq] = Date.now();
  state.events.push(event);
  if (state.events.length > MAX_ROWS) state.events.shift();
  foldIntoTask(event);
  trackRequests(event);
  $("stat-head").textContent = fmtNum(event.seq);
  $("stat-tasks").textContent = fmtNum(state.tasks.size);
  if (isLive(event)) {
    const minute = Math.floor(Date.now() / 60000) * 60000;
    state.perMinute.set(minute, (state.perMinute.get(minute) || 0) + 1);
  }
  addFilterOption($("filter-type"), event.type);
  if (event.payload && event.payload.taskId) addFilterOption($("filter-task"), event.payload.taskId);
  if (state.selected && event.payload && event.payload.taskId === state.selected
      && event.seq > state.timelineSeq) {
    state.timelineSeq = event.seq;
    $("timeline").append(timelineItem(event));
  }
  if (state.paused) state.pending.push(event);
  else showRow(event);
}

// Published after the page loaded, not part of the backlog it replayed first.
const isLive = (event) => state.loadedAt !== undefined && event.seq > state.loadedAt;

function foldIntoTask(event) {
  const p = event.payload || {};
  if (!p.taskId) return;
  // An event without a time of its own happened now if it is live; one from the
  // backlog happened at some time before the page: it moves no clock.
  const now = validTime(p.timestamp) ?? (isLive(event) ? Date.now() : undefined);
  let t = state.tasks.get(p.taskId);
  if (!t) {
    t = { taskId: p.taskId, status: S.ACTIVE, apiActions: 0, toolCalls: 0, toolFailures: 0,
          inputTokens: 0, outputTokens: 0, startedAt: now, lastActivity: now, durationMs: 0, endedAt: null };
    state.tasks.set(p.taskId, t);
  }
  if (event.seq <= (t.lastSeq || 0)) return; // the server summary already counts it
  state.tasksChanged = true;
  t.lastSeq = event.seq;
  if (now !== undefined) {
    t.lastActivity = Math.max(t.lastActivity || 0, now);
    t.startedAt = Math.min(t.startedAt ?? now, now);
  }
  // As summaries.py: anything published for a lost task means a runner is at it again.
  if (t.status === S.LOST && event.type !== T.RUNNER_LOST) t.status = S.RUNNING;
  switch (event.type) {
    case T.RUNNER_LOST:
      if (!Object.values(state.C.finalStatuses).includes(t.status)) t.status = S.LOST;
      break;
    case T.TASK_STARTED: t.status = S.RUNNING; t.model = p.model; t.provider = p.provider; t.prompt = t.prompt || p.prompt; break;
    case T.API_ACTION: t.apiActions += 1; break;
    case T.LLM_USAGE: t.inputTokens += p.inputTokens || 0; t.outputTokens += p.outputTokens || 0; break;
    case T.TOOL_EXECUTED: t.toolCalls += 1; if (p.success === false) t.toolFailures += 1; break;
    case T.TASK_COMPLETED: case T.TASK_FAILED: case T.TASK_ABORTED:
      t.status = state.C.finalStatuses[event.type]; t.endedAt = now ?? null; t.result = p.result; t.error = p.error; break;
  }
  const until = t.endedAt ?? t.lastActivity;
  t.durationMs = until !== undefined && t.startedAt !== undefined ? Math.max(0, until - t.startedAt) : 0;
}

function describe(event) {
  const p = event.payload || {};
  switch (event.type) {
    case T.API_ACTION: return p.message || "";
    case T.TOOL_EXECUTED:
      return `${p.tool ?? "?"}(${p.arguments || ""}) ${p.success ? "ok" : "FAILED"} · ${p.durationMs ?? "?"} ms\n${p.output || ""}`;
    case T.LLM_USAGE:
      return `${p.provider ?? "?"}/${p.model ?? "?"} · ${p.inputTokens ?? 0} in · ${p.outputTokens ?? 0} out · ${p.latencyMs ?? "?"} ms`;
    case T.TASK_STARTED: return `${p.provider ?? "?"}/${p.model ?? "?"}: ${p.prompt || ""}`;
    case T.TASK_COMPLETED: return p.result || "";
    case T.TASK_FAILED: return p.error || "";
    case T.TASK_ABORTED: return `aborted by ${p.by || "?"}${p.reason ? ": " + p.reason : ""}`;
    case T.API_RETRY: return `retry ${p.attempt}: ${p.error}`;
    case T.RUNNER_LOST:
      return `runner ${p.holder || "?"} stopped renewing its lease (after #${p.lastSeq}); resume it: ${resumeCommand(p.taskId)}`;
    case T.APPROVAL_REQUESTED: return `wants to run ${p.tool}(${p.summary || ""})`;
    case T.APPROVAL_RESOLVED:
      return `${p.decision === "approve" ? "approved" : "denied"} by ${p.by}${p.reason ? " (" + p.reason + ")" : ""}`;
    case T.QUESTION_ASKED: return p.question + (p.options ? "  [" + p.options.join(" / ") + "]" : "");
    case T.QUESTION_ANSWERED: return `answered by ${p.by}: ${p.answer ?? "(no answer)"}`;
    case T.USER_MESSAGE: return `${p.by}: ${p.text}`;
    case T.COMMAND_REJECTED: return `${p.action} from ${p.by} rejected: ${p.reason}`;
    default: return JSON.stringify(p);
  }
}

function matchesFilters(event) {
  const task = $("filter-task").value, type = $("filter-type").value;
  const text = $("filter-text").value.trim().toLowerCase();
  const p = event.payload || {};
  if (task && p.taskId !== task) return false;
  if (type && event.type !== type) return false;
  if (text && !(describe(event) + " " + (p.taskId || "")).toLowerCase().includes(text)) return false;
  return true;
}

function feedRow(event) {
  const p = event.payload || {};
  const row = el("div", "row t-" + event.type);
  row.dataset.seq = event.seq;
  if (event.type === T.TOOL_EXECUTED && p.success === false) row.classList.add("failed");
  row.append(el("span", "seq", "#" + event.seq), el("span", "time", fmtTime(p.timestamp)));
  const task = el("span", "task", p.taskId || event.channel);
  task.title = p.taskId || "";
  if (p.taskId) task.onclick = () => openTask(p.taskId);
  row.append(task, el("span", "type", event.type));
  const msg = el("span", "msg", describe(event));
  if (msg.textContent.length > 240 || msg.textContent.split("\n").length > 3) {
    msg.classList.add("folded");
    msg.title = "click to expand";
    msg.onclick = () => msg.classList.toggle("folded");
  }
  row.append(msg);
  return row;
}

function showRow(event) {
  state.seqs.push(event.seq);
  if (!matchesFilters(event)) return updateCount();
  feed.append(feedRow(event));
  while (feed.childElementCount > MAX_ROWS) feed.firstElementChild.remove();
  if (state.stick) scheduleScroll();
  else $("jump").hidden = false;
  updateCount();
}

// Scrolling reads the layout: at most every 200 ms, not once per event or frame (a
// 2,000-event backlog used to take seconds of forced layouts and repaints of the tail;
// measured at 4x CPU throttle, 5,000 events: live after 8.4-13.4 s per frame, 5.3-8.6 s).
let scrollPending = false;
function scheduleScroll() {
  if (scrollPending) return;
  scrollPending = true;
  setTimeout(() => requestAnimationFrame(() => {
    scrollPending = false;
    if (state.stick) feed.scrollTop = feed.scrollHeight;
  }), 200);
}

function updateCount() {
  const waiting = state.pending.length ? ` · ${state.pending.length} waiting (paused)` : "";
  $("feed-count").textContent = `${fmtNum(state.seqs.length)} events${waiting}`;
}

function rerenderFeed() {
  feed.replaceChildren(...state.events.filter(matchesFilters).map(feedRow));
  feed.scrollTop = feed.scrollHeight;
}

const optionsShown = new WeakMap();  // select -> Set of values (no scan per event)
function addFilterOption(select, value) {
  if (!optionsShown.has(select)) optionsShown.set(select, new Set([...select.options].map((o) => o.value)));
  const shown = optionsShown.get(select);
  if (!value || shown.has(value)) return;
  shown.add(value);
  select.append(new Option(value.length > 24 ? value.slice(0, 24) + "…" : value, value));
}

// --- tasks ----------------------------------------------------------------------

function renderTasks() {
  state.tasksChanged = false;
  const { key, dir } = state.sort;
  const tasks = [...state.tasks.values()].sort((a, b) => {
    const x = a[key] ?? "", y = b[key] ?? "";
    return (x < y ? -1 : x > y ? 1 : 0) * dir;
  });
  const body = document.querySelector("#tasks tbody");
  // Past a few hundred rows a table is not read but scrolled, and each rebuild lays out
  // every row: the first TASK_ROWS in the chosen order are shown, the count says so.
  const known = fmtNum(tasks.length) + (state.tasksCapped ? "+ (the most recently active)" : "");
  $("tasks-shown").textContent = tasks.length > TASK_ROWS
    ? `${fmtNum(TASK_ROWS)} of ${known} shown, sort to see others` : "";
  body.replaceChildren(...tasks.slice(0, TASK_ROWS).map((t) => {
    const tr = el("tr");
    tr.dataset.task = t.taskId;
    // A task is shown by what it was asked (its prompt), its id in the tooltip.
    const title = (t.prompt || "").replace(/\s+/g, " ").trim() || t.taskId;
    const id = el("td", "title", title.length > 48 ? title.slice(0, 48) + "…" : title);
    id.title = `${t.taskId}\n${t.prompt || ""}`;
    tr.append(id, el("td", "status s-" + t.status, t.status),
      el("td", "num", fmtNum(t.apiActions)), el("td", "num", fmtNum(t.inputTokens)),
      el("td", "num", fmtNum(t.outputTokens)), el("td", "num", fmtDuration(t.durationMs || 0)),
      el("td", "num", fmtTime(t.lastActivity)));
    tr.onclick = () => openTask(t.taskId);
    return tr;
  }));
}

async function openTask(taskId) {
  state.selected = taskId;
  const panel = $("detail");
  panel.hidden = false;
  $("detail-title").textContent = "Task " + taskId;
  const timeline = $("timeline");
  timeline.replaceChildren();
  state.timelineSeq = 0;
  let since = 0, task = null;
  for (;;) {
    const reply = await (await fetch(withToken(`/api/tasks/${encodeURIComponent(taskId)}?since=${since}&limit=1000`), { headers })).json();
    if (!reply.task) break;
    task = reply.task;
    for (const event of reply.events) {
      if (event.seq <= state.timelineSeq || QUIET_TYPES.has(event.type)) continue;
      state.timelineSeq = event.seq;
      timeline.append(timelineItem(event));
    }
    if (reply.events.length < 1000) break;
    since = reply.nextSince;
  }
  const t = state.tasks.get(taskId) || task || {};
  $("detail-actions").hidden = t.status !== S.RUNNING;
  showLost(t);
  $("action-error").textContent = "";
  const summary = $("detail-summary");
  summary.replaceChildren();
  for (const [label, value] of [["status", t.status], ["API actions", fmtNum(t.apiActions)],
    ["tool calls", `${fmtNum(t.toolCalls)} (${fmtNum(t.toolFailures)} failed)`],
    ["tokens in", fmtNum(t.inputTokens)], ["tokens out", fmtNum(t.outputTokens)],
    ["duration", fmtDuration(t.durationMs || 0)], ["model", t.model || "–"]]) {
    const box = el("div");
    box.append(el("dt", "", label), el("dd", "", value));
    summary.append(box);
  }
}

// The command that continues a task whose runner was lost, on another machine.
function resumeCommand(taskId) {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  return `taskcast run - --resume ${taskId} --hub ${scheme}${location.host}/ws`;
}

function showLost(t) {
  const box = $("detail-lost");
  box.hidden = t.status !== S.LOST;
  if (!box.hidden) $("resume-command").textContent = resumeCommand(t.taskId);
}

function timelineItem(event) {
  const p = event.payload || {};
  const li = el("li", "t-" + event.type);
  li.dataset.seq = event.seq;
  if (event.type === T.TOOL_EXECUTED && p.success === false) li.classList.add("failed");
  li.append(el("span", "when", fmtTime(p.timestamp) + " · #" + event.seq + " "), el("span", "what", event.type));
  li.append(el("div", "body", describe(event)));
  return li;
}

// --- needs you: approvals and questions, answered from here ------------------------

function trackRequests(event) {
  const C = state.C;
  if (!C) return;
  const p = event.payload || {};
  const E = C.remoteEvents;
  if (event.type === E.APPROVAL_REQUESTED || event.type === E.QUESTION_ASKED) {
    if (state.requests.has(p.requestId)) return;
    const kind = event.type === E.APPROVAL_REQUESTED ? C.requestKinds.APPROVAL : C.requestKinds.QUESTION;
    const request = { ...p, kind, seq: event.seq, requestedAt: p.timestamp };
    state.requests.set(p.requestId, request);
    notify(request);
  } else if (event.type === E.APPROVAL_RESOLVED || event.type === E.QUESTION_ANSWERED) {
    state.requests.delete(p.requestId);
  } else if ([C.eventTypes.TASK_COMPLETED, C.eventTypes.TASK_FAILED, C.eventTypes.TASK_ABORTED].includes(event.type)) {
    for (const [id, request] of state.requests) if (request.taskId === p.taskId) state.requests.delete(id);
    if (state.selected === p.taskId) $("detail-actions").hidden = true;
  } else {
    return;
  }
  renderNeeds();
}

function renderNeeds() {
  const requests = [...state.requests.values()].sort((a, b) => a.seq - b.seq);
  $("needs-panel").hidden = requests.length === 0;
  $("needs-count").textContent = requests.length ? `(${requests.length})` : "";
  const list = $("needs");
  const shown = new Set();
  for (const request of requests) {
    shown.add(request.requestId);
    if (!list.querySelector(`[data-request="${CSS.escape(request.requestId)}"]`)) list.append(requestCard(request));
  }
  for (const card of [...list.children]) if (!shown.has(card.dataset.request)) card.remove();
}

function requestCard(request) {
  const C = state.C;
  const card = el("div", "request");
  card.dataset.request = request.requestId;
  card.dataset.task = request.taskId;
  const head = el("div", "head");
  const task = el("span", "task", request.taskId);
  task.onclick = () => openTask(request.taskId);
  head.append(task, el("span", "tool", request.kind === C.requestKinds.APPROVAL ? request.tool : "question"));
  card.append(head);
  const error = el("span", "error");
  if (request.kind === C.requestKinds.APPROVAL) {
    const view = argumentsView(request);
    card.append(view);
    if (request.arguments === undefined && request.seq) {  // large: the listing left them out
      fetch(withToken(`/api/events?since=${request.seq - 1}&until=${request.seq}`), { headers })
        .then((r) => r.json())
        .then(([event]) => {
          if (!event || !event.payload) return;
          request.arguments = event.payload.arguments;
          request.argumentsTruncated = event.payload.argumentsTruncated;
          view.replaceWith(argumentsView(request));
        })
        .catch(() => {});
    }
    const reason = el("input");
    reason.placeholder = "reason (optional)";
    const approve = el("button", "approve", "Approve");
    const deny = el("button", "deny", "Deny");
    approve.onclick = () => sendCommand(request.taskId, { action: C.commandActions.APPROVE, requestId: request.requestId }, error);
    deny.onclick = () => sendCommand(request.taskId, { action: C.commandActions.DENY, requestId: request.requestId,
                                                       ...(reason.value ? { reason: reason.value } : {}) }, error);
    const buttons = el("div", "buttons");
    buttons.append(approve, deny, reason);
    card.append(buttons);
  } else {
    card.append(el("div", "question", request.question || ""));
    const buttons = el("div", "buttons");
    const answer = el("input");
    answer.placeholder = "your answer";
    const send = el("button", "approve", "Reply");
    const reply = (text) => sendCommand(request.taskId, { action: C.commandActions.REPLY, requestId: request.requestId, text }, error);
    for (const option of request.options || []) {
      const choice = el("button", "", option);
      choice.onclick = () => reply(option);
      buttons.append(choice);
    }
    send.onclick = () => { if (answer.value.trim()) reply(answer.value); };
    buttons.append(answer, send);
    card.append(buttons);
  }
  card.append(error);
  return card;
}

function argumentsView(request) {
  const a = request.arguments || {};
  const pre = el("pre");
  const lines = (text, cls, mark) => String(text ?? "").split("\n").forEach((line) => pre.append(el("span", cls, mark + line + "\n")));
  if (request.argumentsTruncated) {
    pre.append(el("span", "del", `(arguments too large to show whole: see event #${request.seq} and the task's files)\n`));
  }
  if (request.arguments === undefined) {
    pre.append(el("span", "", request.summary || ""));
  } else if (request.tool === "write_to_file") {
    pre.append(el("span", "", `${a.path} (whole new content)\n`));
    lines(a.content, "add", "+ ");
  } else if (request.tool === "replace_in_file") {
    pre.append(el("span", "", `${a.path}${a.all ? " (every occurrence)" : ""}\n`));
    lines(a.search, "del", "- ");
    lines(a.replace, "add", "+ ");
  } else if (request.tool === "execute_command") {
    pre.append(el("span", "", "$ " + (a.command || "")));
  } else {
    pre.textContent = JSON.stringify(a, null, 2);
  }
  return pre;
}

async function sendCommand(taskId, body, error) {
  error.textContent = "";
  const { action, ...fields } = body;
  try {
    await hub.command(taskId, action, fields);
    return true;
  } catch (err) {
    error.textContent = err.name === "HubError" ? `${err.status}: ${err.body.message || "refused"}` : "the hub cannot be reached";
    return false;
  }
}

function setupNotifications() {
  if (!("Notification" in window) || Notification.permission !== "default") return;
  const button = $("notify");
  button.hidden = false;
  button.onclick = async () => { await Notification.requestPermission(); button.hidden = true; };
}

function notify(request) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  if ((request.requestedAt || 0) < state.openedAt) return; // only what arrives while the page is open
  const what = request.kind === state.C.requestKinds.APPROVAL ? `${request.tool}: ${request.summary || ""}` : request.question;
  new Notification(`taskcast: ${request.taskId} needs you`, { body: what, tag: request.requestId });
}

$("say").onclick = async () => {
  const text = $("say-text").value.trim();
  if (!text || !state.selected) return;
  if (await sendCommand(state.selected, { action: state.C.commandActions.MESSAGE, text }, $("action-error"))) $("say-text").value = "";
};
$("abort").onclick = () => {
  if (state.selected) sendCommand(state.selected, { action: state.C.commandActions.ABORT, reason: "aborted from the dashboard" }, $("action-error"));
};

// --- charts -----------------------------------------------------------------------

let rateChart = null;
function renderCharts() {
  const now = Math.floor(Date.now() / 60000) * 60000;
  const xs = [], ys = [];
  for (let m = now - 59 * 60000; m <= now; m += 60000) { xs.push(m / 1000); ys.push(state.perMinute.get(m) || 0); }
  const box = $("chart-rate");
  if (!rateChart && window.uPlot) {
    rateChart = new uPlot({
      width: box.clientWidth || 400, height: 150, legend: { show: false },
      series: [{}, { label: "events/min", stroke: "#4fb3ff", fill: "#4fb3ff33", width: 2 }],
      axes: [{ stroke: "#8593a3", grid: { stroke: "#263040" } }, { stroke: "#8593a3", grid: { stroke: "#263040" } }],
    }, [xs, ys], box);
    new ResizeObserver(() => rateChart.setSize({ width: box.clientWidth, height: 150 })).observe(box);
  } else if (rateChart) {
    rateChart.setData([xs, ys]);
  }
  const tasks = [...state.tasks.values()].map((t) => ({ id: t.taskId, total: (t.inputTokens || 0) + (t.outputTokens || 0) }))
    .filter((t) => t.total > 0).sort((a, b) => b.total - a.total).slice(0, 15);
  const max = Math.max(1, ...tasks.map((t) => t.total));
  $("chart-tokens").replaceChildren(...tasks.map((t) => {
    const bar = el("div", "bar");
    const fill = el("div", "fill");
    fill.style.width = (100 * t.total / max).toFixed(1) + "%";
    const track = el("div");
    track.append(fill);
    bar.append(el("span", "label", t.id), track, el("span", "num", fmtNum(t.total)));
    bar.title = t.id;
    return bar;
  }));
}

// --- controls -------------------------------------------------------------------------

$("pause").onclick = () => {
  state.paused = !state.paused;
  $("pause").setAttribute("aria-pressed", String(state.paused));
  $("pause").textContent = state.paused ? "Resume" : "Pause";
  if (!state.paused) {
    const waiting = state.pending;
    state.pending = [];
    waiting.forEach(showRow);
  }
  updateCount();
};
// The feed stops following only when the user scrolls it: a scroll event also comes
// after the page's own scroll while a backlog goes on growing the feed (and as rows
// scrolled into view take their real height), where "not at the bottom" is no intent.
// Only then is the layout read: a read after rows were added lays the page out once
// more per frame (most of a slow machine's time following a backlog).
let userScrolledAt = -Infinity, pointerHeld = false;
for (const type of ["wheel", "touchmove", "keydown", "pointerdown"]) {
  feed.addEventListener(type, () => { userScrolledAt = performance.now(); }, { passive: true });
}
feed.addEventListener("pointerdown", () => { pointerHeld = true; });  // a scrollbar drag
window.addEventListener("pointerup", () => { pointerHeld = false; });
feed.addEventListener("scroll", () => {
  if (!pointerHeld && performance.now() - userScrolledAt >= 1000) return;  // not the user's
  state.stick = feed.scrollTop + feed.clientHeight >= feed.scrollHeight - 8;
  if (state.stick) $("jump").hidden = true;
});
$("jump").onclick = () => { state.stick = true; feed.scrollTop = feed.scrollHeight; $("jump").hidden = true; };
for (const id of ["filter-task", "filter-type"]) $(id).onchange = rerenderFeed;
$("filter-text").oninput = rerenderFeed;
$("detail-close").onclick = () => { $("detail").hidden = true; state.selected = null; };
document.querySelectorAll("#tasks th").forEach((th) => {
  th.onclick = () => {
    const key = th.dataset.sort;
    state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : -1 };
    document.querySelectorAll("#tasks th").forEach((h) => h.classList.remove("sorted", "asc", "desc"));
    th.classList.add("sorted", state.sort.dir > 0 ? "asc" : "desc");
    renderTasks();
  };
});

start();
