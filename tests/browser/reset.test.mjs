// The password reset as a person goes through it: cerego sends the reset mail to a real SMTP
// server (a small sink started here, speaking SMTP over TCP), the link is taken from the mail
// received, headless Chromium opens it, fills in the new password twice and submits the form
// (no JavaScript needed), and sees the success page; then the new password logs in. The
// verification link of the sign-up mail is followed the same way, first (a reset also counts as
// verification).
// Run by scripts/test after the Rust suite (it needs target/debug/cerego and Debian's chromium).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium, root, startCerego } from './cerego.mjs';

const shots = join(root, 'target', 'browser');
const user = { email: 'ada@example.com', username: 'ada_reset', password: 'correct horse battery' };
const newPassword = 'a brand new passphrase from the browser';
// Only bounds the waits, so that a broken build fails instead of hanging.
const MAIL_WAIT_MS = 30_000;

/** A port on 127.0.0.1 nobody listens on (it was free a moment ago). */
function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

/**
 * A minimal SMTP server: greeting, EHLO/HELO, MAIL, RCPT, DATA (dot-stuffing undone), RSET,
 * NOOP, QUIT; anything else 502. No TLS, no AUTH. Keeps every message it accepts.
 */
function startSmtpSink() {
  const messages = [];
  const waiters = [];
  const notify = () => {
    for (const waiter of waiters.splice(0)) waiter();
  };
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buffer = Buffer.alloc(0);
    let inData = false;
    let data = [];
    let envelope = { from: null, to: [] };
    const reply = (text) => socket.write(`${text}\r\n`);
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      let end;
      while ((end = buffer.indexOf('\n')) !== -1) {
        const line = buffer.subarray(0, end + 1).toString('latin1').replace(/\r?\n$/, '');
        buffer = buffer.subarray(end + 1);
        if (inData) {
          if (line === '.') {
            inData = false;
            messages.push({ from: envelope.from, to: envelope.to, raw: data.join('\r\n') + '\r\n' });
            envelope = { from: null, to: [] };
            data = [];
            reply('250 2.0.0 OK queued');
            notify();
          } else {
            data.push(line.startsWith('.') ? line.slice(1) : line);
          }
          continue;
        }
        const upper = line.toUpperCase();
        const verb = upper.split(/\s+/)[0];
        if (verb === 'EHLO') {
          envelope = { from: null, to: [] };
          socket.write('250-sink.test greets you\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n');
        } else if (verb === 'HELO') {
          envelope = { from: null, to: [] };
          reply('250 sink.test');
        } else if (upper.startsWith('MAIL FROM:')) {
          const match = /<([^>]*)>/.exec(line);
          if (match) {
            envelope = { from: match[1], to: [] };
            reply('250 2.1.0 OK');
          } else reply('501 5.5.4 Syntax: MAIL FROM:<address>');
        } else if (upper.startsWith('RCPT TO:')) {
          const match = /<([^>]*)>/.exec(line);
          if (envelope.from === null) reply('503 5.5.1 MAIL first');
          else if (!match) reply('501 5.5.4 Syntax: RCPT TO:<address>');
          else {
            envelope.to.push(match[1]);
            reply('250 2.1.5 OK');
          }
        } else if (verb === 'DATA') {
          if (envelope.to.length === 0) reply('503 5.5.1 RCPT first');
          else {
            inData = true;
            reply('354 End data with <CR><LF>.<CR><LF>');
          }
        } else if (verb === 'RSET') {
          envelope = { from: null, to: [] };
          reply('250 2.0.0 OK');
        } else if (verb === 'NOOP') {
          reply('250 2.0.0 OK');
        } else if (verb === 'QUIT') {
          reply('221 2.0.0 Bye');
          socket.end();
        } else {
          reply('502 5.5.2 Command not implemented');
        }
      }
    });
    reply('220 sink.test ESMTP ready');
  });
  return new Promise((resolveSink, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolveSink({
        port: server.address().port,
        messages,
        /** Waits for a message that satisfies `pred` (bounded); returns it. */
        async waitFor(pred) {
          const deadline = Date.now() + MAIL_WAIT_MS;
          for (;;) {
            const found = messages.find(pred);
            if (found) return found;
            const left = deadline - Date.now();
            if (left <= 0) throw new Error(`no matching mail among ${messages.length} received`);
            await new Promise((wake) => {
              const timer = setTimeout(wake, left);
              waiters.push(() => {
                clearTimeout(timer);
                wake();
              });
            });
          }
        },
        close() {
          for (const socket of sockets) socket.destroy();
          return new Promise((done) => server.close(() => done()));
        },
      });
    });
  });
}

/** Unfolds and splits a header block into [name (lower case), value] pairs. */
function parseHeaders(block) {
  return block
    .replace(/\r?\n[ \t]+/g, ' ')
    .split(/\r?\n/)
    .filter((line) => line.includes(':'))
    .map((line) => {
      const colon = line.indexOf(':');
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
    });
}

function decodeBody(body, encoding) {
  switch ((encoding ?? '').toLowerCase()) {
    case 'base64':
      return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
    case 'quoted-printable': {
      const bytes = body
        .replace(/=\r?\n/g, '')
        .replace(/=([0-9A-Fa-f]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
      return Buffer.from(bytes, 'latin1').toString('utf8');
    }
    default:
      return body;
  }
}

/** The leaf parts of a MIME entity as { type, text }, bodies decoded. */
function mimeParts(entity) {
  const split = entity.search(/\r?\n\r?\n/);
  const headerBlock = split === -1 ? entity : entity.slice(0, split);
  const body = split === -1 ? '' : entity.slice(split).replace(/^\r?\n\r?\n/, '');
  const headers = new Map(parseHeaders(headerBlock));
  const type = (headers.get('content-type') ?? 'text/plain').toLowerCase();
  if (type.startsWith('multipart/')) {
    const boundary = /boundary="?([^";]+)"?/i.exec(headers.get('content-type'))?.[1];
    assert.ok(boundary, `a boundary in ${headers.get('content-type')}`);
    return body
      .split(`--${boundary}`)
      .slice(1)
      .filter((part) => !part.startsWith('--'))
      .flatMap((part) => mimeParts(part.replace(/^\r?\n/, '')));
  }
  return [{ type: type.split(';')[0].trim(), text: decodeBody(body, headers.get('content-transfer-encoding')) }];
}

