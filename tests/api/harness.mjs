// harness.mjs - starts the real pulse binary and drives it over HTTP.
//
// Every server listens on 127.0.0.1 port 0 with a fresh temporary data
// directory, is stopped by its PID (SIGTERM, then SIGKILL if it hangs) and its
// stderr is kept so that tests can assert a clean exit: code 0, no sanitizer
// report, no 5xx in the access log. A process 'exit' hook kills whatever a
// failing test left running and removes the temporary directories, so a
// broken test never leaks a server or a directory.
//
// The binary comes from PULSE_TEST_BIN (`make api` passes the ASan build).
//
// Profiles: by default every store and the bus are embedded (files in the
// data directory). With PULSE_TEST_PROFILE=distributed and
// PULSE_TEST_ENGINES_ENV=<engines.env written by scripts/engines.sh>, the
// servers run on PostgreSQL, Redis and NATS instead (`make api-distributed`);
// each data directory gets its own server.namespace, so servers sharing the
// engines never see each other's schemas, keys or streams, and a restart on
// the same data directory finds its data again.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export const BIN = path.resolve(here, process.env.PULSE_TEST_BIN || '../../build/asan/pulse');

// argon2id at its cheapest: hashing dominates test time otherwise.
export const CHEAP_ARGON2 = {
    PULSE_SERVICE_IDENTITY_ARGON2_M_COST: '64KiB',
    PULSE_SERVICE_IDENTITY_ARGON2_T_COST: '1',
};

export const PASSWORD = 'Correct-Horse-42';

const live = new Set(); // children not yet reaped, killed by PID on exit
const tempDirs = new Set(); // removed on exit

process.on('exit', () => {
    for (const child of live) {
        try {
            process.kill(child.pid, 'SIGKILL');
        } catch {
            /* already gone */
        }
    }
    for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

export async function makeTempDir(prefix = 'pulse-api-') {
    const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), prefix));
    tempDirs.add(dir);
    return dir;
}

export async function removeTempDir(dir) {
    await fs.promises.rm(dir, { recursive: true, force: true });
    tempDirs.delete(dir);
}

export const PROFILE = process.env.PULSE_TEST_PROFILE || 'embedded';

