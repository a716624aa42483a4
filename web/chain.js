// The threat development chain as an SVG tree, laid out left to right: one column per
// depth, one row per visible leaf, a parent on the row of its first child (read like a
// process tree). Subtrees collapse; nodes are focusable (Enter selects, Space collapses
// or expands).

import { svg, clear } from "./dom.js";
import { eventLabel, eventTypeName } from "./format.js";

const NODE_W = 208;
const NODE_H = 44;
const GAP_X = 52;
const GAP_Y = 18;
const PAD = 16;
const TAG_H = 16; // room above the first row for the "Detection" tag
const LABEL_CHARS = 27; // what fits in NODE_W at the label's font size

const KIND_LETTER = {
  process_started: "P",
  file_created: "F",
  file_modified: "F",
  module_loaded: "M",
  network_connection: "N",
};

/// The node's two lines: what it is, and its object.
function nodeText(ev) {
  const pid = ev.type === "process_started" && ev.process && ev.process.pid;
  return [eventTypeName(ev.type || "event") + (pid ? ` · pid ${pid}` : ""), eventLabel(ev) || ev.id];
}

function cut(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

/// Roots and children from parent_id. An event whose parent is unknown is a root, and
/// so is one caught in a parent loop (reached from no root), so every event shows once.
function buildTree(events) {
  const byId = new Map(events.map((e) => [e.id, e]));
  const children = new Map(events.map((e) => [e.id, []]));
  const roots = [];
  for (const e of events) {
    if (e.parent_id && byId.has(e.parent_id) && e.parent_id !== e.id) children.get(e.parent_id).push(e);
    else roots.push(e);
  }
  const reached = new Set();
  const walk = (e) => {
    if (reached.has(e.id)) return;
    reached.add(e.id);
    children.get(e.id).forEach(walk);
  };
  roots.forEach(walk);
  for (const e of events) {
    if (!reached.has(e.id)) {
      roots.push(e);
      walk(e);
    }
  }
  return { byId, children, roots };
}

export class ChainView {
  /// `onSelect(event)` runs when a node is chosen (click or Enter).
  constructor(container, { onSelect }) {
    this.container = container;
    this.onSelect = onSelect;
    this.events = [];
    this.collapsed = new Set();
    this.selectedId = null;
    this.placed = new Map();
  }

  setEvents(events) {
    this.events = events;
    this.tree = buildTree(events);
    this.collapsed = new Set();
    this.selectedId = null;
    this.render();
    const key = events.find((e) => e.key);
    if (key) this.reveal(key.id);
  }

  /// Scrolls the container as little as needed to show the node whole (with its toggle),
  /// keeping as much of what leads to it in view as fits.
  reveal(id) {
    const p = this.placed.get(id);
    if (!p) return;
    const box = this.container;
    const fit = (pos, size, scroll, view) =>
      pos < scroll ? pos - PAD : pos + size + PAD > scroll + view ? pos + size + PAD - view : scroll;
    box.scrollLeft = fit(p.x, NODE_W + GAP_X / 2, box.scrollLeft, box.clientWidth);
    box.scrollTop = fit(p.y - TAG_H, NODE_H + TAG_H, box.scrollTop, box.clientHeight);
  }

  select(id) {
    this.selectedId = id;
    for (const g of this.container.querySelectorAll(".chain-node"))
      g.classList.toggle("selected", g.dataset.eventId === id);
  }

  toggle(id) {
    if (this.collapsed.has(id)) this.collapsed.delete(id);
    else this.collapsed.add(id);
    this.render();
    const node = this.container.querySelector(`.chain-node[data-event-id="${CSS.escape(id)}"]`);
    if (node) node.focus();
  }

  /// Positions of the visible nodes (id -> {col, row}, rows in leaf units) and the
  /// edges between them ([parent id, child id]).
  layout() {
    const pos = new Map();
    const edges = [];
    const visiting = new Set();
    let nextRow = 0;
    let maxCol = 0;
    const place = (e, col) => {
      visiting.add(e.id);
      maxCol = Math.max(maxCol, col);
      const kids = this.collapsed.has(e.id)
        ? []
        : this.tree.children.get(e.id).filter((k) => !visiting.has(k.id));
      pos.set(e.id, { col, row: nextRow }); // before the children: Tab goes parent first
      if (kids.length === 0) nextRow++;
      for (const k of kids) {
        edges.push([e.id, k.id]);
        place(k, col + 1);
      }
    };
    for (const r of this.tree.roots) if (!pos.has(r.id)) place(r, 0);
    return { pos, edges, cols: maxCol + 1, rows: nextRow };
  }

  /// Events on the way from a root to the detection: their edges are drawn as the
  /// attack path.
  keyPath() {
    const path = new Set();
    let e = this.events.find((x) => x.key);
    while (e && !path.has(e.id)) {
      path.add(e.id);
      e = this.tree.byId.get(e.parent_id);
    }
    return path;
  }

  hiddenCount(id) {
    let n = 0;
    const seen = new Set([id]);
    const count = (e) => {
      for (const k of this.tree.children.get(e)) {
        if (seen.has(k.id)) continue;
        seen.add(k.id);
        n++;
        count(k.id);
      }
    };
    count(id);
    return n;
  }

  render() {
    clear(this.container);
    if (this.events.length === 0) return;
    const { pos, edges: links, cols, rows } = this.layout();
    const width = PAD * 2 + cols * (NODE_W + GAP_X);
    const height = PAD * 2 + TAG_H + rows * (NODE_H + GAP_Y) - GAP_Y;
    const x = (p) => PAD + p.col * (NODE_W + GAP_X);
    const y = (p) => PAD + TAG_H + p.row * (NODE_H + GAP_Y);
    const onPath = this.keyPath();

    const edges = svg("g", { class: "chain-edges" });
    const nodes = svg("g", { class: "chain-nodes", role: "tree", "aria-label": "Threat development chain" });
    for (const [from, to] of links) {
      const a = pos.get(from);
      const b = pos.get(to);
      const x1 = x(a) + NODE_W;
      const cls = onPath.has(from) && onPath.has(to) ? "edge key-path" : "edge";
      edges.append(
        svg("path", {
          class: cls,
          d: `M${x1},${y(a) + NODE_H / 2} H${x1 + GAP_X / 2} V${y(b) + NODE_H / 2} H${x(b)}`,
        }),
      );
    }
    this.placed = new Map(); // id -> {x, y} in SVG pixels
    for (const [id, p] of pos) {
      this.placed.set(id, { x: x(p), y: y(p) });
      nodes.append(this.node(this.tree.byId.get(id), x(p), y(p)));
    }
    this.container.append(
      svg(
        "svg",
        { class: "chain-svg", testid: "chain-svg", width, height, viewBox: `0 0 ${width} ${height}` },
        edges,
        nodes,
      ),
    );
  }

  node(ev, nx, ny) {
    const [kind, label] = nodeText(ev);
    const hasKids = this.tree.children.get(ev.id).length > 0;
    const collapsed = this.collapsed.has(ev.id);
    const known = KIND_LETTER[ev.type] ? ev.type : "other";
    const classes = [
      "chain-node",
      "type-" + known,
      ev.key ? "key" : "",
      ev.id === this.selectedId ? "selected" : "",
    ];
    const g = svg("g", {
      class: classes.filter(Boolean).join(" "),
      transform: `translate(${nx},${ny})`,
      tabindex: 0,
      role: "treeitem",
      "aria-label": `${ev.key ? "Detection: " : ""}${kind}: ${label}`,
      "aria-expanded": hasKids ? String(!collapsed) : null,
      "aria-selected": String(ev.id === this.selectedId),
      testid: "chain-node",
      data: { eventId: ev.id },
    });
    g.append(
      svg("title", {}, `${ev.key ? "Detection\n" : ""}${kind}\n${label}\nevent ${ev.id}`),
      svg("rect", { class: "node-box", width: NODE_W, height: NODE_H, rx: 6 }),
      svg("rect", { class: "node-stripe", width: 5, height: NODE_H, rx: 2 }),
      svg("circle", { class: "node-icon", cx: 20, cy: NODE_H / 2, r: 10 }),
      svg(
        "text",
        { class: "node-letter", x: 20, y: NODE_H / 2 + 4, "text-anchor": "middle" },
        KIND_LETTER[ev.type] || "?",
      ),
      svg("text", { class: "node-kind", x: 38, y: 17 }, cut(kind, LABEL_CHARS + 6)),
      svg("text", { class: "node-label", x: 38, y: 34 }, cut(label, LABEL_CHARS)),
    );
    if (ev.key) {
      g.append(
        svg("rect", { class: "node-tag", x: NODE_W - 78, y: -TAG_H + 2, width: 72, height: TAG_H, rx: 3 }),
        svg("text", { class: "node-tag-text", x: NODE_W - 42, y: -3, "text-anchor": "middle" }, "Detection"),
      );
    }
    if (hasKids) g.append(this.toggleButton(ev.id, collapsed));
    g.addEventListener("click", () => this.choose(ev));
    g.addEventListener("keydown", (e) => {
      if (e.target !== g) return;
      if (e.key === "Enter") {
        e.preventDefault();
        this.choose(ev);
      } else if (e.key === " " && hasKids) {
        e.preventDefault();
        this.toggle(ev.id);
      }
    });
    return g;
  }

  toggleButton(id, collapsed) {
    const t = svg(
      "g",
      {
        class: "node-toggle",
        transform: `translate(${NODE_W},${NODE_H / 2})`,
        testid: "chain-toggle",
        "aria-hidden": "true",
      },
      svg("circle", { r: 9 }),
      svg("text", { y: 4, "text-anchor": "middle" }, collapsed ? "+" : "−"),
    );
    if (collapsed) {
      const n = this.hiddenCount(id);
      t.append(
        svg("text", { class: "node-hidden", x: 14, y: 4 }, `+${n}`, svg("title", {}, `${n} events hidden`)),
      );
    }
    t.addEventListener("click", (e) => {
      e.stopPropagation();
      this.toggle(id);
    });
    return t;
  }

  choose(ev) {
    this.select(ev.id);
    this.onSelect(ev);
  }
}
