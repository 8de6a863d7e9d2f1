// faults.test.mjs - the faults Pulse must survive (issue 4; TARGETS.md "Reliability"), black-box.
//
//   engine restarts   PostgreSQL, then Redis, then NATS are stopped for OUTAGE_MS and started again while
//                     a client keeps writing (~20 requests/s: registrations, testkit event emissions,
//                     logins), each after a burst of BURST events so that consumers are mid-backlog.
//                     Every request answers within REQUEST_BOUND_MS with its 2xx or a 503 in the error
//                     shape (never another 5xx, never a hang); the server keeps its PID and exits 0; Pulse
//                     recovers by itself within RECOVERY_BOUND_MS of the engine's return (measured:
//                     /readyz, a write, a registration, a login, events flowing); pulse_outbox_depth shows
//                     the backlog while NATS is away and drains to 0; every 2xx write is there afterwards
//                     (every registered user logs in; every event id a 201 returned was applied exactly
//                     once; each burst in its order; nothing dead-lettered).
//   store stalls      (embedded) the consumer's SQLite file is write-locked past its busy timeout while
//                     3,000 events wait for it: none skipped, none doubled, order kept.
//   concurrent        (distributed) 16 emitters at once on PostgreSQL: every acknowledged event applied
//   writers           once, in key order.
//   consumer killed   two `pulse serve --services testkit` on the same engines and namespace (own data
//                     dirs, PULSE_SERVER_NAMESPACE given), a stream over KEYS partition keys, kill -9 of
//                     the instance that is applying: the other takes over its partitions when the lease
//                     lapses; every event applied exactly once, per key in order. A second case runs two
//                     processes on ONE data directory on either profile (embedded: they share the SQLite
//                     files and the embedded bus).
//
// The distributed cases run only with PULSE_TEST_PROFILE=distributed and PULSE_TEST_FAULTS=1 (`make
// test-faults`) and skip with a message otherwise. They start their OWN engines with scripts/engines.sh in a temporary directory
// (restarting them must not disturb other test files sharing the harness's engines) and stop them by PID
// at the end, also when a test fails (an 'exit' hook covers a crash of the runner). Every server listens
// on 127.0.0.1 and is stopped by PID. Each case prints its numbers as test diagnostics: 503s, the longest
// request, recovery and drain times per fault. PULSE_TEST_FAULTS_LOGS=DIR keeps the servers' logs.

import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, test } from 'node:test';

