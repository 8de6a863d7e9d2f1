// realtime-memory.mjs - not a test: measures the gateway's memory per idle
// WebSocket session (RSS delta of the pulse process over N sessions).
//
//   cd tests/api && PULSE_TEST_BIN=$PWD/../../build/pulse N=5000 node realtime-memory.mjs
//   ENV='{"PULSE_SERVER_HEADER_LIMIT":"2KiB"}' ... to try another configuration
import fs from 'node:fs';
import WebSocket from 'ws';

import { startServer } from './harness.mjs';

const N = Number(process.env.N || 5000);
const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const srv = await startServer({ args: ['--services', 'identity,realtime'], env: JSON.parse(process.env.ENV || '{}') });
const all = [];
try {
    const a = await srv.session();
    const url = `ws://127.0.0.1:${srv.port}/api/v1/stream`;
    const open = () => {
        const w = new WebSocket(url, { headers: { Authorization: `Bearer ${a.token}` } });
        all.push(w);
        return new Promise((resolve, reject) => {
            w.once('message', resolve); // the ready message
            w.once('error', reject);
        });
    };
    await open(); // warm-up: first-use allocations are not per session
    await new Promise((r) => setTimeout(r, 500));
    const before = rss(srv.pid);
    for (let i = 1; i < N + 1; i += 200) await Promise.all(Array.from({ length: Math.min(200, N + 1 - i) }, open));
    await new Promise((r) => setTimeout(r, 1500));
    const after = rss(srv.pid);
    console.log(JSON.stringify({ sessions: N, rss_before_kib: before, rss_after_kib: after, per_session_kib: +((after - before) / N).toFixed(2) }));
} finally {
    for (const w of all) w.terminate();
    await srv.stop();
}
