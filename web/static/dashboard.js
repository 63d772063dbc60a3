// pool web: the pages' live parts. Everything a job says (name, message, log) is put in
// the page as text (textContent), never as HTML: a job's data is its submitter's, not ours.
"use strict";

const readOnly = () => document.body.dataset.readOnly === "yes";

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function bar(progress) {
  const track = el("span", null, "bar");
  const fill = el("span", null, "fill");
  if (typeof progress === "number" && isFinite(progress)) {
    fill.style.width = (Math.min(Math.max(progress, 0), 1) * 100).toFixed(1) + "%";
  }
  track.appendChild(fill);
  return track;
}

async function act(jobId, action, said) {
  const response = await fetch("/api/jobs/" + encodeURIComponent(jobId) + "/" + action,
                               {method: "POST", credentials: "same-origin"});
  let answer = {};
  try { answer = await response.json(); } catch (e) { /* not JSON: the status says it */ }
  if (said) said.textContent = response.ok ? action + ": " + answer.state : (answer.error || response.statusText);
}

function showManager(manager) {
  const node = document.getElementById("manager");
  if (!node || !manager) return;
  node.textContent = manager.running ? (manager.trouble ? "manager: " + manager.trouble
                                        : manager.stopping ? "manager stopping" : "manager serving")
                                     : "no manager serving";
  node.dataset.up = manager.running ? "yes" : "no";
}

// ------------------------------------------------------------------ charts (SVG, drawn here)
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 540, HEIGHT = 120;

