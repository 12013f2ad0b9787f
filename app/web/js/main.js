// The enrollment app: sign in, choose a speaker, record prompted sentences (or upload files), personalize and
// watch it live, read the result, try it, and manage versions. Plain ES modules, no framework, no build step.

import { ApiError, get, post, request, session, upload } from "./api.js";
import { renderMarked } from "./diff.js";
import { HEAD_STATUSES, JOB_STATES, explainDecision, minutes, percent } from "./explain.js";
import { Recorder, canRecord, microphoneProblem } from "./recorder.js";
import { readEvents } from "./sse.js";

const $ = (id) => document.getElementById(id);
const PANELS = ["signin", "speaker", "record", "files", "adapt", "try", "versions"];
const NEEDS_SPEAKER = new Set(["record", "files", "adapt", "try", "versions"]);
const SPEAKER_KEY = "hra.speakerId";
const MAX_PARALLEL_UPLOADS = 2;
const MAX_ATTEMPTS = 4;
const POLL_MS = 3000;

const state = {
  speakers: [],
  speaker: null,
  prompts: [],
  promptSource: "",
  promptIndex: 0,
  recordedTexts: new Set(),
  take: null,
  recorder: null,
  tryRecorder: null,
  uploads: [],
  activeUploads: 0,
  heads: [],
  job: null,
  follow: null, // AbortController of the job being followed
  change: null, // the pending version change: {head, action}
};

// ---- announcements ----------------------------------------------------------------------------------------

function announce(message) {
  const status = $("status");
  status.textContent = "";
  // A new text node after a tick, so that the same message twice is announced twice.
  setTimeout(() => {
    status.textContent = message;
  }, 30);
}

function showError(message) {
  const alert = $("alert");
  alert.textContent = message;
  alert.hidden = !message;
}

function clearError() {
  showError("");
}

function fail(error, prefix = "") {
  if (error && error.name === "AbortError") return;
  if (error instanceof ApiError && error.status === 401) {
    signOut("Your key is no longer accepted. Sign in again.");
    return;
  }
  showError(`${prefix}${(error && error.message) || error}`);
}

function fieldError(input, errorElement, message) {
  errorElement.textContent = message;
  errorElement.hidden = !message;
  if (message) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  } else {
    input.removeAttribute("aria-invalid");
  }
}

// ---- panels -----------------------------------------------------------------------------------------------

function showPanel(name, { focus = true } = {}) {
  let redirected = false;
  if (NEEDS_SPEAKER.has(name) && !state.speaker) {
    name = "speaker";
    redirected = true;
  }
  // A message about the previous step would mislead here (one announced just before still shows: it is set later).
  if (document.body.dataset.panel !== name) $("status").textContent = "";
  for (const panel of PANELS) $(`panel-${panel}`).hidden = panel !== name;
  for (const button of document.querySelectorAll(".step")) {
    if (button.dataset.panel === name) button.setAttribute("aria-current", "step");
    else button.removeAttribute("aria-current");
  }
  document.body.dataset.panel = name;
  if (redirected) announce("Choose or create a speaker first.");
  if (name === "adapt") renderAdaptSummary();
  if (name === "versions") loadVersions().catch(fail);
  if (name === "record") renderPrompt();
  if (focus) {
    const heading = document.querySelector(`#panel-${name} h2`);
    if (heading) heading.focus();
  }
}

// ---- sign in ----------------------------------------------------------------------------------------------

async function signIn(key) {
  session.key = key;
  try {
    await get("/v1/speakers?limit=1");
  } catch (error) {
    session.clear();
    throw error;
  }
  $("session-box").hidden = false;
  $("steps").hidden = false;
  await loadSpeakers();
  const remembered = sessionStorage.getItem(SPEAKER_KEY);
  const speaker = state.speakers.find((s) => s.id === remembered);
  if (speaker) await selectSpeaker(speaker, { quiet: true });
  showPanel("speaker");
}

function signOut(message = "Signed out.") {
  if (state.follow) state.follow.abort();
  session.clear();
  sessionStorage.removeItem(SPEAKER_KEY);
  state.speaker = null;
  $("session-box").hidden = true;
  $("steps").hidden = true;
  $("speaker-bar").hidden = true;
  $("api-key").value = "";
  showPanel("signin");
  announce(message);
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const input = $("api-key");
  const key = input.value.trim();
  if (!key) {
    fieldError(input, $("api-key-error"), "Enter your API key.");
    return;
  }
  fieldError(input, $("api-key-error"), "");
  $("sign-in").disabled = true;
  try {
    await signIn(key);
    input.value = "";
    announce("Signed in.");
  } catch (error) {
    const message = error instanceof ApiError && error.status === 401
      ? "That key was not accepted. Check it and try again."
      : (error && error.message) || String(error);
    fieldError(input, $("api-key-error"), message);
  } finally {
    $("sign-in").disabled = false;
  }
});

