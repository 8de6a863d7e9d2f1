// events.test.mjs - the event backbone, black-box: the real pulse binary
// (serve, events tail, dlq, replay) on temporary data directories.
//
//   schemas     every schema compiles strictly and rejects broken events
//   emitted     every event identity and testkit emit validates against its
//               schema; traceparent flows request -> event -> consumer log
//   ordering    concurrent publishers: per partition key, effects follow the
//               log order; every event applied exactly once; two processes
//               on one data directory share a consumer group (rebalance)
//   dead        retries, poison -> DLQ (and the stream keeps flowing), dlq
//               ls / retry / retry --all / drop, /metrics pulse_dlq_size
//   replay      audit.directory and testkit.tally rebuilt equal to live
//   malformed   rejected with a clear error; nothing reaches the log
//   kill -9     a crash between a consumer's commit and its ack (inbox),
//               then three at random moments during a stream of
//               registrations: every 2xx user exists with exactly one event
//               and one audit entry; every testkit event applied once
//   tail        `pulse events tail pl.identity.*` shows a commit within 1 s
//
// Servers listen on 127.0.0.1:0 and are stopped by PID (SIGTERM, exit 0
// asserted; SIGKILL only in the crash test), also when a test fails.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, afterEach, describe, test } from 'node:test';
import { promisify } from 'node:util';

import {
    PASSWORD,
    assertError,
    assertNoSanitizerReport,
    makeTempDir,
    newUserInput,
    parseLogLines,
    removeTempDir,
    uniq,
} from './harness.mjs';
import {
    EMBEDDED,
    MAX_DELIVER,
    SERVICES,
    holdBusWriteLock,
    Tail,
    adminToken,
    assertValidEvent,
    auditAll,
    dlq,
    dlqList,
    effects,
    emit,
    loadSchemas,
    metrics,
    newTraceparent,
    pulseCmd,
    readLog,
    startBusServer,
    tally,
    traceId,
    waitFor,
} from './bus-harness.mjs';

const REGISTERED = 'pl.identity.user_registered.v1';
const PROFILE = 'pl.identity.profile_updated.v1';
const ROLE = 'pl.identity.role_changed.v1';
const DEMO_USERS = 4;

// Servers, tails and dirs of the test running now, cleaned whatever happens.
let servers = [];
let tails = [];
let dirs = [];
async function cleanupAll() {
    for (const t of tails) await t.cleanup();
    for (const s of servers) await s.cleanup();
    for (const d of dirs) await removeTempDir(d);
    servers = [];
    tails = [];
    dirs = [];
}
afterEach(cleanupAll);
after(cleanupAll);

async function track(p) {
    const s = await p;
    servers.push(s);
    return s;
}

function trackTail(t) {
    tails.push(t);
    return t;
}

async function tempDir() {
    const d = await makeTempDir('pulse-bus-');
    dirs.push(d);
    return d;
}

// SIGTERM, exit 0, no sanitizer report, no 5xx, no error-level line.
async function stopClean(srv) {
    await srv.stopClean();
}

// The partition of a key, as the bus computes it (FNV-1a 32-bit, mod 4).
function partitionOf(key, parts = 4) {
    let h = 2166136261;
    for (const b of Buffer.from(key, 'utf8')) {
        h ^= b;
        h = Math.imul(h, 16777619) >>> 0;
    }
    return h % parts;
}

const schemas = loadSchemas();

const execFileP = promisify(execFile);
// The sqlite3 shell, to look into (and damage) the embedded profile's files.
const HAVE_SQLITE3 =
    EMBEDDED &&
    (() => {
        try {
            return process.env.PATH.split(':').some((d) => fs.existsSync(path.join(d, 'sqlite3')));
        } catch {
            return false;
        }
    })();

// A read model as rows (server stopped or not: WAL readers do not block).
async function sqliteRows(db, sql) {
    const { stdout } = await execFileP('sqlite3', ['-json', db, sql]);
    return stdout.trim() ? JSON.parse(stdout) : [];
}

async function sqliteExec(db, sql) {
    await execFileP('sqlite3', [db, sql]);
}

function countBy(items, key) {
    const m = new Map();
    for (const it of items) m.set(key(it), (m.get(key(it)) || 0) + 1);
    return m;
}

// ---- schemas -----------------------------------------------------------------------------------

