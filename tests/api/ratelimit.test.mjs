// ratelimit.test.mjs - failed logins are limited per account and per client
// address (429 with Retry-After). The limits are made small through the
// environment; each describe has its own server so the counters are its own.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { PASSWORD, assertError, httpRequest, startServer, uniq } from './harness.mjs';

const WINDOW_S = 60;
const LIMITS = {
    PULSE_SERVICE_IDENTITY_LOGIN_MAX_FAILURES: '3',
    PULSE_SERVICE_IDENTITY_LOGIN_MAX_FAILURES_IP: '5',
    PULSE_SERVICE_IDENTITY_LOGIN_WINDOW: `${WINDOW_S}s`,
};

function assertRetryAfter(res) {
    const ra = typeof res.headers.get === 'function' ? res.headers.get('retry-after') : res.headers['retry-after'];
    assert.ok(ra, `429 carries Retry-After: ${JSON.stringify(res.headers)}`);
    assert.match(ra, /^\d+$/, 'Retry-After is delta-seconds');
    const s = Number(ra);
    assert.ok(s >= 1 && s <= WINDOW_S, `Retry-After ${s} is within the window of ${WINDOW_S}s`);
}

describe('failed logins per account', () => {
    let srv;
    before(async () => {
        srv = await startServer({ env: LIMITS });
    });
    after(async () => {
        await srv?.cleanup();
    });

    test('the account is limited after 3 failures; the right password is refused too; others are not', async () => {
        const victim = await srv.register();
        const bystander = await srv.register();
        for (let i = 0; i < 3; i++) {
            const r = await srv.post('/api/v1/auth/login', { login: victim.input.username, password: `Wrong-Guess-${i}` });
            assertError(r, 401, 'unauthorized');
        }
        const limited = await srv.post('/api/v1/auth/login', { login: victim.input.username, password: 'Wrong-Guess-9' });
        assertError(limited, 429, 'rate_limited');
        assertRetryAfter(limited);

        // While limited, even the right password does not get in (else guessing goes on).
        const right = await srv.post('/api/v1/auth/login', { login: victim.input.username, password: PASSWORD });
        assertError(right, 429, 'rate_limited');
        assertRetryAfter(right);
        // The account is the same by email and in any case.
        assertError(await srv.post('/api/v1/auth/login', { login: victim.input.email.toUpperCase(), password: PASSWORD }), 429);

        // Another account from the same address still logs in (4 failures < 5 per address).
        await srv.login(bystander.input.username);
    });

    test('a success before the limit resets the account counter', async () => {
        const u = await srv.register();
        const addr = '127.0.0.3'; // its own address, so the per-address counter stays out of the way
        const attempt = (password) =>
            httpRequest(srv.port, { method: 'POST', path: '/api/v1/auth/login', json: { login: u.input.username, password }, localAddress: addr });
        for (let i = 0; i < 2; i++) assertError(await attempt('Wrong-Guess-1'), 401);
        assert.equal((await attempt(PASSWORD)).status, 200);
        for (let i = 0; i < 2; i++) assertError(await attempt('Wrong-Guess-2'), 401);
        assert.equal((await attempt(PASSWORD)).status, 200, 'two more failures after a success are not yet the limit');
    });

    test('shuts down cleanly', async () => {
        await srv.stopClean();
    });
});

describe('failed logins per client address', () => {
    let srv;
    before(async () => {
        srv = await startServer({ env: LIMITS });
    });
    after(async () => {
        await srv?.cleanup();
    });

    const loginFrom = (localAddress, login, password) =>
        httpRequest(srv.port, { method: 'POST', path: '/api/v1/auth/login', json: { login, password }, localAddress });

    test('an address is limited after 5 failures over many accounts; other addresses are not', async () => {
        const real = await srv.register();
        // Five different unknown accounts: no account reaches its own limit of 3.
        for (let i = 0; i < 5; i++) {
            const r = await loginFrom('127.0.0.1', uniq('nobody'), PASSWORD);
            assertError(r, 401, 'unauthorized');
        }
        const limited = await loginFrom('127.0.0.1', uniq('nobody'), PASSWORD);
        assertError(limited, 429, 'rate_limited');
        assertRetryAfter(limited);
        // The address is limited for every account, including real ones with the right password.
        const realBlocked = await loginFrom('127.0.0.1', real.input.username, PASSWORD);
        assertError(realBlocked, 429, 'rate_limited');
        assertRetryAfter(realBlocked);

        // Another loopback address is another client.
        const other = await loginFrom('127.0.0.2', real.input.username, PASSWORD);
        assert.equal(other.status, 200, other.text);
        assert.equal(typeof other.body.token, 'string');
    });

    test('the limit concerns logins only: the limited address can still register and read', async () => {
        const r = await httpRequest(srv.port, {
            method: 'POST',
            path: '/api/v1/auth/register',
            json: { email: `${uniq('x')}@example.org`, username: uniq('x'), password: PASSWORD, display_name: 'X' },
            localAddress: '127.0.0.1',
        });
        assert.equal(r.status, 201, r.text);
        const h = await httpRequest(srv.port, { path: '/healthz', localAddress: '127.0.0.1' });
        assert.equal(h.status, 200);
    });

    test('shuts down cleanly', async () => {
        await srv.stopClean();
    });
});
