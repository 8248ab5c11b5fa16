/* kt-tutor dashboard: plain JavaScript over the /v1 analytics API, charts with the vendored
   Vega-Lite (vega-embed, SVG renderer). No build step, no external URL. */
(() => {
  "use strict";

  const ROOT = (document.querySelector('meta[name="api-root"]') || {}).content || "";
  const KEY_STORE = "kt-tutor.dashboard.key";
  const GROUP_STORE = "kt-tutor.dashboard.group";
  const HEATMAP_PAGE = 50;
  const CLASS_PAGE = 100;
  const ITEMS_PAGE = 50;
  const RETEACH_SHOWN = 12;
  const CONCEPT_CHARS = 40;
  const TIMELINE_CONCEPTS = 6;
  const GRAPH_MAX_NODES = 60;
  const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
  const VEGA_CONFIG = {
    font: FONT,
    axis: { labelColor: "#374151", titleColor: "#111827", gridColor: "#eef0f3" },
    legend: { labelColor: "#374151", titleColor: "#111827" },
    view: { stroke: null },
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    key: null,
    groups: [],
    group: null,
    tab: "class",
    loaded: {}, // tab -> group id its data was loaded for
    seq: {}, // tab -> request counter (late answers of an older request are dropped)
    views: {}, // element id -> Vega view
    roster: new Map(), // learner id -> label (every list seen: class, heatmap, groups, risk)
    conceptNames: new Map(), // concept id -> name
    concepts: [], // the catalogue in curriculum order, once the heatmap has loaded
    class: { sort: "name", offset: 0, data: null },
    reteach: { data: null, all: false },
    mastery: { offset: 0, data: null, total: null },
    learner: { id: null, concept: null, shown: [] },
    curves: { data: null, concept: null },
    items: { sort: "attempts", desc: true, offset: 0 },
  };

  // ------------------------------------------------------------------ helpers
  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function detailText(body, response) {
    const d = body && body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) {
      return d
        .map((e) => (e && e.loc ? e.loc.join(".") + ": " : "") + ((e && e.msg) || String(e)))
        .join("; ");
    }
    if (d) return JSON.stringify(d);
    return `${response.status} ${response.statusText || "error"}`;
  }

  function apiUrl(path, params = {}) {
    const url = new URL(ROOT + path, window.location.origin);
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
    }
    return url;
  }

  async function api(path, params = {}, { quiet401 = false } = {}) {
    const url = apiUrl(path, params);
    let response;
    try {
      response = await fetch(url, {
        headers: { Authorization: `Bearer ${state.key}`, Accept: "application/json" },
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, `cannot reach the server (${err.message})`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const err = new ApiError(response.status, detailText(body, response));
      if (response.status === 401 && !quiet401) logout(`Logged out: ${err.message}`);
      throw err;
    }
    return body;
  }

  const enc = encodeURIComponent;

  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  /** Show a loading / empty / error message in a state box (kind null hides it). */
  function setState(el, kind, text) {
    el.hidden = !kind;
    el.className = "state" + (kind ? ` ${kind}` : "");
    el.dataset.state = kind || "";
    el.textContent = kind ? text : "";
    if (kind === "error") el.setAttribute("role", "alert");
    else el.removeAttribute("role");
  }

  const NO_MODEL = "No active model: an admin registers and activates one " +
    "(tutor models register / activate) before mastery can be shown.";

  /** The API's 404 when the organisation has no active model. */
  const noModel = (err) => err instanceof ApiError && err.status === 404 &&
    /no active model/i.test(err.message);

  function errorText(err) {
    if (err instanceof ApiError) {
      return err.status ? `Error ${err.status}: ${err.message}` : `Error: ${err.message}`;
    }
    return `Error: ${err && err.message ? err.message : err}`;
  }

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const pct = (v, digits = 0) => (isNum(v) ? `${(v * 100).toFixed(digits)}%` : "–");
  const num = (v, digits = 2) => (isNum(v) ? v.toFixed(digits) : "–");
  const signedPts = (v) =>
    isNum(v) ? `${v > 0 ? "+" : v < 0 ? "−" : "±"}${Math.abs(v * 100).toFixed(1)} pts` : "–";

  function fmtValue(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") {
      if (!Number.isFinite(v)) return "–";
      return Number.isInteger(v) ? v.toLocaleString("en") : Math.abs(v) >= 1000 ? v.toFixed(0) : v.toPrecision(4).replace(/\.?0+$/, "");
    }
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (Array.isArray(v)) return v.map(fmtValue).join(", ");
    if (typeof v === "object") {
      return Object.entries(v)
        .map(([k, x]) => `${k} ${fmtValue(x)}`)
        .join(" · ");
    }
    return String(v);
  }

  /** What teachers read: the organisation's display name, else the id (ids go in tooltips). */
  function learnerLabel(l) {
    if (l.label) return l.label;
    return l.name && l.name !== l.learner_id ? l.name : l.learner_id;
  }

  function conceptLabel(c) {
    return c.name && c.name !== c.concept_id ? c.name : c.concept_id;
  }

  /** A label cut to ``n`` characters (the full text goes in a tooltip). */
  function shorten(text, n = CONCEPT_CHARS) {
    const t = String(text);
    return t.length > n ? `${t.slice(0, n - 1).trimEnd()}…` : t;
  }

  const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

  function fmtDate(iso, withTime = false) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "–";
    return withTime
      ? d.toLocaleString("en-GB", { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit" })
      : d.toLocaleDateString("en-GB", { day: "numeric", month: "short", year: "numeric" });
  }

  /** Remember learners' labels and concepts' names for pickers and titles. */
  function remember({ learners = [], concepts = [] } = {}) {
    for (const l of learners) {
      if (l && l.learner_id) state.roster.set(l.learner_id, learnerLabel(l));
    }
    for (const c of concepts) {
      if (c && c.concept_id) state.conceptNames.set(c.concept_id, conceptLabel(c));
    }
  }

  const studentName = (id) => state.roster.get(id) || id;
  const conceptName = (id) => state.conceptNames.get(id) || id;

  /** A student's name as a button that opens the timeline (id in the tooltip). */
  function studentButton(id, label, conceptId = null, cls = "link") {
    return h("button", {
      type: "button",
      class: cls,
      title: `open the timeline of ${label} (id ${id})`,
      text: label,
      dataset: { learner: id },
      onclick: () => openLearner(id, conceptId),
    });
  }

  /** Labels that stay unique (two concepts of the same name get their ids appended). */
  function uniqueLabels(list, label, id) {
    const seen = new Map();
    for (const x of list) seen.set(label(x), (seen.get(label(x)) || 0) + 1);
    return list.map((x) => (seen.get(label(x)) > 1 ? `${label(x)} [${id(x)}]` : label(x)));
  }

  async function draw(el, spec) {
    if (typeof window.vegaEmbed !== "function") {
      throw new Error("the charting library did not load (run scripts/vendor_dashboard.sh)");
    }
    if (state.views[el.id]) {
      state.views[el.id].finalize();
      delete state.views[el.id];
    }
    el.textContent = "";
    const result = await window.vegaEmbed(el, spec, {
      mode: "vega-lite",
      renderer: "svg",
      actions: false,
      config: VEGA_CONFIG,
    });
    state.views[el.id] = result.view;
    el.dataset.rendered = "true";
    return result.view;
  }

  function clearChart(el) {
    if (state.views[el.id]) {
      state.views[el.id].finalize();
      delete state.views[el.id];
    }
    el.textContent = "";
    el.dataset.rendered = "false";
  }

  function nextSeq(tab) {
    state.seq[tab] = (state.seq[tab] || 0) + 1;
    return state.seq[tab];
  }

  const current = (tab, token) => state.seq[tab] === token;

  // ------------------------------------------------------------------ login and groups
  function showLogin(message) {
    $("app").hidden = true;
    $("session").hidden = true;
    $("login").hidden = false;
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("api-key").focus();
  }

  function logout(message) {
    sessionStorage.removeItem(KEY_STORE);
    state.key = null;
    state.groups = [];
    state.group = null;
    state.loaded = {};
    for (const id of Object.keys(state.views)) clearChart($(id));
    showLogin(message);
  }

  async function login(key, { fromStorage = false } = {}) {
    state.key = key;
    const button = $("login-submit");
    button.disabled = true;
    const err = $("login-error");
    err.hidden = false;
    err.className = "state loading";
    err.textContent = "Checking the key…";
    try {
      const page = await api("/v1/groups", { limit: 1000 }, { quiet401: true });
      sessionStorage.setItem(KEY_STORE, key);
      err.hidden = true;
      err.className = "state error";
      $("api-key").value = "";
      startApp(page.groups || []);
    } catch (e) {
      state.key = null;
      sessionStorage.removeItem(KEY_STORE);
      err.className = "state error";
      const why = e instanceof ApiError && e.status === 403
        ? `${e.message} (the dashboard needs an admin or teacher key)`
        : e.message;
      showLogin(fromStorage ? `Please log in again: ${why}` : why);
    } finally {
      button.disabled = false;
    }
  }

  function startApp(groups) {
    state.groups = groups;
    $("login").hidden = true;
    $("app").hidden = false;
    $("session").hidden = false;
    const select = $("group-select");
    select.textContent = "";
    const groupsState = $("groups-state");
    if (!groups.length) {
      select.disabled = true;
      select.append(h("option", { value: "", text: "no groups" }));
      setState(groupsState, "empty", "No groups are visible to this key yet: an admin creates " +
        "them (PUT /v1/groups/{id}) and gives teacher keys their groups.");
      document.querySelector(".tabs").hidden = true;
      for (const p of document.querySelectorAll(".panel")) p.hidden = true;
      return;
    }
    select.disabled = false;
    document.querySelector(".tabs").hidden = false;
    const stored = sessionStorage.getItem(GROUP_STORE);
    const chosen = groups.length === 1
      ? groups[0].id
      : groups.some((g) => g.id === stored) ? stored : "";
    if (!chosen) select.append(h("option", { value: "", text: "Choose a group…" }));
    for (const g of groups) {
      const name = g.name && g.name !== g.id ? `${g.name} (${g.id})` : g.id;
      select.append(h("option", { value: g.id, text: `${name} · ${g.n_members} learners` }));
    }
    select.value = chosen;
    selectGroup(chosen || null);
  }

  function selectGroup(id) {
    state.group = id;
    state.loaded = {};
    state.mastery = { offset: 0, data: null, total: null };
    state.learner = { id: null, concept: null, shown: [] };
    state.curves = { data: null, concept: null };
    state.class = { sort: $("class-sort").value || "name", offset: 0, data: null };
    state.reteach = { data: null, all: false };
    state.roster = new Map();
    state.conceptNames = new Map();
    state.concepts = [];
    state.items.offset = 0;
    for (const note of document.querySelectorAll(".csv-note")) note.remove();
    for (const id2 of Object.keys(state.views)) clearChart($(id2));
    const groupsState = $("groups-state");
    if (!id) {
      setState(groupsState, "empty", "Pick a group to see its dashboard.");
      document.querySelector(".tabs").hidden = true;
      for (const p of document.querySelectorAll(".panel")) p.hidden = true;
      return;
    }
    sessionStorage.setItem(GROUP_STORE, id);
    setState(groupsState, null);
    document.querySelector(".tabs").hidden = false;
    showTab(state.tab);
  }

  // ------------------------------------------------------------------ tabs
  const LOADERS = {
    class: () => loadClass(),
    mastery: () => loadMastery(),
    learner: () => loadLearner(),
    groups: () => loadGroups(),
    curves: () => loadCurves(),
    items: () => loadItems(),
    risk: () => loadRisk(),
    model: () => loadModel(),
  };

  function showTab(tab, { reload = false } = {}) {
    state.tab = tab;
    for (const b of document.querySelectorAll(".tabs [role=tab]")) {
      b.setAttribute("aria-selected", String(b.dataset.tab === tab));
    }
    for (const p of document.querySelectorAll(".panel")) p.hidden = p.dataset.panel !== tab;
    if (!state.group) return;
    if (reload || state.loaded[tab] !== state.group) {
      state.loaded[tab] = state.group;
      LOADERS[tab]();
    }
  }

  // ------------------------------------------------------------------ class overview
  const STATUS_KEYS = [
    ["mastered", "mastered"],
    ["learning", "learning"],
    ["struggling", "struggling"],
    ["not_started", "not-started"],
  ];

  async function loadClass() {
    const token = nextSeq("class");
    const box = $("class-state");
    const table = $("class-table");
    setState(box, "loading", "Loading the class…");
    setState($("reteach-state"), "loading", "Loading what to reteach…");
    const group = enc(state.group);
    const { sort, offset } = state.class;
    // the two lists load together; each shows its own error
    const reteach = api(`/v1/analytics/groups/${group}/reteach`).then(
      (data) => ({ data }), (error) => ({ error }));
    try {
      const data = await api(`/v1/analytics/groups/${group}/students`, {
        sort, limit: CLASS_PAGE, offset,
      });
      if (!current("class", token)) return;
      state.class.data = data;
      renderClass(data);
    } catch (e) {
      if (!current("class", token)) return;
      table.hidden = true;
      setState(box, noModel(e) ? "empty" : "error", noModel(e) ? NO_MODEL : errorText(e));
      state.loaded.class = null;
    }
    const r = await reteach;
    if (!current("class", token)) return;
    if (r.error) {
      $("reteach-table").hidden = true;
      $("reteach-more").hidden = true;
      const e = r.error;
      setState($("reteach-state"), noModel(e) ? "empty" : "error", noModel(e) ? NO_MODEL : errorText(e));
      state.loaded.class = null;
      return;
    }
    state.reteach.data = r.data;
    renderReteach();
  }

  function statusBar(row, total) {
    const bar = h("div", {
      class: "bar",
      role: "img",
      "aria-label": STATUS_KEYS.map(([k]) => `${row[k]} ${k.replace("_", " ")}`).join(", "),
    });
    for (const [k, cls] of STATUS_KEYS) {
      if (!row[k] || !total) continue;
      bar.append(h("span", { class: cls, style: `width: ${((100 * row[k]) / total).toFixed(2)}%` }));
    }
    return bar;
  }

  /** Concept names as chips (the first ``max``; the rest counted). */
  function conceptChips(list, cls, max = 4) {
    if (!list || !list.length) return h("span", { class: "muted", text: "–" });
    const shown = list.slice(0, max).map((c) => h("span", {
      class: `chip ${cls}`,
      title: `${c.name || c.concept_id} (id ${c.concept_id})`,
      text: shorten(conceptLabel(c), 32),
    }));
    if (list.length > max) {
      shown.push(h("span", {
        class: "chip more",
        title: list.slice(max).map(conceptLabel).join(", "),
        text: `+${list.length - max} more`,
      }));
    }
    return shown;
  }

  function renderClass(data) {
    const box = $("class-state");
    const table = $("class-table");
    const students = data.students || [];
    remember({ learners: students });
    for (const st of students) remember({ concepts: [...st.struggling_on, ...st.ready_to_learn] });
    fillLearnerPicker();
    const total = isNum(data.total) ? data.total : students.length;
    const offset = data.offset || 0;
    $("class-title").textContent = data.group
      ? `· ${data.group.name || data.group.id} · ${plural(total, "student")} · ${plural(data.n_concepts, "concept")}`
      : "";
    $("class-page").textContent = students.length && total > CLASS_PAGE
      ? `students ${offset + 1}–${offset + students.length} of ${total}`
      : "";
    for (const id of ["class-prev", "class-next"]) $(id).hidden = total <= CLASS_PAGE;
    $("class-prev").disabled = offset <= 0;
    $("class-next").disabled = offset + students.length >= total;
    $("class-rule").textContent = data.rule_text
      ? `Statuses per concept: ${data.rule_text}; not started: no own answers on it yet.`
      : "";
    $("class-note").textContent = data.timed
      ? `Last activity: the student's latest answer; “idle” counts the days before ` +
        (data.reference === "now" ? "today" : `the class's latest answer (${fmtDate(data.reference_time)})`) +
        ", as on the At risk tab."
      : "No dates in this data: the answers were imported without times, so there is no " +
        "last activity to show.";
    const body = table.querySelector("tbody");
    body.textContent = "";
    if (!students.length) {
      table.hidden = true;
      setState(box, "empty", offset ? "No more students." : "No students in this group yet.");
      return;
    }
    const concepts = data.n_concepts || 0;
    for (const st of students) {
      const label = learnerLabel(st);
      const idle = isNum(st.days_inactive) && st.days_inactive >= 1
        ? h("span", { class: "muted", text: ` · ${Math.round(st.days_inactive)} d idle` })
        : null;
      const last = !data.timed
        ? h("span", { class: "muted", title: "no dates in this data", text: "–" })
        : st.last_activity
          ? [h("span", { title: fmtDate(st.last_activity, true), text: fmtDate(st.last_activity) }), idle]
          : h("span", { class: "muted", text: st.answers ? "–" : "no answers yet" });
      const count = (k) => h("td", {
        class: `num count-${k.replace("_", "-")}${st[k] ? " nonzero" : ""}`,
        text: fmtValue(st[k]),
      });
      body.append(h("tr", { dataset: { learner: st.learner_id } },
        h("th", { scope: "row" }, studentButton(st.learner_id, label)),
        h("td", {}, statusBar(st, concepts)),
        count("mastered"),
        count("learning"),
        count("struggling"),
        count("not_started"),
        h("td", { class: "num", text: fmtValue(st.answers) }),
        h("td", { class: "nowrap" }, last),
        h("td", { class: "names" }, conceptChips(st.struggling_on, "struggling")),
        h("td", { class: "names" }, conceptChips(st.ready_to_learn, "ready", 3)),
      ));
    }
    table.hidden = false;
    setState(box, null);
  }

  function renderReteach() {
    const data = state.reteach.data;
    const box = $("reteach-state");
    const table = $("reteach-table");
    const more = $("reteach-more");
    const rows = data.concepts || [];
    remember({ concepts: rows });
    const body = table.querySelector("tbody");
    body.textContent = "";
    if (!rows.length) {
      table.hidden = true;
      more.hidden = true;
      setState(box, "empty", "The class has not practised any concept yet: nothing to reteach.");
      return;
    }
    const shown = state.reteach.all ? rows : rows.slice(0, RETEACH_SHOWN);
    for (const c of shown) {
      const names = (c.struggling_students || []).map((x) => x.label);
      const extra = c.struggling - names.length;
      body.append(h("tr", { dataset: { concept: c.concept_id, struggling: String(c.struggling) } },
        h("th", { scope: "row", title: `${c.name} (id ${c.concept_id}; curriculum position ${c.curriculum_position})`, text: shorten(conceptLabel(c), 48) }),
        h("td", { class: `num count-struggling${c.struggling ? " nonzero" : ""}`, text: fmtValue(c.struggling) }),
        h("td", { class: "num", text: fmtValue(c.learning) }),
        h("td", { class: `num count-mastered${c.mastered ? " nonzero" : ""}`, text: fmtValue(c.mastered) }),
        h("td", { class: "num", text: fmtValue(c.not_started) }),
        h("td", {
          class: "num",
          title: `${fmtValue(c.answers)} answers by ${plural(c.practised_by, "student")}`,
          text: pct(c.success_rate),
        }),
        h("td", { class: "names" },
          names.length ? names.map((n) => h("span", { class: "chip struggling", text: n })) : h("span", { class: "muted", text: "–" }),
          extra > 0 ? h("span", { class: "chip more", text: `+${extra} more` }) : null),
      ));
    }
    more.hidden = rows.length <= RETEACH_SHOWN;
    more.textContent = state.reteach.all
      ? `Show the first ${RETEACH_SHOWN} only`
      : `Show all ${rows.length} practised concepts`;
    table.hidden = false;
    setState(box, null);
  }

  // ------------------------------------------------------------------ mastery heatmap
  async function loadMastery() {
    const token = nextSeq("mastery");
    const box = $("mastery-state");
    const chart = $("heatmap");
    setState(box, "loading", "Loading mastery…");
    const at = $("mastery-at").value;
    try {
      const data = await api(`/v1/analytics/groups/${enc(state.group)}/mastery`, {
        limit: HEATMAP_PAGE,
        offset: state.mastery.offset,
        at: at ? `${at}T23:59:59Z` : null,
      });
      if (!current("mastery", token)) return;
      state.mastery.data = data;
      state.concepts = data.concepts || [];
      remember({ learners: data.learners || [], concepts: state.concepts });
      fillLearnerPicker();
      await renderHeatmap(data, token);
    } catch (e) {
      if (!current("mastery", token)) return;
      clearChart(chart);
      setState(box, noModel(e) ? "empty" : "error", noModel(e) ? NO_MODEL : errorText(e));
      state.loaded.mastery = null;
    }
  }

  function masteryPager(data) {
    const total = data.group && isNum(data.group.learners) ? data.group.learners : null;
    const n = (data.learners || []).length;
    const offset = data.offset || 0;
    state.mastery.total = total;
    $("mastery-page").textContent = n
      ? `students ${offset + 1}–${offset + n}${total !== null ? ` of ${total}` : ""}`
      : "";
    $("mastery-prev").disabled = offset <= 0;
    $("mastery-next").disabled = total !== null ? offset + n >= total : n < HEATMAP_PAGE;
  }

  /** The colour scale of mastery: red to yellow below the threshold, green from it on. */
  function masteryScale(threshold) {
    const t = isNum(threshold) && threshold > 0 && threshold < 1 ? threshold : 0.8;
    return {
      type: "linear",
      domain: [0, t / 2, t, 1],
      range: ["#d73027", "#fee08b", "#91cf60", "#1a9850"],
      clamp: true,
    };
  }

  async function renderHeatmap(data, token) {
    const box = $("mastery-state");
    const chart = $("heatmap");
    const learners = data.learners || [];
    const concepts = data.concepts || [];
    masteryPager(data);
    const model = data.model;
    const rule = data.rule || {};
    const threshold = isNum(rule.mastery_threshold) ? rule.mastery_threshold : 0.8;
    $("mastery-rule").textContent = data.rule_text
      ? `Statuses: ${data.rule_text}. Colours: the reported mastery (the student's own ` +
        `evidence where practised, the model's estimate where not); green from the ` +
        `threshold ${threshold.toFixed(2)} on.`
      : "";
    chart.dataset.learners = String(learners.length);
    chart.dataset.concepts = String(concepts.length);
    chart.dataset.cells = "0";
    chart.dataset.practised = "0";
    chart.dataset.estimated = "0";
    if (!model) {
      clearChart(chart);
      setState(box, "empty", NO_MODEL);
      return;
    }
    if (!learners.length) {
      clearChart(chart);
      setState(box, "empty", data.offset
        ? "No more students on this page."
        : "No students in this group yet.");
      return;
    }
    if (!concepts.length) {
      clearChart(chart);
      setState(box, "empty", "No concepts in the catalogue yet.");
      return;
    }
    // the concepts shown: all, or those some member of the class has answered
    const counts = data.concept_counts || {};
    const members = data.group && isNum(data.group.learners) ? data.group.learners : learners.length;
    const practisedByClass = (j) => (counts.not_started ? counts.not_started[j] < members : true);
    const onlyPractised = $("mastery-practised").checked;
    const cols = concepts.map((c, j) => j).filter((j) => !onlyPractised || practisedByClass(j));
    const hidden = concepts.length - cols.length;
    $("mastery-meta").textContent = [
      data.group ? `${data.group.name || data.group.id}` : "",
      `${plural(cols.length, "concept")} in curriculum order` +
        (hidden ? ` (${hidden} that nobody in the class has practised hidden)` : ""),
      model ? `model: ${model.name}${model.forgets ? " (forgets over time)" : ""}` : "",
      data.at ? `as of ${fmtDate(data.at)}` : "",
    ].filter(Boolean).join(" · ");
    if (!cols.length) {
      clearChart(chart);
      setState(box, "empty", "Nobody in this class has practised a concept yet: untick " +
        "“only concepts the class has practised” to see the model's estimates.");
      return;
    }
    const shownConcepts = cols.map((j) => concepts[j]);
    const cLabels = uniqueLabels(shownConcepts, (c) => shorten(conceptLabel(c)), (c) => c.concept_id);
    const lLabels = uniqueLabels(learners, learnerLabel, (l) => l.learner_id);
    const values = [];
    let practised = 0;
    learners.forEach((l, i) => {
      cols.forEach((j, k) => {
        const c = concepts[j];
        const m = l.mastery ? l.mastery[j] : null;
        const own = l.answers ? l.answers[j] || 0 : 0;
        const status = l.status ? l.status[j] : own ? "learning" : "not_started";
        if (own > 0) practised += 1;
        const shown = isNum(m) ? m.toFixed(2) : "no estimate";
        values.push({
          learner_id: l.learner_id,
          learner: lLabels[i],
          concept_id: c.concept_id,
          concept: cLabels[k],
          concept_name: conceptLabel(c),
          mastery: isNum(m) ? m : null,
          shown,
          status: status.replace("_", " "),
          answers: own,
          practised: own > 0,
          struggling: status === "struggling",
          dark: isNum(m) && (m < 0.18 || m > 0.93),
          what: own > 0 ? "own answers (evidence)" : "estimated by the model (no own answers)",
          aria: `learner ${l.learner_id}; concept ${c.concept_id}; ${lLabels[i]}, ` +
            `${conceptLabel(c)}: ${status.replace("_", " ")}, mastery ${shown}, ` +
            `${plural(own, "own answer")}`,
        });
      });
    });
    const means = data.concept_means || [];
    const avgValues = cols.map((j, k) => {
      const m = means[j];
      const st = (s) => (counts[s] ? counts[s][j] : null);
      return {
        column: "Class average",
        concept: cLabels[k],
        concept_name: conceptLabel(concepts[j]),
        mastery: isNum(m) ? m : null,
        text: isNum(m) ? m.toFixed(2).replace(/^0/, "") : "",
        dark: isNum(m) && (m < 0.18 || m > 0.93),
        counts: `${st("mastered")} mastered · ${st("learning")} learning · ` +
          `${st("struggling")} struggling · ${st("not_started")} not started`,
        aria: `class average; concept ${concepts[j].concept_id}; ${conceptLabel(concepts[j])}: ` +
          (isNum(m) ? m.toFixed(2) : "no estimate"),
      };
    });
    const cw = learners.length > 35 ? 22 : 27;
    const rh = 19;
    const colour = {
      condition: { test: "datum.mastery === null", value: "#e5e7eb" },
      field: "mastery",
      type: "quantitative",
      scale: masteryScale(threshold),
    };
    const tooltip = [
      { field: "learner", title: "Student" },
      { field: "learner_id", title: "Student id" },
      { field: "concept_name", title: "Concept" },
      { field: "concept_id", title: "Concept id" },
      { field: "status", title: "Status" },
      { field: "shown", title: "Mastery" },
      { field: "answers", title: "Own answers" },
      { field: "what", title: "From" },
    ];
    const y = {
      field: "concept",
      type: "nominal",
      sort: cLabels,
      scale: { domain: cLabels },
      title: null,
    };
    const spec = {
      description: "Mastery per concept (rows) and student (columns), with the class average",
      spacing: 16,
      // the same colours in both parts (fixed domain and range); one legend, the grid's
      resolve: { scale: { color: "independent" }, legend: { color: "independent" } },
      hconcat: [
        {
          name: "average",
          data: { values: avgValues },
          width: { step: 44 },
          height: { step: rh },
          encoding: {
            y: { ...y, axis: { labelLimit: 290, labelFontSize: 11.5, labelPadding: 6, ticks: false, domain: false } },
            x: {
              field: "column",
              type: "nominal",
              title: null,
              axis: { orient: "top", labelAngle: -50, labelAlign: "left", labelFontWeight: 600, ticks: false, domain: false },
            },
          },
          layer: [
            {
              name: "avgcells",
              mark: { type: "rect", stroke: "#ffffff", strokeWidth: 1 },
              encoding: {
                color: { ...colour, legend: null },
                description: { field: "aria" },
                tooltip: [
                  { field: "concept_name", title: "Concept" },
                  { field: "text", title: "Class average mastery" },
                  { field: "counts", title: "Students" },
                ],
              },
            },
            {
              name: "avgtext",
              mark: { type: "text", fontSize: 10, fontWeight: 600, aria: false },
              encoding: {
                text: { field: "text" },
                fill: { condition: { test: "datum.dark", value: "#ffffff" }, value: "#111827" },
                tooltip: [
                  { field: "concept_name", title: "Concept" },
                  { field: "text", title: "Class average mastery" },
                  { field: "counts", title: "Students" },
                ],
              },
            },
          ],
        },
        {
          name: "grid",
          data: { values },
          width: { step: cw },
          height: { step: rh },
          encoding: {
            y: { ...y, axis: null },
            x: {
              field: "learner",
              type: "nominal",
              sort: lLabels,
              title: null,
              axis: { orient: "top", labelAngle: -50, labelAlign: "left", labelLimit: 120, ticks: false, domain: false },
            },
          },
          layer: [
            {
              name: "cells",
              mark: { type: "rect", invalid: "show", stroke: "#ffffff", strokeWidth: 1, cursor: "pointer" },
              encoding: {
                color: {
                  ...colour,
                  legend: {
                    title: ["Mastery", `(threshold ${threshold.toFixed(2)})`],
                    orient: "right",
                    direction: "vertical",
                    gradientLength: 200,
                    values: [0, threshold / 2, threshold, 1],
                    format: ".2f",
                    titleLimit: 400,
                  },
                },
                opacity: { condition: { test: "datum.practised", value: 1 }, value: 0.25 },
                description: { field: "aria" },
                tooltip,
              },
            },
            {
              name: "outline",
              transform: [{ filter: "datum.struggling" }],
              mark: { type: "rect", filled: false, stroke: "#b91c1c", strokeWidth: 2.5, cursor: "pointer", width: cw - 3, height: rh - 3, aria: false },
              encoding: { tooltip },
            },
            {
              name: "answers",
              transform: [{ filter: "datum.practised" }],
              mark: { type: "text", fontSize: 10, cursor: "pointer", aria: false },
              encoding: {
                text: { field: "answers" },
                fill: { condition: { test: "datum.dark", value: "#ffffff" }, value: "#111827" },
                tooltip,
              },
            },
          ],
        },
      ],
    };
    const view = await draw(chart, spec);
    if (!current("mastery", token)) return;
    view.addEventListener("click", (_event, item) => {
      const d = item && item.datum;
      if (d && d.learner_id && d.concept_id !== undefined) openLearner(d.learner_id, d.concept_id);
    });
    chart.dataset.cells = String(values.length);
    chart.dataset.practised = String(practised);
    chart.dataset.estimated = String(values.length - practised);
    chart.dataset.concepts = String(cols.length);
    setState(box, null);
  }

  // ------------------------------------------------------------------ learner timeline
  /** The student picker (every student seen, by name) and the concept to highlight. */
  function fillLearnerPicker() {
    const select = $("learner-select");
    const keep = state.learner.id;
    select.textContent = "";
    select.append(h("option", { value: "", text: "Choose a student…" }));
    const roster = [...state.roster.entries()].sort((a, b) =>
      a[1].localeCompare(b[1], "en", { numeric: true, sensitivity: "base" }));
    for (const [id, label] of roster) {
      select.append(h("option", { value: id, text: label, title: `id ${id}` }));
    }
    if (keep && !state.roster.has(keep)) select.append(h("option", { value: keep, text: keep }));
    select.value = keep || "";
    fillConceptPicker();
  }

  function fillConceptPicker() {
    const concepts = $("learner-concept");
    const focus = state.learner.concept;
    concepts.textContent = "";
    concepts.append(h("option", { value: "", text: "(none)" }));
    // the catalogue in curriculum order where the heatmap has loaded it, else what is known
    const list = state.concepts.length
      ? state.concepts.map((c) => [c.concept_id, conceptLabel(c)])
      : [...state.conceptNames.entries()].sort((a, b) => a[1].localeCompare(b[1]));
    const seen = new Set();
    for (const [id, name] of list) {
      seen.add(id);
      concepts.append(h("option", { value: id, text: shorten(name, 60), title: `${name} (id ${id})` }));
    }
    if (focus && !seen.has(focus)) concepts.append(h("option", { value: focus, text: conceptName(focus) }));
    concepts.value = focus || "";
  }

  function openLearner(learnerId, conceptId) {
    state.learner = { id: learnerId, concept: conceptId || null, shown: [] };
    fillLearnerPicker();
    showTab("learner", { reload: true });
  }

  async function fetchTimeline(id, concepts) {
    const path = `/v1/analytics/learners/${enc(id)}/timeline`;
    return api(path, concepts && concepts.length ? { concepts: concepts.join(",") } : {});
  }

  async function loadLearner() {
    const token = nextSeq("learner");
    const box = $("learner-state");
    const chart = $("timeline");
    const { id, concept } = state.learner;
    const title = $("learner-title");
    title.textContent = id ? `· ${studentName(id)}` : "";
    title.title = id ? `id ${id}` : "";
    $("learner-meta").textContent = "";
    $("learner-note").hidden = true;
    csvButton("learner").disabled = !id;
    if (!id) {
      clearChart(chart);
      setState(box, "empty", "Pick a student above, or click a student's name (class " +
        "overview, groups, at risk) or a cell of the heatmap.");
      return;
    }
    setState(box, "loading", "Loading the timeline…");
    try {
      let tl;
      try {
        tl = await fetchTimeline(id, null);
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 422 && concept)) throw e;
        tl = await fetchTimeline(id, [concept]);
      }
      if (!current("learner", token)) return;
      const points = tl.points || [];
      // the concepts shown: the highlighted one and the learner's most practised
      const counts = new Map();
      for (const p of points) {
        for (const c of p.concepts || []) counts.set(c, (counts.get(c) || 0) + 1);
      }
      const practised = [...counts.entries()].sort((a, b) => b[1] - a[1]).map((x) => x[0]);
      let want = [...new Set([concept, ...practised].filter(Boolean))].slice(0, TIMELINE_CONCEPTS);
      const have = new Set((tl.concepts || []).map((c) => c.concept_id));
      if (want.length && want.some((c) => !have.has(c)) && points.length) {
        tl = await fetchTimeline(id, want);
        if (!current("learner", token)) return;
      }
      if (!want.length) want = (tl.concepts || []).slice(0, TIMELINE_CONCEPTS).map((c) => c.concept_id);
      state.learner.shown = want;
      remember({ concepts: tl.concepts || [] });
      await renderTimeline(tl, want, concept, token);
    } catch (e) {
      if (!current("learner", token)) return;
      clearChart(chart);
      setState(box, noModel(e) ? "empty" : "error", noModel(e) ? NO_MODEL : errorText(e));
      state.loaded.learner = null;
    }
  }

  async function renderTimeline(tl, want, focus, token) {
    const box = $("learner-state");
    const chart = $("timeline");
    const points = tl.points || [];
    const concepts = tl.concepts || [];
    const name = studentName(tl.learner_id);
    const timed = tl.timed !== false;
    const note = $("learner-note");
    note.hidden = timed || !points.length;
    note.textContent = timed ? "" : "These answers carry no real times (imported without a " +
      "clock): the x axis is the answer number, not a date.";
    if (!points.length) {
      clearChart(chart);
      setState(box, "empty", `${name} has no answers yet.`);
      return;
    }
    const shownIdx = concepts
      .map((c, j) => [c, j])
      .filter(([c]) => want.includes(c.concept_id));
    const labels = uniqueLabels(shownIdx.map(([c]) => c), (c) => shorten(conceptLabel(c)), (c) => c.concept_id);
    const values = [];
    for (const p of points) {
      const t = timed ? Date.parse(p.timestamp) : null;
      shownIdx.forEach(([c, j], k) => {
        const m = p.mastery ? p.mastery[j] : null;
        values.push({
          index: p.index,
          t,
          concept: labels[k],
          concept_name: conceptLabel(c),
          focus: c.concept_id === focus,
          practised: (p.concepts || []).includes(c.concept_id),
          mastery: isNum(m) ? m : null,
          answers: p.answers ? p.answers[j] : 0,
          estimate: p.estimate && isNum(p.estimate[j]) ? p.estimate[j] : null,
          item: p.item_id,
          correct: p.correct ? "correct" : "wrong",
          time: timed && p.timestamp ? fmtDate(p.timestamp, true) : "no real time",
        });
      });
    }
    const focusLabel = shownIdx.findIndex(([c]) => c.concept_id === focus);
    const tooltip = [
      { field: "index", title: "Answer #" },
      { field: "time", title: "When" },
      { field: "concept_name", title: "Concept" },
      { field: "mastery", title: "Mastery", format: ".2f" },
      { field: "answers", title: "Own answers so far" },
      { field: "estimate", title: "Model's estimate", format: ".2f" },
      { field: "item", title: "Item" },
      { field: "correct", title: "Answer" },
    ];
    const dotted = values.some((v) => v.practised && (focusLabel < 0 || v.focus));
    const layers = [
      {
        mark: { type: "line" },
        encoding: {
          color: { field: "concept", type: "nominal", sort: labels, legend: { title: "Concept", labelLimit: 260, orient: "bottom", columns: 3 } },
          strokeWidth: { condition: { test: "datum.focus", value: 3.5 }, value: 1.5 },
          opacity: focusLabel >= 0
            ? { condition: { test: "datum.focus", value: 1 }, value: 0.45 }
            : { value: 0.9 },
          tooltip,
        },
      },
      {
        transform: [{ filter: focusLabel >= 0 ? "datum.focus && datum.practised" : "datum.practised" }],
        mark: { type: "point", filled: true, size: 45, stroke: "#ffffff", strokeWidth: 0.8 },
        encoding: {
          fill: { condition: { test: "datum.correct === 'correct'", value: "#16a34a" }, value: "#dc2626" },
          shape: { condition: { test: "datum.correct === 'correct'", value: "circle" }, value: "triangle-down" },
          tooltip,
        },
      },
    ];
    if (!dotted) layers.pop();
    const x = timed
      ? { field: "t", type: "temporal", title: "Date", axis: { labelOverlap: true, grid: true } }
      : { field: "index", type: "quantitative", title: "Answer number (no real times in this data)", scale: { nice: false }, axis: { tickMinStep: 1, format: "d" } };
    const spec = {
      description: `Mastery over ${name}'s answers`,
      width: "container",
      height: 320,
      autosize: { type: "fit-x", contains: "padding" },
      data: { values },
      encoding: {
        x,
        y: { field: "mastery", type: "quantitative", title: "Mastery (own evidence once answered, else the model's estimate)", scale: { domain: [0, 1] }, axis: { format: ".1f" } },
      },
      layer: layers,
    };
    await draw(chart, spec);
    if (!current("learner", token)) return;
    chart.dataset.points = String(points.length);
    chart.dataset.concepts = String(shownIdx.length);
    chart.dataset.timed = String(timed);
    const focusName = focusLabel >= 0 ? shownIdx[focusLabel][0] : null;
    const first = points[0];
    const last = points[points.length - 1];
    $("learner-meta").textContent = [
      `${plural(last.index, "answer")}`,
      timed ? `${fmtDate(first.timestamp)} – ${fmtDate(last.timestamp)}` : "",
      points.length < last.index ? `${points.length} of them drawn` : "",
      tl.model ? `model: ${tl.model.name || tl.model.id}` : "",
      focusName
        ? `highlighted: ${conceptLabel(focusName)} ` +
          (dotted ? "(dots: answers on it, green = correct, red = wrong)" : "(no answer on it yet)")
        : "dots: answers (green = correct, red = wrong)",
    ].filter(Boolean).join(" · ");
    setState(box, null);
  }

  // ------------------------------------------------------------------ suggested groups
  async function loadGroups() {
    const token = nextSeq("groups");
    const box = $("groups-view-state");
    const cards = $("groups-cards");
    setState(box, "loading", "Grouping the class…");
    try {
      const data = await api(`/v1/analytics/groups/${enc(state.group)}/suggested-groups`);
      if (!current("groups", token)) return;
      renderGroups(data);
    } catch (e) {
      if (!current("groups", token)) return;
      cards.textContent = "";
      setState(box, noModel(e) ? "empty" : "error", noModel(e) ? NO_MODEL : errorText(e));
      state.loaded.groups = null;
    }
  }

  function studentChips(list) {
    return list.map((st) => studentButton(st.learner_id, learnerLabel(st), null, "chip"));
  }

  function renderGroups(data) {
    const box = $("groups-view-state");
    const cards = $("groups-cards");
    const groups = data.groups || [];
    const idle = data.not_started || [];
    remember({ learners: [...groups.flatMap((g) => g.students || []), ...idle] });
    fillLearnerPicker();
    cards.textContent = "";
    cards.dataset.groups = String(groups.length);
    const sil = isNum(data.silhouette)
      ? ` Separation of the groups (silhouette, −1 to 1): ${data.silhouette.toFixed(2)}` +
        (data.silhouette < 0.25 ? ": weak, many students sit between groups; treat the split as a starting point." : ".")
      : "";
    $("groups-method").textContent = data.method ? `How: ${data.method}.${sil}` : "";
    if (!groups.length && !idle.length) {
      setState(box, "empty", "No students in this group yet.");
      return;
    }
    for (const g of groups) {
      const mc = g.mean_counts || {};
      const needs = (g.needs || []).map((c) => h("li", {
        class: c.struggling ? "struggling" : null,
        title: `${c.name} (id ${c.concept_id})`,
      },
        shorten(conceptLabel(c), 48),
        h("span", { class: "muted", text: ` · ${[
          c.struggling ? `${c.struggling} struggling` : "",
          c.learning ? `${c.learning} learning` : "",
        ].filter(Boolean).join(", ")}` })));
      const ready = g.ready_to_learn;
      cards.append(h("article", { class: "group-card", dataset: { group: String(g.group) } },
        h("h3", { text: `Group ${g.group} · ${plural(g.size, "student")}` }),
        h("p", { class: "summary", text: g.summary ? g.summary.charAt(0).toUpperCase() + g.summary.slice(1) : "" }),
        h("dl", {},
          h("dt", { text: "Students" }), h("dd", {}, studentChips(g.students || [])),
          h("dt", { text: "Needs" }), h("dd", {}, needs.length ? h("ul", { class: "needs" }, needs) : h("span", { class: "muted", text: "nothing open on the practised concepts" })),
          h("dt", { text: "Ready to learn" }), h("dd", {}, ready
            ? h("span", { class: "chip ready", title: `${ready.name} (id ${ready.concept_id})`, text: `${shorten(conceptLabel(ready), 40)} · ${ready.students} of ${g.size}` })
            : h("span", { class: "muted", text: "–" })),
          h("dt", { text: "On average" }), h("dd", { class: "muted", text:
            `${num(mc.mastered, 1)} mastered · ${num(mc.learning, 1)} learning · ` +
            `${num(mc.struggling, 1)} struggling` }),
        ),
      ));
    }
    if (idle.length) {
      cards.append(h("article", { class: "group-card idle", dataset: { group: "not-started" } },
        h("h3", { text: `Not started · ${plural(idle.length, "student")}` }),
        h("p", { class: "summary", text: "No answers yet: get them started." }),
        h("dl", {}, h("dt", { text: "Students" }), h("dd", {}, studentChips(idle))),
      ));
    }
    setState(box, null);
  }

  // ------------------------------------------------------------------ learning curves
  async function loadCurves() {
    const token = nextSeq("curves");
    const box = $("curves-state");
    setState(box, "loading", "Loading learning curves…");
    $("curves-note").textContent = "";
    try {
      const data = await api(`/v1/analytics/groups/${enc(state.group)}/learning-curves`, {
        max_opportunity: 20,
      });
      if (!current("curves", token)) return;
      state.curves.data = data;
      const all = data.curves || [];
      remember({ concepts: all });
      const curves = all.filter((c) => (c.points || []).length);
      const select = $("curves-concept");
      select.textContent = "";
      const minL = data.min_learners;
      const hiddenTotal = all.reduce((n, c) => n + (c.hidden_points || 0), 0);
      const without = all.length - curves.length;
      $("curves-note").textContent = isNum(minL)
        ? `Points with fewer than ${plural(minL, "learner")} are hidden (a rate over a handful ` +
          `of students is noise): ${plural(hiddenTotal, "point")} hidden` +
          (without ? `; ${plural(without, "practised concept")} without any point left.` : ".")
        : "";
      for (const el of [select, document.querySelector('label[for="curves-concept"]')]) {
        el.hidden = !curves.length;
      }
      if (!curves.length) {
        clearChart($("curves"));
        setState(box, "empty", all.length
          ? `No concept has a point with at least ${plural(minL, "learner")} yet: too few ` +
            "students have practised the same concept as often."
          : "No answers in this group yet: no learning curve to draw.");
        return;
      }
      // the concepts with the longest curves first
      const first = (c) => (c.points[0] && c.points[0].learners) || 0;
      const ranked = [...curves].sort((a, b) => b.points.length - a.points.length || first(b) - first(a));
      for (const c of ranked) {
        select.append(h("option", {
          value: c.concept_id,
          title: `${c.name} (id ${c.concept_id})`,
          text: `${shorten(conceptLabel(c), 50)} · ${plural(c.points.length, "point")}, ${first(c)} learners`,
        }));
      }
      if (!curves.some((c) => c.concept_id === state.curves.concept)) {
        state.curves.concept = ranked[0].concept_id;
      }
      select.value = state.curves.concept;
      await renderCurve(token);
    } catch (e) {
      if (!current("curves", token)) return;
      clearChart($("curves"));
      setState(box, noModel(e) ? "empty" : "error", noModel(e) ? NO_MODEL : errorText(e));
      state.loaded.curves = null;
    }
  }

  async function renderCurve(token) {
    const data = state.curves.data;
    const curve = (data.curves || []).find((c) => c.concept_id === state.curves.concept);
    if (!curve) return;
    const values = [];
    const band = [];
    for (const p of curve.points) {
      for (const [series, key] of [["observed", "observed_error"], ["predicted", "predicted_error"]]) {
        if (isNum(p[key])) {
          values.push({
            opportunity: p.opportunity,
            series,
            error: p[key],
            learners: p.learners,
            interval: series === "observed" && isNum(p.observed_low)
              ? `${num(p.observed_low)}–${num(p.observed_high)}`
              : "",
          });
        }
      }
      if (isNum(p.observed_low) && isNum(p.observed_high)) {
        band.push({ opportunity: p.opportunity, low: p.observed_low, high: p.observed_high, learners: p.learners });
      }
    }
    const tooltip = [
      { field: "opportunity", title: "Opportunity" },
      { field: "series", title: "Series" },
      { field: "error", title: "Error rate", format: ".2f" },
      { field: "interval", title: "95% interval" },
      { field: "learners", title: "Learners" },
    ];
    const hidden = curve.hidden_points || 0;
    const x = {
      field: "opportunity",
      type: "quantitative",
      title: "Opportunity (n-th practice of the concept)",
      scale: { domainMin: 1, nice: false },
      axis: { tickMinStep: 1, format: "d" },
    };
    const yScale = { domain: [0, 1] };
    const spec = {
      description: `Learning curve of ${conceptLabel(curve)}`,
      title: {
        text: conceptLabel(curve),
        subtitle: hidden
          ? `${plural(hidden, "opportunity", "opportunities")} with fewer than ${data.min_learners} learners hidden`
          : "",
        anchor: "start",
        fontSize: 14,
      },
      width: "container",
      height: 300,
      autosize: { type: "fit-x", contains: "padding" },
      layer: [
        {
          data: { values: band },
          mark: { type: "area", color: "#2563eb", opacity: 0.15 },
          encoding: {
            x,
            y: { field: "low", type: "quantitative", title: "Error rate", scale: yScale, axis: { format: ".1f" } },
            y2: { field: "high" },
            tooltip: [
              { field: "opportunity", title: "Opportunity" },
              { field: "low", title: "Observed, 95% low", format: ".2f" },
              { field: "high", title: "Observed, 95% high", format: ".2f" },
            ],
          },
        },
        {
          // the interval as an error bar too: a curve of one point has no band to draw
          data: { values: band },
          mark: { type: "rule", color: "#2563eb", opacity: 0.35, strokeWidth: 2 },
          encoding: { x, y: { field: "low", type: "quantitative", scale: yScale }, y2: { field: "high" } },
        },
        {
          data: { values },
          encoding: {
            x,
            y: { field: "error", type: "quantitative", title: "Error rate", scale: yScale },
            color: {
              field: "series",
              type: "nominal",
              scale: { domain: ["observed", "predicted"], range: ["#2563eb", "#f97316"] },
              legend: {
                title: null,
                orient: "top-right",
                labelExpr: "datum.label === 'observed' ? 'observed (band: 95% interval)' : 'predicted by the model'",
                labelLimit: 260,
              },
            },
          },
          layer: [
            { mark: { type: "line" }, encoding: { strokeDash: { field: "series", type: "nominal", scale: { domain: ["observed", "predicted"], range: [[1, 0], [6, 4]] } } } },
            { mark: { type: "point", filled: true, size: 60 }, encoding: { tooltip } },
          ],
        },
      ],
    };
    await draw($("curves"), spec);
    if (token !== undefined && !current("curves", token)) return;
    $("curves").dataset.points = String(curve.points.length);
    $("curves").dataset.band = String(band.length);
    setState($("curves-state"), null);
  }

  // ------------------------------------------------------------------ items table
  async function loadItems() {
    const token = nextSeq("items");
    const box = $("items-state");
    const table = $("items-table");
    setState(box, "loading", "Loading items…");
    const { sort, desc, offset } = state.items;
    for (const th of table.querySelectorAll("th.sortable")) {
      th.setAttribute("aria-sort", th.dataset.sort === sort ? (desc ? "descending" : "ascending") : "none");
    }
    try {
      const data = await api(`/v1/analytics/groups/${enc(state.group)}/items`, {
        sort,
        desc,
        limit: ITEMS_PAGE,
        offset,
      });
      if (!current("items", token)) return;
      const items = data.items || [];
      const total = isNum(data.total) ? data.total : items.length;
      // a model without a discrimination parameter (DKT, ...): no column of dashes
      const hasDisc = items.some((it) => isNum(it.discrimination));
      for (const col of table.querySelectorAll("th.col-disc")) col.hidden = !hasDisc;
      const th = data.thresholds || {};
      $("items-thresholds").textContent = isNum(th.item_flag_min_attempts)
        ? `Grey rows: too little data to judge (fewer than ${fmtValue(th.item_flag_min_attempts)} ` +
          `attempts or ${fmtValue(th.item_flag_min_learners)} learners); an item is flagged when ` +
          `the gap is beyond ${fmtValue(th.item_flag_z)} standard errors.`
        : "";
      $("items-page").textContent = items.length
        ? `items ${offset + 1}–${offset + items.length} of ${total}`
        : "";
      $("items-prev").disabled = offset <= 0;
      $("items-next").disabled = offset + items.length >= total;
      const body = table.querySelector("tbody");
      body.textContent = "";
      if (!items.length) {
        table.hidden = true;
        setState(box, "empty", offset ? "No more items." : "No items answered by this group yet.");
        return;
      }
      for (const it of items) {
        const gap = isNum(it.observed_success) && isNum(it.predicted_success)
          ? it.observed_success - it.predicted_success
          : null;
        const names = (it.concept_names && it.concept_names.length === (it.concepts || []).length)
          ? it.concept_names
          : (it.concepts || []).map(conceptName);
        const observed = isNum(it.observed_success)
          ? `${num(it.observed_success)}` +
            (isNum(it.observed_low) ? ` (${num(it.observed_low)}–${num(it.observed_high)})` : "")
          : "–";
        const cls = [it.flagged ? "flagged" : "", it.enough_data === false ? "thin" : ""].filter(Boolean).join(" ");
        body.append(h("tr", {
          class: cls || null,
          title: it.enough_data === false ? "too little data to judge this item" : null,
          dataset: { item: it.item_id, enough: String(it.enough_data !== false), flagged: String(!!it.flagged) },
        },
          h("td", { text: it.item_id }),
          h("td", { title: (it.concepts || []).map((c, k) => `${names[k]} (id ${c})`).join(", ") },
            names.map((n) => shorten(n)).join(", ")),
          h("td", { class: "num", text: fmtValue(it.attempts) }),
          h("td", { class: "num", text: fmtValue(it.learners) }),
          h("td", { class: "num nowrap", text: observed }),
          h("td", { class: "num", text: num(it.predicted_success) }),
          h("td", { class: "num gap" + (it.flagged ? " warn" : ""), text: signedPts(gap) }),
          h("td", { class: "num", text: num(it.difficulty) }),
          hasDisc ? h("td", { class: "num", text: num(it.discrimination) }) : null,
          h("td", {}, it.flagged ? h("span", { class: "badge warn", title: it.flag_reason || "", text: it.flag_reason || "flagged" }) : ""),
        ));
      }
      table.hidden = false;
      setState(box, null);
    } catch (e) {
      if (!current("items", token)) return;
      table.hidden = true;
      setState(box, noModel(e) ? "empty" : "error", noModel(e) ? NO_MODEL : errorText(e));
      state.loaded.items = null;
    }
  }

  // ------------------------------------------------------------------ at-risk list
  /** A student's reasons, most pressing first: the first RISK_REASONS_SHOWN, the rest
   *  folded under "N more reasons" (a student with thousands of answers can have dozens). */
  const RISK_REASONS_SHOWN = 5;
  function riskReasons(list) {
    const item = (r) => h("li", { text: typeof r === "string" ? r : fmtValue(r) });
    const first = h("ol", { class: "reasons" }, list.slice(0, RISK_REASONS_SHOWN).map(item));
    if (list.length <= RISK_REASONS_SHOWN) return first;
    const rest = list.slice(RISK_REASONS_SHOWN);
    return h("div", {}, first, h("details", { class: "reasons-more" },
      h("summary", { text: `${rest.length} more reason${rest.length === 1 ? "" : "s"}` }),
      h("ol", { class: "reasons", start: String(RISK_REASONS_SHOWN + 1) }, rest.map(item))));
  }

  async function loadRisk() {
    const token = nextSeq("risk");
    const box = $("risk-state");
    const table = $("risk-table");
    setState(box, "loading", "Loading students at risk…");
    try {
      const data = await api(`/v1/analytics/groups/${enc(state.group)}/at-risk`);
      if (!current("risk", token)) return;
      const th = data.thresholds || {};
      const v = (k, d) => fmtValue(isNum(th[k]) ? th[k] : d);
      $("risk-thresholds").textContent = Object.keys(th).length
        ? "Listed when a student struggles with a concept, has a mean mastery below " +
          `${v("risk_low_mastery", 0.5)} on the concepts they practised, an estimated mastery falling by more ` +
          `than ${v("risk_mastery_drop", 0.1)} over the last ${v("risk_window_answers", 10)} ` +
          `answers, no answers, or no answer for more than ${v("risk_inactive_days", 14)} days. ` +
          "Severity adds the reasons up (each concept struggled with weighs most)."
        : "";
      $("risk-reference").textContent = data.timed === false
        ? "No real times in this data: inactivity is not assessed."
        : data.reference_time
          ? `Inactivity is measured against ${data.reference || "now"} (${fmtDate(data.reference_time)}).`
          : "";
      const rows = data.learners || [];
      remember({ learners: rows });
      fillLearnerPicker();
      const body = table.querySelector("tbody");
      body.textContent = "";
      if (!rows.length) {
        table.hidden = true;
        setState(box, "empty", "No student of this group is at risk.");
        return;
      }
      for (const l of rows) {
        const reasons = riskReasons(l.reasons || []);
        const inactive = data.timed === false
          ? h("span", { class: "muted", title: "no real times in this data", text: "–" })
          : isNum(l.days_inactive)
            ? h("span", { title: l.last_activity ? `last answer ${fmtDate(l.last_activity, true)}` : "", text: l.days_inactive.toFixed(0) })
            : "–";
        body.append(h("tr", { dataset: { learner: l.learner_id } },
          h("th", { scope: "row" }, studentButton(l.learner_id, learnerLabel(l))),
          h("td", { class: "num" }, h("span", {
            class: "severity" + (isNum(l.severity) && l.severity >= 6 ? " high" : ""),
            text: fmtValue(l.severity),
          })),
          h("td", {}, reasons),
          h("td", { class: "num", text: num(l.mean_mastery) }),
          h("td", { class: "num" + (isNum(l.mastery_change) && l.mastery_change < 0 ? " warn" : ""), text: isNum(l.mastery_change) ? `${l.mastery_change > 0 ? "+" : l.mastery_change < 0 ? "−" : "±"}${Math.abs(l.mastery_change).toFixed(2)}` : "–" }),
          h("td", { class: "num" }, inactive),
        ));
      }
      table.hidden = false;
      setState(box, null);
    } catch (e) {
      if (!current("risk", token)) return;
      table.hidden = true;
      setState(box, noModel(e) ? "empty" : "error", noModel(e) ? NO_MODEL : errorText(e));
      state.loaded.risk = null;
    }
  }

  // ------------------------------------------------------------------ model card
  /** Key-value pairs; nested objects become nested lists (null values are left out). */
  function kvNodes(obj, depth = 0) {
    const out = [];
    for (const [k, v] of Object.entries(obj || {})) {
      if (v === null || v === undefined) continue;
      const dd = h("dd");
      if (v && typeof v === "object" && !Array.isArray(v) && depth < 2) {
        const inner = h("dl", { class: "kv nested" }, kvNodes(v, depth + 1));
        const n = Object.keys(v).length;
        // big nested records (a run's configuration, dataset counts) start folded
        dd.append(n > 6 ? h("details", {}, h("summary", { text: `${n} fields` }), inner) : inner);
      } else {
        dd.textContent = fmtValue(v);
      }
      out.push(h("dt", { text: k.replaceAll("_", " ") }), dd);
    }
    return out;
  }

  function fillKv(dl, obj) {
    dl.textContent = "";
    const nodes = obj && typeof obj === "object" ? kvNodes(obj) : [];
    if (!nodes.length) {
      dl.append(h("dt", { text: "–" }), h("dd", { text: "nothing recorded" }));
      return;
    }
    dl.append(...nodes);
  }

  function flatten(obj, prefix = "", out = []) {
    for (const [k, v] of Object.entries(obj || {})) {
      const key = prefix ? `${prefix} · ${k}` : k;
      if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
      else out.push([key, v]);
    }
    return out;
  }

  async function loadModel() {
    const token = nextSeq("model");
    const box = $("model-state");
    const body = $("model-body");
    setState(box, "loading", "Loading the model card…");
    try {
      const card = await api("/v1/analytics/model-card");
      if (!current("model", token)) return;
      if (!card || !card.model) {
        body.hidden = true;
        setState(box, "empty", "No active model: an admin registers and activates one " +
          "(tutor models register / activate).");
        return;
      }
      body.hidden = false;
      setState(box, null);
      fillKv($("model-info"), card.model);
      fillKv($("model-training"), card.training);
      const mt = $("model-metrics").querySelector("tbody");
      mt.textContent = "";
      const metrics = flatten(card.metrics).filter(([, v]) => v !== null && v !== undefined);
      if (!metrics.length) mt.append(h("tr", {}, h("td", { class: "muted", text: "No metrics recorded for this model." })));
      for (const [k, v] of metrics) mt.append(h("tr", {}, h("th", { scope: "row", text: k }), h("td", { class: "num", text: fmtValue(v) })));
      await renderCalibration(card.calibration);
      await renderGraph(card.prerequisite_graph);
      renderTraits(card.traits);
    } catch (e) {
      if (!current("model", token)) return;
      body.hidden = true;
      setState(box, noModel(e) ? "empty" : "error", noModel(e) ? NO_MODEL : errorText(e));
      state.loaded.model = null;
    }
  }

  async function renderCalibration(rows) {
    const box = $("calibration-state");
    const chart = $("calibration");
    const pick = (r, keys) => keys.map((k) => r[k]).find(isNum);
    const values = (rows || [])
      .map((r) => ({
        predicted: pick(r, ["predicted", "mean_predicted", "p"]),
        observed: pick(r, ["observed", "observed_rate", "mean_observed", "y"]),
        n: pick(r, ["n", "count", "answers"]) ?? 1,
        bin: isNum(r.bin_low) && isNum(r.bin_high) ? `${pct(r.bin_low)}–${pct(r.bin_high)}` : "",
      }))
      .filter((r) => isNum(r.predicted) && isNum(r.observed));
    if (!values.length) {
      clearChart(chart);
      setState(box, "empty", "No calibration data for this model (it has not been evaluated).");
      return;
    }
    setState(box, null);
    await draw(chart, {
      description: "Calibration: observed vs predicted success",
      width: 320,
      height: 320,
      layer: [
        {
          data: { values: [{ a: 0, b: 0, a2: 1, b2: 1 }] },
          mark: { type: "rule", strokeDash: [4, 4], color: "#9ca3af" },
          encoding: { x: { field: "a", type: "quantitative" }, y: { field: "b", type: "quantitative" }, x2: { field: "a2" }, y2: { field: "b2" } },
        },
        {
          data: { values },
          mark: { type: "line", point: { filled: true }, color: "#2563eb" },
          encoding: {
            x: { field: "predicted", type: "quantitative", title: "Predicted success", scale: { domain: [0, 1] }, axis: { format: ".0%" } },
            y: { field: "observed", type: "quantitative", title: "Observed success", scale: { domain: [0, 1] }, axis: { format: ".0%" } },
            tooltip: [
              { field: "bin", title: "Bin" },
              { field: "predicted", format: ".1%", title: "Predicted" },
              { field: "observed", format: ".1%", title: "Observed" },
              { field: "n", title: "Answers" },
            ],
          },
        },
      ],
    });
  }

  function normaliseGraph(graph) {
    const nodes = (graph.nodes || []).map((n) =>
      typeof n === "object" && n !== null
        ? { id: String(n.id ?? n.concept_id), name: n.name || String(n.id ?? n.concept_id) }
        : { id: String(n), name: String(n) });
    const edges = (graph.edges || []).map((e) => {
      if (Array.isArray(e)) return { source: String(e[0]), target: String(e[1]), weight: isNum(e[2]) ? e[2] : 1 };
      const w = [e.weight, e.probability, e.p, e.strength].find(isNum);
      return {
        source: String(e.source ?? e.from ?? e.prerequisite),
        target: String(e.target ?? e.to ?? e.concept),
        weight: isNum(w) ? w : 1,
      };
    });
    const known = new Set(nodes.map((n) => n.id));
    for (const e of edges) {
      for (const id of [e.source, e.target]) {
        if (!known.has(id)) {
          known.add(id);
          nodes.push({ id, name: id });
        }
      }
    }
    return { nodes, edges };
  }

  /** Layered layout: x = longest path from a root (a circle when the graph has a cycle). */
  function layout(nodes, edges, width) {
    const ids = nodes.map((n) => n.id);
    const indeg = new Map(ids.map((i) => [i, 0]));
    const out = new Map(ids.map((i) => [i, []]));
    for (const e of edges) {
      indeg.set(e.target, indeg.get(e.target) + 1);
      out.get(e.source).push(e.target);
    }
    const depth = new Map(ids.map((i) => [i, 0]));
    const queue = ids.filter((i) => indeg.get(i) === 0);
    let seen = 0;
    while (queue.length) {
      const i = queue.shift();
      seen += 1;
      for (const j of out.get(i)) {
        depth.set(j, Math.max(depth.get(j), depth.get(i) + 1));
        indeg.set(j, indeg.get(j) - 1);
        if (indeg.get(j) === 0) queue.push(j);
      }
    }
    const pos = new Map();
    if (seen < ids.length) {
      const r = Math.max(120, ids.length * 9);
      ids.forEach((id, k) => {
        const a = (2 * Math.PI * k) / ids.length;
        pos.set(id, { x: r + 80 + r * Math.cos(a), y: r + 30 + r * Math.sin(a) });
      });
      return { pos, width: 2 * r + 160, height: 2 * r + 60, kind: "circle (the graph has a cycle)" };
    }
    const layers = new Map();
    for (const id of ids) {
      const d = depth.get(id);
      if (!layers.has(d)) layers.set(d, []);
      layers.get(d).push(id);
    }
    const nLayers = layers.size;
    const tallest = Math.max(...[...layers.values()].map((l) => l.length));
    const dx = Math.min(240, Math.max(110, (width - 200) / Math.max(1, nLayers - 1)));
    const dy = 44;
    for (const [d, list] of layers) {
      list.forEach((id, k) => pos.set(id, { x: 80 + d * dx, y: 30 + (k + (tallest - list.length) / 2) * dy }));
    }
    return { pos, width: 160 + (nLayers - 1) * dx, height: 60 + (tallest - 1) * dy, kind: "layers by prerequisite depth" };
  }

  async function renderGraph(graph) {
    const box = $("graph-state");
    const chart = $("graph");
    if (!graph || !(graph.nodes || []).length) {
      clearChart(chart);
      setState(box, "empty", "This model learns no prerequisite graph (PSI-KT does).");
      return;
    }
    let { nodes, edges } = normaliseGraph(graph);
    let note = "";
    if (!edges.length) {
      clearChart(chart);
      const above = isNum(graph.threshold) ? ` above ${graph.threshold}` : "";
      setState(box, "empty", `The model's prerequisite graph has no edge${above}.`);
      return;
    }
    const linked = new Set(edges.flatMap((e) => [e.source, e.target]));
    if (linked.size < nodes.length) {
      const n = nodes.length - linked.size;
      note = `${n} concept${n === 1 ? "" : "s"} without an edge not shown; `;
      nodes = nodes.filter((n) => linked.has(n.id));
    }
    if (nodes.length > GRAPH_MAX_NODES) {
      const degree = new Map(nodes.map((n) => [n.id, 0]));
      for (const e of edges) {
        degree.set(e.source, degree.get(e.source) + e.weight);
        degree.set(e.target, degree.get(e.target) + e.weight);
      }
      const keep = new Set([...nodes].sort((a, b) => degree.get(b.id) - degree.get(a.id)).slice(0, GRAPH_MAX_NODES).map((n) => n.id));
      note += `the ${GRAPH_MAX_NODES} most connected of ${nodes.length} linked concepts; `;
      nodes = nodes.filter((n) => keep.has(n.id));
      edges = edges.filter((e) => keep.has(e.source) && keep.has(e.target));
    }
    const width = Math.max(480, (chart.clientWidth || 800) - 60);
    const lay = layout(nodes, edges, width);
    const nodeValues = nodes.map((n) => ({ ...lay.pos.get(n.id), id: n.id, name: n.name }));
    const edgeValues = edges.map((e) => {
      const a = lay.pos.get(e.source);
      const b = lay.pos.get(e.target);
      return {
        x: a.x, y: a.y, x2: b.x, y2: b.y,
        ax: a.x + 0.8 * (b.x - a.x), ay: a.y + 0.8 * (b.y - a.y),
        angle: (Math.atan2(b.y - a.y, b.x - a.x) * 180) / Math.PI,
        weight: e.weight,
        label: `${e.source} → ${e.target}`,
      };
    });
    const px = (field) => ({ field, type: "quantitative", scale: null, axis: null });
    setState(box, null);
    await draw(chart, {
      description: "Prerequisite graph",
      width: lay.width,
      height: lay.height,
      layer: [
        {
          data: { values: edgeValues },
          mark: { type: "rule", color: "#93c5fd" },
          encoding: {
            x: px("x"), y: px("y"), x2: { field: "x2" }, y2: { field: "y2" },
            strokeWidth: { field: "weight", type: "quantitative", scale: { range: [0.6, 3] }, legend: null },
            tooltip: [{ field: "label", title: "Edge" }, { field: "weight", title: "Weight", format: ".2f" }],
          },
        },
        {
          data: { values: edgeValues },
          mark: { type: "point", shape: "triangle-right", filled: true, size: 50, color: "#3b82f6" },
          encoding: { x: px("ax"), y: px("ay"), angle: { field: "angle", type: "quantitative", scale: null } },
        },
        {
          data: { values: nodeValues },
          mark: { type: "circle", size: 160, color: "#f97316", stroke: "#7c2d12", strokeWidth: 0.6 },
          encoding: { x: px("x"), y: px("y"), tooltip: [{ field: "id", title: "Concept" }, { field: "name", title: "Name" }] },
        },
        {
          data: { values: nodeValues },
          mark: { type: "text", dy: -13, fontSize: 10, limit: 130, color: "#111827" },
          encoding: { x: px("x"), y: px("y"), text: { field: "name" } },
        },
      ],
    });
    $("graph").dataset.nodes = String(nodes.length);
    if (note || lay.kind) {
      chart.append(h("p", { class: "muted", text: `${note}arrow = prerequisite → dependent; ${lay.kind}` }));
    }
  }

  function renderTraits(traits) {
    const box = $("traits-state");
    const table = $("model-traits");
    const body = table.querySelector("tbody");
    body.textContent = "";
    const entries = traits && typeof traits === "object" ? Object.entries(traits) : [];
    if (!entries.length) {
      table.hidden = true;
      setState(box, "empty", "This model has no learner traits (PSI-KT does).");
      return;
    }
    for (const [k, v] of entries) body.append(h("tr", {}, h("th", { scope: "row", text: k }), h("td", { text: fmtValue(v) })));
    table.hidden = false;
    setState(box, null);
  }

  // ------------------------------------------------------------------ CSV export
  /** Each table's route and query, the same as the view's (CSV: every row, no paging). */
  const CSV_SOURCES = {
    class: () => [`/v1/analytics/groups/${enc(state.group)}/students`, { sort: state.class.sort }],
    reteach: () => [`/v1/analytics/groups/${enc(state.group)}/reteach`, {}],
    mastery: () => {
      const at = $("mastery-at").value;
      return [`/v1/analytics/groups/${enc(state.group)}/mastery`, { at: at ? `${at}T23:59:59Z` : null }];
    },
    groups: () => [`/v1/analytics/groups/${enc(state.group)}/suggested-groups`, {}],
    risk: () => [`/v1/analytics/groups/${enc(state.group)}/at-risk`, {}],
    curves: () => [`/v1/analytics/groups/${enc(state.group)}/learning-curves`, { max_opportunity: 20 }],
    items: () => [`/v1/analytics/groups/${enc(state.group)}/items`, { sort: state.items.sort, desc: state.items.desc }],
    learner: () => state.learner.id
      ? [`/v1/analytics/learners/${enc(state.learner.id)}/timeline`, {
        concepts: state.learner.shown.length ? state.learner.shown.join(",") : null,
      }]
      : null,
  };

  const csvButton = (name) => document.querySelector(`button.csv[data-csv="${name}"]`);

  /** The file name of a Content-Disposition header (RFC 6266: filename* first). */
  function filenameFrom(header) {
    if (!header) return null;
    const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(header);
    if (star) {
      try {
        return decodeURIComponent(star[1].trim().replace(/^"|"$/g, ""));
      } catch (_) {
        // fall through to the plain name
      }
    }
    const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(header);
    return plain ? plain[1].trim() : null;
  }

  function csvNote(button, kind, text) {
    let note = button.nextElementSibling;
    if (!note || !note.classList.contains("csv-note")) {
      note = h("span", { class: "csv-note", role: "status" });
      button.after(note);
    }
    note.className = `csv-note${kind === "error" ? " error" : ""}`;
    note.textContent = text;
  }

  /** Fetch the view's table as CSV (with the key) and save it through a blob link. */
  async function downloadCsv(button) {
    const source = CSV_SOURCES[button.dataset.csv];
    const target = source && state.group ? source() : null;
    if (!target) return;
    const [path, params] = target;
    const url = apiUrl(path, { ...params, format: "csv" });
    const label = button.textContent;
    button.disabled = true;
    button.textContent = "Preparing…";
    try {
      let response;
      try {
        response = await fetch(url, {
          headers: { Authorization: `Bearer ${state.key}`, Accept: "text/csv" },
          cache: "no-store",
        });
      } catch (err) {
        throw new ApiError(0, `cannot reach the server (${err.message})`);
      }
      if (!response.ok) {
        let body = null;
        try {
          body = await response.json();
        } catch (_) {
          body = null;
        }
        const err = new ApiError(response.status, detailText(body, response));
        if (response.status === 401) logout(`Logged out: ${err.message}`);
        throw err;
      }
      const blob = await response.blob();
      const name = filenameFrom(response.headers.get("Content-Disposition")) ||
        `${button.dataset.csv}.csv`;
      const href = URL.createObjectURL(blob);
      const link = h("a", { href, download: name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(href), 60000);
      button.dataset.downloaded = name;
      csvNote(button, "ok", `saved ${name}`);
    } catch (e) {
      csvNote(button, "error", `CSV failed: ${errorText(e)}`);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  // ------------------------------------------------------------------ wiring
  function wire() {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("api-key").value.trim();
      if (key) login(key);
    });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(GROUP_STORE);
      logout("");
    });
    $("group-select").addEventListener("change", (ev) => selectGroup(ev.target.value || null));
    for (const b of document.querySelectorAll(".tabs [role=tab]")) {
      b.addEventListener("click", () => showTab(b.dataset.tab));
    }
    $("class-sort").addEventListener("change", (ev) => {
      Object.assign(state.class, { sort: ev.target.value || "name", offset: 0 });
      showTab("class", { reload: true });
    });
    $("class-prev").addEventListener("click", () => {
      state.class.offset = Math.max(0, state.class.offset - CLASS_PAGE);
      showTab("class", { reload: true });
    });
    $("class-next").addEventListener("click", () => {
      state.class.offset += CLASS_PAGE;
      showTab("class", { reload: true });
    });
    $("reteach-more").addEventListener("click", () => {
      state.reteach.all = !state.reteach.all;
      if (state.reteach.data) renderReteach();
    });
    for (const b of document.querySelectorAll("button.csv")) {
      b.addEventListener("click", () => downloadCsv(b));
    }
    $("mastery-practised").addEventListener("change", () => {
      if (state.mastery.data) {
        renderHeatmap(state.mastery.data, state.seq.mastery)
          .catch((e) => setState($("mastery-state"), "error", errorText(e)));
      }
    });
    $("mastery-at").addEventListener("change", () => {
      state.mastery.offset = 0;
      showTab("mastery", { reload: true });
    });
    $("mastery-prev").addEventListener("click", () => {
      state.mastery.offset = Math.max(0, state.mastery.offset - HEATMAP_PAGE);
      showTab("mastery", { reload: true });
    });
    $("mastery-next").addEventListener("click", () => {
      state.mastery.offset += HEATMAP_PAGE;
      showTab("mastery", { reload: true });
    });
    $("learner-select").addEventListener("change", (ev) => {
      state.learner.id = ev.target.value || null;
      showTab("learner", { reload: true });
    });
    $("learner-concept").addEventListener("change", (ev) => {
      state.learner.concept = ev.target.value || null;
      showTab("learner", { reload: true });
    });
    $("curves-concept").addEventListener("change", (ev) => {
      state.curves.concept = ev.target.value;
      renderCurve().catch((e) => setState($("curves-state"), "error", errorText(e)));
    });
    for (const th of document.querySelectorAll("#items-table th.sortable")) {
      th.tabIndex = 0;
      const sort = () => {
        if (state.items.sort === th.dataset.sort) state.items.desc = !state.items.desc;
        else Object.assign(state.items, { sort: th.dataset.sort, desc: true });
        state.items.offset = 0;
        showTab("items", { reload: true });
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          sort();
        }
      });
    }
    $("items-prev").addEventListener("click", () => {
      state.items.offset = Math.max(0, state.items.offset - ITEMS_PAGE);
      showTab("items", { reload: true });
    });
    $("items-next").addEventListener("click", () => {
      state.items.offset += ITEMS_PAGE;
      showTab("items", { reload: true });
    });
  }

  function boot() {
    wire();
    const stored = sessionStorage.getItem(KEY_STORE);
    if (stored) login(stored, { fromStorage: true });
    else showLogin("");
    document.body.dataset.ready = "true";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
