// Drives Debian's Chromium through strata's web page (tests/it/web.rs runs
// this against a real daemon): log in, read the 3-2-1 badge, click "Sync
// now", see the run held in its before hook, click again (refused), open
// the hook's gate, watch the progress bar reach the end, take a screenshot.
// Prints what it saw as JSON; the Rust test asserts on it.
"use strict";
const fs = require("fs");
const { chromium } = require("playwright-core");

const url = process.env.STRATA_URL;
const TIMEOUT = 60000;

async function badge(page) {
  return (await page.textContent('#hosts tr[data-host="repo"] .badge')).trim();
}

(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  const seen = {};
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    await page.goto(url + "/");
    if (!page.url().includes("/login")) throw new Error("not sent to the login page: " + page.url());
    await page.fill('input[name="user"]', process.env.STRATA_USER);
    await page.fill('input[name="password"]', process.env.STRATA_PASSWORD);
    await Promise.all([page.waitForURL(url + "/"), page.click("#login")]);
    seen.badge_before = await badge(page);

    // Sync now: the run starts and waits in its before hook.
    await Promise.all([
      page.waitForURL(/\/jobs\?note=started/),
      page.click('.sync[data-job="offsite"] button.sync'),
    ]);
    const row = '.live-job[data-job="offsite"]';
    await page.waitForSelector(row + '[data-state="running"]');
    await page.waitForFunction(
      (sel) => document.querySelector(sel + " .phase").textContent === "before hook",
      row
    );
    seen.phase_while_held = await page.textContent(row + " .phase");

    // A second click while it runs starts nothing.
    const other = await context.newPage();
    other.setDefaultTimeout(TIMEOUT);
    await other.goto(url + "/");
    await Promise.all([
      other.waitForURL(/\/jobs\?note=/),
      other.click('.sync[data-job="offsite"] button.sync'),
    ]);
    seen.second_click = (await other.textContent("#note")).trim();
    await other.close();

    // Record every value the bar takes once the copy runs.
    await page.evaluate((sel) => {
      window.__values = [];
      const bar = document.querySelector(sel + " progress");
      new MutationObserver(() => {
        const b = document.querySelector(sel + " progress");
        window.__values.push(b.hasAttribute("value") ? b.value : null);
      }).observe(document.querySelector(sel), { attributes: true, subtree: true, childList: true });
      return bar !== null;
    }, row);
    // Open the gate: the hook's `cat` reads this and exits.
    fs.writeFileSync(process.env.STRATA_GATE, "go\n");
    await page.waitForSelector(row + '[data-state="ok"]');
    seen.final_state = await page.getAttribute(row, "data-state");
    seen.final_value = await page.$eval(row + " progress", (b) => b.value);
    seen.final_text = (await page.textContent(row + " .state")).trim();
    seen.values = await page.evaluate(() => window.__values.length);
    await page.screenshot({ path: process.env.STRATA_SCREENSHOT, fullPage: true });

    // The overview now counts the off-site copy.
    await page.goto(url + "/");
    seen.badge_after = await badge(page);
    await page.screenshot({
      path: process.env.STRATA_SCREENSHOT.replace(/\.png$/, "-overview.png"),
      fullPage: true,
    });
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(seen) + "\n");
})().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
