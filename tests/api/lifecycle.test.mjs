// lifecycle.test.mjs - the process around the API: data survives a restart,
// SIGTERM finishes requests in flight and then refuses connections, --demo
// seeds and prints its users, and bad configuration stops `pulse serve`
// with a message that names the key.

import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test } from 'node:test';

import {
    PASSWORD,
    PROFILE,
    assertCleanExit,
    assertError,
    makeTempDir,
    removeTempDir,
    runPulse,
    startServer,
    tryConnect,
} from './harness.mjs';

const DEMO_PASSWORD = 'campus-demo-1';

// Servers and dirs of the test running now, cleaned whatever happens.
const servers = [];
const dirs = [];
after(async () => {
    for (const s of servers) await s.cleanup();
    for (const d of dirs) await removeTempDir(d);
});

async function track(p) {
    const s = await p;
    servers.push(s);
    return s;
}

async function tempDir() {
    const d = await makeTempDir();
    dirs.push(d);
    return d;
}

describe('restart', () => {
    test('users, profiles and sessions survive a restart on the same data directory', async () => {
        const dir = await tempDir();
        const s1 = await track(startServer({ dataDir: dir }));
        const { input, user, token } = await s1.session();
        const patched = await s1.patch('/api/v1/me', { bio: 'persisted bio' }, { token });
        assert.equal(patched.status, 200, patched.text);
        const revoked = await s1.login(input.username);
        assert.equal((await s1.request('POST', '/api/v1/auth/logout', { token: revoked.token })).status, 204);
        await s1.stopClean();

        const s2 = await track(startServer({ dataDir: dir }));
        assert.equal(s2.logLines().filter((l) => l.msg === 'migrated').length, 0, 'nothing to migrate the second time');
        const again = await s2.login(input.username);
        assert.equal(again.user.id, user.id);
        await s2.login(input.email);
        const me = await s2.get('/api/v1/me', { token });
        assert.equal(me.status, 200, 'a token issued before the restart is still valid');
        assert.equal(me.body.bio, 'persisted bio');
        assertError(await s2.get('/api/v1/me', { token: revoked.token }), 401, 'unauthorized');
        const pub = await s2.get(`/api/v1/users/${user.id}`);
        assert.equal(pub.status, 200);
        assert.equal(pub.body.bio, 'persisted bio');
        assertError(await s2.post('/api/v1/auth/register', input), 409, 'conflict');
        const ready = await s2.get('/readyz');
        assert.equal(ready.status, 200, ready.text);
        await s2.stopClean();

        if (PROFILE === 'embedded') {
            const files = await fs.readdir(dir);
            assert.ok(files.some((f) => f.startsWith('identity')), `identity's store lives in the data dir: ${files}`);
        }
    });
});

