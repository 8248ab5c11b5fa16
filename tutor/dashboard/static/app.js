/* kt-tutor dashboard: plain JavaScript over the /v1 analytics API, charts with the vendored
   Vega-Lite (vega-embed, SVG renderer). No build step, no external URL. */
(() => {
  "use strict";

  const ROOT = (document.querySelector('meta[name="api-root"]') || {}).content || "";
  const KEY_STORE = "kt-tutor.dashboard.key";
  const GROUP_STORE = "kt-tutor.dashboard.group";
  const HEATMAP_PAGE = 50;
  const ITEMS_PAGE = 50;
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
    tab: "mastery",
    loaded: {}, // tab -> group id its data was loaded for
    seq: {}, // tab -> request counter (late answers of an older request are dropped)
    views: {}, // element id -> Vega view
    mastery: { offset: 0, data: null, total: null },
    learner: { id: null, concept: null },
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

  async function api(path, params = {}, { quiet401 = false } = {}) {
    const url = new URL(ROOT + path, window.location.origin);
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
    }
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

  function learnerLabel(l) {
    return l.name && l.name !== l.learner_id ? `${l.name} (${l.learner_id})` : l.learner_id;
  }

  function conceptLabel(c) {
    return c.name && c.name !== c.concept_id ? c.name : c.concept_id;
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
    state.learner = { id: null, concept: null };
    state.curves = { data: null, concept: null };
    state.items.offset = 0;
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
    mastery: () => loadMastery(),
    learner: () => loadLearner(),
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
      fillLearnerPicker(data);
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
      ? `learners ${offset + 1}–${offset + n}${total !== null ? ` of ${total}` : ""}`
      : "";
    $("mastery-prev").disabled = offset <= 0;
    $("mastery-next").disabled = total !== null ? offset + n >= total : n < HEATMAP_PAGE;
  }

  async function renderHeatmap(data, token) {
    const box = $("mastery-state");
    const chart = $("heatmap");
    const learners = data.learners || [];
    const concepts = data.concepts || [];
    masteryPager(data);
    const model = data.model;
    $("mastery-meta").textContent = [
      data.group ? `${data.group.name || data.group.id}` : "",
      model ? `model: ${model.name} #${model.id}${model.forgets ? " (forgets over time)" : ""}` : "",
      data.at ? `as of ${new Date(data.at).toLocaleString("en-GB")}` : "",
    ].filter(Boolean).join(" · ");
    chart.dataset.learners = String(learners.length);
    chart.dataset.concepts = String(concepts.length);
    chart.dataset.cells = "0";
    if (!model) {
      clearChart(chart);
      setState(box, "empty", NO_MODEL);
      return;
    }
    if (!learners.length) {
      clearChart(chart);
      setState(box, "empty", data.offset
        ? "No more learners on this page."
        : "No learners in this group yet.");
      return;
    }
    if (!concepts.length) {
      clearChart(chart);
      setState(box, "empty", "No concepts in the catalogue yet.");
      return;
    }
    const cLabels = uniqueLabels(concepts, conceptLabel, (c) => c.concept_id);
    const lLabels = uniqueLabels(learners, learnerLabel, (l) => l.learner_id);
    const values = [];
    learners.forEach((l, i) => {
      concepts.forEach((c, j) => {
        const m = l.mastery ? l.mastery[j] : null;
        values.push({
          learner_id: l.learner_id,
          learner: lLabels[i],
          concept_id: c.concept_id,
          concept: cLabels[j],
          mastery: isNum(m) ? m : null,
          shown: isNum(m) ? pct(m, 1) : "no estimate",
          answers: l.n_answers,
        });
      });
    });
    const spec = {
      description: "Mastery per learner and concept",
      data: { values },
      width: { step: concepts.length > 80 ? 13 : concepts.length > 20 ? 22 : 34 },
      height: { step: learners.length > 20 ? 17 : 22 },
      mark: { type: "rect", invalid: "show", stroke: "#ffffff", strokeWidth: 1, cursor: "pointer" },
      encoding: {
        x: {
          field: "concept",
          type: "nominal",
          sort: cLabels,
          axis: { title: "Concept", orient: "top", labelAngle: -45, labelLimit: 150 },
        },
        y: {
          field: "learner",
          type: "nominal",
          sort: lLabels,
          axis: { title: "Learner", labelLimit: 180 },
        },
        color: {
          condition: { test: "datum.mastery === null", value: "#e5e7eb" },
          field: "mastery",
          type: "quantitative",
          scale: { domain: [0, 1], scheme: "redyellowgreen" },
          // on the left: a wide grid scrolls sideways, and the legend stays in view
          legend: { title: "Mastery", format: ".0%", gradientLength: 160, orient: "left" },
        },
        tooltip: [
          { field: "learner", title: "Learner" },
          { field: "concept", title: "Concept" },
          { field: "shown", title: "Mastery" },
          { field: "answers", title: "Answers (all concepts)" },
        ],
      },
    };
    const view = await draw(chart, spec);
    if (!current("mastery", token)) return;
    view.addEventListener("click", (_event, item) => {
      const d = item && item.datum;
      if (d && d.learner_id && d.concept_id !== undefined) openLearner(d.learner_id, d.concept_id);
    });
    chart.dataset.cells = String(values.length);
    setState(box, null);
  }

  // ------------------------------------------------------------------ learner timeline
  function fillLearnerPicker(data) {
    const select = $("learner-select");
    const keep = state.learner.id;
    select.textContent = "";
    select.append(h("option", { value: "", text: "Choose a learner…" }));
    for (const l of data.learners || []) {
      select.append(h("option", { value: l.learner_id, text: learnerLabel(l) }));
    }
    if (keep && ![...select.options].some((o) => o.value === keep)) {
      select.append(h("option", { value: keep, text: keep }));
    }
    select.value = keep || "";
    const concepts = $("learner-concept");
    const focus = state.learner.concept;
    concepts.textContent = "";
    concepts.append(h("option", { value: "", text: "(none)" }));
    for (const c of data.concepts || []) {
      concepts.append(h("option", { value: c.concept_id, text: conceptLabel(c) }));
    }
    concepts.value = focus || "";
  }

  function openLearner(learnerId, conceptId) {
    state.learner = { id: learnerId, concept: conceptId || null };
    const select = $("learner-select");
    if (![...select.options].some((o) => o.value === learnerId)) {
      select.append(h("option", { value: learnerId, text: learnerId }));
    }
    select.value = learnerId;
    const concepts = $("learner-concept");
    if (conceptId && ![...concepts.options].some((o) => o.value === conceptId)) {
      concepts.append(h("option", { value: conceptId, text: conceptId }));
    }
    concepts.value = conceptId || "";
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
    $("learner-title").textContent = id ? `· ${id}` : "";
    $("learner-meta").textContent = "";
    if (!id) {
      clearChart(chart);
      setState(box, "empty", "Click a cell of the heatmap (or a learner in the at-risk list) " +
        "to open a learner.");
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
      renderTimeline(tl, want, concept, token);
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
    if (!points.length) {
      clearChart(chart);
      setState(box, "empty", `Learner ${tl.learner_id} has no answers yet.`);
      return;
    }
    const shownIdx = concepts
      .map((c, j) => [c, j])
      .filter(([c]) => want.includes(c.concept_id));
    const labels = uniqueLabels(shownIdx.map(([c]) => c), conceptLabel, (c) => c.concept_id);
    const values = [];
    for (const p of points) {
      shownIdx.forEach(([c, j], k) => {
        const m = p.mastery ? p.mastery[j] : null;
        values.push({
          index: p.index,
          concept: labels[k],
          focus: c.concept_id === focus,
          practised: (p.concepts || []).includes(c.concept_id),
          mastery: isNum(m) ? m : null,
          item: p.item_id,
          correct: p.correct ? "correct" : "wrong",
          time: p.timestamp ? new Date(p.timestamp).toLocaleString("en-GB") : "",
        });
      });
    }
    const focusLabel = shownIdx.findIndex(([c]) => c.concept_id === focus);
    const tooltip = [
      { field: "index", title: "Answer #" },
      { field: "concept", title: "Concept" },
      { field: "mastery", title: "Mastery", format: ".1%" },
      { field: "item", title: "Item" },
      { field: "correct", title: "Answer" },
      { field: "time", title: "When" },
    ];
    const dotted = values.some((v) => v.practised && (focusLabel < 0 || v.focus));
    const layers = [
      {
        mark: { type: "line" },
        encoding: {
          color: { field: "concept", type: "nominal", sort: labels, legend: { title: "Concept", labelLimit: 220 } },
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
    const spec = {
      description: "Mastery over the learner's answers",
      width: "container",
      height: 320,
      autosize: { type: "fit-x", contains: "padding" },
      data: { values },
      encoding: {
        x: { field: "index", type: "quantitative", title: "Answer #", axis: { tickMinStep: 1, format: "d" } },
        y: { field: "mastery", type: "quantitative", title: "Mastery", scale: { domain: [0, 1] }, axis: { format: ".0%" } },
      },
      layer: layers,
    };
    await draw(chart, spec);
    if (!current("learner", token)) return;
    chart.dataset.points = String(points.length);
    chart.dataset.concepts = String(shownIdx.length);
    const focusName = focusLabel >= 0 ? labels[focusLabel] : null;
    $("learner-meta").textContent = [
      `${points.length} answers`,
      tl.model ? `model: ${tl.model.name || tl.model.id}` : "",
      focusName
        ? `highlighted: ${focusName} ` +
          (dotted ? "(dots: answers on it, green = correct)" : "(no answer on it yet)")
        : "dots: answers (green = correct)",
    ].filter(Boolean).join(" · ");
    setState(box, null);
  }

  // ------------------------------------------------------------------ learning curves
  async function loadCurves() {
    const token = nextSeq("curves");
    const box = $("curves-state");
    setState(box, "loading", "Loading learning curves…");
    try {
      const data = await api(`/v1/analytics/groups/${enc(state.group)}/learning-curves`, {
        max_opportunity: 20,
      });
      if (!current("curves", token)) return;
      state.curves.data = data;
      const curves = (data.curves || []).filter((c) => (c.points || []).length);
      const select = $("curves-concept");
      select.textContent = "";
      if (!curves.length) {
        clearChart($("curves"));
        setState(box, "empty", "No answers in this group yet: no learning curve to draw.");
        return;
      }
      const first = (c) => (c.points[0] && c.points[0].learners) || 0;
      const ranked = [...curves].sort((a, b) => first(b) - first(a));
      for (const c of ranked) {
        select.append(h("option", {
          value: c.concept_id,
          text: `${conceptLabel(c)} · ${first(c)} learners`,
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
    const curve = (state.curves.data.curves || []).find((c) => c.concept_id === state.curves.concept);
    if (!curve) return;
    const values = [];
    for (const p of curve.points) {
      for (const [series, key] of [["observed", "observed_error"], ["predicted", "predicted_error"]]) {
        if (isNum(p[key])) {
          values.push({ opportunity: p.opportunity, series, error: p[key], learners: p.learners });
        }
      }
    }
    const tooltip = [
      { field: "opportunity", title: "Opportunity" },
      { field: "series", title: "Series" },
      { field: "error", title: "Error rate", format: ".1%" },
      { field: "learners", title: "Learners" },
    ];
    const spec = {
      description: `Learning curve of ${conceptLabel(curve)}`,
      title: { text: conceptLabel(curve), anchor: "start", fontSize: 14 },
      width: "container",
      height: 300,
      autosize: { type: "fit-x", contains: "padding" },
      data: { values },
      encoding: {
        x: { field: "opportunity", type: "quantitative", title: "Opportunity (n-th practice)", axis: { tickMinStep: 1, format: "d" } },
        y: { field: "error", type: "quantitative", title: "Error rate", scale: { domain: [0, 1] }, axis: { format: ".0%" } },
        color: {
          field: "series",
          type: "nominal",
          scale: { domain: ["observed", "predicted"], range: ["#2563eb", "#f97316"] },
          legend: { title: null, orient: "top-right" },
        },
      },
      layer: [
        { mark: { type: "line" }, encoding: { strokeDash: { field: "series", type: "nominal", scale: { domain: ["observed", "predicted"], range: [[1, 0], [6, 4]] } } } },
        { mark: { type: "point", filled: true }, encoding: { size: { field: "learners", type: "quantitative", title: "Learners", scale: { range: [20, 160] }, legend: { format: "d", tickMinStep: 1 } }, tooltip } },
      ],
    };
    await draw($("curves"), spec);
    if (token !== undefined && !current("curves", token)) return;
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
        body.append(h("tr", { class: it.flagged ? "flagged" : null, dataset: { item: it.item_id } },
          h("td", { text: it.item_id }),
          h("td", { title: (it.concepts || []).join(", ") }, conceptNames(it.concepts || [])),
          h("td", { class: "num", text: fmtValue(it.attempts) }),
          h("td", { class: "num", text: fmtValue(it.learners) }),
          h("td", { class: "num", text: pct(it.observed_success, 1) }),
          h("td", { class: "num", text: pct(it.predicted_success, 1) }),
          h("td", { class: "num" + (isNum(gap) && Math.abs(gap) >= 0.15 ? " warn" : ""), text: signedPts(gap) }),
          h("td", { class: "num", text: num(it.difficulty) }),
          h("td", { class: "num", text: num(it.discrimination) }),
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

  /** Concept ids as names where the heatmap's concept list knows them. */
  function conceptNames(ids) {
    const known = new Map(
      ((state.mastery.data && state.mastery.data.concepts) || []).map((c) => [c.concept_id, c]));
    return ids.map((id) => (known.has(id) ? conceptLabel(known.get(id)) : id)).join(", ");
  }

  // ------------------------------------------------------------------ at-risk list
  async function loadRisk() {
    const token = nextSeq("risk");
    const box = $("risk-state");
    const table = $("risk-table");
    setState(box, "loading", "Loading at-risk learners…");
    try {
      const data = await api(`/v1/analytics/groups/${enc(state.group)}/at-risk`);
      if (!current("risk", token)) return;
      const th = data.thresholds || {};
      $("risk-thresholds").textContent = Object.keys(th).length
        ? `Thresholds: ${Object.entries(th).map(([k, v]) => `${k.replaceAll("_", " ")} ${fmtValue(v)}`).join(" · ")}`
        : "";
      const rows = data.learners || [];
      const body = table.querySelector("tbody");
      body.textContent = "";
      if (!rows.length) {
        table.hidden = true;
        setState(box, "empty", "No learner of this group is at risk.");
        return;
      }
      for (const l of rows) {
        const reasons = (l.reasons || []).map((r) =>
          h("span", { class: "badge", text: typeof r === "string" ? r.replaceAll("_", " ") : fmtValue(r) }));
        body.append(h("tr", { dataset: { learner: l.learner_id } },
          h("td", {}, h("button", {
            type: "button",
            class: "link",
            text: learnerLabel(l),
            onclick: () => openLearner(l.learner_id, null),
          })),
          h("td", {}, reasons),
          h("td", { class: "num", text: pct(l.mean_mastery, 1) }),
          h("td", { class: "num" + (isNum(l.mastery_change) && l.mastery_change < 0 ? " warn" : ""), text: signedPts(l.mastery_change) }),
          h("td", { class: "num", text: isNum(l.days_inactive) ? l.days_inactive.toFixed(0) : "–" }),
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
