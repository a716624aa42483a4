// DOM building without HTML parsing: every piece of data goes in through textContent or
// setAttribute, never through innerHTML, so text from agents stays text.

const SVG_NS = "http://www.w3.org/2000/svg";

/// Applies props to a new element. Special keys: `class`, `text` (textContent),
/// `testid` (data-testid), `data` (dataset entries), `on` (event listeners). Every other
/// key is an attribute: true sets it empty, false / null / undefined leave it out.
function apply(node, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "text") node.textContent = String(value);
    else if (key === "testid") node.dataset.testid = value;
    else if (key === "data") Object.entries(value).forEach(([k, v]) => (node.dataset[k] = v));
    else if (key === "on") Object.entries(value).forEach(([k, f]) => node.addEventListener(k, f));
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/// An HTML element: el("td", {class: "mono", title: path}, "text", otherNode).
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  apply(node, props);
  return append(node, children);
}

/// An SVG element, same conventions as el().
export function svg(tag, props, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  apply(node, props);
  return append(node, children);
}

/// Empties `node`, then appends `children` as el() does (arrays flattened, strings as
/// text).
export function clear(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/// The × button that closes a dialog or a details area.
export function closeButton(label, testid, onClick) {
  return el(
    "button",
    { type: "button", class: "icon-btn", "aria-label": label, title: label, testid, on: { click: onClick } },
    "×",
  );
}

/// Makes the rows of a table body one Tab stop: arrow keys (and Home / End) move the
/// focus between rows, Enter selects the focused row. `onSelect(row)` also runs on click.
/// Clicks on buttons inside a row are left to those buttons.
export function rowNavigation(tbody, onSelect) {
  tbody.addEventListener("click", (e) => {
    if (e.target.closest("button, a, input, select")) return;
    const row = e.target.closest("tr[tabindex]");
    if (row) {
      focusRow(tbody, row);
      onSelect(row);
    }
  });
  tbody.addEventListener("keydown", (e) => {
    const row = e.target.closest("tr[tabindex]");
    if (!row || e.target !== row) return;
    const rows = [...tbody.querySelectorAll("tr[tabindex]")];
    const i = rows.indexOf(row);
    const moves = { ArrowDown: i + 1, ArrowUp: i - 1, Home: 0, End: rows.length - 1 };
    if (e.key in moves) {
      const next = rows[Math.max(0, Math.min(rows.length - 1, moves[e.key]))];
      focusRow(tbody, next);
      next.focus();
      e.preventDefault();
    } else if (e.key === "Enter") {
      onSelect(row);
      e.preventDefault();
    }
  });
}

/// Gives `row` the body's single tabindex=0 (the others get -1).
function focusRow(tbody, row) {
  for (const r of tbody.querySelectorAll("tr[tabindex='0']")) r.tabIndex = -1;
  if (row) row.tabIndex = 0;
}

/// After rows were rebuilt: keeps one row reachable by Tab (the selected one, else the
/// first).
export function ensureRowStop(tbody) {
  if (tbody.querySelector("tr[tabindex='0']")) return;
  focusRow(tbody, tbody.querySelector("tr.selected[tabindex]") || tbody.querySelector("tr[tabindex]"));
}

/// Puts new rows in a table body, keeping the keyboard focus on the row with the same
/// `key` (a dataset name) if it had it, and one row reachable by Tab.
export function replaceRows(tbody, rows, key) {
  const active = document.activeElement;
  const focused = active && active.parentNode === tbody ? active.dataset[key] : null;
  tbody.replaceChildren(...rows);
  ensureRowStop(tbody);
  const again = focused && [...tbody.rows].find((r) => r.dataset[key] === focused);
  if (again) {
    focusRow(tbody, again);
    again.focus();
  }
}
