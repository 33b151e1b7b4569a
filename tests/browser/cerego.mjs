// What both browser tests need: the cerego binary started in a directory of its own, and
// headless Chromium. Not a test file (scripts/test names the test files).
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const root = resolve(import.meta.dirname, '..', '..');
const binary = process.env.CEREGO_BIN ?? join(root, 'target', 'debug', 'cerego');
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Starts `cerego` in `dir` with a clean environment (PATH, 127.0.0.1, JSON logs, bcrypt cost 4,
 * a test signing key) plus `env`, and waits (at most 30 s) for its "listening" log line.
 * Resolves to the process and its base URL.
 */
export async function startCerego(dir, env = {}) {
  const server = spawn(binary, [], {
    cwd: dir,
    env: {
      PATH: process.env.PATH,
      HOST: '127.0.0.1',
      PORT: '0',
      BCRYPT_COST: '4',
      LOG_FORMAT: 'json',
      JWT_SECRET_KEY: 'browser-test-secret-key-of-32-bytes-or-more',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const base = await new Promise((resolveAddress, reject) => {
    const timer = setTimeout(() => reject(new Error('cerego did not start in 30 s')), 30_000);
    server.on('exit', (code) => reject(new Error(`cerego exited with ${code}`)));
    createInterface({ input: server.stdout }).on('line', (line) => {
      try {
        const entry = JSON.parse(line);
        if (entry.message === 'listening') {
          clearTimeout(timer);
          resolveAddress(`http://${entry.address}`);
        }
      } catch {
        // not a JSON log line
      }
    });
  });
  return { server, base };
}

/** Debian's Chromium, headless, with nothing that calls home. */
export function launchChromium() {
  return chromium.launch({
    executablePath: chromiumPath,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}
