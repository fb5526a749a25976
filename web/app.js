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

async function act(host, name, action) {
  const key = `${host}/${name}`;
  if (busy.has(key)) return;
  if (action === 'delete' &&
      !window.confirm(`Delete VM ${name}?\n\nThis removes its definition, its logs and its own disk ` +
                      '(a disk under its state directory). A shared base image and any disk outside ' +
                      'that directory are kept.')) {
    return;
  }
  busy.add(key);
  render();
  try {
    const url = action === 'delete' ? `/api/vms/${encodeURIComponent(name)}`
                                    : `/api/vms/${encodeURIComponent(name)}/${action}`;
    const res = await fetch(url, {
      method: action === 'delete' ? 'DELETE' : 'POST',
      headers: { 'X-VMHost-CSRF': csrf },
      credentials: 'same-origin',
    });
    let body = {};
    try { body = await res.json(); } catch { /* no JSON: the status says it */ }
    if (!res.ok) showError(body.error || `${action} ${name}: HTTP ${res.status}`);
  } catch (e) {
    showError(`${action} ${name}: ${e.message}`);
  } finally {
    busy.delete(key);
    render();
  }
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
    // Actions on other hosts' VMs come with the next version of the page.
    b.disabled = !enabled || !local || busy.has(key);
    if (!local) b.title = 'Actions on other hosts: use vmhost --host ' + host;
    b.addEventListener('click', () => act(host, vm.name, action));
    td.appendChild(b);
  }
  const c = document.createElement('button');
  c.type = 'button';
  c.textContent = 'console';
  c.dataset.action = 'console';
  c.disabled = !running || !local;
  c.addEventListener('click', () => openConsole(vm.name, csrf, showError));
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
