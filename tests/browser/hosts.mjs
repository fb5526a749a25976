// tests/browser/hosts.mjs: the dashboard's buttons for a VM of another
// host, in headless chromium (playwright-core), run by
// tests/e2e/t-web-hosts.sh:
//
//   node hosts.mjs URL HOST VM
//
// VM is a stopped VM of registered host HOST. Through the page: start it
// (the row turns running from the event stream), open its consoles (the
// serial console shows the guest's ready line, the screen connects), run
// a monitor command there, reboot it with Ctrl-Alt-Del over the relayed
// screen (its serial console shows it), stop it. Prints
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
  await check('remote-monitor', async () => {
    await page.fill('#monitor-command', 'info status');
    await page.click('#monitor-form button');
    await page.waitForFunction(() => /VM status: running/.test(document.querySelector('#monitor-output').textContent),
                               null, { timeout: 30000 });
    return (await page.textContent('#monitor-output')).trim().replace(/\s+/g, ' ');
  });
  // Ctrl-Alt-Del as RFB key events over the relayed screen: the guest's
  // init reboots, which its serial console shows (counted, so that what
  // the scrollback had does not pass).
  await check('remote-ctrl-alt-del', async () => {
    const count = () => page.evaluate(() => {
      const rows = document.querySelector('#serial .xterm-rows');
      const t = rows ? [...rows.children].map((r) => r.textContent).join('\n') : '';
      return [t.split('Restarting system').length - 1, t.split('VMHOST-READY').length - 1];
    });
    const [restarts, readies] = await count();
    if (await page.locator('#cad').isDisabled()) throw new Error('#cad is disabled for a remote VM');
    await page.click('#cad');
    const t0 = Date.now();
    for (;;) {
      const [r, k] = await count();
      if (r > restarts && k > readies) break;
      if (Date.now() - t0 > 60000) throw new Error(`after 60 s: ${r} restarts, ${k} ready lines (before ${restarts}, ${readies})`);
      await page.waitForTimeout(200);
    }
    if (await page.locator('#screenshot').isVisible()) throw new Error('the screenshot link shows');
    return `a new restart and ready line after ${Date.now() - t0} ms`;
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