import {
    PASSWORD,
    PROFILE,
    assertNoSanitizerReport,
    makeTempDir,
    newUserInput,
    parseLogLines,
    removeTempDir,
    startServer,
    uniq,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ENGINES_SH = path.resolve(here, '../../scripts/engines.sh');
const DISTRIBUTED = PROFILE === 'distributed';
// The cases that start, stop and restart engines of their own run when asked for (`make test-faults`
// sets PULSE_TEST_FAULTS=1), not in every distributed run of the whole suite (`make api-distributed`).
const FAULTS = DISTRIBUTED && process.env.PULSE_TEST_FAULTS === '1';
const SKIP_FAULTS = !DISTRIBUTED
    ? 'needs PULSE_TEST_PROFILE=distributed and PULSE_TEST_FAULTS=1 (make test-faults)'
    : !FAULTS && 'needs PULSE_TEST_FAULTS=1 (make test-faults): it starts and restarts engines of its own';

const REQUEST_BOUND_MS = 5000; // every request answers within this (engine timeouts are 2 s)
const REQUEST_ABORT_MS = 15000; // the client gives up here (a hang, reported as such)
const RECOVERY_BOUND_MS = 5000; // from the engine's return to Pulse working again
const OUTAGE_MS = 3000; // how long each engine stays down
const LOAD_INTERVAL_MS = 50; // one request every 50 ms (~20/s) plus a login every 5th tick
const BURST = 1000; // events emitted in one request just before each outage

// The event streams of the consumer cases: rounds of KEYS concurrent requests of PER_REQUEST events.
const KEYS = 16;
const ROUNDS = 30;
const PER_REQUEST = 10;
const GROUP = 'testkit.effects';
const LEASE = { PULSE_BUS_LEASE: '3s' }; // a dead instance's partitions move after this

const now = () => performance.now();
const SERVICES = ['--services', 'identity,audit,testkit'];

// ---- engines of our own ------------------------------------------------------------------------

const execFileP = (file, args, opts) =>
    new Promise((resolve, reject) => {
        execFile(file, args, opts, (err, stdout, stderr) => {
            if (err) {
                err.message += `\n${stderr}`;
                reject(err);
            } else resolve({ stdout, stderr });
        });
    });

class Engines {
    constructor(dir) {
        this.dir = dir;
        this.running = false;
        this.env = {};
    }

    sh(...args) {
        return execFileP('bash', [ENGINES_SH, ...args, this.dir], { timeout: 120000 });
    }

    async start() {
        this.running = true; // from here on the exit hook stops them
        await this.sh('start');
        this.envFile = path.join(this.dir, 'engines.env');
        for (const line of fs.readFileSync(this.envFile, 'utf8').split('\n')) {
            const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
            if (m) this.env[m[1]] = m[2];
        }
    }

    down(name) {
        return this.sh('down', name);
    }

    up(name) {
        return this.sh('up', name);
    }

    async stop() {
        if (!this.running) return;
        await this.sh('stop');
        this.running = false;
    }

    // For the 'exit' hook: synchronous.
    stopSync() {
        if (!this.running) return;
        spawnSync('bash', [ENGINES_SH, 'stop', this.dir], { stdio: 'ignore', timeout: 60000 });
        this.running = false;
    }
}

let engines = null;
let enginesDir = null;
process.on('exit', () => {
    // Registered after harness.mjs's hook (which kills servers); a leftover engine is stopped by PID here.
    if (engines) engines.stopSync();
    if (enginesDir) fs.rmSync(enginesDir, { recursive: true, force: true });
});

async function startOwnEngines() {
    enginesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulse-faults-engines-'));
    engines = new Engines(enginesDir);
    await engines.start();
    // Every server of this file runs on these engines (harness.mjs reads the file at each start).
    process.env.PULSE_TEST_ENGINES_ENV = engines.envFile;
}

async function stopOwnEngines() {
    if (!engines) return;
    try {
        await engines.stop();
    } finally {
        engines.stopSync();
        fs.rmSync(enginesDir, { recursive: true, force: true });
        engines = null;
        enginesDir = null;
    }
}

// ---- servers of the test running now ---------------------------------------------------------------

let servers = [];
let dirs = [];
async function cleanupServers() {
    for (const s of servers) {
        await s.cleanup();
        keepLog(s);
    }
    for (const d of dirs) await removeTempDir(d);
    servers = [];
    dirs = [];
}
afterEach(cleanupServers);
after(async () => {
    await cleanupServers();
    await stopOwnEngines();
});

async function track(p) {
    const s = await p;
    servers.push(s);
    return s;
}

async function tempDir() {
    const d = await makeTempDir('pulse-faults-');
    dirs.push(d);
    return d;
}

// ---- HTTP with a clock -------------------------------------------------------------------------------

// One request, timed; never rejects: status 0 and `error` when it failed or ran past REQUEST_ABORT_MS.
async function timed(srv, method, urlPath, { json, token } = {}) {
    const headers = {};
    let body;
    if (json !== undefined) {
        body = JSON.stringify(json);
        headers['content-type'] = 'application/json';
    }
    if (token) headers.authorization = `Bearer ${token}`;
    const t0 = now();
    try {
        const res = await fetch(srv.base + urlPath, { method, headers, body, signal: AbortSignal.timeout(REQUEST_ABORT_MS) });
        const text = await res.text();
        let parsed;
        if (/json/.test(res.headers.get('content-type') || '')) {
            try {
                parsed = JSON.parse(text);
            } catch {
                /* left undefined: the shape check reports it */
            }
        }
        return { t0, ms: now() - t0, status: res.status, ctype: res.headers.get('content-type') || '', text, body: parsed };
    } catch (e) {
        return { t0, ms: now() - t0, status: 0, error: e.name === 'TimeoutError' ? 'no answer' : e.cause?.code || e.message };
    }
}

// Why a response is not a clean 503 in the error shape, or null when it is.
function not503Shape(r) {
    if (r.status !== 503) return `status ${r.status}`;
    if (!/^application\/json/.test(r.ctype)) return `content-type ${r.ctype}`;
    const e = r.body && r.body.error;
    if (!e || typeof e.code !== 'string' || typeof e.message !== 'string' || !e.message) return `body ${r.text}`;
    if (!e.fields || typeof e.fields !== 'object' || Array.isArray(e.fields)) return `fields in ${r.text}`;
    return null;
}

function metricValues(text, name) {
    const out = {};
    for (const line of text.split('\n')) {
        if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
        const m = /^[a-z_]+(?:\{([^}]*)\})? (\S+)$/.exec(line);
        if (m) out[m[1] || ''] = Number(m[2]);
    }
    return out;
}

