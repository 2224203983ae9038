// The actor runtime, live: nodes, this node's actors (lease, mailbox), its recent transfers,
// recoveries and restarts, every lease, and the counters and histograms of /metrics.
// Polled every few seconds while the view is open.

import { api } from "./api.js";
import { errorBox, h, replace } from "./dom.js";
import { histogram, parsePrometheus, sampleValue } from "./metrics.js";

const EVERY_MS = 2000;
const KEEP = 90; // samples kept for the activity chart (three minutes at one per 2 s)

export function runtimeView(main) {
  const summary = h("div", { class: "stats" });
  const chart = h("div", { class: "chart-wrap" });
  const nodes = h("div");
  const actors = h("div");
  const events = h("div");
  const leases = h("div");
  const mailbox = h("div");
  const problem = h("div", { "aria-live": "assertive" });
  const pause = h("button", { type: "button", "aria-pressed": "false", onclick: toggle }, "Pause updates");
  const updated = h("span", { class: "meta" });
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, "Runtime"), h("div", { class: "actions" }, updated, pause)),
    problem,
    h("section", { "aria-labelledby": "rt-node" }, h("h2", { id: "rt-node" }, "This node"), summary),
    h("section", { "aria-labelledby": "rt-activity" }, h("h2", { id: "rt-activity" }, "Activity"), chart),
    h("section", { "aria-labelledby": "rt-actors" }, h("h2", { id: "rt-actors" }, "Active actors on this node"), actors),
    h("section", { "aria-labelledby": "rt-events" },
      h("h2", { id: "rt-events" }, "Recent transfers, recoveries and restarts on this node"), events),
    h("section", { "aria-labelledby": "rt-nodes" }, h("h2", { id: "rt-nodes" }, "Nodes"), nodes),
    h("section", { "aria-labelledby": "rt-leases" }, h("h2", { id: "rt-leases" }, "Leases"), leases),
    h("section", { "aria-labelledby": "rt-mailbox" }, h("h2", { id: "rt-mailbox" }, "Mailbox depth when queued"), mailbox));

  const series = [];
  let timer = null;
  let stopped = false;
  let paused = false;

  function toggle() {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume updates" : "Pause updates";
    if (!paused) tick();
  }

  async function tick() {
    clearTimeout(timer);
    if (stopped || paused) return;
    try {
      const [snapshot, text] = await Promise.all([api.get("/v1/_kelpie/runtime"), api.text("/metrics")]);
      if (stopped) return;
      render(snapshot, parsePrometheus(text));
      replace(problem);
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      replace(problem, errorBox(error));
    }
    if (!stopped && !paused) timer = setTimeout(tick, EVERY_MS);
  }

  function render(snap, samples) {
    const c = snap.counters || {};
    const stats = [
      ["Node", snap.node_id || "runs no actors"],
      ["Active actors", c.active_actors ?? snap.actors.length],
      ["Activations", c.activations ?? "—"],
      ["Deactivations", c.deactivations ?? "—"],
      ["Restarts", c.restarts ?? "—"],
      ["Forwards to other nodes", c.forwards ?? "—"],
      ["Leases held", c.leases_held ?? "—"],
    ];
    const renew = histogram(samples, "kelpie_lease_renew_seconds");
    if (renew.count) stats.push(["Lease renewal (mean)", `${((renew.sum / renew.count) * 1000).toFixed(1)} ms`]);
    replace(summary, h("dl", { class: "facts" }, stats.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])));

    series.push({
      activations: sampleValue(samples, "kelpie_activations_total") ?? 0,
      restarts: sampleValue(samples, "kelpie_actor_restarts_total") ?? 0,
      active: sampleValue(samples, "kelpie_active_actors") ?? 0,
    });
    if (series.length > KEEP) series.shift();
    replace(chart, activityChart(series));

    const now = snap.now;
    replace(actors, snap.actors.length
      ? table("Active actors", ["Actor", "Lease epoch", "Lease expires in", "Mailbox"], snap.actors.map((a) => [
        actorLink(a.key), a.epoch, seconds(a.expires_at - now), a.mailbox_depth]), "actors")
      : h("p", { class: "empty" }, "No actor is active here: an agent activates when a message reaches it."));
    replace(events, recentEvents(snap));
    replace(nodes, snap.nodes.length
      ? table("Nodes", ["Node", "Address", "State", "Live leases", "Last heartbeat"], snap.nodes.map((n) => [
        n.this_node ? [n.node_id, " (this node)"] : n.node_id, n.address,
        h("span", { class: `badge ${n.live ? "good" : "bad"}` }, n.live ? "live" : "silent"),
        n.leases, `${seconds(now - n.heartbeat_at)} ago`]), "nodes")
      : h("p", { class: "empty" }, "No node is registered."));
    replace(leases, snap.leases.length
      ? [table("Leases", ["Actor", "Node", "Epoch", "State", "Expires"], snap.leases.map((l) => [
        actorLink(l.key), l.node_id, l.epoch,
        h("span", { class: `badge ${l.live ? "good" : ""}` }, l.live ? "held" : "expired"),
        l.live ? `in ${seconds(l.expires_at - now)}` : l.expires_at ? `${seconds(now - l.expires_at)} ago` : "released"]),
      "leases"),
      snap.leases_truncated ? h("p", { class: "meta" }, `Only the first ${snap.leases.length} are listed.`) : null]
      : h("p", { class: "empty" }, "No lease yet."));

    const depth = histogram(samples, "kelpie_mailbox_depth");
    let below = 0;
    const rows = depth.buckets.map((b) => {
      const row = [Number.isFinite(b.le) ? `≤ ${b.le}` : "more", b.count - below];
      below = b.count;
      return row;
    });
    replace(mailbox, depth.count
      ? table("Mailbox depth", ["Depth", "Messages"], rows, "mailbox")
      : h("p", { class: "empty" }, "No message queued yet."));
  }

  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

