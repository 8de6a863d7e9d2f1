// bus-harness.mjs - helpers for the event backbone's black-box tests, on top
// of harness.mjs (which starts servers and runs one-shot commands):
//
//   - a server hosting identity, audit and the testkit fixture, with fast
//     retries (PULSE_BUS_RETRY_BASE=20ms, _MAX=200ms) and max_deliver 5;
//   - `pulse events tail` as a long-running child: lines parsed as
//     CloudEvents, waited on by predicate, stopped by PID with SIGTERM and
//     asserted to exit 0 without a sanitizer report;
//   - reading the whole log up to a sentinel event (never "until quiet");
//   - `pulse dlq ...`, /metrics, the testkit and audit read APIs;
//   - the JSON Schemas of schemas/events compiled with ajv (draft 2020-12).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

import { BIN, CHEAP_ARGON2, PROFILE, assertNoSanitizerReport, profileEnv, runPulse, startServer } from './harness.mjs';

// The embedded profile keeps the log in <data>/bus.db (SQLite) and the stores
// in <data>/<service>.db: the checks that look at those files run only there.
export const EMBEDDED = PROFILE === 'embedded';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SCHEMA_DIR = path.resolve(here, '../../schemas/events');

export const SERVICES = 'identity,audit,testkit';
export const MAX_DELIVER = 5;
export const DEMO_ADMIN = { login: 'admin', password: 'campus-demo-1' };

export const BUS_ENV = {
    PULSE_BUS_RETRY_BASE: '20ms',
    PULSE_BUS_RETRY_MAX: '200ms',
    PULSE_BUS_MAX_DELIVER: String(MAX_DELIVER),
    // existence checks log in with guessed outcomes: never rate-limit them
    PULSE_SERVICE_IDENTITY_LOGIN_MAX_FAILURES: '1000',
    PULSE_SERVICE_IDENTITY_LOGIN_MAX_FAILURES_IP: '100000',
};

export function startBusServer({ dataDir, demo = false, env = {}, services = SERVICES } = {}) {
    const args = ['--services', services];
    if (demo) args.push('--demo');
    return startServer({ dataDir, env: { ...BUS_ENV, ...env }, args });
}

// `pulse <args> --data dir` to completion with the bus settings.
export function pulseCmd(dataDir, args, { env = {}, timeoutMs = 30000 } = {}) {
    return runPulse([...args, '--data', dataDir], { env: { ...BUS_ENV, ...env }, timeoutMs });
}

// ---- polling -------------------------------------------------------------------------------

// Calls fn until it returns a truthy value; fails with describe() of the last
// value after timeoutMs.
// These bound liveness, not speed: on the distributed profile (three more
// servers on the same two cores, under ASan) they get three times longer.
const SLACK = EMBEDDED ? 1 : 3;