// The engines of the distributed profile: PULSE_DEFAULTS_SQL, _KV, _DOC and
// PULSE_BUS_URL from the engines.env that scripts/engines.sh wrote.
function engineEnv() {
    if (PROFILE !== 'distributed') return {};
    const file = process.env.PULSE_TEST_ENGINES_ENV;
    if (!file) throw new Error('PULSE_TEST_PROFILE=distributed needs PULSE_TEST_ENGINES_ENV (scripts/engines.sh writes it)');
    const env = {};
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
        const m = /^(?:export\s+)?(PULSE_(?:DEFAULTS_[A-Z]+|BUS_URL))=(.*)$/.exec(line.trim());
        if (m) env[m[1]] = m[2].replace(/^['"]|['"]$/g, '');
    }
    return env;
}

// The profile's settings for a server on dataDir (empty when embedded).
export function profileEnv(dataDir) {
    if (PROFILE !== 'distributed') return {};
    const ns = 't' + createHash('sha256').update(path.resolve(dataDir)).digest('hex').slice(0, 12);
    return { ...engineEnv(), PULSE_SERVER_NAMESPACE: ns };
}

// The environment of a child: ours without PULSE_* (a developer's settings
// must not leak into a test), plus cheap argon2, the profile's engines for
// dataDir (when given) and the caller's additions.
function childEnv(extra, dataDir) {
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PULSE_')) env[k] = v;
    env.UBSAN_OPTIONS ??= 'print_stacktrace=1';
    return { ...env, ...CHEAP_ARGON2, ...(dataDir ? profileEnv(dataDir) : {}), ...extra };
}

function binMissing() {
    return new Error(`pulse binary not found at ${BIN}; build it (make B=build build/asan/pulse) or set PULSE_TEST_BIN`);
}

// ---- the server ------------------------------------------------------------------

export class Server {
    constructor({ dataDir, env = {}, args = [] }) {
        this.dataDir = dataDir;
        this.env = env;
        this.args = args;
        this.stdout = '';
        this.stderr = '';
        this.port = 0;
        this.result = null; // {code, signal} once exited
    }

    get base() {
        return `http://127.0.0.1:${this.port}`;
    }

    get pid() {
        return this.child.pid;
    }

    get running() {
        return this.result === null;
    }

    start(timeoutMs = 20000) {
        if (!fs.existsSync(BIN)) return Promise.reject(binMissing());
        const args = ['serve', '--listen', '127.0.0.1:0', '--data', this.dataDir, ...this.args];
        const child = spawn(BIN, args, { env: childEnv(this.env, this.dataDir), stdio: ['ignore', 'pipe', 'pipe'] });
        this.child = child;
        live.add(child);
        this.exited = new Promise((resolve) => {
            child.on('close', (code, signal) => {
                live.delete(child);
                this.result = { code, signal };
                resolve(this.result);
            });
        });
        child.stdout.setEncoding('utf8');
        child.stderr.setEncoding('utf8');
        child.stdout.on('data', (d) => (this.stdout += d));
        return new Promise((resolve, reject) => {
            let pending = '';
            const timer = setTimeout(() => {
                this.kill();
                reject(new Error(`pulse did not report "listening" within ${timeoutMs} ms\n${this.stderr}`));
            }, timeoutMs);
            child.on('error', (e) => {
                clearTimeout(timer);
                reject(e.code === 'ENOENT' ? binMissing() : e);
            });
            child.stderr.on('data', (d) => {
                this.stderr += d;
                if (this.port) return;
                pending += d;
                let nl;
                while ((nl = pending.indexOf('\n')) >= 0) {
                    const line = pending.slice(0, nl);
                    pending = pending.slice(nl + 1);
                    let rec;
                    try {
                        rec = JSON.parse(line);
                    } catch {
                        continue;
                    }
                    if (rec.msg === 'listening' && rec.port) {
                        this.port = rec.port;
                        clearTimeout(timer);
                        resolve(this);
                        return;
                    }
                }
            });
            this.exited.then(({ code, signal }) => {
                if (this.port) return;
                clearTimeout(timer);
                reject(new Error(`pulse exited (code ${code}, signal ${signal}) before listening\n${this.stderr}`));
            });
        });
    }

    signal(sig = 'SIGTERM') {
        if (this.running) process.kill(this.child.pid, sig);
    }

    kill() {
        try {
            if (this.running) process.kill(this.child.pid, 'SIGKILL');
        } catch {
            /* already gone */
        }
    }

    // SIGTERM by PID; resolves with {code, signal} when the process has exited
    // and its output is drained. SIGKILL (and a rejection) if it hangs.
    async stop(timeoutMs = 20000) {
        if (!this.running) return this.result;
        this.signal('SIGTERM');
        let timer;
        const hang = new Promise((_, reject) => {
            timer = setTimeout(() => {
                this.kill();
                reject(new Error(`pulse ignored SIGTERM for ${timeoutMs} ms\n${tail(this.stderr)}`));
            }, timeoutMs);
        });
        try {
            return await Promise.race([this.exited, hang]);
        } finally {
            clearTimeout(timer);
        }
    }

    // Stops and asserts the exit was clean: the test for "never a crash".
    async stopClean() {
        const r = await this.stop();
        assertCleanExit(r, this.stderr);
        return r;
    }

    // For after(): stop whatever is still running, never throw.
    async cleanup() {
        try {
            await this.stop(10000);
        } catch {
            this.kill();
            await this.exited;
        }
    }

    logLines() {
        return parseLogLines(this.stderr);
    }

    // ---- HTTP -----------------------------------------------------------------------

    async request(method, urlPath, { json, body, headers, token } = {}) {
        const h = new Headers(headers || {});
        if (json !== undefined) {
            body = JSON.stringify(json);
            if (!h.has('content-type')) h.set('content-type', 'application/json');
        }
        if (token) h.set('authorization', `Bearer ${token}`);
        const res = await fetch(this.base + urlPath, { method, headers: h, body, redirect: 'manual' });
        const text = await res.text();
        return { status: res.status, headers: res.headers, text, body: parseJsonBody(res.headers.get('content-type'), text) };
    }

    get(p, opts) {
        return this.request('GET', p, opts);
    }

    post(p, json, opts = {}) {
        return this.request('POST', p, { ...opts, json });
    }

    patch(p, json, opts = {}) {
        return this.request('PATCH', p, { ...opts, json });
    }

    // ---- identity ---------------------------------------------------------------------

    async register(overrides = {}) {
        const input = newUserInput(overrides);
        const res = await this.post('/api/v1/auth/register', input);
        assert.equal(res.status, 201, `register ${input.username}: ${res.text}`);
        return { input, user: res.body };
    }

    async login(login, password = PASSWORD) {
        const res = await this.post('/api/v1/auth/login', { login, password });
        assert.equal(res.status, 200, `login ${login}: ${res.text}`);
        return res.body;
    }

    // A registered, logged-in user: {input, user, token}.
    async session(overrides = {}) {
        const { input, user } = await this.register(overrides);
        const { token } = await this.login(input.username, input.password);
        return { input, user, token };
    }

    async assertHealthy() {
        const res = await this.get('/healthz');
        assert.equal(res.status, 200, res.text);
        assert.deepEqual(res.body, { status: 'ok' });
    }
}

// Starts a server on a fresh temp dir (or dataDir when given); the dir is
// removed by cleanup unless it was passed in.
export async function startServer({ dataDir, env = {}, args = [] } = {}) {
    const dir = dataDir ?? (await makeTempDir());
    const srv = new Server({ dataDir: dir, env, args });
    const ownDir = !dataDir;
    const cleanup = srv.cleanup.bind(srv);
    srv.cleanup = async () => {
        await cleanup();
        if (ownDir) await removeTempDir(dir);
    };
    try {
        await srv.start();
    } catch (e) {
        await srv.cleanup();
        throw e;
    }
    return srv;
}

// Runs a pulse command to completion (e.g. `serve` with bad config) and
// returns {code, signal, stdout, stderr}. Killed by PID after timeoutMs.
export function runPulse(args, { env = {}, timeoutMs = 20000 } = {}) {
    if (!fs.existsSync(BIN)) return Promise.reject(binMissing());
    const d = args.indexOf('--data'); // CLI commands on a server's data use its engines too
    const dataDir = d >= 0 ? args[d + 1] : undefined;
    return new Promise((resolve, reject) => {
        const child = spawn(BIN, args, { env: childEnv(env, dataDir), stdio: ['ignore', 'pipe', 'pipe'] });
        live.add(child);
        let stdout = '';
        let stderr = '';
        let timedOut = false;
        child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
        child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
        const timer = setTimeout(() => {
            timedOut = true;
            process.kill(child.pid, 'SIGKILL');
        }, timeoutMs);
        child.on('error', (e) => {
            clearTimeout(timer);
            live.delete(child);
            reject(e);
        });
        child.on('close', (code, signal) => {
            clearTimeout(timer);
            live.delete(child);
            if (timedOut) reject(new Error(`pulse ${args.join(' ')} ran over ${timeoutMs} ms\n${stderr}`));
            else resolve({ code, signal, stdout, stderr });
        });
    });
}

// ---- assertions ------------------------------------------------------------------------

const SANITIZER = /AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|ThreadSanitizer|runtime error:/;

function tail(s, n = 4000) {
    return s.length > n ? '…' + s.slice(-n) : s;
}

export function parseLogLines(stderr) {
    const out = [];
    for (const line of stderr.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
            out.push(JSON.parse(line));
        } catch {
            /* a sanitizer report or a torn line: SANITIZER catches the former */
        }
    }
    return out;
}

