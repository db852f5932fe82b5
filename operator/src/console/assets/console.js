// The imagewarden web console: plain JavaScript over the status API (/api/v1/...), with
// the user's Kubernetes token kept in this tab's sessionStorage. Text from the API is
// only ever set as text, never parsed as HTML.
"use strict";

const TOKEN_KEY = "imagewarden.token";
const CLASSES = [
  ["SystemVulnerability", "System vulnerabilities", "systemVulnerabilities"],
  ["ApplicationVulnerability", "Application vulnerabilities", "applicationVulnerabilities"],
  ["BaselineRisk", "Baseline risks", "baselineRisks"],
  ["MaliciousSample", "Malicious samples", "maliciousSamples"],
];
const SEVERITIES = ["Critical", "High", "Medium", "Low", "Unknown"];
let refresh = null;

class ApiError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, options = {}) {
  const response = await fetch(path, {
    method: options.method || "GET",
    headers: Object.assign({ Authorization: "Bearer " + token() },
      options.body ? { "Content-Type": "application/json" } : {}),
    body: options.body ? JSON.stringify(options.body) : undefined,
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.message || response.statusText);
  return body;
}

// el("td", {class: "x"}, "text", child, ...): children are nodes or text.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function link(href, text) { return el("a", { href }, text); }
function ns(parts) { return parts.map(encodeURIComponent).join("/"); }

function severity(s) {
  return el("span", { class: "sev sev-" + (s || "none") }, s || "none");
}

function bar(counts) {
  const total = SEVERITIES.reduce((n, s) => n + (counts[s.toLowerCase()] || 0), 0);
  const label = SEVERITIES.map((s) => `${counts[s.toLowerCase()] || 0} ${s.toLowerCase()}`).join(", ");
  const node = el("div", { class: "bar", role: "img", "aria-label": label, title: label });
  if (total > 0) {
    for (const s of SEVERITIES) {
      const n = counts[s.toLowerCase()] || 0;
      if (n === 0) continue;
      const part = el("span", { class: s });
      part.style.width = `${(100 * n) / total}%`; // CSSOM: allowed by the page's CSP
      node.append(part);
    }
  }
  return node;
}

function table(caption, headers, rows) {
  return el("table", {},
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: headers.length }, "Nothing here."))));
}

function say(text) { document.getElementById("status").textContent = text; }

function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes);
}

function progress(t) {
  return `${t.phase}: ${t.succeeded + t.failed}/${t.total}` +
    (t.failed ? `, ${t.failed} failed` : "") + (t.retrying ? `, ${t.retrying} retrying` : "");
}

function taskRows(items) {
  return items.map((t) => el("tr", {},
    el("td", {}, link(`#/task/${ns([t.namespace, t.name])}`, t.name)),
    el("td", {}, t.namespace), el("td", {}, t.rule || ""), el("td", {}, t.trigger),
    el("td", { class: "progress" }, progress(t)), el("td", {}, t.created || "")));
}

// "+2 critical, −1 high": how database updates changed the findings of re-matched images.
function trendText(t) {
  if (!t) return "—";
  const parts = SEVERITIES.map((s) => [s.toLowerCase(), t[s.toLowerCase()] || 0])
    .filter(([, n]) => n !== 0)
    .map(([s, n]) => `${n > 0 ? "+" : "\u2212"}${Math.abs(n)} ${s}`);
  return `${parts.length ? parts.join(", ") : "no change"} (${t.images} image${t.images === 1 ? "" : "s"})`;
}

function totalTrend(items) {
  const trends = items.map((r) => r.trend).filter(Boolean);
  if (!trends.length) return null;
  const sum = { images: 0 };
  for (const t of trends) {
    sum.images += t.images;
    for (const s of SEVERITIES) sum[s.toLowerCase()] = (sum[s.toLowerCase()] || 0) + (t[s.toLowerCase()] || 0);
  }
  return sum;
}

const TASK_HEADERS = ["Task", "Namespace", "Rule", "Trigger", "Progress", "Created"];

async function overview() {
  const [repos, tasks] = await Promise.all([
    api("/api/v1/repositories?limit=500"),
    api("/api/v1/scantasks?limit=10").catch((e) => (e.code === 403 ? { items: [] } : Promise.reject(e))),
  ]);
  show(
    el("h1", {}, "Repositories"),
    el("p", { id: "trend" }, `Since the last database update: ${trendText(totalTrend(repos.items))}`),
    table(`Repositories by worst severity (${repos.total})`,
      ["Repository", "Namespace", "Worst", "Findings", "Since the database update", "Digests", "Tags", "Last scanned"],
      repos.items.map((r) => el("tr", {},
        el("td", {}, link(`#/repo/${ns([r.namespace, r.registry, r.repository])}`, `${r.registry}/${r.repository}`)),
        el("td", {}, r.namespace), el("td", {}, severity(r.worst)), el("td", {}, bar(r.counts)),
        el("td", { class: "trend" }, trendText(r.trend)),
        el("td", {}, r.digests), el("td", {}, r.tags), el("td", {}, r.lastScanned || "")))),
    el("h2", {}, "Latest tasks"),
    table("Latest tasks", TASK_HEADERS, taskRows(tasks.items)));
}

