// The microphone: MediaRecorder records, an AnalyserNode drives the level meter, and at the end the recording
// is decoded in the page and resampled to 16 kHz mono WAV (what the model reads; the server decodes WAV but not
// the WebM/Opus that browsers record).

import { encodeWav } from "./wav.js";

export const SAMPLE_RATE = 16000;
const MIME_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/mp4"];

export function canRecord() {
  return Boolean(
    navigator.mediaDevices &&
      navigator.mediaDevices.getUserMedia &&
      window.MediaRecorder &&
      window.AudioContext &&
      window.OfflineAudioContext,
  );
}

export function microphoneProblem(error) {
  if (error && (error.name === "NotAllowedError" || error.name === "SecurityError")) {
    return "The microphone is blocked. Allow this page to use it (the icon in the address bar), then try again.";
  }
  if (error && error.name === "NotFoundError") return "No microphone was found. Connect one and try again.";
  return `The microphone could not be started (${(error && error.message) || error}).`;
}

async function toMono16k(audioBuffer) {
  const length = Math.max(1, Math.ceil(audioBuffer.duration * SAMPLE_RATE));
  const offline = new OfflineAudioContext(1, length, SAMPLE_RATE); // one channel: the channels are averaged
  const source = offline.createBufferSource();
  source.buffer = audioBuffer;
  source.connect(offline.destination);
  source.start();
  const rendered = await offline.startRendering();
  return rendered.getChannelData(0);
}

export class Recorder {
  // onLevel(level 0..1, seconds) about 16 times a second while recording.
  constructor({ onLevel = () => {} } = {}) {
    this.onLevel = onLevel;
    this.recording = false;
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    this.context = new AudioContext();
    const source = this.context.createMediaStreamSource(this.stream);
    this.analyser = this.context.createAnalyser();
    this.analyser.fftSize = 2048;
    source.connect(this.analyser);
    const mimeType = MIME_TYPES.find((type) => MediaRecorder.isTypeSupported(type));
    this.chunks = [];
    this.mediaRecorder = new MediaRecorder(this.stream, mimeType ? { mimeType } : undefined);
    this.mediaRecorder.addEventListener("dataavailable", (event) => {
      if (event.data && event.data.size) this.chunks.push(event.data);
    });
    this.stopped = new Promise((resolve) => this.mediaRecorder.addEventListener("stop", resolve, { once: true }));
    this.mediaRecorder.start(250);
    this.recording = true;
    this.startedAt = performance.now();
    this.peak = 0;
    const frame = new Float32Array(this.analyser.fftSize);
    this.meter = setInterval(() => {
      this.analyser.getFloatTimeDomainData(frame);
      let sum = 0;
      for (const s of frame) {
        sum += s * s;
        this.peak = Math.max(this.peak, Math.abs(s));
      }
      const db = 20 * Math.log10(Math.max(Math.sqrt(sum / frame.length), 1e-5));
      this.onLevel(Math.min(1, Math.max(0, (db + 60) / 60)), (performance.now() - this.startedAt) / 1000);
    }, 60);
  }

  // Resolves with {wav: Blob, seconds, peak}.
  async stop() {
    clearInterval(this.meter);
    this.recording = false;
    try {
      if (this.mediaRecorder.state !== "inactive") this.mediaRecorder.stop();
      await this.stopped;
      const recorded = new Blob(this.chunks, { type: this.mediaRecorder.mimeType });
      const decoded = await this.context.decodeAudioData(await recorded.arrayBuffer());
      const samples = await toMono16k(decoded);
      return { wav: encodeWav(samples, SAMPLE_RATE), seconds: samples.length / SAMPLE_RATE, peak: this.peak };
    } finally {
      this.release();
    }
  }

  cancel() {
    clearInterval(this.meter);
    this.recording = false;
    try {
      if (this.mediaRecorder && this.mediaRecorder.state !== "inactive") this.mediaRecorder.stop();
    } catch {
      // already stopped
    }
    this.release();
  }

  release() {
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    if (this.context && this.context.state !== "closed") this.context.close();
    this.stream = null;
    this.onLevel(0, 0);
  }
}