describe('event schemas', () => {
    const uid = '01a20155-c920-72e4-bcc2-c17d6909e911';
    const admin = '01a20155-c92f-7613-bda4-ef3dc94c00eb';
    const envelope = (type, data, extra = {}) => ({
        specversion: '1.0',
        id: '01a20155-c924-7056-9014-6f3ce329ebe1',
        source: '/pulse/identity',
        type,
        subject: uid,
        time: '2026-11-22T03:38:48.996Z',
        datacontenttype: 'application/json',
        partitionkey: uid,
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        data,
        ...extra,
    });
    const registered = () =>
        envelope(REGISTERED, {
            user_id: uid,
            username: 'ada_99',
            display_name: 'Ada L.',
            role: 'student',
            created_at: '2026-11-22T03:38:48.992Z',
        });
    const roleChanged = () =>
        envelope(ROLE, { user_id: uid, old_role: 'student', new_role: 'teacher', changed_by: admin, changed_at: '2026-11-22T03:40:00.000Z' });
    const profile = () => envelope(PROFILE, { user_id: uid, display_name: 'Ada', bio: '', updated_at: '2026-11-22T03:40:00.000Z' });
    const dead = () => ({
        specversion: '1.0',
        id: '01a20155-d42c-74e7-a476-cdccc35220cb',
        source: '/pulse/bus',
        type: `${REGISTERED}.dlq`,
        subject: '01a20155-c924-7056-9014-6f3ce329ebe1',
        time: '2026-11-22T03:38:52.029Z',
        datacontenttype: 'application/json',
        partitionkey: '01a20155-c924-7056-9014-6f3ce329ebe1',
        data: { event: registered(), error: 'boom', deliveries: 5, consumer: 'audit.trail', seq: 8 },
    });
    const valid = (ev, file) => {
        const v = schemas.compiled[file];
        assert.ok(v(ev), `${file} should accept: ${JSON.stringify(v.errors)}`);
    };
    const invalid = (ev, file, why) => assert.equal(schemas.compiled[file](ev), false, `${file} should reject ${why}`);

    test('every file compiles in strict mode and every type schema names its own type and source', () => {
        for (const f of ['cloudevent.json', 'dlq.json', 'testkit.json', `${REGISTERED}.json`, `${PROFILE}.json`, `${ROLE}.json`])
            assert.ok(schemas.files.includes(f), `schemas/events/${f} exists`);
        for (const f of schemas.files.filter((f) => f.startsWith('pl.'))) {
            const s = schemas.schemas[f];
            assert.equal(s.$schema, 'https://json-schema.org/draft/2020-12/schema', f);
            const type = f.slice(0, -'.json'.length);
            assert.equal(s.properties.type.const, type, `${f}: type const`);
            assert.equal(s.properties.source.const, `/pulse/${type.split('.')[1]}`, `${f}: source const`);
            assert.deepEqual(s.allOf, [{ $ref: 'cloudevent.json' }], `${f} extends the envelope`);
        }
    });

    test('the schemas accept the events as the code writes them and reject broken ones', () => {
        valid(registered(), `${REGISTERED}.json`);
        valid(registered(), 'cloudevent.json');
        valid(roleChanged(), `${ROLE}.json`);
        valid(profile(), `${PROFILE}.json`);
        valid(dead(), 'dlq.json');
        const noTrace = registered();
        delete noTrace.traceparent;
        valid(noTrace, `${REGISTERED}.json`);

        const reg = `${REGISTERED}.json`;
        const mutate = (fn) => {
            const e = registered();
            fn(e);
            return e;
        };
        invalid(mutate((e) => delete e.data.user_id), reg, 'data without user_id');
        invalid(mutate((e) => (e.data.extra = 1)), reg, 'an unknown data field');
        invalid(mutate((e) => (e.data.role = 'root')), reg, 'an unknown role');
        invalid(mutate((e) => (e.data.username = 'Bad Name')), reg, 'a username with capitals and a space');
        invalid(mutate((e) => (e.data.display_name = '   ')), reg, 'a blank display name');
        invalid(mutate((e) => (e.data.display_name = 'a\nb')), reg, 'a control character in the display name');
        invalid(mutate((e) => (e.type = 'pl.identity.user_registered.v2')), reg, 'another type');
        invalid(mutate((e) => (e.source = '/pulse/audit')), reg, 'another source');
        invalid(mutate((e) => (e.time = '2026-11-22T04:38:48.996+01:00')), reg, 'a time not in UTC');
        invalid(mutate((e) => (e.time = 'yesterday')), reg, 'a time that is not a date-time');
        invalid(mutate((e) => (e.id = '0af76519-16cd-43dd-8448-eb211c80319c')), reg, 'a UUIDv4 id');
        invalid(mutate((e) => (e.traceparent = `00-${'0'.repeat(32)}-b7ad6b7169203331-01`)), reg, 'an all-zero trace id');
        invalid(mutate((e) => (e.traceparent = '0af7651916cd43dd8448eb211c80319c')), reg, 'a bare trace id');
        invalid(mutate((e) => (e.specversion = '0.3')), reg, 'specversion 0.3');
        invalid(mutate((e) => (e.datacontenttype = 'text/plain')), reg, 'a non-JSON content type');
        invalid(mutate((e) => delete e.partitionkey), reg, 'a missing partitionkey');
        invalid(mutate((e) => delete e.subject), reg, 'a missing subject');
        invalid(mutate((e) => (e.foo = 'bar')), reg, 'an unknown attribute');
        invalid(mutate((e) => (e.data = [])), reg, 'array data');

        const env = 'cloudevent.json';
        for (const type of ['pl.testkit.Bad', 'foo', 'pl.testkit.x.v0', 'pl.testkit.x_.v1', 'pl.a.b.c.v1', 'pl.testkit.x.v1.dlq'])
            invalid(mutate((e) => (e.type = type)), env, `type ${type}`);
        invalid(mutate((e) => (e.subject = 'x'.repeat(129))), env, 'a subject over 128 characters');
        invalid(mutate((e) => (e.subject = 'a\u0001b')), env, 'a control character in the subject');

        const role = `${ROLE}.json`;
        const rc = roleChanged();
        rc.data.new_role = rc.data.old_role;
        invalid(rc, role, 'a role change to the same role');
        const rc2 = roleChanged();
        delete rc2.data.changed_by;
        invalid(rc2, role, 'a role change without changed_by');
        const pr = profile();
        pr.data.bio = 'x'.repeat(501);
        invalid(pr, `${PROFILE}.json`, 'a bio over 500 characters');
        const pr2 = profile();
        delete pr2.data.bio;
        invalid(pr2, `${PROFILE}.json`, 'a profile without bio');

        const d1 = dead();
        d1.type = REGISTERED;
        invalid(d1, 'dlq.json', 'a dead letter without .dlq');
        const d2 = dead();
        d2.data.deliveries = 0;
        invalid(d2, 'dlq.json', 'zero deliveries');
        const d3 = dead();
        delete d3.data.event.id;
        invalid(d3, 'dlq.json', 'a dead event that is not a CloudEvent');
        const d4 = dead();
        d4.data.consumer = 'trail';
        invalid(d4, 'dlq.json', 'a consumer that is not <service>.<name>');
    });
});

// ---- emitted events ---------------------------------------------------------------------------------

