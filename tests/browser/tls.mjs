// tests/browser/tls.mjs: 'vmhost web' over HTTPS with its self-made
// certificate in a real browser (Debian's chromium, headless, driven by
// playwright-core), run by tests/e2e/t-web-tls.sh:
//
//   node tls.mjs URL SPKI_SHA256_BASE64 VM
//
// The certificate is trusted by its public key's hash only
// (--ignore-certificate-errors-spki-list), as a user who compared the
// printed fingerprint would. Checks: the page loads over https and the
// token leaves the address bar; the session cookie is Secure and HttpOnly;
// the VM's consoles open over wss: the screen is drawn, and a command typed
// into the serial console prints its output there; no console errors.
// Prints "PASS name" / "FAIL name: why" per check.
import { chromium } from 'playwright-core';

const [url, spki, vm] = process.argv.slice(2);
let failed = 0;
const pass = (name, detail) => console.log(`PASS ${name}${detail ? ` (${detail})` : ''}`);
const fail = (name, why) => { failed++; console.log(`FAIL ${name}: ${why}`); };
async function check(name, fn) {
  try {
    pass(name, await fn());
    return true;
  } catch (e) {
    fail(name, e.message.split('\n')[0]);
    return false;
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-quic', `--ignore-certificate-errors-spki-list=${spki}`],
});
const errors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(e.message));
  await check('https-page', async () => {
    await page.goto(url);
    await page.waitForSelector(`tr[data-vm="${vm}"] button[data-action="console"]:not([disabled])`, { timeout: 15000 });
    const where = page.url();
    if (!where.startsWith('https://') || where.includes('token=')) throw new Error(`address bar: ${where}`);
    return where;
  });
  await check('cookie-secure', async () => {
    const c = (await context.cookies()).find((k) => k.name.startsWith('vmhost_session_'));
    if (!c || !c.secure || !c.httpOnly || c.sameSite !== 'Strict') throw new Error(JSON.stringify(c));
    return `${c.name}: Secure, HttpOnly, SameSite=Strict`;
  });
  await page.click(`tr[data-vm="${vm}"] button[data-action="console"]`);
  await check('wss-screen-drawn', async () => {
    await page.waitForFunction(() => {
      const c = document.querySelector('#screen canvas');
      if (!c || c.width < 100) return false;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let lit = 0;
      for (let i = 0; i < d.length; i += 4) lit += d[i] + d[i + 1] + d[i + 2] > 96;
      return lit > 200;
    }, null, { timeout: 20000 });
    return await page.textContent('#screen-status');
  });
  await check('wss-serial-command', async () => {
    await page.waitForFunction(() => document.querySelector('#serial-status').textContent === 'connected',
      null, { timeout: 10000 });
    const n = 1000 + Math.floor(Math.random() * 9000);
    await page.click('#serial');
    await page.keyboard.type(`echo tls$((${n}+1))\n`);
    await page.waitForFunction((want) => {
      const rows = document.querySelector('#serial .xterm-rows');
      return rows && [...rows.children].some((r) => r.textContent.trim() === want);
    }, `tls${n + 1}`, { timeout: 10000 });
    return `echo tls$((${n}+1)) printed tls${n + 1}`;
  });
  if (errors.length) fail('no-console-errors', errors.join(' | '));
  else pass('no-console-errors');
} catch (e) {
  fail('tls-run', `${e.message.split('\n')[0]}; page errors: ${errors.join(' | ') || 'none'}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