describe('graceful shutdown', () => {
    test('SIGTERM during logins finishes every one, refuses new connections, exits 0', async () => {
        // argon2id made expensive so that each login takes a few hundred ms;
        // two HTTP threads for six logins, so some wait queued on a busy thread.
        const srv = await track(
            startServer({
                env: {
                    PULSE_SERVICE_IDENTITY_ARGON2_M_COST: '32MiB',
                    PULSE_SERVICE_IDENTITY_ARGON2_T_COST: '2',
                    PULSE_SERVER_THREADS: '2',
                },
            }),
        );
        const { input } = await srv.register();
        const t0 = Date.now();
        await srv.login(input.username);
        const oneLoginMs = Date.now() - t0;

        const N = 6;
        const logins = Array.from({ length: N }, () => srv.post('/api/v1/auth/login', { login: input.username, password: PASSWORD }));
        // Let the requests reach the server (a fraction of one login's time), then stop it.
        await sleep(Math.min(150, oneLoginMs / 3));
        srv.signal('SIGTERM');

        // The listener closes at once even though requests are still running.
        let refused = null;
        for (let i = 0; i < 40 && refused === null; i++) {
            await sleep(25);
            refused = await tryConnect(srv.port);
        }
        const results = await Promise.allSettled(logins);
        const exit = await srv.stop(); // already signalled: waits for the exit

        assert.equal(refused, 'ECONNREFUSED', 'a new connection after SIGTERM is refused');
        for (const [i, r] of results.entries()) {
            assert.equal(r.status, 'fulfilled', `login ${i} failed: ${r.reason?.cause?.code || r.reason}`);
            assert.equal(r.value.status, 200, `login ${i}: ${r.value.text}`);
            assert.equal(typeof r.value.body.token, 'string');
        }
        assertCleanExit(exit, srv.stderr);
        // The logins really were in flight: their access lines follow "stopping".
        const lines = srv.logLines();
        const stopping = lines.findIndex((l) => l.msg === 'stopping');
        assert.ok(stopping >= 0, 'logged "stopping"');
        const finishedAfter = lines.slice(stopping).filter((l) => l.msg === 'access' && l.route === '/api/v1/auth/login');
        assert.ok(finishedAfter.length >= 1, `some logins completed after SIGTERM (one login took ${oneLoginMs} ms)`);
        assert.ok(finishedAfter.every((l) => l.status === 200 && l.completed === 1));
    });

    test('requests queued behind a busy thread at SIGTERM are answered too', async () => {
        // One HTTP thread: of 24 logins one runs and the rest wait their turn,
        // so the count of running requests touches zero between them. Many
        // logins and rounds because each such gap is short.
        for (let round = 0; round < 4; round++) {
            const srv = await track(
                startServer({
                    env: {
                        PULSE_SERVER_THREADS: '1',
                        PULSE_SERVICE_IDENTITY_ARGON2_M_COST: '2MiB',
                        PULSE_SERVICE_IDENTITY_ARGON2_T_COST: '1',
                    },
                }),
            );
            const { input } = await srv.register();
            const logins = Array.from({ length: 24 }, () =>
                srv.post('/api/v1/auth/login', { login: input.username, password: PASSWORD }).then(
                    (r) => r.status,
                    (e) => e.cause?.code || String(e),
                ),
            );
            await sleep(20);
            srv.signal('SIGTERM');
            const statuses = await Promise.all(logins);
            const exit = await srv.stop();
            assert.deepEqual(statuses, Array(24).fill(200), `round ${round}`);
            assertCleanExit(exit, srv.stderr);
        }
    });

    test('SIGINT stops the server as cleanly as SIGTERM', async () => {
        const srv = await track(startServer());
        await srv.assertHealthy();
        srv.signal('SIGINT');
        const exit = await srv.stop();
        assertCleanExit(exit, srv.stderr);
        assert.equal(await tryConnect(srv.port), 'ECONNREFUSED');
    });

    test('idle keep-alive connections do not hold up the exit', async () => {
        const srv = await track(startServer());
        // fetch keeps these connections open in its pool after answering.
        await Promise.all(Array.from({ length: 4 }, () => srv.assertHealthy()));
        const t0 = Date.now();
        const exit = await srv.stop();
        assertCleanExit(exit, srv.stderr);
        assert.ok(Date.now() - t0 < 5000, `stopped in ${Date.now() - t0} ms`);
    });
});