describe('emitted events', () => {
    test('every event identity and testkit emit validates against its schema; traceparent reaches the event and the consumer log', async () => {
        const srv = await track(startBusServer({ demo: true }));
        const tpReg = newTraceparent();
        const input = newUserInput();
        const reg = await srv.post('/api/v1/auth/register', input, { headers: { traceparent: tpReg } });
        assert.equal(reg.status, 201, reg.text);
        const user = reg.body;
        const { token } = await srv.login(input.username);

        const tpProf = newTraceparent();
        let r = await srv.patch('/api/v1/me', { display_name: 'Renamed Person', bio: 'hello, événements' }, { token, headers: { traceparent: tpProf } });
        assert.equal(r.status, 200, r.text);
        r = await srv.patch('/api/v1/me', { bio: '' }, { token });
        assert.equal(r.status, 200, r.text);
        r = await srv.patch('/api/v1/me', {}, { token }); // changes nothing: no event
        assert.equal(r.status, 200, r.text);

        const admin = await srv.post('/api/v1/auth/login', { login: 'admin', password: 'campus-demo-1' });
        assert.equal(admin.status, 200, admin.text);
        const tpRole = newTraceparent();
        r = await srv.patch(`/api/v1/users/${user.id}/role`, { role: 'teacher' }, { token: admin.body.token, headers: { traceparent: tpRole } });
        assert.equal(r.status, 200, r.text);
        r = await srv.patch(`/api/v1/users/${user.id}/role`, { role: 'teacher' }, { token: admin.body.token }); // same role: no event
        assert.equal(r.status, 200, r.text);

        const tpKit = newTraceparent();
        const kitIds = await emit(
            srv,
            { type: 'pl.testkit.sample.v1', subject: 'sample', partitionkey: 'pk-sample', data: { note: 'x', nested: { a: [1, 2] } }, count: 2 },
            { traceparent: tpKit },
        );

        // A last identity event as the sentinel: identity's relay publishes in
        // commit order, so once it is in the log everything before it is too.
        const sentinel = await srv.register();
        const log = await readLog(srv.dataDir, (evs) =>
            evs.some((e) => e.type === REGISTERED && e.data.user_id === sentinel.user.id) && kitIds.every((id) => evs.some((e) => e.id === id)),
        );

        const bySchema = countBy(log, (e) => assertValidEvent(schemas, e));
        assert.deepEqual(
            Object.fromEntries(bySchema),
            { [`${REGISTERED}.json`]: DEMO_USERS + 2, [`${PROFILE}.json`]: 2, [`${ROLE}.json`]: 1, 'testkit.json': 2 },
            'exactly the events the actions emit (none for a no-op PATCH or a same-role change)',
        );
        assert.equal(new Set(log.map((e) => e.id)).size, log.length, 'event ids are unique');
        for (const e of log.filter((e) => e.source === '/pulse/identity')) {
            assert.equal(e.subject, e.data.user_id, 'identity events: subject is the user id');
            assert.equal(e.partitionkey, e.subject, 'identity events: partitionkey defaults to the subject');
        }

        const regEv = log.find((e) => e.type === REGISTERED && e.data.user_id === user.id);
        assert.deepEqual(regEv.data, {
            user_id: user.id,
            username: input.username,
            display_name: input.display_name,
            role: 'student',
            created_at: user.created_at,
        });
        assert.equal(traceId(regEv.traceparent), traceId(tpReg), 'the request trace id is in the event');

        const profEvs = log.filter((e) => e.type === PROFILE);
        assert.deepEqual(
            profEvs.map((e) => ({ ...e.data, updated_at: undefined })),
            [
                { user_id: user.id, display_name: 'Renamed Person', bio: 'hello, événements', updated_at: undefined },
                { user_id: user.id, display_name: 'Renamed Person', bio: '', updated_at: undefined },
            ],
            'profile_updated carries the profile after the change',
        );
        assert.equal(traceId(profEvs[0].traceparent), traceId(tpProf));
        assert.notEqual(traceId(profEvs[1].traceparent), traceId(tpProf), 'a request without traceparent starts its own trace');

        const roleEv = log.find((e) => e.type === ROLE);
        assert.equal(roleEv.subject, user.id);
        assert.deepEqual({ ...roleEv.data, changed_at: undefined }, {
            user_id: user.id,
            old_role: 'student',
            new_role: 'teacher',
            changed_by: admin.body.user.id,
            changed_at: undefined,
        });
        assert.equal(traceId(roleEv.traceparent), traceId(tpRole));

        const kit = log.filter((e) => e.source === '/pulse/testkit');
        assert.deepEqual(kit.map((e) => e.id), kitIds, 'testkit events in batch order');
        kit.forEach((e, i) => {
            assert.equal(e.type, 'pl.testkit.sample.v1');
            assert.equal(e.subject, 'sample');
            assert.equal(e.partitionkey, 'pk-sample');
            assert.deepEqual(e.data, { note: 'x', nested: { a: [1, 2] }, seq: i });
            assert.equal(traceId(e.traceparent), traceId(tpKit));
        });

        // The consumer side: audit's log lines and its trail carry the trace.
        const auditLine = (evId) => parseLogLines(srv.stderr).find((l) => l.msg === 'audit entry' && l.event_id === evId);
        await waitFor(() => auditLine(regEv.id) && auditLine(roleEv.id), { what: 'audit entry log lines' });
        assert.equal(auditLine(regEv.id).trace_id, traceId(tpReg), 'the consumer logs under the trace of the request');
        assert.equal(auditLine(regEv.id).service, 'audit');
        assert.equal(auditLine(regEv.id).action, 'account_created');
        assert.equal(auditLine(roleEv.id).trace_id, traceId(tpRole));
        assert.equal(auditLine(roleEv.id).action, 'role_changed');
        // (the log line is written inside the consumer's transaction: wait for its commit)
        const trail = await waitFor(
            async () => {
                const t = await auditAll(srv, admin.body.token);
                return t.some((e) => e.event_id === roleEv.id) && t.some((e) => e.event_id === regEv.id) ? t : null;
            },
            { what: 'the registration and the role change in the audit trail' },
        );
        assert.equal(trail.filter((e) => e.action === 'account_created').length, DEMO_USERS + 2, 'every registration in the trail');
        const roleEntry = trail.find((e) => e.event_id === roleEv.id);
        assert.equal(roleEntry.trace_id, traceId(tpRole));
        assert.equal(roleEntry.actor_id, admin.body.user.id);
        assert.equal(roleEntry.subject_id, user.id);
        assert.deepEqual(roleEntry.detail, roleEv.data);
        assert.equal(trail.find((e) => e.event_id === regEv.id).trace_id, traceId(tpReg));

        await stopClean(srv);
    });
});

// ---- ordering -----------------------------------------------------------------------------------

