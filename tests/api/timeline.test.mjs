// timeline.test.mjs - the timeline service black-box: home feeds fanned out
// from social's events, read through GET /api/v1/timeline/home.
//
//   fan-out     follow -> post -> in the follower's feed and the author's, not in a stranger's
//   visibility  followers-only posts reach followers only
//   unfollow    removes the author's entries; delete removes the post from every feed
//   backfill    following brings the followee's recent posts in
//   likes       like_count, comment_count and liked_by_me follow the events
//   hybrid      an author above fanout_threshold (2 here) is merged at read time, no entries_added
//   paging      limit/cursor: no duplicate, no gap, while new posts arrive
//   cap         feed_max trims the oldest entries
//   replay      `pulse replay timeline` rebuilds identical feeds (read models AND kv)
//   input       malformed limit/cursor -> 400 in the error shape; no token -> 401
//
// The events come from the real social and identity services (their APIs).

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { BUS_ENV, assertValidEvent, dlqList, emit, loadSchemas, pulseCmd, readLog, waitFor } from './bus-harness.mjs';
import { assertError, makeTempDir, startServer } from './harness.mjs';

const SERVICES = 'identity,social,timeline,testkit'; // testkit: malformed and duplicate events
const COURSE = randomUUID();
const ENV = { ...BUS_ENV, PULSE_SERVICE_TIMELINE_FANOUT_THRESHOLD: '2' };

// ---- social, through its API ------------------------------------------------------------------

class Social {
    constructor(srv) {
        this.srv = srv;
    }

    async call(method, p, who, json, ok = [200, 201, 204]) {
        const res = await this.srv.request(method, `/api/v1${p}`, { token: who.token, json });
        assert.ok(ok.includes(res.status), `${method} ${p}: ${res.status} ${res.text}`);
        return res.body;
    }

    async post(author, { text = `post by ${author.input.username}`, visibility = 'public', course_id = null } = {}) {
        return (await this.call('POST', '/posts', author, { text, visibility, course_id })).id;
    }

    // social answers 404 for a user until its projection has seen the registration
    async follow(follower, followee) {
        await waitFor(async () => {
            const res = await this.srv.request('POST', `/api/v1/users/${followee.user.id}/follow`, { token: follower.token });
            assert.ok([200, 201, 404].includes(res.status), res.text);
            return res.status !== 404;
        }, { what: 'social to know the followee' });
    }

    async unfollow(follower, followee) {
        await this.call('DELETE', `/users/${followee.user.id}/follow`, follower);
    }

    async remove(author, postId) {
        await this.call('DELETE', `/posts/${postId}`, author);
    }

    async like(user, postId, liked = true) {
        await this.call(liked ? 'POST' : 'DELETE', `/posts/${postId}/like`, user);
    }

    async comment(user, postId) {
        return (await this.call('POST', `/posts/${postId}/comments`, user, { text: 'nice' })).id;
    }
}

// ---- reading feeds ------------------------------------------------------------------------------

async function page(srv, who, query = '') {
    const res = await srv.get(`/api/v1/timeline/home${query}`, { token: who.token });
    assert.equal(res.status, 200, res.text);
    return res.body;
}

async function feedIds(srv, who, limit = 100) {
    return (await page(srv, who, `?limit=${limit}`)).items.map((p) => p.id);
}

// Waits until who's first page satisfies pred(ids, items).
async function waitFeed(srv, who, pred, what) {
    let last;
    return waitFor(
        async () => {
            const body = await page(srv, who, '?limit=100');
            last = body.items;
            return pred(body.items.map((p) => p.id), body.items) ? body.items : null;
        },
        { what, describe: () => JSON.stringify(last?.map((p) => [p.id, p.author.username])) },
    );
}

async function users(srv, n) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(await srv.session());
    return out;
}

