// Plays one rtmp-edge stream in Debian's headless Chromium and prints what happened as
// JSON: node play.mjs MODE URL SECONDS, MODE one of hls | hls-ll | flv | page.
// hls / hls-ll / flv load hls.js or mpegts.js into a blank page (so every request is
// cross-origin and needs the server's CORS headers); page opens URL (the preview page),
// finds the first listed stream, starts it and watches its <video>. Exits 0 after
// SECONDS of watching, whatever happened; the Rust test judges the JSON.
import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const [mode, url, secondsArg, shot] = process.argv.slice(2);
const seconds = Number(secondsArg || 10);
const hlsJs = require.resolve('hls.js/dist/hls.min.js');
const mpegtsJs = require.resolve('mpegts.js/dist/mpegts.js');

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--autoplay-policy=no-user-gesture-required'],
});
const log = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('console', (m) => log.push(m.text()));
  page.on('pageerror', (e) => log.push('pageerror: ' + e.message));
  let result;
  if (mode === 'page') {
    // The page's player scripts come from the npm packages, wherever the page points.
    await page.route(/hls(\.min)?\.js$/, (r) => r.fulfill({ path: hlsJs, contentType: 'text/javascript' }));
    await page.route(/mpegts(\.min)?\.js$/, (r) => r.fulfill({ path: mpegtsJs, contentType: 'text/javascript' }));
    await page.goto(url);
    const item = page.locator('[data-stream]').first();
    await item.waitFor({ timeout: 15000 });
    const listed = await page.locator('[data-stream]').evaluateAll((els) => els.map((e) => e.dataset.stream));
    await item.locator('button', { hasText: 'HLS' }).first().click();
    result = await watch(page, seconds);
    result.listed = listed;
    if (shot) {
      await page.screenshot({ path: shot, fullPage: true });
      // And on a phone-sized screen: the card takes the whole width.
      await page.setViewportSize({ width: 390, height: 844 });
      await page.waitForTimeout(500);
      await page.screenshot({ path: shot.replace(/\.png$/, '-phone.png'), fullPage: true });
      result.phoneCardWidth = await page.locator('[data-stream]').first().evaluate((e) => e.getBoundingClientRect().width);
    }
  } else {
    await page.setContent('<video id="v" muted playsinline style="width:640px"></video>');
    await page.addScriptTag({ path: mode === 'flv' ? mpegtsJs : hlsJs });
    await page.evaluate(({ mode, url }) => {
      const v = document.getElementById('v');
      window.__errors = [];
      if (mode === 'flv') {
        const p = mpegts.createPlayer({ type: 'flv', isLive: true, url }, { enableStashBuffer: false });
        p.on(mpegts.Events.ERROR, (t, d) => window.__errors.push({ fatal: true, type: t, details: d }));
        p.attachMediaElement(v);
        p.load();
        window.__player = p;
      } else {
        const hls = new Hls({ lowLatencyMode: mode === 'hls-ll' });
        hls.on(Hls.Events.ERROR, (e, d) => window.__errors.push({ fatal: d.fatal, type: d.type, details: d.details }));
        hls.loadSource(url);
        hls.attachMedia(v);
        window.__player = hls;
      }
      v.play().catch(() => {});
    }, { mode, url });
    result = await watch(page, seconds);
  }
  result.supported = await page.evaluate(() => MediaSource.isTypeSupported('video/mp4; codecs="avc1.42c01e,mp4a.40.2"'));
  result.log = log.slice(-20);
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}

// Samples the page's <video> twice a second: how far currentTime advanced after it first
// moved, and the live-edge latency hls.js reports through PROGRAM-DATE-TIME.
async function watch(page, seconds) {
  const samples = [];
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    await page.waitForTimeout(500);
    samples.push(await page.evaluate(() => {
      const v = document.querySelector('video');
      const p = window.__player || window.__preview;
      const date = p && p.playingDate ? p.playingDate.getTime() : null;
      return { t: v ? v.currentTime : 0, latencyMs: date ? Date.now() - date : null };
    }));
  }
  const moved = samples.filter((s) => s.t > 0);
  const lat = samples.map((s) => s.latencyMs).filter((x) => x !== null).slice(-6).sort((a, b) => a - b);
  return {
    advanced: moved.length ? moved[moved.length - 1].t - moved[0].t : 0,
    currentTime: samples.length ? samples[samples.length - 1].t : 0,
    latencyMs: lat.length ? lat[Math.floor(lat.length / 2)] : null,
    trace: samples.filter((_, i) => i % 2 === 0).map((s) => [Math.round(s.t * 10) / 10, s.latencyMs]),
    errors: await page.evaluate(() => window.__errors || []),
  };
}