$("sign-out").addEventListener("click", () => signOut());

// ---- speakers ---------------------------------------------------------------------------------------------

const speakerName = (s) => s.display_name || s.external_id || `Speaker ${s.id.slice(0, 8)}`;

function countsText(s) {
  const total = s.utterances.train + s.utterances.eval;
  return `${total} recording${total === 1 ? "" : "s"} (${s.utterances.train} to learn from, ` +
    `${s.utterances.eval} kept aside for testing), ${minutes(s.enrolled_seconds)}`;
}

async function loadSpeakers() {
  const body = await get("/v1/speakers?limit=500");
  state.speakers = body.items;
  renderSpeakers();
}

function renderSpeakers() {
  const list = $("speaker-list");
  list.replaceChildren();
  $("speaker-empty").hidden = state.speakers.length > 0;
  for (const speaker of state.speakers) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "choice";
    button.setAttribute("aria-pressed", String(state.speaker && state.speaker.id === speaker.id));
    const name = document.createElement("span");
    name.textContent = speakerName(speaker);
    const detail = document.createElement("span");
    detail.className = "detail";
    detail.textContent = countsText(speaker);
    button.append(name, detail);
    button.addEventListener("click", () => {
      selectSpeaker(speaker)
        .then(() => showPanel("record"))
        .catch(fail);
    });
    item.append(button);
    list.append(item);
  }
}

function renderSpeakerBar() {
  const bar = $("speaker-bar");
  if (!state.speaker) {
    bar.hidden = true;
    return;
  }
  bar.hidden = false;
  bar.textContent = `Speaker: ${speakerName(state.speaker)}. ${countsText(state.speaker)}.`;
}

async function refreshSpeaker() {
  if (!state.speaker) return;
  const fresh = await get(`/v1/speakers/${state.speaker.id}`);
  // Recordings still uploading are added on top of what the server has.
  state.speaker = fresh;
  const index = state.speakers.findIndex((s) => s.id === fresh.id);
  if (index >= 0) state.speakers[index] = fresh;
  renderSpeakerBar();
  renderAdaptSummary();
}

async function selectSpeaker(speaker, { quiet = false } = {}) {
  if (state.follow) state.follow.abort();
  state.speaker = speaker;
  state.job = null;
  sessionStorage.setItem(SPEAKER_KEY, speaker.id);
  const utterances = await get(`/v1/speakers/${speaker.id}/utterances`);
  state.recordedTexts = new Set(utterances.items.map((u) => normalizeText(u.transcript)));
  state.promptIndex = firstUnrecorded(0);
  renderSpeakers();
  renderSpeakerBar();
  $("job").hidden = true;
  $("result").hidden = true;
  if (!quiet) announce(`Speaker ${speakerName(speaker)} chosen.`);
  if (speaker.active_job_id) followJob(speaker.active_job_id);
}

$("speaker-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const name = $("speaker-name");
  const external = $("speaker-external");
  if (!name.value.trim()) {
    fieldError(name, $("speaker-name-error"), "Enter a name.");
    return;
  }
  fieldError(name, $("speaker-name-error"), "");
  const body = { display_name: name.value.trim() };
  if (external.value.trim()) body.external_id = external.value.trim();
  $("create-speaker").disabled = true;
  try {
    const speaker = await post("/v1/speakers", body);
    state.speakers.push(speaker);
    name.value = "";
    external.value = "";
    await selectSpeaker(speaker, { quiet: true });
    announce(`Speaker ${speakerName(speaker)} created.`);
    showPanel("record");
  } catch (error) {
    if (error instanceof ApiError && error.code === "speaker_exists") {
      fieldError(external, $("speaker-name-error"), "A speaker with this reference already exists.");
    } else {
      fail(error);
    }
  } finally {
    $("create-speaker").disabled = false;
  }
});

// ---- prompts ----------------------------------------------------------------------------------------------

const normalizeText = (text) => text.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, " ").trim();

export function parsePrompts(text) {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith("#"));
}

function firstUnrecorded(from) {
  for (let i = from; i < state.prompts.length; i++) {
    if (!state.recordedTexts.has(normalizeText(state.prompts[i]))) return i;
  }
  return state.prompts.length;
}

