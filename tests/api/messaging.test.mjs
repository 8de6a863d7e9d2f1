// messaging.test.mjs - conversations and messages end to end: direct dedupe,
// groups and membership (add, remove, leave), non-members get 404 on every
// route, unread counts and read markers, paging both ways with opaque
// cursors, idempotent send, malformed input (4xx, nothing changes), and the
// emitted events validating against their schemas.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { assertError, startServer } from './harness.mjs';
import { BUS_ENV, assertValidEvent, loadSchemas, readLog, waitFor } from './bus-harness.mjs';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('messaging', () => {
    let srv;
    before(async () => {
        srv = await startServer({ env: BUS_ENV, args: ['--services', 'identity,messaging'] });
    });
    after(async () => {
        await srv?.cleanup();
    });

    const api = (method, p, token, json, headers) => srv.request(method, p, { token, json, headers });
    const create = (token, body) => api('POST', '/api/v1/conversations', token, body);
    const send = (token, cid, text, headers) => api('POST', `/api/v1/conversations/${cid}/messages`, token, { text }, headers);
    const conv = (token, cid) => api('GET', `/api/v1/conversations/${cid}`, token);
    const messages = (token, cid, q = '') => api('GET', `/api/v1/conversations/${cid}/messages${q}`, token);
    const markRead = (token, cid, body) => api('POST', `/api/v1/conversations/${cid}/read`, token, body);
    const list = (token, q = '') => api('GET', `/api/v1/conversations${q}`, token);

    // Users the messaging service knows (its read model follows identity's events).
    async function users(n) {
        const out = [];
        for (let i = 0; i < n; i++) {
            const s = await srv.session();
            out.push({ id: s.user.id, token: s.token });
        }
        return out;
    }
    // Creates, retrying while the newest users are not yet projected (422).
    async function createKnown(token, body) {
        let res;
        await waitFor(async () => {
            res = await create(token, body);
            return res.status !== 422;
        }, { what: 'the users reaching the messaging read model' });
        return res;
    }
    async function group(owner, others, title = 'Study group') {
        const res = await createKnown(owner.token, { kind: 'group', title, member_ids: others.map((u) => u.id) });
        assert.equal(res.status, 201, res.text);
        return res.body;
    }

    test('a direct conversation is created once per pair: the second create returns it (200), from either side', async () => {
        const [a, b] = await users(2);
        const first = await createKnown(a.token, { kind: 'direct', member_ids: [b.id] });
        assert.equal(first.status, 201, first.text);
        const c = first.body;
        assert.match(c.id, UUID);
        assert.equal(c.kind, 'direct');
        assert.equal(c.title, null);
        assert.deepEqual(c.member_ids, [a.id, b.id]);
        assert.equal(c.created_by, a.id);
        assert.equal(c.unread_count, 0);
        assert.equal(c.last_message, null);
        assert.equal(first.headers.get('location'), `/api/v1/conversations/${c.id}`);
        const again = await create(a.token, { kind: 'direct', member_ids: [b.id] });
        assert.equal(again.status, 200, again.text);
        assert.equal(again.body.id, c.id);
        const mirrored = await create(b.token, { kind: 'direct', member_ids: [a.id, b.id] });
        assert.equal(mirrored.status, 200, mirrored.text);
        assert.equal(mirrored.body.id, c.id);
        const mine = await list(a.token);
        assert.equal(mine.body.items.filter((x) => x.id === c.id).length, 1);
        // concurrent creates of a new pair still make one conversation
        const [x, y] = await users(2);
        await createKnown(x.token, { kind: 'group', title: 'warm-up', member_ids: [y.id, a.id] });
        const both = await Promise.all([
            create(x.token, { kind: 'direct', member_ids: [y.id] }),
            create(y.token, { kind: 'direct', member_ids: [x.id] }),
        ]);
        assert.deepEqual(both.map((r) => r.status).sort(), [200, 201], both.map((r) => r.text).join('\n'));
        assert.equal(both[0].body.id, both[1].body.id);
    });

    test('creating validates everything and changes nothing on bad input', async () => {
        const [a, b, c] = await users(3);
        await createKnown(a.token, { kind: 'group', title: 'ok', member_ids: [b.id, c.id] });
        const before = (await list(a.token)).body.items.length;
        const bad = [
            [{}, ['kind', 'member_ids']],
            [{ kind: 'chat', member_ids: [b.id] }, ['kind']],
            [{ kind: 'direct', member_ids: b.id }, ['member_ids']],
            [{ kind: 'direct', member_ids: ['not-a-uuid'] }, ['member_ids']],
            [{ kind: 'direct', member_ids: [42] }, ['member_ids']],
            [{ kind: 'direct', member_ids: [a.id] }, ['member_ids']],
            [{ kind: 'direct', member_ids: [b.id, c.id] }, ['member_ids']],
            [{ kind: 'direct', member_ids: [b.id], title: 'x' }, ['title']],
            [{ kind: 'group', member_ids: [b.id, c.id] }, ['title']],
            [{ kind: 'group', title: 'two', member_ids: [b.id] }, ['member_ids']],
            [{ kind: 'group', title: '   ', member_ids: [b.id, c.id] }, ['title']],
            [{ kind: 'group', title: 'x'.repeat(101), member_ids: [b.id, c.id] }, ['title']],
            [{ kind: 'group', title: 'big', member_ids: Array.from({ length: 101 }, () => b.id) }, ['member_ids']],
            [{ kind: 'direct', member_ids: [b.id], extra: 1 }, ['extra']],
        ];
        for (const [body, fields] of bad) {
            const err = assertError(await create(a.token, body), 400, 'validation_failed');
            for (const f of fields) assert.ok(err.fields[f], `${JSON.stringify(body)}: field ${f} named in ${JSON.stringify(err.fields)}`);
        }
        const ghost = '019a0000-0000-7000-8000-000000000000';
        const err = assertError(await create(a.token, { kind: 'direct', member_ids: [ghost] }), 422, 'unprocessable');
        assert.match(err.fields.member_ids, new RegExp(ghost));
        assertError(await srv.request('POST', '/api/v1/conversations', { token: a.token, body: '{"kind":', headers: { 'content-type': 'application/json' } }), 400, 'malformed_json');
        assertError(await srv.request('POST', '/api/v1/conversations', { token: a.token, body: '[]', headers: { 'content-type': 'application/json' } }), 400);
        assertError(await srv.request('POST', '/api/v1/conversations', { token: a.token, body: 'kind=direct', headers: { 'content-type': 'text/plain' } }), 415);
        assertError(await create(undefined, { kind: 'direct', member_ids: [b.id] }), 401, 'unauthorized');
        assertError(await list(undefined), 401, 'unauthorized');
        assert.equal((await list(a.token)).body.items.length, before, 'nothing was created');
    });

    test('only members see or touch a conversation: everyone else gets 404 on every route', async () => {
        const [a, b, c, outsider] = await users(4);
        const g = await group(a, [b, c]);
        const m = await send(a.token, g.id, 'members only');
        assert.equal(m.status, 201, m.text);
        const ghost = '019a0000-0000-7000-8000-00000000beef';
        for (const cid of [g.id, ghost, 'nonsense']) {
            assertError(await conv(outsider.token, cid), 404, 'not_found');
            assertError(await messages(outsider.token, cid), 404, 'not_found');
            assertError(await send(outsider.token, cid, 'let me in'), 404, 'not_found');
            assertError(await markRead(outsider.token, cid), 404, 'not_found');
            assertError(await api('POST', `/api/v1/conversations/${cid}/members`, outsider.token, { user_id: outsider.id }), 404, 'not_found');
            assertError(await api('DELETE', `/api/v1/conversations/${cid}/members/${a.id}`, outsider.token), 404, 'not_found');
        }
        assert.equal((await list(outsider.token)).body.items.length, 0);
        // a member reads it; the outsider's attempts wrote nothing
        const page = await messages(b.token, g.id);
        assert.equal(page.status, 200, page.text);
        assert.deepEqual(page.body.items.map((x) => x.text), ['members only']);
    });

    test('messages: text 1..4000 characters, newest first, cursors without duplicates or gaps, forward paging with after=', async () => {
        const [a, b] = await users(2);
        const d = (await createKnown(a.token, { kind: 'direct', member_ids: [b.id] })).body;
        for (const t of ['', '   \n\t', 'x'.repeat(4001)]) {
            const err = assertError(await send(a.token, d.id, t), 400, 'validation_failed');
            assert.ok(err.fields.text);
        }
        assertError(await api('POST', `/api/v1/conversations/${d.id}/messages`, a.token, { text: 5 }), 400);
        assertError(await api('POST', `/api/v1/conversations/${d.id}/messages`, a.token, { text: 'x', to: b.id }), 400);
        const emoji = '😀'.repeat(4000);
        const big = await send(a.token, d.id, emoji);
        assert.equal(big.status, 201, 'the limit counts characters, not bytes');
        assert.equal(big.body.text, emoji);
        const sent = [big.body];
        for (let i = 0; i < 9; i++) {
            const r = await send(i % 2 ? a.token : b.token, d.id, `message ${i}`);
            assert.equal(r.status, 201, r.text);
            assert.equal(r.body.conversation_id, d.id);
            sent.push(r.body);
        }
        const ids = sent.map((m) => m.id);
        // backwards, 3 at a time
        const seen = [];
        let cursor = null;
        for (;;) {
            const page = await messages(b.token, d.id, `?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
            assert.equal(page.status, 200, page.text);
            assert.ok(page.body.items.length <= 3);
            seen.push(...page.body.items.map((m) => m.id));
            cursor = page.body.next_cursor;
            if (!cursor) break;
        }
        assert.deepEqual(seen, [...ids].reverse(), 'newest first, every message once');
        // forward from the third message
        const fwd = [];
        let q = `?after=${ids[2]}&limit=4`;
        for (;;) {
            const page = await messages(a.token, d.id, q);
            assert.equal(page.status, 200, page.text);
            assert.equal(page.body.order, 'oldest_first');
            fwd.push(...page.body.items.map((m) => m.id));
            if (!page.body.next_cursor) break;
            q = `?limit=4&cursor=${encodeURIComponent(page.body.next_cursor)}`;
        }
        assert.deepEqual(fwd, ids.slice(3));
        // the conversation list previews the last message, cut to 140 characters
        const long = await send(a.token, d.id, 'é'.repeat(300));
        const c = (await conv(a.token, d.id)).body;
        assert.equal(c.last_message.id, long.body.id);
        assert.equal([...c.last_message.text].length, 140);
        assert.equal(c.last_message.truncated, true);
        // bad paging input
        const first = await messages(a.token, d.id, '?limit=2');
        const good = first.body.next_cursor;
        const tampered = good.slice(0, -2) + (good.endsWith('AA') ? 'BB' : 'AA');
        for (const qs of [`?cursor=${tampered}`, '?cursor=abc', '?cursor=', '?limit=0', '?limit=101', '?limit=x', '?after=nope',
            `?after=${ids[0]}&cursor=${encodeURIComponent(good)}`]) {
            const res = await messages(a.token, d.id, qs);
            assertError(res, 400, 'validation_failed');
        }
        const convCursor = (await list(a.token, '?limit=1')).body.next_cursor;
        if (convCursor) assertError(await messages(a.token, d.id, `?cursor=${encodeURIComponent(convCursor)}`), 400);
        const other = (await group(a, [b, (await users(1))[0]])).id;
        const elsewhere = await send(a.token, other, 'elsewhere');
        assertError(await messages(a.token, d.id, `?after=${elsewhere.body.id}`), 400, 'validation_failed');
    });

    test('unread counts and read markers: per member, sending reads, the marker only moves forward', async () => {
        const [a, b, c] = await users(3);
        const g = await group(a, [b, c]);
        const m1 = (await send(a.token, g.id, 'one')).body;
        const m2 = (await send(a.token, g.id, 'two')).body;
        const m3 = (await send(c.token, g.id, 'three')).body;
        const unread = async (u) => (await conv(u.token, g.id)).body.unread_count;
        assert.equal(await unread(a), 1, 'a sent two, c one');
        assert.equal(await unread(b), 3);
        assert.equal(await unread(c), 0, 'sending reads everything before');
        const listed = (await list(b.token)).body.items.find((x) => x.id === g.id);
        assert.equal(listed.unread_count, 3);
        assert.equal(listed.last_message.id, m3.id);
        let r = await markRead(b.token, g.id, { message_id: m1.id });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.unread_count, 2);
        assert.equal(r.body.last_read_message_id, m1.id);
        r = await markRead(b.token, g.id, {});
        assert.equal(r.body.unread_count, 0);
        assert.equal(r.body.last_read_message_id, m3.id);
        r = await markRead(b.token, g.id, { message_id: m2.id });
        assert.equal(r.status, 200);
        assert.equal(r.body.last_read_message_id, m3.id, 'never moves back');
        assert.equal(r.body.unread_count, 0);
        await send(a.token, g.id, 'four');
        assert.equal(await unread(b), 1);
        r = await srv.request('POST', `/api/v1/conversations/${g.id}/read`, { token: b.token });
        assert.equal(r.status, 200, 'no body: up to the latest');
        assert.equal(r.body.unread_count, 0);
        const other = await group(a, [b, c], 'other');
        const foreign = (await send(a.token, other.id, 'x')).body;
        assertError(await markRead(b.token, g.id, { message_id: foreign.id }), 422, 'unprocessable');
        assertError(await markRead(b.token, g.id, { message_id: 'zzz' }), 400, 'validation_failed');
        assertError(await markRead(b.token, g.id, { upto: m1.id }), 400, 'validation_failed');
    });

    test('my conversations: newest activity first, paged with an opaque cursor', async () => {
        const [a, b, c] = await users(3);
        const made = [];
        for (let i = 0; i < 5; i++) made.push((await group(a, [b, c], `g${i}`)).id);
        await send(b.token, made[1], 'bump'); // made[1] is now the most recent
        const expected = [made[1], made[4], made[3], made[2], made[0]];
        const seen = [];
        let cursor = null;
        for (;;) {
            const page = await list(a.token, `?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
            assert.equal(page.status, 200, page.text);
            seen.push(...page.body.items.map((x) => x.id));
            cursor = page.body.next_cursor;
            if (!cursor) break;
        }
        assert.deepEqual(seen, expected);
        const bumped = (await list(a.token, '?limit=1')).body.items[0];
        assert.equal(bumped.unread_count, 1);
        assert.equal(bumped.last_message.text, 'bump');
        for (const qs of ['?cursor=xyz', '?cursor=' + 'A'.repeat(60), '?limit=-1'])
            assertError(await list(a.token, qs), 400, 'validation_failed');
    });

    test('Idempotency-Key: the same key from the same sender gives back the first message; other text is a conflict', async () => {
        const [a, b] = await users(2);
        const d = (await createKnown(a.token, { kind: 'direct', member_ids: [b.id] })).body;
        const key = randomBytes(8).toString('hex');
        const one = await send(a.token, d.id, 'exactly once', { 'idempotency-key': key });
        assert.equal(one.status, 201, one.text);
        const two = await send(a.token, d.id, 'exactly once', { 'idempotency-key': key });
        assert.equal(two.status, 201, two.text);
        assert.equal(two.body.id, one.body.id);
        assert.equal(two.headers.get('idempotent-replayed'), 'true');
        assertError(await send(a.token, d.id, 'something else', { 'idempotency-key': key }), 409, 'conflict');
        const theirs = await send(b.token, d.id, 'exactly once', { 'idempotency-key': key });
        assert.equal(theirs.status, 201);
        assert.notEqual(theirs.body.id, one.body.id, 'keys are per sender');
        const concurrent = await Promise.all([1, 2, 3].map(() => send(a.token, d.id, 'raced', { 'idempotency-key': 'race-' + key })));
        assert.deepEqual(concurrent.map((r) => r.status), [201, 201, 201]);
        assert.equal(new Set(concurrent.map((r) => r.body.id)).size, 1);
        const all = (await messages(a.token, d.id)).body.items.map((m) => m.text);
        assert.deepEqual(all, ['raced', 'exactly once', 'exactly once']);
        assertError(await send(a.token, d.id, 'x', { 'idempotency-key': 'has space' }), 400, 'validation_failed');
        assertError(await send(a.token, d.id, 'x', { 'idempotency-key': 'k'.repeat(201) }), 400, 'validation_failed');
    });

    test('membership: the creator adds and removes, members leave, direct conversations keep their two', async () => {
        const [a, b, c, d, e] = await users(5);
        const g = await group(a, [b, c]);
        await send(a.token, g.id, 'before d joined');
        const add = (who, uid) => api('POST', `/api/v1/conversations/${g.id}/members`, who.token, { user_id: uid });
        const del = (who, uid) => api('DELETE', `/api/v1/conversations/${g.id}/members/${uid}`, who.token);
        assertError(await add(b, d.id), 403, 'forbidden');
        let r = await add(a, d.id);
        assert.equal(r.status, 201, r.text);
        assert.deepEqual(r.body.member_ids, [a.id, b.id, c.id, d.id]);
        assert.equal((await add(a, d.id)).status, 200, 'adding a member twice changes nothing');
        const dv = await conv(d.token, g.id);
        assert.equal(dv.status, 200);
        assert.equal(dv.body.unread_count, 0, 'a newcomer starts with the history read');
        assert.equal((await send(d.token, g.id, 'hi from d')).status, 201);
        assertError(await add(a, '019a0000-0000-7000-8000-000000000abc'), 422, 'unprocessable');
        assertError(await add(a, 'nope'), 400, 'validation_failed');
        assertError(await api('POST', `/api/v1/conversations/${g.id}/members`, a.token, {}), 400, 'validation_failed');
        assertError(await del(b, c.id), 403, 'forbidden');
        assertError(await del(a, e.id), 404, 'not_found');
        r = await del(a, c.id);
        assert.equal(r.status, 204, r.text);
        assertError(await conv(c.token, g.id), 404);
        assertError(await send(c.token, g.id, 'still here?'), 404);
        r = await del(b, b.id);
        assert.equal(r.status, 204, 'a member leaves');
        assertError(await messages(b.token, g.id), 404);
        assert.ok(!(await list(b.token)).body.items.some((x) => x.id === g.id));
        const now = (await conv(a.token, g.id)).body;
        assert.deepEqual(now.member_ids, [a.id, d.id]);
        assert.deepEqual(now.members.map((m) => m.user_id), [a.id, d.id]);
        assert.ok(now.members.every((m) => typeof m.display_name === 'string' && typeof m.username === 'string'));
        const dm = (await createKnown(a.token, { kind: 'direct', member_ids: [e.id] })).body;
        assertError(await api('DELETE', `/api/v1/conversations/${dm.id}/members/${e.id}`, a.token), 422);
        assertError(await api('DELETE', `/api/v1/conversations/${dm.id}/members/${a.id}`, a.token), 422);
        assertError(await api('POST', `/api/v1/conversations/${dm.id}/members`, a.token, { user_id: b.id }), 422);
    });

    test('every change emits its event in the same transaction, valid against its schema', async () => {
        const [a, b, c, d] = await users(4);
        const g = await group(a, [b, c]);
        const m = (await send(b.token, g.id, 'evented')).body;
        await api('POST', `/api/v1/conversations/${g.id}/members`, a.token, { user_id: d.id });
        await api('DELETE', `/api/v1/conversations/${g.id}/members/${c.id}`, a.token);
        const replay = await send(b.token, g.id, 'once', { 'idempotency-key': 'ev-1' });
        await send(b.token, g.id, 'once', { 'idempotency-key': 'ev-1' });
        const mine = (ev) => ev.data?.conversation_id === g.id;
        const events = await readLog(srv.dataDir, (evs) => evs.filter(mine).length >= 5, { pattern: 'pl.messaging.*' });
        const schemas = loadSchemas();
        const ours = events.filter(mine);
        for (const ev of ours) assertValidEvent(schemas, ev);
        assert.deepEqual(ours.map((e) => e.type), [
            'pl.messaging.conversation_created.v1',
            'pl.messaging.message_sent.v1',
            'pl.messaging.member_added.v1',
            'pl.messaging.member_removed.v1',
            'pl.messaging.message_sent.v1',
        ]);
        const [created, sent, added, removed, once] = ours;
        assert.deepEqual(created.data.member_ids, [a.id, b.id, c.id]);
        assert.equal(created.data.title, 'Study group');
        assert.equal(sent.data.message_id, m.id);
        assert.deepEqual(sent.data.recipient_ids, [a.id, b.id, c.id], 'the members at send time, the sender included');
        assert.equal(sent.partitionkey, g.id);
        assert.deepEqual([added.data.user_id, added.data.by], [d.id, a.id]);
        assert.deepEqual([removed.data.user_id, removed.data.by], [c.id, a.id]);
        assert.equal(once.data.message_id, replay.body.id, 'the replay emitted nothing more');
        assert.deepEqual(once.data.recipient_ids, [a.id, b.id, d.id]);
    });

    test('the server stops cleanly: no 5xx, no error lines, no sanitizer report', async () => {
        await srv.assertHealthy();
        await srv.stopClean();
    });
});

describe('messaging demo data', () => {
    test('--demo seeds a study group and a direct chat once identity\'s demo users reach the projection', async () => {
        const srv = await startServer({ env: BUS_ENV, args: ['--services', 'identity,messaging', '--demo'] });
        try {
            const sam = await srv.login('sam', 'campus-demo-1');
            const lin = await srv.login('lin', 'campus-demo-1');
            const items = await waitFor(async () => {
                const r = await srv.get('/api/v1/conversations', { token: sam.token });
                return r.body?.items?.length === 2 ? r.body.items : null;
            }, { what: 'the demo conversations' });
            const group = items.find((c) => c.kind === 'group');
            const direct = items.find((c) => c.kind === 'direct');
            assert.equal(group.title, 'Intro to Algorithms study group');
            assert.equal(group.member_ids.length, 3);
            assert.equal(group.unread_count, 2, 'sam wrote the second of four messages');
            assert.equal(direct.unread_count, 1);
            const msgs = await srv.get(`/api/v1/conversations/${group.id}/messages`, { token: lin.token });
            assert.equal(msgs.body.items.length, 4);
            // the direct pair is the one the API would find
            const again = await srv.post('/api/v1/conversations', { kind: 'direct', member_ids: [lin.user.id] }, { token: sam.token });
            assert.equal(again.status, 200, again.text);
            assert.equal(again.body.id, direct.id);
            await srv.stopClean();
        } finally {
            await srv.cleanup();
        }
    });
});
