// m6gen's page: pick liked titles (autocomplete from /items), get a ranked list from /recommend,
// re-rank with the diversity and novelty sliders, ask /explain why. Plain DOM, no framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { history: [], suggestions: [], active: -1, seq: 0, timers: {} };

function debounce(name, ms, fn) {
  clearTimeout(state.timers[name]);
  state.timers[name] = setTimeout(fn, ms);
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw Object.assign(new Error(data.error || `HTTP ${response.status}`), { data });
  return data;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);  // strings become text nodes: titles are never parsed as HTML
  return node;
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// ------------------------------------------------------------------ server info
async function loadInfo() {
  try {
    const info = await api("/info");
    $("info").textContent = `${info.catalog_size} items · ${info.model} · template ${info.template} · ${info.dtype}`;
    $("k").max = Math.min(info.beams, info.catalog_size);
    $("k").value = info.defaults.k;
    for (const name of ["diversity", "novelty"]) setSlider(name, info.defaults[name]);
  } catch (err) {
    $("info").textContent = `server info unavailable: ${err.message}`;
  }
}

function setSlider(name, value) {
  // a server default above the slider's range (serve --diversity 3) widens it: a range input would clamp it
  if (Number(value) > Number($(name).max)) $(name).max = value;
  $(name).value = value;
  $(`${name}-value`).textContent = Number($(name).value).toFixed(2);
}

// ------------------------------------------------------------------ autocomplete
async function suggest() {
  const q = $("title-input").value.trim();
  if (!q) return showSuggestions([]);
  try {
    const found = await api(`/items?q=${encodeURIComponent(q)}&limit=8`);
    if (found.query.trim() === $("title-input").value.trim()) showSuggestions(found.items);
  } catch (err) {
    say(err.message, true);
  }
}

function showSuggestions(items) {
  state.suggestions = items;
  state.active = items.length ? 0 : -1;
  const list = $("suggestions");
  list.replaceChildren(...items.map((item, i) => el("li", {
    role: "option", "data-item-id": item.item_id, "aria-selected": String(i === state.active),
    onmousedown: (event) => { event.preventDefault(); addItem(item); },
  }, item.title)));
  list.hidden = items.length === 0;
  $("title-input").setAttribute("aria-expanded", String(!list.hidden));
}

function moveActive(step) {
  const n = state.suggestions.length;
  if (!n) return;
  state.active = (state.active + step + n) % n;
  [...$("suggestions").children].forEach((li, i) => li.setAttribute("aria-selected", String(i === state.active)));
}

function onTitleKey(event) {
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    moveActive(event.key === "ArrowDown" ? 1 : -1);
  } else if (event.key === "Enter" && state.active >= 0) {
    event.preventDefault();
    addItem(state.suggestions[state.active]);
  } else if (event.key === "Escape") {
    showSuggestions([]);
  }
}

// ------------------------------------------------------------------ history
function addItem(item) {
  if (!state.history.some((h) => h.item_id === item.item_id)) state.history.push(item);
  $("title-input").value = "";
  showSuggestions([]);
  renderHistory();
  $("title-input").focus();
}

function renderHistory() {
  $("history").replaceChildren(...state.history.map((item, i) => el("li", { "data-item-id": item.item_id },
    item.title,
    el("button", { type: "button", "aria-label": `remove ${item.title}`, onclick: () => removeItem(i) }, "×"))));
  $("history-empty").hidden = state.history.length > 0;
}

function removeItem(index) {
  state.history.splice(index, 1);
  renderHistory();
}

// ------------------------------------------------------------------ recommendations
async function recommend() {
  if (!state.history.length) return say("Pick at least one title first.", true);
  const seq = ++state.seq;  // a slower, older answer must not overwrite a newer one
  const body = {
    history: state.history.map((h) => h.item_id), k: Number($("k").value),
    diversity: Number($("diversity").value), novelty: Number($("novelty").value), open: $("open").checked,
    cold_only: $("cold").checked,
  };
  $("recommend").disabled = true;
  say("thinking…");
  try {
    const started = performance.now();
    const result = await api("/recommend", body);
    if (seq !== state.seq) return;
    renderResults(result.items);
    const short = result.filled ? "" : ` (only ${result.items.length} of ${result.k} found)`;
    say(`${result.items.length} items in ${((performance.now() - started) / 1000).toFixed(1)} s${short}`);
  } catch (err) {
    if (seq !== state.seq) return;
    const hint = err.data && err.data.suggestions ? ` — did you mean: ${err.data.suggestions.join("; ")}?` : "";
    say(err.message + hint, true);
  } finally {
    if (seq === state.seq) $("recommend").disabled = false;
  }
}

function bar(name, value) {
  const shown = value === null || value === undefined ? "–" : value.toFixed(2);
  const width = value === null || value === undefined ? 0 : Math.max(0, Math.min(1, value)) * 100;
  return el("div", { class: `bar ${name}`, title: `${name} ${shown}` },
    `${name} ${shown}`, el("div", { class: "track" }, el("div", { class: "fill", style: `width:${width}%` })));
}

function renderResults(items) {
  $("results").replaceChildren(...items.map((item) => {
    const row = el("div", { class: "row" },
      el("span", { class: "rank" }, `${item.rank}.`), el("span", { class: "title" }, item.title));
    if (!item.in_catalog) row.append(el("span", { class: "flag", title: "the model named a title the catalog lacks" },
      "not in catalog"));
    const why = el("a", { href: "#", class: "why", onclick: (event) => { event.preventDefault(); explain(item, li); } },
      "why?");
    row.append(why);
    const li = el("li", { "data-item-id": item.item_id || "", "data-in-catalog": String(item.in_catalog) }, row);
    if (item.in_catalog && item.accuracy !== null) {
      li.append(el("div", { class: "bars" },
        bar("accuracy", item.accuracy), bar("diversity", item.diversity), bar("novelty", item.novelty)));
    }
    return li;
  }));
}

async function explain(item, li) {
  let box = li.querySelector(".explanation");
  if (!box) li.append(box = el("p", { class: "explanation" }));
  box.textContent = "asking the model…";
  const body = { history: state.history.map((h) => h.item_id) };
  if (item.in_catalog) body.item = item.item_id; else body.title = item.title;
  try {
    const answer = await api("/explain", body);
    box.textContent = answer.explanation || "(the model gave no explanation)";
  } catch (err) {
    box.textContent = err.message;
    box.classList.add("error");
  }
}

function onSlider(name) {
  $(`${name}-value`).textContent = Number($(name).value).toFixed(2);
  if ($("results").children.length) debounce("rerank", 200, recommend);  // the server reranks its cached beams
}

document.addEventListener("DOMContentLoaded", () => {
  $("title-input").addEventListener("input", () => debounce("suggest", 120, suggest));
  $("title-input").addEventListener("keydown", onTitleKey);
  $("title-input").addEventListener("blur", () => setTimeout(() => showSuggestions([]), 150));
  $("recommend").addEventListener("click", recommend);
  for (const name of ["diversity", "novelty"]) $(name).addEventListener("input", () => onSlider(name));
  // open mode names titles outside the catalog; "new items only" limits it: one at a time
  for (const [name, other] of [["open", "cold"], ["cold", "open"]]) {
    $(name).addEventListener("change", () => {
      if ($(name).checked) $(other).checked = false;
      if ($("results").children.length) recommend();
    });
  }
  renderHistory();
  loadInfo();
});