async function loadDefaultPrompts() {
  const response = await fetch("/web/prompts.txt", { cache: "no-cache" });
  if (!response.ok) throw new Error("the sentence list could not be loaded");
  setPrompts(parsePrompts(await response.text()), "Everyday sentences shipped with the service (public domain)");
}

function setPrompts(prompts, source) {
  state.prompts = prompts;
  state.promptSource = source;
  state.promptIndex = firstUnrecorded(0);
  $("prompt-source-label").textContent = `Now using: ${source}, ${prompts.length} sentences.`;
  renderPrompt();
}

function renderPrompt() {
  const total = state.prompts.length;
  const done = state.promptIndex >= total;
  $("prompt-position").textContent = done
    ? `All ${total} sentences done.`
    : `Sentence ${state.promptIndex + 1} of ${total}`;
  $("prompt-text").textContent = done
    ? "Thank you! You can personalize now (step 4), or load another list below."
    : state.prompts[state.promptIndex];
  $("record-toggle").disabled = done || !canRecord();
  $("skip-prompt").disabled = done;
}

function nextPrompt() {
  state.promptIndex = firstUnrecorded(state.promptIndex + 1);
  renderPrompt();
}

$("prompt-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const prompts = parsePrompts(await file.text());
  if (!prompts.length) {
    showError("That file has no sentences (one per line; lines starting with # are skipped).");
    return;
  }
  setPrompts(prompts, `your list "${file.name}"`);
  announce(`Loaded ${prompts.length} sentences from ${file.name}.`);
});

$("prompt-default").addEventListener("click", () => {
  loadDefaultPrompts()
    .then(() => announce("Using the shipped sentence list."))
    .catch(fail);
});

// ---- recording --------------------------------------------------------------------------------------------

function setTake(take) {
  if (state.take && state.take.url) URL.revokeObjectURL(state.take.url);
  state.take = take;
  $("take").hidden = !take;
  if (!take) return;
  take.url = URL.createObjectURL(take.wav);
  $("take-audio").src = take.url;
  const notes = [`${take.seconds.toFixed(1)} seconds.`];
  if (take.peak < 0.02) notes.push("It is very quiet: move closer to the microphone, or check the level meter.");
  if (take.seconds < 0.8) notes.push("It is very short: did the whole sentence get in?");
  $("take-note").textContent = notes.join(" ");
}

function recordingButton(button, recording) {
  button.textContent = recording ? "Stop recording" : "Start recording";
  button.classList.toggle("recording", recording);
}

async function startRecording() {
  clearError();
  setTake(null);
  const recorder = new Recorder({
    onLevel: (level, seconds) => {
      $("record-level").value = level;
      $("record-state").textContent = recorder.recording ? `Recording: ${seconds.toFixed(1)} s` : "Not recording";
    },
  });
  try {
    await recorder.start();
  } catch (error) {
    showError(microphoneProblem(error));
    return;
  }
  state.recorder = recorder;
  recordingButton($("record-toggle"), true);
  document.body.dataset.recording = "true";
  announce("Recording. Read the sentence, then press Stop recording.");
}

async function stopRecording() {
  const recorder = state.recorder;
  state.recorder = null;
  recordingButton($("record-toggle"), false);
  $("record-toggle").disabled = true;
  try {
    const take = await recorder.stop();
    take.promptIndex = state.promptIndex;
    take.text = state.prompts[state.promptIndex];
    setTake(take);
    announce(`Recorded ${take.seconds.toFixed(1)} seconds. Listen back, then keep it or record again.`);
    $("keep-take").focus();
  } catch (error) {
    showError(`The recording could not be read (${error.message || error}). Try again.`);
  } finally {
    delete document.body.dataset.recording;
    $("record-state").textContent = "Not recording";
    renderPrompt();
  }
}

$("record-toggle").addEventListener("click", () => {
  if (state.recorder) stopRecording();
  else startRecording();
});

$("keep-take").addEventListener("click", () => {
  const take = state.take;
  if (!take) return;
  const number = take.promptIndex + 1;
  enqueueUpload({
    label: `Sentence ${number}: ${take.text}`,
    blob: take.wav,
    filename: `sentence-${String(number).padStart(3, "0")}.wav`,
    transcript: take.text,
    seconds: take.seconds,
  });
  state.recordedTexts.add(normalizeText(take.text));
  setTake(null);
  nextPrompt();
  announce(`Kept. Uploading sentence ${number}. Next sentence.`);
  $("record-toggle").focus();
});

$("redo-take").addEventListener("click", () => {
  setTake(null);
  startRecording().then(() => $("record-toggle").focus());
});