async function metrics(srv) {
    const r = await timed(srv, 'GET', '/metrics');
    return r.status === 200 ? r.text : '';
}

async function outboxDepth(srv) {
    const text = await metrics(srv);
    if (!text) return null;
    const v = metricValues(text, 'pulse_outbox_depth');
    return Object.values(v).reduce((a, b) => a + b, 0);
}

async function handled(srv, group) {
    const text = await metrics(srv);
    return metricValues(text, 'pulse_consumer_handled_total')[`consumer="${group}"`] ?? 0;
}

async function effects(srv) {
    const r = await timed(srv, 'GET', '/api/v1/testkit/effects');
    assert.equal(r.status, 200, `effects: ${r.status} ${r.text || r.error}`);
    return r.body.items;
}

async function waitFor(what, fn, timeoutMs, stepMs = 100) {
    const t0 = now();
    for (;;) {
        const v = await fn();
        if (v) return { value: v, ms: now() - t0 };
        if (now() - t0 > timeoutMs) assert.fail(`${what}: not within ${timeoutMs} ms`);
        await sleep(stepMs);
    }
}

// PULSE_TEST_FAULTS_LOGS=DIR keeps each server's log there (for a look at what happened when).
function keepLog(srv) {
    const dir = process.env.PULSE_TEST_FAULTS_LOGS;
    if (!dir || !srv.child) return;
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `pulse-${srv.pid}.log`), srv.stderr);
}

// The server's exit after the faults: the same process all along, exit 0 on SIGTERM, no sanitizer
// report, and no 5xx other than 503 in its access log.
async function stopAfterFaults(srv, pid) {
    assert.ok(srv.running, `pulse (pid ${pid}) died during the faults: ${JSON.stringify(srv.result)}\n${srv.stderr.slice(-4000)}`);
    assert.equal(srv.pid, pid);
    const r = await srv.stop();
    assertNoSanitizerReport(srv.stderr);
    assert.equal(r.signal, null, `pulse died of ${r.signal}`);
    assert.equal(r.code, 0, `pulse exited ${r.code}\n${srv.stderr.slice(-4000)}`);
    const lines = parseLogLines(srv.stderr);
    const bad = lines.filter((l) => l.msg === 'access' && l.status >= 500 && l.status !== 503);
    assert.deepEqual(bad, [], 'no 5xx other than 503');
    assert.ok(lines.some((l) => l.msg === 'stopped'), 'pulse logs "stopped"');
    return lines;
}

// ---- the writing client ------------------------------------------------------------------------------

class Load {
    constructor(srv) {
        this.srv = srv;
        this.results = []; // {op, t0, ms, status, fault, error?, why?}
        this.users = []; // usernames that got a 201
        this.ids = []; // event ids that a 201 returned
        this.inflight = new Set();
        this.fault = null; // label of the outage in progress
        this.tick = 0;
    }

    start() {
        this.timer = setInterval(() => this.fire(), LOAD_INTERVAL_MS);
    }

    async stop() {
        clearInterval(this.timer);
        await Promise.all([...this.inflight]);
    }

    fire() {
        if (this.inflight.size >= 64) return; // bounded: a hang shows as slow requests, not as a pile
        const i = this.tick++;
        const fault = this.fault;
        let p;
        if (i % 2 === 0) p = this.register(fault);
        else p = this.emit(fault, i);
        this.track(p);
        if (i % 5 === 0 && this.users.length) this.track(this.login(fault));
    }

    track(p) {
        this.inflight.add(p);
        p.finally(() => this.inflight.delete(p));
    }

    record(op, r, fault, ok) {
        const rec = { op, t0: r.t0, ms: r.ms, status: r.status, fault, error: r.error };
        if (!ok(r)) rec.why = not503Shape(r); // null: a proper 503
        this.results.push(rec);
        return rec;
    }

