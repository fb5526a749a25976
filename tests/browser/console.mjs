// tests/browser/console.mjs: the consoles of 'vmhost web' in a real
// browser (Debian's chromium, headless, driven by playwright-core), run by
// tests/e2e/t-web-console.sh:
//
//   node console.mjs URL VM [SHOTS_DIR]
//
// VM is a running test guest of the home the server serves. Checks: the
// screen is drawn and matches a QMP screendump of the same moment (the
// metric is below), Ctrl-Alt-Del makes the guest reboot (its serial
// console shows a second ready line), a command typed into the serial
// console prints its output there, and a second viewer sees the output of
// a command the first typed; no console errors in the page. With
// SHOTS_DIR it saves small screenshots of the overview and both consoles.
// Prints "PASS name" / "FAIL name: why" per check.
import { chromium } from 'playwright-core';

const [url, vm, shots] = process.argv.slice(2);
let failed = 0;
const pass = (name, detail) => console.log(`PASS ${name}${detail ? ` (${detail})` : ''}`);
const fail = (name, why) => { failed++; console.log(`FAIL ${name}: ${why}`); };
async function check(name, fn) {
  try {
    const detail = await fn();
    pass(name, detail);
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
         '--disable-quic'],
});

async function waitTerm(page, re, ms) {
  await page.waitForFunction((src) => {
    const rows = document.querySelector('#serial .xterm-rows');
    return rows && new RegExp(src, 'm').test([...rows.children].map((r) => r.textContent).join('\n'));
  }, re.source, { timeout: ms });
}

// Compares the noVNC canvas with a screendump fetched at the same moment
// from the page (GET /api/vms/NAME/screenshot.png, 'vm screenshot''s
// library call), both scaled to a grid of 48x25 cells (a text screen of
// 720x400 has 80x25 characters, so a cell holds about two of them). A cell
// is "ink" when its mean luminance is above 16 of 255 (text on black). The
// pictures match when at least 97% of the cells agree (a blinking cursor
// or a line being drawn may differ), and neither is blank: at least 2% of
// the cells have ink. Returns the figures.
const compareScript = async (name) => {
  const W = 48, H = 25;
  const grid = (source, w, h) => {
    const c = document.createElement('canvas');
    c.width = W; c.height = H;
    const g = c.getContext('2d');
    g.imageSmoothingEnabled = true;
    g.imageSmoothingQuality = 'high';
    g.drawImage(source, 0, 0, w, h, 0, 0, W, H);
    const d = g.getImageData(0, 0, W, H).data;
    const ink = [];
    for (let i = 0; i < W * H; i++) {
      const l = 0.2126 * d[4 * i] + 0.7152 * d[4 * i + 1] + 0.0722 * d[4 * i + 2];
      ink.push(l > 16);
    }
    return ink;
  };
  const canvas = document.querySelector('#screen canvas');
  const res = await fetch(`/api/vms/${encodeURIComponent(name)}/screenshot.png`, { credentials: 'same-origin' });
  if (!res.ok) throw new Error(`screenshot: HTTP ${res.status}`);
  const a = grid(canvas, canvas.width, canvas.height);
  const bmp = await createImageBitmap(await res.blob());
  const b = grid(bmp, bmp.width, bmp.height);
  let agree = 0, inkA = 0, inkB = 0;
  for (let i = 0; i < a.length; i++) {
    agree += a[i] === b[i];
    inkA += a[i];
    inkB += b[i];
  }
  return { agree: agree / a.length, inkCanvas: inkA / a.length, inkDump: inkB / a.length,
           canvas: `${canvas.width}x${canvas.height}`, dump: `${bmp.width}x${bmp.height}` };
};