export function assertNoSanitizerReport(stderr) {
    const m = SANITIZER.exec(stderr);
    assert.equal(m, null, `sanitizer report in stderr:\n${m ? tail(stderr.slice(m.index - 200), 6000) : ''}`);
}

export function assertCleanExit({ code, signal }, stderr) {
    assertNoSanitizerReport(stderr);
    assert.equal(signal, null, `pulse died of ${signal}\n${tail(stderr)}`);
    assert.equal(code, 0, `pulse exited ${code}\n${tail(stderr)}`);
    const lines = parseLogLines(stderr);
    const fivexx = lines.filter((l) => l.msg === 'access' && l.status >= 500);
    assert.deepEqual(fivexx, [], 'no request may end in a 5xx');
    const errors = lines.filter((l) => l.level === 'error');
    assert.deepEqual(errors, [], 'no error-level log lines');
    assert.ok(lines.some((l) => l.msg === 'stopped'), 'pulse logs "stopped" on a graceful exit');
}

// {"error":{"code","message","fields"}} with the given status; never a 5xx.
export function assertError(res, status, code) {
    assert.ok(res.status < 500, `a 5xx (${res.status}): ${res.text}`);
    assert.equal(res.status, status, `status ${res.status}, body: ${res.text}`);
    const ct = typeof res.headers.get === 'function' ? res.headers.get('content-type') : res.headers['content-type'];
    assert.match(ct || '', /^application\/json/, `content-type of an error: ${ct}`);
    assert.ok(res.body && typeof res.body === 'object', `an error body is JSON: ${res.text}`);
    const err = res.body.error;
    assert.ok(err && typeof err === 'object', `error object: ${res.text}`);
    assert.equal(typeof err.code, 'string');
    if (code) assert.equal(err.code, code, res.text);
    assert.equal(typeof err.message, 'string');
    assert.ok(err.message.length > 0, 'error message not empty');
    assert.ok(err.fields && typeof err.fields === 'object' && !Array.isArray(err.fields), `fields object: ${res.text}`);
    return err;
}

