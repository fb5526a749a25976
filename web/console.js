// web/console.js: the consoles of one VM in the page: its screen (noVNC),
// its serial console (xterm.js) and a box for human monitor commands.
// Each websocket needs a ticket from POST /api/vms/NAME/console-ticket
// (with the CSRF header; valid 30 s, once, for this session, VM and
// console); the server relays the screen to QEMU's VNC and owns the one
// serial connection it shares among viewers (docs/web.md). A VM of another
// host comes through a relay over ssh (/api/hosts/HOST/vms/NAME/...): its
// screen, its serial console and its monitor (that host's vmhost runs the
// command); keys and typing go as RFB key events over its relayed screen;
// no screenshot ('vmhost --host HOST vm screenshot' writes one there).
import RFB from '/vendor/novnc/core/rfb.js';
import { Terminal } from '/vendor/xterm/xterm.mjs';
import { FitAddon } from '/vendor/xterm/addon-fit.mjs';

const $ = (sel) => document.querySelector(sel);

let state = null; // { host, name, csrf, rfb, ws, term, fit, onError }

// The API path of the VM: this host's, or another's.
function vmPath() {
  const name = encodeURIComponent(state.name);
  return state.host === 'local' ? `/api/vms/${name}` : `/api/hosts/${encodeURIComponent(state.host)}/vms/${name}`;
}

async function post(path, body) {
  const res = await fetch(path, {
    method: 'POST',
    headers: { 'X-VMHost-CSRF': state.csrf, 'Content-Type': 'application/json' },
    credentials: 'same-origin',
    body: JSON.stringify(body),
  });
  let json = {};
  try { json = await res.json(); } catch { /* the status says it */ }
  if (!res.ok) throw new Error(json.error || `HTTP ${res.status}`);
  return json;
}

