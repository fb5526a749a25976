// tools/bench/bench-web.mjs: the measurements of tools/bench/bench-web (which
// sets up the VMs and the server and passes one JSON argument). A websocket
// client of its own (RFC 6455 over node's net, masked frames out, payloads
// handed on without copying) so that the client costs little next to the
// relays it measures; the browser part uses tests/browser's playwright-core.
import { createRequire } from 'node:module';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';

const cfg = JSON.parse(process.argv[2]);
const require = createRequire(`${cfg.root}/tests/browser/package.json`);
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const log = (m) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${m}\n`);
const base = new URL(cfg.url);
const hostport = base.host;

// ---- the session: token -> cookie, CSRF value, tickets

async function session() {
  const r = await fetch(cfg.url, { redirect: 'manual' });
  const c = r.headers.get('set-cookie');
  if (!c) throw new Error(`no session cookie from ${cfg.url} (status ${r.status})`);
  const cookie = c.split(';')[0];
  const s = await (await fetch(`${base.origin}/api/session`, { headers: { cookie } })).json();
  return { cookie, csrf: s.csrf };
}

async function ticket(sess, kind) {
  const r = await fetch(`${base.origin}/api/vms/${cfg.vm}/console-ticket`, {
    method: 'POST',
    headers: { cookie: sess.cookie, 'x-vmhost-csrf': sess.csrf, 'content-type': 'application/json' },
    body: JSON.stringify({ kind }),
  });
  if (r.status !== 200) throw new Error(`console-ticket ${kind}: ${r.status} ${await r.text()}`);
  return (await r.json()).ticket;
}

// ---- the websocket client

// Bytes arriving in chunks; read() copies the few bytes of a header, skip()
// drops pixel data without copying it.
class ByteQueue {
  constructor() { this.chunks = []; this.len = 0; this.waiter = null; this.error = null; }
  push(b) { this.chunks.push(b); this.len += b.length; this.wake(); }
  fail(e) { this.error = this.error || e; this.wake(); }
  wake() {
    const w = this.waiter;
    if (w && (this.len >= w.n || this.error)) { this.waiter = null; w.resolve(); }
  }
  async need(n) {
    while (this.len < n) {
      if (this.error) throw this.error;
      await new Promise((resolve) => { this.waiter = { n, resolve }; });
    }
  }
  take(n, copy) {
    const parts = [];
    this.len -= n;
    while (n > 0) {
      const c = this.chunks[0];
      if (c.length <= n) { this.chunks.shift(); n -= c.length; if (copy) parts.push(c); }
      else { if (copy) parts.push(c.subarray(0, n)); this.chunks[0] = c.subarray(n); n = 0; }
    }
    return copy ? Buffer.concat(parts) : null;
  }
  async read(n) { await this.need(n); return this.take(n, true); }
  async skip(n) {
    while (n > 0) {
      await this.need(1);
      const k = Math.min(n, this.len);
      this.take(k, false);
      n -= k;
    }
  }
}

// Opens a websocket; onData(payload) gets each binary or text payload (or a
// part of one) as it arrives. Pings are answered.
function wsConnect({ port = Number(base.port), path, cookie, protocol, onData }) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.setNoDelay(true);
    const key = crypto.randomBytes(16).toString('base64');
    let head = Buffer.alloc(0);
    let upgraded = false;
    // Frame state: the head's bytes so far, then the payload left.
    let fh = Buffer.alloc(0), left = 0, op = 0;
    const ws = {
      sock,
      bytes: 0,
      send(opcode, data) {
        data = Buffer.from(data);
        const n = data.length;
        const h = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n])
          : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 126]), Buffer.from([n >> 8, n & 255])]);
        const m = crypto.randomBytes(4);
        const out = Buffer.alloc(n);
        for (let i = 0; i < n; i++) out[i] = data[i] ^ m[i & 3];
        sock.write(Buffer.concat([h, m, out]));
      },
      close() { sock.destroy(); },
    };
    const frames = (b) => {
      while (b.length) {
        if (left === 0) {
          fh = fh.length ? Buffer.concat([fh, b]) : b;
          if (fh.length < 2) return;
          let n = fh[1] & 0x7f, hl = 2;
          if (n === 126) { hl = 4; if (fh.length < hl) return; n = fh.readUInt16BE(2); }
          else if (n === 127) { hl = 10; if (fh.length < hl) return; n = Number(fh.readBigUInt64BE(2)); }
          op = fh[0] & 0x0f || op;
          b = fh.subarray(hl);
          fh = Buffer.alloc(0);
          left = n;
          if (op >= 8) {
            // Control frames are small: wait for the whole of one.
            if (b.length < n) { fh = Buffer.concat([Buffer.from([0x80 | op, n]), b]); left = 0; return; }
            const p = b.subarray(0, n);
            b = b.subarray(n);
            left = 0;
            if (op === 9) ws.send(10, p);
            if (op === 8) sock.destroy();
            continue;
          }
          if (n === 0) continue;
        }
        const k = Math.min(left, b.length);
        ws.bytes += k;
        onData(b.subarray(0, k));
        left -= k;
        b = b.subarray(k);
      }
    };
    sock.on('connect', () => {
      sock.write(`GET ${path} HTTP/1.1\r\nHost: ${hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
                 `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://${hostport}\r\n` +
                 (cookie ? `Cookie: ${cookie}\r\n` : '') +
                 (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : '') + '\r\n');
    });
    sock.on('data', (b) => {
      if (upgraded) return frames(b);
      head = Buffer.concat([head, b]);
      const i = head.indexOf('\r\n\r\n');
      if (i < 0) return;
      const status = head.subarray(0, i).toString().split(' ')[1];
      if (status !== '101') { sock.destroy(); return reject(new Error(`websocket ${path}: status ${status}`)); }
      upgraded = true;
      resolve(ws);
      const rest = head.subarray(i + 4);
      head = null;
      if (rest.length) frames(rest);
    });
    sock.on('error', (e) => { if (!upgraded) reject(e); else ws.onerror?.(e); });
    sock.on('close', () => ws.onclose?.());
  });
}