const EVENT_NAMES = {
  transfer_out: "Session moved out",
  transfer_in: "Session moved in",
  recovery: "Recovered from checkpoint",
  restart: "Actor restarted",
};

function eventDetail(e) {
  const session = e.run_id ? ["session ", h("code", {}, e.run_id)] : [];
  switch (e.kind) {
    case "transfer_out":
      return [session, " to ", actorLink(e.peer)];
    case "transfer_in":
      return [session, " from ", actorLink(e.peer), `, at iteration ${e.iteration}`];
    case "recovery":
      return [session, ` went on after iteration ${e.iteration} (the run was left unfinished: a crash, a lost lease or a failed handler)`];
    default:
      return e.detail || "";
  }
}

// The node's ring of recent events, newest first (kelpie_trio/nursery/recent.py).
function recentEvents(snap) {
  const list = snap.events || [];
  if (!list.length) {
    return h("p", { class: "empty" }, "None since this node started: a session transfer, a run resumed ",
      "after a crash, or an actor restarted after a failure shows here.");
  }
  const dropped = (snap.events_recorded || 0) - list.length;
  return [table("Recent events", ["When", "Event", "Actor", "Detail"], list.map((e) => [
    h("time", { datetime: new Date(e.at * 1000).toISOString() },
      `${new Date(e.at * 1000).toLocaleTimeString()} (${seconds(snap.now - e.at)} ago)`),
    h("span", { class: `badge ${e.kind === "restart" ? "bad" : e.kind === "recovery" ? "" : "good"}` },
      EVENT_NAMES[e.kind] || e.kind),
    actorLink(e.key),
    eventDetail(e)]), "events"),
  dropped > 0 ? h("p", { class: "meta" }, `The ${list.length} newest of ${snap.events_recorded} since this node started.`) : null];
}

// Agents' names by actor key, asked once each (shown from the next refresh on).
const names = new Map();

function nameOf(key) {
  if (!names.has(key)) {
    names.set(key, "");
    api.get(`/v1/agents/${key}`).then((agent) => names.set(key, agent.name || "")).catch(() => {});
  }
  return names.get(key);
}

function actorLink(key) {
  if (!key.startsWith("agent-")) return h("code", {}, key); // a conversation's actor
  const name = nameOf(key);
  return h("a", { href: `#/agents/${key}` }, name ? [name, " ", h("code", {}, key)] : key);
}

function seconds(value) {
  if (!Number.isFinite(value)) return "—";
  const s = Math.max(0, value);
  return s < 100 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

function table(label, columns, rows, name) {
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": label },
    h("table", { class: name },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map(([first, ...rest]) =>
        h("tr", {}, h("th", { scope: "row" }, first), rest.map((v) => h("td", {}, v)))))));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// Active actors over the last minutes, with each poll's new activations and restarts, as a
// small chart and the same numbers in words.
function activityChart(series) {
  const width = 600;
  const height = 120;
  const max = Math.max(1, ...series.map((s) => s.active));
  const step = width / Math.max(1, KEEP - 1);
  const offset = (KEEP - series.length) * step;
  const points = series.map((s, i) => `${(offset + i * step).toFixed(1)},${(height - 8 - (s.active / max) * (height - 16)).toFixed(1)}`);
  // Stretched to the page's width; strokes keep their width (vector-effect in style.css).
  const picture = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
    class: "chart", role: "img",
    "aria-label": "Active actors over the last minutes" });
  picture.append(svg("line", { x1: 0, y1: height - 8, x2: width, y2: height - 8, class: "axis" }));
  if (points.length > 1) picture.append(svg("polyline", { points: points.join(" "), class: "line" }));
  series.forEach((s, i) => {
    const before = series[i - 1];
    if (!before) return;
    const x = offset + i * step;
    if (s.restarts > before.restarts) picture.append(svg("line", { x1: x, y1: 0, x2: x, y2: 14, class: "restart" }));
    if (s.activations > before.activations) {
      picture.append(svg("line", { x1: x, y1: height - 16, x2: x, y2: height, class: "activation" }));
    }
  });
  const first = series[0];
  const last = series[series.length - 1];
  return [picture, h("p", { class: "meta" },
    `Now ${last.active} active (peak ${max} in view); `,
    `${last.activations - first.activations} activations and ${last.restarts - first.restarts} restarts in the period shown. `,
    "Ticks on the axis mark activations, ticks on top restarts.")];
}
