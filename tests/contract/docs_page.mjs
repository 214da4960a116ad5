// Opens the API reference page in headless Chromium (Debian's, driven by
// playwright-core) and checks that it rendered: every operation of
// openapi.json appears in the menu the page's script builds and its path in
// the page, a menu entry navigates, no script error, and nothing reached the
// page from beyond the host that served it. Saves a screenshot.
//   node tests/contract/docs_page.mjs BASE_URL [SCREENSHOT (.local/docs.png)]
import { chromium } from "playwright-core";

const base = process.argv[2];
const screenshot = process.argv[3] ?? ".local/docs.png";
if (!base) throw new Error("usage: docs_page.mjs BASE_URL [SCREENSHOT]");

const spec = await (await fetch(`${base}/openapi.json`)).json();
const operations = Object.entries(spec.paths).flatMap(([path, item]) =>
  ["get", "post", "put", "patch", "delete"]
    .filter((m) => item[m])
    .map((m) => ({ method: m, path, summary: item[m].summary, tags: item[m].tags })),
);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
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
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const origin = new URL(base).origin;
  // What reached the page from elsewhere (a blocked request gets no response).
  const foreign = [];
  page.on("response", (r) => {
    if (new URL(r.url()).origin !== origin) foreign.push(r.url());
  });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${base}/docs`, { waitUntil: "load" });
  await page.getByText(spec.info.title).first().waitFor();

  // The sidebar's tag entries expand on click into their operations: menu
  // entries the page's script renders, absent from the pre-rendered HTML.
  const items = page.locator("[data-component-name='Menu/MenuItem']");
  for (const tag of spec.tags.map((t) => t.name)) {
    await items.filter({ hasText: new RegExp(`^${tag}$`) }).first().click();
    for (const op of operations.filter((o) => o.tags.includes(tag))) {
      const name = `${op.method.toUpperCase()} ${op.path}`;
      const entry = items.filter({ hasText: op.summary }).last();
      try {
        await entry.waitFor({ timeout: 10000 });
      } catch {
        failures.push(`${name}: "${op.summary}" not in the menu under ${tag}`);
      }
    }
  }
  // Each operation's section shows its path once the page is live. Redoc
  // renders sections far down the page only when they come near, so an
  // operation not rendered yet is navigated to first.
  const rendered = (path) => page.evaluate((p) => document.body.innerText.includes(p), path);
  // An operation's menu entry, its tag's group opened first when it is
  // closed: Redoc closes a group when the page moves to another's section.
  const entryOf = async (op) => {
    const entry = items.filter({ hasText: op.summary }).last();
    if (!(await entry.isVisible())) {
      await items.filter({ hasText: new RegExp(`^${op.tags[0]}$`) }).first().click();
    }
    return entry;
  };
  for (const op of operations) {
    if (await rendered(op.path)) continue;
    await (await entryOf(op)).click();
    const shown = await page
      .waitForFunction((p) => document.body.innerText.includes(p), op.path, { timeout: 10000 })
      .then(() => true, () => false);
    if (!shown) failures.push(`${op.method.toUpperCase()} ${op.path}: path not rendered`);
  }
  // An operation's entry navigates to its section.
  const last = operations.filter((o) => o.tags.includes(spec.tags.at(-1).name)).at(-1);
  await (await entryOf(last)).click();
  await page.waitForURL(/#\/.+/, { timeout: 10000 });
  if (errors.length) failures.push(`script errors: ${errors.join("; ")}`);
  if (foreign.length) failures.push(`loaded from beyond ${origin}: ${foreign.join(", ")}`);
  await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(`docs page: ${failures.length} problem(s):\n  ${failures.join("\n  ")}`);
  process.exit(1);
}
console.error(`docs page: ${operations.length} operations rendered; screenshot in ${screenshot}`);
