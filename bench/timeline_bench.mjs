// bench/timeline_bench.mjs - the timeline's benchmark driver (bench/timeline.sh runs it against a pulse it
// started hosting identity, social, timeline and the testkit fixture).
//
//   node bench/timeline_bench.mjs fanout BASE FOLLOWERS POSTS
//       An author gets FOLLOWERS followers: 3 real users following through social's API (POST
//       /users/{id}/follow), the rest seeded as pl.social.user_followed.v1 events through the testkit
//       fixture's outbox (the timeline only learns follows from events, so this is the same input to it;
//       it skips 10,000 registrations and logins, which are argon2 and identity work, not fan-out).
//       Synthetic follower ids sort before the real ones, so the real followers' feeds are the last
//       written of each fan-out batch. Then POSTS posts, one at a time: the time from social's 201 to the
//       post being on the first page of the last real follower's home feed (GET /timeline/home, polled
//       every ~1 ms) — through the relay, the bus, the timeline consumer's transaction (10,000-row
//       follower read, entries_added outbox rows, kv batch, commit) and a hydrated read.
//       Prints: fanout followers=N posts=P p50_ms= p90_ms= p99_ms= max_ms= min_ms= author= post=
//   node bench/timeline_bench.mjs read BASE
//       A reader following 3 authors with 10 posts each; prints TOKEN=... for wrk, after warming the cache.
import { randomUUID } from 'node:crypto';

const [mode, BASE, ...rest] = process.argv.slice(2);
const PW = 'Correct-Horse-42';

async function call(method, path, { token, json } = {}) {
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (json !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(BASE + path, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
    const text = await res.text();
    let body = null;
    try {
        body = JSON.parse(text);
    } catch {
        /* not JSON */
    }
    return { status: res.status, body, text };
}

async function must(method, path, opts, ok = [200, 201, 204]) {
    const r = await call(method, path, opts);
    if (!ok.includes(r.status)) throw new Error(`${method} ${path}: ${r.status} ${r.text}`);
    return r.body;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function user(tag) {
    const name = `${tag}${randomUUID().slice(0, 8)}`;
    const u = await must('POST', '/api/v1/auth/register', {
        json: { email: `${name}@bench.example`, username: name, password: PW, display_name: `Bench ${tag}` },
    });
    const { token } = await must('POST', '/api/v1/auth/login', { json: { login: name, password: PW } });
    return { id: u.id, token };
}

async function follow(a, b) {
    for (let i = 0; i < 2000; i++) {
        const r = await call('POST', `/api/v1/users/${b.id}/follow`, { token: a.token });
        if (r.status === 200 || r.status === 201) return;
        if (r.status !== 404) throw new Error(`follow: ${r.status} ${r.text}`);
        await sleep(5); // social has not seen the registration yet
    }
    throw new Error('social never learned the user');
}

async function metric(name) {
    const text = await (await fetch(`${BASE}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(name + ' '));
    return line ? Number(line.split(' ')[1]) : NaN;
}

async function settle(minHandled) {
    for (let i = 0; i < 6000; i++) {
        const lag = await metric('pulse_consumer_lag_events{consumer="timeline.timeline"}');
        const handled = await metric('pulse_consumer_handled_total{consumer="timeline.timeline"}');
        if (lag === 0 && handled >= minHandled) return;
        await sleep(20);
    }
    throw new Error('the timeline consumer did not catch up');
}

async function firstId(who) {
    const r = await call('GET', '/api/v1/timeline/home?limit=1', { token: who.token });
    if (r.status !== 200) throw new Error(`timeline: ${r.status} ${r.text}`);
    return r.body.items[0]?.id;
}

function pct(sorted, p) {
    return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function fanout(followers, posts) {
    const author = await user('author');
    const real = [];
    for (let i = 0; i < 3; i++) real.push(await user('fan'));
    for (const f of real) await follow(f, author);
    const synthetic = followers - real.length;
    let next = 0;
    const now = new Date().toISOString();
    async function worker() {
        while (next < synthetic) {
            const i = next++;
            const fid = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
            await must('POST', '/api/v1/testkit/events', {
                json: {
                    type: 'pl.social.user_followed.v1', subject: author.id, partitionkey: fid,
                    data: { follower_id: fid, followee_id: author.id, followed_at: now },
                },
            });
        }
    }
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 16 }, worker));
    await settle(followers);
    process.stderr.write(`[timeline-bench] ${followers} followers in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    const last = real[real.length - 1]; // the largest id: its feed is the batch's last op
    const times = [];
    let post;
    for (let i = 0; i < posts + 2; i++) {
        const created = await must('POST', '/api/v1/posts', { token: author.token, json: { text: `fan-out ${i}` } });
        const t201 = performance.now();
        post = created.id;
        // polled every ~1 ms, not back to back: the poller must not take the CPU the fan-out needs (2 cores)
        while ((await firstId(last)) !== post) {
            if (performance.now() - t201 > 30000) throw new Error('the post never reached the last follower');
            await sleep(1);
        }
        const ms = performance.now() - t201;
        for (const f of real) if ((await firstId(f)) !== post) throw new Error('a real follower lacks the post');
        if (i >= 2) times.push(ms); // two warm-up posts
        await sleep(100);
    }
    times.sort((a, b) => a - b);
    const f = (x) => x.toFixed(1);
    console.log(`fanout followers=${followers} posts=${times.length} p50_ms=${f(pct(times, 50))} p90_ms=${f(pct(times, 90))} ` +
        `p99_ms=${f(pct(times, 99))} max_ms=${f(times[times.length - 1])} min_ms=${f(times[0])} author=${author.id} post=${post}`);
}

async function read() {
    const reader = await user('reader');
    const authors = [];
    for (let i = 0; i < 3; i++) authors.push(await user('writer'));
    for (const a of authors) await follow(reader, a);
    for (let k = 0; k < 10; k++)
        for (const a of authors) await must('POST', '/api/v1/posts', { token: a.token, json: { text: `post ${k} of a writer, with some text` } });
    for (let i = 0; i < 2000; i++) {
        const r = await call('GET', '/api/v1/timeline/home', { token: reader.token });
        if (r.body?.items?.length === 20) break;
        await sleep(10);
    }
    for (let i = 0; i < 50; i++) await call('GET', '/api/v1/timeline/home', { token: reader.token }); // warm
    console.log(`TOKEN=${reader.token}`);
}

if (mode === 'fanout') await fanout(Number(rest[0] || 10000), Number(rest[1] || 20));
else if (mode === 'read') await read();
else {
    console.error('usage: timeline_bench.mjs fanout BASE [FOLLOWERS] [POSTS] | read BASE');
    process.exit(2);
}
