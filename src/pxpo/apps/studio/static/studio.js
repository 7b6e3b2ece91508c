// pxpo studio page: prompt and seeds, like/dislike brushes on a canvas overlay, rounds, history.
// Marks are kept as numbers per picture pixel (-100 disliked .. 100 liked, 0 no opinion) and sent as such.
"use strict";
const $ = (id) => document.getElementById(id);
const S = {info: null, sid: null, meta: null, rounds: [], current: 0, seeds: [], seed: null,
           marks: {}, undo: {}, drawing: false, last: null, busy: false};

function showError(text) { const e = $("error"); e.textContent = text; e.hidden = !text; }

async function api(path, options) {
  const r = await fetch(path, options);
  if (!r.ok) {
    let detail = `the studio answered ${r.status}`;
    try { detail = (await r.json()).detail || detail; } catch (_) { /* not JSON */ }
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
    throw new Error(detail);
  }
  return r;
}

// ---- prompt and vocabulary ----
function checkPrompt() {
  const words = $("prompt").value.toLowerCase().replace(/,/g, " ").split(/\s+/).filter((w) => w);
  const vocab = S.info.vocabulary;
  const unknown = vocab ? words.filter((w) => !vocab.includes(w)) : [];
  $("prompt-check").textContent = unknown.length
    ? `The model does not know ${unknown.map((w) => `"${w}"`).join(", ")}. Use the words below.`
    : words.length ? "" : "An empty prompt lets the model draw any shape and colours.";
  $("prompt-check").className = unknown.length ? "note bad" : "note";
  $("start").disabled = unknown.length > 0;
}

async function loadSessions() {
  const list = await (await api("/api/sessions")).json();
  const sel = $("sessions");
  sel.length = 1;
  for (const s of list) sel.add(new Option(`${s.id}: "${s.prompt}" (${s.rounds} rounds)`, s.id));
  if (S.sid) sel.value = S.sid;
}

async function startSession() {
  showError("");
  try {
    const r = await api("/api/sessions", {method: "POST", headers: {"Content-Type": "application/json"},
                                          body: JSON.stringify({prompt: $("prompt").value})});
    const s = await r.json();
    await openSession(s.id);
    await loadSessions();
  } catch (e) { showError(e.message); }
}

async function openSession(sid) {
  S.sid = sid; S.seeds = []; S.marks = {}; S.undo = {};
  await refreshSession();
  const done = S.rounds.filter((r) => r.status === "done");
  S.current = done[done.length - 1].id;
  const seeds = [...new Set(S.rounds.flatMap((r) => r.picture_seeds))];
  for (const seed of seeds.length ? seeds : [Number($("seed").value) || 0]) addSeed(seed, false);
  await selectSeed(S.seeds[0]);
  renderHistory();
  if (S.busy) poll();
}

async function refreshSession() {
  const s = await (await api(`/api/sessions/${S.sid}`)).json();
  S.meta = s; S.rounds = s.rounds;
  $("session-info").textContent = `Session ${s.id}: "${s.prompt}" on ${s.model}; a round trains ` +
    `${s.settings.epochs} epochs of ${s.settings.variations} variations per marked seed.`;
  $("new-session").hidden = true;
  const p = await (await api("/api/progress")).json();
  S.busy = p.session === S.sid && ["queued", "loading", "training", "drawing"].includes(p.state);
}

// ---- seeds and pictures ----
function addSeed(seed, select = true) {
  if (!Number.isInteger(seed) || seed < 0) { showError("A seed is a whole number, 0 or more."); return; }
  if (!S.seeds.includes(seed)) S.seeds.push(seed);
  renderSeedTabs();
  if (select) selectSeed(seed);
}

function renderSeedTabs() {
  const box = $("seed-tabs");
  box.innerHTML = "";
  for (const seed of S.seeds) {
    const b = document.createElement("button");
    const marked = S.marks[seed] && S.marks[seed].some((v) => v !== 0);
    b.textContent = `seed ${seed}` + (marked ? " (marked)" : "");
    b.className = "seed-tab" + (seed === S.seed ? " active" : "");
    b.dataset.seed = seed;
    b.onclick = () => selectSeed(seed);
    box.appendChild(b);
  }
}

async function pictureURL(round, seed) {
  const r = await api(`/api/sessions/${S.sid}/rounds/${round}/pictures/${seed}.png`);
  return URL.createObjectURL(await r.blob());
}

async function selectSeed(seed) {
  showError("");
  S.seed = seed;
  const n = S.meta.height * S.meta.width;
  if (!S.marks[seed]) { S.marks[seed] = new Int8Array(n); S.undo[seed] = []; }
  const c = $("marks");
  c.width = S.meta.width; c.height = S.meta.height;
  renderSeedTabs();
  renderMarks();
  $("stage-caption").textContent = `round ${S.current}, seed ${seed}: loading the picture...`;
  try {
    $("picture").src = await pictureURL(S.current, seed);
    $("picture").dataset.round = S.current;
    $("stage-caption").textContent = `round ${S.current}, seed ${seed}` +
      (S.current ? ` (from round ${S.rounds.find((r) => r.id === S.current).parent})` : " (the starting model)");
    await renderCompare();
  } catch (e) { showError(e.message); $("stage-caption").textContent = ""; }
  updateLinks();
}