$("skip-prompt").addEventListener("click", () => {
  if (state.recorder) {
    state.recorder.cancel();
    state.recorder = null;
    recordingButton($("record-toggle"), false);
  }
  setTake(null);
  nextPrompt();
  announce("Skipped. Next sentence.");
});

// ---- uploads ----------------------------------------------------------------------------------------------

function pendingCounts() {
  const counts = { train: 0, eval: 0 };
  for (const item of state.uploads) {
    if (item.speakerId === state.speaker.id && ["queued", "uploading", "waiting"].includes(item.state)) {
      counts[item.split] += 1;
    }
  }
  return counts;
}

// Keep one in four aside for testing: eval while eval x 3 < train, counting what is still uploading.
function nextSplit() {
  const pending = pendingCounts();
  const train = state.speaker.utterances.train + pending.train;
  const held = state.speaker.utterances.eval + pending.eval;
  return held * 3 < train ? "eval" : "train";
}

function enqueueUpload({ label, blob, filename, transcript, split, seconds = 0 }) {
  const item = {
    id: `upload-${state.uploads.length + 1}`,
    speakerId: state.speaker.id,
    label,
    blob,
    filename,
    transcript,
    seconds,
    split: split || nextSplit(),
    state: "queued",
    progress: 0,
    attempts: 0,
    error: "",
  };
  state.uploads.push(item);
  renderUpload(item);
  pumpUploads();
  return item;
}

function renderUpload(item) {
  let li = document.getElementById(item.id);
  if (!li) {
    li = document.createElement("li");
    li.id = item.id;
    li.className = "upload";
    li.innerHTML =
      '<span class="upload-label"></span><span class="upload-actions"></span>' +
      '<progress max="1" value="0"></progress><span class="upload-status"></span>';
    $("uploads").prepend(li);
    $("uploads-empty").hidden = true;
  }
  const label = li.querySelector(".upload-label");
  label.textContent = item.label;
  const tag = document.createElement("span");
  tag.className = "tag";
  tag.textContent = item.split === "eval" ? "kept aside for testing" : "to learn from";
  label.append(tag);
  const progress = li.querySelector("progress");
  progress.value = item.progress;
  progress.setAttribute("aria-label", `Upload of ${item.label}`);
  const status = li.querySelector(".upload-status");
  status.textContent = {
    queued: "Waiting to upload",
    uploading: `Uploading: ${Math.round(item.progress * 100)}%`,
    waiting: `Connection problem: trying again (attempt ${item.attempts + 1} of ${MAX_ATTEMPTS})`,
    done: "Uploaded",
    failed: `Not uploaded: ${item.error}`,
  }[item.state];
  li.className = `upload ${item.state}`;
  li.dataset.state = item.state;
  const actions = li.querySelector(".upload-actions");
  actions.replaceChildren();
  if (item.state === "failed") {
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "button secondary";
    retry.textContent = "Try again";
    retry.setAttribute("aria-label", `Try uploading ${item.label} again`);
    retry.addEventListener("click", () => {
      item.state = "queued";
      item.attempts = 0;
      item.error = "";
      renderUpload(item);
      pumpUploads();
      announce("Trying the upload again.");
    });
    actions.append(retry);
  }
}

function pumpUploads() {
  while (state.activeUploads < MAX_PARALLEL_UPLOADS) {
    const next = state.uploads.find((item) => item.state === "queued");
    if (!next) return;
    runUpload(next);
  }
}

async function runUpload(item) {
  state.activeUploads += 1;
  item.state = "uploading";
  item.attempts += 1;
  item.progress = 0;
  renderUpload(item);
  const form = new FormData();
  form.append("audio", item.blob, item.filename);
  form.append("transcript", item.transcript);
  form.append("split", item.split);
  try {
    const utterance = await upload(`/v1/speakers/${item.speakerId}/utterances`, form, (fraction) => {
      item.progress = fraction;
      renderUpload(item);
    });
    item.state = "done";
    item.utteranceId = utterance.id;
    if (state.speaker && state.speaker.id === item.speakerId) {
      state.speaker.utterances[utterance.split] += 1;
      state.speaker.enrolled_seconds += utterance.duration_s;
      renderSpeakerBar();
      renderAdaptSummary();
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      item.state = "failed";
      item.error = error.message;
      fail(error);
    } else if (error instanceof ApiError && error.retriable && item.attempts < MAX_ATTEMPTS) {
      item.state = "waiting";
      setTimeout(() => {
        item.state = "queued";
        pumpUploads();
      }, 1000 * 2 ** item.attempts);
    } else {
      item.state = "failed";
      item.error = error.message || String(error);
      announce(`An upload failed: ${item.error}`);
    }
  } finally {
    state.activeUploads -= 1;
    renderUpload(item);
    pumpUploads();
    if (!state.uploads.some((u) => ["queued", "uploading", "waiting"].includes(u.state))) {
      refreshSpeaker().catch(() => {});
    }
  }
}

