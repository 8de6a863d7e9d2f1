// social.test.mjs - the social service end to end (both profiles): posts,
// comments and replies, likes, follows, campus events with RSVPs, and the
// events each change emits.
//
//   posts        create/read/edit/delete; text counted in code points;
//                Idempotency-Key (same post, one event; another body 422)
//   permissions  author and admin may edit/delete, another user 403; a
//                deleted post is gone (404) with its comments
//   visibility   followers-only: stranger 404 (read, like, comment, list),
//                follower and admin see it
//   likes        idempotent both ways: count 1, one event each way
//   follows      idempotent; self 422; unknown user 404; lists
//   comments     replies one level deep; peer_review; counts; cascade
//   pagination   users/{id}/posts, comments, followers, attendees: pages
//                join to the whole list, no duplicates, no gaps
//   campus       validation, upcoming list, edit rights, capacity under 30
//                concurrent RSVPs (exactly 10 going), RSVP state machine
//   malformed    every write endpoint: bad JSON, wrong types, unknown
//                members, huge text, bad ids -> 4xx in the error shape
//   events       every pl.social.* event validates against its schema
//   exit         the server stops cleanly under ASan (leaks included)
//
// Users are known to social only through identity's user_registered event
// (the social.users projection): tests wait until social answers for a new
// user (GET users/{id}/followers 200) before following them.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { assertError, startServer } from './harness.mjs';
import { BUS_ENV, Tail, assertValidEvent, loadSchemas, waitFor } from './bus-harness.mjs';

const API = '/api/v1';
const DEMO_PASSWORD = 'campus-demo-1';
const NOPE = '01a201d9-0000-7000-8000-000000000000'; // a well-formed id nobody has