describe('ordering and delivery', () => {
    test('concurrent publishers: per partition key, effects follow log order; every event applied exactly once', async () => {
        const srv = await track(startBusServer());
        const CLIENTS = 6;
        const REQUESTS = 5;
        const N = 20;
        const batches = []; // {ids, key, type}
        await Promise.all(
            Array.from({ length: CLIENTS }, async (_, c) => {
                for (let r = 0; r < REQUESTS; r++) {
                    // even requests: one of two keys shared by several clients, set
                    // explicitly, with a subject per client; odd: the client's own
                    // subject, partitionkey left to default to it
                    const shared = r % 2 === 0;
                    const key = shared ? `shared-${c % 2}` : `own-${c}`;
                    const type = (c + r) % 3 === 0 ? 'pl.testkit.order_b.v1' : 'pl.testkit.order.v1';
                    const body = shared ? { type, subject: `c${c}-r${r}`, partitionkey: key, count: N } : { type, subject: key, count: N };
                    const ids = await emit(srv, body);
                    batches.push({ ids, key, type });
                }
            }),
        );
        const all = batches.flatMap((b) => b.ids);
        assert.equal(new Set(all).size, CLIENTS * REQUESTS * N, 'ids are unique');

        await waitFor(async () => (await effects(srv)).length >= all.length, {
            timeoutMs: 20000,
            what: `${all.length} effects`,
            describe: async () => `have ${(await effects(srv)).length}`,
        });
        // Caught up: nothing more can be delivered, so the count below is final.
        await waitFor(async () => (await metrics(srv)).get('pulse_consumer_lag_events{consumer="testkit.effects"}') === 0, { what: 'lag 0' });
        const rows = await effects(srv);

        const applied = countBy(rows, (r) => r.event_id);
        const twice = [...applied].filter(([, n]) => n > 1);
        assert.deepEqual(twice, [], 'no event applied twice');
        assert.equal(rows.length, all.length, 'every event of every batch applied');
        assert.deepEqual(new Set(rows.map((r) => r.event_id)), new Set(all));

        const keyOf = new Map();
        const batchOf = new Map();
        for (const b of batches)
            b.ids.forEach((id, i) => {
                keyOf.set(id, b.key);
                batchOf.set(id, { b, i });
            });
        for (const row of rows) assert.equal(row.type, batchOf.get(row.event_id).b.type);

        // Within a batch: data.seq order.
        for (const b of batches) {
            const seqs = rows.filter((r) => keyOf.has(r.event_id) && batchOf.get(r.event_id).b === b).map((r) => r.seq);
            assert.deepEqual(seqs, Array.from({ length: N }, (_, i) => i), `batch on ${b.key} applied in seq order`);
        }

        // Per key: the order of application is the order of the log.
        const log = await readLog(srv.dataDir, (evs) => evs.filter((e) => keyOf.has(e.id)).length >= all.length, { pattern: 'pl.testkit.*' });
        const pos = new Map(log.map((e, i) => [e.id, i]));
        for (const e of log) {
            assertValidEvent(schemas, e);
            assert.equal(e.partitionkey, keyOf.get(e.id), 'partitionkey as published');
        }
        const keys = new Set(batches.map((b) => b.key));
        assert.equal(keys.size, 2 + CLIENTS);
        for (const key of keys) {
            const order = rows.filter((r) => keyOf.get(r.event_id) === key).map((r) => pos.get(r.event_id));
            const sorted = [...order].sort((a, b) => a - b);
            assert.deepEqual(order, sorted, `effects of ${key} in log order`);
        }
        // The other group saw every event too.
        const t = await tally(srv);
        const perSubject = countBy(log, (e) => e.subject);
        assert.deepEqual(Object.fromEntries(t.map((x) => [x.subject, x.n])), Object.fromEntries(perSubject));

        await stopClean(srv);
    });
    test('two server processes on one data directory share each consumer group: exactly once, in order per key, across the rebalance', async (t) => {
        // testkit alone: its store (SQLite) and the log are shared between
        // processes; identity's embedded stores need not be.
        const dir = await tempDir();
        const a = await track(startBusServer({ dataDir: dir, services: 'testkit' }));
        const batches = [];
        let stop = false;
        const N = 5;
        // Publishers on both processes, running through the second one's
        // start and the rebalance of the partitions between them.
        let b = null;
        const publisher = async (c) => {
            for (let r = 0; !stop; r++) {
                const srv = b && r % 2 ? b : a;
                const key = `k${(c * 3 + r) % 5}`;
                const ids = await emit(srv, { type: 'pl.testkit.two.v1', subject: `c${c}-r${r}`, partitionkey: key, count: N });
                batches.push({ ids, key });
                await sleep(20);
            }
        };
        const pubs = [0, 1, 2].map(publisher);
        await sleep(200);
        try {
            // The embedded kv engine admits one process per file, and every
            // process opens identity's kv (to authenticate): give the second
            // one a file of its own (testkit needs no sessions).
            const env = EMBEDDED ? { PULSE_SERVICE_IDENTITY_KV: `embedded:${path.join(dir, 'identity-b.kv.db')}` } : {};
            b = await track(startBusServer({ dataDir: dir, services: 'testkit', env }));
        } catch (e) {
            // A store that admits one process only makes a second process on
            // the same data impossible.
            stop = true;
            await Promise.all(pubs);
            if (!/in use by another process/.test(e.message)) throw e;
            t.skip(`a second process cannot open this data directory: ${e.message.split('\n').find((l) => l.includes('in use')) || e.message}`);
            await stopClean(a);
            return;
        }
        const handled = async (srv) => (await metrics(srv)).get('pulse_consumer_handled_total{consumer="testkit.effects"}') || 0;
        // The first instance gives up its extra partitions at its next lease
        // renewal (a third of the 10 s lease).
        await waitFor(async () => (await handled(b)) > 0 && (await handled(a)) > 0, { timeoutMs: 8000, intervalMs: 100, what: 'both instances applying events' });
        await sleep(300);
        stop = true;
        await Promise.all(pubs);
        const all = batches.flatMap((x) => x.ids);
        await waitFor(async () => (await effects(a)).length >= all.length, {
            timeoutMs: 15000,
            what: `${all.length} effects`,
            describe: async () => `have ${(await effects(a)).length}`,
        });
        for (const srv of [a, b])
            await waitFor(async () => (await metrics(srv)).get('pulse_consumer_lag_events{consumer="testkit.effects"}') === 0, { what: 'lag 0' });
        const rows = await effects(b);
        assert.deepEqual([...countBy(rows, (r) => r.event_id)].filter(([, n]) => n > 1), [], 'no event applied twice');
        assert.deepEqual(new Set(rows.map((r) => r.event_id)), new Set(all), 'every event applied');
        const log = await readLog(dir, (evs) => evs.length >= all.length, { pattern: 'pl.testkit.*' });
        assert.equal(log.length, all.length, 'each event once in the log (two relays, one outbox)');
        const pos = new Map(log.map((e, i) => [e.id, i]));
        const keyOf = new Map(batches.flatMap((bt) => bt.ids.map((id) => [id, bt.key])));
        for (const key of new Set(keyOf.values())) {
            const order = rows.filter((r) => keyOf.get(r.event_id) === key).map((r) => pos.get(r.event_id));
            assert.deepEqual(order, [...order].sort((x, y) => x - y), `effects of ${key} in log order`);
        }
        await stopClean(b);
        await stopClean(a);
    });
});

// ---- retries and dead letters ----------------------------------------------------------------------

