// The service's words in plain ones: job states, head statuses, and the gate's decision.

export const JOB_STATES = {
  queued: "Waiting for a free worker",
  training: "Learning your voice",
  evaluating: "Testing on the sentences kept aside",
  promoted: "Finished: the personalized version is now in use",
  rejected: "Finished: the personalized version was not better, so it is not used",
  failed: "Something went wrong",
  cancelled: "Cancelled",
};

export const HEAD_STATUSES = {
  in_service: "In use",
  retired: "Earlier version (not in use)",
  rejected: "Not better: not used",
  candidate: "Being tested",
};

export const percent = (value) => (value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`);

export function minutes(seconds) {
  const m = seconds / 60;
  return m < 1 ? `${Math.round(seconds)} seconds` : `${m.toFixed(1)} minutes`;
}

// What the gate decided, as a sentence a person can act on. `evaluation` is the job's (or head's) evaluation.
export function explainDecision(evaluation) {
  const reason = evaluation.reason || "";
  const base = evaluation.base_wer;
  const reference = evaluation.in_service_wer ?? base;
  const candidate = evaluation.candidate_wer;
  const referenceName = evaluation.in_service_wer === null || evaluation.in_service_wer === undefined
    ? "the base model"
    : "the version in use";
  const fewer = reference > 0 ? Math.round(((reference - candidate) / reference) * 100) : 0;
  if (evaluation.decision === "promote") {
    return `The personalized version made ${fewer}% fewer word errors than ${referenceName} on the sentences kept ` +
      "aside, consistently enough to trust it. It now transcribes this speaker.";
  }
  let match = reason.match(/too few held-out words: (\d+) < (\d+)/);
  if (match) {
    return `There were too few sentences kept aside to judge fairly: ${match[1]} words, and at least ${match[2]} ` +
      "are needed. Record more sentences (every fourth one is kept aside) and personalize again.";
  }
  if (/already makes no errors/.test(reason)) {
    return `${capitalize(referenceName)} already understood every sentence kept aside, so there was nothing to ` +
      "improve.";
  }
  match = reason.match(/margin of ([\d.]+%)/);
  if (match) {
    return `The personalized version was not better by enough (it needs at least ${match[1]} fewer errors than ` +
      `${referenceName}). ${capitalize(referenceName)} stays in use. More recordings usually help.`;
  }
  if (/not significant/.test(reason)) {
    return "The personalized version looked better on some sentences but not consistently enough to be sure, " +
      `so ${referenceName} stays in use. More recordings usually help.`;
  }
  return `The personalized version is not used: ${reason}`;
}

const capitalize = (text) => text.charAt(0).toUpperCase() + text.slice(1);