    async register(fault) {
        const input = newUserInput({ username: uniq('f') });
        const r = await timed(this.srv, 'POST', '/api/v1/auth/register', { json: input });
        this.record('register', r, fault, (x) => x.status === 201);
        if (r.status === 201) this.users.push(input.username);
    }

    async emit(fault, i) {
        const r = await timed(this.srv, 'POST', '/api/v1/testkit/events', {
            json: { type: 'pl.testkit.load.v1', subject: `load-${i % 7}`, count: 3 },
        });
        this.record('emit', r, fault, (x) => x.status === 201);
        if (r.status === 201) this.ids.push(...r.body.ids);
    }

    async login(fault) {
        const who = this.users[Math.floor(Math.random() * this.users.length)];
        const r = await timed(this.srv, 'POST', '/api/v1/auth/login', { json: { login: who, password: PASSWORD } });
        this.record('login', r, fault, (x) => x.status === 200);
    }
}

// Polls until Pulse works again after `eng` came back; returns ms since `upAt` per check: /readyz
// 200, a testkit write 201, a registration 201, a login 200, and events flowing again (the effects
// consumer applies something: the backlog of the burst, or at least a probe emitted now).
async function recovery(srv, eng, upAt) {
    const done = {};
    const handled0 = await handled(srv, GROUP);
    const probeUser = newUserInput({ username: uniq('p') });
    let registered = false;
    let probeId = null;
    const deadline = upAt + 30000;
    while (now() < deadline) {
        if (!done.ready) {
            const r = await timed(srv, 'GET', '/readyz');
            if (r.status === 200) done.ready = now() - upAt;
        }
        if (!done.write) {
            const r = await timed(srv, 'POST', '/api/v1/testkit/events', {
                json: { type: 'pl.testkit.probe.v1', subject: `probe-${eng}` },
            });
            if (r.status === 201) {
                done.write = now() - upAt;
                probeId = r.body.ids[0];
            }
        }
        if (!done.register) {
            const r = await timed(srv, 'POST', '/api/v1/auth/register', { json: probeUser });
            if (r.status === 201 || (r.status === 409 && registered)) done.register = now() - upAt;
            registered ||= r.status === 201;
        }
        if (done.register && !done.login) {
            const r = await timed(srv, 'POST', '/api/v1/auth/login', { json: { login: probeUser.username, password: PASSWORD } });
            if (r.status === 200) done.login = now() - upAt;
        }
        if (!done.flowing && (await handled(srv, GROUP)) > handled0) done.flowing = now() - upAt;
        if (probeId && !done.flowing) {
            const r = await timed(srv, 'GET', '/api/v1/testkit/effects');
            if (r.status === 200 && r.body.items.some((e) => e.event_id === probeId)) done.flowing = now() - upAt;
        }
        if (done.ready && done.write && done.register && done.login && done.flowing) break;
        await sleep(50);
    }
    done.all = Math.max(...['ready', 'write', 'register', 'login', 'flowing'].map((k) => done[k] ?? Infinity));
    return done;
}

// ---- 1. engine restarts under load ----------------------------------------------------------------------