describe('retries and dead letters', () => {
    test('flaky handler applied once after retries; poison dead-lettered while the stream flows; dlq retry / drop; pulse_dlq_size', async () => {
        // Slower backoff than the other tests (30..60, 60..120, 120..240,
        // 150..300 ms: at least 360 ms before a dead letter), so that "another
        // key flowed while the poisoned partition waited" is measurable.
        const srv = await track(startBusServer({ env: { PULSE_BUS_RETRY_BASE: '60ms', PULSE_BUS_RETRY_MAX: '300ms' } }));
        const dir = srv.dataDir;
        const dlqSize = async () => (await metrics(srv)).get('pulse_dlq_size');
        const appliedCount = async (id) => (await effects(srv)).filter((r) => r.event_id === id).length;
        const failures = (id) =>
            parseLogLines(srv.stderr).filter((l) => l.msg === 'event handler failed' && l.event_id === id && l.consumer === 'testkit.effects');

        // 1. Fails three times, then succeeds: applied exactly once.
        const [flaky] = await emit(srv, { type: 'pl.testkit.flaky.v1', subject: 'flaky', data: { fail_times: 3 } });
        await waitFor(async () => (await appliedCount(flaky)) > 0, { what: 'the flaky event applied' });
        assert.deepEqual(failures(flaky).map((l) => l.delivery), [1, 2, 3], 'three failed deliveries, logged');
        assert.equal(await dlqSize(), 0);

        // 2. A poison event; later events on its key and on another partition.
        const pk = 'k-poison';
        // (the embedded log's partitions: FNV-1a of the key modulo 4)
        const other = ['k-other', 'k-other-2', 'k-other-3', 'k-other-4', 'k-other-5'].find((k) => partitionOf(k) !== partitionOf(pk));
        const [poison] = await emit(srv, { type: 'pl.testkit.poison.v1', subject: 'p-1', partitionkey: pk, data: { poison: true } });
        const same = await emit(srv, { type: 'pl.testkit.after.v1', subject: 'p-2', partitionkey: pk, count: 3 });
        const others = await emit(srv, { type: 'pl.testkit.after.v1', subject: 'q', partitionkey: other, count: 3 });
        let sameSeenAt = 0;
        let otherSeenAt = 0;
        await waitFor(
            async () => {
                const ids = new Set((await effects(srv)).map((r) => r.event_id));
                if (!otherSeenAt && others.every((id) => ids.has(id))) otherSeenAt = Date.now();
                if (!sameSeenAt && same.some((id) => ids.has(id))) sameSeenAt = Date.now();
                return sameSeenAt && same.every((id) => ids.has(id)) && otherSeenAt;
            },
            { timeoutMs: 10000, intervalMs: 10, what: 'later events on both keys applied' },
        );
        const dead = await waitFor(async () => (await dlqList(dir)).find((d) => d.event_id === poison), { what: 'the poison in the DLQ' });
        assert.equal(dead.consumer, 'testkit.effects');
        assert.equal(dead.type, 'pl.testkit.poison.v1');
        assert.equal(dead.deliveries, MAX_DELIVER, 'dead-lettered after max_deliver deliveries');
        assert.match(dead.error, /poison event .* fails on every delivery/);
        assert.ok(Number.isInteger(dead.id) && dead.id > 0 && Number.isInteger(dead.seq) && dead.seq > 0);
        const deadAt = Date.parse(dead.dead_at);
        assert.ok(Number.isFinite(deadAt), dead.dead_at);
        if (EMBEDDED)
            assert.ok(otherSeenAt < deadAt, `another partition keeps flowing while the poison is retried (seen ${otherSeenAt}, dead at ${deadAt})`);
        assert.ok(sameSeenAt >= deadAt, `events after the poison on its key wait for it (seen ${sameSeenAt}, dead at ${deadAt})`);
        assert.deepEqual(failures(poison).map((l) => l.delivery), [1, 2, 3, 4, 5]);
        assert.equal(await appliedCount(poison), 0, 'the poison is never applied');
        const rowsNow = await effects(srv);
        assert.deepEqual(rowsNow.filter((r) => same.includes(r.event_id)).map((r) => r.seq), [0, 1, 2], 'same key, in order, once');
        assert.deepEqual(rowsNow.filter((r) => others.includes(r.event_id)).map((r) => r.seq), [0, 1, 2], 'other key, in order, once');
        assert.equal(await dlqSize(), 1);

        // The dead letter is also an event, <type>.dlq, seen only by .dlq patterns.
        const deadLog = await readLog(dir, (evs) => evs.some((e) => e.subject === poison), { pattern: '*.dlq' });
        assert.equal(deadLog.length, 1);
        const dl = deadLog[0];
        assertValidEvent(schemas, dl);
        assert.equal(dl.type, 'pl.testkit.poison.v1.dlq');
        assert.equal(dl.data.event.id, poison);
        assert.equal(dl.data.consumer, 'testkit.effects');
        assert.equal(dl.data.deliveries, MAX_DELIVER);
        assert.equal(dl.data.seq, dead.seq);
        assert.equal(dl.data.error, dead.error);
        const plain = await readLog(dir, (evs) => evs.some((e) => e.id === poison));
        assert.deepEqual(dl.data.event, plain.find((e) => e.id === poison), 'the dead letter carries the event as logged');
        assert.ok(!plain.some((e) => e.type.endsWith('.dlq')), 'a plain pattern never shows dead letters');

        // 3. Fails exactly max_deliver times: dead, then re-driven, applied once.
        const [stubborn] = await emit(srv, { type: 'pl.testkit.stubborn.v1', subject: 's-1', data: { fail_times: MAX_DELIVER } });
        const deadS = await waitFor(async () => (await dlqList(dir)).find((d) => d.event_id === stubborn), { what: 'stubborn in the DLQ' });
        assert.equal(deadS.deliveries, MAX_DELIVER);
        assert.equal(await dlqSize(), 2);
        assert.equal(await appliedCount(stubborn), 0);
        let r = await dlq(dir, 'retry', String(deadS.id));
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /re-driven: 1/);
        await waitFor(async () => (await appliedCount(stubborn)) === 1, { what: 'stubborn applied after the re-drive' });
        await waitFor(async () => !(await dlqList(dir)).some((d) => d.event_id === stubborn), { what: 'stubborn out of the DLQ' });
        await waitFor(async () => (await dlqSize()) === 1, { what: 'pulse_dlq_size 1' });

        // 4. Re-driving the poison fails again: back in the DLQ under a new id.
        r = await dlq(dir, 'retry', String(dead.id));
        assert.equal(r.code, 0, r.stderr);
        const again = await waitFor(
            async () => (await dlqList(dir)).find((d) => d.event_id === poison && d.id !== dead.id),
            { what: 'the poison back in the DLQ' },
        );
        assert.ok(again.id > dead.id, 'a new dead letter id');
        assert.equal(again.consumer, 'testkit.effects');
        assert.equal(again.seq, dead.seq);
        assert.match(again.error, /poison/);
        const list = await dlqList(dir);
        assert.deepEqual(list.map((d) => d.event_id), [poison], 'only the poison is parked');
        assert.equal(await dlqSize(), 1);
        assert.equal(await appliedCount(poison), 0);
        await readLog(dir, (evs) => evs.filter((e) => e.subject === poison).length === 2, { pattern: 'pl.testkit.*.dlq' });

        // 5. Drop it.
        r = await dlq(dir, 'drop', String(again.id));
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(await dlqList(dir), []);
        await waitFor(async () => (await dlqSize()) === 0, { what: 'pulse_dlq_size 0' });
        r = await dlq(dir, 'drop', String(again.id));
        assert.notEqual(r.code, 0, 'dropping it twice fails');
        assert.match(r.stderr, /no dead letter/);
        r = await dlq(dir, 'retry', String(again.id));
        assert.notEqual(r.code, 0, 're-driving a dropped dead letter fails');
        assert.match(r.stderr, /no dead letter/);
        r = await dlq(dir, 'retry', 'nonsense');
        assert.notEqual(r.code, 0);

        // 6. retry --all re-drives every parked event.
        const twins = await emit(srv, { type: 'pl.testkit.twin.v1', subject: 'twin', data: { fail_times: MAX_DELIVER }, count: 2 });
        await waitFor(async () => (await dlqList(dir)).length === 2, { timeoutMs: 15000, what: 'both twins parked' });
        assert.equal(await dlqSize(), 2);
        r = await dlq(dir, 'retry', '--all');
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /re-driven: 2/);
        await waitFor(async () => (await Promise.all(twins.map(appliedCount))).every((n) => n === 1), { what: 'twins applied' });
        assert.deepEqual(await dlqList(dir), []);
        await waitFor(async () => (await dlqSize()) === 0, { what: 'pulse_dlq_size 0' });

        // Exactly once overall; the other consumer group was never affected.
        await waitFor(async () => (await metrics(srv)).get('pulse_consumer_lag_events{consumer="testkit.effects"}') === 0, { what: 'lag 0' });
        const rows = await effects(srv);
        assert.deepEqual([...countBy(rows, (x) => x.event_id)].filter(([, n]) => n !== 1), []);
        assert.equal(rows.length, 1 + 3 + 3 + 1 + 2);
        const t = Object.fromEntries((await tally(srv)).map((x) => [x.subject, x.n]));
        assert.equal(t['p-1'], 1, 'testkit.tally applied the poison event normally');

        await stopClean(srv);
    });
});

// ---- replay -------------------------------------------------------------------------------------

