// The image-creation page: polls GET /builds, tails the chosen build's log, posts requests.
// Only text nodes are written into the page (never HTML), so nothing a build prints can run here.
"use strict";

const $ = (id) => document.getElementById(id);
let selected = null;
let offset = 0;

function cell(row, text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function select(id) {
  if (selected !== id) {
    selected = id;
    offset = 0;
    $("log").textContent = "";
    $("log-id").textContent = id.slice(0, 12);
  }
}

async function refresh() {
  const response = await fetch("/builds", { credentials: "same-origin" });
  if (!response.ok) return;
  const data = await response.json();
  const body = $("builds-body");
  body.textContent = "";
  for (const build of data.builds) {
    const row = document.createElement("tr");
    row.dataset.id = build.id;
    row.dataset.status = build.status;
    const first = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "show";
    button.textContent = build.id.slice(0, 12);
    button.addEventListener("click", () => select(build.id));
    first.appendChild(button);
    row.appendChild(first);
    cell(row, build.definition);
    cell(row, build.status, "status");
    cell(row, build.message);
    cell(row, build.created);
    const download = cell(row, "", "download");
    if (build.download_url) {
      const link = document.createElement("a");
      link.href = build.download_url;
      link.textContent = build.filename;
      download.appendChild(link);
    }
    body.appendChild(row);
  }
  if (!selected && data.builds.length) select(data.builds[0].id);
}

async function tail() {
  if (!selected) return;
  const response = await fetch(`/build/${selected}/logs?offset=${offset}`, { credentials: "same-origin" });
  if (!response.ok) return;
  const text = await response.text();
  offset = Number(response.headers.get("X-Log-Offset") || offset);
  if (text) {
    const log = $("log");
    log.textContent = (log.textContent + text).slice(-65536);
    log.scrollTop = log.scrollHeight;
  }
}

async function submit(body) {
  const response = await fetch("/build", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json();
  if (response.ok) {
    $("outcome").textContent = `requested: ${data.id} (${data.status}${data.attached ? ", shared" : ""})`;
    select(data.id);
  } else {
    $("outcome").textContent = `refused: ${data.detail}`;
  }
  await refresh();
}

function optional(id) {
  const value = $(id).value.trim();
  return value ? value : null;
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button.show")) {
    button.addEventListener("click", () => select(button.dataset.id));
  }
  $("definition-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const choice = $("definition").selectedOptions[0];
    submit({ definition: choice.value, arch: choice.dataset.arch, force: $("force").checked });
  });
  $("workflow-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submit({
      machine: {
        platform: $("platform").value, architecture: $("architecture").value,
        container_engine: $("container_engine").value, mpi: optional("mpi"), gpu: optional("gpu"),
      },
      workflow: $("workflow").value, step_id: $("step_id").value, force: false,
    });
  });
  refresh();
  setInterval(refresh, 2000);
  setInterval(tail, 1000);
});