async function tasksPage() {
  const tasks = await api("/api/v1/scantasks?limit=200");
  show(el("h1", {}, "Tasks"), table(`Tasks (${tasks.total})`, TASK_HEADERS, taskRows(tasks.items)));
  refresh = setTimeout(route, 2000);
}

async function taskPage(namespace, name) {
  const t = await api(`/api/v1/namespaces/${ns([namespace, "scantasks", name])}`);
  show(
    el("h1", {}, `Task ${t.name}`),
    el("p", { id: "task-progress", class: "progress" }, progress(t)),
    table("Images", ["Image", "Phase", "Attempts", "Result", "Message"],
      t.images.items.map((i) => el("tr", {},
        el("td", {}, i.image), el("td", {}, i.phase), el("td", {}, i.attempts || 0),
        el("td", {}, i.resultName ? link(`#/image/${ns([namespace, i.resultName])}`, i.resultName) : ""),
        el("td", {}, i.message || "")))));
  if (t.phase !== "Completed" && t.phase !== "Failed") refresh = setTimeout(route, 1000);
}

async function rulesPage() {
  const rules = await api("/api/v1/scanrules?limit=500");
  show(el("h1", {}, "Rules"), table(`Rules (${rules.total})`,
    ["Rule", "Namespace", "Registry", "Scope", "Tag filter", "Last task", ""],
    rules.items.map((r) => el("tr", {},
      el("td", {}, r.name), el("td", {}, r.namespace), el("td", {}, r.registry), el("td", {}, r.scope),
      el("td", {}, r.tagFilter),
      el("td", {}, r.lastTask ? link(`#/task/${ns([r.namespace, r.lastTask.name])}`, progress(r.lastTask)) : "none"),
      el("td", {}, el("button", {
        type: "button", "aria-label": `Scan rule ${r.name} now`,
        onclick: () => act(`/api/v1/namespaces/${ns([r.namespace, "scanrules", r.name])}/scan`, {}, () => `Scan of ${r.name} requested`),
      }, "Scan now"))))));
}

async function repoPage(namespace, registry, repository) {
  const q = new URLSearchParams({ namespace, registry, repository, limit: "500" });
  const tags = await api(`/api/v1/tags?${q}`);
  show(el("h1", {}, `${registry}/${repository}`),
    table(`Tags (${tags.total})`, ["Tag", "Digest", "Worst", "Findings", "Scanned"],
      tags.items.map((t) => el("tr", {},
        el("td", {}, link(`#/image/${ns([namespace, t.result.name])}`, t.tag || "(untagged)")),
        el("td", {}, el("code", {}, t.result.digest.slice(0, 19))), el("td", {}, severity(t.result.worst)),
        el("td", {}, bar(t.result.summary)), el("td", {}, t.result.scannedAt || "")))));
}

async function act(path, body, done) {
  try {
    const answer = await api(path, { method: "POST", body });
    say(done(answer));
    return answer;
  } catch (e) {
    if (e.code === 401) return logout(e.message);
    say(`Refused (${e.code}): ${e.message}`);
    return null;
  }
}