// ---- figures

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil(p / 100 * s.length) - 1)]; };
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const f1 = (x) => x.toFixed(1);
const range = (xs) => `${f1(median(xs))} (${f1(Math.min(...xs))}-${f1(Math.max(...xs))})`;

// CPU time (ms) of a process and all its descendants, from /proc.
const HZ = 100; // USER_HZ is 100 on Linux for every architecture that matters here
function cpuTree(pid) {
  let ms = 0;
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    ms += (Number(f[11]) + Number(f[12])) * 1000 / HZ; // utime, stime
  } catch { return 0; }
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    let kids = '';
    try { kids = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim(); } catch { /* gone */ }
    for (const k of kids ? kids.split(' ') : []) ms += cpuTree(k);
  }
  return ms;
}
// Nanoseconds a process tree spent runnable but waiting for a CPU
// (/proc/PID/schedstat, second field): what a loaded machine costs it.
function runqTree(pid) {
  let ns = 0;
  try {
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[1]);
      let kids = '';
      try { kids = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim(); } catch { /* gone */ }
      for (const k of kids ? kids.split(' ') : []) ns += runqTree(k);
    }
  } catch { /* gone */ }
  return ns;
}
const selfCpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };

// ---- 1. first paint

async function firstPaint() {
  const { chromium } = require('playwright-core');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'],
  });
  const runs = [];
  try {
    for (let i = 0; i < 6; i++) {
      const context = await browser.newContext();
      const page = await context.newPage();
      const t0 = now();
      await page.goto(cfg.url, { waitUntil: 'commit' });
      await page.waitForFunction((n) => document.querySelectorAll('tr[data-vm]').length >= n, cfg.vms,
                                 { timeout: 30000, polling: 'raf' });
      const t = now() - t0;
      const rows = await page.evaluate(() => document.querySelectorAll('tr[data-vm]').length);
      if (rows !== cfg.vms) throw new Error(`the table has ${rows} rows, want ${cfg.vms}`);
      await context.close();
      if (i > 0) runs.push(t); // the first warms the server's and the browser's caches
      log(`paint ${i === 0 ? 'warm-up' : `run ${i}`}: ${f1(t)} ms`);
    }
  } finally {
    await browser.close();
  }
  return runs;
}

// ---- serial console

async function serialViewer(sess, text) {
  const t = await ticket(sess, 'serial');
  const v = { out: '', waits: [] };
  v.ws = await wsConnect({
    path: `/api/vms/${cfg.vm}/console/serial?ticket=${t}`, cookie: sess.cookie,
    onData: (b) => {
      v.out += b.toString('latin1');
      if (v.out.length > 1 << 20) v.out = v.out.slice(-65536);
      v.waits = v.waits.filter((w) => !w(v));
    },
  });
  await until(v, (x) => x.out.includes(text), 30000, `the scrollback (${text})`);
  return v;
}

