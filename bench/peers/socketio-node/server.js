// Peer (c): Node's socket.io 4.8 with default settings (websocket and polling transports).
// Echoes "echo" events through their ack; a "fanout" event ({rate, ms, bytes}) starts a
// loop that emits a timestamped "tick" to every connected socket `rate` times a second for
// `ms` milliseconds. Prints "LISTENING host:port" once it accepts connections.
'use strict';

const http = require('node:http');
const { performance } = require('node:perf_hooks');
const { Server } = require('socket.io');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

const addr = arg('--addr', '127.0.0.1:0');
const sep = addr.lastIndexOf(':');
const host = addr.slice(0, sep);
const port = Number(addr.slice(sep + 1));
if (!host.startsWith('127.') && host !== 'localhost') {
  console.error('the socket.io peer listens on loopback addresses only');
  process.exit(2);
}

// Wall clock in microseconds, comparable with the load tool's clock.
function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

const httpServer = http.createServer();
const io = new Server(httpServer, { serveClient: false });

io.on('connection', (socket) => {
  socket.on('echo', (data, ack) => {
    if (typeof ack === 'function') ack(data);
  });
  socket.on('fanout', (cfg, ack) => {
    const rate = Math.min(Math.max(Number(cfg.rate) || 1, 1), 10000);
    const ms = Math.min(Number(cfg.ms) || 0, 600000);
    const pad = 'x'.repeat(Math.max((Number(cfg.bytes) || 100) - 30, 0));
    const end = Date.now() + ms;
    const period = 1000 / rate;
    let next = performance.now();
    // Like the Rust peers' tokio interval with MissedTickBehavior::Burst: every tick that is
    // due is emitted at once (a timer per missed tick would wait >= 1 ms each), so the loop
    // tries to push `rate` events a second and a loop that falls behind delivers fewer.
    const tick = () => {
      while (next <= performance.now()) {
        if (Date.now() >= end) return;
        io.emit('tick', { t: nowUs(), p: pad });
        next += period;
      }
      setTimeout(tick, next - performance.now());
    };
    tick();
    if (typeof ack === 'function') ack('ok');
  });
});

httpServer.listen(port, host, () => {
  const a = httpServer.address();
  process.stdout.write(`LISTENING ${a.address}:${a.port}\n`);
});