describe('timeline', () => {
    let srv, social, dir;

    before(async () => {
        dir = await makeTempDir('pulse-timeline-');
        srv = await startServer({ dataDir: dir, env: ENV, args: ['--services', SERVICES] });
        social = new Social(srv);
    });
    after(async () => {
        await srv?.stopClean();
    });

    test('a post reaches its followers and its author, not strangers; hydrated with the author', async () => {
        const [ann, bob, eve] = await users(srv, 3);
        await social.follow(bob, ann);
        const postId = await social.post(ann, { text: 'hello followers', course_id: COURSE });
        const items = await waitFeed(srv, bob, (ids) => ids.includes(postId), 'the post in the follower feed');
        const p = items.find((x) => x.id === postId);
        assert.deepEqual(Object.keys(p).sort(), ['author', 'comment_count', 'course_id', 'created_at', 'id', 'like_count',
            'liked_by_me', 'text', 'visibility'].sort());
        assert.equal(p.text, 'hello followers');
        assert.equal(p.course_id, COURSE);
        assert.equal(p.visibility, 'public');
        assert.equal(p.like_count, 0);
        assert.equal(p.liked_by_me, false);
        assert.deepEqual(p.author, { id: ann.user.id, username: ann.input.username, display_name: ann.input.display_name });
        await waitFeed(srv, ann, (ids) => ids.includes(postId), 'the post in its author feed');
        // a stranger's feed: a sentinel post of eve's own shows it is up to date, and ann's post is not there
        const own = await social.post(eve);
        const eveIds = await waitFeed(srv, eve, (ids) => ids.includes(own), 'the stranger own post');
        assert.ok(!eveIds.some((x) => x.id === postId), 'a stranger does not get the post');
        // a probe: naming another user in the query still reads the caller's own feed
        const probe = await page(srv, eve, `?user_id=${bob.user.id}&user=${bob.user.id}`);
        assert.ok(!probe.items.some((x) => x.id === postId), 'no way to read another user feed');
    });

    test('followers-only posts reach followers; unfollow removes the author; delete removes the post', async () => {
        const [ann, bob, cat] = await users(srv, 3);
        await social.follow(bob, ann);
        await social.follow(cat, ann);
        const priv = await social.post(ann, { text: 'followers only', visibility: 'followers' });
        const pub = await social.post(ann, { text: 'public' });
        await waitFeed(srv, bob, (ids) => ids.includes(priv) && ids.includes(pub), 'both posts at bob');
        const catItems = await waitFeed(srv, cat, (ids) => ids.includes(priv), 'the followers-only post at cat');
        assert.equal(catItems.find((p) => p.id === priv).visibility, 'followers');

        await social.unfollow(bob, ann);
        await waitFeed(srv, bob, (ids) => !ids.includes(priv) && !ids.includes(pub), 'ann leaves bob feed');
        await social.remove(ann, pub);
        await waitFeed(srv, cat, (ids) => !ids.includes(pub) && ids.includes(priv), 'the deleted post leaves cat feed');
        await waitFeed(srv, ann, (ids) => !ids.includes(pub), 'the deleted post leaves its author feed');
    });

    test('follow backfills the followee recent posts, newest first', async () => {
        const [ann, dan] = await users(srv, 2);
        const posts = [];
        for (let i = 0; i < 3; i++) posts.push(await social.post(ann, { text: `old ${i}` }));
        await waitFeed(srv, ann, (ids) => posts.every((p) => ids.includes(p)), 'ann own posts');
        await social.follow(dan, ann);
        const items = await waitFeed(srv, dan, (ids) => posts.every((p) => ids.includes(p)), 'the backfill');
        const order = items.filter((p) => posts.includes(p.id)).map((p) => p.id);
        const byTime = items.filter((p) => posts.includes(p.id)).map((p) => p.created_at);
        assert.deepEqual([...byTime].sort().reverse(), byTime, 'newest first');
        assert.equal(order.length, 3);
    });

    test('likes and comments: like_count, comment_count and liked_by_me', async () => {
        const [ann, bob, cat] = await users(srv, 3);
        await social.follow(bob, ann);
        const postId = await social.post(ann);
        await waitFeed(srv, bob, (ids) => ids.includes(postId), 'the post');
        await social.like(bob, postId);
        await social.like(cat, postId);
        await social.comment(cat, postId);
        const items = await waitFeed(srv, bob, (_, it) => it.find((p) => p.id === postId)?.like_count === 2 &&
            it.find((p) => p.id === postId)?.comment_count === 1, 'counts');
        assert.equal(items.find((p) => p.id === postId).liked_by_me, true);
        const annItems = await page(srv, ann);
        assert.equal(annItems.items.find((p) => p.id === postId).liked_by_me, false, 'the author did not like it');
        await social.like(bob, postId, false);
        const later = await waitFeed(srv, bob, (_, it) => it.find((p) => p.id === postId)?.like_count === 1, 'unlike');
        assert.equal(later.find((p) => p.id === postId).liked_by_me, false);
    });

    test('hybrid: an author above fanout_threshold is merged at read time and announces nothing', async () => {
        const [star, f1, f2, f3, small, fan] = await users(srv, 6);
        for (const f of [f1, f2, f3]) await social.follow(f, star);
        await social.follow(fan, small);
        const starPost = await social.post(star, { text: 'from the star' });
        for (const f of [f1, f2, f3])
            await waitFeed(srv, f, (ids) => ids.includes(starPost), 'the star post merged into a follower feed');
        const items = await page(srv, f1);
        assert.equal(items.items.filter((p) => p.id === starPost).length, 1, 'once');
        // a sentinel fanned out after: once its entries_added is in the log, the star's would be too
        const sentinel = await social.post(small);
        await waitFeed(srv, fan, (ids) => ids.includes(sentinel), 'the sentinel');
        const log = await readLog(dir, (evs) => evs.some((e) => e.data?.post_id === sentinel),
            { pattern: 'pl.timeline.*' });
        const added = log.filter((e) => e.type === 'pl.timeline.entries_added.v1');
        assert.ok(!added.some((e) => e.data.post_id === starPost), 'no entries_added for a merged post');
        const schemas = loadSchemas();
        for (const e of log) assertValidEvent(schemas, e);
        const sent = added.find((e) => e.data.post_id === sentinel);
        assert.equal(sent.source, '/pulse/timeline');
        assert.equal(sent.partitionkey, small.user.id);
        assert.deepEqual(new Set(sent.data.user_ids), new Set([small.user.id, fan.user.id]));
        assert.equal(sent.subject, sentinel);
        // unfollowing the star stops the merge; its deleted post disappears for the others
        await social.unfollow(f1, star);
        await waitFeed(srv, f1, (ids) => !ids.includes(starPost), 'the star post leaves after unfollow');
        await social.remove(star, starPost);
        await waitFeed(srv, f2, (ids) => !ids.includes(starPost), 'the deleted star post is gone');
    });

    test('pagination: no duplicate and no gap across pages while new posts arrive', async () => {
        const [ann, bob, reader] = await users(srv, 3);
        await social.follow(reader, ann);
        await social.follow(reader, bob);
        const all = [];
        for (let i = 0; i < 7; i++) {
            all.push(await social.post(ann, { text: `a${i}` }));
            all.push(await social.post(bob, { text: `b${i}` }));
        }
        await waitFeed(srv, reader, (ids) => all.every((p) => ids.includes(p)), 'all 14 posts');
        const seen = [];
        let cursor = null;
        for (let round = 0; round < 20; round++) {
            const body = await page(srv, reader, `?limit=4${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
            seen.push(...body.items.map((p) => p.id));
            assert.ok(body.items.length <= 4);
            if (round === 0) await social.post(ann, { text: 'arrives while paging' }); // at the head
            if (!body.next_cursor) break;
            cursor = body.next_cursor;
        }
        assert.equal(new Set(seen).size, seen.length, 'no duplicates');
        assert.deepEqual(seen.filter((id) => all.includes(id)).sort(), [...all].sort(), 'no gaps');
    });

    test('bad input: malformed limit or cursor is a 400, no token a 401', async () => {
        const [u] = await users(srv, 1);
        for (const q of ['?limit=0', '?limit=101', '?limit=abc', '?limit=', '?limit=-1', '?limit=1e2', '?cursor=',
            '?cursor=%%%', '?cursor=bm9wZQ', '?cursor=' + Buffer.from('1:12:bad id!').toString('base64url'),
            '?cursor=' + Buffer.from('2:12:abc').toString('base64url'), '?cursor=' + 'A'.repeat(500)]) {
            const res = await srv.get(`/api/v1/timeline/home${q}`, { token: u.token });
            assertError(res, 400, 'validation_failed');
        }
        assertError(await srv.get('/api/v1/timeline/home'), 401);
        assertError(await srv.get('/api/v1/timeline/home', { token: 'not-a-token' }), 401);
    });

    test('a malformed event is dead-lettered and the feeds keep flowing; a duplicate post shows once', async () => {
        const [ann, bob] = await users(srv, 2);
        await social.follow(bob, ann);
        const bad = await emit(srv, { type: 'pl.social.post_created.v1', subject: 'x', partitionkey: ann.user.id,
            data: { post_id: 'not a valid id!', author_id: ann.user.id } });
        // the same post as a second event (another event id): applied once
        const dupId = randomUUID();
        const data = { post_id: dupId, author_id: ann.user.id, text: 'twice', course_id: null, visibility: 'public',
            created_at: new Date().toISOString() };
        // a like partitioned by post may be applied before the post it likes: liked_by_me must hold either way
        await emit(srv, { type: 'pl.social.post_liked.v1', subject: dupId, partitionkey: dupId,
            data: { post_id: dupId, post_author_id: ann.user.id, user_id: bob.user.id, liked_at: data.created_at } });
        for (let i = 0; i < 2; i++)
            await emit(srv, { type: 'pl.social.post_created.v1', subject: dupId, partitionkey: ann.user.id, data });
        const after = await social.post(ann, { text: 'after the poison' });
        const items = await waitFeed(srv, bob, (ids) => ids.includes(after) && ids.includes(dupId), 'the feed flows');
        assert.equal(items.filter((p) => p.id === dupId).length, 1, 'a duplicate post_created shows once');
        await waitFeed(srv, bob, (_, it) => it.find((p) => p.id === dupId)?.like_count === 1 &&
            it.find((p) => p.id === dupId)?.liked_by_me === true, 'a like applied before its post counts');
        await waitFor(async () => (await dlqList(dir)).some((d) => JSON.stringify(d).includes(bad[0])),
            { what: 'the malformed event in the dead letters' });
    });

    test('replay rebuilds identical feeds (read models and kv)', async () => {
        const [ann, bob, cat] = await users(srv, 3);
        await social.follow(bob, ann);
        await social.follow(cat, bob);
        await social.follow(cat, ann);
        const a1 = await social.post(ann);
        const b1 = await social.post(bob, { visibility: 'followers' });
        const a2 = await social.post(ann);
        await social.like(cat, a1);
        await social.remove(ann, a2);
        await social.unfollow(bob, ann);
        await waitFeed(srv, cat, (ids, it) => ids.includes(a1) && ids.includes(b1) && !ids.includes(a2) &&
            it.find((p) => p.id === a1).like_count === 1, 'the feeds settle');
        await waitFeed(srv, bob, (ids) => !ids.includes(a1), 'unfollow applied');
        const everyone = [ann, bob, cat];
        const before = [];
        for (const u of everyone) before.push((await page(srv, u, '?limit=100')).items);
        await srv.stopClean();
        const r = await pulseCmd(dir, ['replay', 'timeline', '--services', SERVICES], { env: ENV });
        assert.equal(r.code, 0, `replay: ${r.stderr}`);
        assert.match(r.stdout, /replayed timeline/);
        assert.ok(r.stderr.includes('"timeline reset"'), r.stderr);
        srv = await startServer({ dataDir: dir, env: ENV, args: ['--services', SERVICES] });
        social.srv = srv;
        for (const [i, u] of everyone.entries())
            assert.deepEqual((await page(srv, u, '?limit=100')).items, before[i], `feed ${i} after replay`);
    });
});

describe('timeline feed cap', () => {
    let srv, social;
    before(async () => {
        srv = await startServer({ env: { ...ENV, PULSE_SERVICE_TIMELINE_FEED_MAX: '10' }, args: ['--services', SERVICES] });
        social = new Social(srv);
    });
    after(async () => {
        await srv?.stopClean();
    });

    test('feed_max keeps the newest entries', async () => {
        const [ann, bob] = await users(srv, 2);
        await social.follow(bob, ann);
        const posts = [];
        for (let i = 0; i < 13; i++) posts.push(await social.post(ann, { text: `p${i}` }));
        const newest = posts.slice(-10).reverse();
        await waitFeed(srv, bob, (ids) => ids.length === 10 && newest.every((p, i) => ids[i] === p), 'the 10 newest');
        const ids = await feedIds(srv, bob);
        assert.ok(!posts.slice(0, 3).some((p) => ids.includes(p)), 'the oldest were trimmed');
    });
});