describe('faults: engine restarts under a writing client', { skip: SKIP_FAULTS }, () => {
    before(startOwnEngines);

    test('PostgreSQL, then Redis, then NATS restart: 503s while down, recovery, nothing lost', { timeout: 240000 }, async (t) => {
        const srv = await track(startServer({ dataDir: await tempDir(), args: SERVICES }));
        const pid = srv.pid;
        const load = new Load(srv);
        const report = [];
        load.start();
        try {
            await sleep(2000); // steady state
            for (const eng of ['pg', 'redis', 'nats']) {
                // a burst first, so that consumers are in the middle of a backlog when the engine goes
                const burst = await timed(srv, 'POST', '/api/v1/testkit/events', {
                    json: { type: 'pl.testkit.burst.v1', subject: `burst-${eng}`, count: BURST },
                });
                assert.equal(burst.status, 201, burst.text);
                load.ids.push(...burst.body.ids);
                await sleep(300);
                const t0 = now();
                load.fault = eng;
                await engines.down(eng);
                const downAt = now();
                // outbox depth while the engine is away (sampled; NATS is the one that lets it grow)
                let maxDepth = 0;
                while (now() - downAt < OUTAGE_MS) {
                    const d = await outboxDepth(srv);
                    if (d !== null) maxDepth = Math.max(maxDepth, d);
                    await sleep(250);
                }
                await engines.up(eng);
                const upAt = now();
                const rec = await recovery(srv, eng, upAt);
                load.fault = null;
                const drain = await waitFor(`${eng}: outbox drained`, async () => (await outboxDepth(srv)) === 0, 30000);
                await waitFor(
                    `${eng}: consumers caught up`,
                    async () => Object.values(metricValues(await metrics(srv), 'pulse_consumer_lag_events')).every((v) => v === 0),
                    60000,
                    250,
                );
                const caughtUpAt = now();
                const during = load.results.filter((r) => r.fault === eng);
                report.push({
                    eng,
                    downMs: Math.round(upAt - t0),
                    requests: during.length,
                    n503: during.filter((r) => r.status === 503).length,
                    longestMs: Math.round(Math.max(0, ...during.map((r) => r.ms))),
                    maxDepth,
                    recovery: Object.fromEntries(Object.entries(rec).map(([k, v]) => [k, Math.round(v)])),
                    drainMs: Math.round(drain.ms),
                    caughtUpMs: Math.round(caughtUpAt - upAt),
                    slowest: during
                        .sort((x, y) => y.ms - x.ms)
                        .slice(0, 3)
                        .map((r) => `${r.op} ${r.status} ${Math.round(r.ms)} ms`)
                        .join(', '),
                });
                await sleep(1000);
            }
        } finally {
            await load.stop();
            await engines.sh('start'); // whatever a failure left down comes back for the next cases
        }

        for (const r of report)
            t.diagnostic(
                `${r.eng}: down ${r.downMs} ms, ${r.requests} requests during the fault, ${r.n503} x 503, longest ${r.longestMs} ms,` +
                    ` outbox depth up to ${r.maxDepth}; recovered after return in ${r.recovery.all} ms` +
                    ` (readyz ${r.recovery.ready}, write ${r.recovery.write}, register ${r.recovery.register},` +
                    ` login ${r.recovery.login}, events flowing ${r.recovery.flowing}); outbox drained ${r.drainMs} ms later,` +
                    ` consumers caught up ${r.caughtUpMs} ms after the return; slowest: ${r.slowest}`,
            );
        const all = load.results;
        t.diagnostic(
            `client: ${all.length} requests, ${all.filter((r) => r.status === 503).length} x 503, longest ${Math.round(Math.max(...all.map((r) => r.ms)))} ms;` +
                ` ${load.users.length} users and ${load.ids.length} events acknowledged`,
        );

        // every request: a 2xx or a proper 503, within the bound
        const wrong = all.filter((r) => r.why);
        assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} requests got neither their 2xx nor a 503 in the error shape`);
        const slow = all.filter((r) => r.ms > REQUEST_BOUND_MS);
        assert.deepEqual(slow.slice(0, 10), [], `${slow.length} requests took longer than ${REQUEST_BOUND_MS} ms`);

        // nothing acknowledged is lost: every event applied exactly once, every user logs in
        let missing = [];
        const { value: items } = await waitFor(
            'every acknowledged event applied',
            async () => {
                const items = await effects(srv);
                const seen = new Set(items.map((e) => e.event_id));
                missing = load.ids.filter((id) => !seen.has(id));
                return missing.length === 0 && items;
            },
            30000,
            250,
        ).catch((e) => {
            throw new Error(`${e.message}: ${missing.length} of ${load.ids.length} missing, e.g. ${missing.slice(0, 5).join(' ')}`);
        });
        const count = new Map();
        for (const e of items) count.set(e.event_id, (count.get(e.event_id) || 0) + 1);
        const doubled = [...count].filter(([, n]) => n > 1);
        assert.deepEqual(doubled, [], 'no event applied twice');
        const lost = load.ids.filter((id) => !count.has(id));
        assert.deepEqual(lost, [], 'every acknowledged event applied');
        // each burst is one partition key: applied in its order although an engine went away mid-way
        for (const eng of ['pg', 'redis', 'nats']) {
            const seqs = items.filter((e) => e.subject === `burst-${eng}`).map((e) => e.seq);
            const out = seqs.filter((v, i) => i > 0 && v <= seqs[i - 1]);
            assert.equal(out.length, 0, `burst-${eng}: ${out.length} events applied out of order (${seqs.join(',').slice(0, 300)})`);
        }

        const failedLogins = [];
        for (let i = 0; i < load.users.length; i += 8) {
            const batch = load.users.slice(i, i + 8);
            const rs = await Promise.all(batch.map((u) => timed(srv, 'POST', '/api/v1/auth/login', { json: { login: u, password: PASSWORD } })));
            rs.forEach((r, k) => r.status !== 200 && failedLogins.push(`${batch[k]}: ${r.status} ${r.text || r.error}`));
        }
        assert.deepEqual(failedLogins, [], 'every registered user can log in');

        assert.equal(await outboxDepth(srv), 0);
        const dlq = metricValues(await metrics(srv), 'pulse_dlq_size');
        assert.deepEqual(dlq, { '': 0 }, 'an engine outage dead-letters nothing');
        await stopAfterFaults(srv, pid);

        // the outage of PostgreSQL is visible to writers (it holds every service's tables)
        assert.ok(report[0].n503 > 0, 'PostgreSQL down: writes answered 503');
        // while NATS is away the outbox keeps what is committed, and /metrics says so
        assert.ok(report[2].maxDepth > 0, 'NATS down: pulse_outbox_depth shows the backlog');
        for (const r of report) assert.ok(r.recovery.all <= RECOVERY_BOUND_MS, `${r.eng}: recovered in ${r.recovery.all} ms`);
    });
});

// ---- 1b. the store stalls under a consumer ----------------------------------------------------------------

// Holds the write lock of an embedded store file (sqlite3 shell: BEGIN IMMEDIATE) until release().
async function holdWriteLock(file) {
    const { spawn } = await import('node:child_process');
    const child = spawn('sqlite3', [file], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let errText = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (errText += d));
    const exited = new Promise((resolve) => child.on('close', resolve));
    child.stdin.write(".timeout 10000\nBEGIN IMMEDIATE;\nSELECT 'locked';\n");
    await waitFor('the write lock', async () => out.includes('locked') || errText, 10000, 10);
    assert.equal(errText, '', `sqlite3: ${errText}`);
    return {
        async release() {
            child.stdin.end('ROLLBACK;\n.quit\n');
            await exited;
        },
    };
}

const HAVE_SQLITE3 = (process.env.PATH || '').split(':').some((d) => d && fs.existsSync(path.join(d, 'sqlite3')));

describe('faults: the store stalls under a consumer', () => {
    test(
        "embedded: testkit.db locked past the busy timeout mid-stream; nothing skipped, order kept",
        {
            skip: DISTRIBUTED ? 'embedded profile only (the lock is on a SQLite file)' : !HAVE_SQLITE3 && 'needs the sqlite3 shell',
            timeout: 120000,
        },
        async (t) => {
            const dir = await tempDir();
            // a first redelivery waits 5-10 s: time enough to take the lock while the key waits, even on a busy machine
            const srv = await track(startServer({ dataDir: dir, env: { PULSE_BUS_RETRY_BASE: '10s' }, args: ['--services', 'testkit'] }));
            const emit = async (json) => {
                const res = await timed(srv, 'POST', '/api/v1/testkit/events', { json: { type: 'pl.testkit.stall.v1', partitionkey: 'stall', ...json } });
                assert.equal(res.status, 201, res.text);
            };
            // one event that fails its first delivery pauses the key; 3000 more queue up behind it
            await emit({ subject: 'stall-first', data: { fail_times: 1 } });
            await emit({ subject: 'stall', count: 3000 });
            await waitFor('the tally projection done (it does not fail)', async () => (await handled(srv, 'testkit.tally')) >= 3001, 30000, 50);
            // the effects consumer's next transaction cannot begin while this lock is held (busy timeout 5 s)
            const lock = await holdWriteLock(path.join(dir, 'testkit.db'));
            const before = await handled(srv, GROUP);
            const refused = (l) => l.msg === 'consumer transaction failed' && l.consumer === GROUP;
            const failedAt = await waitFor('the store refuses a batch', async () => parseLogLines(srv.stderr).some(refused), 30000, 100).catch(
                async (e) => {
                    await lock.release();
                    throw e;
                },
            );
            await lock.release();
            const done = await waitFor(
                'every event applied after the lock',
                async () => {
                    const items = (await effects(srv)).filter((e) => e.subject.startsWith('stall'));
                    return (await handled(srv, GROUP)) >= 3001 && items.length >= 3001 && items;
                },
                60000,
                250,
            ).catch(async (e) => {
                const n = (await effects(srv)).filter((x) => x.subject.startsWith('stall')).length;
                throw new Error(`${e.message}: ${n} of 3001 applied, ${await handled(srv, GROUP)} handled`);
            });
            t.diagnostic(
                `${before} of 3001 applied when the lock was taken; a batch refused ${Math.round(failedAt.ms)} ms later;` +
                    ` all applied ${Math.round(done.ms)} ms after the release`,
            );
            const order = done.value.map((e) => `${e.subject}#${e.seq}`);
            assert.deepEqual(order, ['stall-first#0', ...Array.from({ length: 3000 }, (_, i) => `stall#${i}`)], 'each event once, in order');
            await srv.stop();
            assertNoSanitizerReport(srv.stderr);
            assert.equal(srv.result.code, 0);
        },
    );
});

