// MUSHRA rating page for `opencodec mushra serve` (no external libraries).
// Flow: listener id -> one trial per page (reference + shuffled, blinded conditions, each
// with a play button and a 0-100 slider that unlocks once the condition has played) ->
// POST /api/submit per trial -> next trial -> thank-you page. The server validates again.
"use strict";

const state = {
  test: null,        // GET /api/test
  order: [],         // trials in this listener's (random) order
  done: new Set(),   // trial ids already stored for this listener
  index: 0,          // position in `order`
  listener: "",
  players: {},       // condition id (or "reference") -> HTMLAudioElement
  current: null,     // key of the playing element
};

const $ = (sel) => document.querySelector(sel);

function shuffle(items) {
  const a = items.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function showMessage(text, kind) {
  const box = $("#message");
  box.textContent = text || "";
  box.className = kind || "";
  box.hidden = !text;
}

function show(screen) {
  for (const id of ["start-screen", "trial-screen", "done-screen"]) {
    $("#" + id).hidden = id !== screen;
  }
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// ---- playback -------------------------------------------------------------------------
function stopAll() {
  for (const audio of Object.values(state.players)) {
    audio.pause();
  }
  state.current = null;
  document.querySelectorAll(".play.active").forEach((b) => b.classList.remove("active"));
  document.querySelectorAll(".condition.playing").forEach((c) => c.classList.remove("playing"));
}

function play(key, button) {
  const next = state.players[key];
  const previous = state.current !== null ? state.players[state.current] : null;
  // Switch at the same position, as MUSHRA listeners compare short passages.
  const position = previous && !previous.paused ? previous.currentTime : 0;
  stopAll();
  next.currentTime = Math.min(position, Math.max(0, (next.duration || 0) - 0.05));
  state.current = key;
  button.classList.add("active");
  const box = button.closest(".condition");
  if (box) box.classList.add("playing");
  next.play().catch((err) => showMessage("Cannot play audio: " + err.message));
}

function makePlayer(key, url, onPlaying) {
  const audio = new Audio(url);
  audio.preload = "auto";
  audio.addEventListener("playing", onPlaying);
  audio.addEventListener("ended", () => {
    if (state.current === key) stopAll();
  });
  state.players[key] = audio;
  return audio;
}

// ---- one trial --------------------------------------------------------------------------
function updateStatus() {
  const boxes = Array.from(document.querySelectorAll(".condition"));
  const played = boxes.filter((b) => b.dataset.played === "true").length;
  const rated = boxes.filter((b) => b.dataset.rated === "true").length;
  $("#status").textContent = `${played} of ${boxes.length} played, ${rated} of ${boxes.length} rated`;
  $("#submit").disabled = rated !== boxes.length;
}

function renderTrial() {
  stopAll();
  state.players = {};
  const total = state.order.length;
  while (state.index < total && state.done.has(state.order[state.index].trial_id)) state.index++;
  if (state.index >= total) {
    show("done-screen");
    return;
  }
  const trial = state.order[state.index];
  $("#trial-screen").dataset.trialId = trial.trial_id;
  $("#progress").textContent = `Trial ${state.index + 1} of ${total}`;
  $("#progress-bar").max = total;
  $("#progress-bar").value = state.index;

  const refButton = $("#play-reference");
  makePlayer("reference", trial.reference, () => {});
  refButton.onclick = () => play("reference", refButton);

  const container = $("#conditions");
  container.replaceChildren();
  shuffle(trial.conditions).forEach((cond, i) => {
    const box = document.createElement("div");
    box.className = "condition";
    box.dataset.condition = cond.id;
    box.dataset.played = "false";
    box.dataset.rated = "false";

    const label = document.createElement("strong");
    label.textContent = String.fromCharCode(65 + i);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = "–";
    const slider = document.createElement("input");
    slider.type = "range";
    slider.className = "rating";
    slider.min = "0";
    slider.max = "100";
    slider.step = "1";
    slider.value = "50";
    slider.disabled = true;
    slider.setAttribute("aria-label", `rating of ${label.textContent}`);
    slider.addEventListener("input", () => {
      if (box.dataset.played !== "true") return;  // only a played condition's slider counts
      box.dataset.rated = "true";
      value.textContent = slider.value;
      updateStatus();
    });
    const button = document.createElement("button");
    button.type = "button";
    button.className = "play";
    button.textContent = "▶ " + label.textContent;
    button.onclick = () => play(cond.id, button);
    makePlayer(cond.id, cond.url, () => {
      box.dataset.played = "true";
      slider.disabled = false;
      updateStatus();
    });
    box.append(label, value, slider, button);
    container.append(box);
  });
  $("#submit").onclick = () => submitTrial(trial);
  show("trial-screen");
  updateStatus();
}

async function submitTrial(trial) {
  const boxes = Array.from(document.querySelectorAll(".condition"));
  if (boxes.some((b) => b.dataset.played !== "true" || b.dataset.rated !== "true")) {
    showMessage("Play and rate every version first.");
    return;
  }
  const ratings = boxes.map((b) => ({
    condition: b.dataset.condition,
    rating: Number(b.querySelector(".rating").value),
  }));
  $("#submit").disabled = true;
  try {
    const response = await fetch("/api/submit", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ test_id: state.test.test_id, trial_id: trial.trial_id,
                             listener: state.listener, ratings }),
    });
    const body = await response.json();
    if (!response.ok || !body.ok) throw new Error(body.error || response.statusText);
    showMessage("");
    state.done.add(trial.trial_id);
    state.index++;
    renderTrial();
  } catch (err) {
    showMessage("The ratings were not stored: " + err.message);
    $("#submit").disabled = false;
  }
}

// ---- start ------------------------------------------------------------------------------
async function start() {
  const listener = $("#listener").value.trim();
  if (!listener) {
    showMessage("Enter your name or listener id first.");
    return;
  }
  try {
    const progress = await getJSON("/api/progress?listener=" + encodeURIComponent(listener));
    state.done = new Set(progress.done);
  } catch (err) {
    showMessage("Cannot reach the server: " + err.message);
    return;
  }
  state.listener = listener;
  showMessage(state.done.size ? `Welcome back: ${state.done.size} trial(s) already stored.` : "",
              "info");
  renderTrial();
}

async function init() {
  try {
    state.test = await getJSON("/api/test");
  } catch (err) {
    showMessage("Cannot load the test: " + err.message);
    return;
  }
  document.title = state.test.title;
  $("#title").textContent = state.test.title;
  state.order = shuffle(state.test.trials);
  $("#start").onclick = start;
  $("#listener").addEventListener("keydown", (e) => { if (e.key === "Enter") start(); });
  $("#stop").onclick = stopAll;
  document.body.dataset.ready = "true";
}

init();