describe('social', () => {
    let srv, tail, admin, prober;

    before(async () => {
        srv = await startServer({ args: ['--demo'], env: BUS_ENV });
        tail = new Tail(srv.dataDir, { pattern: 'pl.social.*', fromStart: true });
        admin = await srv.login('admin', DEMO_PASSWORD);
        prober = await user();
    });
    after(async () => {
        await tail?.cleanup();
        await srv?.cleanup();
    });

    // ---- helpers -------------------------------------------------------------------------

    const req = (method, p, token, json, headers) => srv.request(method, API + p, { token, json, headers });

    // A registered, logged-in user social already knows: {id, token, username}.
    async function user() {
        const { user: u, token } = await srv.session();
        if (prober) await known(u.id);
        return { id: u.id, token, username: u.username };
    }
    async function known(id) {
        await waitFor(async () => (await req('GET', `/users/${id}/followers`, prober.token)).status === 200, {
            what: `social to know user ${id}`,
        });
    }
    async function post(u, body, headers) {
        const res = await req('POST', '/posts', u.token, body, headers);
        assert.equal(res.status, 201, res.text);
        return res.body;
    }
    async function follow(a, b) {
        const res = await req('POST', `/users/${b.id}/follow`, a.token);
        assert.equal(res.status, 200, res.text);
    }
    // Every page of a list, following next_cursor.
    async function pages(u, p, limit) {
        const all = [];
        let cursor = null;
        for (let i = 0; i < 100; i++) {
            const q = `${p}${p.includes('?') ? '&' : '?'}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
            const res = await req('GET', q, u.token);
            assert.equal(res.status, 200, res.text);
            assert.ok(res.body.items.length <= limit);
            all.push(...res.body.items);
            cursor = res.body.next_cursor;
            if (!cursor) return all;
        }
        assert.fail('pagination does not end');
    }
    // The events in the log once `sentinel` (a predicate on one event) has arrived.
    async function eventsUntil(sentinel, what) {
        await tail.waitFor((evs) => evs.some(sentinel), { what, timeoutMs: 15000 });
        return tail.events;
    }

    // ---- posts -----------------------------------------------------------------------------

    test('create, read, edit and delete a post; counts and liked_by_me in every response', async () => {
        const a = await user();
        const p = await post(a, { text: 'Hello campus', visibility: 'public' });
        assert.equal(p.author_id, a.id);
        assert.equal(p.text, 'Hello campus');
        assert.equal(p.visibility, 'public');
        assert.equal(p.course_id, null);
        assert.deepEqual([p.like_count, p.comment_count, p.liked_by_me], [0, 0, false]);
        const got = await req('GET', `/posts/${p.id}`, a.token);
        assert.equal(got.status, 200);
        assert.deepEqual(got.body, p);
        const course = '01a201d9-1111-7222-8333-444455556666';
        const ed = await req('PATCH', `/posts/${p.id}`, a.token, { text: 'Hello again', course_id: course });
        assert.equal(ed.status, 200, ed.text);
        assert.equal(ed.body.text, 'Hello again');
        assert.equal(ed.body.course_id, course);
        const cleared = await req('PATCH', `/posts/${p.id}`, a.token, { course_id: null });
        assert.equal(cleared.body.course_id, null);
        const del = await req('DELETE', `/posts/${p.id}`, a.token);
        assert.equal(del.status, 204, del.text);
        assertError(await req('GET', `/posts/${p.id}`, a.token), 404, 'not_found');
        assertError(await req('DELETE', `/posts/${p.id}`, a.token), 404, 'not_found');
        const evs = await eventsUntil((e) => e.type === 'pl.social.post_deleted.v1' && e.data.post_id === p.id, 'post_deleted');
        const mine = evs.filter((e) => e.subject === p.id);
        assert.deepEqual(mine.map((e) => e.type), ['pl.social.post_created.v1', 'pl.social.post_updated.v1',
            'pl.social.post_updated.v1', 'pl.social.post_deleted.v1']);
        assert.equal(mine[0].partitionkey, a.id);
        assert.equal(mine[1].data.course_id, course);
        assert.equal(mine[3].data.deleted_by, a.id);
    });

    test('post text is 1 to 5000 code points (not bytes), not only white space', async () => {
        const a = await user();
        const emoji = '\u{1F393}'; // 4 bytes in UTF-8, 2 UTF-16 units, 1 code point
        const p = await post(a, { text: emoji.repeat(5000) });
        assert.equal([...p.text].length, 5000);
        for (const text of [emoji.repeat(5001), 'x'.repeat(5001), '', '   \n\t ']) {
            const err = assertError(await req('POST', '/posts', a.token, { text }), 400, 'validation_failed');
            assert.ok(err.fields.text, `text of ${[...text].length} code points: ${JSON.stringify(err.fields)}`);
        }
        const e1 = assertError(await req('POST', '/posts', a.token, { text: 'x', visibility: 'friends' }), 400);
        assert.ok(e1.fields.visibility);
        const e2 = assertError(await req('POST', '/posts', a.token, { text: 'x', course_id: 'cs101' }), 400);
        assert.ok(e2.fields.course_id);
        const e3 = assertError(await req('PATCH', `/posts/${p.id}`, a.token, { text: 'y'.repeat(5001) }), 400);
        assert.ok(e3.fields.text);
        assert.equal((await req('GET', `/posts/${p.id}`, a.token)).body.text, p.text, 'a refused edit changes nothing');
    });

    test('Idempotency-Key: a retried create returns the same post and emits one event', async () => {
        const a = await user();
        const b = await user();
        const key = `k-${Date.now()}`;
        const first = await req('POST', '/posts', a.token, { text: 'only once' }, { 'Idempotency-Key': key });
        assert.equal(first.status, 201, first.text);
        const again = await Promise.all([1, 2, 3].map(() =>
            req('POST', '/posts', a.token, { text: 'only once' }, { 'Idempotency-Key': key })));
        for (const r of again) {
            assert.equal(r.status, 200, r.text);
            assert.equal(r.body.id, first.body.id);
        }
        const other = await req('POST', '/posts', a.token, { text: 'something else' }, { 'Idempotency-Key': key });
        assertError(other, 422, 'unprocessable');
        // the key is per user: b's post with the same key is b's own
        const theirs = await req('POST', '/posts', b.token, { text: 'only once' }, { 'Idempotency-Key': key });
        assert.equal(theirs.status, 201);
        assert.notEqual(theirs.body.id, first.body.id);
        assertError(await req('POST', '/posts', a.token, { text: 'x' }, { 'Idempotency-Key': 'a'.repeat(201) }), 400);
        const list = await req('GET', `/users/${a.id}/posts`, a.token);
        assert.equal(list.body.items.filter((p) => p.text === 'only once').length, 1);
        const evs = await eventsUntil((e) => e.subject === theirs.body.id, 'the sentinel post');
        assert.equal(evs.filter((e) => e.type === 'pl.social.post_created.v1' && e.subject === first.body.id).length, 1);
    });

    // ---- permissions and visibility --------------------------------------------------------------------

    test('only the author or an admin edits or deletes a post; others get 403', async () => {
        const a = await user();
        const b = await user();
        const p = await post(a, { text: 'mine' });
        assertError(await req('PATCH', `/posts/${p.id}`, b.token, { text: 'theirs now' }), 403, 'forbidden');
        assertError(await req('DELETE', `/posts/${p.id}`, b.token), 403, 'forbidden');
        assert.equal((await req('GET', `/posts/${p.id}`, b.token)).body.text, 'mine');
        const byAdmin = await req('PATCH', `/posts/${p.id}`, admin.token, { text: 'moderated' });
        assert.equal(byAdmin.status, 200, byAdmin.text);
        assert.equal(byAdmin.body.author_id, a.id, 'the author stays');
        const c = await req('POST', `/posts/${p.id}/comments`, b.token, { text: 'a comment' });
        assert.equal(c.status, 201);
        assert.equal((await req('DELETE', `/posts/${p.id}`, admin.token)).status, 204);
        assertError(await req('GET', `/posts/${p.id}`, a.token), 404);
        assertError(await req('GET', `/posts/${p.id}/comments`, a.token), 404);
        assertError(await req('PATCH', `/comments/${c.body.id}`, b.token, { text: 'x' }), 404);
        const evs = await eventsUntil((e) => e.type === 'pl.social.post_deleted.v1' && e.subject === p.id, 'post_deleted');
        assert.equal(evs.find((e) => e.type === 'pl.social.post_deleted.v1' && e.subject === p.id).data.deleted_by, admin.user.id);
    });

    test('followers-only posts: 404 to strangers (read, like, comment, lists), visible to followers and admins', async () => {
        const a = await user();
        const fan = await user();
        const stranger = await user();
        await follow(fan, a);
        const pub = await post(a, { text: 'for everyone' });
        const priv = await post(a, { text: 'for my followers', visibility: 'followers' });
        for (const [method, p, body] of [['GET', `/posts/${priv.id}`], ['POST', `/posts/${priv.id}/like`],
            ['GET', `/posts/${priv.id}/comments`], ['POST', `/posts/${priv.id}/comments`, { text: 'hi' }],
            ['PATCH', `/posts/${priv.id}`, { text: 'x' }], ['DELETE', `/posts/${priv.id}`]])
            assertError(await req(method, p, stranger.token, body), 404, 'not_found');
        assert.equal((await req('GET', `/posts/${priv.id}`, fan.token)).status, 200);
        assert.equal((await req('GET', `/posts/${priv.id}`, admin.token)).status, 200);
        const ids = async (u) => (await req('GET', `/users/${a.id}/posts`, u.token)).body.items.map((p) => p.id);
        assert.deepEqual(await ids(stranger), [pub.id]);
        assert.deepEqual(await ids(fan), [priv.id, pub.id]);
        assert.deepEqual(await ids(admin), [priv.id, pub.id]);
        assert.deepEqual(await ids(a), [priv.id, pub.id]);
        // the follower may like and comment, but not edit
        assert.equal((await req('POST', `/posts/${priv.id}/like`, fan.token)).status, 200);
        assertError(await req('PATCH', `/posts/${priv.id}`, fan.token, { text: 'x' }), 403);
        // unfollowing takes it away again
        assert.equal((await req('DELETE', `/users/${a.id}/follow`, fan.token)).status, 200);
        assertError(await req('GET', `/posts/${priv.id}`, fan.token), 404);
        assert.deepEqual(await ids(fan), [pub.id]);
    });

    // ---- likes and follows -----------------------------------------------------------------------------

    test('likes are idempotent: twice is one like and one event; unlike twice is one event', async () => {
        const a = await user();
        const b = await user();
        const p = await post(a, { text: 'like me' });
        const l1 = await req('POST', `/posts/${p.id}/like`, b.token);
        const l2 = await req('PUT', `/posts/${p.id}/like`, b.token);
        for (const r of [l1, l2]) {
            assert.equal(r.status, 200, r.text);
            assert.equal(r.body.like_count, 1);
            assert.equal(r.body.liked_by_me, true);
        }
        const seenByA = (await req('GET', `/posts/${p.id}`, a.token)).body;
        assert.equal(seenByA.like_count, 1);
        assert.equal(seenByA.liked_by_me, false, 'liked_by_me is per caller');
        const u1 = await req('DELETE', `/posts/${p.id}/like`, b.token);
        const u2 = await req('DELETE', `/posts/${p.id}/like`, b.token);
        for (const r of [u1, u2]) {
            assert.equal(r.status, 200, r.text);
            assert.equal(r.body.like_count, 0);
            assert.equal(r.body.liked_by_me, false);
        }
        // concurrent likes by one user: still one
        const many = await Promise.all(Array.from({ length: 8 }, () => req('POST', `/posts/${p.id}/like`, b.token)));
        for (const r of many) assert.equal(r.status, 200, r.text);
        assert.equal((await req('GET', `/posts/${p.id}`, a.token)).body.like_count, 1);
        await req('POST', `/posts/${p.id}/like`, a.token); // sentinel
        const evs = await eventsUntil((e) => e.type === 'pl.social.post_liked.v1' && e.subject === p.id && e.data.user_id === a.id, 'sentinel like');
        const byB = evs.filter((e) => e.subject === p.id && e.data.user_id === b.id).map((e) => e.type);
        assert.deepEqual(byB, ['pl.social.post_liked.v1', 'pl.social.post_unliked.v1', 'pl.social.post_liked.v1']);
        const liked = evs.find((e) => e.type === 'pl.social.post_liked.v1' && e.subject === p.id);
        assert.equal(liked.data.post_author_id, a.id);
        assert.equal(liked.partitionkey, p.id);
    });

    test('follows: idempotent, no self-follow, unknown users 404, follower/following lists', async () => {
        const a = await user();
        const b = await user();
        assertError(await req('POST', `/users/${a.id}/follow`, a.token), 422, 'unprocessable');
        assertError(await req('POST', `/users/${NOPE}/follow`, a.token), 404, 'not_found');
        assertError(await req('POST', '/users/not-a-uuid/follow', a.token), 404, 'not_found');
        assertError(await req('GET', `/users/${NOPE}/followers`, a.token), 404, 'not_found');
        await follow(a, b);
        await follow(a, b);
        const fs = await req('GET', `/users/${b.id}/followers`, a.token);
        assert.deepEqual(fs.body.items.map((x) => [x.user_id, x.username]), [[a.id, a.username]]);
        const fg = await req('GET', `/users/${a.id}/following`, b.token);
        assert.deepEqual(fg.body.items.map((x) => x.user_id), [b.id]);
        assert.equal((await req('DELETE', `/users/${b.id}/follow`, a.token)).status, 200);
        assert.equal((await req('DELETE', `/users/${b.id}/follow`, a.token)).status, 200);
        assert.deepEqual((await req('GET', `/users/${b.id}/followers`, a.token)).body.items, []);
        await follow(b, a); // sentinel
        const evs = await eventsUntil((e) => e.type === 'pl.social.user_followed.v1' && e.data.follower_id === b.id && e.subject === a.id, 'sentinel follow');
        const ab = evs.filter((e) => e.data.follower_id === a.id && e.data.followee_id === b.id);
        assert.deepEqual(ab.map((e) => e.type), ['pl.social.user_followed.v1', 'pl.social.user_unfollowed.v1']);
        assert.equal(ab[0].subject, b.id);
        assert.equal(ab[0].partitionkey, a.id);
    });

    // ---- comments ------------------------------------------------------------------------------------------

    test('comments: one level of replies, peer review flag, counts, edit rights and cascade', async () => {
        const a = await user();
        const b = await user();
        const c = await user();
        const p = await post(a, { text: 'discuss' });
        const other = await post(a, { text: 'elsewhere' });
        const top = await req('POST', `/posts/${p.id}/comments`, b.token, { text: 'top', peer_review: true });
        assert.equal(top.status, 201, top.text);
        assert.equal(top.body.peer_review, true);
        assert.equal(top.body.parent_id, null);
        const reply = await req('POST', `/posts/${p.id}/comments`, c.token, { text: 'reply', parent_id: top.body.id });
        assert.equal(reply.status, 201, reply.text);
        assert.equal(reply.body.parent_id, top.body.id);
        let e = assertError(await req('POST', `/posts/${p.id}/comments`, a.token, { text: 'deep', parent_id: reply.body.id }), 422);
        assert.ok(e.fields.parent_id);
        const elsewhere = await req('POST', `/posts/${other.id}/comments`, a.token, { text: 'x' });
        e = assertError(await req('POST', `/posts/${p.id}/comments`, a.token, { text: 'cross', parent_id: elsewhere.body.id }), 422);
        assert.ok(e.fields.parent_id);
        assertError(await req('POST', `/posts/${p.id}/comments`, a.token, { text: 'ghost', parent_id: NOPE }), 422);
        e = assertError(await req('POST', `/posts/${p.id}/comments`, a.token, { text: 'x', peer_review: 'yes' }), 400);
        assert.ok(e.fields.peer_review);
        assert.equal((await req('GET', `/posts/${p.id}`, a.token)).body.comment_count, 2);
        // edit: the author or an admin; not the post's author, not others
        assertError(await req('PATCH', `/comments/${top.body.id}`, c.token, { text: 'hijack' }), 403);
        assertError(await req('PATCH', `/comments/${top.body.id}`, a.token, { text: 'hijack' }), 403);
        const ed = await req('PATCH', `/comments/${top.body.id}`, b.token, { text: 'top (edited)', peer_review: false });
        assert.equal(ed.status, 200, ed.text);
        assert.deepEqual([ed.body.text, ed.body.peer_review], ['top (edited)', false]);
        assert.equal((await req('PATCH', `/comments/${reply.body.id}`, admin.token, { text: 'moderated' })).status, 200);
        const list = await req('GET', `/posts/${p.id}/comments`, c.token);
        assert.deepEqual(list.body.items.map((x) => [x.id, x.parent_id]), [[top.body.id, null], [reply.body.id, top.body.id]]);
        // delete: c may not delete b's comment; the post's author may; replies go with it
        assertError(await req('DELETE', `/comments/${top.body.id}`, c.token), 403);
        assert.equal((await req('DELETE', `/comments/${top.body.id}`, a.token)).status, 204);
        assert.deepEqual((await req('GET', `/posts/${p.id}/comments`, a.token)).body.items, []);
        assert.equal((await req('GET', `/posts/${p.id}`, a.token)).body.comment_count, 0);
        assertError(await req('DELETE', `/comments/${reply.body.id}`, c.token), 404);
        const evs = await eventsUntil((e2) => e2.type === 'pl.social.comment_deleted.v1' && e2.subject === reply.body.id, 'comment_deleted');
        const created = evs.find((x) => x.type === 'pl.social.comment_created.v1' && x.subject === reply.body.id);
        assert.deepEqual([created.data.parent_id, created.data.parent_author_id, created.data.post_author_id, created.partitionkey],
            [top.body.id, b.id, a.id, p.id]);
        assert.equal(evs.find((x) => x.type === 'pl.social.comment_created.v1' && x.subject === top.body.id).data.peer_review, true);
        assert.equal(evs.filter((x) => x.type === 'pl.social.comment_deleted.v1' && [top.body.id, reply.body.id].includes(x.subject)).length, 2);
    });

    // ---- pagination ---------------------------------------------------------------------------------------

    test('cursor pagination: pages join to the whole list, newest first, no duplicates or gaps', async () => {
        const a = await user();
        const made = [];
        for (let i = 0; i < 23; i++) made.push((await post(a, { text: `post ${i}`, visibility: i % 5 ? 'public' : 'followers' })).id);
        const mine = await pages(a, `/users/${a.id}/posts`, 5);
        assert.deepEqual(mine.map((p) => p.id), [...made].reverse());
        const stranger = await user();
        const theirs = await pages(stranger, `/users/${a.id}/posts`, 4);
        assert.deepEqual(theirs.map((p) => p.id), made.filter((_, i) => i % 5).reverse());
        const target = made[1];
        const cs = [];
        for (let i = 0; i < 11; i++) cs.push((await req('POST', `/posts/${target}/comments`, a.token, { text: `c${i}` })).body.id);
        assert.deepEqual((await pages(a, `/posts/${target}/comments`, 3)).map((c) => c.id), cs, 'comments oldest first');
        const fans = [];
        for (let i = 0; i < 7; i++) {
            const f = await user();
            await follow(f, a);
            fans.push(f.id);
        }
        assert.deepEqual((await pages(a, `/users/${a.id}/followers`, 2)).map((f) => f.user_id), [...fans].reverse());
        // cursors are opaque: a raw id, or a real cursor with one character changed, is not one
        const page = await req('GET', `/users/${a.id}/followers?limit=1`, a.token);
        const real = page.body.next_cursor;
        assert.ok(real, 'a full page has a next cursor');
        const edited = real.slice(0, 5) + (real[5] === 'A' ? 'B' : 'A') + real.slice(6);
        for (const q of ['limit=0', 'limit=101', 'limit=abc', 'limit=', 'cursor=%27%20OR%201%3D1', 'cursor=ZZZ',
            `cursor=${fans[0]}`, `cursor=${edited}`])
            assertError(await req('GET', `/users/${a.id}/posts?${q}`, a.token), 400, 'validation_failed');
    });

    // ---- campus events ----------------------------------------------------------------------------------------

    const soon = (h) => new Date(Date.now() + h * 3600000).toISOString();

    test('campus events: validation, read, upcoming list, edit rights', async () => {
        const o = await user();
        const b = await user();
        const good = { title: 'Robotics demo', description: 'Come see', location: 'Hall A', starts_at: soon(1), ends_at: soon(2), capacity: 5 };
        for (const [bad, field] of [[{ starts_at: soon(3) }, 'ends_at'], [{ starts_at: 'tomorrow' }, 'starts_at'],
            [{ capacity: 0 }, 'capacity'], [{ capacity: 2.5 }, 'capacity'], [{ capacity: '5' }, 'capacity'],
            [{ title: '' }, 'title'], [{ title: 't'.repeat(201) }, 'title'], [{ location: undefined }, 'location'],
            [{ starts_at: soon(-3), ends_at: soon(-2) }, 'ends_at'], [{ extra: 1 }, 'extra']]) {
            const err = assertError(await req('POST', '/campus-events', o.token, { ...good, ...bad }), 400, 'validation_failed');
            assert.ok(err.fields[field], `${JSON.stringify(bad)} -> ${JSON.stringify(err.fields)}`);
        }
        const res = await req('POST', '/campus-events', o.token, { ...good, capacity: null });
        assert.equal(res.status, 201, res.text);
        const ev = res.body;
        assert.deepEqual([ev.capacity, ev.seats_left, ev.going_count, ev.my_status], [null, null, 0, null]);
        assert.equal(ev.starts_at, new Date(good.starts_at).toISOString());
        assert.deepEqual((await req('GET', `/campus-events/${ev.id}`, b.token)).body.id, ev.id);
        const upcoming = await pages(b, '/campus-events', 3);
        assert.ok(upcoming.some((x) => x.id === ev.id));
        for (let i = 1; i < upcoming.length; i++) assert.ok(upcoming[i - 1].starts_at <= upcoming[i].starts_at, 'soonest first');
        assert.equal(new Set(upcoming.map((x) => x.id)).size, upcoming.length);
        assertError(await req('PATCH', `/campus-events/${ev.id}`, b.token, { title: 'mine' }), 403, 'forbidden');
        assertError(await req('DELETE', `/campus-events/${ev.id}`, b.token), 403, 'forbidden');
        const e1 = assertError(await req('PATCH', `/campus-events/${ev.id}`, o.token, { ends_at: soon(0.5) }), 422);
        assert.ok(e1.fields.ends_at);
        const ed = await req('PATCH', `/campus-events/${ev.id}`, o.token, { capacity: 2, title: 'Robotics demo II' });
        assert.equal(ed.status, 200, ed.text);
        assert.deepEqual([ed.body.capacity, ed.body.title], [2, 'Robotics demo II']);
        assert.equal((await req('PUT', `/campus-events/${ev.id}/rsvp`, b.token, { status: 'going' })).status, 200);
        assert.equal((await req('PUT', `/campus-events/${ev.id}/rsvp`, o.token, { status: 'going' })).status, 200);
        const e2 = assertError(await req('PATCH', `/campus-events/${ev.id}`, admin.token, { capacity: 1 }), 422);
        assert.ok(e2.fields.capacity);
        assert.equal((await req('DELETE', `/campus-events/${ev.id}`, admin.token)).status, 204);
        assertError(await req('GET', `/campus-events/${ev.id}`, o.token), 404);
        assertError(await req('PUT', `/campus-events/${ev.id}/rsvp`, o.token, { status: 'going' }), 404);
        const evs = await eventsUntil((x) => x.type === 'pl.social.campus_event_deleted.v1' && x.subject === ev.id, 'campus_event_deleted');
        assert.deepEqual(evs.filter((x) => x.subject === ev.id).map((x) => x.type), ['pl.social.campus_event_created.v1',
            'pl.social.campus_event_updated.v1', 'pl.social.rsvp_changed.v1', 'pl.social.rsvp_changed.v1',
            'pl.social.campus_event_deleted.v1']);
    });

    test('RSVP capacity holds under 30 concurrent requests: exactly 10 going, 20 refused with 409', async () => {
        const o = await user();
        const ev = (await req('POST', '/campus-events', o.token, { title: 'Ten seats', location: 'Lab', starts_at: soon(5), ends_at: soon(6), capacity: 10 })).body;
        const people = await Promise.all(Array.from({ length: 30 }, () => srv.session()));
        const results = await Promise.all(people.map((p) => req('PUT', `/campus-events/${ev.id}/rsvp`, p.token, { status: 'going' })));
        const ok = results.filter((r) => r.status === 200);
        const full = results.filter((r) => r.status === 409);
        assert.equal(ok.length, 10, results.map((r) => r.status).join(','));
        assert.equal(full.length, 20);
        for (const r of full) assert.equal(assertError(r, 409, 'conflict').fields.status, 'event_full');
        const now = (await req('GET', `/campus-events/${ev.id}`, o.token)).body;
        assert.deepEqual([now.going_count, now.seats_left], [10, 0]);
        const going = await pages(o, `/campus-events/${ev.id}/attendees`, 3);
        const okIds = new Set(people.filter((_, i) => results[i].status === 200).map((p) => p.user.id));
        assert.deepEqual(new Set(going.map((a) => a.user_id)), okIds);
        // state machine: going -> interested frees a seat; a refused user can take it
        const first = people[results.findIndex((r) => r.status === 200)];
        const loser = people[results.findIndex((r) => r.status === 409)];
        const same = await req('PUT', `/campus-events/${ev.id}/rsvp`, first.token, { status: 'going' });
        assert.deepEqual([same.status, same.body.changed], [200, false]);
        const toInt = await req('POST', `/campus-events/${ev.id}/rsvp`, first.token, { status: 'interested' });
        assert.deepEqual([toInt.body.status, toInt.body.going_count, toInt.body.interested_count], ['interested', 9, 1]);
        const took = await req('PUT', `/campus-events/${ev.id}/rsvp`, loser.token, { status: 'going' });
        assert.equal(took.status, 200, took.text);
        assertError(await req('PUT', `/campus-events/${ev.id}/rsvp`, first.token, { status: 'going' }), 409);
        const cancel = await req('PUT', `/campus-events/${ev.id}/rsvp`, first.token, { status: 'cancel' });
        assert.deepEqual([cancel.body.status, cancel.body.interested_count], ['cancelled', 0]);
        const interested = (await req('GET', `/campus-events/${ev.id}/attendees?status=interested`, o.token)).body.items;
        assert.deepEqual(interested, []);
        const never = await user();
        const noop = await req('PUT', `/campus-events/${ev.id}/rsvp`, never.token, { status: 'cancel' });
        assert.deepEqual([noop.status, noop.body.changed, noop.body.status], [200, false, null]);
        assertError(await req('PUT', `/campus-events/${ev.id}/rsvp`, o.token, { status: 'maybe' }), 400);
        assertError(await req('GET', `/campus-events/${ev.id}/attendees?status=maybe`, o.token), 400);
        // sentinel, then count: 11 going transitions, one interested, one cancel; nothing for refusals or repeats
        await req('PUT', `/campus-events/${ev.id}/rsvp`, o.token, { status: 'interested' });
        const evs = await eventsUntil((x) => x.type === 'pl.social.rsvp_changed.v1' && x.subject === ev.id && x.data.user_id === o.id, 'sentinel rsvp');
        const mine = evs.filter((x) => x.type === 'pl.social.rsvp_changed.v1' && x.subject === ev.id && x.data.user_id !== o.id);
        assert.equal(mine.filter((x) => x.data.status === 'going').length, 11);
        const firstEvs = mine.filter((x) => x.data.user_id === first.user.id).map((x) => [x.data.previous, x.data.status]);
        assert.deepEqual(firstEvs, [[null, 'going'], ['going', 'interested'], ['interested', 'cancelled']]);
        assert.equal(mine.length, 13);
    });

    // ---- malformed input -----------------------------------------------------------------------------------

    test('malformed input on every endpoint: 4xx in the error shape, never 5xx, nothing changes', async () => {
        const a = await user();
        const p = await post(a, { text: 'target' });
        const c = (await req('POST', `/posts/${p.id}/comments`, a.token, { text: 'c' })).body;
        const ev = (await req('POST', '/campus-events', a.token, { title: 'T', location: 'L', starts_at: soon(1), ends_at: soon(2) })).body;
        const writes = [['POST', '/posts'], ['PATCH', `/posts/${p.id}`], ['POST', `/posts/${p.id}/comments`],
            ['PATCH', `/comments/${c.id}`], ['POST', '/campus-events'], ['PATCH', `/campus-events/${ev.id}`],
            ['PUT', `/campus-events/${ev.id}/rsvp`]];
        for (const [m, path] of writes) {
            for (const body of ['{"text":', '[1,2]', '"text"', 'null', '{"text": "a"}}']) {
                const r = await srv.request(m, API + path, { token: a.token, body, headers: { 'content-type': 'application/json' } });
                assertError(r, 400);
            }
            const wrongTypes = { text: 42, visibility: true, course_id: 7, parent_id: [], peer_review: 'no', title: {}, location: 1,
                starts_at: 5, ends_at: false, capacity: 'ten', status: 1 };
            assertError(await req(m, path, a.token, wrongTypes), 400, 'validation_failed');
            assertError(await req(m, path, a.token, { surprise: 'member' }), 400, 'validation_failed');
            assertError(await req(m, path, a.token, { text: 'x'.repeat(20000), title: 'y'.repeat(5000), status: 'z'.repeat(5000) }), 400);
            assertError(await srv.request(m, API + path, { token: a.token, body: '{}', headers: { 'content-type': 'text/plain' } }), 415);
            assertError(await req(m, path, undefined, {}), 401, 'unauthorized');
        }
        for (const path of ['/posts/x', '/posts/123/like', '/posts/%00/comments', '/comments/zz', '/campus-events/1',
            '/campus-events/nope/rsvp', '/campus-events/nope/attendees', '/users/nope/posts', '/users/nope/followers',
            '/users/nope/following', '/users/nope/follow']) {
            for (const m of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']) {
                const r = await req(m, path, a.token, m === 'GET' || m === 'DELETE' ? undefined : { text: 'x', status: 'going' });
                assert.ok(r.status >= 400 && r.status < 500, `${m} ${path}: ${r.status} ${r.text}`);
                if (r.status !== 405) assertError(r, r.status);
            }
        }
        for (const [m, path] of [['GET', `/posts/${p.id}`], ['GET', '/campus-events'], ['POST', `/posts/${p.id}/like`], ['GET', `/users/${a.id}/posts`]])
            assertError(await req(m, path), 401);
        // null is not "leave it": only course_id (clears the tag) and capacity (unlimited) may be null
        for (const body of [{ text: null }, { visibility: null }])
            assertError(await req('PATCH', `/posts/${p.id}`, a.token, body), 400, 'validation_failed');
        for (const body of [{ title: null }, { location: null }, { starts_at: null }, { ends_at: null },
            { starts_at: '2020-01-01T00:00:00Z', ends_at: '2020-01-01T01:00:00Z' }])
            assertError(await req('PATCH', `/campus-events/${ev.id}`, a.token, body), 400, 'validation_failed');
        const still = (await req('GET', `/posts/${p.id}`, a.token)).body;
        assert.deepEqual([still.text, still.like_count, still.comment_count], ['target', 0, 1]);
        const evStill = (await req('GET', `/campus-events/${ev.id}`, a.token)).body;
        assert.deepEqual([evStill.title, evStill.location], ['T', 'L']);
    });

    // ---- demo and events -------------------------------------------------------------------------------------

    test('demo data: posts, follows and a campus event for the demo users', async () => {
        const sam = await srv.login('sam', DEMO_PASSWORD);
        const ada = await srv.login('ada', DEMO_PASSWORD);
        const list = await waitFor(async () => {
            const r = await req('GET', `/users/${ada.user.id}/posts`, sam.token);
            return r.status === 200 && r.body.items.length >= 2 && r.body;
        }, { what: 'demo posts' });
        assert.ok(list.items.some((p) => p.visibility === 'followers'), 'sam follows ada and sees her followers-only post');
        const events = (await req('GET', '/campus-events', sam.token)).body.items;
        assert.ok(events.some((e) => e.organizer_id === ada.user.id && e.my_status === 'going'));
    });

    test('every pl.social.* event in the log validates against its schema', async () => {
        const schemas = loadSchemas();
        const a = await user();
        const s = await post(a, { text: 'last one' });
        const evs = await eventsUntil((e) => e.subject === s.id, 'the last post');
        const types = new Set();
        for (const e of evs) {
            assertValidEvent(schemas, e);
            assert.equal(e.source, '/pulse/social');
            types.add(e.type);
        }
        // and the schemas are strict enough to catch a broken event
        const broken = (type, fn, why) => {
            const e = structuredClone(evs.find((x) => x.type === type));
            fn(e);
            assert.equal(schemas.validatorFor(e).validate(e), false, `${type} schema should reject ${why}`);
        };
        broken('pl.social.post_created.v1', (e) => (e.data.extra = 1), 'an unknown data member');
        broken('pl.social.post_created.v1', (e) => (e.data.visibility = 'friends'), 'an unknown visibility');
        broken('pl.social.post_created.v1', (e) => (e.data.text = 'x'.repeat(5001)), 'text over 5000 code points');
        broken('pl.social.post_liked.v1', (e) => delete e.data.post_author_id, 'a missing post_author_id');
        broken('pl.social.rsvp_changed.v1', (e) => (e.data.status = 'cancel'), 'the request verb as a status');
        broken('pl.social.comment_created.v1', (e) => (e.data.peer_review = 'yes'), 'a non-boolean peer_review');
        broken('pl.social.user_followed.v1', (e) => (e.source = '/pulse/identity'), 'another source');
        for (const t of ['post_created', 'post_updated', 'post_deleted', 'comment_created', 'comment_updated', 'comment_deleted',
            'post_liked', 'post_unliked', 'user_followed', 'user_unfollowed', 'campus_event_created', 'campus_event_updated',
            'campus_event_deleted', 'rsvp_changed'])
            assert.ok(types.has(`pl.social.${t}.v1`), `no ${t} event seen (the tests above emit each)`);
    });

    test('the server and the tail exit cleanly: exit 0, no sanitizer or leak report', async () => {
        await tail.stop();
        await srv.stopClean();
    });
});
