// notify.test.mjs - notifications end to end, driven by social's real
// events: a like notifies the post's author; a burst of likes coalesces into
// one notification; comments, replies, follows and RSVPs; preferences
// switching kinds off; read, read-all and the unread count; paging with an
// opaque cursor; authorization probes (another user's notifications are
// invisible: 404); malformed input; the emitted events against their schemas.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { assertError, startServer } from './harness.mjs';
import { BUS_ENV, assertValidEvent, loadSchemas, readLog, waitFor } from './bus-harness.mjs';

describe('notify', () => {
    let srv;
    before(async () => {
        srv = await startServer({ env: BUS_ENV, args: ['--services', 'identity,social,notify'] });
    });
    after(async () => {
        await srv?.cleanup();
    });

    const api = (method, p, token, json) => srv.request(method, p, { token, json });
    const inbox = async (token, q = '') => {
        const r = await api('GET', `/api/v1/notifications${q}`, token);
        assert.equal(r.status, 200, r.text);
        return r.body;
    };
    const unreadCount = async (token) => (await api('GET', '/api/v1/notifications/unread-count', token)).body.count;
    // Waits until pred(items) holds for the user's whole inbox.
    const until = (token, pred, what) =>
        waitFor(async () => {
            const { items } = await inbox(token, '?limit=100');
            return pred(items) ? items : null;
        }, { what, timeoutMs: 15000 });

    async function users(n) {
        const out = [];
        for (let i = 0; i < n; i++) {
            const s = await srv.session({ display_name: `User ${String.fromCharCode(65 + i)}${Math.random().toString(36).slice(2, 5)}` });
            out.push({ id: s.user.id, token: s.token, name: s.user.display_name });
        }
        return out;
    }
    async function post(author, text = 'hello campus') {
        const r = await api('POST', '/api/v1/posts', author.token, { text });
        assert.equal(r.status, 201, r.text);
        return r.body;
    }
    const like = async (u, p) => {
        const r = await api('POST', `/api/v1/posts/${p.id}/like`, u.token);
        assert.ok(r.status === 200 || r.status === 201 || r.status === 204, r.text);
    };
    // social answers 404 for a user its projection has not seen yet: retry until it has.
    const follow = (f, target) =>
        waitFor(async () => {
            const r = await api('POST', `/api/v1/users/${target.id}/follow`, f.token);
            if (r.status === 404) return false;
            assert.ok(r.status < 300, r.text);
            return true;
        }, { what: `social knowing ${target.id}` });

    test("a like notifies the post author, never the liker; liking one's own post notifies nobody", async () => {
        const [author, fan] = await users(2);
        const p = await post(author);
        await like(author, p); // own action: nothing
        await like(fan, p);
        const items = await until(author.token, (xs) => xs.length >= 1, 'the like notification');
        assert.equal(items.length, 1, JSON.stringify(items));
        const n = items[0];
        assert.equal(n.kind, 'like');
        assert.equal(n.object_type, 'post');
        assert.equal(n.object_id, p.id);
        assert.deepEqual(n.actor_ids, [fan.id]);
        assert.equal(n.actor_count, 1);
        assert.equal(n.text, `${fan.name} liked your post`);
        assert.equal(n.read, false);
        assert.equal(n.user_id, author.id);
        assert.equal((await inbox(fan.token)).items.length, 0, 'the liker gets nothing');
    });

    test('five likes on one post coalesce into one notification: actor_count 5, the 3 most recent actors, top by updated_at', async () => {
        const [author, ...fans] = await users(6);
        const p = await post(author);
        const other = await post(author, 'another');
        await like(fans[0], other);
        await until(author.token, (xs) => xs.length === 1, 'the first notification');
        for (const f of fans) await like(f, p);
        const items = await until(author.token, (xs) => xs.some((x) => x.object_id === p.id && x.actor_count === 5), 'five actors');
        const mine = items.filter((x) => x.object_id === p.id);
        assert.equal(mine.length, 1, 'one coalesced notification');
        const n = mine[0];
        assert.deepEqual(n.actor_ids, [fans[4].id, fans[3].id, fans[2].id]);
        assert.equal(n.text, `${fans[4].name}, ${fans[3].name} and 3 others liked your post`);
        assert.equal(items[0].id, n.id, 'moved to the top');
        assert.ok(n.updated_at >= n.created_at);
        // the same actor again (unlike + like) does not count twice; a new liker after it (same post: same
        // partition, so handled after the re-like) makes 6
        const r = await api('DELETE', `/api/v1/posts/${p.id}/like`, fans[0].token);
        assert.ok(r.status < 300, r.text);
        await like(fans[0], p);
        const [sixth] = await users(1);
        await like(sixth, p);
        const grown = await until(author.token, (xs) => xs.some((x) => x.id === n.id && x.actor_count >= 6), 'the sixth liker');
        assert.equal(grown.find((x) => x.id === n.id).actor_count, 6, 'the re-like was not counted again');
        // once read, the next like starts a new notification
        assert.equal((await api('POST', `/api/v1/notifications/${n.id}/read`, author.token)).status, 200);
        const late = (await users(1))[0];
        await like(late, p);
        const after2 = await until(author.token, (xs) => xs.filter((x) => x.object_id === p.id).length === 2, 'a new notification');
        const fresh = after2.find((x) => x.object_id === p.id && x.id !== n.id);
        assert.equal(fresh.actor_count, 1);
        assert.equal(fresh.read, false);
    });

    test('comments notify the post author; replies notify the parent comment author (once, not twice)', async () => {
        const [author, c1, c2] = await users(3);
        const p = await post(author);
        const r1 = await api('POST', `/api/v1/posts/${p.id}/comments`, c1.token, { text: 'first!' });
        assert.equal(r1.status, 201, r1.text);
        const r2 = await api('POST', `/api/v1/posts/${p.id}/comments`, c2.token, { text: 'reply', parent_id: r1.body.id });
        assert.equal(r2.status, 201, r2.text);
        const items = await until(author.token, (xs) => xs.some((x) => x.kind === 'comment' && x.actor_count === 2), 'two commenters');
        assert.equal(items.filter((x) => x.kind === 'comment').length, 1);
        const replies = await until(c1.token, (xs) => xs.some((x) => x.kind === 'reply'), 'the reply');
        assert.equal(replies[0].object_type, 'comment');
        assert.equal(replies[0].object_id, r1.body.id);
        assert.equal(replies[0].text, `${c2.name} replied to your comment`);
        // the author replying to a comment on their own post: the commenter hears of it, the author nothing new
        const r3 = await api('POST', `/api/v1/posts/${p.id}/comments`, author.token, { text: 'thanks', parent_id: r1.body.id });
        assert.equal(r3.status, 201, r3.text);
        await until(c1.token, (xs) => xs.some((x) => x.kind === 'reply' && x.actor_count === 2), 'the second reply');
        assert.equal((await inbox(author.token)).items.length, 1);
    });

    test('follows notify the followee and coalesce; RSVPs notify the organizer', async () => {
        const [star, f1, f2, f3] = await users(4);
        for (const f of [f1, f2, f3]) await follow(f, star);
        const items = await until(star.token, (xs) => xs.some((x) => x.kind === 'follow' && x.actor_count === 3), 'three followers');
        const n = items.find((x) => x.kind === 'follow');
        assert.equal(n.text, `${f3.name}, ${f2.name} and ${f1.name} started following you`);
        assert.equal(n.object_id, star.id);
        const ev = await api('POST', '/api/v1/campus-events', star.token, {
            title: 'Study night', description: 'bring snacks', location: 'Library',
            starts_at: new Date(Date.now() + 86400000).toISOString(), ends_at: new Date(Date.now() + 90000000).toISOString(),
        });
        assert.equal(ev.status, 201, ev.text);
        const rs = await api('POST', `/api/v1/campus-events/${ev.body.id}/rsvp`, f1.token, { status: 'going' });
        assert.ok(rs.status < 300, rs.text);
        const got = await until(star.token, (xs) => xs.some((x) => x.kind === 'rsvp'), 'the rsvp');
        const r = got.find((x) => x.kind === 'rsvp');
        assert.equal(r.object_type, 'campus_event');
        assert.equal(r.text, `${f1.name} is going to your event`);
    });

    test('preferences: a kind switched off is not created; GET shows every kind; bad input is a 400', async () => {
        const [u, fan] = await users(2);
        let r = await api('GET', '/api/v1/me/notification-preferences', u.token);
        assert.equal(r.status, 200);
        assert.deepEqual(r.body, { in_app: { like: true, comment: true, reply: true, follow: true, rsvp: true, badge: true, order: true } });
        r = await srv.request('PUT', '/api/v1/me/notification-preferences', { token: u.token, json: { in_app: { like: false } } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.in_app.like, false);
        assert.equal(r.body.in_app.follow, true);
        for (const body of [{}, { in_app: [] }, { in_app: { like: 'no' } }, { in_app: { poke: true } }, { in_app: {}, email: {} }]) {
            const e = assertError(await srv.request('PUT', '/api/v1/me/notification-preferences', { token: u.token, json: body }), 400, 'validation_failed');
            assert.ok(Object.keys(e.fields).length > 0);
        }
        assertError(await srv.request('PUT', '/api/v1/me/notification-preferences', { token: u.token, body: '{', headers: { 'content-type': 'application/json' } }), 400, 'malformed_json');
        assert.equal((await api('GET', '/api/v1/me/notification-preferences', u.token)).body.in_app.like, false, 'bad input changed nothing');
        const p = await post(u);
        await like(fan, p);
        // sentinel: a comment on the same post (same partition: handled after the like)
        const c = await api('POST', `/api/v1/posts/${p.id}/comments`, fan.token, { text: 'nice' });
        assert.equal(c.status, 201, c.text);
        const items = await until(u.token, (xs) => xs.some((x) => x.kind === 'comment'), 'the comment');
        assert.deepEqual(items.map((x) => x.kind), ['comment'], 'no like notification');
        assertError(await api('GET', '/api/v1/me/notification-preferences'), 401);
    });

    test('read, read-all, unread-count and paging with an opaque cursor', async () => {
        const [u, ...fans] = await users(5);
        const posts = [];
        for (let i = 0; i < 7; i++) posts.push(await post(u, `post ${i}`));
        for (let i = 0; i < 7; i++) {
            await like(fans[i % 4], posts[i]); // one at a time: different posts are different partitions
            await until(u.token, (xs) => xs.length === i + 1, `notification ${i + 1}`);
        }
        assert.equal(await unreadCount(u.token), 7);
        const seen = [];
        let cursor = null;
        for (;;) {
            const page = await inbox(u.token, `?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
            seen.push(...page.items.map((x) => x.object_id));
            cursor = page.next_cursor;
            if (!cursor) break;
        }
        assert.deepEqual(seen, posts.map((p) => p.id).reverse(), 'newest first, each once');
        const all = (await inbox(u.token)).items;
        let r = await api('POST', `/api/v1/notifications/${all[0].id}/read`, u.token);
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.read, true);
        assert.equal(await unreadCount(u.token), 6);
        assert.equal((await inbox(u.token, '?unread=true')).items.length, 6);
        r = await api('POST', `/api/v1/notifications/${all[0].id}/read`, u.token);
        assert.equal(r.status, 200, 'marking twice is fine');
        r = await api('POST', '/api/v1/notifications/read-all', u.token);
        assert.deepEqual(r.body, { marked: 6 });
        assert.equal(await unreadCount(u.token), 0);
        assert.equal((await inbox(u.token, '?unread=true')).items.length, 0);
        const first = await inbox(u.token, '?limit=2');
        const good = first.next_cursor;
        const tampered = good.slice(0, 5) + (good[5] === 'A' ? 'B' : 'A') + good.slice(6);
        for (const q of [`?cursor=${tampered}`, '?cursor=xyz', '?cursor=', '?limit=0', '?limit=101', '?limit=ten', '?unread=maybe'])
            assertError(await api('GET', `/api/v1/notifications${q}`, u.token), 400, 'validation_failed');
    });

    test('authorization: another user cannot list, count, read or mark my notifications', async () => {
        const [owner, fan, snoop] = await users(3);
        const p = await post(owner);
        await like(fan, p);
        const [n] = await until(owner.token, (xs) => xs.length === 1, 'the notification');
        assert.equal((await inbox(snoop.token)).items.length, 0);
        assert.equal(await unreadCount(snoop.token), 0);
        assertError(await api('POST', `/api/v1/notifications/${n.id}/read`, snoop.token), 404, 'not_found');
        assertError(await api('POST', '/api/v1/notifications/019a0000-0000-7000-8000-000000000000/read', owner.token), 404, 'not_found');
        assertError(await api('POST', '/api/v1/notifications/nonsense/read', owner.token), 404, 'not_found');
        const r = await api('POST', '/api/v1/notifications/read-all', snoop.token);
        assert.deepEqual(r.body, { marked: 0 });
        const still = (await inbox(owner.token)).items[0];
        assert.equal(still.read, false, 'the snoop changed nothing');
        // another user's cursor gives nothing of mine
        for (const path of ['/api/v1/notifications', '/api/v1/notifications/unread-count']) assertError(await api('GET', path), 401);
        assertError(await api('POST', `/api/v1/notifications/${n.id}/read`), 401);
    });

    test('emitted notification events validate against their schemas', async () => {
        const [author, a, b] = await users(3);
        const p = await post(author);
        await like(a, p);
        await until(author.token, (xs) => xs.length === 1, 'created');
        await like(b, p);
        await until(author.token, (xs) => xs[0]?.actor_count === 2, 'updated');
        const mine = (ev) => ev.data?.user_id === author.id;
        const events = await readLog(srv.dataDir, (evs) => evs.filter(mine).length >= 2, { pattern: 'pl.notify.*' });
        const schemas = loadSchemas();
        const ours = events.filter(mine);
        for (const ev of ours) assertValidEvent(schemas, ev);
        assert.deepEqual(ours.map((e) => e.type), ['pl.notify.notification_created.v1', 'pl.notify.notification_updated.v1']);
        assert.equal(ours[1].data.actor_count, 2);
        assert.deepEqual(ours[1].data.actor_ids, [b.id, a.id]);
        assert.equal(ours[0].partitionkey, author.id);
        assert.equal(ours[0].subject, ours[0].data.notification_id);
    });

    test('the server stops cleanly: no 5xx, no error lines, no sanitizer report', async () => {
        await srv.assertHealthy();
        await srv.stopClean();
    });
});

// achievements awards a badge for every first post, so it runs on a server of its own (the counts above
// would all grow by one).
describe('notify with achievements', () => {
    test('a badge notifies its earner with no actors: a first post earns "First post"', async () => {
        const srv = await startServer({ env: BUS_ENV, args: ['--services', 'identity,social,achievements,notify'] });
        try {
            const u = await srv.session();
            const p = await srv.post('/api/v1/posts', { text: 'my very first post' }, { token: u.token });
            assert.equal(p.status, 201, p.text);
            const items = await waitFor(async () => {
                const r = await srv.get('/api/v1/notifications', { token: u.token });
                return r.body?.items?.length ? r.body.items : null;
            }, { what: 'the badge notification', timeoutMs: 15000 });
            assert.equal(items.length, 1);
            const b = items[0];
            assert.equal(b.kind, 'badge');
            assert.equal(b.object_type, 'badge');
            assert.equal(b.text, 'You earned the badge "First post"');
            assert.deepEqual(b.actor_ids, []);
            assert.equal(b.actor_count, 0);
            await srv.stopClean();
        } finally {
            await srv.cleanup();
        }
    });
});
