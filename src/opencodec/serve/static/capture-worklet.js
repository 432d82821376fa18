// AudioWorklet processors for the opencodec page: the microphone in, the decoded audio out.

// Microphone -> main thread, in chunks of `chunk` samples (first channel), as captured.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunk = (options.processorOptions && options.processorOptions.chunk) || 320;
    this.buf = new Float32Array(this.chunk);
    this.n = 0;
    this.on = true;
    this.port.onmessage = (e) => { if (e.data === 'stop') this.on = false; };
  }
  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!this.on) return false;
    if (!input) return true;
    let i = 0;
    while (i < input.length) {
      const take = Math.min(input.length - i, this.chunk - this.n);
      this.buf.set(input.subarray(i, i + take), this.n);
      this.n += take; i += take;
      if (this.n === this.chunk) {
        this.port.postMessage(this.buf.slice(0));
        this.n = 0;
      }
    }
    return true;
  }
}

// Decoded audio from the main thread -> speakers; the samples actually played are posted
// back (silence while waiting for data is not), so the page can keep what it played.
class PlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.head = 0;  // position in queue[0]
    this.played = [];
    this.playedCount = 0;
    this.port.onmessage = (e) => { this.queue.push(e.data); };
  }
  process(inputs, outputs) {
    const out = outputs[0][0];
    let i = 0;
    while (i < out.length && this.queue.length) {
      const cur = this.queue[0];
      const take = Math.min(out.length - i, cur.length - this.head);
      out.set(cur.subarray(this.head, this.head + take), i);
      this.played.push(cur.slice(this.head, this.head + take));
      this.playedCount += take;
      i += take; this.head += take;
      if (this.head === cur.length) { this.queue.shift(); this.head = 0; }
    }
    out.fill(0, i);
    if (this.playedCount >= 1280 || (this.playedCount && !this.queue.length)) {
      const all = new Float32Array(this.playedCount);
      let o = 0;
      for (const p of this.played) { all.set(p, o); o += p.length; }
      this.port.postMessage(all);
      this.played = []; this.playedCount = 0;
    }
    return true;
  }
}

registerProcessor('opencodec-capture', CaptureProcessor);
registerProcessor('opencodec-player', PlayerProcessor);
