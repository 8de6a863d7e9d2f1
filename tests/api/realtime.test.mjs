// realtime.test.mjs - the WebSocket gateway (/api/v1/stream), black-box, with
// the `ws` client against the real binary (identity + realtime + testkit).
//
//   auth        401 in the error shape without / with a bad token, no upgrade;
//               the token in the query never reaches the log
//   handshake   malformed upgrades are 4xx (no Upgrade, bad version, bad key,
//               POST, malformed last_event_id)
//   delivery    a pl.testkit.push.v1 arrives as a CloudEvent with the
//               recipient list removed; two sessions of one user both get it;
//               another user never does
//   resume      N events while disconnected, reconnect with the last id: exactly
//               the missed ones in order, ready {resumed: N, gap: false}, then
//               live; events racing the reconnect: no gap, no duplicate;
//               unknown / too old id: gap = true
//   slow        a client that stops reading: frames are dropped, oldest first,
//               and a pl.realtime.dropped.v1 notice accounts for every one; one
//               that never reads again is closed as too slow (4008, metrics)
//   revoke      logout closes that session's socket with 4001, not others
//   flood       a client that pings without reading is cut off; others are served
//   abuse       unmasked / oversized / invalid UTF-8 / reserved-opcode frames and
//               garbage after the handshake close that socket; the server stays up
//   liveness    server pings (ping_interval), answers client pings, and a
//               session outlives server.idle_timeout (MHD's) while alive
//   stop        SIGTERM closes every socket with 1001 and exits cleanly
//   end to end  a like (social) becomes a notification (notify) on the post
//               author's socket, and nobody else's
//   instances   (distributed only: embedded kv pub/sub is in-process) a second
//               `--services realtime` process delivers to its own sessions and
//               closes them on a logout made through the first
//
// Runs on both profiles (PULSE_TEST_PROFILE=distributed: PostgreSQL, Redis,
// NATS). No timing assertions: waits have generous timeouts only.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';

import { assertValidEvent, loadSchemas, waitFor } from './bus-harness.mjs';
import { PROFILE, assertError, makeTempDir, rawRequest, removeTempDir, startServer } from './harness.mjs';

const schemas = loadSchemas();

const SERVICES = ['--services', 'identity,realtime,testkit'];
const WAIT_MS = 10000; // generous: "within a second" in practice, ASan and engines included

const STAND_IN_ID = '01a20000-0000-7000-8000-000000000000';