// ---- files with transcripts -------------------------------------------------------------------------------

const baseName = (name) => name.replace(/^.*[\\/]/, "");
const stem = (name) => baseName(name).replace(/\.[^.]+$/, "");

export function parseTranscripts(text) {
  const map = new Map();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    if (line.startsWith("{")) {
      try {
        const row = JSON.parse(line);
        if (row.file && row.text) map.set(baseName(row.file), { text: row.text, split: row.split });
      } catch {
        // not JSON after all
      }
      continue;
    }
    const match = line.match(/^([^\t|]+)[\t|](.+)$/);
    if (match) map.set(baseName(match[1].trim()), { text: match[2].trim() });
  }
  return map;
}

function lookupTranscript(map, file) {
  return map.get(file.name) || map.get(stem(file.name)) ||
    [...map.entries()].find(([name]) => stem(name) === stem(file.name))?.[1];
}

function renderFiles() {
  const files = [...$("files-input").files];
  const table = $("files-table");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  table.hidden = files.length === 0;
  files.forEach((file, i) => {
    const found = state.transcripts ? lookupTranscript(state.transcripts, file) : null;
    const row = document.createElement("tr");
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = file.name;
    const textCell = document.createElement("td");
    const input = document.createElement("input");
    input.type = "text";
    input.id = `file-text-${i}`;
    input.setAttribute("aria-label", `What is said in ${file.name}`);
    input.value = found ? found.text : "";
    textCell.append(input);
    const splitCell = document.createElement("td");
    const select = document.createElement("select");
    select.id = `file-split-${i}`;
    select.setAttribute("aria-label", `Use ${file.name} for`);
    for (const [value, label] of [["auto", "Automatic"], ["train", "Learning"], ["eval", "Testing"]]) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = label;
      select.append(option);
    }
    select.value = found && found.split ? found.split : "auto";
    splitCell.append(select);
    row.append(name, textCell, splitCell);
    body.append(row);
  });
  $("files-upload").disabled = files.length === 0;
  $("files-upload").textContent = files.length ? `Upload ${files.length} file${files.length === 1 ? "" : "s"}` : "Upload files";
}

$("files-input").addEventListener("change", renderFiles);
$("transcripts-input").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  state.transcripts = file ? parseTranscripts(await file.text()) : null;
  renderFiles();
  if (file) announce(`Read ${state.transcripts.size} transcripts from ${file.name}.`);
});

$("files-form").addEventListener("submit", (event) => {
  event.preventDefault();
  clearError();
  const files = [...$("files-input").files];
  const missing = files.findIndex((_, i) => !$(`file-text-${i}`).value.trim());
  if (missing >= 0) {
    showError(`Write what is said in ${files[missing].name} first.`);
    $(`file-text-${missing}`).focus();
    return;
  }
  files.forEach((file, i) => {
    const split = $(`file-split-${i}`).value;
    enqueueUpload({
      label: file.name,
      blob: file,
      filename: file.name,
      transcript: $(`file-text-${i}`).value.trim(),
      split: split === "auto" ? undefined : split,
    });
  });
  announce(`Uploading ${files.length} file${files.length === 1 ? "" : "s"}.`);
  $("files-form").reset();
  state.transcripts = null;
  renderFiles();
  showPanel("record", { focus: false });
  $("uploads-title").scrollIntoView();
});

// ---- personalization: start, follow live, result -----------------------------------------------------------

function renderAdaptSummary() {
  if (!state.speaker) return;
  $("adapt-summary").textContent = `${speakerName(state.speaker)} has ${countsText(state.speaker)}.`;
}

$("adapt-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const body = { head_type: $("head-type").value };
  const seconds = $("train-seconds").value.trim();
  if (seconds) body.max_train_seconds = Number(seconds);
  $("start-adaptation").disabled = true;
  try {
    const job = await post(`/v1/speakers/${state.speaker.id}/adaptations`, body);
    announce("Personalization started.");
    followJob(job.id, job);
  } catch (error) {
    if (error instanceof ApiError && error.code === "job_already_active") {
      await refreshSpeaker();
      announce("A personalization is already running; showing it.");
      if (state.speaker.active_job_id) followJob(state.speaker.active_job_id);
    } else if (error instanceof ApiError && error.code === "not_enough_data") {
      showError(`Not enough recordings yet: ${error.message}.`);
    } else {
      fail(error);
    }
  } finally {
    $("start-adaptation").disabled = false;
  }
});

