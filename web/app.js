// web/app.js: the dashboard page of 'vmhost web' (an ES module, no
// framework). It keeps the table of VMs current from the server's event
// stream (/api/events, one "vms" event with the whole list on each change:
// the shape of 'vm list --all-hosts --json', docs/json.md) and sends the
// actions with the session's CSRF header. Every error the server returns
// (the CLI's message) is shown in the banner.

import { openConsole } from '/console.js';

const $ = (sel) => document.querySelector(sel);
let csrf = null;
let list = [];
// Actions sent and not answered yet, by "host/name", so that a second
// click does not send a second one.
const busy = new Set();

function showError(text) {
  $('#error-text').textContent = text;
  $('#error').hidden = false;
}

function formatBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1 && n % 1024 === 0) {
    n /= 1024;
    i++;
  }
  return `${n} ${units[i]}`;
}

function formatUptime(started) {
  if (!started) return '-';
  let s = Math.max(0, Math.floor(Date.now() / 1000 - started));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function forwards(vm) {
  return (vm.forwards || []).map((f) => {
    const hp = f['host-port'] ? f['host-port'] : 'auto';
    return `${f.proto} ${f.host}:${hp} → ${f['guest-port']}`;
  }).join(', ') || '-';
}

function cell(tr, cls, text) {
  const td = document.createElement('td');
  td.className = cls;
  td.textContent = text;
  tr.appendChild(td);
  return td;
}

// Sends one request with the CSRF header; the answer's JSON, or throws
// an Error with the server's message (the CLI's).
async function request(method, url, body) {
  const headers = { 'X-VMHost-CSRF': csrf };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(url, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let out = {};
  try { out = await res.json(); } catch { /* no JSON: the status says it */ }
  if (!res.ok) throw new Error(out.error || `${method} ${url}: HTTP ${res.status}`);
  return out;
}

// A VM's API path: this host's, or another's (its vmhost over ssh there).
const vmUrl = (name, host = 'local') => (host === 'local'
  ? `/api/vms/${encodeURIComponent(name)}`
  : `/api/hosts/${encodeURIComponent(host)}/vms/${encodeURIComponent(name)}`);

// The confirmation of a delete names what goes and what stays, as the
// server's library decides it (GET .../delete-plan: vm_delete_plan(); for
// another host's VM that host's own, through its vmhost over ssh).
async function confirmDelete(name, host) {
  const plan = await request('GET', `${vmUrl(name, host)}/delete-plan`);
  const lines = (l) => (l.length ? l.map((x) => `  ${x}`).join('\n') : '  (nothing)');
  const where = host === 'local' ? '' : ` on host ${host}`;
  return window.confirm(`Delete VM ${name}${where}?\n\nDeleted${where}:\n${lines(plan.removed)}\n\n` +
                        `Kept:\n${lines(plan.kept)}`);
}

async function act(host, name, action) {
  const key = `${host}/${name}`;
  if (busy.has(key)) return;
  busy.add(key);
  render();
  try {
    if (action === 'delete') {
      if (await confirmDelete(name, host)) await request('DELETE', vmUrl(name, host));
    } else {
      await request('POST', `${vmUrl(name, host)}/${action}`);
    }
  } catch (e) {
    showError(e.message);
  } finally {
    busy.delete(key);
    render();
  }
}

// ---- snapshots and the CD of one VM (the "manage" panel); another
// host's VM's through its vmhost there (the ISO is a path on that host)
let managed = null;
let managedHost = 'local';

function formatDate(sec) {
  return new Date(sec * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '');
}

async function loadSnapshots() {
  if (!managed) return;
  const name = managed;
  const host = managedHost;
  const tbody = $('#snapshots tbody');
  let d;
  try {
    d = await request('GET', `${vmUrl(name, host)}/snapshots`);
  } catch (e) {
    tbody.replaceChildren();
    showError(e.message);
    return;
  }
  if (managed !== name || managedHost !== host) return;
  tbody.replaceChildren();
  for (const s of d.snapshots) {
    const tr = document.createElement('tr');
    tr.dataset.snapshot = s.tag;
    cell(tr, 'id', s.id);
    cell(tr, 'tag', s.tag);
    cell(tr, 'date', formatDate(s.date));
    cell(tr, 'kind', s['vm-state-size'] ? 'machine state' : 'disk only');
    const td = cell(tr, 'actions', '');
    const rv = document.createElement('button');
    rv.type = 'button';
    rv.textContent = 'revert';
    rv.dataset.action = 'revert';
    rv.className = 'danger';
    rv.addEventListener('click', () => snapshotOp(name, s.tag, 'revert', host));
    const del = document.createElement('button');
    del.type = 'button';
    del.textContent = 'delete';
    del.dataset.action = 'delete-snapshot';
    del.addEventListener('click', () => snapshotOp(name, s.tag, 'delete', host));
    td.append(rv, del);
    tbody.appendChild(tr);
  }
}

async function snapshotOp(name, tag, op, host) {
  const vm = findVm(name, host);
  const running = vm && vm.state === 'running';
  if (op === 'revert' &&
      !window.confirm(`Revert VM ${name} to snapshot ${tag}?\n\nLost: everything written to its disk since ` +
                      `the snapshot${running ? ', and the running guest\'s present memory and state (it ' +
                      'continues from the snapshot\'s)' : ''}. Other snapshots are kept.`)) return;
  if (op === 'delete' && !window.confirm(`Delete snapshot ${tag} of VM ${name}? The VM's present state is kept.`))
    return;
  try {
    const url = `${vmUrl(name, host)}/snapshots/${encodeURIComponent(tag)}`;
    const r = op === 'revert' ? await request('POST', `${url}/revert`) : await request('DELETE', url);
    showNote(r.message);
  } catch (e) {
    showError(e.message);
  }
  loadSnapshots();
}

function findVm(name, host = 'local') {
  for (const h of list) if (h.host === host) for (const vm of h.vms || []) if (vm.name === name) return vm;
  return null;
}

function showNote(text) {
  $('#manage-note').textContent = text || '';
}

function renderManage() {
  if (!managed) return;
  const vm = findVm(managed, managedHost);
  if (!vm) { $('#manage').hidden = true; managed = null; return; }
  $('#cdrom-now').textContent = vm.cdrom ? `in: ${vm.cdrom}` : 'empty';
  const running = vm.state === 'running';
  for (const b of document.querySelectorAll('#cdrom-form button')) b.disabled = !running;
  $('#cdrom-form').title = running ? '' : 'The CD changes while the VM runs (vm cdrom); vm set cdrom= otherwise';
}

function openManage(name, host = 'local') {
  managed = name;
  managedHost = host;
  $('#manage-name').textContent = host === 'local' ? name : `${name} on host ${host}`;
  $('#cdrom-iso').placeholder = host === 'local' ? 'ISO image (absolute path)'
    : `ISO image (absolute path on host ${host})`;
  $('#manage').hidden = false;
  showNote('');
  renderManage();
  loadSnapshots();
}

function setupForms() {
  $('#manage-close').addEventListener('click', () => { $('#manage').hidden = true; managed = null; });
  $('#snapshot-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = managed;
    try {
      const r = await request('POST', `${vmUrl(name, managedHost)}/snapshots`, { name: $('#snapshot-name').value });
      showNote(r.message);
      $('#snapshot-name').value = '';
    } catch (e) { showError(e.message); }
    loadSnapshots();
  });
  $('#cdrom-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      showNote((await request('POST', `${vmUrl(managed, managedHost)}/cdrom`, { iso: $('#cdrom-iso').value })).message);
    } catch (e) { showError(e.message); }
  });
  $('#cdrom-eject').addEventListener('click', async () => {
    try {
      showNote((await request('POST', `${vmUrl(managed, managedHost)}/cdrom`, { eject: true })).message);
    } catch (e) { showError(e.message); }
  });
  $('#create-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { name: $('#create-name').value, base: $('#create-base').value };
    for (const k of ['memory', 'cpus', 'net']) {
      const v = $(`#create-${k}`).value.trim();
      if (v) body[k] = v;
    }
    try {
      await request('POST', '/api/vms', body);
      $('#create-name').value = '';
    } catch (e) { showError(e.message); }
  });
}

