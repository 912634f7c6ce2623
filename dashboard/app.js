// The flowmarkd dashboard: polls api/summary (the `dashboard` backend) every few seconds and
// shows its totals, bytes per time bin per experiment as a stacked throughput chart (uPlot),
// the top site pairs and the latest flows. Every number also sits in a data-value attribute
// (exact, unformatted) under a stable id, for tests and scrapers. Text from the collector
// (site and experiment names come from fireflies) is only ever set as textContent.
"use strict";

const POLL_MS = 3000;
const PALETTE = ["#3b6fd8", "#e0833a", "#3aa76d", "#c8443d", "#8b5fc7", "#2aa3b3", "#c79a2b",
                 "#d35fa5", "#6b7a8f", "#7fb13a"];

const $ = (id) => document.getElementById(id);
const exact = (n) => Number(n).toLocaleString("en-US");

function human(n, unit, base = 1000) {
  const prefixes = ["", "k", "M", "G", "T", "P", "E"];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= base && i < prefixes.length - 1) {
    v /= base;
    i += 1;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)} ${prefixes[i]}${unit}`;
}

function setNumber(id, value) {
  const el = $(id);
  el.dataset.value = String(value);
  el.textContent = exact(value);
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  tr.appendChild(td);
  return td;
}

function numberCell(tr, value, text) {
  const td = cell(tr, text === undefined ? exact(value) : text, "num");
  td.dataset.value = String(value);
  return td;
}

function siteCell(tr, site) {
  return site === null ? cell(tr, "—", "none") : cell(tr, site);
}

// ---- throughput chart -------------------------------------------------------------------
let chart = null;
let chartKey = "";
let raw = [];  // bits per second per series, before stacking (for the legend)

function colour(i, alpha) {
  const hex = PALETTE[i % PALETTE.length];
  if (alpha === undefined) return hex;
  const a = Math.round(alpha * 255).toString(16).padStart(2, "0");
  return hex + a;
}

function chartOptions(names) {
  const width = Math.max(400, $("throughput-chart").clientWidth - 16);
  return {
    width,
    height: 300,
    series: [
      {},
      ...names.map((name, i) => ({
        label: name,
        stroke: colour(i),
        width: 1,
        fill: i === 0 ? colour(i, 0.45) : undefined,
        value: (u, v, si, idx) => (idx === null || idx === undefined || raw[si - 1] === undefined
                                       ? "–" : human(raw[si - 1][idx], "bit/s")),
      })),
    ],
    // Series i is the sum of experiments 0..i; each band fills between it and the one below.
    bands: names.slice(1).map((_, i) => ({series: [i + 2, i + 1], fill: colour(i + 1, 0.45)})),
    scales: {y: {range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1]}},
    axes: [{}, {size: 90, values: (u, ticks) => ticks.map((t) => human(t, "bit/s"))}],
  };
}

function drawThroughput(t, windowSeconds) {
  const bins = Math.round(windowSeconds / t.bin_seconds);
  const xs = [];
  for (let i = 0; i < bins; i += 1) xs.push(t.start / 1e6 + i * t.bin_seconds);
  raw = t.series.map((s) => s.bytes.map((b) => (b * 8) / t.bin_seconds));
  const stacked = [];
  let sum = new Array(bins).fill(0);
  for (const r of raw) {
    sum = sum.map((v, i) => v + r[i]);
    stacked.push(sum);
  }
  const names = t.series.map((s) => s.experiment);
  const key = names.join("\u0000");
  if (chart === null || key !== chartKey) {
    if (chart !== null) chart.destroy();
    $("throughput-chart").textContent = "";
    chartKey = key;
    chart = new uPlot(chartOptions(names), [xs, ...stacked], $("throughput-chart"));
  } else {
    chart.setData([xs, ...stacked]);
  }
  const minutes = Math.round(windowSeconds / 60);
  $("throughput-window").textContent =
      `(bit/s, stacked; ${t.bin_seconds} s bins over ${minutes} min)`;
}

// ---- tables -----------------------------------------------------------------------------
function drawPairs(pairs) {
  const body = $("site-pairs");
  body.textContent = "";
  for (const p of pairs) {
    const tr = document.createElement("tr");
    tr.className = "site-pair";
    if (p.other) {
      cell(tr, "(other pairs)", "none");
      cell(tr, "", "none");
    } else {
      siteCell(tr, p.src_site);
      siteCell(tr, p.dst_site);
    }
    numberCell(tr, p.flows).classList.add("flows");
    numberCell(tr, p.bytes).classList.add("bytes");
    body.appendChild(tr);
  }
}

function drawLatest(records) {
  const body = $("latest-flows");
  body.textContent = "";
  for (const r of records) {
    const tr = document.createElement("tr");
    tr.className = "flow";
    cell(tr, r.start_time ? r.start_time.replace("T", " ").slice(0, 19) : "");
    cell(tr, r.state);
    cell(tr, r.protocol);
    const endpoint = (ip, port) => (ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`);
    cell(tr, endpoint(r.src_ip, r.src_port)).classList.add("src");
    cell(tr, endpoint(r.dst_ip, r.dst_port)).classList.add("dst");
    cell(tr, r.experiment === null ? `#${r.experiment_id}` : r.experiment);
    cell(tr, r.activity === null ? `#${r.activity_id}` : r.activity);
    cell(tr, `${r.src_site === null ? "—" : r.src_site} → ${r.dst_site === null ? "—" : r.dst_site}`);
    numberCell(tr, r.volume, human(r.volume, "B")).classList.add("volume");
    numberCell(tr, r.throughput, human(r.throughput * 8, "bit/s")).classList.add("throughput");
    body.appendChild(tr);
  }
}

// ---- polling ----------------------------------------------------------------------------
async function poll() {
  const status = $("status");
  try {
    const response = await fetch("api/summary", {cache: "no-store"});
    if (!response.ok) throw new Error(`api/summary: HTTP ${response.status}`);
    const s = await response.json();
    setNumber("total-flows", s.totals.flows);
    setNumber("total-open-flows", s.totals.open_flows);
    setNumber("total-bytes", s.totals.bytes);
    $("total-bytes-human").textContent = `(${human(s.totals.bytes, "B")})`;
    drawThroughput(s.throughput, s.window_seconds);
    drawPairs(s.site_pairs);
    drawLatest(s.latest);
    status.dataset.state = "ok";
    status.dataset.polls = String(Number(status.dataset.polls) + 1);
    status.textContent = `updated ${new Date(s.now / 1000).toLocaleTimeString()}`;
  } catch (err) {
    status.dataset.state = "error";
    status.textContent = `cannot read the summary: ${err.message}`;
  }
  setTimeout(poll, POLL_MS);
}

poll();
