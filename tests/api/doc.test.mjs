// doc.test.mjs - the doc store kind inside a real server, through the doctest
// fixture service (src/services/doctest; hosted only when named): a service
// with a doc store and no sql store gets its outbox and its consumers' inbox
// on the doc store (one transaction with the documents), /readyz reports the
// doc store, documents survive a restart, bad input is a 400 that changes
// nothing. Runs on both profiles (SQLite JSON1 / PostgreSQL JSONB).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { EMBEDDED, assertValidEvent, loadSchemas, readLog, startBusServer, waitFor } from './bus-harness.mjs';
import { assertError, makeTempDir, removeTempDir } from './harness.mjs';

const servers = [];
const dirs = [];
after(async () => {
    for (const s of servers) await s.cleanup();
    for (const d of dirs) await removeTempDir(d);
});

async function start(dir) {
    const s = await startBusServer({ dataDir: dir, services: 'doctest' });
    servers.push(s);
    return s;
}

const put = (s, id, json) => s.request('PUT', `/api/v1/doctest/notes/${encodeURIComponent(id)}`, { json });

describe('doc store in a service', () => {
    test('writes, reads, queries, events in the same transaction, readiness, restart', async () => {
        const dir = await makeTempDir();
        dirs.push(dir);
        const s = await start(dir);

        const ready = await s.get('/readyz');
        assert.equal(ready.status, 200, ready.text);
        assert.equal(JSON.stringify(ready.body).includes('"doctest.doc":"ok"'), true, ready.text);
        assert.equal(JSON.stringify(ready.body).includes('doctest.sql'), false, 'no separate sql store: ' + ready.text);

        const notes = [
            ['n1', { owner: 'ann', n: 1, text: 'first' }],
            ['n2', { owner: 'ann', n: 3, text: 'th\u00e9 "quoted" \\ \u{1F600}', meta: { kind: 'x' } }],
            ['n3', { owner: 'bob', n: 2 }],
            ['n4', { owner: 'ann', n: 2 }],
        ];
        for (const [id, doc] of notes) {
            const r = await put(s, id, doc);
            assert.equal(r.status, 201, r.text);
            assert.deepEqual(r.body, { id, created: true });
        }
        const again = await put(s, 'n1', { owner: 'ann', n: 5, text: 'replaced' });
        assert.equal(again.status, 200, again.text);
        assert.equal(again.body.created, false);

        const got = await s.get('/api/v1/doctest/notes/n2');
        assert.equal(got.status, 200, got.text);
        assert.deepEqual(got.body, notes[1][1]);
        assertError(await s.get('/api/v1/doctest/notes/nope'), 404, 'not_found');

        const list = await s.get('/api/v1/doctest/notes?owner=ann&limit=10');
        assert.equal(list.status, 200, list.text);
        assert.deepEqual(list.body.items.map((i) => i.id), ['n1', 'n2', 'n4']); // n descending: 5, 3, 2
        const two = await s.get('/api/v1/doctest/notes?owner=ann&limit=2');
        assert.deepEqual(two.body.items.map((i) => i.id), ['n1', 'n2']);

        // bad input: 400 in the error shape, nothing written, nothing emitted
        for (const bad of [{ n: 1 }, { owner: 'ann', n: 'x' }, { owner: '', n: 1 }]) assertError(await put(s, 'bad', bad), 400, 'validation_failed');
        assertError(await put(s, 'x'.repeat(129), { owner: 'ann', n: 1 }), 400, 'validation_failed');
        assertError(await s.request('PUT', '/api/v1/doctest/notes/bad', { body: '[1,2]', headers: { 'content-type': 'application/json' } }), 400);
        assertError(await s.get('/api/v1/doctest/notes/bad'), 404, 'not_found');
        assertError(await s.get('/api/v1/doctest/notes'), 400, 'validation_failed');

        // the consumer (its inbox on the doc store) applies each event once
        const seen = await waitFor(async () => {
            const r = await s.get('/api/v1/doctest/seen');
            return r.status === 200 && r.body.puts === 5 && r.body;
        }, { what: 'the seen consumer to count 5 note_put events' });
        assert.equal(seen.puts, 5);

        if (EMBEDDED) {
            assert.ok(fs.existsSync(path.join(dir, 'doctest.doc.db')), 'embedded doc store is <service>.doc.db');
            assert.ok(!fs.existsSync(path.join(dir, 'doctest.db')), 'no sql file for a doc-only service');
        }
        await s.stopClean();

        // the events in the log validate against their schema, in commit order
        const schemas = loadSchemas();
        const events = await readLog(dir, (evs) => evs.filter((e) => e.type === 'pl.doctest.note_put.v1').length >= 5, {
            pattern: 'pl.doctest.*',
        });
        const mine = events.filter((e) => e.type === 'pl.doctest.note_put.v1');
        assert.deepEqual(mine.map((e) => e.subject), ['n1', 'n2', 'n3', 'n4', 'n1']);
        assert.deepEqual(mine.map((e) => e.data.created), [true, true, true, true, false]);
        for (const e of mine) assertValidEvent(schemas, e);

        // restart on the same data: documents and the counter are there, nothing re-applied
        const s2 = await start(dir);
        const after2 = await s2.get('/api/v1/doctest/notes/n1');
        assert.equal(after2.status, 200, after2.text);
        assert.equal(after2.body.text, 'replaced');
        const seen2 = await s2.get('/api/v1/doctest/seen');
        assert.equal(seen2.body.puts, 5);
        await s2.stopClean();
    });
});
