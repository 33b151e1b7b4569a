// Browser checks of the API documentation, as a person would use it: headless Chromium opens
// /docs, authorizes through the OAuth2 password dialog with a user made for the test, runs
// "Try it out" on GET /auth/me and sees 200; does the same as the admin the server bootstrapped
// from ADMIN_* on GET /admin/users; then opens /redoc and sees the operations.
// Run by scripts/test after the Rust suite (it needs target/debug/cerego and Debian's chromium).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium, root, startCerego } from './cerego.mjs';

const shots = join(root, 'target', 'browser');
const user = { email: 'ada@example.com', username: 'ada_browser', password: 'correct horse battery' };
const admin = { email: 'root@example.com', username: 'root_browser', password: 'a long admin pass phrase' };

let server;
let base;
let browser;
let dir;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cerego-browser-'));
  mkdirSync(shots, { recursive: true });
  ({ server, base } = await startCerego(dir, {
    ADMIN_EMAIL: admin.email,
    ADMIN_USERNAME: admin.username,
    ADMIN_PASSWORD: admin.password,
  }));
  const signup = await fetch(`${base}/auth/signup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(user),
  });
  assert.equal(signup.status, 201);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A page that fails the test if it asks any host but the server under test. */
async function openPage() {
  const page = await browser.newPage();
  const foreign = [];
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (!['data:', 'blob:'].includes(url.protocol) && url.origin !== base) foreign.push(request.url());
  });
  return { page, foreign };
}

/** Opens /docs and authorizes through the OAuth2 password dialog as `account`. */
async function authorizedDocs(account) {
  const { page, foreign } = await openPage();
  await page.goto(`${base}/docs`);
  await page.locator('.swagger-ui .info .title').waitFor();

  await page.locator('.auth-wrapper button.authorize').click();
  await page.locator('#oauth_username').fill(account.username);
  await page.locator('#oauth_password').fill(account.password);
  await page.getByRole('button', { name: 'Apply given OAuth2 credentials' }).click();
  // Swagger UI shows "Logout" for the OAuth2 scheme once the token request succeeded.
  await page.locator('.auth-container', { hasText: 'OAuth2PasswordBearer' })
    .getByRole('button', { name: 'Remove authorization' }).waitFor();
  await page.locator('.auth-btn-wrapper button.btn-done').first().click();
  return { page, foreign };
}

/** "Try it out" and "Execute" on `operation`; its status cell and response body. */
async function tryItOut(page, operation, shot) {
  await operation.locator('.opblock-summary').first().click();
  const button = operation.locator('button.try-out__btn');
  if ((await button.count()) > 0 && (await button.innerText()).includes('Try it out')) {
    await button.click();
  }
  await operation.locator('button.execute').click();
  const status = operation.locator('.live-responses-table .response .response-col_status');
  await status.first().waitFor();
  await page.screenshot({ path: join(shots, shot), fullPage: true });
  const body = await operation.locator('.live-responses-table .response-col_description pre').first().innerText();
  return { status: (await status.first().innerText()).trim(), body };
}

test('Swagger UI authorizes with the password form and runs GET /auth/me', async () => {
  const { page, foreign } = await authorizedDocs(user);

  const { status, body } = await tryItOut(page, page.locator('#operations-auth-me'), 'docs.png');

  assert.equal(status, '200');
  assert.match(body, new RegExp(`"username": "${user.username}"`));
  assert.deepEqual(foreign, [], 'the page asked no other host');
  await page.close();
});

test('Swagger UI authorizes the bootstrapped admin and runs GET /admin/users', async () => {
  const { page, foreign } = await authorizedDocs(admin);
  const operation = page.locator('.opblock.opblock-get')
    .filter({ has: page.locator('.opblock-summary-path[data-path="/admin/users"]') });
  assert.equal(await operation.count(), 1, 'one GET /admin/users operation');

  const { status, body } = await tryItOut(page, operation, 'docs-admin.png');

  assert.equal(status, '200');
  const listed = JSON.parse(body);
  const usernames = listed.items.map((item) => item.username);
  assert.ok(usernames.includes(admin.username), body);
  assert.ok(usernames.includes(user.username), body);
  assert.ok('next_cursor' in listed, body);
  assert.deepEqual(foreign, [], 'the page asked no other host');
  await page.close();
});

test('Swagger UI shows a plain user 403 on GET /admin/users', async () => {
  const { page } = await authorizedDocs(user);
  const operation = page.locator('.opblock.opblock-get')
    .filter({ has: page.locator('.opblock-summary-path[data-path="/admin/users"]') });

  const { status, body } = await tryItOut(page, operation, 'docs-forbidden.png');

  assert.equal(status, '403');
  assert.deepEqual(JSON.parse(body), { detail: 'Not enough permissions' });
  await page.close();
});

test('ReDoc renders the three auth operations from the bundled script', async () => {
  const { page, foreign } = await openPage();
  await page.goto(`${base}/redoc`);
  for (const summary of ['Create an account', 'Log in and get an access token', 'The current user']) {
    await page.locator('h2', { hasText: summary }).first().waitFor({ timeout: 15_000 });
  }
  await page.screenshot({ path: join(shots, 'redoc.png') });
  assert.deepEqual(foreign, [], 'the page asked no other host');
  await page.close();
});
