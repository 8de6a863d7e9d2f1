// journeys.test.mjs - whole-hub journeys across services, watched from the
// user's WebSocket (both profiles; every service hosted, with the demo).
//
//   purchase   a student buys a premium course: the socket receives the
//              saga's pl.commerce.order_updated.v1 states through to
//              completed; the course's lessons open; a notification of the
//              order arrives too; nobody else's socket gets any of it
//   badge      a first post: achievements awards first_post, notify turns it
//              into a badge notification, the socket receives it
//   feed       a followed author posts: pl.timeline.entries_added.v1 reaches
//              the follower's socket, and the post is in the home feed
//   message    a direct message reaches the recipient's socket
//   probes     a stranger sees neither the order, the invoice, the
//              conversation, nor the notifications (404 / empty)
//
// Each wait is a liveness bound with a generous timeout, never a speed target.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';

import { startServer } from './harness.mjs';
import { BUS_ENV, assertValidEvent, loadSchemas, waitFor } from './bus-harness.mjs';

const API = '/api/v1';
const DEMO_PASSWORD = 'campus-demo-1';
const WAIT_MS = 30000;
const ENV = { ...BUS_ENV, PULSE_SERVICE_COMMERCE_EXECUTOR_POLL: '20ms' };
const schemas = loadSchemas();

function stream(srv, token) {
    const ws = new WebSocket(`ws://127.0.0.1:${srv.port}${API}/stream`, { headers: { Authorization: `Bearer ${token}` } });
    const s = { ws, events: [] };
    s.ready = new Promise((resolve, reject) => {
        ws.on('message', (data) => {
            const ev = JSON.parse(data.toString());
            s.events.push(ev);
            if (ev.type === 'pl.realtime.ready.v1') resolve(ev);
        });
        ws.on('error', reject);
    });
    s.until = (pred, what) => waitFor(() => s.events.find(pred), { timeoutMs: WAIT_MS, what });
    s.close = () => {
        ws.close(1000);
    };
    return s;
}

describe('journeys', () => {
    let srv, admin;
    const sockets = [];
    before(async () => {
        srv = await startServer({ env: ENV, args: ['--demo'] });
        admin = (await srv.login('admin', DEMO_PASSWORD)).token;
    });
    after(async () => {
        for (const s of sockets) s.close();
        await srv?.cleanup();
    });

    async function person() {
        const { user } = await srv.session();
        const token = (await srv.login(user.username)).token;
        const s = stream(srv, token);
        sockets.push(s);
        await s.ready;
        return { user, token, s };
    }
    const req = (method, p, token, json, headers) => srv.request(method, API + p, { token, json, headers });

    test('a purchase: every saga state on the buyer socket, access granted, an order notification', async () => {
        const buyer = await person();
        const other = await person();
        const c = await req('POST', '/courses', admin, {
            title: 'Compilers', level: 'advanced', premium: true, price_cents: 3900, currency: 'EUR', capacity: 3, published: true,
        });
        assert.equal(c.status, 201, c.text);
        const order = await waitFor(async () => {
            const r = await req('POST', `/courses/${c.body.id}/purchase`, buyer.token, undefined, { 'Idempotency-Key': 'journey-1' });
            return r.status === 202 ? r.body : null; // 404 until commerce's catalog has the course
        }, { timeoutMs: WAIT_MS, what: 'the purchase accepted' });

        const done = await buyer.s.until(
            (e) => e.type === 'pl.commerce.order_updated.v1' && e.data.order_id === order.id && e.data.state === 'completed',
            'the completed state on the socket',
        );
        assertValidEvent(schemas, done);
        const states = buyer.s.events.filter((e) => e.type === 'pl.commerce.order_updated.v1' && e.data.order_id === order.id);
        assert.ok(states.length >= 3, `several saga states were pushed: ${states.map((e) => e.data.state)}`);
        const r = await req('GET', `/orders/${order.id}`, buyer.token);
        assert.equal(r.body.state, 'completed');
        const lessons = await req('GET', `/courses/${c.body.id}/lessons`, buyer.token);
        assert.equal(lessons.status, 200, lessons.text);

        await buyer.s.until((e) => e.type === 'pl.notify.notification_created.v1' && e.data.kind === 'order', 'the order notification');
        // nobody else heard of it, or may read it
        assert.ok(!other.s.events.some((e) => e.type.startsWith('pl.commerce.') || e.data?.kind === 'order'));
        assert.equal((await req('GET', `/orders/${order.id}`, other.token)).status, 404);
        assert.equal((await req('GET', `/invoices/${r.body.invoice_id}`, other.token)).status, 404);
    });

    test('a first post: a badge notification on the socket', async () => {
        const p = await person();
        const res = await req('POST', '/posts', p.token, { text: 'my first post', visibility: 'public' });
        assert.equal(res.status, 201, res.text);
        const n = await p.s.until((e) => e.type === 'pl.notify.notification_created.v1' && e.data.kind === 'badge', 'a badge notification');
        assertValidEvent(schemas, n);
        assert.equal(n.data.user_id, p.user.id);
    });

    test("a followed author's post reaches the follower's socket and home feed; a message reaches its recipient", async () => {
        const author = await person();
        const fan = await person();
        const stranger = await person();
        await waitFor(async () => (await req('POST', `/users/${author.user.id}/follow`, fan.token)).status === 200, {
            timeoutMs: WAIT_MS, what: 'social to know the author',
        });
        const post = await req('POST', '/posts', author.token, { text: 'for my followers', visibility: 'followers' });
        assert.equal(post.status, 201, post.text);
        await fan.s.until((e) => e.type === 'pl.timeline.entries_added.v1' && e.data.post_id === post.body.id, 'the feed entry');
        const feed = await req('GET', '/timeline/home', fan.token);
        assert.ok(feed.body.items.some((i) => i.id === post.body.id), 'the post is in the home feed');
        const strangerFeed = await req('GET', '/timeline/home', stranger.token);
        assert.ok(!strangerFeed.body.items.some((i) => i.id === post.body.id), 'not in a stranger feed');
        assert.equal((await req('GET', `/posts/${post.body.id}`, stranger.token)).status, 404);

        const conv = await waitFor(async () => {
            const r = await req('POST', '/conversations', fan.token, { kind: 'direct', member_ids: [author.user.id] });
            return r.status === 201 || r.status === 200 ? r.body : null; // 422 until messaging knows the user
        }, { timeoutMs: WAIT_MS, what: 'the conversation' });
        const m = await req('POST', `/conversations/${conv.id}/messages`, fan.token, { text: 'loved it' });
        assert.equal(m.status, 201, m.text);
        const got = await author.s.until((e) => e.type === 'pl.messaging.message_sent.v1' && e.data.text === 'loved it', 'the message');
        assert.equal(got.data.recipient_ids, undefined, 'the recipient list is not sent to clients');
        assert.equal((await req('GET', `/conversations/${conv.id}/messages`, stranger.token)).status, 404);
        assert.ok(!stranger.s.events.some((e) => e.type === 'pl.messaging.message_sent.v1' || e.type === 'pl.timeline.entries_added.v1'));
        const notes = await req('GET', '/notifications', stranger.token);
        assert.equal(notes.status, 200);
        assert.ok(notes.body.items.every((n) => n.user_id === undefined || n.user_id === stranger.user.id));
    });
});