function buttons(td, host, vm) {
  const running = vm.state === 'running';
  const local = host === 'local';
  const key = `${host}/${vm.name}`;
  const defs = [
    ['start', !running && vm.state !== 'starting'],
    ['stop', running],
    ['kill', running],
    ['restart', running],
    ['delete', !running && vm.state !== 'starting'],
  ];
  for (const [action, enabled] of defs) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = action;
    b.dataset.action = action;
    if (action === 'delete' || action === 'kill') b.className = 'danger';
    // Another host's: its vmhost runs the action there over ssh; the
    // server lists that host again when it is done.
    b.disabled = !enabled || busy.has(key);
    b.addEventListener('click', () => act(host, vm.name, action));
    td.appendChild(b);
  }
  const m = document.createElement('button');
  m.type = 'button';
  m.textContent = 'snapshots/CD';
  m.dataset.action = 'manage';
  if (!local) m.title = `Snapshots and the CD of VM ${vm.name} on host ${host}, by its vmhost there`;
  m.addEventListener('click', () => openManage(vm.name, host));
  td.appendChild(m);
  const c = document.createElement('button');
  c.type = 'button';
  c.textContent = 'console';
  c.dataset.action = 'console';
  c.disabled = !running;
  c.addEventListener('click', () => openConsole(vm.name, csrf, showError, host));
  td.appendChild(c);
}