function lineage(rid) {
  const chain = [];
  while (rid !== null && rid !== undefined) {
    chain.unshift(rid);
    const r = S.rounds.find((x) => x.id === rid);
    rid = r ? r.parent : null;
  }
  return chain;
}

async function renderCompare() {
  const token = (S.compareToken = (S.compareToken || 0) + 1), figs = [];
  for (const rid of lineage(S.current)) {
    const r = S.rounds.find((x) => x.id === rid);
    if (rid !== S.current && !r.picture_seeds.includes(S.seed)) continue;
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.className = "pix"; img.dataset.round = rid;
    img.src = await pictureURL(rid, S.seed);
    fig.appendChild(img);
    fig.appendChild(Object.assign(document.createElement("figcaption"), {textContent: `round ${rid}`}));
    figs.push(fig);
  }
  if (token === S.compareToken) $("compare").replaceChildren(...figs);  // a later call wins
}

// ---- brushes ----
function renderMarks() {
  const c = $("marks"), ctx = c.getContext("2d"), m = S.marks[S.seed];
  const img = ctx.createImageData(c.width, c.height);
  for (let i = 0; i < m.length; i++) {
    const v = m[i];
    if (v > 0) img.data.set([40, 230, 70, Math.round(v * 2.3)], 4 * i);
    else if (v < 0) img.data.set([240, 30, 30, Math.round(-v * 2.3)], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  c.style.visibility = $("show-marks").checked ? "visible" : "hidden";
}

function paintAt(x, y) {
  const c = $("marks"), m = S.marks[S.seed], r = Number($("size").value) / 2;
  const tool = document.querySelector("input[name=tool]:checked").value;
  const v = tool === "like" ? Number($("strength").value) : tool === "dislike" ? -Number($("strength").value) : 0;
  for (let j = Math.floor(y - r); j <= Math.ceil(y + r); j++) {
    for (let i = Math.floor(x - r); i <= Math.ceil(x + r); i++) {
      if (i < 0 || j < 0 || i >= c.width || j >= c.height) continue;
      if ((i + 0.5 - x) ** 2 + (j + 0.5 - y) ** 2 <= r * r + 0.25) m[j * c.width + i] = v;
    }
  }
}

function pos(e) {
  const c = $("marks"), rect = c.getBoundingClientRect();
  return [(e.clientX - rect.left) / rect.width * c.width, (e.clientY - rect.top) / rect.height * c.height];
}

function strokeTo(e) {
  const [x, y] = pos(e), [x0, y0] = S.last || [x, y];
  const steps = Math.max(1, Math.ceil(Math.hypot(x - x0, y - y0) * 2));
  for (let k = 1; k <= steps; k++) paintAt(x0 + (x - x0) * k / steps, y0 + (y - y0) * k / steps);
  S.last = [x, y];
  renderMarks();
}

function setupCanvas() {
  const c = $("marks");
  c.addEventListener("pointerdown", (e) => {
    if (S.seed === null) return;
    S.undo[S.seed].push(S.marks[S.seed].slice());
    if (S.undo[S.seed].length > 50) S.undo[S.seed].shift();
    S.drawing = true; S.last = null;
    c.setPointerCapture(e.pointerId);
    strokeTo(e);
  });
  c.addEventListener("pointermove", (e) => { if (S.drawing) strokeTo(e); });
  const end = () => { if (S.drawing) { S.drawing = false; S.last = null; renderSeedTabs(); } };
  c.addEventListener("pointerup", end);
  c.addEventListener("pointercancel", end);
  $("undo").onclick = () => { const u = S.undo[S.seed]; if (u && u.length) { S.marks[S.seed] = u.pop(); renderMarks(); renderSeedTabs(); } };
  $("clear").onclick = () => { S.undo[S.seed].push(S.marks[S.seed].slice()); S.marks[S.seed].fill(0); renderMarks(); renderSeedTabs(); };
  $("show-marks").onchange = renderMarks;
  $("size").oninput = () => { $("size-val").textContent = $("size").value; };
  $("strength").oninput = () => { $("strength-val").textContent = $("strength").value; };
}

// ---- rounds ----
async function submit() {
  showError("");
  const marks = S.seeds.filter((s) => S.marks[s] && S.marks[s].some((v) => v !== 0))
    .map((s) => ({seed: s, values: Array.from(S.marks[s])}));
  if (!marks.length) { showError("Nothing is marked yet: paint what you like (green) and dislike (red) first."); return; }
  try {
    const r = await api(`/api/sessions/${S.sid}/rounds`, {method: "POST", headers: {"Content-Type": "application/json"},
                        body: JSON.stringify({parent: S.current, marks})});
    const {round} = await r.json();
    $("progress-text").textContent = `round ${round} is queued`;
    S.busy = true;
    await refreshSession();
    renderHistory();
    poll();
  } catch (e) { showError(e.message); }
}

async function poll() {
  $("progress-box").hidden = false;
  $("submit").disabled = true;
  while (true) {
    let p;
    try { p = await (await api("/api/progress")).json(); } catch (e) { showError(e.message); await sleep(2000); continue; }
    const reward = p.rewards && p.rewards.length ? `, reward ${p.rewards[p.rewards.length - 1].toFixed(3)}` : "";
    const secs = p.seconds ? `, ${Math.round(p.seconds)} s` : "";
    $("progress").value = p.epochs ? p.epoch / p.epochs : 0;
    $("progress-text").textContent = `round ${p.round}: ${p.state}, epoch ${p.epoch || 0} of ${p.epochs || "?"}${reward}${secs}`;
    if (p.state === "done" || p.state === "failed" || p.state === "idle") {
      $("submit").disabled = false; S.busy = false;
      if (p.state === "failed") showError(`The round did not finish: ${p.error}. Your marks are kept; try again.`);
      await refreshSession();
      if (p.state === "done" && p.session === S.sid) {
        const marked = S.rounds.find((r) => r.id === p.round).marked_seeds;
        S.current = p.round;
        for (const s of marked) { S.marks[s] = new Int8Array(S.meta.height * S.meta.width); S.undo[s] = []; }
        await selectSeed(marked.includes(S.seed) ? S.seed : marked[0]);
      }
      renderHistory();
      await loadSessions();
      return;
    }
    await sleep(500);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function renderHistory() {
  const box = $("history");
  box.innerHTML = "";
  for (const r of S.rounds) {
    const tile = document.createElement("div");
    tile.className = "round" + (r.id === S.current ? " active" : "") + ` ${r.status}`;
    tile.dataset.round = r.id;
    const title = r.id ? `round ${r.id} (from ${r.parent}) ${r.status}` : "round 0 (start)";
    tile.appendChild(Object.assign(document.createElement("div"), {textContent: title}));
    const seeds = r.id ? r.marked_seeds : r.picture_seeds.slice(0, 1);
    for (const seed of seeds) {
      if (r.id) {  // the marks on the picture they were painted on
        const m = document.createElement("span");
        m.className = "marked";
        m.appendChild(Object.assign(document.createElement("img"), {className: "pix", src: `/api/sessions/${S.sid}/rounds/${r.parent}/pictures/${seed}.png`}));
        m.appendChild(Object.assign(document.createElement("img"), {className: "pix overlay", src: `/api/sessions/${S.sid}/rounds/${r.id}/marks/${seed}.png`}));
        tile.appendChild(m);
      }
      if (r.status === "done" && r.picture_seeds.includes(seed))
        tile.appendChild(Object.assign(document.createElement("img"), {className: "pix", src: `/api/sessions/${S.sid}/rounds/${r.id}/pictures/${seed}.png`}));
    }
    if (r.rewards) tile.appendChild(Object.assign(document.createElement("div"), {className: "note", textContent: `reward ${r.rewards.map((x) => x.toFixed(3)).join(" → ")}`}));
    if (r.error) tile.appendChild(Object.assign(document.createElement("div"), {className: "note bad", textContent: r.error}));
    if (r.status === "done") tile.onclick = () => reopen(r.id);
    box.appendChild(tile);
  }
}

function reopen(rid) {
  // marks belong to the pictures they were painted on: another round's pictures start unmarked
  if (rid === S.current) return;
  S.current = rid; S.marks = {}; S.undo = {};
  renderHistory();
  selectSeed(S.seed);
}

function updateLinks() {
  $("download").href = `/api/sessions/${S.sid}/rounds/${S.current}/weights.zip`;
  $("export").href = `/api/sessions/${S.sid}/export.zip`;
}

async function init() {
  setupCanvas();
  try {
    S.info = await (await api("/api/info")).json();
    $("model").textContent = `model: ${S.info.model}`;
    const vb = $("vocabulary");
    if (S.info.vocabulary) {
      vb.appendChild(Object.assign(document.createElement("span"), {className: "note", textContent: "Words the model knows: "}));
      for (const w of S.info.vocabulary) {
        const b = Object.assign(document.createElement("button"), {className: "word", textContent: w});
        b.onclick = () => { $("prompt").value = ($("prompt").value.trim() + " " + w).trim(); checkPrompt(); };
        vb.appendChild(b);
      }
    }
    $("prompt").oninput = checkPrompt;
    checkPrompt();
    $("start").onclick = startSession;
    $("sessions").onchange = () => { if ($("sessions").value) openSession($("sessions").value).catch((e) => showError(e.message));
                                     else { S.sid = null; $("new-session").hidden = false; } };
    $("add-seed").onclick = () => { if (!S.sid) { showError("Start or open a session first."); return; } addSeed(Number($("seed").value)); };
    $("submit").onclick = submit;
    await loadSessions();
  } catch (e) { showError(e.message); }
}

init();
