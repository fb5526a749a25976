// tests/browser/hosts.mjs: the dashboard's buttons for a VM of another
// host, in headless chromium (playwright-core), run by
// tests/e2e/t-web-hosts.sh:
//
//   node hosts.mjs URL HOST VM
//
// VM is a stopped VM of registered host HOST. Through the page: start it
// (the row turns running from the event stream), open its consoles (the
// serial console shows the guest's ready line, the screen connects, the
// controls that only this host's QEMU has are off), stop it. Prints
// "PASS name" / "FAIL name: why" per check and exits non-zero when any
// failed.
import { chromium } from 'playwright-core';

const [url, host, vm] = process.argv.slice(2);
let failed = 0;
const pass = (name, detail) => console.log(`PASS ${name}${detail ? ` (${detail})` : ''}`);
const fail = (name, why) => { failed++; console.log(`FAIL ${name}: ${why}`); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-quic'],
});
const row = `tr[data-host="${host}"][data-vm="${vm}"]`;

async function check(name, fn) {
  try {
    pass(name, await fn());
  } catch (e) {
    fail(name, e.message.split('\n')[0]);
  }
}

async function waitState(page, want, ms) {
  const t0 = Date.now();
  await page.waitForFunction(([sel, w]) => {
    const td = document.querySelector(`${sel} td.state`);
    return td && td.firstChild && td.firstChild.textContent === w;
  }, [row, want], { timeout: ms });
  return `${want} after ${Date.now() - t0} ms`;
}

try {
  const page = await (await browser.newContext()).newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await check('remote-row', () => waitState(page, 'stopped', 20000));
  await check('remote-start', async () => {
    const b = page.locator(`${row} button[data-action="start"]`);
    if (await b.isDisabled()) throw new Error('the start button of a remote VM is disabled');
    await b.click();
    return waitState(page, 'running', 60000);
  });
  await check('remote-console-serial', async () => {
    await page.click(`${row} button[data-action="console"]`);
    await page.waitForFunction(() => {
      const rows = document.querySelector('#serial .xterm-rows');
      return rows && rows.textContent.includes('VMHOST-READY');
    }, null, { timeout: 30000 });
    return 'the ready line through the relay';
  });
  await check('remote-console-screen', async () => {
    await page.waitForFunction(() => document.querySelector('#screen-status').textContent.startsWith('connected'),
                               null, { timeout: 30000 });
    return (await page.locator('#screen-status').textContent()).trim();
  });
  await check('remote-console-local-only-off', async () => {
    for (const sel of ['#cad', '#monitor-command', '#type-text']) {
      if (!(await page.locator(sel).isDisabled())) throw new Error(`${sel} is enabled for a remote VM`);
    }
    if (await page.locator('#screenshot').isVisible()) throw new Error('the screenshot link shows');
    return 'keys, typing, monitor, screenshot off';
  });
  await page.click('#console-close');
  await check('remote-stop', async () => {
    await page.click(`${row} button[data-action="stop"]`);
    return waitState(page, 'stopped', 60000);
  });
  if (errors.length) fail('page-errors', errors.join('; '));
  else pass('page-errors', 'none');
} catch (e) {
  fail('browser', e.message);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
