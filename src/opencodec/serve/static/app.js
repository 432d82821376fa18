// The opencodec live page: microphone -> WebSocket (PCM at the model's rate, float32) ->
// server relay (encode, packets, decode) -> decoded PCM -> speakers.
// window.opencodec exposes what the page sent and played (tests read it).
'use strict';
const $ = (id) => document.getElementById(id);
const state = {
  status: 'idle', closeCode: null, closeReason: '', info: null, stats: null,
  sent: [], sentSamples: 0, received: 0, played: [], playedSamples: 0,
  sendTimes: [], latencies: [], ctx: null, ws: null, capture: null, player: null, stream: null,
};
window.opencodec = state;

function setStatus(text, error) {
  state.status = text;
  $('status').textContent = text;
  $('status').className = error ? 'error' : '';
}

function concat(chunks) {
  let n = 0; for (const c of chunks) n += c.length;
  const all = new Float32Array(n); let o = 0;
  for (const c of chunks) { all.set(c, o); o += c.length; }
  return all;
}

// Base64 of the float32 samples sent or played (for tests: compact through WebDriver).
state.pcmBase64 = (which) => {
  const bytes = new Uint8Array(concat(which === 'sent' ? state.sent : state.played).buffer);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
};

function median(xs) {
  if (!xs.length) return null;
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function showStats() {
  const st = state.stats;
  if (st && st.bitrate_kbps != null) {
    $('bitrate').textContent = st.bitrate_kbps.toFixed(2) + ' kbps' + (st.type === 'done' ? ' (whole stream)' : '')
      + (st.bandwidth != null ? ` at ${st.bandwidth} kbps of codes` : '');
  }
  if (st && st.step_ms_p50 != null) $('step').textContent = st.step_ms_p50.toFixed(2) + ' ms';
  const lat = median(state.latencies.slice(-100));
  if (lat != null) $('latency').textContent = lat.toFixed(0) + ' ms (median of the last 100 chunks)';
  const rate = state.info ? state.info.sample_rate : 1;
  $('seconds').textContent = (state.sentSamples / rate).toFixed(1) + ' s / ' + (state.playedSamples / rate).toFixed(1) + ' s';
}

function onPcm(buffer) {
  const pcm = new Float32Array(buffer);
  state.player.port.postMessage(pcm);
  const before = state.received;
  state.received += pcm.length;
  const now = performance.now();
  while (state.sendTimes.length && state.sendTimes[0][0] <= state.received) {
    const [end, t] = state.sendTimes.shift();
    if (end > before) state.latencies.push(now - t);
  }
}

async function start() {
  $('start').disabled = true;
  try {
    const info = state.info;
    const ctx = new AudioContext({ sampleRate: info.sample_rate, latencyHint: 'interactive' });
    state.ctx = ctx;
    await ctx.audioWorklet.addModule('capture-worklet.js');
    state.stream = await navigator.mediaDevices.getUserMedia({ audio: {
      channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    const source = ctx.createMediaStreamSource(state.stream);
    const capture = new AudioWorkletNode(ctx, 'opencodec-capture', {
      numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1, channelCountMode: 'explicit',
      processorOptions: { chunk: info.hop_length } });
    const player = new AudioWorkletNode(ctx, 'opencodec-player', {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1] });
    state.capture = capture; state.player = player;
    player.port.onmessage = (e) => { state.played.push(e.data); state.playedSamples += e.data.length; };
    const mute = ctx.createGain(); mute.gain.value = 0;  // keeps the capture node pulled
    source.connect(capture); capture.connect(mute); mute.connect(ctx.destination);
    player.connect(ctx.destination);

    const url = new URL('ws', location.href); url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url); ws.binaryType = 'arraybuffer'; state.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ mode: 'relay', bandwidth: parseFloat($('bandwidth').value) }));
    ws.onmessage = (e) => {
      if (typeof e.data === 'string') {
        const msg = JSON.parse(e.data);
        if (msg.type === 'ready') {
          setStatus('streaming');
          $('stop').disabled = false;
          capture.port.onmessage = (m) => {
            if (ws.readyState !== WebSocket.OPEN || state.ending) return;
            state.sent.push(m.data); state.sentSamples += m.data.length;
            state.sendTimes.push([state.sentSamples, performance.now()]);
            ws.send(m.data.buffer);
          };
        } else if (msg.type === 'stats' || msg.type === 'done') {
          state.stats = msg;
          if (msg.type === 'done') state.done = true;
        }
      } else {
        onPcm(e.data);
      }
      showStats();
    };
    ws.onclose = (e) => {
      state.closeCode = e.code; state.closeReason = e.reason;
      setStatus(e.code === 1000 ? 'finished' : `closed by the server (${e.code}): ${e.reason || 'connection lost'}`, e.code !== 1000);
      cleanup();
    };
  } catch (err) {
    setStatus('could not start: ' + err, true);
    $('start').disabled = false;
  }
}

function cleanup() {
  if (state.capture) state.capture.port.postMessage('stop');
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  $('stop').disabled = true;
  $('start').disabled = false;
}

// Stop sending: the server decodes what is left, then closes normally.
function stop() {
  state.ending = true;
  if (state.capture) state.capture.port.postMessage('stop');
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ type: 'end' }));
  setStatus('finishing');
}
state.start = start; state.stop = stop;

async function init() {
  const info = await (await fetch('info.json')).json();
  state.info = info;
  $('model').textContent = `${info.model} (${info.sample_rate} Hz)`;
  for (const b of info.bandwidths) {
    const o = document.createElement('option'); o.value = b; o.textContent = b;
    if (b === info.default_bandwidth) o.selected = true;
    $('bandwidth').appendChild(o);
  }
  $('start').onclick = start; $('stop').onclick = stop;
  // While streaming, a new bandwidth applies on the fly (from the audio sent after it).
  $('bandwidth').onchange = () => {
    if (state.ws && state.ws.readyState === WebSocket.OPEN && !state.ending) {
      state.ws.send(JSON.stringify({ type: 'bandwidth', bandwidth: parseFloat($('bandwidth').value) }));
    }
  };
  state.ready = true;
}
init();