let server;
let base;
let sink;
let browser;
let dir;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cerego-browser-reset-'));
  mkdirSync(shots, { recursive: true });
  sink = await startSmtpSink();
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  ({ server } = await startCerego(dir, {
    PORT: String(port),
    PUBLIC_BASE_URL: base,
    SMTP_URL: `smtp://127.0.0.1:${sink.port}`,
    MAIL_RETRY_MAX_SECS: '1',
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
  await sink?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function login(password) {
  const response = await fetch(`${base}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: user.username, password }),
  });
  return response.status;
}

test('the verification link of the sign-up mail opens a page whose button confirms the address', async () => {
  const mail = await sink.waitFor((m) => m.to.includes(user.email) && m.raw.includes('crg_ev_'));
  const text = mimeParts(mail.raw).find((p) => p.type === 'text/plain');
  const link = /https?:\/\/[^\s<>"]+token=crg_ev_[A-Za-z0-9_-]+/.exec(text.text)?.[0];
  assert.ok(link, `a verification link in: ${text.text}`);

  const verified = async () => {
    const response = await fetch(`${base}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: user.username, password: user.password }),
    });
    assert.equal(response.status, 200);
    const { access_token: access } = await response.json();
    const me = await fetch(`${base}/auth/me`, { headers: { authorization: `Bearer ${access}` } });
    return (await me.json()).email_verified;
  };
  assert.equal(await verified(), false);

  const page = await browser.newPage();
  await page.goto(link);
  assert.equal(await verified(), false, 'opening the page confirms nothing');
  const button = page.getByRole('button', { name: 'Confirm my email' });
  await button.waitFor();
  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST'),
    button.click(),
  ]);
  assert.equal(answer.status(), 200);
  await page.waitForLoadState();
  await page.screenshot({ path: join(shots, 'verify-done.png'), fullPage: true });
  await page.close();

  assert.equal(await verified(), true);
});

test('the reset link of the mail received opens a form that sets a new password', async () => {
  const forgot = await fetch(`${base}/auth/password/forgot`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: user.email }),
  });
  assert.equal(forgot.status, 202);

  const mail = await sink.waitFor((m) => m.to.includes(user.email) && m.raw.includes('crg_pr_'));
  const parts = mimeParts(mail.raw);
  const text = parts.find((p) => p.type === 'text/plain');
  assert.ok(text, `a text part among ${parts.map((p) => p.type)}`);
  assert.ok(parts.some((p) => p.type === 'text/html'), 'an HTML part');
  const link = /https?:\/\/[^\s<>"]+token=crg_pr_[A-Za-z0-9_-]+/.exec(text.text)?.[0];
  assert.ok(link, `a reset link in: ${text.text}`);
  assert.ok(link.startsWith(`${base}/auth/password/reset?`), `the link uses PUBLIC_BASE_URL: ${link}`);

  const page = await browser.newPage();
  const foreign = [];
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (!['data:', 'blob:'].includes(url.protocol) && url.origin !== base) foreign.push(request.url());
  });
  const opened = await page.goto(link);
  assert.equal(opened.status(), 200);
  const fields = page.locator('form input[type="password"]');
  assert.equal(await fields.count(), 2, 'the new password, twice');
  await fields.nth(0).fill(newPassword);
  await fields.nth(1).fill(newPassword);
  await page.screenshot({ path: join(shots, 'reset-form.png'), fullPage: true });

  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/auth/password/reset'),
    page.locator('form [type="submit"], form button').first().click(),
  ]);
  assert.equal(answer.status(), 200);
  assert.match(answer.headers()['content-type'] ?? '', /^text\/html/);
  await page.waitForLoadState();
  await page.screenshot({ path: join(shots, 'reset-done.png'), fullPage: true });
  assert.equal(await page.locator('input[type="password"]').count(), 0, 'the success page asks for nothing');
  assert.deepEqual(foreign, [], 'the pages asked no other host');
  await page.close();

  assert.equal(await login(newPassword), 200, 'the new password logs in');
  assert.equal(await login(user.password), 401, 'the old one does not');
});

test('the form page works with JavaScript off', async () => {
  const forgot = await fetch(`${base}/auth/password/forgot`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: user.email }),
  });
  assert.equal(forgot.status, 202);
  const resets = () => sink.messages.filter((m) => m.to.includes(user.email) && m.raw.includes('crg_pr_'));
  const before = resets().length;
  await sink.waitFor(() => resets().length > before);
  const mail = resets()[before];
  const text = mimeParts(mail.raw).find((p) => p.type === 'text/plain');
  const link = /https?:\/\/[^\s<>"]+token=crg_pr_[A-Za-z0-9_-]+/.exec(text.text)?.[0];
  assert.ok(link);

  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(link);
  const fields = page.locator('form input[type="password"]');
  const third = 'a third passphrase without scripts';
  await fields.nth(0).fill(third);
  await fields.nth(1).fill(third);
  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST'),
    page.locator('form [type="submit"], form button').first().click(),
  ]);
  assert.equal(answer.status(), 200);
  await context.close();
  assert.equal(await login(third), 200);
});
