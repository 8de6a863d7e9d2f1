// bench/saga.mjs - purchases per second through the whole purchase saga
// (commerce + courses in one process, the payment simulator at zero latency)
// and each order's completion latency (order created -> completed, both
// stamped by the server). Run by bench/saga.sh; prints one JSON line.
//
//   PULSE_TEST_BIN=build/pulse [PULSE_TEST_PROFILE=distributed PULSE_TEST_ENGINES_ENV=...] node bench/saga.mjs
//
// Env: SAGA_USERS (default 50), SAGA_COURSES (default 40): every user buys every
// course once (users x courses purchases); SAGA_CONCURRENCY (default 32) requests in flight.
import fs from 'node:fs';
import os from 'node:os';
import { startServer } from '../tests/api/harness.mjs';

const USERS = Number(process.env.SAGA_USERS || 50);
const COURSES = Number(process.env.SAGA_COURSES || 40);
const CONC = Number(process.env.SAGA_CONCURRENCY || 32);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const srv = await startServer({
    args: ['--services', 'identity,courses,commerce', '--demo'],
    env: { PULSE_LOG_ACCESS: 'false', PULSE_SERVICE_COMMERCE_EXECUTOR_BATCH: '256' },
});
try {
    const admin = (await srv.post('/api/v1/auth/login', { login: 'admin', password: 'campus-demo-1' })).body.token;
    const courses = [];
    for (let i = 0; i < COURSES; i++) {
        const r = await srv.post('/api/v1/courses', { title: `Bench ${i}`, level: 'beginner', premium: true, price_cents: 1000, currency: 'EUR', published: true }, { token: admin });
        if (r.status !== 201) throw new Error(r.text);
        courses.push(r.body.id);
    }
    const users = [];
    for (let i = 0; i < USERS; i += 10) users.push(...(await Promise.all(Array.from({ length: Math.min(10, USERS - i) }, () => srv.session()))));
    // the catalog projection must know every course before the clock starts
    for (const c of courses) {
        for (;;) {
            const r = await srv.request('POST', `/api/v1/courses/${c}/purchase`, { headers: { 'Idempotency-Key': `warm-${c}` }, token: admin });
            if (r.status === 202) break;
            if (r.status !== 404) throw new Error(`warm-up purchase: ${r.status} ${r.text}`);
            await sleep(20);
        }
    }
    const inFlight = async () => {
        const t = (await srv.get('/metrics')).text;
        let n = 0;
        for (const m of t.matchAll(/^pulse_commerce_sagas_in_flight\{[^}]*\} (\d+)$/gm)) n += Number(m[1]);
        return n;
    };
    while ((await inFlight()) > 0) await sleep(20);
    const jobs = [];
    for (const u of users) for (const c of courses) jobs.push([u.token, c]);
    let next = 0, accepted = 0, rejected = 0;
    const cpu = () => {
        const f = fs.readFileSync(`/proc/${srv.pid}/stat`, 'utf8').split(') ')[1].split(' ');
        return Number(f[11]) + Number(f[12]); // utime + stime, clock ticks
    };
    const cpu0 = cpu();
    const load0 = os.loadavg()[0];
    const t0 = performance.now();
    await Promise.all(Array.from({ length: CONC }, async () => {
        while (next < jobs.length) {
            const [token, c] = jobs[next++];
            const r = await srv.request('POST', `/api/v1/courses/${c}/purchase`, { headers: { 'Idempotency-Key': `b-${next}` }, token });
            if (r.status === 202) accepted++;
            else rejected++;
        }
    }));
    const tSubmit = performance.now();
    while ((await inFlight()) > 0) await sleep(50);
    const t1 = performance.now();
    const cpuMs = ((cpu() - cpu0) * 1000) / 100; // USER_HZ is 100 on Linux
    // completion latencies, stamped by the server
    const lat = [];
    let states = {};
    let cursor = '';
    for (;;) {
        const r = await srv.get(`/api/v1/admin/sagas?limit=200${cursor ? `&cursor=${cursor}` : ''}`, { token: admin });
        for (const s of r.body.items) {
            states[s.state] = (states[s.state] || 0) + 1;
            if (s.state === 'completed') lat.push(Date.parse(s.updated_at) - Date.parse(s.created_at));
        }
        if (!r.body.next_cursor) break;
        cursor = r.body.next_cursor;
    }
    lat.sort((a, b) => a - b);
    // phase 2: the latency of one purchase when the system is not saturated: PACED purchases at 20/s on fresh courses
    const PACED = Number(process.env.SAGA_PACED || 100);
    const paced = [];
    for (let i = 0; i < 5; i++) {
        const r = await srv.post('/api/v1/courses', { title: `Paced ${i}`, level: 'beginner', premium: true, price_cents: 1000, currency: 'EUR', published: true }, { token: admin });
        paced.push(r.body.id);
    }
    for (const c of paced) {
        for (;;) {
            const r = await srv.request('POST', `/api/v1/courses/${c}/purchase`, { headers: { 'Idempotency-Key': `warm-${c}` }, token: admin });
            if (r.status === 202) break;
            await sleep(20);
        }
    }
    while ((await inFlight()) > 0) await sleep(50);
    const pacedIds = new Set();
    for (let i = 0; i < PACED; i++) {
        const t = performance.now();
        const u = users[i % users.length], c = paced[Math.floor(i / users.length) % paced.length];
        const r = await srv.request('POST', `/api/v1/courses/${c}/purchase`, { headers: { 'Idempotency-Key': `p-${i}` }, token: u.token });
        if (r.status === 202) pacedIds.add(r.body.id);
        await sleep(Math.max(0, 50 - (performance.now() - t)));
    }
    while ((await inFlight()) > 0) await sleep(50);
    const plat = [];
    cursor = '';
    for (;;) {
        const r = await srv.get(`/api/v1/admin/sagas?state=completed&limit=200${cursor ? `&cursor=${cursor}` : ''}`, { token: admin });
        for (const x of r.body.items) if (pacedIds.has(x.order_id)) plat.push(Date.parse(x.updated_at) - Date.parse(x.created_at));
        if (!r.body.next_cursor) break;
        cursor = r.body.next_cursor;
    }
    plat.sort((a, b) => a - b);
    const ppct = (p) => plat[Math.min(plat.length - 1, Math.floor((p / 100) * plat.length))];
    const pct = (p) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))];
    const wall = (t1 - t0) / 1000;
    console.log(JSON.stringify({
        profile: process.env.PULSE_TEST_PROFILE || 'embedded',
        purchases: jobs.length, accepted, rejected, concurrency: CONC,
        purchases_per_s: Math.round(accepted / wall), submit_per_s: Math.round(accepted / ((tSubmit - t0) / 1000)),
        wall_s: Number(wall.toFixed(2)), p50_ms: pct(50), p99_ms: pct(99), max_ms: lat[lat.length - 1],
        completed: lat.length - courses.length, states, loadavg: Number(load0.toFixed(2)),
        server_cpu_ms_per_purchase: Number((cpuMs / accepted).toFixed(3)),
        paced: { n: plat.length, per_s: 20, p50_ms: ppct(50), p99_ms: ppct(99), max_ms: plat[plat.length - 1] },
    }));
} finally {
    await srv.stop();
}
