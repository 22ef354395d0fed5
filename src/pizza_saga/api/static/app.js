// pizza-saga pages: keep the order page and the order list live from the server's event
// streams, and help with the new-order form. The pages work without this file; it only
// redraws what the server rendered. Drawing mirrors api/views.py and the templates.
"use strict";

(() => {
  // The constants of api/views.py.
  const MIN_BAR_PERCENT = 0.6;
  const MIN_AXIS_SECONDS = 0.1;
  const LONG_WAIT_SECONDS = 0.5;
  const BREAK_PERCENT = 10;
  const BREAKS_MAX_PERCENT = 40;
  const TICK_SPACING_PERCENT = 8;
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

  // A length of time in the unit `unit` (else `seconds`) reads best in (views.duration).
  function duration(seconds, unit) {
    const scale = unit === undefined ? seconds : unit;
    if (scale < 1) return `${(seconds * 1000).toFixed(0)} ms`;
    if (scale < 60) return `${seconds.toFixed(1)} s`;
    const whole = Math.round(seconds);
    if (scale < 3600) return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, "0")} s`;
    return `${Math.floor(whole / 3600)} h ${String(Math.floor((whole % 3600) / 60)).padStart(2, "0")} min`;
  }

  // Times since the first step started, as precise as it takes to tell the closest two apart
  // (views._elapsed).
  function elapsed(offsets) {
    const text = (offset, decimals) => {
      if (offset === 0) return "0 s";
      if (offset < 60) return `${offset.toFixed(decimals)} s`;
      const seconds = offset % 60;
      return `${Math.floor(offset / 60)} min ${seconds.toFixed(decimals).padStart(3 + decimals, "0")} s`;
    };
    const gaps = offsets.slice(1).map((b, i) => b - offsets[i]);
    const closest = gaps.length ? Math.min(...gaps) : 1;
    let texts = [];
    for (const decimals of [1, 2, 3]) {
      texts = offsets.map((o) => text(o, decimals));
      if (new Set(texts).size === texts.length && 10 ** -decimals <= closest) break;
    }
    return texts;
  }

  // Where each moment sits on the axis, in percent: to scale, except long waits, which are
  // drawn as labelled breaks (views._Axis says why).
  function axisOf(offsets) {
    const spans = offsets.slice(1).map((b, i) => b - offsets[i]);
    const waits = spans.filter((d) => d > LONG_WAIT_SECONDS).length;
    const busy = spans.filter((d) => d <= LONG_WAIT_SECONDS).reduce((a, d) => a + d, 0);
    const total = offsets[offsets.length - 1];
    let breakWidth = 0;
    let perSecond;
    let length = total;
    if (waits) {
      breakWidth = Math.min(BREAK_PERCENT, BREAKS_MAX_PERCENT / waits);
      const budget = 100 - waits * breakWidth;
      perSecond = budget / Math.max(busy, MIN_AXIS_SECONDS);
      breakWidth += (budget - busy * perSecond) / waits;
    } else {
      length = Math.max(total, MIN_AXIS_SECONDS);
      perSecond = 100 / length;
    }
    const positions = [0];
    const breaks = [];
    const resumes = [];
    spans.forEach((d, i) => {
      const left = positions[positions.length - 1];
      if (d > LONG_WAIT_SECONDS) {
        breaks.push({ left, width: breakWidth, seconds: d });
        resumes.push(i + 1);
        positions.push(left + breakWidth);
      } else {
        positions.push(left + d * perSecond);
      }
    });
    const at = (offset) => {
      let i = 0;
      while (i < offsets.length - 1 && offsets[i + 1] <= offset) i++;
      if (i >= offsets.length - 1) return positions[positions.length - 1];
      const [a, b] = [offsets[i], offsets[i + 1]];
      return positions[i] + ((offset - a) / (b - a)) * (positions[i + 1] - positions[i]);
    };
    let ticks;
    if (!breaks.length) {
      ticks = [0, 25, 50, 75, 100].map((p) => ({ left: p, text: duration((length * p) / 100, length) }));
    } else {
      const last = offsets.length - 1;
      const kept = [];
      for (const i of [0, ...resumes.filter((i) => i !== last), last]) {
        if (kept.length && positions[i] - positions[kept[kept.length - 1]] < TICK_SPACING_PERCENT) {
          if (i !== last || kept.length === 1) continue;
          kept.pop();
        }
        kept.push(i);
      }
      const texts = elapsed(kept.map((i) => offsets[i]));
      ticks = kept.map((i, n) => ({ left: positions[i].toFixed(2), text: texts[n] }));
    }
    return { at, ticks, breaks, seconds: total };
  }

  // The ledger on a time axis, in percent (views.timeline).
  function timeline(o, now) {
    const records = o.ledger || [];
    const stamps = new Set();
    for (const r of records) {
      for (const t of [r.started_at, r.finished_at, r.compensation_started_at, r.compensated_at]) {
        if (t) stamps.add(Date.parse(t));
      }
    }
    if (!stamps.size) return { rows: records.map((r) => ({ record: r })), seconds: 0, ticks: [], breaks: [] };
    const start = Math.min(...stamps);
    let end = Math.max(...stamps);
    if (o.status === "RUNNING" && now > end) {
      end = now;
      stamps.add(now);
    }
    const axis = axisOf([...stamps].sort((a, b) => a - b).map((t) => (t - start) / 1000));
    const bar = (begin, finish) => {
      if (!begin) return null;
      const b = Date.parse(begin);
      let left = axis.at((b - start) / 1000);
      const right = axis.at(((finish ? Date.parse(finish) : end) - start) / 1000);
      const width = Math.max(right - left, MIN_BAR_PERCENT);
      left = Math.min(left, 100 - MIN_BAR_PERCENT);
      return { left: left.toFixed(2), width: Math.min(width, 100 - left).toFixed(2), open: !finish };
    };
    return {
      rows: records.map((r) => ({
        record: r,
        forward: bar(r.started_at, r.finished_at),
        compensation: bar(r.compensation_started_at, r.compensated_at),
      })),
      seconds: axis.seconds,
      ticks: axis.ticks,
      breaks: axis.breaks,
    };
  }

  function stepRow(row, breaks) {
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
        ...breaks.map((b) =>
          el("div", {
            class: "break",
            style: `left: ${b.left.toFixed(2)}%; width: ${b.width.toFixed(2)}%`,
            title: duration(b.seconds),
          }),
        ),
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
    document.getElementById("timeline").classList.toggle("broken", t.breaks.length > 0);
    const scale = document.getElementById("timeline-scale");
    scale.hidden = !t.ticks.length;
    scale.textContent =
      `${duration(t.seconds)} from the first step's start to the last thing it did` +
      (t.breaks.length
        ? `; each wait longer than ${duration(LONG_WAIT_SECONDS)} is drawn shortened, as a ` +
          "hatched break with its length, the rest to scale."
        : ".");
    document.getElementById("axis").replaceChildren(
      ...t.ticks.map((tick) => el("span", { style: `left: ${tick.left}%` }, tick.text)),
    );
    const breakLabels = document.getElementById("axis-breaks");
    breakLabels.hidden = !t.breaks.length;
    breakLabels.replaceChildren(
      ...t.breaks.map((b) =>
        el("span", { class: "break-label", style: `left: ${(b.left + b.width / 2).toFixed(2)}%` }, duration(b.seconds)),
      ),
    );
    const steps = document.getElementById("steps");
    if (t.rows.length) {
      steps.replaceChildren(...t.rows.map((row) => stepRow(row, t.breaks)));
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
    const resolve = document.getElementById("resolve-form"); // operators' pages only
    if (resolve) {
      resolve.hidden = waiting.length === 0;
      const select = document.getElementById("resolve-step");
      const chosen = select.value;
      select.replaceChildren(...waiting.map((s) => el("option", { value: s }, s)));
      if (waiting.includes(chosen)) select.value = chosen;
    }
    // "Cancellation requested" and "Retry requested" only while the order runs.
    for (const notice of document.querySelectorAll("[data-while-running]")) {
      notice.hidden = o.status !== "RUNNING";
    }
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

  // Of a card its last four digits; of a manual refund its transfer reference and who recorded it.
  function paidWith(p) {
    if (p.card_last4) return `•••• ${p.card_last4.slice(-4)}`;
    return p.reference ? `transfer ${p.reference} (by ${p.operator})` : "";
  }

  // The order's charges and refunds again, from the API (each snapshot may have moved money).
  let paymentsAsked = 0;
  async function drawPayments(running) {
    const table = document.getElementById("order-payments");
    if (!table) return;
    const asked = ++paymentsAsked;
    let payments;
    try {
      const answer = await fetch(table.dataset.url, { headers: { Accept: "application/json" } });
      if (!answer.ok) return;
      payments = await answer.json();
    } catch {
      return; // the next snapshot asks again
    }
    if (asked !== paymentsAsked) return; // a later answer is on its way
    const body = table.tBodies[0];
    if (payments.length) {
      body.replaceChildren(
        ...payments.map((p) =>
          el(
            "tr",
            { "data-kind": p.kind },
            el("td", {}, p.kind),
            el("td", { class: "number" }, cents(p.amount)),
            el("td", { class: "card" }, paidWith(p)),
            el("td", {}, when(p.created_at)),
          ),
        ),
      );
      const net = payments.reduce((sum, p) => sum + (p.kind === "charge" ? p.amount : -p.amount), 0);
      document.getElementById("order-net").textContent = cents(net);
      table.tFoot.hidden = false;
    } else {
      body.replaceChildren(
        el("tr", { class: "empty" }, el("td", { colspan: 4 }, `Nothing charged${running ? " yet" : ""}.`)),
      );
    }
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
      drawPayments(latest.status === "RUNNING");
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