async function socketUrl(kind) {
  const path = vmPath();
  const { ticket } = await post(`${path}/console-ticket`, { kind });
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}/console/${kind}?ticket=${ticket}`;
}

function status(id, text) {
  $(id).textContent = text;
}

// ---- the screen

async function openScreen() {
  const url = await socketUrl('vnc');
  const target = $('#screen');
  target.replaceChildren();
  // No password: the server's own VNC client was admitted by QEMU without
  // one (add_client skipauth) after this page's ticket was checked.
  const rfb = new RFB(target, url, { wsProtocols: ['binary'], shared: true });
  rfb.scaleViewport = $('#scale').checked;
  rfb.background = '#000';
  rfb.addEventListener('connect', () => status('#screen-status', 'connected'));
  rfb.addEventListener('disconnect', (e) => {
    status('#screen-status', e.detail.clean ? 'disconnected' : 'connection lost');
  });
  rfb.addEventListener('desktopname', (e) => status('#screen-status', `connected: ${e.detail.name}`));
  state.rfb = rfb;
}

// QEMU key names (as the page's buttons and /keys take them) as X keysyms,
// for a remote VM's keys over its relayed VNC screen.
const KEYSYMS = {
  ctrl: 0xffe3, alt: 0xffe9, shift: 0xffe1, delete: 0xffff, tab: 0xff09, esc: 0xff1b, meta_l: 0xffeb,
  print: 0xff61, ret: 0xff0d, spc: 0x20,
};
for (let i = 1; i <= 12; i++) KEYSYMS[`f${i}`] = 0xffbd + i;

// Presses 'syms' together and lets go in the opposite order.
function rfbChord(syms) {
  for (const k of syms) state.rfb.sendKey(k, null, true);
  for (const k of [...syms].reverse()) state.rfb.sendKey(k, null, false);
}

function rfbReady() {
  if (state.rfb && state.rfb._rfbConnectionState === 'connected') return true;
  state.onError(`keys to ${state.name}: its screen is not connected (keys go over it)`);
  return false;
}

async function keys(list) {
  if (state.host !== 'local') {
    const syms = list.map((k) => KEYSYMS[k]);
    if (syms.includes(undefined)) return state.onError(`keys to ${state.name}: no keysym for ${list.join('-')}`);
    if (rfbReady()) rfbChord(syms);
    return;
  }
  try {
    await post(`/api/vms/${encodeURIComponent(state.name)}/keys`, { keys: list });
  } catch (e) { state.onError(`keys to ${state.name}: ${e.message}`); }
}

async function typeText() {
  const text = $('#type-text').value;
  if (!text) return;
  if (state.host !== 'local') {
    // ASCII printable characters are their own keysyms; the VNC server
    // adds the shift a character needs.
    if (!rfbReady()) return;
    for (const ch of text) {
      const code = ch.codePointAt(0);
      const sym = ch === '\n' ? KEYSYMS.ret : ch === '\t' ? KEYSYMS.tab : code >= 0x20 && code < 0x7f ? code : null;
      if (sym === null) return state.onError(`type into ${state.name}: only printable ASCII, tab and newline`);
      rfbChord([sym]);
    }
    $('#type-text').value = '';
    return;
  }
  try {
    await post(`/api/vms/${encodeURIComponent(state.name)}/type`, { text });
    $('#type-text').value = '';
  } catch (e) { state.onError(`type into ${state.name}: ${e.message}`); }
}

// ---- the serial console

async function openSerial() {
  const term = new Terminal({ convertEol: false, scrollback: 5000, fontSize: 13 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  const box = $('#serial');
  box.replaceChildren();
  term.open(box);
  fit.fit();
  state.term = term;
  state.fit = fit;
  const ws = new WebSocket(await socketUrl('serial'), ['binary']);
  ws.binaryType = 'arraybuffer';
  ws.addEventListener('open', () => status('#serial-status', 'connected'));
  ws.addEventListener('message', (e) => term.write(new Uint8Array(e.data)));
  ws.addEventListener('close', (e) => {
    status('#serial-status', `closed${e.reason ? ': ' + e.reason : ''}`);
  });
  const enc = new TextEncoder();
  term.onData((s) => { if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(s)); });
  state.ws = ws;
}

// ---- the monitor

async function runMonitor(ev) {
  ev.preventDefault();
  const command = $('#monitor-command').value.trim();
  if (!command) return;
  const out = $('#monitor-output');
  try {
    const r = await post(`${vmPath()}/monitor`, { command });
    out.textContent = `(qemu) ${command}\n${r.output}${r.truncated ? '\n[output truncated]' : ''}`;
  } catch (e) {
    out.textContent = `(qemu) ${command}\nerror: ${e.message}`;
  }
}

export function closeConsole() {
  if (!state) return;
  if (state.rfb) state.rfb.disconnect();
  if (state.ws) state.ws.close(1000);
  if (state.term) state.term.dispose();
  state = null;
  $('#console').hidden = true;
}

let wired = false;
function wire() {
  if (wired) return;
  wired = true;
  $('#console-close').addEventListener('click', closeConsole);
  $('#cad').addEventListener('click', () => keys(['ctrl', 'alt', 'delete']));
  $('#keys').addEventListener('change', (e) => {
    if (e.target.value) keys(e.target.value.split('-'));
    e.target.value = '';
  });
  $('#type-form').addEventListener('submit', (e) => { e.preventDefault(); typeText(); });
  $('#scale').addEventListener('change', (e) => { if (state && state.rfb) state.rfb.scaleViewport = e.target.checked; });
  $('#fullscreen').addEventListener('click', () => $('#screen-box').requestFullscreen());
  $('#monitor-form').addEventListener('submit', runMonitor);
  window.addEventListener('resize', () => { if (state && state.fit) state.fit.fit(); });
}

// Opens the consoles of running VM 'name' of 'host' ("local": this one).
export async function openConsole(name, csrf, onError, host = 'local') {
  wire();
  closeConsole();
  state = { host, name, csrf, onError };
  const local = host === 'local';
  $('#console-name').textContent = local ? name : `${name} on ${host}`;
  $('#screenshot').href = local ? `/api/vms/${encodeURIComponent(name)}/screenshot.png` : '';
  $('#screenshot').hidden = !local;
  // Another host's: keys over the relayed screen, the monitor by its vmhost.
  const why = local ? '' : `Keys go over the screen relayed from host ${host}`;
  for (const sel of ['#cad', '#keys', '#type-form button', '#type-text']) $(sel).title = why;
  $('#monitor-command').title = local ? '' : `Run by vmhost vm monitor on host ${host}`;
  $('#monitor-output').textContent = '';
  status('#screen-status', 'connecting…');
  status('#serial-status', 'connecting…');
  $('#console').hidden = false;
  try {
    await openScreen();
  } catch (e) { status('#screen-status', e.message); onError(`screen of ${name}: ${e.message}`); }
  try {
    await openSerial();
  } catch (e) { status('#serial-status', e.message); onError(`serial console of ${name}: ${e.message}`); }
}