describe('replay', () => {
    test('pulse replay rebuilds audit.directory and testkit.tally equal to the live read models', async () => {
        const dir = await tempDir();
        const srv = await track(startBusServer({ dataDir: dir, demo: true }));
        const admin = await srv.post('/api/v1/auth/login', { login: 'admin', password: 'campus-demo-1' });
        assert.equal(admin.status, 200, admin.text);
        const atok = admin.body.token;
        const users = [];
        for (let i = 0; i < 3; i++) users.push(await srv.session());
        let r = await srv.patch('/api/v1/me', { display_name: 'First Rename' }, { token: users[0].token });
        assert.equal(r.status, 200, r.text);
        r = await srv.patch('/api/v1/me', { display_name: 'Second Rename', bio: 'b' }, { token: users[0].token });
        assert.equal(r.status, 200, r.text);
        r = await srv.patch('/api/v1/me', { display_name: 'Other' }, { token: users[1].token });
        assert.equal(r.status, 200, r.text);
        for (const [u, role] of [
            [0, 'teacher'],
            [0, 'admin'],
            [1, 'teacher'],
            [0, 'student'],
        ]) {
            r = await srv.patch(`/api/v1/users/${users[u].user.id}/role`, { role }, { token: atok });
            assert.equal(r.status, 200, r.text);
        }
        const identityEvents = DEMO_USERS + 3 + 3 + 4;
        let kitEvents = 0;
        for (const [subject, count] of [
            ['a', 5],
            ['b', 3],
            ['a', 2],
            ['c', 7],
        ]) {
            await emit(srv, { type: 'pl.testkit.tallied.v1', subject, count });
            kitEvents += count;
        }
        await emit(srv, { type: 'pl.testkit.tallied.v1', subject: 'd', data: { poison: true } }); // poison to effects, not to tally
        kitEvents += 1;

        const lastRole = (await readLog(dir, (evs) => evs.filter((e) => e.type === ROLE).length === 4, { pattern: ROLE })).at(-1);
        await waitFor(
            async () => {
                const m = await metrics(srv);
                const t = await tally(srv);
                const trail = await auditAll(srv, atok);
                return (
                    t.reduce((s, x) => s + x.n, 0) === kitEvents &&
                    trail.some((e) => e.event_id === lastRole.id) &&
                    m.get('pulse_consumer_lag_events{consumer="audit.directory"}') === 0 &&
                    m.get('pulse_consumer_lag_events{consumer="testkit.tally"}') === 0
                );
            },
            { timeoutMs: 15000, what: 'projections caught up' },
        );
        const before = { tally: await tally(srv), trail: await auditAll(srv, atok) };
        assert.deepEqual(Object.fromEntries(before.tally.map((x) => [x.subject, x.n])), { a: 7, b: 3, c: 7, d: 1 });
        const trailEntry = before.trail.find((e) => e.event_id === lastRole.id);
        assert.equal(trailEntry.subject, users[0].input.username, 'the trail joins the directory for names');
        await stopClean(srv);
        const idLog = await readLog(dir, (evs) => evs.length >= identityEvents, { pattern: 'pl.identity.*' });
        assert.equal(idLog.length, identityEvents, 'events tail reads the log with no server running');

        const auditDb = path.join(dir, 'audit.db');
        const kitDb = path.join(dir, 'testkit.db');
        let dirBefore = null;
        if (HAVE_SQLITE3) {
            dirBefore = await sqliteRows(auditDb, 'SELECT * FROM audit_users ORDER BY user_id');
            assert.equal(dirBefore.length, DEMO_USERS + 3);
            const u0 = dirBefore.find((x) => x.user_id === users[0].user.id);
            assert.deepEqual([u0.display_name, u0.role], ['Second Rename', 'student'], 'the live directory followed the events');
            // Damage both read models: only a real rebuild repairs them.
            await sqliteExec(auditDb, `DELETE FROM audit_users WHERE user_id = '${users[1].user.id}'; UPDATE audit_users SET role = 'admin', display_name = 'x';`);
            await sqliteExec(kitDb, `DELETE FROM testkit_tally WHERE subject = 'a'; UPDATE testkit_tally SET n = 999 WHERE subject = 'c';`);
        }

        const replay = async (projection, expectApplied) => {
            const res = await pulseCmd(dir, ['replay', projection, '--services', SERVICES]);
            assertNoSanitizerReport(res.stderr);
            assert.equal(res.code, 0, `replay ${projection}: ${res.stderr}`);
            assert.match(res.stdout, new RegExp(`replayed ${projection.replace('.', '\\.')}`));
            const line = parseLogLines(res.stderr).find((l) => l.msg === 'replayed');
            assert.ok(line, `a "replayed" log line: ${res.stderr}`);
            assert.equal(line.projection, projection);
            assert.equal(line.applied, expectApplied, `${projection} re-applied every matching event of the log`);
        };
        await replay('audit.directory', identityEvents);
        await replay('testkit.tally', kitEvents);
        const bad = await pulseCmd(dir, ['replay', 'audit.trail', '--services', SERVICES]);
        assert.notEqual(bad.code, 0, 'audit.trail is not a projection: it is never emptied');
        assert.match(bad.stderr, /not a projection/);
        const none = await pulseCmd(dir, ['replay', 'audit.nothing', '--services', SERVICES]);
        assert.notEqual(none.code, 0);
        assert.match(none.stderr, /no hosted projection/);

        if (HAVE_SQLITE3) assert.deepEqual(await sqliteRows(auditDb, 'SELECT * FROM audit_users ORDER BY user_id'), dirBefore, 'directory rebuilt');

        const srv2 = await track(startBusServer({ dataDir: dir }));
        assert.deepEqual(await tally(srv2), before.tally, 'tally after replay equals the live one');
        const atok2 = await adminToken(srv2);
        assert.deepEqual(await auditAll(srv2, atok2), before.trail, 'the trail (names from the directory) is unchanged');
        // Live consumption goes on from the head: no event applied twice.
        await emit(srv2, { type: 'pl.testkit.tallied.v1', subject: 'a' });
        await waitFor(async () => (await tally(srv2)).find((x) => x.subject === 'a').n === 8, { what: 'tally a = 8' });
        await sleep(300);
        assert.deepEqual(Object.fromEntries((await tally(srv2)).map((x) => [x.subject, x.n])), { a: 8, b: 3, c: 7, d: 1 });
        await stopClean(srv2);
    });
});

// ---- malformed events ------------------------------------------------------------------------------

