// tests/browser/dashboard.mjs: the dashboard of 'vmhost web' in a real
// browser (Debian's chromium, headless, driven by playwright-core), run by
// tests/e2e/t-web.sh:
//
//   node dashboard.mjs URL VMHOST VM_A VM_B VM_BROKEN VM_DOOMED
//
// VM_A, VM_BROKEN (whose start fails) and VM_DOOMED are stopped VMs of
// the home the server serves (VMHOST_HOME in the environment, which the
// CLI calls here use too); VM_B is created here from the CLI, with the
// arguments in $VM_CREATE_ARGS (JSON), once the page shows the list.
// Prints "PASS name" / "FAIL name: why" per check, as the e2e tests do,
// and exits non-zero when any failed.
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const [url, vmhost, vmA, vmB, vmBroken, vmDoomed] = process.argv.slice(2);
let failed = 0;
const pass = (name, detail) => console.log(`PASS ${name}${detail ? ` (${detail})` : ''}`);
const fail = (name, why) => { failed++; console.log(`FAIL ${name}: ${why}`); };
function cli(...args) {
  try {
    return execFileSync(vmhost, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    e.message = `vmhost ${args.join(' ')}: exit ${e.status}: ${String(e.stderr).trim()}`;
    throw e;
  }
}

// As the notes for this machine say: root needs --no-sandbox, and the
// network features off keep it from trying the network. playwright gives
// each launch a fresh profile of its own.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-quic'],
});
// One state check: the row's state cell, as the page shows it.
const stateOf = (page, vm) => page.locator(`tr[data-vm="${vm}"] td.state`).first();

async function waitState(page, vm, want, ms, what) {
  const t0 = Date.now();
  try {
    await page.waitForFunction(([v, w]) => {
      const td = document.querySelector(`tr[data-vm="${v}"] td.state`);
      return td && td.firstChild && td.firstChild.textContent === w;
    }, [vm, want], { timeout: ms });
    pass(what, `${Date.now() - t0} ms`);
    return true;
  } catch {
    const now = await stateOf(page, vm).textContent().catch(() => '(no row)');
    fail(what, `state "${now}" after ${ms} ms, want "${want}"`);
    return false;
  }
}

