// achievements.test.mjs - badges from real actions (both profiles).
//
//   awards       a first post earns first_post once (a second post adds
//                nothing); a peer-review comment earns first_peer_review; a
//                plain comment earns nothing; each award is one
//                pl.achievements.badge_awarded.v1 that validates
//   visibility   GET users/{id}/badges shows another user's badges; the
//                catalogue lists every badge; unauthenticated 401; a bad id 400
//   never blocks social runs without achievements and posts are created;
//                achievements started later on the same log awards the badge

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { assertError, makeTempDir, removeTempDir, startServer } from './harness.mjs';
import { BUS_ENV, Tail, assertValidEvent, loadSchemas, waitFor } from './bus-harness.mjs';

const API = '/api/v1';

async function badges(srv, token, who = 'me') {
    const res = await srv.request('GET', `${API}/${who === 'me' ? 'me' : `users/${who}`}/badges`, { token });
    assert.equal(res.status, 200, res.text);
    return res.body.items.map((b) => b.badge).sort();
}

async function post(srv, token, text) {
    const res = await srv.request('POST', `${API}/posts`, { token, json: { text, visibility: 'public' } });
    assert.equal(res.status, 201, res.text);
    return res.body;
}

describe('achievements', () => {
    let srv, tail;
    before(async () => {
        srv = await startServer({ env: BUS_ENV });
    });
    after(async () => {
        await tail?.cleanup();
        await srv?.cleanup();
    });

    test('a first post and a first peer review earn their badges once', async () => {
        const { user, token } = await srv.session();
        const p = await post(srv, token, 'hello campus');
        await waitFor(async () => (await badges(srv, token)).includes('first_post'), { what: 'first_post' });
        await post(srv, token, 'a second post');

        // a plain comment earns nothing; a peer review does
        const plain = await srv.request('POST', `${API}/posts/${p.id}/comments`, { token, json: { text: 'nice' } });
        assert.equal(plain.status, 201, plain.text);
        const review = await srv.request('POST', `${API}/posts/${p.id}/comments`, {
            token,
            json: { text: 'clear structure; cite the sources', peer_review: true },
        });
        assert.equal(review.status, 201, review.text);
        await waitFor(async () => (await badges(srv, token)).includes('first_peer_review'), { what: 'first_peer_review' });
        // tailed only now: on JetStream the context's stream exists once something was published to it
        tail = new Tail(srv.dataDir, { pattern: 'pl.achievements.*', fromStart: true });
        // the second post and the plain comment were applied (activity) before the review
        assert.deepEqual(await badges(srv, token), ['first_peer_review', 'first_post']);

        const events = await waitFor(
            () => {
                const mine = tail.events.filter((e) => e.data.user_id === user.id);
                return mine.length === 2 && mine;
            },
            { what: 'two badge_awarded events' },
        );
        const schemas = loadSchemas();
        for (const ev of events) assertValidEvent(schemas, ev);
        assert.deepEqual(events.map((e) => e.data.badge).sort(), ['first_peer_review', 'first_post']);
    });

    test("another user's badges, the catalogue, and bad requests", async () => {
        const a = await srv.session();
        const b = await srv.session();
        await post(srv, a.token, 'mine');
        await waitFor(async () => (await badges(srv, b.token, a.user.id)).includes('first_post'), {
            what: "a's badge seen by b",
        });
        assert.deepEqual(await badges(srv, b.token), [], 'b earned nothing');
        assert.deepEqual(await badges(srv, b.token, a.user.id.toUpperCase()), ['first_post'], 'the id in any case');

        const cat = await srv.request('GET', `${API}/badges`, { token: b.token });
        assert.equal(cat.status, 200);
        assert.deepEqual(cat.body.items.map((x) => x.badge).sort(), [
            'first_course_completed', 'first_peer_review', 'first_post', 'quiz_ace', 'streak_7',
        ]);
        assertError(await srv.request('GET', `${API}/me/badges`), 401, 'unauthorized');
        assertError(await srv.request('GET', `${API}/users/not-a-uuid/badges`, { token: b.token }), 400, 'validation_failed');
    });
});

describe('achievements never blocks the action', () => {
    test('posts succeed while achievements is not running; the badge follows when it starts', async () => {
        const dir = await makeTempDir();
        let srv;
        try {
            srv = await startServer({ dataDir: dir, env: BUS_ENV, args: ['--services', 'identity,social'] });
            const { user } = await srv.session();
            const token = (await srv.login(user.username)).token;
            for (let i = 0; i < 3; i++) await post(srv, token, `post ${i} while achievements is down`);
            await srv.stopClean();

            srv = await startServer({ dataDir: dir, env: BUS_ENV, args: ['--services', 'identity,social,achievements'] });
            await waitFor(async () => (await badges(srv, token)).includes('first_post'), {
                what: 'first_post after achievements started',
            });
            assert.deepEqual(await badges(srv, token), ['first_post']);
            await srv.stopClean();
        } finally {
            await srv?.cleanup();
            await removeTempDir(dir);
        }
    });
});
