// Tab strips (WAI-ARIA tabs): click or arrow keys switch, one Tab stop per strip.

import { el } from "./dom.js";

/// Wires an existing [role=tablist] whose [role=tab] buttons name their panel in
/// aria-controls. `onChange(tab)` runs after a switch.
export function wireTabs(tablist, onChange) {
  const list = () => [...tablist.querySelectorAll("[role=tab]")];
  const activate = (tab) => {
    for (const t of list()) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (onChange) onChange(tab);
  };
  tablist.addEventListener("click", (e) => {
    const tab = e.target.closest("[role=tab]");
    if (tab) activate(tab);
  });
  tablist.addEventListener("keydown", (e) => {
    const all = list();
    const i = all.indexOf(document.activeElement);
    const moves = {
      ArrowRight: (i + 1) % all.length,
      ArrowLeft: (i - 1 + all.length) % all.length,
      Home: 0,
      End: all.length - 1,
    };
    if (i < 0 || !(e.key in moves)) return;
    e.preventDefault();
    all[moves[e.key]].focus();
    activate(all[moves[e.key]]);
  });
  return activate;
}

/// Builds a tab strip and its panels: [{id, label, testid, panel}], the first one open.
/// `prefix` makes the element ids unique.
export function tabs(prefix, defs) {
  const tablist = el("div", { role: "tablist", class: "tabs sub-tabs" });
  const panels = defs.map((d, i) => {
    tablist.append(
      el(
        "button",
        {
          type: "button",
          role: "tab",
          id: `${prefix}-${d.id}-tab`,
          "aria-controls": `${prefix}-${d.id}`,
          "aria-selected": String(i === 0),
          tabindex: i === 0 ? 0 : -1,
          testid: d.testid,
        },
        d.label,
      ),
    );
    return el(
      "div",
      {
        role: "tabpanel",
        id: `${prefix}-${d.id}`,
        "aria-labelledby": `${prefix}-${d.id}-tab`,
        class: "tab-panel",
        hidden: i !== 0,
      },
      d.panel,
    );
  });
  wireTabs(tablist);
  return [tablist, ...panels];
}