describe('malformed events', () => {
    test('rejected with 400 and a field error; nothing reaches the outbox, the log or a consumer', async () => {
        const srv = await track(startBusServer());
        const T = 'pl.testkit.thing.v1';
        const cases = [
            [{ type: 'pl.testkit.Bad', subject: 'm1' }, 'type'],
            [{ type: 'foo', subject: 'm2' }, 'type'],
            [{ type: 'pl.testkit.x.v0', subject: 'm3' }, 'type'],
            [{ type: 'pl.testkit.thing_.v1', subject: 'm4' }, 'type'],
            [{ type: 'pl.testkit.thing.v1.dlq', subject: 'm5' }, 'type'], // no forged dead letters
            [{ type: `pl.testkit.${'a'.repeat(130)}.v1`, subject: 'm6' }, 'type'],
            [{ type: 'pl.testkit.thing.v1', count: 3 }, 'subject'],
            [{ subject: 'm7' }, 'type'],
            [{ type: T, subject: '' }, 'subject'],
            [{ type: T, subject: 'a\u0001b' }, 'subject'],
            [{ type: T, subject: 'é'.repeat(65) }, 'subject'], // 130 bytes
            [{ type: T, subject: 'm8', partitionkey: 'p'.repeat(129) }, 'partitionkey'],
            [{ type: T, subject: 'm9', data: 5 }, 'data'],
            [{ type: T, subject: 'm10', data: [1] }, 'data'],
            [{ type: T, subject: 'm11', data: 'x' }, 'data'],
            [{ type: T, subject: 'm12', data: null }, 'data'],
            [{ type: T, subject: 'm13', count: 0 }, 'count'],
            [{ type: T, subject: 'm14', extra: true }, 'extra'],
        ];
        for (const [body, field] of cases) {
            const res = await srv.post('/api/v1/testkit/events', body);
            const err = assertError(res, 400, 'validation_failed');
            assert.ok(typeof err.fields[field] === 'string' && err.fields[field].length > 0, `${JSON.stringify(body)}: fields.${field} in ${res.text}`);
            if (field === 'type' && body.type) assert.match(err.message + err.fields.type, /pl\.<context>\.<event>\.v<N>|characters/, res.text);
        }
        for (const raw of ['{"type":"pl.testkit.thing.v1"', 'not json', '{"type":"pl.testkit.thing.v1","subject":"m15","type":"x"}']) {
            const res = await srv.request('POST', '/api/v1/testkit/events', { body: raw, headers: { 'content-type': 'application/json' } });
            assert.equal(res.status, 400, `${raw}: ${res.text}`);
            assert.ok(res.body?.error?.code && res.body.error.message, res.text);
        }
        const arr = await srv.request('POST', '/api/v1/testkit/events', { body: '[]', headers: { 'content-type': 'application/json' } });
        assert.equal(arr.status, 400, arr.text);

        // The sentinel is the only event ever written.
        const [sentinel] = await emit(srv, { type: 'pl.testkit.sentinel.v1', subject: 'sentinel' });
        const log = await readLog(srv.dataDir, (evs) => evs.some((e) => e.id === sentinel));
        assert.deepEqual(log.map((e) => e.id), [sentinel], 'nothing but the sentinel in the log');
        await waitFor(async () => (await effects(srv)).length === 1, { what: 'the sentinel applied' });
        assert.deepEqual((await effects(srv)).map((r) => r.event_id), [sentinel]);
        assert.deepEqual(await dlqList(srv.dataDir), [], 'nothing dead-lettered either');
        const m = await metrics(srv);
        assert.equal(m.get('pulse_outbox_depth{service="testkit"}'), 0);
        assert.equal(m.get('pulse_outbox_published_total{service="testkit"}'), 1);
        await stopClean(srv);
    });
});

// ---- crash safety -------------------------------------------------------------------------------

describe('crash safety', () => {
    test('kill -9 three times during a stream of registrations: every 2xx user exists, with one event and one audit entry', async (t) => {
        const dir = await tempDir();
        let current = await track(startBusServer({ dataDir: dir, demo: true }));

        // First a crash in the very window the inbox exists for: a consumer
        // has committed a batch of effects but not yet written its ack to the
        // log (an outside writer holds bus.db's write lock, so the cursor
        // write waits). After the restart that batch is delivered again, and
        // only the inbox keeps it from being applied twice.
        if (HAVE_SQLITE3) {
            const BULK = 1500;
            await emit(current, { type: 'pl.testkit.bulk.v1', subject: 'bulk', partitionkey: 'bulk', count: BULK });
            await waitFor(async () => (await effects(current)).length >= 50, { what: 'the bulk being consumed' });
            const lock = await holdBusWriteLock(dir);
            try {
                const frozen = await waitFor(
                    async () => {
                        const a = (await effects(current)).length;
                        await sleep(200);
                        const b = (await effects(current)).length;
                        return a === b ? b : 0;
                    },
                    { what: 'the consumer waiting for the log' },
                );
                assert.ok(frozen < BULK, `the consumer was stopped mid-way (${frozen} of ${BULK})`);
                current.kill();
                assert.equal((await current.exited).signal, 'SIGKILL');
                assertNoSanitizerReport(current.stderr);
            } finally {
                await lock.release();
            }
            current = await track(startBusServer({ dataDir: dir }));
        }

        const TOTAL = 150;
        const names = Array.from({ length: TOTAL }, (_, i) => uniq(`k9_${i}`));
        const outcome = new Map(); // username -> {status, body} | {error}
        let next = 0;
        let completed = 0;
        let gate = null;
        const killPoints = new Set();
        while (killPoints.size < 3) killPoints.add(15 + Math.floor(Math.random() * 120));
        const points = [...killPoints].sort((a, b) => a - b);
        const killed = [];

        const worker = async () => {
            for (;;) {
                const i = next++;
                if (i >= TOTAL) return;
                if (gate) await gate;
                const s = current;
                const input = newUserInput({ username: names[i] });
                try {
                    const res = await s.post('/api/v1/auth/register', input);
                    outcome.set(names[i], { status: res.status, body: res.body, text: res.text });
                } catch (e) {
                    outcome.set(names[i], { error: String(e.cause?.code || e.message) });
                }
                completed++;
            }
        };
        // Alongside, testkit batches (5 events in one transaction): their
        // effects table has no unique key, so only the inbox keeps a
        // redelivery after a crash from applying an event twice.
        const kitBatches = []; // {subject, ids} | {subject, error}
        let streaming = true;
        const kitWorker = async () => {
            for (let b = 0; streaming; b++) {
                if (gate) await gate;
                const subject = `crash-${b}`;
                try {
                    const res = await current.post('/api/v1/testkit/events', { type: 'pl.testkit.crash.v1', subject, partitionkey: `ck${b % 3}`, count: 5 });
                    assert.equal(res.status, 201, res.text);
                    kitBatches.push({ subject, ids: res.body.ids });
                } catch (e) {
                    if (e instanceof assert.AssertionError) throw e;
                    kitBatches.push({ subject, error: String(e.cause?.code || e.message) });
                }
                await sleep(5);
            }
        };
        const killer = async () => {
            for (const p of points) {
                while (completed < p) await sleep(1);
                await sleep(Math.random() * 8);
                let open;
                gate = new Promise((resolve) => (open = resolve));
                const victim = current;
                victim.kill(); // SIGKILL by PID
                const res = await victim.exited;
                assert.equal(res.signal, 'SIGKILL');
                assertNoSanitizerReport(victim.stderr);
                killed.push(completed);
                current = await track(startBusServer({ dataDir: dir }));
                gate = null;
                open();
            }
        };
        const kit = kitWorker();
        await Promise.all([worker(), worker(), killer()]);
        streaming = false;
        await kit;
        assert.equal(killed.length, 3);

        const srv = current;
        const ok = names.filter((n) => outcome.get(n).status === 201);
        const failed = names.filter((n) => outcome.get(n).status !== 201);
        for (const n of failed)
            assert.ok(outcome.get(n).error, `a registration either succeeds or dies with the process, never ${outcome.get(n).status}: ${outcome.get(n).text}`);
        assert.ok(ok.length >= TOTAL - 6, `at most two requests in flight per crash (${failed.length} failed)`);

        // Ground truth from identity: who exists, with which id.
        const idOf = new Map();
        for (const n of ok) {
            const u = outcome.get(n).body;
            const res = await srv.get(`/api/v1/users/${u.id}`);
            assert.equal(res.status, 200, `user ${n} acknowledged with 201 exists after the crashes: ${res.text}`);
            assert.equal(res.body.username, n);
            idOf.set(n, u.id);
        }
        for (const n of failed) {
            const res = await srv.post('/api/v1/auth/login', { login: n, password: PASSWORD });
            assert.ok(res.status === 200 || res.status === 401, res.text);
            if (res.status === 200) idOf.set(n, res.body.user.id);
        }
        const sentinel = await srv.register();

        // The log: exactly one user_registered per existing user, none for the others.
        const log = await readLog(dir, (evs) => evs.some((e) => e.type === REGISTERED && e.data.user_id === sentinel.user.id), {
            pattern: 'pl.identity.*',
            timeoutMs: 20000,
        });
        assert.equal(new Set(log.map((e) => e.id)).size, log.length, 'no event id twice in the log');
        const regs = log.filter((e) => e.type === REGISTERED);
        const perName = countBy(regs, (e) => e.data.username);
        for (const n of names) {
            const want = idOf.has(n) ? 1 : 0;
            assert.equal(perName.get(n) || 0, want, `${n}: ${want} user_registered event(s) (outcome ${JSON.stringify(outcome.get(n)).slice(0, 200)})`);
            if (want) assert.equal(regs.find((e) => e.data.username === n).data.user_id, idOf.get(n));
        }
        assert.equal(regs.length, DEMO_USERS + idOf.size + 1, 'no other registrations in the log');
        for (const e of log) assertValidEvent(schemas, e);

        // The audit trail: exactly one account_created per user. The restarted
        // consumers first wait for the killed process's partition leases to
        // expire (10 s); partitions are independent, so wait for every user,
        // then for the group to have acknowledged everything (lag 0: nothing
        // can be delivered again), and only then count.
        const atok = await adminToken(srv);
        const eventOf = new Map(regs.map((e) => [e.data.user_id, e.id]));
        const want = new Set([...idOf.values(), sentinel.user.id]);
        const t0 = Date.now();
        await waitFor(
            async () => {
                const have = new Set((await auditAll(srv, atok)).map((e) => e.subject_id));
                return [...want].every((id) => have.has(id));
            },
            {
                timeoutMs: 25000,
                intervalMs: 250,
                what: 'an audit entry for every user',
                describe: async () => {
                    const have = new Set((await auditAll(srv, atok)).map((e) => e.subject_id));
                    return `missing ${[...want].filter((id) => !have.has(id)).length} of ${want.size}; dlq ${JSON.stringify(await dlqList(dir))}`;
                },
            },
        );
        await waitFor(async () => (await metrics(srv)).get('pulse_consumer_lag_events{consumer="audit.trail"}') === 0, { what: 'audit.trail lag 0' });
        t.diagnostic(`${kitBatches.length} testkit batches (${kitBatches.filter((b) => b.error).length} cut); ${ok.length} registrations acknowledged, ${failed.length} cut by a crash (${failed.filter((n) => idOf.has(n)).length} of them committed); kills after ${killed.join(', ')} completed; audit caught up ${Date.now() - t0} ms after the last check began`);
        const trail = await auditAll(srv, atok);

        // testkit batches: all or nothing in the log, each logged event applied once.
        const kitLog = await readLog(dir, (evs) => kitBatches.filter((b) => b.ids).every((b) => b.ids.every((id) => evs.some((e) => e.id === id))), {
            pattern: 'pl.testkit.*',
        });
        const logged = countBy(kitLog, (e) => e.subject);
        for (const b of kitBatches) {
            const n = logged.get(b.subject) || 0;
            if (b.ids) assert.equal(n, 5, `acknowledged batch ${b.subject} is in the log`);
            else assert.ok(n === 0 || n === 5, `a batch cut by a crash is all or nothing (${b.subject}: ${n})`);
        }
        await waitFor(async () => (await effects(srv)).length >= kitLog.length, { timeoutMs: 15000, what: 'testkit effects caught up' });
        await waitFor(async () => (await metrics(srv)).get('pulse_consumer_lag_events{consumer="testkit.effects"}') === 0, { what: 'testkit.effects lag 0' });
        const kitRows = await effects(srv);
        assert.deepEqual([...countBy(kitRows, (r) => r.event_id)].filter(([, n]) => n !== 1), [], 'no testkit event applied twice across the crashes');
        assert.deepEqual(new Set(kitRows.map((r) => r.event_id)), new Set(kitLog.map((e) => e.id)), 'every logged testkit event applied');
        const created = trail.filter((e) => e.action === 'account_created');
        const perSubject = countBy(created, (e) => e.subject_id);
        for (const [n, id] of idOf) {
            assert.equal(perSubject.get(id) || 0, 1, `${n}: exactly one account_created audit entry`);
            assert.equal(created.find((e) => e.subject_id === id).event_id, eventOf.get(id), 'the entry names the logged event');
        }
        assert.equal(created.length, DEMO_USERS + idOf.size + 1, 'no audit entry for a user that does not exist');
        assert.equal(new Set(trail.map((e) => e.event_id)).size, trail.length, 'one entry per event');
        const seqs = trail.map((e) => e.seq);
        assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a), 'newest first');

        await stopClean(srv);
    });
});