export async function waitFor(fn, { timeoutMs = 10000, intervalMs = 25, what = 'condition', describe } = {}) {
    timeoutMs *= SLACK;
    const deadline = Date.now() + timeoutMs;
    let last;
    for (;;) {
        last = await fn();
        if (last) return last;
        if (Date.now() > deadline) {
            const detail = describe ? await describe() : '';
            assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}${detail ? `\n${detail}` : ''}`);
        }
        await sleep(intervalMs);
    }
}

// ---- events tail -----------------------------------------------------------------------------

const tails = new Set();
process.on('exit', () => {
    for (const t of tails) {
        try {
            process.kill(t.child.pid, 'SIGKILL');
        } catch {
            /* gone */
        }
    }
});

function childEnv(dataDir) {
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PULSE_')) env[k] = v;
    return { ...env, ...CHEAP_ARGON2, ...profileEnv(dataDir), ...BUS_ENV };
}

// A running `pulse events tail [pattern] [--from-start] --data dir`.
export class Tail {
    constructor(dataDir, { pattern, fromStart = false } = {}) {
        const args = ['events', 'tail'];
        if (pattern) args.push(pattern);
        if (fromStart) args.push('--from-start');
        args.push('--data', dataDir);
        this.args = args;
        this.events = []; // parsed CloudEvents, in output order
        this.received = []; // Date.now() when each line arrived
        this.badLines = [];
        this.stderr = '';
        this.result = null;
        this.startedAt = Date.now();
        this.child = spawn(BIN, args, { env: childEnv(dataDir), stdio: ['ignore', 'pipe', 'pipe'] });
        tails.add(this);
        this.exited = new Promise((resolve) => {
            this.child.on('close', (code, signal) => {
                tails.delete(this);
                this.result = { code, signal };
                resolve(this.result);
            });
        });
        this.child.on('error', (e) => {
            this.stderr += `spawn error: ${e.message}\n`;
        });
        let pending = '';
        this.child.stdout.setEncoding('utf8').on('data', (d) => {
            pending += d;
            let nl;
            while ((nl = pending.indexOf('\n')) >= 0) {
                const line = pending.slice(0, nl);
                pending = pending.slice(nl + 1);
                try {
                    const ev = JSON.parse(line);
                    assert.ok(ev && typeof ev === 'object' && !Array.isArray(ev));
                    this.events.push(ev);
                    this.received.push(Date.now());
                } catch {
                    this.badLines.push(line);
                }
            }
        });
        this.child.stderr.setEncoding('utf8').on('data', (d) => (this.stderr += d));
    }

    // Resolves when pred(events) is truthy; fails after timeoutMs.
    async waitFor(pred, { timeoutMs = 10000, what = 'events' } = {}) {
        return waitFor(
            () => {
                if (this.result) assert.fail(`events tail exited early (${JSON.stringify(this.result)})\n${this.stderr}`);
                return pred(this.events);
            },
            { timeoutMs, what, describe: () => `got ${this.events.length} events; stderr: ${this.stderr.slice(-2000)}` },
        );
    }

    // SIGTERM by PID; asserts exit 0, no sanitizer report, every line a JSON object.
    async stop() {
        // A SIGTERM that arrives before the tail has installed its handler
        // (while it opens the log) kills it by the signal: when it has not
        // printed anything yet, give it a second of life first.
        const age = Date.now() - this.startedAt;
        if (!this.result && this.events.length === 0 && age < 1000) await sleep(1000 - age);
        if (!this.result) {
            try {
                process.kill(this.child.pid, 'SIGTERM');
            } catch {
                /* gone */
            }
        }
        let timer;
        const hang = new Promise((_, reject) => {
            timer = setTimeout(() => {
                try {
                    process.kill(this.child.pid, 'SIGKILL');
                } catch {
                    /* gone */
                }
                reject(new Error(`events tail ignored SIGTERM\n${this.stderr}`));
            }, 10000);
        });
        try {
            await Promise.race([this.exited, hang]);
        } finally {
            clearTimeout(timer);
        }
        assertNoSanitizerReport(this.stderr);
        assert.deepEqual(this.result, { code: 0, signal: null }, `events tail exit: ${this.stderr}`);
        assert.deepEqual(this.badLines, [], 'every line of events tail is one JSON object');
        return this.events;
    }

    // For after(): never throws.
    async cleanup() {
        if (this.result) return;
        try {
            process.kill(this.child.pid, 'SIGKILL');
        } catch {
            /* gone */
        }
        await this.exited;
    }
}

// The log from the start (pattern default: every non-dead-letter event), read
// with `pulse events tail --from-start` until pred(events) holds. Callers make
// pred wait for a sentinel committed after everything they want to see, so
// that "nothing else is there" is a real check and not a timing guess.
export async function readLog(dataDir, pred, { pattern, timeoutMs = 15000 } = {}) {
    const t = new Tail(dataDir, { pattern, fromStart: true });
    try {
        await t.waitFor(pred, { timeoutMs, what: `log events (${pattern || '*'})` });
    } catch (e) {
        await t.cleanup();
        throw e;
    }
    return t.stop();
}

// ---- dead letters -------------------------------------------------------------------------------

export async function dlqList(dataDir) {
    const r = await pulseCmd(dataDir, ['dlq', 'ls']);
    assertNoSanitizerReport(r.stderr);
    assert.equal(r.code, 0, `pulse dlq ls: ${r.stderr}`);
    return r.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l));
}

export async function dlq(dataDir, ...args) {
    const r = await pulseCmd(dataDir, ['dlq', ...args]);
    assertNoSanitizerReport(r.stderr);
    return r;
}

// ---- the log's write lock ---------------------------------------------------------------------

// Holds the write lock of <data>/bus.db from an outside sqlite3 process
// (BEGIN IMMEDIATE), so that every write to the log waits: publishing,
// consumers' cursor (ack) writes, leases, dead letters. Reads go on (WAL).
// Resolves once the lock is held; release() rolls back and ends sqlite3.
export async function holdBusWriteLock(dataDir) {
    const child = spawn('sqlite3', [path.join(dataDir, 'bus.db')], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let errText = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (errText += d));
    const exited = new Promise((resolve) => child.on('close', (code) => resolve(code)));
    child.stdin.write('.timeout 10000\nBEGIN IMMEDIATE;\nSELECT \'locked\';\n');
    await waitFor(() => out.includes('locked') || errText, { what: 'the bus.db write lock' });
    assert.equal(errText, '', `sqlite3: ${errText}`);
    return {
        async release() {
            child.stdin.end('ROLLBACK;\n.quit\n');
            await exited;
        },
    };
}

// ---- HTTP read models -------------------------------------------------------------------------------

export async function metrics(srv) {
    const res = await srv.get('/metrics');
    assert.equal(res.status, 200, res.text);
    const out = new Map();
    for (const line of res.text.split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const m = /^(\S+?)(\{.*\})? (\S+)$/.exec(line);
        if (m) out.set(m[1] + (m[2] || ''), Number(m[3]));
    }
    return out;
}

export async function effects(srv) {
    const res = await srv.get('/api/v1/testkit/effects');
    assert.equal(res.status, 200, res.text);
    return res.body.items;
}

export async function tally(srv) {
    const res = await srv.get('/api/v1/testkit/tally');
    assert.equal(res.status, 200, res.text);
    return res.body.items;
}

// POST /api/v1/testkit/events; asserts 201 and returns the ids.
export async function emit(srv, body, headers) {
    const res = await srv.post('/api/v1/testkit/events', body, { headers });
    assert.equal(res.status, 201, `emit ${JSON.stringify(body)}: ${res.status} ${res.text}`);
    assert.ok(Array.isArray(res.body.ids), res.text);
    assert.equal(res.body.ids.length, body.count ?? 1);
    return res.body.ids;
}

export async function adminToken(srv) {
    const r = await srv.post('/api/v1/auth/login', DEMO_ADMIN);
    assert.equal(r.status, 200, `demo admin login: ${r.text}`);
    return r.body.token;
}

// The whole audit trail, newest first, following next_cursor.
export async function auditAll(srv, token, limit = 500) {
    const items = [];
    let cursor = null;
    for (let pages = 0; pages < 1000; pages++) {
        const q = `/api/v1/admin/audit?limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`;
        const r = await srv.get(q, { token });
        assert.equal(r.status, 200, `${q}: ${r.text}`);
        items.push(...r.body.items);
        cursor = r.body.next_cursor;
        if (!cursor) return items;
    }
    assert.fail('audit paging does not end');
}

// ---- trace context -------------------------------------------------------------------------------

export function newTraceparent() {
    return `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`;
}

export const traceId = (tp) => tp.split('-')[1];

// ---- schemas -------------------------------------------------------------------------------

// Compiles every schema in schemas/events (strict mode: unknown keywords and
// type-less object keywords are errors) and returns {ajv, files, validatorFor}.
export function loadSchemas() {
    const ajv = new Ajv2020({ strict: true, allErrors: true });
    addFormats(ajv);
    const files = fs.readdirSync(SCHEMA_DIR).filter((f) => f.endsWith('.json'));
    const schemas = {};
    for (const f of files) {
        schemas[f] = JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, f), 'utf8'));
        ajv.addSchema(schemas[f], f);
    }
    const compiled = {};
    for (const f of files) compiled[f] = ajv.getSchema(f); // compiles: throws on a bad schema
    // The schema an event must validate against: dead letters -> dlq.json, the
    // test fixture's events -> testkit.json, everything else -> <type>.json
    // (which must exist: every type has a schema).
    function validatorFor(ev) {
        const type = String(ev.type);
        const name = type.endsWith('.dlq') ? 'dlq.json' : type.startsWith('pl.testkit.') ? 'testkit.json' : `${type}.json`;
        return { name, validate: compiled[name] };
    }
    return { ajv, files, schemas, compiled, validatorFor };
}

// Asserts ev validates against its schema; returns the schema file name.
export function assertValidEvent(schemas, ev) {
    const { name, validate } = schemas.validatorFor(ev);
    assert.ok(validate, `no schema for event type ${ev.type} (expected schemas/events/${name})`);
    const ok = validate(ev);
    assert.ok(ok, `${ev.type} ${ev.id} does not validate against ${name}: ${JSON.stringify(validate.errors)}\n${JSON.stringify(ev)}`);
    return name;
}