$("cancel-job").addEventListener("click", async () => {
  if (!state.job) return;
  try {
    renderJob(await post(`/v1/jobs/${state.job.id}/cancel`));
  } catch (error) {
    fail(error);
  }
});

const TERMINAL = new Set(["promoted", "rejected", "failed", "cancelled"]);

function renderJob(job) {
  const previous = state.job;
  state.job = job;
  $("job").hidden = false;
  document.body.dataset.jobState = job.state;
  $("job-state").textContent = JOB_STATES[job.state] || job.state;
  $("job-progress").value = job.progress;
  let detail = `${Math.round(job.progress * 100)}% done.`;
  if (job.state === "training" && job.step !== null && job.step !== undefined) {
    detail += ` Step ${job.step}${job.total_steps ? ` of ${job.total_steps}` : ""}`;
    if (job.loss !== null && job.loss !== undefined) detail += `, loss ${job.loss.toFixed(3)}`;
    detail += ".";
  }
  if (job.error && job.state === "failed") detail += ` ${job.error}`;
  $("job-detail").textContent = detail;
  $("cancel-job").hidden = TERMINAL.has(job.state);
  if (!previous || previous.id !== job.id || previous.state !== job.state) {
    announce(JOB_STATES[job.state] || job.state);
  }
}

async function followJob(jobId, first = null) {
  if (state.follow) state.follow.abort();
  const controller = new AbortController();
  state.follow = controller;
  $("result").hidden = true;
  if (first) renderJob(first);
  let finished = null;
  // Live: Server-Sent Events read with fetch (the key goes in a header). Reconnect after a "timeout" event.
  try {
    for (let round = 0; !finished && round < 100; round++) {
      $("job-connection").textContent = "Live updates on.";
      document.body.dataset.jobUpdates = "live";
      await readEvents(`/v1/jobs/${jobId}/events`, ({ event, data }) => {
        if (event === "job" || event === "end") renderJob(JSON.parse(data));
        if (event === "end") finished = JSON.parse(data);
        if (event === "gone") finished = { state: "gone" };
      }, { signal: controller.signal });
      if (!finished && controller.signal.aborted) return;
    }
  } catch (error) {
    if (error.name === "AbortError") return;
    if (error instanceof ApiError && error.status === 401) return fail(error);
    // Fallback: polling.
    $("job-connection").textContent = `Live updates unavailable: checking every ${POLL_MS / 1000} seconds.`;
    document.body.dataset.jobUpdates = "polling";
    while (!finished && !controller.signal.aborted) {
      try {
        const job = await get(`/v1/jobs/${jobId}`, { signal: controller.signal });
        renderJob(job);
        if (TERMINAL.has(job.state)) finished = job;
      } catch (pollError) {
        if (pollError.name === "AbortError") return;
        if (pollError instanceof ApiError && pollError.status === 404) finished = { state: "gone" };
      }
      if (!finished) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }
  if (controller.signal.aborted || !finished) return;
  $("job-connection").textContent = "";
  if (finished.state === "gone") {
    showError("This personalization no longer exists.");
    return;
  }
  await refreshSpeaker().catch(() => {});
  await showResult(finished).catch(fail);
}

async function showResult(job) {
  const section = $("result");
  section.hidden = false;
  const decision = $("result-decision");
  const evaluation = job.evaluation;
  const tbody = $("result-wer").querySelector("tbody");
  tbody.replaceChildren();
  $("result-utterances").querySelector("tbody").replaceChildren();
  if (!evaluation) {
    decision.className = "decision failed";
    decision.textContent = job.state === "cancelled" ? "The personalization was cancelled." : "The personalization failed.";
    $("result-explanation").textContent = job.error || "";
    $("result-reason").textContent = job.error || "";
    $("result-wer").hidden = true;
    document.body.dataset.result = job.state;
    $("result-title").focus();
    return;
  }
  $("result-wer").hidden = false;
  const promoted = evaluation.decision === "promote";
  decision.className = `decision ${evaluation.decision}`;
  decision.textContent = promoted
    ? "Promoted: your personalized version is now in use."
    : "Not promoted: the personalized version is not used.";
  $("result-explanation").textContent = explainDecision(evaluation);
  $("result-reason").textContent = evaluation.reason;
  const rows = [["Base model", evaluation.base_wer]];
  if (evaluation.in_service_wer !== null && evaluation.in_service_wer !== undefined) {
    rows.push(["Version in use before", evaluation.in_service_wer]);
  }
  rows.push(["Personalized (new)", evaluation.candidate_wer]);
  for (const [name, wer] of rows) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    const td = document.createElement("td");
    td.textContent = percent(wer);
    tr.append(th, td);
    tbody.append(tr);
  }
  document.body.dataset.result = evaluation.decision;
  try {
    const report = await get(`/v1/jobs/${job.id}/report`);
    renderReport(report);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) throw error;
  }
  $("result-title").focus();
}

