// A real browser for the tests: Debian's Chromium, driven by playwright-core (which never
// downloads a browser of its own), opening a page and reporting what it logs.
//
//   node browser-console.mjs URL UNTIL_TEXT [TIMEOUT_MS]
//
// Prints each console message of the page as a JSON line {"console": text}, and page errors
// as {"pageerror": text}. Exits 0 once a console message contains UNTIL_TEXT, 2 on timeout.
import { chromium } from "playwright-core";

const [url, untilText, timeoutText = "20000"] = process.argv.slice(2);
if (!url || !untilText) {
  console.error("usage: browser-console.mjs URL UNTIL_TEXT [TIMEOUT_MS]");
  process.exit(64);
}
const print = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  // This machine has no network but loopback: keep Chromium from calling home.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
let code = 2;
try {
  const page = await browser.newPage();
  const done = new Promise((resolve) => {
    page.on("console", (message) => {
      print({ console: message.text() });
      if (message.text().includes(untilText)) resolve(0);
    });
    page.on("pageerror", (error) => print({ pageerror: String(error) }));
  });
  const timeout = new Promise((resolve) => setTimeout(() => resolve(2), Number(timeoutText)));
  await page.goto(url);
  code = await Promise.race([done, timeout]);
  if (code === 2) print({ timeout: true });
} finally {
  await browser.close();
}
process.exit(code);