try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(e.message));

  await page.goto(url);
  const landed = page.url();
  const base = new URL(url);
  if (!landed.includes('token') && new URL(landed).pathname === '/' && new URL(landed).host === base.host)
    pass('token-left-address-bar', landed);
  else
    fail('token-left-address-bar', `address bar shows ${landed}`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name.startsWith('vmhost_session_'));
  if (session && session.httpOnly && session.sameSite === 'Strict')
    pass('session-cookie', `${session.name}, HttpOnly, SameSite=${session.sameSite}`);
  else
    fail('session-cookie', JSON.stringify(cookies));

  // A mark that a reload would wipe: every change below must come
  // through the event stream.
  await page.evaluate(() => { window.vmhostTestMark = 'no reload'; });
  await waitState(page, vmA, 'stopped', 10000, 'list-shows-vm');
  const down = page.locator('p.down[data-host="down1"]');
  try {
    await down.waitFor({ timeout: 10000 });
    pass('down-host-shown', (await down.textContent()).trim());
  } catch {
    fail('down-host-shown', 'no line for the registered host down1');
  }

  // A VM created from the CLI meanwhile appears by itself.
  cli('vm', 'create', vmB, ...JSON.parse(process.env.VM_CREATE_ARGS || '[]'));
  await waitState(page, vmB, 'stopped', 5000, 'cli-created-vm-appears');

  // Start from the page.
  await page.locator(`tr[data-vm="${vmA}"] button[data-action="start"]`).click();
  if (await waitState(page, vmA, 'running', 60000, 'start-from-page')) {
    const st = JSON.parse(cli('vm', 'status', vmA, '--json'));
    if (st.state === 'running') pass('cli-sees-page-start', `pid ${st.pid}`);
    else fail('cli-sees-page-start', `CLI says ${st.state}`);
    const accel = await page.locator(`tr[data-vm="${vmA}"] td.accel`).textContent();
    if (accel === st.accel) pass('accel-shown', accel); else fail('accel-shown', `page "${accel}", CLI "${st.accel}"`);
    const up = await page.locator(`tr[data-vm="${vmA}"] td.uptime`).textContent();
    if (/^\d+(s|m \d+s)$/.test(up)) pass('uptime-shown', up); else fail('uptime-shown', `"${up}"`);
  }

  // Started from the CLI: the page follows.
  // --wait: booted, so that its acpid answers the page's stop below.
  cli('vm', 'start', vmB, '--wait', '--timeout', '120');
  await waitState(page, vmB, 'running', 5000, 'cli-start-seen');

  // An error of the library reaches the page as the CLI prints it.
  let cliError = '';
  try { cli('vm', 'start', vmBroken); } catch (e) { cliError = String(e.stderr).trim(); }
  await page.locator(`tr[data-vm="${vmBroken}"] button[data-action="start"]`).click();
  try {
    await page.locator('#error:not([hidden])').waitFor({ timeout: 30000 });
    const shown = (await page.locator('#error-text').textContent()).trim();
    if (cliError && cliError.endsWith(shown) && shown.length > 10) pass('error-shown', shown);
    else fail('error-shown', `page "${shown}", CLI "${cliError}"`);
  } catch {
    fail('error-shown', 'no error banner');
  }

  // Create from a base image in the page: the row comes by the event stream.
  await page.fill('#create-name', 'b-page');
  await page.fill('#create-base', process.env.BASE_IMAGE);
  await page.fill('#create-memory', '256M');
  await page.locator('#create-form button[type="submit"]').click();
  if (await waitState(page, 'b-page', 'stopped', 10000, 'create-from-page')) {
    const st = JSON.parse(cli('vm', 'status', 'b-page', '--json'));
    if (st.memory === 256 << 20) pass('create-from-page-as-cli', `memory ${st.memory}`);
    else fail('create-from-page-as-cli', JSON.stringify(st));
  }

  // Snapshots of the VM made in the page (stopped: the disk's), in the page's panel.
  await page.locator(`tr[data-vm="b-page"] button[data-action="manage"]`).click();
  await page.fill('#snapshot-name', 'web-s1');
  await page.locator('#snapshot-form button[type="submit"]').click();
  try {
    await page.locator('#snapshots tr[data-snapshot="web-s1"]').waitFor({ timeout: 30000 });
    const cliList = cli('vm', 'snapshot', 'list', 'b-page');
    if (cliList.includes('web-s1')) pass('snapshot-create-from-page', (await page.textContent('#manage-note')).trim());
    else fail('snapshot-create-from-page', `CLI lists: ${cliList}`);
  } catch {
    fail('snapshot-create-from-page', `no row; note "${await page.textContent('#manage-note')}"`);
  }
  let revertText = '';
  page.once('dialog', (d) => { revertText = d.message(); d.accept(); });
  await page.locator('#snapshots tr[data-snapshot="web-s1"] button[data-action="revert"]').click();
  try {
    await page.waitForFunction(() => document.querySelector('#manage-note').textContent.includes('reverted to'),
                               null, { timeout: 30000 });
    if (revertText.includes('web-s1') && revertText.includes('Lost')) pass('snapshot-revert-from-page', revertText.split('\n')[0]);
    else fail('snapshot-revert-from-page', `dialog "${revertText}"`);
  } catch {
    fail('snapshot-revert-from-page', `note "${await page.textContent('#manage-note')}"`);
  }
  // The CD of the running VM.
  await page.locator(`tr[data-vm="${vmA}"] button[data-action="manage"]`).click();
  const iso = process.env.GUEST_ISO;
  await page.fill('#cdrom-iso', iso);
  await page.locator('#cdrom-form button[type="submit"]').click();
  try {
    await page.waitForFunction((p) => document.querySelector('#cdrom-now').textContent.includes(p),
                               process.env.GUEST_ISO_REAL, { timeout: 10000 });
    pass('cdrom-insert-from-page', (await page.textContent('#cdrom-now')).trim());
  } catch {
    fail('cdrom-insert-from-page', `shows "${await page.textContent('#cdrom-now')}"`);
  }
  await page.locator('#cdrom-eject').click();
  try {
    await page.waitForFunction(() => document.querySelector('#cdrom-now').textContent === 'empty', null,
                               { timeout: 10000 });
    pass('cdrom-eject-from-page', (await page.textContent('#manage-note')).trim());
  } catch {
    fail('cdrom-eject-from-page', `shows "${await page.textContent('#cdrom-now')}"`);
  }

  // Stop from the page (ACPI: the test guest powers off).
  await page.locator(`tr[data-vm="${vmB}"] button[data-action="stop"]`).click();
  await waitState(page, vmB, 'stopped', 40000, 'stop-from-page');
  await page.locator(`tr[data-vm="${vmA}"] button[data-action="kill"]`).click();
  await waitState(page, vmA, 'stopped', 20000, 'kill-from-page');

  // Delete, after the page's confirmation naming what goes and what stays.
  let dialogText = '';
  page.once('dialog', (d) => { dialogText = d.message(); d.accept(); });
  await page.locator(`tr[data-vm="${vmDoomed}"] button[data-action="delete"]`).click();
  try {
    await page.locator(`tr[data-vm="${vmDoomed}"]`).waitFor({ state: 'detached', timeout: 20000 });
    const names = JSON.parse(cli('vm', 'list', '--json')).map((v) => v.name);
    if (!names.includes(vmDoomed) && dialogText.includes(vmDoomed) && /Deleted:\n  definition: /.test(dialogText) &&
        dialogText.includes('Kept:'))
      pass('delete-from-page', dialogText.split('\n')[0]);
    else fail('delete-from-page', `list ${names}, dialog "${dialogText}"`);
  } catch {
    fail('delete-from-page', 'the row stayed');
  }

  const mark = await page.evaluate(() => window.vmhostTestMark);
  if (mark === 'no reload') pass('no-reload'); else fail('no-reload', 'the page was reloaded');
  // The refused start above is logged by the browser as a failed load
  // (409); anything else is a fault of the page.
  const unexpected = consoleErrors.filter((m) => !/status of 409/.test(m));
  if (unexpected.length === 0) pass('no-console-errors', `${consoleErrors.length} expected 409`);
  else fail('no-console-errors', unexpected.join(' | '));

  // Another browser without the token gets the 401 page, not the list.
  const stranger = await browser.newContext();
  const p2 = await stranger.newPage();
  const res = await p2.goto(`${base.origin}/`);
  const text = await p2.textContent('body');
  if (res.status() === 401 && text.includes('address')) pass('no-token-401', text.trim().slice(0, 60));
  else fail('no-token-401', `status ${res.status()}`);
} catch (e) {
  fail('browser', e.stack || String(e));
} finally {
  await browser.close();
}
console.log(`browser: ${failed} failed`);
process.exit(failed ? 1 : 0);