function renderReport(report) {
  const tbody = $("result-utterances").querySelector("tbody");
  tbody.replaceChildren();
  for (const row of report.utterances) {
    const tr = document.createElement("tr");
    const read = document.createElement("td");
    read.textContent = row.reference_text;
    const base = document.createElement("td");
    renderMarked(base, row.reference_text, row.base.text);
    const personal = document.createElement("td");
    renderMarked(personal, row.reference_text, row.candidate.text);
    tr.append(read, base, personal);
    tbody.append(tr);
  }
}

// ---- try it -----------------------------------------------------------------------------------------------

const sentence = (text) => (!text.trim() ? "nothing." : /[.!?]$/.test(text.trim()) ? text.trim() : `${text.trim()}.`);

async function transcribeBoth(audio, filename) {
  clearError();
  $("try-result").hidden = false;
  $("try-audio").src = URL.createObjectURL(audio);
  $("try-base").textContent = "Transcribing…";
  $("try-personal").textContent = "Transcribing…";
  announce("Transcribing with both models…");
  const form = () => {
    const data = new FormData();
    data.append("audio", audio, filename);
    return data;
  };
  try {
    const [base, personal] = await Promise.all([
      request("POST", "/v1/transcriptions", { form: form() }),
      request("POST", `/v1/speakers/${state.speaker.id}/transcriptions`, { form: form() }),
    ]);
    if (!state.heads.length) await loadHeads();
    const head = state.heads.find((h) => h.id === personal.head_id);
    $("try-personal-title").textContent = head
      ? `Personalized (version ${head.version})`
      : "Personalized: none in use yet (base model)";
    renderMarked($("try-base"), personal.text, base.text);
    renderMarked($("try-personal"), base.text, personal.text);
    document.body.dataset.tried = "true";
    announce(`Base model heard: ${sentence(base.text)} Personalized heard: ${sentence(personal.text)}`);
  } catch (error) {
    $("try-base").textContent = "";
    $("try-personal").textContent = "";
    fail(error);
  }
}

$("try-toggle").addEventListener("click", async () => {
  const button = $("try-toggle");
  if (state.tryRecorder) {
    const recorder = state.tryRecorder;
    state.tryRecorder = null;
    recordingButton(button, false);
    try {
      const take = await recorder.stop();
      await transcribeBoth(take.wav, "try.wav");
    } catch (error) {
      showError(`The recording could not be read (${error.message || error}).`);
    }
    $("try-state").textContent = "Not recording";
    return;
  }
  clearError();
  const recorder = new Recorder({
    onLevel: (level, seconds) => {
      $("try-level").value = level;
      $("try-state").textContent = recorder.recording ? `Recording: ${seconds.toFixed(1)} s` : "Not recording";
    },
  });
  try {
    await recorder.start();
  } catch (error) {
    showError(microphoneProblem(error));
    return;
  }
  state.tryRecorder = recorder;
  recordingButton(button, true);
  announce("Recording. Say something, then press Stop recording.");
});

$("try-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) transcribeBoth(file, file.name);
});

// ---- versions and rollback --------------------------------------------------------------------------------

async function loadHeads() {
  state.heads = (await get(`/v1/speakers/${state.speaker.id}/heads`)).items;
  return state.heads;
}