function svgEl(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

// Stacked bars, one a point: series is [[values, className], ...], each as long as the others.
function drawBars(svg, series, title) {
  const count = series[0][0].length;
  const totals = series[0][0].map((_, i) => series.reduce((sum, [values]) => sum + values[i], 0));
  const top = Math.max(1, ...totals);
  const width = WIDTH / count;
  svg.replaceChildren(svgEl("title", {}));
  svg.firstChild.textContent = title + " (most " + top + ")";
  for (let i = 0; i < count; i++) {
    let y = HEIGHT;
    for (const [values, className] of series) {
      if (!values[i]) continue;
      const height = values[i] / top * (HEIGHT - 4);
      y -= height;
      svg.appendChild(svgEl("rect", {x: i * width, y: y, width: Math.max(width - 0.5, 0.5), height: height,
                                     class: className}));
    }
  }
}

// A line through points [x from 0 to 1, y from 0 to top].
function drawLine(svg, points, top, title) {
  svg.replaceChildren(svgEl("title", {}));
  svg.firstChild.textContent = title;
  if (!points.length) return;
  const scaled = points.map(([x, y]) => (x * WIDTH).toFixed(1) + "," + (HEIGHT - 2 - y / Math.max(top, 1) * (HEIGHT - 4)).toFixed(1));
  svg.appendChild(svgEl("polyline", {points: scaled.join(" "), class: "line"}));
}

function showCharts(charts) {
  const ended = document.getElementById("chart-ended");
  if (!ended || !charts) return;
  drawBars(ended, [[charts.done, "done"], [charts.failed, "failed"]], "jobs ended a minute, the last three hours");
  const n = charts.depth.length;
  drawLine(document.getElementById("chart-depth"), charts.depth.map((d, i) => [n > 1 ? i / (n - 1) : 1, d]),
           Math.max(1, ...charts.depth), "queue depth, the last three hours (most " + Math.max(0, ...charts.depth) + ")");
}

// ------------------------------------------------------------------ the jobs page
function showCounts(counts) {
  const box = document.getElementById("counts");
  box.replaceChildren();
  for (const [state, n] of Object.entries(counts)) {
    const link = el("a", null, "count state-" + state);
    link.href = "/?state=" + encodeURIComponent(state);
    link.dataset.state = state;
    link.append(el("span", n, "n"), el("span", " " + state));
    box.appendChild(link);
  }
}

function jobRow(job) {
  const tr = el("tr");
  tr.dataset.id = job.id;
  tr.className = "state-" + job.state;
  const id = el("td");
  const link = el("a", job.id);
  link.href = "/jobs/" + encodeURIComponent(job.id);
  id.appendChild(link);
  const progress = el("td", null, "progress");
  progress.append(bar(job.progress), el("span", job.percent, "percent"));
  tr.append(id, el("td", job.name, "name"), el("td", job.group), el("td", job.state_text, "state"), progress,
            el("td", job.rate), el("td", job.eta), el("td", job.elapsed),
            el("td", job.attempt + "/" + job.max_attempts), el("td", job.message, "message"));
  if (!readOnly()) {
    const cell = el("td");
    if (!job.final) {
      const button = el("button", "kill", "kill");
      button.type = "button";
      button.addEventListener("click", () => act(job.id, "kill", null));
      cell.appendChild(button);
    }
    tr.appendChild(cell);
  }
  return tr;
}

function pageLink(page, text) {
  const params = new URLSearchParams(location.search);
  params.set("page", page);
  const link = el("a", text);
  link.href = "/?" + params.toString();
  return link;
}

function showJobs(found) {
  showCounts(found.counts);
  showCharts(found.charts);
  showManager(found.manager);
  document.getElementById("matched").textContent =
    found.matched + " of " + found.total + " jobs, newest first";
  document.querySelector("#jobs tbody").replaceChildren(...found.rows.map(jobRow));
  const nav = document.getElementById("pages");
  nav.replaceChildren();
  if (found.page > 1) nav.appendChild(pageLink(found.page - 1, "newer"));
  nav.appendChild(el("span", " page " + found.page + " of " + found.pages + " "));
  if (found.page < found.pages) nav.appendChild(pageLink(found.page + 1, "older"));
}

// ------------------------------------------------------------------ a job's page
const progressSeen = [];  // [seconds since the page opened, fraction] of each view that came

function showJob(view) {
  const row = view.row;
  showManager(view.manager);
  if (typeof row.progress === "number") {
    progressSeen.push([performance.now() / 1000, row.progress]);
    const first = progressSeen[0][0], span = Math.max(progressSeen[progressSeen.length - 1][0] - first, 1e-3);
    drawLine(document.getElementById("chart-progress"), progressSeen.map(([t, p]) => [(t - first) / span, p]), 1,
             "progress while this page is open");
  }
  document.getElementById("job-name").textContent = row.name;
  const state = document.getElementById("job-state");
  state.textContent = row.state_text;
  state.className = "state state-" + row.state;
  const fill = document.getElementById("job-bar");
  fill.style.width = typeof row.progress === "number" ? (row.progress * 100).toFixed(1) + "%" : "0";
  document.getElementById("job-percent").textContent = row.percent;
  document.getElementById("job-message").textContent = row.message;
  document.getElementById("detail").textContent = view.detail.join("\n");
}

async function submitTask(form, said) {
  const job = {task: form.task.value.trim()};
  try {
    for (const key of ["args", "kwargs"]) {
      if (form[key].value.trim()) job[key] = JSON.parse(form[key].value);
    }
  } catch (e) {
    said.textContent = "args and kwargs are JSON: " + e.message;
    return;
  }
  for (const key of ["name", "group"]) {
    if (form[key].value.trim()) job[key] = form[key].value.trim();
  }
  const response = await fetch("/api/jobs", {method: "POST", credentials: "same-origin",
                                             headers: {"Content-Type": "application/json"}, body: JSON.stringify(job)});
  const answer = await response.json().catch(() => ({}));
  said.replaceChildren();
  if (response.ok) {
    const link = el("a", "submitted " + answer.id);
    link.href = "/jobs/" + encodeURIComponent(answer.id);
    said.appendChild(link);
  } else {
    said.textContent = answer.error || response.statusText;
  }
}

function start() {
  const form = document.getElementById("submit");
  if (form) {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      submitTask(form, document.getElementById("submitted"));
    });
  }
  if (document.getElementById("jobs")) {
    const stream = new EventSource("/api/stream" + location.search);
    stream.addEventListener("jobs", (e) => showJobs(JSON.parse(e.data)));
  }
  const job = document.getElementById("job");
  if (job) {
    const jobId = job.dataset.job;
    const log = document.getElementById("log");
    const stream = new EventSource("/api/jobs/" + encodeURIComponent(jobId) + "/stream");
    // Closed once both its log has ended and its view says it ended: the log may end
    // (the job is final) before the view saying so has come (seen in CI).
    let logEnded = false, jobEnded = false;
    const closeIfDone = () => { if (logEnded && jobEnded) stream.close(); };
    stream.addEventListener("job", (e) => {
      const view = JSON.parse(e.data);
      showJob(view);
      jobEnded = view.row.final;
      closeIfDone();
    });
    stream.addEventListener("log", (e) => {
      const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(document.createTextNode(JSON.parse(e.data)));
      if (follow) log.scrollTop = log.scrollHeight;
    });
    stream.addEventListener("log-end", () => {
      document.getElementById("log-state").textContent = "(ended)";
      logEnded = true;
      closeIfDone();
    });
    for (const button of document.querySelectorAll("#actions button")) {
      button.addEventListener("click", () => act(jobId, button.dataset.action, document.getElementById("action-result")));
    }
  }
}

document.addEventListener("DOMContentLoaded", start);