// ---- 1c. many writers at once (the baseline of the next case) ----------------------------------------

describe('faults: concurrent writers', { skip: SKIP_FAULTS }, () => {
    before(async () => {
        if (!engines) await startOwnEngines();
    });

    test('16 concurrent emitters on PostgreSQL: every committed event reaches the consumer once', { timeout: 120000 }, async (t) => {
        const srv = await track(startServer({ dataDir: await tempDir(), args: ['--services', 'testkit'] }));
        const acked = await stream([srv], { onRound: async () => {}, rounds: 12 });
        const done = await waitFor(
            'every acknowledged event applied',
            async () => {
                const items = await effects(srv);
                const ids = new Set(items.map((e) => e.event_id));
                return acked.every((x) => x.ids.every((id) => ids.has(id))) && items;
            },
            20000,
            250,
        ).catch(async (e) => {
            const ids = new Set((await effects(srv)).map((x) => x.event_id));
            const lost = acked.flatMap((x) => x.ids).filter((id) => !ids.has(id));
            throw new Error(`${e.message}: ${lost.length} of ${acked.length * PER_REQUEST} never applied`);
        });
        const n = checkExactlyOnceInOrder(done.value, acked);
        t.diagnostic(`${n} events from ${acked.length} concurrent requests applied once each, in key order`);
        await srv.stop();
        assert.equal(srv.result.code, 0);
    });
});