describe('--demo', () => {
    test('seeds the demo users once, prints how to log in, and they can', async () => {
        const dir = await tempDir();
        const srv = await track(startServer({ dataDir: dir, args: ['--demo'] }));
        const out = srv.stdout;
        for (const name of ['admin', 'ada', 'sam', 'lin']) assert.match(out, new RegExp(`\\b${name}\\b`), `stdout names ${name}:\n${out}`);
        assert.ok(out.includes(DEMO_PASSWORD), 'stdout gives the password');
        assert.match(out, /login/i, 'stdout says how to log in');
        const roles = { admin: 'admin', ada: 'teacher', sam: 'student', lin: 'student' };
        for (const [name, role] of Object.entries(roles)) {
            const res = await srv.post('/api/v1/auth/login', { login: name, password: DEMO_PASSWORD });
            assert.equal(res.status, 200, `${name}: ${res.text}`);
            assert.equal(res.body.user.role, role, `${name} is a ${role}`);
        }
        const byEmail = await srv.post('/api/v1/auth/login', { login: 'ada@campus.example', password: DEMO_PASSWORD });
        assert.equal(byEmail.status, 200, byEmail.text);
        await srv.stopClean();

        // A second start on the same data does not seed again (nor fail).
        const again = await track(startServer({ dataDir: dir, args: ['--demo'] }));
        assert.ok(!again.stdout.includes('ada@campus.example'), `no second seeding:\n${again.stdout}`);
        assert.equal((await again.post('/api/v1/auth/login', { login: 'sam', password: DEMO_PASSWORD })).status, 200);
        await again.stopClean();
    });

    test('without --demo there are no demo users', async () => {
        const srv = await track(startServer());
        assertError(await srv.post('/api/v1/auth/login', { login: 'admin', password: DEMO_PASSWORD }), 401);
        assert.equal(srv.stdout, '');
        await srv.stopClean();
    });
});

describe('bad configuration', () => {
    const serve = async (args, env) => {
        const dir = await tempDir();
        return runPulse(['serve', '--listen', '127.0.0.1:0', '--data', dir, ...args], { env, timeoutMs: 15000 });
    };
    const writeConfig = async (text) => {
        const dir = await tempDir();
        const file = path.join(dir, 'pulse.ini');
        await fs.writeFile(file, text);
        return file;
    };
    const assertRefused = (r, ...mustName) => {
        assert.notEqual(r.code, 0, `pulse serve must not run:\n${r.stderr}`);
        assert.equal(r.signal, null, `no crash:\n${r.stderr}`);
        assert.ok(!/"msg":"listening"/.test(r.stderr), 'it never listened');
        for (const n of mustName) assert.ok(r.stderr.includes(n), `the message names ${n}:\n${r.stderr}`);
        assert.doesNotMatch(r.stderr, /Sanitizer|runtime error:/);
    };

    test('an unknown key in a --config file is an error naming the key', async () => {
        const file = await writeConfig('[server]\nthreads = 2\nbogus_key = 1\n');
        assertRefused(await serve(['--config', file]), 'server.bogus_key');
    });

    test('an unknown section in a --config file is an error naming it', async () => {
        const file = await writeConfig('[nosuch]\nkey = 1\n');
        assertRefused(await serve(['--config', file]), 'nosuch.key');
    });

    test('a bad value in a --config file is an error naming the key', async () => {
        const file = await writeConfig('[service.identity]\nlogin_window = forever\n');
        assertRefused(await serve(['--config', file]), 'service.identity.login_window');
        const range = await writeConfig('[server]\nbody_limit = 10GiB\n');
        assertRefused(await serve(['--config', range]), 'server.body_limit');
    });

    test('a bad value in the environment is an error naming the variable', async () => {
        assertRefused(await serve([], { PULSE_SERVER_THREADS: 'many' }), 'PULSE_SERVER_THREADS', 'server.threads');
        assertRefused(await serve([], { PULSE_SERVICE_IDENTITY_ARGON2_M_COST: '1KiB' }), 'service.identity.argon2_m_cost');
    });

    test('a missing --config file is an error naming it', async () => {
        const r = await serve(['--config', '/nonexistent/pulse.ini']);
        assertRefused(r, '/nonexistent/pulse.ini');
    });

    test('a good --config file is applied', async () => {
        const file = await writeConfig('[service.identity]\nlogin_max_failures = 1\n');
        const srv = await track(startServer({ args: ['--config', file] }));
        const { input } = await srv.register();
        assertError(await srv.post('/api/v1/auth/login', { login: input.username, password: 'Wrong-Guess-1' }), 401);
        assertError(await srv.post('/api/v1/auth/login', { login: input.username, password: PASSWORD }), 429, 'rate_limited');
        await srv.stopClean();
    });
});
