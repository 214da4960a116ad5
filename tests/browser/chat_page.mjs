// The chat page (GET /chat) in headless Chromium (Debian's, driven by
// playwright-core), against the local stack: the service under `cargo
// lambda watch` and the local RunPod endpoint, whose jobs take long enough
// (RUNPOD_LOCAL_EXEC_MS, 1 500 in scripts/test.sh) to watch a reply being
// written. Each step is what a person does; each check reads the page and,
// where it matters, the stored conversation or what reached the model.
//   JWT_SECRET=... node tests/browser/chat_page.mjs BASE_URL RUNPOD_URL [SCREENSHOTS (.local/chat)]
import { createHmac, randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, runpod, shots = ".local/chat"] = process.argv.slice(2);
if (!base || !runpod) throw new Error("usage: chat_page.mjs BASE_URL RUNPOD_URL [SCREENSHOTS]");
const secret = process.env.JWT_SECRET ?? "local-development-secret-do-not-deploy";
mkdirSync(shots, { recursive: true });

/** An HS256 token for `sub`, valid for an hour. */
function token(sub) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${part({ typ: "JWT", alg: "HS256" })}.${part({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

const user = `browser-${randomUUID()}`;
const jwt = token(user);
const apiGet = async (path) => {
  const r = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${jwt}` } });
  return r.json();
};

const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
  console.error(`${ok ? "ok  " : "FAIL"} ${what}`);
};
const results = {};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 850 } });
  const page = await context.newPage();
  const origin = new URL(base).origin;
  const foreign = [], errors = [], dialogs = [], violations = [];
  page.on("request", (r) => { if (!r.url().startsWith("blob:") && new URL(r.url()).origin !== origin) foreign.push(r.url()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss(); });
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });

  // Signed in by the link scripts/dev.sh prints: the token in the fragment.
  await page.goto(`${base}/chat#token=${jwt}`, { waitUntil: "load" });
  check(!(await page.url()).includes("token="), "the token leaves the address bar");
  check(await page.evaluate(() => sessionStorage.getItem("chat-token") !== null), "the token is kept in sessionStorage");
  await page.locator("#model option").first().waitFor({ state: "attached", timeout: 120000 });
  const models = await page.locator("#model option").count();
  check(models >= 1, `the model list comes from /api/chat/models (${models})`);

  const input = page.locator("#input");
  const stopButton = page.locator("#stop");
  const lastReply = page.locator(".message.assistant .text").last();
  const idle = () => stopButton.waitFor({ state: "hidden", timeout: 30000 });

  /** Records the last reply's text length on every change until the reply ends. */
  const watchGrowth = () => page.evaluate(() => {
    window.__growth = [];
    window.__sentAt = performance.now();
    const list = document.getElementById("messages");
    const seen = () => {
      const texts = list.querySelectorAll(".message.assistant .text");
      const t = texts[texts.length - 1];
      const n = t ? t.textContent.length : 0;
      const g = window.__growth;
      if (n > 0 && (g.length === 0 || g[g.length - 1].n !== n)) g.push({ n, at: performance.now() - window.__sentAt, pending: !document.getElementById("stop").hidden });
    };
    new MutationObserver(seen).observe(list, { childList: true, subtree: true, characterData: true });
  });

  // 1. A message sent with Enter; the reply grows over several frames.
  await watchGrowth();
  await input.fill("How do I organize **patient files**?");
  await input.press("Enter");
  await page.locator(".message.assistant").first().waitFor();
  await idle();
  const growth = await page.evaluate(() => window.__growth);
  const whileWriting = growth.filter((g) => g.pending);
  check(whileWriting.length >= 3, `the reply grows while it is written (${whileWriting.length} sizes before it ended)`);
  results.first_delta_ms = whileWriting[0]?.at;
  const list = await apiGet("/api/chat/conversations");
  const id = list.conversations[0]?.id;
  let stored = await apiGet(`/api/chat/conversations/${id}`);
  let storedReply = stored.messages[stored.messages.length - 1];
  check((await lastReply.textContent()).trim() === storedReply.content.replace(/\*\*/g, "").trim(),
    "the final text is the stored reply (its Markdown rendered)");
  check(await page.locator(".message.assistant strong").count() >= 1, "Markdown renders (bold)");
  check(await page.locator(`#conversations li[data-id="${id}"]`).count() === 1, "the new conversation is in the list");
  check((await page.locator("#usage").textContent()).includes("Today"), "today's usage is shown");
  await page.screenshot({ path: `${shots}/reply.png` });

  // 2. Stop ends the reply; it is stored cancelled.
  await input.fill("Tell me about retention rules.");
  await input.press("Enter");
  await page.locator(".message.assistant .text").nth(1).filter({ hasText: /\S/ }).waitFor();
  await stopButton.click();
  await idle();
  await page.locator(".message.assistant .status", { hasText: "Stopped." }).waitFor({ timeout: 10000 });
  stored = await apiGet(`/api/chat/conversations/${id}`);
  check(stored.messages[stored.messages.length - 1].status === "cancelled", "Stop stores the reply cancelled");

  // 3. Regenerate adds a version; the switcher flips between them.
  await page.locator(".message.assistant").last().getByRole("button", { name: "Regenerate" }).click();
  await page.locator(".message.assistant").last().locator(".where", { hasText: "2 / 2" }).waitFor({ timeout: 30000 });
  await idle();
  const second = await lastReply.textContent();
  await page.locator(".message.assistant").last().getByRole("button", { name: "Previous version" }).click();
  await page.locator(".message.assistant").last().locator(".where", { hasText: "1 / 2" }).waitFor();
  check(await page.locator(".message.assistant .status", { hasText: "Stopped." }).count() === 1, "the switcher shows the first version again");
  await page.locator(".message.assistant").last().getByRole("button", { name: "Next version" }).click();
  await page.locator(".message.assistant").last().locator(".where", { hasText: "2 / 2" }).waitFor();
  check((await lastReply.textContent()) === second, "and the second");
  await page.screenshot({ path: `${shots}/versions.png` });

  // 4. An edit branches: a new version of the question with its own reply.
  const question = page.locator(".message.user").last();
  await question.getByRole("button", { name: "Edit" }).click();
  await page.locator(".message.user textarea").fill("Tell me about retention rules for minors.");
  await page.getByRole("button", { name: "Send edit" }).click();
  await page.locator(".message.user").last().locator(".where", { hasText: "2 / 2" }).waitFor({ timeout: 30000 });
  await idle();
  check((await page.locator(".message.user .text").last().textContent()) === "Tell me about retention rules for minors.", "the edit is the question shown");

  // 5. Feedback: thumbs down with a comment, stored.
  await page.locator(".message.assistant").last().getByRole("button", { name: "Bad reply" }).click();
  const comment = page.getByRole("textbox", { name: "Comment on this reply" });
  await comment.fill("Too vague.");
  await comment.press("Enter");
  await page.locator(".message.assistant").last().getByRole("button", { name: "Bad reply", pressed: true }).waitFor();
  stored = await apiGet(`/api/chat/conversations/${id}`);
  check(stored.messages[stored.messages.length - 1].feedback?.comment === "Too vague.", "the rating and comment are stored");

  // 6. Settings chosen in the page reach the model.
  await page.locator("#settings summary").click();
  await page.locator("#instructions").fill("Answer in one sentence.");
  await page.locator("#temperature").fill("0.3");
  await page.locator("#max-tokens").fill("77");
  await page.getByRole("button", { name: "Save settings" }).click();
  await page.locator("#settings-note", { hasText: "Saved." }).waitFor();
  await input.fill("And for lab results?");
  await input.press("Enter");
  await idle();
  const jobs = (await (await fetch(`${runpod}/_control/submissions`)).json()).submissions;
  const job = jobs[jobs.length - 1].input;
  const system = job.messages?.[0];
  check(job.sampling_params?.temperature === 0.3 && job.sampling_params?.max_tokens === 77,
    `temperature and max tokens reach the model (${JSON.stringify(job.sampling_params)})`);
  check(system?.role === "system" && system.content === "Answer in one sentence.", "the instructions reach the model");
  await page.locator("#settings summary").click();

  // 7. A connection dropped after three deltas: the page attaches again with
  // Last-Event-ID and the text continues without a repeat.
  let cutAt = null;
  const attaches = [];
  page.on("request", (r) => { if (r.url().endsWith("/stream") && r.method() === "GET") attaches.push(r.headers()["last-event-id"]); });
  await page.route("**/api/chat/send/stream", async (route) => {
    const resp = await route.fetch();
    const events = (await resp.text()).split("\n\n");
    const third = events.findIndex((e, i) => e.includes("event: message.delta") && events.slice(0, i + 1).filter((x) => x.includes("message.delta")).length === 3);
    cutAt = Number(/id: (\d+)/.exec(events[third])[1]);
    await route.fulfill({ status: 200, headers: resp.headers(), body: events.slice(0, third + 1).join("\n\n") + "\n\n" });
  }, { times: 1 });
  await input.fill("What about scanned letters?");
  await input.press("Enter");
  await page.locator(".message.user .text", { hasText: "What about scanned letters?" }).waitFor();
  await idle();
  stored = await apiGet(`/api/chat/conversations/${id}`);
  storedReply = stored.messages[stored.messages.length - 1];
  check(attaches.includes(String(cutAt)), `the dropped stream attaches with Last-Event-ID ${cutAt} (${attaches})`);
  check((await lastReply.textContent()).trim() === storedReply.content.trim(), "the text after the drop is the stored reply, nothing repeated");

  // 8. A reload mid-reply shows it and continues.
  await input.fill("And faxes?");
  await input.press("Enter");
  await page.locator(".message.assistant .text").last().filter({ hasText: /\S/ }).waitFor();
  await page.reload({ waitUntil: "load" });
  await page.locator(".message.user .text", { hasText: "And faxes?" }).waitFor();
  await idle();
  stored = await apiGet(`/api/chat/conversations/${id}`);
  storedReply = stored.messages[stored.messages.length - 1];
  check(storedReply.status === "complete", "the reply completed across the reload");
  check((await lastReply.textContent()).trim() === storedReply.content.trim(), "after the reload the page shows the whole stored reply");

  // 9. Markup and script in a message and its reply stay text.
  await input.fill('<img src=x onerror=alert(1)> [click](javascript:alert(2))');
  await input.press("Enter");
  await idle();
  await page.waitForTimeout(300);
  check(dialogs.length === 0, `no dialog opens (${dialogs})`);
  check(await page.locator(".messages img").count() === 0, "no image element is made from a message");
  check(await page.locator('.messages a[href^="javascript:"]').count() === 0, "no javascript: link is made");
  check((await page.locator(".message.user .text").last().textContent()).includes("<img src=x onerror=alert(1)>"), "the markup shows as text");

  // 10. A refused send says why and keeps the text.
  const long = "x".repeat(70000);
  await input.fill(long);
  await input.press("Enter");
  await page.locator("#error", { hasText: "too long" }).waitFor();
  check((await input.inputValue()) === long, "a refused message stays in the input");
  await input.fill("");

  // 11. Export and share from the page.
  const download = page.waitForEvent("download");
  await page.getByRole("button", { name: "Export Markdown" }).click();
  check((await download).suggestedFilename().endsWith(".md"), "Export Markdown downloads a .md file");
  const everything = page.waitForEvent("download");
  await page.getByRole("button", { name: "Export all conversations" }).click();
  const file = await everything;
  const lines = (await (await import("node:fs/promises")).readFile(await file.path(), "utf8")).trim().split("\n").map((l) => JSON.parse(l));
  check(file.suggestedFilename() === "conversations.ndjson" && lines[0].id === id
    && lines[lines.length - 1].end === "complete", "Export all downloads every conversation as NDJSON, whole");
  await page.getByRole("button", { name: "Share link" }).click();
  await page.locator("#share-url").waitFor({ timeout: 120000 });
  const shareUrl = await page.locator("#share-url").inputValue();
  const shared = await (await fetch(shareUrl)).json();
  check(Array.isArray(shared.messages) && shared.messages.length >= 2, "the share link reads without a token");

  // 12. Narrow (375 px) and keyboard only: the list opens, a chat opens.
  await page.setViewportSize({ width: 375, height: 740 });
  await page.screenshot({ path: `${shots}/narrow.png` });
  await page.locator("#toggle-list").focus();
  await page.keyboard.press("Enter");
  await page.locator(`#conversations li[data-id="${id}"] .open`).waitFor();
  await page.screenshot({ path: `${shots}/narrow-list.png` });
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement?.id === "token"), "Tab moves on from the list button into the list panel");
  await page.locator(`#conversations li[data-id="${id}"] .open`).focus();
  await page.keyboard.press("Enter");
  await page.locator("#messages .message").first().waitFor();
  check(await page.locator("#side.open").count() === 0, "opening a chat closes the list on a narrow screen");
  await page.setViewportSize({ width: 1200, height: 850 });
  await page.screenshot({ path: `${shots}/conversation.png` });

  check(errors.length === 0, `no script error (${errors})`);
  check(foreign.length === 0, `no request beyond ${origin} (${foreign})`);
  check(violations.length === 0, `no Content-Security-Policy violation (${violations})`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
if (failures.length) {
  console.error(`${failures.length} check(s) failed`);
  process.exit(1);
}