function until(v, pred, ms, what) {
  if (pred(v)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
    v.waits.push((x) => { if (!pred(x)) return false; clearTimeout(timer); resolve(); return true; });
  });
}

async function keystrokes(sess) {
  const v = await serialViewer(sess, 'VMHOST-READY');
  // The guest's init switched echo off; its commands run with stdin from
  // /dev/null, so stty is pointed at the console.
  const mark = `E${crypto.randomBytes(3).toString('hex')}`;
  v.ws.send(2, `stty echo </dev/console; echo ${mark}OK\n`);
  await until(v, (x) => x.out.includes(`${mark}OK\r\n`) || x.out.includes(`${mark}OK\n`), 10000, 'stty echo');
  await new Promise((r) => setTimeout(r, 300));
  // A comment line: the keys typed are no command when it ends.
  v.ws.send(2, '#');
  await until(v, (x) => x.out.endsWith('#'), 5000, 'the echo of #');
  const lat = [];
  const keys = 'abcdefghijklmnopqrstuvwxyz0123456789';
  for (let i = 0; i < cfg.keys; i++) {
    const k = keys[i % keys.length];
    const before = v.out.length;
    const t0 = now();
    v.ws.send(2, k);
    await until(v, (x) => x.out.length > before && x.out.slice(before).includes(k), 5000, `the echo of key ${i}`);
    lat.push(now() - t0);
    // Canonical mode holds 4095 characters in a line: end it in time.
    if (i % 1000 === 999) { v.ws.send(2, '\n#'); await new Promise((r) => setTimeout(r, 200)); }
  }
  v.ws.send(2, `\nstty -echo </dev/console; echo ${mark}OFF\n`);
  await until(v, (x) => x.out.includes(`${mark}OFF`), 10000, 'stty -echo');
  v.ws.close();
  return lat;
}

async function fanout(sess) {
  const viewers = [];
  for (let i = 0; i < cfg.viewers; i++) viewers.push(await serialViewer(sess, 'VMHOST-READY'));
  await new Promise((r) => setTimeout(r, 300));
  const first = [], last = [];
  for (let i = 0; i < 20; i++) {
    const n = crypto.randomBytes(3).toString('hex');
    // The guest prints FAN + n; the command line itself (not echoed) has no FAN+n in one piece.
    const t0 = now();
    const seen = viewers.map((v) => until(v, (x) => x.out.includes(`FAN${n}`), 10000, `line ${i} at a viewer`)
      .then(() => now() - t0));
    viewers[i % viewers.length].ws.send(2, `echo FAN""${n}\n`);
    const ts = await Promise.all(seen);
    first.push(Math.min(...ts));
    last.push(Math.max(...ts));
    await new Promise((r) => setTimeout(r, 50));
  }
  for (const v of viewers) v.ws.close();
  return { first, last };
}

// ---- the screen relay