// ---- 2. a consumer instance killed mid-batch -----------------------------------------------------------


// Emits ROUNDS rounds of KEYS requests (PER_REQUEST events each, subject "<key>-r<round>", partition key
// <key>), each round after the previous one answered, spreading requests over the live servers; `kill`
// is called once, mid-stream. Returns the acknowledged {round, key, ids}.
async function stream(targets, { onRound, rounds = ROUNDS }) {
    const acked = [];
    for (let r = 0; r < rounds; r++) {
        await onRound(r);
        const live = targets.filter((s) => s.running);
        const rs = await Promise.all(
            Array.from({ length: KEYS }, async (_, k) => {
                const srv = live[(r + k) % live.length];
                const res = await timed(srv, 'POST', '/api/v1/testkit/events', {
                    json: { type: 'pl.testkit.kill.v1', subject: `k${k}-r${r}`, partitionkey: `k${k}`, count: PER_REQUEST },
                });
                return { k, res };
            }),
        );
        for (const { k, res } of rs) if (res.status === 201) acked.push({ round: r, key: k, ids: res.body.ids });
        await sleep(60);
    }
    return acked;
}

// Every acknowledged event applied once, nothing applied twice, and per partition key the effects follow
// the emission order: (round, seq) strictly increasing.
function checkExactlyOnceInOrder(items, acked) {
    const kill = items.filter((e) => e.type === 'pl.testkit.kill.v1');
    const count = new Map();
    for (const e of kill) count.set(e.event_id, (count.get(e.event_id) || 0) + 1);
    const doubled = [...count].filter(([, n]) => n > 1);
    assert.deepEqual(doubled.slice(0, 10), [], `${doubled.length} events applied more than once`);
    const lost = acked.flatMap((a) => a.ids).filter((id) => !count.has(id));
    assert.deepEqual(lost.slice(0, 10), [], `${lost.length} acknowledged events never applied`);
    const last = new Map();
    const disorder = [];
    for (const e of kill) {
        const m = /^k(\d+)-r(\d+)$/.exec(e.subject);
        const key = m[1];
        const pos = Number(m[2]) * 1000 + e.seq;
        if (last.has(key) && last.get(key) >= pos) disorder.push(`${e.subject}#${e.seq} after ${last.get(key)}`);
        last.set(key, pos);
    }
    assert.deepEqual(disorder.slice(0, 10), [], `${disorder.length} events applied out of their key's order`);
    return kill.length;
}

