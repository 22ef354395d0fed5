// pizza-saga pages: keep the order page and the order list live from the server's event
// streams, and help with the new-order form. The pages work without this file; it only
// redraws what the server rendered. Drawing mirrors api/views.py and the templates.
"use strict";

(() => {
  const MIN_BAR_PERCENT = 0.6;
  const ROLLING_BACK = ["RUNNING", "RETRYING", "COMPENSATED", "NEEDS_OPERATOR", "SKIPPED"];
  const STATUS_LABEL = {
    RUNNING: "Running",
    COMPLETED: "Completed",
    FAILED: "Failed",
    CANCELLED: "Cancelled",
    TERMINATED: "Terminated",
    TIMED_OUT: "Timed out",
  };

  // A new element: el("span", {class: "badge"}, "text", child, ...).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function cents(amount) {
    return "$" + (amount / 100).toLocaleString("en-US", {
      minimumFractionDigits: 2,
      maximumFractionDigits: 2,
    });
  }

  function when(iso) {
    return iso ? iso.replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "") + " UTC" : "";
  }

  const lower = (text) => text.toLowerCase();
  const waitingSteps = (o) =>
    (o.ledger || []).filter((r) => r.compensation_state === "NEEDS_OPERATOR").map((r) => r.step);
  const rollingBack = (o) =>
    (o.ledger || []).some((r) => ROLLING_BACK.includes(r.compensation_state));

  // The badge and detail line of an outcome (views.describe).
  function describe(o) {
    if (o.status === "RUNNING") {
      const waiting = waitingSteps(o);
      if (waiting.length) {
        return {
          key: "needs-operator",
          label: "Needs operator",
          detail: `the compensation of ${waiting.join(", ")} keeps failing: retry it, or skip it and say why`,
        };
      }
      if (rollingBack(o)) {
        return { key: "rolling-back", label: "Rolling back", detail: "undoing what the order did" };
      }
      return { key: "running", label: "Running", detail: "" };
    }
    let detail = "";
    if (o.status === "COMPLETED" && o.confirmation) {
      const c = o.confirmation;
      detail = `${c.status}: charged ${cents(c.amount)} to card ending ${c.card_last4}, bill ${c.confirmation_number}`;
    } else if (o.error) {
      detail = `${o.error.type}: ${o.error.message}`;
    }
    return { key: lower(o.status).replace("_", "-"), label: STATUS_LABEL[o.status] || o.status, detail };
  }

  // The ledger on a time axis, in percent (views.timeline).
  function timeline(o, now) {
    const records = o.ledger || [];
    const stamps = [];
    for (const r of records) {
      for (const t of [r.started_at, r.finished_at, r.compensation_started_at, r.compensated_at]) {
        if (t) stamps.push(Date.parse(t));
      }
    }
    if (!stamps.length) return { rows: records.map((r) => ({ record: r })), seconds: 0 };
    const start = Math.min(...stamps);
    let end = Math.max(...stamps);
    if (o.status === "RUNNING") end = Math.max(end, now);
    const total = Math.max(end - start, 1);
    const bar = (begin, finish) => {
      if (!begin) return null;
      const b = Date.parse(begin);
      const stop = finish ? Date.parse(finish) : end;
      const left = Math.min(((b - start) / total) * 100, 100 - MIN_BAR_PERCENT);
      const width = Math.max(((stop - b) / total) * 100, MIN_BAR_PERCENT);
      return { left: left.toFixed(2), width: Math.min(width, 100 - left).toFixed(2), open: !finish };
    };
    return {
      rows: records.map((r) => ({
        record: r,
        forward: bar(r.started_at, r.finished_at),
        compensation: bar(r.compensation_started_at, r.compensated_at),
      })),
      seconds: total / 1000,
    };
  }

  function stepRow(row) {
    const r = row.record;
    const attempts = r.compensation_attempts;
    const barOf = (b, kind, state, title) =>
      b &&
      el("div", {
        class: `bar ${kind} s-${lower(state)}${b.open ? " open" : ""}`,
        style: `left: ${b.left}%; width: ${b.width}%`,
        title,
      });
    return el(
      "div",
      { class: "step", "data-step": r.step },
      el(
        "div",
        { class: "step-name" },
        el("strong", {}, r.step),
        r.compensation && el("small", {}, `undo: ${r.compensation}`),
      ),
      el(
        "div",
        { class: "states" },
        el("span", { class: `state forward-state s-${lower(r.state)}` }, r.state),
        r.compensation &&
          el(
            "span",
            { class: `state compensation-state s-${lower(r.compensation_state)}` },
            r.compensation_state,
          ),
        attempts > 0 &&
          el(
            "span",
            { class: "attempts" },
            `${attempts} compensation attempt${attempts !== 1 ? "s" : ""}`,
          ),
      ),
      el(
        "div",
        { class: "track" },
        barOf(row.forward, "forward", r.state, r.activity),
        barOf(row.compensation, "compensation", r.compensation_state, r.compensation),
      ),
      el(
        "div",
        { class: "notes" },
        r.error && el("div", { class: "note error" }, r.error),
        r.compensation_error && el("div", { class: "note compensation-error" }, r.compensation_error),
        r.operator_note && el("div", { class: "note operator" }, r.operator_note),
      ),
    );
  }

  function drawTimeline(o) {
    const t = timeline(o, Date.now());
    const axis = document.getElementById("axis");
    axis.replaceChildren(
      ...[0, 25, 50, 75, 100].map((p) =>
        el("span", { style: `left: ${p}%` }, `${((t.seconds * p) / 100).toFixed(1)} s`),
      ),
    );
    const steps = document.getElementById("steps");
    if (t.rows.length) {
      steps.replaceChildren(...t.rows.map(stepRow));
    } else {
      const why =
        o.ledger === null
          ? "The ledger is unavailable: no worker answered (start pizza worker)."
          : "No step has started yet.";
      steps.replaceChildren(el("p", { class: "hint" }, why));
    }
  }

  function drawOrder(o) {
    const section = document.getElementById("order");
    section.dataset.status = o.status;
    const view = describe(o);
    const label = document.getElementById("outcome-label");
    label.className = `badge ${view.key}`;
    label.textContent = view.label;
    document.getElementById("outcome-detail").textContent = view.detail;
    if (o.web_ui_url) document.getElementById("web-ui").href = o.web_ui_url;
    document.getElementById("cancel-form").hidden = !(o.status === "RUNNING" && !rollingBack(o));
    const waiting = o.status === "RUNNING" ? waitingSteps(o) : [];
    document.getElementById("resolve-form").hidden = waiting.length === 0;
    const select = document.getElementById("resolve-step");
    const chosen = select.value;
    select.replaceChildren(...waiting.map((s) => el("option", { value: s }, s)));
    if (waiting.includes(chosen)) select.value = chosen;
    drawTimeline(o);
    document.getElementById("pending").replaceChildren(
      ...(o.pending_activities || [])
        .filter((p) => p.attempt > 1)
        .map((p) =>
          el(
            "li",
            {},
            `${p.activity_id}: attempt ${p.attempt}` +
              (p.last_failure ? `, last failure: ${p.last_failure}` : ""),
          ),
        ),
    );
  }

  // Follow the order's event stream until its last snapshot; bars of running steps grow.
  function followOrder(section) {
    const url = section.dataset.eventsUrl;
    if (!url) return;
    const live = document.getElementById("live");
    const problem = document.getElementById("stream-error");
    const source = new EventSource(url);
    let latest = null;
    const ticker = setInterval(() => {
      if (latest && latest.status === "RUNNING") drawTimeline(latest);
    }, 1000);
    const stop = () => {
      source.close();
      clearInterval(ticker);
      live.hidden = true;
    };
    source.onmessage = (event) => {
      latest = JSON.parse(event.data);
      problem.hidden = true;
      drawOrder(latest);
      if (latest.status !== "RUNNING") stop();
    };
    source.addEventListener("problem", (event) => {
      problem.textContent = `${JSON.parse(event.data).detail}; reconnecting…`;
      problem.hidden = false;
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) stop();
    };
  }

  function orderRow(order) {
    const waits = order.needs_operator && order.status === "RUNNING";
    const badge = waits
      ? el("span", { class: "badge needs-operator" }, "Needs operator")
      : el(
          "span",
          { class: `badge ${lower(order.status).replace("_", "-")}` },
          STATUS_LABEL[order.status] || order.status,
        );
    return el(
      "tr",
      { "data-order": order.order_number },
      el("td", {}, el("a", { href: `/orders/${order.order_number}` }, order.order_number)),
      el("td", {}, badge),
      el("td", {}, when(order.started_at)),
      el("td", {}, when(order.closed_at)),
    );
  }

  function followList(table) {
    const source = new EventSource(table.dataset.eventsUrl);
    source.onmessage = (event) => {
      const orders = JSON.parse(event.data).orders;
      const body = table.tBodies[0];
      if (orders.length) {
        body.replaceChildren(...orders.map(orderRow));
      } else {
        body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 4 }, "No orders yet.")));
      }
    };
  }

  // New-order form: "Use" buttons fill a field; typing a card number picks "another card".
  function formHelpers(form) {
    for (const button of document.querySelectorAll("button[data-fill]")) {
      button.addEventListener("click", () => {
        const field = document.getElementById(button.dataset.fill);
        field.value = button.dataset.value;
        field.focus();
      });
    }
    const number = document.getElementById("credit_card_info.number");
    const other = document.getElementById("card-other");
    number.addEventListener("input", () => {
      if (number.value.trim()) other.checked = true;
    });
    form.addEventListener("change", (event) => {
      if (event.target.name === "card" && event.target !== other) number.value = "";
    });
  }

  const order = document.getElementById("order");
  if (order) followOrder(order);
  const orders = document.getElementById("orders");
  if (orders) followList(orders);
  const form = document.querySelector("form.order-form");
  if (form) formHelpers(form);
})();
