// codex-limits accounts dashboard: vanilla JS, no build step.
// Data comes from the admin API (same origin, session cookie); rows update from the
// server-sent events of /api/events. Nothing here polls the server: the only timer
// re-renders the countdown texts from data already on the page.
"use strict";

(() => {
  const SOON_SECONDS = 3 * 86400;

  const state = {
    csrf: null,
    accounts: new Map(), // accountId -> AccountSummary
    order: [],
    busy: new Set(), // accountIds with a refresh running
    source: null,
    forecasts: new Map(), // accountId -> WindowForecast[] (accountPool/forecast)
    news: 0, // how many `account` events have arrived
    newsAt: new Map(), // accountId -> the `news` count of its latest `account` event
  };

  const $ = (selector, root = document) => root.querySelector(selector);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  // -- formatting -------------------------------------------------------------------------

  const now = () => Date.now() / 1000;

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return "under a minute";
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d > 0) return h > 0 ? `${d} d ${h} h` : `${d} d`;
    if (h > 0) return m > 0 ? `${h} h ${m} min` : `${h} h`;
    return `${m} min`;
  }

  function absolute(ts) {
    return new Date(ts * 1000).toLocaleString(undefined, {
      weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    });
  }

  function windowName(mins) {
    if (mins === 300) return "5-hour";
    if (mins === 10080) return "Weekly";
    if (mins === 1440) return "Daily";
    if (mins === null || mins === undefined) return "Usage";
    if (mins % 1440 === 0) return `${mins / 1440}-day`;
    if (mins % 60 === 0) return `${mins / 60}-hour`;
    return `${mins}-minute`;
  }

  const STATUS_TEXT = {
    active: "Active",
    rateLimited: "Rate limited",
    reauthRequired: "Needs sign-in",
    unsupported: "Resets not supported",
    unavailable: "Unavailable",
  };

  function reasonText(summary) {
    const reason = summary.resetAction.disabledReason;
    switch (reason) {
      case null: return "";
      case "noCredit": return "Cannot apply: no saved reset available.";
      case "reauthRequired":
        return summary.error
          ? "Cannot apply: this account must sign in again (see above)."
          : `Cannot apply: this account must sign in again: run CODEX_HOME=${summary.codexHome} codex login`;
      case "unsupported": return "Cannot apply: upstream cannot apply resets for this account.";
      case "unavailable": return "Cannot apply: the account could not be read just now. Try Refresh.";
      case "pendingApply":
        return "Cannot apply: an earlier apply’s outcome is unknown. Settle it with `codex-limits apply` first.";
      default: return `Cannot apply (${reason}).`;
    }
  }

  // What applying would do now, as `codex-limits status` says it (resetAction.readiness; worked out
  // from the windows for a server that does not send it).
  const READINESS_TEXT = {
    exhausted: "Ready: a window is used up.",
    available: "Available — nothing is used up yet.",
  };

  function readinessOf(summary) {
    const action = summary.resetAction;
    if (!action.enabled) return null;
    if (action.readiness) return action.readiness;
    return windowsOf(summary).some((w) => w.used >= 100) ? "exhausted" : "available";
  }

  const OUTCOME_TEXT = {
    reset: "Reset applied: one saved reset was consumed and the usage windows were reset.",
    nothingToReset: "Nothing to reset: upstream found no window eligible for a reset.",
    noCredit: "No saved reset was available, so nothing was applied.",
    alreadyRedeemed: "This apply had already completed earlier.",
  };

  // -- windows (usage bars) ---------------------------------------------------------------

  function windowsOf(summary) {
    const rows = [];
    const main = summary.rateLimits;
    const byId = summary.rateLimitsByLimitId || {};
    const snapshots = [];
    if (main) snapshots.push([main, null, main.limitId || "codex"]);
    for (const [limitId, snap] of Object.entries(byId)) {
      if (main && limitId === main.limitId) continue;
      snapshots.push([snap, snap.limitName || limitId, limitId]);
    }
    for (const [snap, prefix, limitId] of snapshots) {
      for (const [slot, w] of [["primary", snap.primary], ["secondary", snap.secondary]]) {
        if (!w) continue;
        const name = windowName(w.windowDurationMins);
        rows.push({ name: prefix ? `${prefix} · ${name}` : name, used: w.usedPercent, resetsAt: w.resetsAt, limitId, slot });
      }
    }
    return rows;
  }

  function renderWindows(list, summary) {
    list.replaceChildren();
    const rows = windowsOf(summary);
    if (rows.length === 0) {
      list.append(el("li", { class: "muted", text: summary.status === "reauthRequired"
        ? "No usage data until the account signs in again." : "No usage data." }));
      return;
    }
    for (const row of rows) {
      const used = Math.max(0, Math.min(100, row.used));
      const level = used >= 100 ? "full" : used >= 80 ? "high" : "ok";
      const fill = el("span", { class: `fill ${level}` });
      fill.style.width = `${used}%`; // CSSOM, allowed by the CSP (no inline style attribute)
      const bar = el("div", {
        class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
        "aria-valuenow": used, "aria-label": `${row.name} window used`,
      }, fill);
      const countdown = row.resetsAt
        ? el("span", { class: "countdown", "data-reset-at": row.resetsAt, title: absolute(row.resetsAt) })
        : el("span", { class: "countdown muted", text: "no reset time" });
      list.append(el("li", { class: "window" },
        el("div", { class: "window-head" },
          el("span", { class: "window-name", text: row.name }),
          el("span", { class: `percent ${level}`, text: `${row.used}% used` })),
        bar,
        countdown,
        forecastNode(summary.accountId, row)));
    }
    updateCountdowns(list);
  }

  // -- forecasts (accountPool/forecast, from the recorded usage history) ---------------------

  function forecastNode(accountId, row) {
    const forecasts = state.forecasts.get(accountId);
    if (!forecasts) return null;
    const f = forecasts.find((x) => x.limitId === row.limitId && x.window === row.slot);
    if (!f || f.status === "tooLittleHistory") {
      return el("p", { class: "forecast muted", text: "Too little history to forecast yet." });
    }
    if (f.status === "exhausted") return null; // the bar and the percentage say it
    const rate = `${Number(f.burnRatePerHour.toFixed(2))} %/h`;
    if (f.status === "notGrowing") return el("p", { class: "forecast", text: `${rate}: not running out at this rate.` });
    const node = el("p", { class: f.runsOutBeforeReset ? "forecast runs-out" : "forecast" }, `${rate}: `,
      el("span", { "data-runs-out-at": f.runsOutAt, title: absolute(f.runsOutAt) }));
    node.append(f.runsOutBeforeReset ? " — before it resets" : " — after it resets (fine)");
    return node;
  }

  let forecastTimer = null;
  function scheduleForecasts() {
    if (forecastTimer !== null) clearTimeout(forecastTimer);
    forecastTimer = setTimeout(() => {
      forecastTimer = null;
      loadForecasts();
    }, 1000);
  }

  async function loadForecasts() {
    try {
      const data = await api("GET", "/api/forecasts");
      state.forecasts = new Map(data.accounts.map((a) => [a.accountId, a.windows]));
      for (const summary of state.accounts.values()) renderRow(summary);
    } catch (err) {
      // While the service is away the link says so, and every row's forecast is re-read when it is back.
      if (err instanceof SignedOut || ["serviceUnavailable", "network"].includes(err.code)) return;
      showAlert(`Could not load the forecasts: ${err.message}`);
    }
  }

  function updateCountdowns(root = document) {
    for (const node of root.querySelectorAll("[data-reset-at]")) {
      const at = Number(node.dataset.resetAt);
      node.textContent = at > now() ? `resets in ${duration(at - now())}` : "reset time passed; refresh";
    }
    for (const node of root.querySelectorAll("[data-expires-at]")) {
      const at = Number(node.dataset.expiresAt);
      node.textContent = at > now() ? `expires in ${duration(at - now())}` : "expired";
    }
    for (const node of root.querySelectorAll("[data-runs-out-at]")) {
      const at = Number(node.dataset.runsOutAt);
      node.textContent = at > now() ? `runs out in ${duration(at - now())}` : "runs out about now";
    }
  }

  // -- the pool-wide inventory of saved resets (header) -------------------------------------
  // Every available saved reset of every account, earliest expiry first (never-expiring last), as
  // accountPool/resetCredits/list orders it; built from the summaries on the page, so it stays live.

  function renderInventory() {
    const credits = [];
    const unlisted = [];
    for (const id of state.order) {
      const summary = state.accounts.get(id);
      if (!summary) continue;
      const rc = summary.resetCredits;
      const listed = ((rc && rc.credits) || []).filter((c) => c.status === "available");
      for (const c of listed) credits.push({ accountId: summary.accountId, label: summary.label || summary.accountId, ...c });
      if (!rc || rc.availableCount > listed.length) unlisted.push(summary.label || summary.accountId);
    }
    const order = (a, b) =>
      (a.expiresAt === null) - (b.expiresAt === null) || (a.expiresAt || 0) - (b.expiresAt || 0)
      || (a.accountId < b.accountId ? -1 : a.accountId > b.accountId ? 1 : 0)
      || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    credits.sort(order);
    const list = $("#inventory-list");
    list.replaceChildren();
    for (const c of credits) {
      const expiry = c.expiresAt === null
        ? el("span", { class: "muted", text: "never expires" })
        : el("span", { "data-expires-at": c.expiresAt });
      const when = c.expiresAt === null ? "" : absolute(c.expiresAt);
      list.append(el("li", { class: "inventory-credit", "data-account-id": c.accountId, "data-credit-id": c.id },
        el("span", { class: "inventory-account", text: c.label }), " · ",
        el("span", { class: "inventory-title", text: c.title || "Saved reset" }), " · ",
        expiry, when ? " " : null, when ? el("time", { datetime: new Date(c.expiresAt * 1000).toISOString(), text: `(${when})` }) : null));
    }
    $("#inventory-total").textContent = credits.length === 1 ? "1 saved reset" : `${credits.length} saved resets`;
    $("#inventory-empty").hidden = credits.length > 0;
    const note = $("#inventory-unlisted");
    note.textContent = unlisted.length ? `Not all listed (count only or not readable): ${unlisted.join(", ")}.` : "";
    note.hidden = unlisted.length === 0;
    $("#inventory").hidden = false;
    updateCountdowns($("#inventory"));
  }

  // -- account rows -----------------------------------------------------------------------

  function rowId(accountId) {
    return `account-${accountId.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  }

  function renderCredits(node, summary) {
    const count = $(".reset-count", node);
    const list = $(".credits", node);
    list.replaceChildren();
    const rc = summary.resetCredits;
    if (!rc) {
      count.textContent = summary.status === "reauthRequired" ? "Unknown until the account signs in again." : "Unknown.";
      count.className = "reset-count muted";
      return;
    }
    count.textContent = rc.availableCount === 1 ? "1 saved reset available" : `${rc.availableCount} saved resets available`;
    count.className = rc.availableCount > 0 ? "reset-count available" : "reset-count none";
    for (const credit of rc.credits || []) {
      if (credit.status !== "available") continue;
      const nearest = credit.expiresAt !== null && credit.expiresAt === rc.nearestExpiresAt;
      const soon = nearest && credit.expiresAt - now() < SOON_SECONDS;
      const item = el("li", { class: soon ? "credit soon" : "credit" },
        el("span", { class: "credit-title", text: credit.title || "Saved reset" }), " ");
      if (credit.expiresAt === null) {
        item.append(el("span", { class: "muted", text: "never expires" }));
      } else {
        item.append(el("span", { "data-expires-at": credit.expiresAt, title: absolute(credit.expiresAt) }));
        if (soon) item.append(" ", el("strong", { class: "badge soon-badge", text: "Expires soon" }));
      }
      list.append(item);
    }
  }

  function renderRow(summary) {
    const id = rowId(summary.accountId);
    let node = document.getElementById(id);
    if (!node) {
      node = $("#account-template").content.firstElementChild.cloneNode(true);
      node.id = id;
      node.dataset.accountId = summary.accountId;
      $(".refresh", node).addEventListener("click", () => refreshAccount(summary.accountId));
      $(".apply", node).addEventListener("click", () => openApply(summary.accountId));
    }
    $(".label", node).textContent = summary.label || summary.accountId;
    $(".email", node).textContent = summary.email || "no email known";
    $(".plan", node).textContent = summary.planType ? `Plan: ${summary.planType}` : "Plan unknown";
    const status = $(".status", node);
    status.textContent = STATUS_TEXT[summary.status] || summary.status;
    status.className = `badge status status-${summary.status}`;
    const error = $(".account-error", node);
    error.textContent = summary.error ? summary.error.message : "";
    error.hidden = !summary.error;
    renderWindows($(".windows", node), summary);
    renderCredits(node, summary);

    const apply = $(".apply", node);
    const reason = $(".reason", node);
    const reasonId = `${id}-reason`;
    reason.id = reasonId;
    apply.disabled = !summary.resetAction.enabled;
    reason.textContent = reasonText(summary);
    reason.hidden = summary.resetAction.enabled;
    const readiness = $(".readiness", node);
    const readinessId = `${id}-readiness`;
    const ready = readinessOf(summary);
    readiness.id = readinessId;
    readiness.textContent = ready ? READINESS_TEXT[ready] || ready : "";
    readiness.className = ready ? `readiness readiness-${ready}` : "readiness";
    readiness.hidden = !ready;
    apply.setAttribute("aria-describedby", summary.resetAction.enabled ? readinessId : reasonId);
    apply.setAttribute("aria-label", `Apply a saved reset to ${summary.label}`);
    const refresh = $(".refresh", node);
    refresh.setAttribute("aria-label", `Refresh ${summary.label}`);
    refresh.disabled = state.busy.has(summary.accountId);
    refresh.textContent = state.busy.has(summary.accountId) ? "Refreshing…" : "Refresh";
    $(".updated", node).textContent = summary.refreshedAt ? `Read ${new Date(summary.refreshedAt * 1000).toLocaleTimeString()}` : "";
    node.classList.toggle("needs-signin", summary.status === "reauthRequired");
    updateCountdowns(node);
    return node;
  }

  function upsert(summary) {
    const known = state.accounts.get(summary.accountId);
    state.accounts.set(summary.accountId, summary);
    if (!state.order.includes(summary.accountId)) state.order.push(summary.accountId);
    const node = renderRow(summary);
    if (!node.isConnected) $("#accounts").append(node);
    renderInventory();
    return known;
  }

  // Whether an `account` event for `accountId` arrived after `asked` (the `news` count when a request was
  // made). Then the event is as new as that request's answer or newer (an apply by another client that
  // landed meanwhile, say), and showing the answer would bring back a saved reset already spent; any later
  // change comes as an event too.
  function heardSince(accountId, asked) {
    return (state.newsAt.get(accountId) || 0) > asked;
  }

  // `asked`: the `news` count when the list was requested.
  function renderAll(list, asked) {
    state.order = list.map((s) => s.accountId);
    const ids = new Set(state.order);
    for (const node of [...$("#accounts").children]) {
      if (!ids.has(node.dataset.accountId)) node.remove();
    }
    for (const summary of list) {
      if (!heardSince(summary.accountId, asked)) upsert(summary);
    }
    for (const id of state.order) $("#accounts").append(document.getElementById(rowId(id)));
    $("#accounts-loading").hidden = true;
    renderInventory();
  }

  // -- history ----------------------------------------------------------------------------

  const HISTORY_RESULT = { pending: "Pending (outcome unknown)", failed: "Failed" };
  const HISTORY_OUTCOME = {
    reset: "Reset applied", nothingToReset: "Nothing to reset", noCredit: "No saved reset", alreadyRedeemed: "Already applied",
  };

  function renderHistory(entries) {
    const body = $("#history tbody");
    body.replaceChildren();
    $("#history").hidden = entries.length === 0;
    $("#history-empty").hidden = entries.length > 0;
    for (const e of entries) {
      const label = state.accounts.get(e.accountId)?.label || e.accountId;
      const result = e.status === "finished"
        ? HISTORY_OUTCOME[e.outcome] || e.outcome || "Finished"
        : HISTORY_RESULT[e.status] || e.status;
      const counts = e.availableBefore === null && e.availableAfter === null
        ? "—" : `${e.availableBefore ?? "?"} → ${e.availableAfter ?? "?"}`;
      body.append(el("tr", {},
        el("td", { text: absolute(e.startedAt) }),
        el("td", { text: label }),
        el("td", { text: e.error ? `${result}: ${e.error}` : result }),
        el("td", { text: counts }),
        el("td", { class: "wide-only key", text: e.idempotencyKey })));
    }
  }

  let historyTimer = null;
  function scheduleHistory() {
    if (historyTimer !== null) clearTimeout(historyTimer);
    historyTimer = setTimeout(() => {
      historyTimer = null;
      loadHistory();
    }, 300);
  }

  async function loadHistory() {
    try {
      const data = await api("GET", "/api/history?limit=50");
      renderHistory(data.entries);
    } catch (err) {
      if (!(err instanceof SignedOut)) showAlert(`Could not load the history: ${err.message}`);
    }
  }

  // -- the API ----------------------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  class SignedOut extends Error {}

  async function api(method, path, { body, headers } = {}) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json", ...(headers || {}) } };
    if (method !== "GET") init.headers["X-CSRF-Token"] = state.csrf || "";
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiFailure(0, "network", "the dashboard is not reachable");
    }
    if (response.status === 401) {
      showSignedOut();
      throw new SignedOut("signed out");
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (data && data.error) || { code: "unknown", message: `HTTP ${response.status}` };
      throw new ApiFailure(response.status, error.code, error.message, error);
    }
    return data;
  }

  function showAlert(text, severity = "warning") {
    const box = $("#alerts");
    const item = el("p", { class: `alert alert-${severity}` }, el("span", { text }));
    const close = el("button", { type: "button", class: "link", text: "Dismiss" });
    close.addEventListener("click", () => item.remove());
    item.append(" ", close);
    box.append(item);
    while (box.children.length > 4) box.firstElementChild.remove();
  }

  function showSignedOut() {
    $("#signed-out").hidden = false;
    $("#accounts-section").hidden = true;
    $("#history-section").hidden = true;
    $("#inventory").hidden = true;
    $("#refresh-all").disabled = true;
    $("#connection").textContent = "Not signed in";
    if (state.source) state.source.close();
  }

  async function loadAccounts(maxAge) {
    const query = maxAge === undefined ? "" : `?maxAgeSeconds=${maxAge}`;
    const asked = state.news;
    const data = await api("GET", `/api/accounts${query}`);
    renderAll(data.accounts, asked);
  }

  async function refreshAccount(accountId) {
    state.busy.add(accountId);
    const current = state.accounts.get(accountId);
    if (current) renderRow(current);
    try {
      const asked = state.news;
      const read = await api("POST", `/api/accounts/${encodeURIComponent(accountId)}/refresh`);
      if (!heardSince(accountId, asked)) upsert(read); // an event since: this read's own, or newer
    } catch (err) {
      if (!(err instanceof SignedOut)) showAlert(`Refresh of ${current ? current.label : accountId} failed: ${err.message}`);
    } finally {
      state.busy.delete(accountId);
      const latest = state.accounts.get(accountId);
      if (latest) renderRow(latest);
    }
  }

  async function refreshAll() {
    const button = $("#refresh-all");
    button.disabled = true;
    button.textContent = "Refreshing…";
    try {
      await loadAccounts(); // no maxAgeSeconds: every account is read now (never spends anything)
    } catch (err) {
      if (!(err instanceof SignedOut)) showAlert(`Refresh failed: ${err.message}`);
    } finally {
      button.disabled = false;
      button.textContent = "Refresh all";
    }
  }

  // -- the apply dialog -------------------------------------------------------------------

  const dialog = {
    accountId: null,
    key: null,
    busy: false,
  };

  function openApply(accountId) {
    const summary = state.accounts.get(accountId);
    if (!summary || !summary.resetAction.enabled) return;
    dialog.accountId = accountId;
    dialog.key = crypto.randomUUID(); // one logical apply: a retry from this dialog re-sends the same key
    dialog.busy = false;
    $("#apply-title").textContent = `Apply a saved reset to ${summary.label}?`;
    $("#apply-account").textContent =
      `Account ${summary.accountId}${summary.email ? ` · ${summary.email}` : ""}${summary.planType ? ` · ${summary.planType}` : ""}`;

    const options = $("#apply-credit-options");
    options.replaceChildren();
    const credits = ((summary.resetCredits && summary.resetCredits.credits) || []).filter((c) => c.status === "available");
    $("#apply-credits").hidden = credits.length === 0;
    credits.forEach((credit, index) => {
      const id = `apply-credit-${index}`;
      const input = el("input", { type: "radio", name: "credit", id, value: credit.id, checked: index === 0 });
      const expiry = credit.expiresAt === null ? "never expires" : `expires ${absolute(credit.expiresAt)}`;
      options.append(el("div", { class: "credit-option" }, input,
        el("label", { for: id, text: `${credit.title || "Saved reset"} — ${expiry}` })));
    });

    renderWindows($("#apply-windows"), summary);
    const exhausted = windowsOf(summary).some((w) => w.used >= 100);
    $("#apply-not-exhausted").hidden = exhausted;
    $("#apply-warning").textContent =
      `Applying consumes one saved reset on ${summary.label} and cannot be undone.`;
    $("#apply-error").textContent = "";
    $("#apply-confirm").hidden = false;
    $("#apply-result").hidden = true;
    setSubmitBusy(false);
    $("#apply-dialog").showModal();
    $("#apply-cancel").focus();
  }

  function setSubmitBusy(busy) {
    dialog.busy = busy;
    const submit = $("#apply-submit");
    submit.disabled = busy;
    submit.textContent = busy ? "Applying…" : "Apply reset";
    $("#apply-cancel").disabled = busy;
  }

  function selectedCredit() {
    const checked = $("#apply-credit-options input[name=credit]:checked");
    return checked ? checked.value : null;
  }

  async function submitApply() {
    if (dialog.busy || !dialog.accountId) return;
    const accountId = dialog.accountId;
    setSubmitBusy(true);
    $("#apply-error").textContent = "";
    try {
      const body = {};
      const credit = selectedCredit();
      if (credit) body.creditId = credit;
      const result = await api("POST", `/api/accounts/${encodeURIComponent(accountId)}/usage-reset/apply`, {
        body, headers: { "Idempotency-Key": dialog.key },
      });
      showResult(result);
      if (result.after) upsert(result.after);
      loadHistory();
    } catch (err) {
      if (err instanceof SignedOut) {
        $("#apply-dialog").close();
        return;
      }
      const retry = ["timeout", "serviceUnavailable", "network", "upstreamError"].includes(err.code);
      $("#apply-error").textContent = retry
        ? `${err.message}. You can press Apply reset again: it re-sends the same request and never spends twice.`
        : err.message;
      setSubmitBusy(false);
      if (!retry) $("#apply-submit").disabled = true;
      $("#apply-cancel").focus();
    }
  }

  function countOf(summary) {
    return summary && summary.resetCredits ? String(summary.resetCredits.availableCount) : "unknown";
  }

  function showResult(result) {
    const before = result.before;
    const after = result.after;
    let text = OUTCOME_TEXT[result.outcome] || `Outcome: ${result.outcome}.`;
    if (result.replayed) text += " (The recorded result of an earlier request with the same key.)";
    if (!after) text += " The account could not be read afterwards; press Refresh on its row.";
    $("#apply-outcome").textContent = text;
    const body = $("#apply-before-after tbody");
    body.replaceChildren();
    const row = (name, a, b) => body.append(el("tr", {}, el("th", { scope: "row", text: name }),
      el("td", { text: a }), el("td", { text: b })));
    row("Saved resets", countOf(before), after ? countOf(after) : "unknown");
    row("Status", STATUS_TEXT[before.status] || before.status, after ? STATUS_TEXT[after.status] || after.status : "unknown");
    const afterWindows = after ? windowsOf(after) : [];
    for (const w of windowsOf(before)) {
      const match = afterWindows.find((x) => x.name === w.name);
      row(`${w.name} used`, `${w.used}%`, match ? `${match.used}%` : "unknown");
    }
    const label = state.accounts.get(dialog.accountId)?.label || dialog.accountId;
    $("#apply-title").textContent = result.outcome === "reset" ? `Saved reset applied to ${label}` : `Apply on ${label}: done`;
    $("#apply-confirm").hidden = true;
    $("#apply-result").hidden = false;
    dialog.busy = false;
    $("#apply-close").focus();
  }

  // -- live updates -----------------------------------------------------------------------

  function showLink(up, text) {
    $("#connection").textContent = up ? "Live" : text || "Reconnecting to the service…";
    $("#connection").className = up ? "connection live" : "connection down reconnecting";
  }

  async function catchUp() {
    try {
      await loadAccounts(60); // on every (re)connection: catch up on what was missed
      $("#refresh-all").disabled = false;
      await loadHistory();
      await loadForecasts();
    } catch (err) {
      if (err instanceof SignedOut) return;
      if (err.code === "serviceUnavailable") {
        showLink(false); // the `service` event that follows says so too; the list is re-read when it is back
      } else {
        showAlert(`Could not load the accounts: ${err.message}`);
      }
    }
  }

  function connectEvents() {
    const source = new EventSource("/api/events");
    state.source = source;
    source.addEventListener("ready", (event) => {
      const data = JSON.parse(event.data || "{}");
      if (data.service === "reconnecting") {
        showLink(false); // the list is re-read on the `service` event that says it is back
        return;
      }
      showLink(true);
      catchUp();
    });
    // The dashboard's link to the codex-limits service went down (it stopped or restarts) or is back.
    source.addEventListener("service", (event) => {
      const data = JSON.parse(event.data);
      if (data.service === "connected") {
        showLink(true);
        catchUp();
      } else {
        showLink(false, "Reconnecting to the service…");
      }
    });
    source.addEventListener("account", (event) => {
      const summary = JSON.parse(event.data);
      state.news += 1;
      state.newsAt.set(summary.accountId, state.news);
      upsert(summary);
      scheduleForecasts(); // a read adds a usage sample: the burn rate may have moved
      // Any read may follow an apply (even one that changed nothing, such as nothingToReset, made by
      // another client): re-read the history once the burst of updates has passed.
      scheduleHistory();
    });
    source.addEventListener("alert", (event) => {
      const data = JSON.parse(event.data);
      const alert = data.alert || data; // the notification's params are {alert: AccountPoolAlert}
      showAlert(alert.message || JSON.stringify(alert), ["info", "warning", "critical"].includes(alert.severity)
        ? alert.severity : "warning");
    });
    source.addEventListener("error", async () => {
      $("#connection").textContent = "Reconnecting…";
      $("#connection").className = "connection down";
      if (source.readyState === EventSource.CLOSED) {
        // A refused stream (signed out, or too many streams): find out which.
        try {
          await api("GET", "/api/session");
          setTimeout(connectEvents, 3000);
        } catch (err) {
          if (!(err instanceof SignedOut)) setTimeout(connectEvents, 3000);
        }
      }
    });
  }

  async function start() {
    $("#refresh-all").addEventListener("click", refreshAll);
    $("#apply-submit").addEventListener("click", submitApply);
    $("#apply-dialog").addEventListener("cancel", (event) => {
      if (dialog.busy) event.preventDefault(); // Escape does not abandon a running apply
    });
    $("#apply-dialog").addEventListener("close", () => {
      // `close` is queued: when the dialog was opened again meanwhile, this event belongs to the old one.
      if ($("#apply-dialog").open) return;
      const id = dialog.accountId;
      dialog.accountId = null;
      const row = id && document.getElementById(rowId(id));
      const target = row && ($(".apply", row).disabled ? $(".refresh", row) : $(".apply", row));
      if (target) target.focus();
    });
    try {
      const session = await api("GET", "/api/session");
      state.csrf = session.csrfToken;
    } catch (err) {
      if (!(err instanceof SignedOut)) {
        $("#connection").textContent = `Cannot reach the dashboard: ${err.message}`;
      }
      return;
    }
    $("#accounts-section").hidden = false;
    $("#history-section").hidden = false;
    connectEvents();
    setInterval(() => updateCountdowns(), 30000);
  }

  start();
})();