// The RFB client: handshake (security None, or VNC authentication with
// 'password'), Raw encoding only, then full-frame requests one after the
// other for 'seconds'.
async function rfbRun(connect, password, pid, seconds, pipelined) {
  const q = new ByteQueue();
  const ws = await connect((b) => q.push(b));
  ws.onclose = () => q.fail(new Error('the websocket closed'));
  const ver = (await q.read(12)).toString();
  if (!ver.startsWith('RFB 003.')) throw new Error(`not RFB: ${JSON.stringify(ver)}`);
  ws.send(2, 'RFB 003.008\n');
  const nt = (await q.read(1))[0];
  if (nt === 0) throw new Error('the VNC server refused the connection');
  const types = [...await q.read(nt)];
  if (password) {
    if (!types.includes(2)) throw new Error(`no VNC authentication offered: ${types}`);
    ws.send(2, Buffer.from([2]));
    const challenge = await q.read(16);
    // VNC's DES key is the password with each byte's bits reversed.
    const key = Buffer.alloc(8);
    Buffer.from(password).copy(key, 0, 0, 8);
    for (let i = 0; i < 8; i++) { let b = key[i], r = 0; for (let j = 0; j < 8; j++) { r = (r << 1) | (b & 1); b >>= 1; } key[i] = r; }
    const c = crypto.createCipheriv('des-ecb', key, null);
    c.setAutoPadding(false);
    ws.send(2, Buffer.concat([c.update(challenge), c.final()]));
  } else {
    if (!types.includes(1)) throw new Error(`no security type None offered: ${types}`);
    ws.send(2, Buffer.from([1]));
  }
  const result = (await q.read(4)).readUInt32BE(0);
  if (result !== 0) throw new Error(`RFB security result ${result}`);
  ws.send(2, Buffer.from([1])); // ClientInit: shared
  const init = await q.read(24);
  const w = init.readUInt16BE(0), h = init.readUInt16BE(2), bpp = init[4];
  await q.read(init.readUInt32BE(20)); // the name
  // SetEncodings: Raw only, so every frame is w*h*bpp/8 bytes.
  ws.send(2, Buffer.from([2, 0, 0, 1, 0, 0, 0, 0]));
  const request = Buffer.from([3, 0, 0, 0, 0, 0, w >> 8, w & 255, h >> 8, h & 255]);
  const readFrame = async () => {
    for (;;) {
      const type = (await q.read(1))[0];
      if (type === 0) {
        const hdr = await q.read(3);
        const rects = hdr.readUInt16BE(1);
        for (let i = 0; i < rects; i++) {
          const r = await q.read(12);
          const enc = r.readInt32BE(8);
          if (enc !== 0) throw new Error(`encoding ${enc}, not Raw`);
          await q.skip(r.readUInt16BE(4) * r.readUInt16BE(6) * (bpp / 8));
        }
        return;
      } else if (type === 1) { // colour map entries
        const hdr = await q.read(5);
        await q.skip(hdr.readUInt16BE(3) * 6);
      } else if (type === 2) { // bell
      } else if (type === 3) { // cut text
        const hdr = await q.read(7);
        await q.skip(hdr.readUInt32BE(3));
      } else {
        throw new Error(`RFB message type ${type}`);
      }
    }
  };
  // One frame before the clock starts: the handshake is not measured.
  ws.send(2, request);
  await readFrame();
  const b0 = ws.bytes, c0 = cpuTree(pid), s0 = selfCpu(), r0 = runqTree(pid), t0 = now();
  let frames = 0;
  const waits = [], transfers = [];
  if (pipelined) ws.send(2, request);
  while (now() - t0 < seconds * 1000) {
    // Serial: one request, then its whole frame. Pipelined: the next
    // request goes out as the frame starts, so QEMU always has one.
    const tr = now();
    if (!pipelined) ws.send(2, request);
    await q.need(1);
    const tf = now();
    if (pipelined) ws.send(2, request);
    await readFrame();
    waits.push(tf - tr);
    transfers.push(now() - tf);
    frames++;
  }
  const t = (now() - t0) / 1000, bytes = ws.bytes - b0, cpu = cpuTree(pid) - c0, client = selfCpu() - s0;
  const runq = (runqTree(pid) - r0) / 1e6;
  ws.close();
  const mib = bytes / 1048576;
  return { size: `${w}x${h}x${bpp}`, mibs: mib / t, fps: frames / t, cpu_ms_per_mib: cpu / mib,
           cpu_pct: cpu / t / 10, client_ms_per_mib: client / mib, wait_ms: mean(waits),
           wait_p90_ms: pct(waits, 90), transfer_ms: mean(transfers), transfer_p90_ms: pct(transfers, 90),
           runq_ms_per_frame: runq / frames };
}