const errorsSeen = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  const errors = errorsSeen;
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  try {
    await page.waitForSelector(`tr[data-vm="${vm}"] button[data-action="console"]:not([disabled])`, { timeout: 15000 });
  } catch (e) {
    // What the page showed instead, for the failure message.
    const table = await page.textContent('#vms tbody').catch(() => '(no table)');
    throw new Error(`no console button for ${vm} after 15 s; the table: "${table}"`);
  }
  if (shots) await page.screenshot({ path: `${shots}/overview.png`, clip: { x: 0, y: 0, width: 1280, height: 220 } });

  await page.click(`tr[data-vm="${vm}"] button[data-action="console"]`);
  const drawn = await check('screen-drawn', async () => {
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
  if (drawn) {
    await check('screen-matches-screendump', async () => {
      // Two tries: the guest may be drawing at the first.
      let r;
      for (let i = 0; i < 2; i++) {
        r = await page.evaluate(compareScript, vm);
        if (r.agree >= 0.97 && r.inkCanvas >= 0.02 && r.inkDump >= 0.02) break;
        await page.waitForTimeout(500);
      }
      const why = `agree ${(r.agree * 100).toFixed(1)}%, ink canvas ${(r.inkCanvas * 100).toFixed(1)}% ` +
                  `dump ${(r.inkDump * 100).toFixed(1)}%, ${r.canvas} vs ${r.dump}`;
      if (!(r.agree >= 0.97 && r.inkCanvas >= 0.02 && r.inkDump >= 0.02)) throw new Error(why);
      return why;
    });
  }

  await check('serial-scrollback', async () => {
    await waitTerm(page, /VMHOST-READY name=/, 10000);
    return 'the ready line from the serial log';
  });
  const n = 1000 + Math.floor(Math.random() * 9000);
  await check('serial-command', async () => {
    await page.click('#serial');
    await page.keyboard.type(`echo web$((${n}+1))\n`);
    await waitTerm(page, new RegExp(`^web${n + 1}$`), 10000);
    return `echo web$((${n}+1)) printed web${n + 1}`;
  });
  if (shots) await page.locator('.console-grid').screenshot({ path: `${shots}/consoles.png` });

  await check('two-viewers', async () => {
    const page2 = await context.newPage();
    page2.on('pageerror', (e) => errors.push(`second page: ${e.message}`));
    await page2.goto(url.replace(/\?.*$/, ''));
    await page2.waitForSelector(`tr[data-vm="${vm}"] button[data-action="console"]:not([disabled])`);
    await page2.click(`tr[data-vm="${vm}"] button[data-action="console"]`);
    await page2.waitForFunction(() => document.querySelector('#serial-status').textContent === 'connected',
      null, { timeout: 10000 });
    await page.click('#serial');
    await page.keyboard.type(`echo two$((${n}*2))\n`);
    await waitTerm(page, new RegExp(`^two${n * 2}$`), 10000);
    await waitTerm(page2, new RegExp(`^two${n * 2}$`), 10000);
    await page2.close();
    return 'the second page saw the first page\'s command output';
  });

  await check('ctrl-alt-del-reboots', async () => {
    // Counted, so that a restart already in the scrollback does not pass.
    const count = () => page.evaluate(() => {
      const rows = document.querySelector('#serial .xterm-rows');
      const t = rows ? [...rows.children].map((r) => r.textContent).join('\n') : '';
      return [t.split('Restarting system').length - 1, t.split('VMHOST-READY').length - 1];
    });
    const [restarts, readies] = await count();
    await page.click('#cad');
    const t0 = Date.now();
    for (;;) {
      const [r, k] = await count();
      if (r > restarts && k > readies) break;
      if (Date.now() - t0 > 30000) throw new Error(`after 30 s: ${r} restarts, ${k} ready lines (before ${restarts}, ${readies})`);
      await page.waitForTimeout(200);
    }
    return `the serial console showed a new restart and ready line after ${Date.now() - t0} ms`;
  });
  // After the reboot the screen shows the firmware again: still drawn.
  await check('screen-after-reboot', async () => {
    const r = await page.evaluate(compareScript, vm);
    if (r.inkCanvas < 0.02) throw new Error(`canvas blank: ink ${r.inkCanvas}`);
    return `agree ${(r.agree * 100).toFixed(1)}%`;
  });
  if (shots) await page.locator('#screen-box').screenshot({ path: `${shots}/screen.png` });

  await check('monitor', async () => {
    await page.fill('#monitor-command', 'info status');
    await page.click('#monitor-form button');
    await page.waitForFunction(() => /VM status: running/.test(document.querySelector('#monitor-output').textContent),
      null, { timeout: 10000 });
    return (await page.textContent('#monitor-output')).trim().replace(/\s+/g, ' ');
  });
  if (errors.length) fail('no-console-errors', errors.join(' | '));
  else pass('no-console-errors');
} catch (e) {
  fail('console-run', `${e.message.split('\n')[0]}; page errors: ${errorsSeen.join(' | ') || 'none'}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
