// The live event stream: one WebSocket to /api/v1/events, resumed after a drop with
// the last sequence number seen and the server's epoch.

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30000;

/// Close codes the server uses.
const SESSION_ENDED = 1008;
const TOO_SLOW = 1013;

export class LiveStream {
  /// Callbacks: onEvent(topic, data), onSync() (the lists must be loaded: the first
  /// hello, or a resync: events were missed, e.g. across a server restart), onStatus(state, detail) with state
  /// "connecting" | "live" | "reconnecting" | "stopped", onSessionEnded().
  constructor({ onEvent, onSync, onStatus, onSessionEnded }) {
    this.cb = { onEvent, onSync, onStatus, onSessionEnded };
    this.ws = null;
    this.timer = null;
    this.seq = null; // last sequence number seen
    this.epoch = null;
    this.backoff = MIN_BACKOFF_MS;
    this.running = false;
  }

  start() {
    this.running = true;
    this.connect();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.seq = null;
    this.epoch = null;
    this.cb.onStatus("stopped");
  }

  url() {
    const scheme = location.protocol === "http:" ? "ws://" : "wss://";
    const resume = this.seq !== null ? `?since=${this.seq}&epoch=${encodeURIComponent(this.epoch)}` : "";
    return scheme + location.host + "/api/v1/events" + resume;
  }

  connect() {
    this.cb.onStatus("connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.addEventListener("message", (e) => this.receive(e.data));
    ws.addEventListener("close", (e) => {
      if (this.ws !== ws) return; // stopped, or replaced
      this.ws = null;
      this.closed(e.code);
    });
  }

  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.type === "hello") this.hello(msg);
    else if (msg.type === "event") this.event(msg);
    else if (msg.type === "resync") {
      this.seq = msg.seq;
      this.cb.onSync();
    }
  }

  hello(msg) {
    const first = this.seq === null;
    // Another server run numbers its events anew; it follows up with a resync.
    if (first || msg.epoch !== this.epoch) this.seq = msg.seq;
    this.epoch = msg.epoch;
    this.backoff = MIN_BACKOFF_MS;
    this.cb.onStatus("live");
    if (first) this.cb.onSync();
  }

  event(msg) {
    if (this.seq !== null && msg.seq <= this.seq) return; // replayed twice
    this.seq = msg.seq;
    this.cb.onEvent(msg.topic, msg.data || {});
  }

  closed(code) {
    if (!this.running) return;
    if (code === SESSION_ENDED) {
      this.running = false;
      this.cb.onSessionEnded();
      return;
    }
    // Too slow: the server dropped us, not the network; come back at once for the rest.
    const delay = code === TOO_SLOW ? MIN_BACKOFF_MS : this.backoff;
    if (code !== TOO_SLOW) this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    this.cb.onStatus("reconnecting", delay);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