async function killMidBatch(t, a, b) {
    const servers2 = [a, b];
    // warm-up: both instances must hold partitions (each live instance takes a fair share)
    const warm = await waitFor(
        'both instances apply events',
        async () => {
            await timed(a, 'POST', '/api/v1/testkit/events', {
                json: { type: 'pl.testkit.warm.v1', subject: `w${Math.floor(Math.random() * 64)}`, count: 2 },
            });
            return (await handled(a, GROUP)) > 0 && (await handled(b, GROUP)) > 0;
        },
        30000,
        300,
    );
    t.diagnostic(`both instances applying after ${Math.round(warm.ms)} ms`);
    let killedAt = 0;
    let handledByVictim = 0;
    const acked = await stream(servers2, {
        onRound: async (r) => {
            if (r !== 10) return;
            // kill when the victim is applying (its handled count moves), i.e. mid-batch as near as we can tell
            const h0 = await handled(b, GROUP);
            for (let i = 0; i < 20; i++) {
                await sleep(25);
                if ((await handled(b, GROUP)) !== h0) break;
            }
            b.kill();
            killedAt = now();
            await b.exited;
            handledByVictim = h0;
        },
    });
    assert.ok(killedAt > 0);
    const expected = acked.length * PER_REQUEST;
    let missing = [];
    const done = await waitFor(
        'the survivor applies every acknowledged event',
        async () => {
            const items = await effects(a);
            const ids = new Set(items.map((e) => e.event_id));
            missing = acked.filter((x) => x.ids.some((id) => !ids.has(id)));
            return missing.length === 0 && items;
        },
        60000,
        250,
    ).catch((e) => {
        const show = missing.slice(0, 10).map((x) => `k${x.key}-r${x.round}`);
        throw new Error(`${e.message}: ${missing.length} requests' events missing (${show.join(' ')})\n${a.stderr.slice(-3000)}`);
    });
    const applied = checkExactlyOnceInOrder(done.value, acked);
    t.diagnostic(
        `victim pid ${b.pid} killed (SIGKILL) after applying ~${handledByVictim} events; ${acked.length} requests acknowledged` +
            ` (${expected} events, ${applied} applied once each, in key order); everything applied ${Math.round(now() - killedAt)} ms` +
            ` after the kill`,
    );
    assert.equal(b.result.signal, 'SIGKILL');
    await a.stop();
    assertNoSanitizerReport(a.stderr);
    assert.equal(a.result.code, 0, a.stderr.slice(-4000));
}

describe('faults: a consumer instance killed mid-batch', () => {
    before(async () => {
        if (FAULTS && !engines) await startOwnEngines(); // else the suite's engines (PULSE_TEST_ENGINES_ENV)
    });

    test(
        'distributed: two instances on one namespace, one killed; the other takes over',
        { skip: SKIP_FAULTS, timeout: 180000 },
        async (t) => {
            const ns = 'tkill' + Math.random().toString(16).slice(2, 10);
            const env = { ...LEASE, PULSE_SERVER_NAMESPACE: ns };
            const a = await track(startServer({ dataDir: await tempDir(), env, args: ['--services', 'testkit'] }));
            const b = await track(startServer({ dataDir: await tempDir(), env, args: ['--services', 'testkit'] }));
            await killMidBatch(t, a, b);
        },
    );

    test(`${PROFILE}: two processes on one data directory, one killed; the other takes over`, { timeout: 180000 }, async (t) => {
        const dir = await tempDir();
        const a = await track(startServer({ dataDir: dir, env: LEASE, args: ['--services', 'testkit'] }));
        const b = await track(startServer({ dataDir: dir, env: LEASE, args: ['--services', 'testkit'] }));
        await killMidBatch(t, a, b);
    });
});