// A connected client: collects every event, exposes ready/closed promises.
function connect(srv, { token, query = '', headers = {}, viaQuery = false } = {}) {
    const qs = new URLSearchParams(query);
    if (viaQuery) qs.set('access_token', token);
    const h = { ...headers };
    if (!viaQuery && token) h.Authorization = `Bearer ${token}`;
    const url = `ws://127.0.0.1:${srv.port}/api/v1/stream${qs.size ? '?' + qs : ''}`;
    const ws = new WebSocket(url, { headers: h });
    const c = { ws, events: [], waiters: [] };
    c.ready = new Promise((resolve, reject) => {
        c.readyResolve = resolve;
        ws.on('error', reject);
        ws.on('unexpected-response', (req, res) => reject(new Error(`unexpected HTTP ${res.statusCode}`)));
    });
    c.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on('message', (data, isBinary) => {
        assert.equal(isBinary, false, 'the server sends text frames');
        const ev = JSON.parse(data.toString());
        c.events.push(ev);
        if (ev.type === 'pl.realtime.ready.v1') c.readyResolve(ev);
        for (const w of [...c.waiters]) w();
    });
    // Resolves when pred(events) holds (re-checked on every message).
    c.until = (pred, what = 'condition') =>
        new Promise((resolve, reject) => {
            const check = () => {
                const v = pred(c.events);
                if (v) {
                    clearTimeout(timer);
                    c.waiters = c.waiters.filter((w) => w !== check);
                    resolve(v);
                }
            };
            const timer = setTimeout(() => {
                c.waiters = c.waiters.filter((w) => w !== check);
                reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(c.events.map((e) => e.type))}`));
            }, WAIT_MS);
            c.waiters.push(check);
            check();
        });
    c.pushes = () => c.events.filter((e) => e.type === 'pl.testkit.push.v1');
    // every message is a CloudEvent valid against the envelope and its type's schema; a socket copy is
    // the bus event without its recipient list (user_ids / recipient_ids), so the list is put back
    // (a stand-in id: the socket does not say which user it is) before validating it as the bus event
    c.validate = () => {
        for (const e of c.events) {
            const list = { 'pl.messaging.message_sent.v1': 'recipient_ids' }[e.type] ??
                (['pl.timeline.entries_added.v1', 'pl.testkit.push.v1'].includes(e.type) ? 'user_ids' : null);
            assertValidEvent(schemas, list ? { ...e, data: { ...e.data, [list]: [STAND_IN_ID] } } : e);
        }
    };
    c.close = () => {
        c.validate();
        ws.close(1000);
        return c.closed;
    };
    return c;
}

async function metric(srv, pattern) {
    const m = (await srv.get('/metrics')).text;
    return Number(new RegExp(`^${pattern} (\\d+)$`, 'm').exec(m)[1]);
}

async function push(srv, userIds, { count = 1, payload = 'hello' } = {}) {
    const res = await srv.post('/api/v1/testkit/events', {
        type: 'pl.testkit.push.v1',
        subject: userIds[0],
        data: { user_ids: userIds, payload },
        count,
    });
    assert.equal(res.status, 201, res.text);
    return res.body.ids;
}

const upgradeHeaders = (extra = {}) => ({
    Connection: 'Upgrade',
    Upgrade: 'websocket',
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    ...extra,
});

function rawUpgrade(port, { path = '/api/v1/stream', method = 'GET', headers = {} }) {
    const lines = [`${method} ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`];
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    return rawRequest(port, lines.join('\r\n') + '\r\n\r\n');
}

describe('realtime gateway', () => {
    let srv;
    let a, b;
    before(async () => {
        srv = await startServer({ args: SERVICES, env: { PULSE_LOG_ACCESS: 'true' } });
        a = await srv.session();
        b = await srv.session();
    });
    after(async () => {
        try {
            if (srv) await srv.stopClean(); // no sanitizer report, no 5xx, no error line
        } finally {
            await srv?.cleanup();
        }
    });

    test('401 in the error shape without a token or with a bad one, and no upgrade', async () => {
        for (const headers of [upgradeHeaders(), upgradeHeaders({ Authorization: 'Bearer nope' })]) {
            const res = await rawUpgrade(srv.port, { headers });
            assert.equal(res.status, 401, res.text);
            assert.equal(res.headers.upgrade, undefined);
            assertError({ ...res, headers: new Map(Object.entries(res.headers)) }, 401, 'unauthorized');
        }
        const secret = 'not-a-token-' + randomBytes(8).toString('hex');
        const res = await rawUpgrade(srv.port, { path: `/api/v1/stream?access_token=${secret}`, headers: upgradeHeaders() });
        assert.equal(res.status, 401);
        // a real token in the query works, and neither token reaches the log
        const c = connect(srv, { token: a.token, viaQuery: true });
        await c.ready;
        await c.close();
        await new Promise((r) => setTimeout(r, 100));
        assert.ok(!srv.stderr.includes(secret), 'a rejected token is not logged');
        assert.ok(!srv.stderr.includes(a.token), 'the access token is not logged');
        const lines = srv.logLines().filter((l) => l.msg === 'access' && l.path === '/api/v1/stream');
        assert.ok(lines.some((l) => l.status === 101), 'the upgrade has an access log line (101)');
    });

    test('malformed upgrade requests are 4xx and change nothing', async () => {
        const auth = { Authorization: `Bearer ${a.token}` };
        const cases = [
            [{ ...auth }, 400], // a plain GET
            [{ ...auth, ...upgradeHeaders({ Upgrade: 'h2c' }) }, 400],
            [{ ...auth, ...upgradeHeaders({ Connection: 'keep-alive' }) }, 400],
            [{ ...auth, ...upgradeHeaders({ 'Sec-WebSocket-Version': '8' }) }, 400],
            [{ ...auth, ...upgradeHeaders({ 'Sec-WebSocket-Key': 'c2hvcnQ=' }) }, 400],
            [{ ...auth, ...upgradeHeaders({ 'Sec-WebSocket-Key': '!!!!!!!!!!!!!!!!!!!!!!==' }) }, 400],
        ];
        for (const [headers, status] of cases) {
            const res = await rawUpgrade(srv.port, { headers });
            assert.equal(res.status, status, `${JSON.stringify(headers)}: ${res.text}`);
            assert.ok(res.body?.error?.code, res.text);
        }
        const v = await rawUpgrade(srv.port, { headers: { ...auth, ...upgradeHeaders({ 'Sec-WebSocket-Version': '8' }) } });
        assert.equal(v.headers['sec-websocket-version'], '13');
        const post = await rawUpgrade(srv.port, { method: 'POST', headers: { ...auth, ...upgradeHeaders(), 'Content-Length': '0' } });
        assert.equal(post.status, 405);
        const bad = await rawUpgrade(srv.port, { path: '/api/v1/stream?last_event_id=nope', headers: { ...auth, ...upgradeHeaders() } });
        assert.equal(bad.status, 400);
        assert.ok(bad.body.error.fields.last_event_id, bad.text);
        await srv.assertHealthy();
    });

    test('an event reaches both sessions of its user within a second, never another user', async () => {
        const a1 = connect(srv, { token: a.token });
        const a2 = connect(srv, { token: a.token });
        const b1 = connect(srv, { token: b.token });
        const readies = await Promise.all([a1.ready, a2.ready, b1.ready]);
        for (const r of readies) {
            assert.equal(r.source, '/pulse/realtime');
            assert.equal(r.data.gap, false);
            assert.equal(r.data.resumed, 0);
            assert.match(r.data.session_id, /^[0-9a-f-]{36}$/);
        }
        assert.equal(readies[0].subject, a.user.id);
        const [id] = await push(srv, [a.user.id], { payload: 'for a' });
        for (const c of [a1, a2]) {
            const ev = await c.until((es) => es.find((e) => e.id === id), 'the push');
            assert.equal(ev.specversion, '1.0');
            assert.equal(ev.type, 'pl.testkit.push.v1');
            assert.equal(ev.source, '/pulse/testkit');
            assert.equal(ev.subject, a.user.id);
            assert.ok(ev.time);
            assert.equal(ev.data.payload, 'for a');
            assert.equal(ev.data.user_ids, undefined, 'the recipient list is removed');
        }
        // A's event was delivered everywhere before B's was even emitted: had
        // it been routed to B, B would have it before its own.
        const [idb] = await push(srv, [b.user.id], { payload: 'for b' });
        await b1.until((es) => es.find((e) => e.id === idb), "b's push");
        assert.deepEqual(b1.pushes().map((e) => e.id), [idb], 'B receives only its own events');
        assert.ok(!a1.events.some((e) => e.id === idb) && !a2.events.some((e) => e.id === idb));
        // one event for both users (A listed twice, plus junk): each session gets it once
        const [both] = await push(srv, [a.user.id, b.user.id, a.user.id, 'not-a-user']);
        for (const c of [a1, a2, b1]) await c.until((es) => es.find((e) => e.id === both), 'the shared push');
        const [after] = await push(srv, [a.user.id]);
        for (const c of [a1, a2]) await c.until((es) => es.find((e) => e.id === after), 'the push after it');
        for (const c of [a1, a2, b1]) assert.equal(c.events.filter((e) => e.id === both).length, 1, 'exactly once');
        await Promise.all([a1.close(), a2.close(), b1.close()]);
    });

    test('a burst larger than one pub/sub message (past 1 MiB) arrives whole, in order, once', async () => {
        const u = await srv.session();
        const c = connect(srv, { token: u.token });
        await c.ready;
        // 60 events of 64 KiB in one transaction: the consumer takes them in few batches, whose
        // records the flush splits over several messages
        const ids = await push(srv, [u.user.id], { count: 60, payload: 'z'.repeat(65536) });
        await c.until((es) => es.filter((e) => e.type === 'pl.testkit.push.v1').length >= 60, 'the burst');
        await new Promise((r) => setTimeout(r, 200)); // a duplicate would show up now
        assert.deepEqual(c.pushes().map((e) => e.id), ids, 'every event once, in order');
        assert.ok(c.pushes().every((e) => e.data.payload.length === 65536));
        await c.close();
    });

    test('resume: exactly the missed events in order, then live; no gap, no duplicate', async () => {
        const u = await srv.session();
        const watch = connect(srv, { token: u.token }); // stays connected: tells when the events were handled
        await watch.ready;
        const c1 = connect(srv, { token: u.token });
        await c1.ready;
        const [first] = await push(srv, [u.user.id]);
        await c1.until((es) => es.find((e) => e.id === first), 'the first push');
        await c1.close();
        const missed = await push(srv, [u.user.id], { count: 5 });
        await watch.until((es) => missed.every((id) => es.some((e) => e.id === id)), 'the missed pushes');

        const c2 = connect(srv, { token: u.token, query: { last_event_id: first } });
        const ready = await c2.ready;
        assert.deepEqual(ready.data, { session_id: ready.data.session_id, resumed: 5, gap: false });
        const before = c2.events.slice(0, c2.events.indexOf(ready));
        assert.deepEqual(before.map((e) => e.id), missed, 'the missed events, in order, before ready');
        assert.equal(before[0].data.user_ids, undefined);
        const [live] = await push(srv, [u.user.id]);
        await c2.until((es) => es.find((e) => e.id === live), 'the live push');
        assert.deepEqual(c2.pushes().map((e) => e.id), [...missed, live]);
        await c2.close();

        // events racing the reconnect: whatever the interleaving, every one exactly once
        const last = live;
        const racing = push(srv, [u.user.id], { count: 20 });
        const c3 = connect(srv, { token: u.token, headers: { 'Last-Event-ID': last } });
        const ids = await racing;
        await c3.until((es) => ids.every((id) => es.some((e) => e.id === id)), 'the racing pushes');
        const got = c3.pushes().map((e) => e.id);
        assert.equal(new Set(got).size, got.length, 'no duplicate');
        assert.deepEqual([...got].sort(), [...ids].sort(), 'no gap, nothing else');
        await c3.close();
        await watch.close();
    });

    test('resume from an unknown or too old id says gap', async () => {
        const u = await srv.session();
        const w = connect(srv, { token: u.token });
        await w.ready;
        const ids = await push(srv, [u.user.id], { count: 2 });
        await w.until((es) => ids.every((id) => es.some((e) => e.id === id)), 'the pushes');
        const old = connect(srv, { token: u.token, query: { last_event_id: '00000000-0000-7000-8000-000000000000' } });
        const r1 = await old.ready;
        assert.equal(r1.data.gap, true);
        assert.equal(r1.data.resumed, 2, 'everything retained is replayed');
        assert.deepEqual(old.pushes().map((e) => e.id), ids);
        const unknown = connect(srv, { token: u.token, query: { last_event_id: 'ffffffff-ffff-7fff-bfff-ffffffffffff' } });
        const r2 = await unknown.ready;
        assert.equal(r2.data.gap, true);
        assert.equal(r2.data.resumed, 0);
        await Promise.all([old.close(), unknown.close(), w.close()]);
    });

    test('logout closes that session with 4001, and not the others', async () => {
        const u = await srv.session();
        const other = await srv.login(u.input.username); // a second login session of the same user
        const c1 = connect(srv, { token: u.token });
        const c2 = connect(srv, { token: other.token });
        await Promise.all([c1.ready, c2.ready]);
        const res = await srv.post('/api/v1/auth/logout', undefined, { token: u.token });
        assert.equal(res.status, 204, res.text);
        const closed = await c1.closed;
        assert.equal(closed.code, 4001);
        c1.validate();
        // the other login session still receives
        const [id] = await push(srv, [u.user.id]);
        await c2.until((es) => es.find((e) => e.id === id), 'a push after the logout');
        assert.equal(c2.ws.readyState, WebSocket.OPEN);
        // and the revoked token cannot open a new one
        const again = await rawUpgrade(srv.port, { headers: { Authorization: `Bearer ${u.token}`, ...upgradeHeaders() } });
        assert.equal(again.status, 401);
        await c2.close();
    });

    test('protocol abuse after the handshake closes that socket only', async () => {
        // a raw client: handshake, then bytes no WebSocket client may send
        const abuse = (bytes) =>
            new Promise((resolve, reject) => {
                const sock = net.connect({ host: '127.0.0.1', port: srv.port });
                let buf = Buffer.alloc(0);
                let upgraded = false;
                const timer = setTimeout(() => reject(new Error('the server kept the socket open')), WAIT_MS);
                sock.on('connect', () =>
                    sock.write(
                        `GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\n` +
                            Object.entries(upgradeHeaders()).map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n',
                    ),
                );
                sock.on('data', (d) => {
                    buf = Buffer.concat([buf, d]);
                    if (!upgraded && buf.includes('\r\n\r\n')) {
                        upgraded = true;
                        assert.match(buf.toString('latin1'), /^HTTP\/1\.1 101/);
                        sock.write(bytes);
                    }
                });
                sock.on('error', () => {});
                sock.on('close', () => {
                    clearTimeout(timer);
                    resolve(buf);
                });
            });
        const masked = (opcode, payload, lenBytes) => Buffer.concat([Buffer.from([0x80 | opcode]), lenBytes, Buffer.alloc(4), payload]);
        const cases = [
            Buffer.from([0x81, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f]), // unmasked client frame
            masked(0x1, Buffer.alloc(0), Buffer.from([0xff, 0, 0, 0, 0, 0, 0x10, 0, 0])), // claims 1 MiB > the 4 KiB limit
            masked(0x1, Buffer.from([0xc3, 0x28]), Buffer.from([0x82])), // invalid UTF-8 text
            masked(0x3, Buffer.from('x'), Buffer.from([0x81])), // reserved opcode
            randomBytes(64),
        ];
        await Promise.all(cases.map(abuse));
        await srv.assertHealthy();
        const c = connect(srv, { token: a.token });
        await c.ready;
        await c.close();
    });

    test('a client that floods pings and never reads is cut off; the others are not held up', async () => {
        const open = () => metric(srv, 'pulse_ws_sessions_open\\{hub="realtime"\\}');
        const before = await open();
        const sock = net.connect({ host: '127.0.0.1', port: srv.port });
        sock.on('error', () => {}); // the reset when the server cuts it off
        const closed = new Promise((r) => sock.on('close', r));
        await new Promise((resolve) => {
            let buf = Buffer.alloc(0);
            sock.on('connect', () =>
                sock.write(
                    `GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.token}\r\n` +
                        Object.entries(upgradeHeaders()).map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n',
                ),
            );
            const onData = (d) => {
                buf = Buffer.concat([buf, d]);
                if (buf.includes('\r\n\r\n')) {
                    sock.off('data', onData);
                    sock.pause(); // from here on nothing is read: the pongs back up
                    resolve();
                }
            };
            sock.on('data', onData);
        });
        assert.equal(await open(), before + 1);
        // 40,000 masked pings of 125 bytes (5 MB): far more pongs than the socket buffers hold
        const ping = Buffer.concat([Buffer.from([0x89, 0x80 | 125]), Buffer.alloc(4), Buffer.alloc(125, 0x61)]);
        for (let i = 0; i < 40; i++) sock.write(Buffer.concat(Array(1000).fill(ping)));
        await waitFor(async () => (await open()) === before, { timeoutMs: WAIT_MS, what: 'the flooding session closed' });
        sock.resume();
        await closed;
        // meanwhile and after, another session is served
        const c = connect(srv, { token: a.token });
        await c.ready;
        const [id] = await push(srv, [a.user.id]);
        await c.until((es) => es.find((e) => e.id === id), 'a push to a well-behaved session');
        await c.close();
        await srv.assertHealthy();
    });

    test('pings: a client ping is answered', async () => {
        const c = connect(srv, { token: a.token });
        await c.ready;
        const pong = new Promise((r) => c.ws.once('pong', (d) => r(d.toString())));
        c.ws.ping('probe');
        assert.equal(await pong, 'probe');
        // client text frames are ignored: the session stays open and working
        c.ws.send('{"type":"ping"}');
        const [id] = await push(srv, [a.user.id]);
        await c.until((es) => es.find((e) => e.id === id), 'a push after a client text frame');
        await c.close();
    });
});

// One server for the tests that need small limits (starting servers is what
// costs time on the distributed profile).
describe('realtime gateway: small limits', () => {
    let srv;
    before(async () => {
        srv = await startServer({
            args: SERVICES,
            env: {
                PULSE_SERVICE_REALTIME_PING_INTERVAL: '1s',
                PULSE_SERVER_IDLE_TIMEOUT: '2s',
                PULSE_SERVICE_REALTIME_SEND_QUEUE_MAX: '2',
                PULSE_SERVICE_REALTIME_SEND_BUFFER: '4096',
                PULSE_SERVER_CONNECTION_MEMORY: '8KiB',
            },
        });
    });
    after(async () => {
        await srv?.cleanup();
    });

    test('server pings every ping_interval and a live session outlives server.idle_timeout', async () => {
        const u = await srv.session();
        const c = connect(srv, { token: u.token });
        await c.ready;
        let pings = 0;
        c.ws.on('ping', () => pings++);
        await new Promise((r) => setTimeout(r, 3500)); // past MHD's idle timeout
        assert.ok(pings >= 1, 'the server pinged');
        assert.equal(c.ws.readyState, WebSocket.OPEN, 'an upgraded session is not MHD idle-timed out');
        const [id] = await push(srv, [u.user.id]);
        await c.until((es) => es.find((e) => e.id === id), 'a push after the idle period');
        await c.close();
    });

    test('a gateway process with a small connection pool (server.connection_memory) serves sessions', async () => {
        const u = await srv.session();
        const c = connect(srv, { token: u.token });
        await c.ready;
        const [id] = await push(srv, [u.user.id]);
        await c.until((es) => es.find((e) => e.id === id), 'the push');
        // headers beyond the pool: libmicrohttpd answers them itself, still a 4xx (or a close), never a crash
        const big = await rawUpgrade(srv.port, { headers: { ...upgradeHeaders(), 'X-Pad': 'p'.repeat(12000) } });
        assert.ok(big.status === undefined || (big.status >= 400 && big.status < 500), `got ${big.status}`);
        await c.close();
    });

    test('a client that stops reading gets a dropped notice accounting for every dropped event', async () => {
        const u = await srv.session();
        const watch = connect(srv, { token: u.token });
        const slow = connect(srv, { token: u.token });
        await Promise.all([watch.ready, slow.ready]);
        const droppedBefore = await metric(srv, 'pulse_ws_frames_dropped_total\\{hub="realtime"\\}');
        slow.ws._socket.pause(); // stop reading: the kernel buffers fill, then the queue
        const N = 150;
        const ids = await push(srv, [u.user.id], { count: N, payload: 'x'.repeat(16384) });
        const notices = (c) => c.events.filter((e) => e.type === 'pl.realtime.dropped.v1');
        const accounted = (c) => c.pushes().length + notices(c).reduce((n, e) => n + e.data.count, 0);
        // the watcher (a reading client, though with the same tiny queue) has
        // every event or its notice: the hub has applied every publish to both
        await watch.until(() => accounted(watch) === N, 'every event at the watcher');
        slow.ws._socket.resume();
        await slow.until(() => accounted(slow) === N, 'every event received or reported dropped');
        assert.ok(notices(slow).length >= 1, 'at least one dropped notice');
        slow.validate();
        watch.validate();
        const got = slow.pushes().map((e) => e.id);
        assert.equal(new Set(got).size, got.length, 'no duplicate');
        const pos = got.map((id) => ids.indexOf(id));
        assert.deepEqual(pos, [...pos].sort((x, y) => x - y), 'what arrives keeps its order');
        for (const n of notices(slow)) {
            assert.ok(n.data.count > 0);
            assert.ok(ids.includes(n.data.first_id) && ids.includes(n.data.last_id));
            assert.ok(!got.includes(n.data.first_id) && !got.includes(n.data.last_id), 'a dropped event is not delivered');
        }
        const dropped = (await metric(srv, 'pulse_ws_frames_dropped_total\\{hub="realtime"\\}')) - droppedBefore;
        assert.equal(dropped, 2 * N - got.length - watch.pushes().length, 'the metric counts every drop');
        await Promise.all([slow.close(), watch.close()]);
    });

    test('SIGTERM closes every session with 1001 and exits cleanly', async () => {
        const u = await srv.session();
        const cs = [connect(srv, { token: u.token }), connect(srv, { token: u.token })];
        await Promise.all(cs.map((c) => c.ready));
        const stopped = srv.stopClean();
        const closes = await Promise.all(cs.map((c) => c.closed));
        for (const cl of closes) assert.equal(cl.code, 1001);
        await stopped;
    });
});

describe('realtime gateway: stalled client', () => {
    test('a client that stays connected but never reads is closed as too slow (4008)', async () => {
        const srv = await startServer({
            args: SERVICES,
            env: {
                PULSE_SERVICE_REALTIME_SEND_QUEUE_MAX: '2',
                PULSE_SERVICE_REALTIME_SEND_BUFFER: '4096',
                PULSE_SERVICE_REALTIME_IDLE_TIMEOUT: '1s',
            },
        });
        try {
            const u = await srv.session();
            const stuck = connect(srv, { token: u.token });
            await stuck.ready;
            stuck.ws._socket.pause();
            // it keeps talking (so it is not idle) but never reads
            const talk = setInterval(() => stuck.ws.readyState === WebSocket.OPEN && stuck.ws.ping(), 300);
            try {
                const tooSlow = async () => {
                    const m = (await srv.get('/metrics')).text;
                    return Number(/pulse_ws_closes_total\{hub="realtime",reason="too_slow"\} (\d+)/.exec(m)[1]);
                };
                // pushes keep coming (a burst delivered in one consumer batch would only be cut to the
                // queue's 2 newest, which fit in the socket buffers: no output would be left waiting)
                const deadline = Date.now() + WAIT_MS;
                for (let i = 0; i < 60 && (await tooSlow()) < 1 && Date.now() < deadline; i++) {
                    await push(srv, [u.user.id], { count: 3, payload: 'y'.repeat(16384) });
                    await new Promise((r) => setTimeout(r, 100));
                }
                while ((await tooSlow()) < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
                assert.equal(await tooSlow(), 1, 'closed for making no write progress');
            } finally {
                clearInterval(talk);
            }
            stuck.ws._socket.resume();
            await stuck.closed; // the socket is gone (the close frame itself may not fit)
            await srv.stopClean();
        } finally {
            await srv.cleanup();
        }
    });
});

describe('realtime gateway: several instances', () => {
    test('a realtime-only instance delivers to its sessions and closes them on logout', {
        skip: PROFILE !== 'distributed' && 'the embedded kv reaches subscribers in one process only',
    }, async () => {
        const dir = await makeTempDir();
        let one, two;
        try {
            one = await startServer({ dataDir: dir, args: SERVICES });
            two = await startServer({ dataDir: dir, args: ['--services', 'realtime'] });
            const u = await one.session();
            const c1 = connect(one, { token: u.token });
            const c2 = connect(two, { token: u.token }); // authenticated by the shared session store
            await Promise.all([c1.ready, c2.ready]);
            const ids = await push(one, [u.user.id], { count: 3 });
            for (const c of [c1, c2]) await c.until((es) => ids.every((id) => es.some((e) => e.id === id)), 'the pushes');
            assert.deepEqual(c2.pushes().map((e) => e.id), ids, 'each instance delivers each event once');
            assert.deepEqual(c1.pushes().map((e) => e.id), ids);
            const res = await one.post('/api/v1/auth/logout', undefined, { token: u.token });
            assert.equal(res.status, 204);
            assert.equal((await c2.closed).code, 4001);
            assert.equal((await c1.closed).code, 4001);
            await two.stopClean();
            await one.stopClean();
        } finally {
            await two?.cleanup();
            await one?.cleanup();
            await removeTempDir(dir);
        }
    });
});

describe('realtime gateway: end to end', () => {
    test('a like becomes a notification on the author\'s socket, and nobody else\'s', async () => {
        const srv = await startServer({ args: ['--services', 'identity,social,notify,realtime'] });
        try {
            const author = await srv.session();
            const fan = await srv.session();
            const ca = connect(srv, { token: author.token });
            const cf = connect(srv, { token: fan.token });
            await Promise.all([ca.ready, cf.ready]);
            // social learns about new users from identity's events: retry until it has
            const post = await waitFor(async () => {
                const r = await srv.post('/api/v1/posts', { text: 'hello campus', visibility: 'public' }, { token: author.token });
                return r.status === 201 ? r.body : null;
            }, { what: 'the post' });
            await waitFor(async () => {
                const r = await srv.post(`/api/v1/posts/${post.id}/like`, undefined, { token: fan.token });
                return r.status < 300;
            }, { what: 'the like' });
            const ev = await ca.until(
                (es) => es.find((e) => e.type === 'pl.notify.notification_created.v1' && e.data.object_id === post.id),
                'the like notification',
            );
            assert.equal(ev.source, '/pulse/notify');
            assert.equal(ev.data.user_id, author.user.id);
            assert.equal(ev.data.kind, 'like');
            assert.deepEqual(ev.data.actor_ids, [fan.user.id]);
            // the same notification is in the author's inbox over REST
            const inbox = await srv.get('/api/v1/notifications?limit=10', { token: author.token });
            assert.ok(inbox.body.items.some((n) => n.id === ev.data.notification_id), inbox.text);
            assert.ok(!cf.events.some((e) => e.type.startsWith('pl.notify.')), 'the liker gets no notification');
            await Promise.all([ca.close(), cf.close()]);
            await srv.stopClean();
        } finally {
            await srv.cleanup();
        }
    });
});