async function loadVersions() {
  if (!state.speaker) return;
  const [heads, events] = await Promise.all([
    loadHeads(),
    get(`/v1/speakers/${state.speaker.id}/head-events`),
  ]);
  const table = $("versions-table");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  table.hidden = heads.length === 0;
  $("versions-empty").hidden = heads.length > 0;
  for (const head of [...heads].reverse()) {
    const tr = document.createElement("tr");
    tr.dataset.status = head.status;
    const version = document.createElement("th");
    version.scope = "row";
    version.textContent = `Version ${head.version}`;
    const status = document.createElement("td");
    status.textContent = HEAD_STATUSES[head.status] || head.status;
    const made = document.createElement("td");
    made.textContent = new Date(head.created_at).toLocaleString();
    const wer = document.createElement("td");
    wer.textContent = head.evaluation
      ? `${percent(head.evaluation.candidate_wer)} (base model ${percent(head.evaluation.base_wer)})`
      : "not measured";
    const actions = document.createElement("td");
    const row = document.createElement("div");
    row.className = "button-row";
    if (head.status === "retired" || head.status === "rejected") {
      row.append(actionButton(`Use version ${head.version}`, head, "promote"));
    }
    if (head.status === "in_service") {
      row.append(actionButton(`Stop using version ${head.version}`, head, "retire", "danger"));
    }
    if (head.job_id && head.evaluation) {
      const report = document.createElement("button");
      report.type = "button";
      report.className = "button secondary";
      report.textContent = `Report of version ${head.version}`;
      report.addEventListener("click", async () => {
        try {
          const job = await get(`/v1/jobs/${head.job_id}`);
          showPanel("adapt", { focus: false });
          renderJob(job);
          await showResult(job);
        } catch (error) {
          fail(error);
        }
      });
      row.append(report);
    }
    actions.append(row);
    tr.append(version, status, made, wer, actions);
    body.append(tr);
  }
  const list = $("events");
  list.replaceChildren();
  $("events-empty").hidden = events.items.length > 0;
  const versionOf = (id) => heads.find((h) => h.id === id)?.version ?? "?";
  for (const event of events.items) {
    const li = document.createElement("li");
    const when = new Date(event.created_at).toLocaleString();
    const what = event.action === "promote"
      ? `put version ${versionOf(event.head_id)} in use` +
        (event.replaced_head_id ? ` (replacing version ${versionOf(event.replaced_head_id)})` : "")
      : `stopped using version ${versionOf(event.head_id)}`;
    li.textContent = `${when}: ${event.actor} ${what}. Reason: ${event.reason}`;
    list.append(li);
  }
}

function actionButton(label, head, action, kind = "primary") {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `button ${kind}`;
  button.textContent = label;
  button.addEventListener("click", () => openChange(head, action, button));
  return button;
}

function openChange(head, action, opener) {
  state.change = { head, action, opener };
  $("change-title").textContent = action === "promote" ? `Use version ${head.version}` : `Stop using version ${head.version}`;
  $("change-text").textContent = action === "promote"
    ? `Version ${head.version} will transcribe this speaker from now on; the version in use (if any) is set aside.`
    : `Version ${head.version} will no longer be used; this speaker is transcribed by the base model until another ` +
      "version is put in use.";
  $("change-reason").value = "";
  fieldError($("change-reason"), $("change-error"), "");
  $("change-dialog").showModal();
  $("change-reason").focus();
}

function closeChange() {
  const opener = state.change && state.change.opener;
  $("change-dialog").close();
  state.change = null;
  if (opener && opener.isConnected) opener.focus();
}

$("change-cancel").addEventListener("click", closeChange);
$("change-dialog").addEventListener("cancel", (event) => {
  event.preventDefault();
  closeChange();
});

$("change-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const reason = $("change-reason").value.trim();
  if (!reason) {
    fieldError($("change-reason"), $("change-error"), "Say why: it is kept with the change.");
    return;
  }
  const { head, action } = state.change;
  $("change-confirm").disabled = true;
  try {
    await post(`/v1/heads/${head.id}/${action}`, { reason });
    $("change-dialog").close();
    state.change = null;
    await loadVersions();
    await refreshSpeaker();
    announce(action === "promote" ? `Version ${head.version} is now in use.` : `Version ${head.version} is no longer used.`);
    $("versions-title").focus();
  } catch (error) {
    fieldError($("change-reason"), $("change-error"), error.message || String(error));
  } finally {
    $("change-confirm").disabled = false;
  }
});

// ---- start ------------------------------------------------------------------------------------------------

for (const button of document.querySelectorAll(".step")) {
  button.addEventListener("click", () => showPanel(button.dataset.panel));
}

async function boot() {
  if (!canRecord()) $("record-unsupported").hidden = false;
  try {
    await loadDefaultPrompts();
  } catch (error) {
    showError(`The sentence list could not be loaded (${error.message}). You can load your own in step 2.`);
  }
  if (session.key) {
    try {
      await signIn(session.key);
      return;
    } catch {
      session.clear();
    }
  }
  showPanel("signin", { focus: false });
}

boot().finally(() => {
  document.body.dataset.ready = "true";
});