// ---- tail ---------------------------------------------------------------------------------------

describe('events tail', () => {
    test('pulse events tail pl.identity.* prints an event committed while it runs within a second, one CloudEvent per line', async () => {
        const srv = await track(startBusServer());
        const early = await srv.register();
        await readLog(srv.dataDir, (evs) => evs.some((e) => e.data.user_id === early.user.id), { pattern: REGISTERED });

        const tail = trackTail(new Tail(srv.dataDir, { pattern: 'pl.identity.*' }));
        await sleep(1000); // let it open the log and take the head as its start
        await emit(srv, { type: 'pl.testkit.noise.v1', subject: 'noise' }); // not matched by the pattern
        const first = await srv.register();
        const committedBy = Date.now(); // the 201 comes after the commit
        await tail.waitFor((evs) => evs.some((e) => e.data.user_id === first.user.id), { timeoutMs: 5000, what: 'the new registration' });
        const idx = tail.events.findIndex((e) => e.data.user_id === first.user.id);
        const latency = tail.received[idx] - committedBy;
        // a liveness bound, not a speed target: on the distributed profile the event crosses the relay and
        // NATS on a machine that also runs PostgreSQL, Redis and NATS under ASan (the slack of waitFor)
        const bound = EMBEDDED ? 1000 : 3000;
        assert.ok(latency <= bound, `printed ${latency} ms after the commit`);
        const tp = newTraceparent();
        const secondIn = newUserInput();
        const second = await srv.post('/api/v1/auth/register', secondIn, { headers: { traceparent: tp } });
        assert.equal(second.status, 201, second.text);
        await tail.waitFor((evs) => evs.some((e) => e.data.user_id === second.body.id), { timeoutMs: 5000, what: 'the second registration' });
        const r = await srv.patch('/api/v1/me', { bio: 'tail me' }, { token: (await srv.login(secondIn.username)).token });
        assert.equal(r.status, 200, r.text);
        await tail.waitFor((evs) => evs.some((e) => e.type === PROFILE), { timeoutMs: 5000, what: 'the profile update' });

        const evs = await tail.stop();
        assert.deepEqual(
            evs.map((e) => [e.type, e.data.user_id]),
            [
                [REGISTERED, first.user.id],
                [REGISTERED, second.body.id],
                [PROFILE, second.body.id],
            ],
            'only what was committed while it ran, matching the pattern, in order',
        );
        for (const e of evs) assertValidEvent(schemas, e);
        assert.equal(traceId(evs[1].traceparent), traceId(tp));
        await stopClean(srv);
    });
});