async function vnc(sess) {
  // A changing screen: the guest prints to its VGA console every 20 ms.
  const v = await serialViewer(sess, 'VMHOST-READY');
  v.ws.send(2, "sh -c 'while :; do cat /proc/interrupts; date; usleep 20000; done >/dev/tty0 2>&1' &\n");
  await new Promise((r) => setTimeout(r, 500));
  v.ws.close();

  let wsk = null, wskPort = 0;
  const password = crypto.randomBytes(6).toString('hex').slice(0, 8);
  if (cfg.websockify) {
    execFileSync(cfg.vmhost, ['vm', 'monitor', cfg.vm, `set_password vnc ${password}`], { stdio: 'ignore' });
    const srv = net.createServer();
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    wskPort = srv.address().port;
    srv.close();
    wsk = spawn(cfg.websockify, [`127.0.0.1:${wskPort}`, `--unix-target=${cfg.vnc_socket}`],
                { stdio: ['ignore', 'ignore', fs.openSync(`${cfg.work}/websockify.log`, 'w')] });
    for (let i = 0; i < 100; i++) {
      const ok = await new Promise((r) => { const s = net.connect(wskPort, '127.0.0.1', () => { s.destroy(); r(true); }); s.on('error', () => r(false)); });
      if (ok) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const res = {};
  try {
    for (const mode of ['serial', 'pipelined']) {
      const V = res[`vmhost_${mode}`] = [], W = res[`websockify_${mode}`] = [];
      for (let round = 0; round < 2; round++) {
        V.push(await rfbRun(async (onData) => wsConnect({
          path: `/api/vms/${cfg.vm}/console/vnc?ticket=${await ticket(sess, 'vnc')}`, cookie: sess.cookie,
          protocol: 'binary', onData }), null, cfg.server_pid, cfg.seconds, mode === 'pipelined'));
        log(`vnc ${mode} vmhost round ${round + 1}: ${JSON.stringify(V.at(-1))}`);
        if (wsk) {
          W.push(await rfbRun((onData) => wsConnect({ port: wskPort, path: '/', protocol: 'binary', onData }),
                              password, wsk.pid, cfg.seconds, mode === 'pipelined'));
          log(`vnc ${mode} websockify round ${round + 1}: ${JSON.stringify(W.at(-1))}`);
        }
      }
    }
  } finally {
    if (wsk) wsk.kill();
    // The guest's printing loop stops with the VM; the password expires.
    try { execFileSync(cfg.vmhost, ['vm', 'monitor', cfg.vm, 'expire_password vnc now'], { stdio: 'ignore' }); } catch { /* VM gone */ }
  }
  return res;
}

// ---- the run

const out = {};
const sess = await session();
if (cfg.only === 'vnc') {
  // For a profile of the relay alone (BENCH_WEB_ONLY=vnc): the raw figures.
  console.log(JSON.stringify(await vnc(sess), null, 1));
  process.exit(0);
}
log('1. first paint');
out.paint = await firstPaint();
log('2. keystroke to echo');
out.keys = await keystrokes(sess);
log(`4. ${cfg.viewers} serial viewers`);
out.fanout = await fanout(sess);
log('3. screen relay');
out.vnc = await vnc(sess);
fs.writeFileSync(`${cfg.work}/results.json`, JSON.stringify(out, null, 1));

console.log();
console.log(`| measurement | vmhost web | websockify ${cfg.websockify ? '' : '(not installed)'} | vmhost / websockify |`);
console.log('| --- | --- | --- | --- |');
console.log(`| 1. first paint, ${cfg.vms} VMs (1 running, ${cfg.vms - 1} stopped): URL opened -> table has ${cfg.vms} rows, ${out.paint.length} cold contexts, ms median (min-max) | ${range(out.paint)} | | |`);
console.log(`| 2. serial key -> echo, ${out.keys.length} keys, ms median / p95 / max | ${f1(median(out.keys))} / ${f1(pct(out.keys, 95))} / ${f1(Math.max(...out.keys))} | | |`);
for (const mode of ['serial', 'pipelined']) {
  const V = out.vnc[`vmhost_${mode}`], W = out.vnc[`websockify_${mode}`];
  const what = mode === 'serial' ? 'one request at a time' : 'next request sent as a frame starts';
  const row = (name, k, fmt = f1) => {
    const a = median(V.map((r) => r[k]));
    const b = W.length ? median(W.map((r) => r[k])) : null;
    console.log(`| 3. screen ${V[0].size}, full Raw frames, ${what}: ${name} | ${fmt(a)} (${V.map((r) => fmt(r[k])).join(', ')}) | ` +
                `${b === null ? 'n/a' : `${fmt(b)} (${W.map((r) => fmt(r[k])).join(', ')})`} | ${b ? (a / b).toFixed(2) : 'n/a'} |`);
  };
  row('MiB/s', 'mibs');
  row('frames/s', 'fps');
  row('ms from the request (pipelined: the previous frame) to the frame\'s first byte, mean', 'wait_ms');
  row('the same, p90', 'wait_p90_ms');
  row('ms from the first to the last byte of a frame, mean', 'transfer_ms');
  row('the same, p90', 'transfer_p90_ms');
  row("ms the relay waited for a CPU (runnable, /proc/PID/schedstat) per frame", 'runq_ms_per_frame', (x) => x.toFixed(2));
  row("relay's CPU ms per MiB", 'cpu_ms_per_mib', (x) => x.toFixed(2));
  row("relay's CPU, % of one core", 'cpu_pct');
  row("the client's own CPU ms per MiB (for scale)", 'client_ms_per_mib', (x) => x.toFixed(2));
}
console.log(`| 4. ${cfg.viewers} viewers of one serial console, 20 lines: ms to the first / to the last viewer, median (max) | ` +
            `${f1(median(out.fanout.first))} (${f1(Math.max(...out.fanout.first))}) / ${f1(median(out.fanout.last))} (${f1(Math.max(...out.fanout.last))}) | | |`);
process.exit(0);
