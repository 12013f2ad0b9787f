// Word-level differences between what was said (or another transcript) and a transcript, for marking.

const normalize = (word) => word.toLowerCase().replace(/[^\p{L}\p{N}']+/gu, "");
const words = (text) => (text || "").split(/\s+/).filter(Boolean);

// Which words of `hypothesis` are not matched in `reference` (longest common subsequence of normalized words),
// and which words of `reference` the hypothesis misses.
export function compareWords(reference, hypothesis) {
  const r = words(reference);
  const h = words(hypothesis);
  const rn = r.map(normalize);
  const hn = h.map(normalize);
  const table = Array.from({ length: r.length + 1 }, () => new Uint16Array(h.length + 1));
  for (let i = r.length - 1; i >= 0; i--) {
    for (let j = h.length - 1; j >= 0; j--) {
      table[i][j] = rn[i] === hn[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const hMatched = new Array(h.length).fill(false);
  const rMatched = new Array(r.length).fill(false);
  let i = 0;
  let j = 0;
  while (i < r.length && j < h.length) {
    if (rn[i] === hn[j]) {
      rMatched[i++] = true;
      hMatched[j++] = true;
    } else if (table[i + 1][j] >= table[i][j + 1]) {
      i++;
    } else {
      j++;
    }
  }
  return {
    tokens: h.map((text, k) => ({ text, same: hMatched[k] || hn[k] === "" })),
    missing: r.filter((_, k) => !rMatched[k] && rn[k] !== ""),
  };
}

// Fill `element` with `hypothesis`, its words that differ from `reference` in <mark>, then the missed words.
export function renderMarked(element, reference, hypothesis) {
  element.replaceChildren();
  const { tokens, missing } = compareWords(reference, hypothesis);
  if (!tokens.length) {
    const empty = document.createElement("em");
    empty.textContent = "(nothing heard)";
    element.append(empty);
  }
  tokens.forEach((token, k) => {
    if (k) element.append(" ");
    if (token.same) {
      element.append(token.text);
    } else {
      const mark = document.createElement("mark");
      mark.className = "diff";
      mark.textContent = token.text;
      element.append(mark);
    }
  });
  // Missed words, unless nothing matched at all (then every word is marked and the list would repeat the text).
  if (missing.length && tokens.some((t) => t.same)) {
    const note = document.createElement("span");
    note.className = "missed";
    note.textContent = ` (missed: ${missing.join(" ")})`;
    element.append(note);
  }
  return tokens.filter((t) => !t.same).length + missing.length;
}