async function watchTask(namespace, name, node) {
  for (;;) {
    const t = await api(`/api/v1/namespaces/${ns([namespace, "scantasks", name])}`);
    node.textContent = `Task ${name}: ${progress(t)}`;
    if (t.phase === "Completed" || t.phase === "Failed") return t;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function fixSummary(f) {
  const parts = [`Fix ${f.name}: ${f.phase}`];
  if (f.plan.length) parts.push(`${f.plan.length} upgrade(s)`);
  if (f.unfixable.length) parts.push(`${f.unfixable.length} unfixable`);
  if (f.pushed) parts.push(`pushed ${f.pushed}`);
  if (f.verification) parts.push(`${f.verification.fixed.length} fixed, ${f.verification.remaining.length} remaining`);
  if (f.message) parts.push(f.message);
  return parts.join(" · ");
}

async function watchFix(namespace, name, node) {
  for (;;) {
    const f = await api(`/api/v1/namespaces/${ns([namespace, "imagefixes", name])}`);
    node.textContent = fixSummary(f);
    if (f.finished) return f;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function imagePage(namespace, name, selected) {
  const base = `/api/v1/namespaces/${ns([namespace, "imagescanresults", name])}`;
  const r = await api(`${base}?limit=1`);
  const current = CLASSES.find((c) => c[0] === selected) || CLASSES[0];
  const findings = await api(`${base}?class=${current[0]}&limit=500`);
  const taskLine = el("p", { id: "scan-progress", role: "status" });
  const fixLine = el("p", { id: "fix-progress", role: "status" });
  const tag = r.tags[0];
  const tabs = el("div", { role: "tablist", "aria-label": "Finding classes" }, CLASSES.map(([cls, label, key]) => {
    const counts = r.summary[key] || {};
    const n = SEVERITIES.reduce((s, v) => s + (counts[v.toLowerCase()] || 0), 0);
    return el("button", {
      type: "button", role: "tab", id: `tab-${cls}`, "aria-controls": "findings",
      "aria-selected": cls === current[0] ? "true" : "false", tabindex: cls === current[0] ? "0" : "-1",
      onclick: () => { location.hash = `#/image/${ns([namespace, name, cls])}`; },
      onkeydown: (e) => {
        const i = CLASSES.findIndex((c) => c[0] === cls);
        const next = e.key === "ArrowRight" ? i + 1 : e.key === "ArrowLeft" ? i - 1 : null;
        if (next === null) return;
        e.preventDefault();
        location.hash = `#/image/${ns([namespace, name, CLASSES[(next + CLASSES.length) % CLASSES.length][0]])}`;
      },
    }, `${label} (${n})`);
  }));
  show(
    el("h1", {}, `${r.registry}/${r.repository}`),
    el("p", {}, `Tags: ${r.tags.join(", ") || "none"} · digest `, el("code", {}, r.digest),
      ` · ${r.os || "unknown OS"} · scanned ${r.scannedAt || "never"} · database `, el("code", {}, (r.database || "").slice(0, 19))),
    el("p", {}, "Worst: ", severity(r.worst), " ", bar(r.summary)),
    r.previous ? el("p", { id: "previous" }, "Before the database update (", el("code", {}, r.previous.databaseVersion.slice(0, 19)), "): ",
      SEVERITIES.map((s) => `${r.previous.totals[s.toLowerCase()] || 0} ${s.toLowerCase()}`).join(", ")) : null,
    el("div", { class: "actions" },
      el("button", {
        type: "button", id: "scan", disabled: !tag,
        onclick: async () => {
          const answer = await act(`/api/v1/namespaces/${encodeURIComponent(namespace)}/scans`,
            { registry: r.registry, repository: r.repository, tag }, (a) => `Task ${a.task} created`);
          if (answer) watchTask(namespace, answer.task, taskLine).catch((e) => say(e.message));
        },
      }, tag ? `Scan ${tag} now` : "Scan (no tag)"),
      el("button", {
        type: "button", id: "fix",
        onclick: async () => {
          const answer = await act(`${base}/fix`, {},
            (a) => (a.created ? `Fix ${a.fix} created` : `Fix ${a.fix} exists already`));
          if (answer) watchFix(namespace, answer.fix, fixLine).catch((e) => say(e.message));
        },
      }, "Fix")),
    taskLine,
    fixLine,
    tabs,
    el("div", { id: "findings", role: "tabpanel", "aria-labelledby": `tab-${current[0]}` },
      table(`${current[1]} (${findings.findings.total})`,
        ["Severity", "ID", "Package", "Installed", "Fixed in", "Score", "Details"],
        findings.findings.items.map((f) => el("tr", {},
          el("td", {}, severity(f.severity)),
          el("td", {}, f.link && /^https?:\/\//.test(f.link) ? el("a", { href: f.link, rel: "noreferrer noopener", target: "_blank" }, f.id) : f.id),
          el("td", {}, f.package || ""), el("td", {}, f.version || ""), el("td", {}, f.fixedVersion || ""),
          el("td", {}, f.score != null ? `${f.score}${f.severitySource ? " (" + f.severitySource + ")" : ""}` : ""),
          el("td", {}, [f.title, f.location].filter(Boolean).join(" — ")))))));
  if (selected) document.getElementById(`tab-${current[0]}`).focus();
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  start(message);
}

async function route() {
  clearTimeout(refresh);
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  try {
    switch (parts[0]) {
      case undefined: return await overview();
      case "tasks": return await tasksPage();
      case "task": return await taskPage(parts[1], parts[2]);
      case "rules": return await rulesPage();
      case "repo": return await repoPage(parts[1], parts[2], parts.slice(3).join("/"));
      case "image": return await imagePage(parts[1], parts[2], parts[3]);
      default: return show(el("p", {}, "No such page."));
    }
  } catch (e) {
    if (e.code === 401) return logout(e.message);
    show(el("p", { class: "error", role: "alert" }, e.code === 403 ? `Forbidden: ${e.message}` : `Error: ${e.message}`));
  }
}

function start(message) {
  const loggedIn = !!token();
  document.getElementById("login").hidden = loggedIn;
  document.getElementById("logout").hidden = !loggedIn;
  document.getElementById("view").hidden = !loggedIn;
  document.getElementById("login-error").textContent = message || "";
  if (loggedIn) route();
  else document.getElementById("token").focus();
}

document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  start();
});
document.getElementById("logout").addEventListener("click", () => logout());
window.addEventListener("hashchange", route);
start();