export function parseJsonBody(contentType, text) {
    if (!/json/.test(contentType || '') || !text) return undefined;
    try {
        return JSON.parse(text);
    } catch {
        return undefined;
    }
}

// ---- inputs -----------------------------------------------------------------------------

let seq = 0;

// A fresh username (valid: a-z, 0-9, _ ; at most 30).
export function uniq(prefix = 'u') {
    seq += 1;
    return `${prefix}_${seq}_${randomBytes(4).toString('hex')}`.slice(0, 30);
}

export function newUserInput(overrides = {}) {
    const username = overrides.username ?? uniq();
    return {
        email: `${username}@example.org`,
        username,
        password: PASSWORD,
        display_name: `User ${username}`,
        ...overrides,
    };
}

// ---- raw HTTP ------------------------------------------------------------------------------

function parseRaw(buf) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return null;
    const head = buf.subarray(0, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]);
    if (!m) return null;
    const headers = {};
    for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const after = buf.subarray(end + 4);
    const cl = headers['content-length'] !== undefined ? Number(headers['content-length']) : null;
    const bodyBuf = cl !== null ? after.subarray(0, cl) : after;
    const rest = cl !== null ? after.subarray(cl) : Buffer.alloc(0);
    return { status: Number(m[1]), headers, bodyBuf, rest, complete: cl !== null && after.length >= cl };
}

// Writes bytes on a fresh TCP connection and reads one response (or, with
// untilClose, everything until the server closes). Resolves (never rejects)
// with {status, headers, text, body, rest, raw, error}: `rest` is what follows
// the first response; a server that resets the connection after answering
// still yields its answer.
export function rawRequest(port, data, { localAddress, timeoutMs = 15000, untilClose = false } = {}) {
    return new Promise((resolve) => {
        const chunks = [];
        let done = false;
        const sock = net.connect({ host: '127.0.0.1', port, localAddress });
        const finish = (error) => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            sock.destroy();
            const buf = Buffer.concat(chunks);
            const p = parseRaw(buf);
            const text = p ? p.bodyBuf.toString('utf8') : '';
            resolve({
                status: p ? p.status : 0,
                headers: p ? p.headers : {},
                text,
                body: p ? parseJsonBody(p.headers['content-type'], text) : undefined,
                rest: p ? p.rest.toString('latin1') : '',
                raw: buf.toString('latin1'),
                error: error ? error.code || error.message : null,
            });
        };
        const timer = setTimeout(() => finish(new Error('timeout')), timeoutMs);
        sock.on('data', (d) => {
            chunks.push(d);
            if (untilClose) return;
            const p = parseRaw(Buffer.concat(chunks));
            if (p && p.complete) finish(null);
        });
        sock.on('error', (e) => finish(e));
        sock.on('close', () => finish(null));
        sock.on('connect', () => {
            for (const part of Array.isArray(data) ? data : [data]) sock.write(part);
        });
    });
}

// Resolves with the connect error code ('ECONNREFUSED', ...) or null if the
// connection was accepted.
export function tryConnect(port) {
    return new Promise((resolve) => {
        const sock = net.connect({ host: '127.0.0.1', port });
        sock.on('connect', () => {
            sock.destroy();
            resolve(null);
        });
        sock.on('error', (e) => resolve(e.code || e.message));
    });
}

// node:http request, for what fetch cannot do (choosing the local address).
export function httpRequest(port, { method = 'GET', path: p = '/', headers = {}, json, localAddress } = {}) {
    return new Promise((resolve, reject) => {
        const body = json !== undefined ? JSON.stringify(json) : undefined;
        const h = { ...headers };
        if (body !== undefined) {
            h['content-type'] ??= 'application/json';
            h['content-length'] = Buffer.byteLength(body);
        }
        const req = http.request({ host: '127.0.0.1', port, method, path: p, headers: h, localAddress, agent: false }, (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (d) => (text += d));
            res.on('end', () =>
                resolve({ status: res.statusCode, headers: res.headers, text, body: parseJsonBody(res.headers['content-type'], text) }),
            );
        });
        req.on('error', reject);
        req.end(body);
    });
}