function render() {
  const tbody = $('#vms tbody');
  tbody.replaceChildren();
  const down = $('#hosts-down');
  down.replaceChildren();
  let count = 0;
  for (const h of list) {
    if (!h.reachable) {
      const p = document.createElement('p');
      p.className = 'down';
      p.dataset.host = h.host;
      p.textContent = `Host ${h.host} is down: ${h.error || 'no answer'}`;
      down.appendChild(p);
    }
    for (const vm of h.vms || []) {
      count++;
      const tr = document.createElement('tr');
      tr.dataset.vm = vm.name;
      tr.dataset.host = h.host;
      cell(tr, 'name', vm.name);
      cell(tr, 'host', h.host);
      const st = cell(tr, `state state-${vm.state}`, vm.state);
      if (vm['exit-reason']) {
        const e = document.createElement('div');
        e.className = 'exit';
        e.textContent = vm['exit-reason'];
        st.appendChild(e);
      }
      cell(tr, 'cpus', String(vm.cpus));
      cell(tr, 'memory', formatBytes(vm.memory));
      cell(tr, 'accel', vm.accel || '-');
      cell(tr, 'addresses', (vm.addresses || []).map((a) => a.ip).join(', ') || '-');
      cell(tr, 'forwards', forwards(vm));
      const up = cell(tr, 'uptime', vm.state === 'running' ? formatUptime(vm.started) : '-');
      up.dataset.started = vm.state === 'running' && vm.started ? vm.started : '';
      buttons(cell(tr, 'actions', ''), h.host, vm);
      tbody.appendChild(tr);
    }
  }
  $('#empty').hidden = count > 0;
  renderManage();
}

function tickUptime() {
  for (const td of document.querySelectorAll('td.uptime')) {
    if (td.dataset.started) td.textContent = formatUptime(Number(td.dataset.started));
  }
}

function listen() {
  const live = $('#live');
  const es = new EventSource('/api/events');
  es.addEventListener('open', () => {
    live.dataset.state = 'live';
    live.textContent = 'live';
  });
  es.addEventListener('vms', (ev) => {
    list = JSON.parse(ev.data);
    render();
  });
  es.addEventListener('error', async () => {
    // EventSource reconnects by itself (the server asks for 1 s), which
    // is right while the server restarts; but a restarted server knows no
    // session of ours, and then only the newly printed URL helps.
    live.dataset.state = 'down';
    live.textContent = 'reconnecting…';
    try {
      const res = await fetch('/api/session', { credentials: 'same-origin' });
      if (res.status === 401) {
        es.close();
        live.textContent = 'signed out';
        showError("The server no longer knows this page's session (was it restarted?). " +
                  "Open the address 'vmhost web' printed.");
      }
    } catch { /* the server is down: EventSource keeps trying */ }
  });
}

async function main() {
  $('#error-close').addEventListener('click', () => { $('#error').hidden = true; });
  setupForms();
  const res = await fetch('/api/session', { credentials: 'same-origin' });
  if (res.status === 401) {
    showError("This page needs the address 'vmhost web' printed when it started. Open that address again.");
    return;
  }
  csrf = (await res.json()).csrf;
  listen();
  setInterval(tickUptime, 1000);
}

main().catch((e) => showError(e.message));
