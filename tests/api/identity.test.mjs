// identity.test.mjs - the identity API end to end: register, login, logout,
// /me, public profiles, roles, validation, conflicts and tokens.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { PASSWORD, assertError, newUserInput, startServer, uniq } from './harness.mjs';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;
const DEMO_PASSWORD = 'campus-demo-1';

describe('identity', () => {
    let srv;
    before(async () => {
        srv = await startServer({ args: ['--demo'] });
    });
    after(async () => {
        await srv?.cleanup();
    });

    const register = (body, opts) => srv.post('/api/v1/auth/register', body, opts);
    const login = (body) => srv.post('/api/v1/auth/login', body);

    // ---- happy paths -------------------------------------------------------------------

    test('register returns 201 with the private user object and a Location', async () => {
        const input = newUserInput();
        const before = Date.now();
        const res = await register(input);
        assert.equal(res.status, 201, res.text);
        const u = res.body;
        assert.match(u.id, UUID);
        assert.equal(u.email, input.email);
        assert.equal(u.username, input.username);
        assert.equal(u.display_name, input.display_name);
        assert.equal(u.bio, '');
        assert.equal(u.role, 'student', 'new users are students');
        assert.match(u.created_at, RFC3339);
        assert.match(u.updated_at, RFC3339);
        assert.ok(Math.abs(Date.parse(u.created_at) - before) < 60000, 'created_at is now');
        for (const secret of ['password', 'password_hash', 'hash'])
            assert.equal(u[secret], undefined, `the user object must not carry ${secret}`);
        assert.equal(res.headers.get('location'), `/api/v1/users/${u.id}`);
    });

    test('register keeps email case-insensitive: stored lower-case, duplicate in other case conflicts', async () => {
        const name = uniq('mc');
        const res = await register(newUserInput({ username: name, email: `Mixed.${name}@Example.ORG` }));
        assert.equal(res.status, 201, res.text);
        assert.equal(res.body.email, `mixed.${name}@example.org`);
        const dup = await register(newUserInput({ email: `MIXED.${name.toUpperCase()}@example.org` }));
        const err = assertError(dup, 409, 'conflict');
        assert.ok(err.fields.email, 'the conflicting field is named');
    });

    test('login with username or email returns a token, its expiry and the user', async () => {
        const { input, user } = await srv.register();
        for (const id of [input.username, input.email, input.email.toUpperCase()]) {
            const res = await login({ login: id, password: input.password });
            assert.equal(res.status, 200, res.text);
            const { token, expires_at, user: u } = res.body;
            assert.equal(typeof token, 'string');
            // >= 256 bits of entropy needs >= 43 base64 characters.
            assert.ok(token.length >= 43, `token too short to be unguessable: ${token}`);
            assert.match(expires_at, RFC3339);
            const exp = Date.parse(expires_at);
            assert.ok(exp > Date.now() + 3600_000, 'token lives for hours');
            assert.ok(exp < Date.now() + 25 * 3600_000, 'token expiry is the configured 24h');
            assert.equal(u.id, user.id);
            assert.equal(u.email, input.email);
            assert.equal(u.password_hash, undefined);
        }
    });

    test('each login issues a distinct token', async () => {
        const { input } = await srv.register();
        const a = await srv.login(input.username);
        const b = await srv.login(input.username);
        assert.notEqual(a.token, b.token);
    });

    test('GET /me returns the caller with email', async () => {
        const { token, user, input } = await srv.session();
        const res = await srv.get('/api/v1/me', { token });
        assert.equal(res.status, 200, res.text);
        assert.equal(res.body.id, user.id);
        assert.equal(res.body.email, input.email);
        assert.equal(res.body.role, 'student');
    });

    test('PATCH /me changes display name and bio, and the change is visible everywhere', async () => {
        const { token, user } = await srv.session();
        const res = await srv.patch('/api/v1/me', { display_name: 'Grace Hopper', bio: 'Compilers & COBOL ✓' }, { token });
        assert.equal(res.status, 200, res.text);
        assert.equal(res.body.display_name, 'Grace Hopper');
        assert.equal(res.body.bio, 'Compilers & COBOL ✓');
        assert.ok(Date.parse(res.body.updated_at) >= Date.parse(user.updated_at));

        const me = await srv.get('/api/v1/me', { token });
        assert.equal(me.body.display_name, 'Grace Hopper');
        assert.equal(me.body.bio, 'Compilers & COBOL ✓');
        const pub = await srv.get(`/api/v1/users/${user.id}`);
        assert.equal(pub.body.display_name, 'Grace Hopper');

        // Only the fields sent change.
        const bioOnly = await srv.patch('/api/v1/me', { bio: '' }, { token });
        assert.equal(bioOnly.status, 200, bioOnly.text);
        assert.equal(bioOnly.body.bio, '');
        assert.equal(bioOnly.body.display_name, 'Grace Hopper');
    });

    test('PATCH /me validates its fields', async () => {
        const { token } = await srv.session();
        const cases = [
            [{ display_name: '' }, 'display_name'],
            [{ display_name: 'x'.repeat(81) }, 'display_name'],
            [{ display_name: '   ' }, 'display_name'],
            [{ display_name: 42 }, 'display_name'],
            [{ bio: 'b'.repeat(501) }, 'bio'],
            [{ bio: ['list'] }, 'bio'],
            [{ email: 'new@example.org' }, 'email'],
            [{ role: 'admin' }, 'role'],
        ];
        for (const [body, field] of cases) {
            const res = await srv.patch('/api/v1/me', body, { token });
            const err = assertError(res, 400, 'validation_failed');
            assert.equal(typeof err.fields[field], 'string', `${JSON.stringify(body)} -> fields.${field}: ${res.text}`);
        }
        const me = await srv.get('/api/v1/me', { token });
        assert.equal(me.body.role, 'student', 'role did not change through /me');
        assert.equal(me.body.bio, '');
        // 500 characters (not bytes) is the limit.
        const ok = await srv.patch('/api/v1/me', { bio: 'é'.repeat(500) }, { token });
        assert.equal(ok.status, 200, ok.text);
    });

    test('GET /users/{id} is public and has no email', async () => {
        const { user } = await srv.register();
        const res = await srv.get(`/api/v1/users/${user.id}`);
        assert.equal(res.status, 200, res.text);
        assert.equal(res.body.id, user.id);
        assert.equal(res.body.username, user.username);
        assert.equal(res.body.display_name, user.display_name);
        assert.equal(res.body.role, 'student');
        assert.equal(res.body.email, undefined, 'a public profile must not show the email');
        assert.equal(res.body.password_hash, undefined);
        assert.ok(!res.text.includes(user.email), 'the email appears nowhere in the public profile');
    });

    test('GET /users/{id} of nobody is 404', async () => {
        assertError(await srv.get('/api/v1/users/01890a5d-ac96-774b-bcce-b302099a8057'), 404, 'not_found');
        assertError(await srv.get('/api/v1/users/not-a-uuid'), 404, 'not_found');
        assertError(await srv.get(`/api/v1/users/${'9'.repeat(300)}`), 404, 'not_found');
    });

    // ---- tokens and logout ------------------------------------------------------------------

    test('logout revokes the token at once, and only that token', async () => {
        const { input, token } = await srv.session();
        const other = (await srv.login(input.username)).token;
        const out = await srv.request('POST', '/api/v1/auth/logout', { token });
        assert.equal(out.status, 204, out.text);
        assert.equal(out.text, '');
        assertError(await srv.get('/api/v1/me', { token }), 401, 'unauthorized');
        assertError(await srv.request('POST', '/api/v1/auth/logout', { token }), 401, 'unauthorized');
        assertError(await srv.patch('/api/v1/me', { bio: 'x' }, { token }), 401, 'unauthorized');
        const still = await srv.get('/api/v1/me', { token: other });
        assert.equal(still.status, 200, 'another session of the same user survives');
    });

    test('missing, malformed and unknown tokens are 401', async () => {
        const res = await srv.get('/api/v1/me');
        assertError(res, 401, 'unauthorized');
        assert.match(res.headers.get('www-authenticate') || '', /^Bearer/);
        const { token } = await srv.session();
        const forged = token.slice(0, -4) + (token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
        const bad = [
            'Bearer ',
            'Bearer nonsense',
            `Bearer plt_${randomBytes(32).toString('base64url')}`,
            `Bearer ${forged}`,
            `Bearer ${token}x`,
            `Basic ${Buffer.from('ada:campus-demo-1').toString('base64')}`,
            token, // no scheme
            `Bearer ${'a'.repeat(4000)}`,
        ];
        for (const authorization of bad) {
            const r = await srv.get('/api/v1/me', { headers: { authorization } });
            assertError(r, 401, 'unauthorized');
        }
        assertError(await srv.request('POST', '/api/v1/auth/logout'), 401, 'unauthorized');
        assertError(await srv.patch('/api/v1/me', { bio: 'x' }), 401, 'unauthorized');
    });

    // ---- credentials -------------------------------------------------------------------------

    test('wrong credentials are 401 with one generic message', async () => {
        const { input } = await srv.register();
        const wrongPw = await login({ login: input.username, password: 'Not-The-Password-1' });
        const unknownUser = await login({ login: uniq('ghost'), password: PASSWORD });
        const unknownEmail = await login({ login: `${uniq('ghost')}@example.org`, password: PASSWORD });
        const errs = [wrongPw, unknownUser, unknownEmail].map((r) => assertError(r, 401, 'unauthorized'));
        assert.equal(errs[0].message, errs[1].message, 'unknown user and wrong password read the same');
        assert.equal(errs[0].message, errs[2].message);
        assert.deepEqual(errs[0].fields, {}, 'no field tells which part was wrong');
        assert.deepEqual(errs[1].fields, {});
        // The right password still works afterwards (3 failures < the limit of 5).
        await srv.login(input.username, input.password);
    });

    test('login validates its body', async () => {
        let err = assertError(await login({}), 400, 'validation_failed');
        assert.ok(err.fields.login && err.fields.password, JSON.stringify(err.fields));
        err = assertError(await login({ login: 5, password: true }), 400, 'validation_failed');
        assert.ok(err.fields.login && err.fields.password);
        err = assertError(await login({ login: 'sam', password: 'x', remember: true }), 400, 'validation_failed');
        assert.ok(err.fields.remember, 'unknown field named');
        err = assertError(await login({ login: '', password: '' }), 400, 'validation_failed');
        assert.ok(err.fields.login && err.fields.password);
    });

    // ---- registration validation ------------------------------------------------------------

    const badField = async (overrides, field) => {
        const body = newUserInput(overrides);
        for (const [k, v] of Object.entries(body)) if (v === undefined) delete body[k];
        const res = await register(body);
        const err = assertError(res, 400, 'validation_failed');
        assert.equal(typeof err.fields[field], 'string', `${JSON.stringify(overrides)} -> fields.${field}: ${res.text}`);
        return err;
    };

    test('register rejects bad email shapes', async () => {
        for (const email of ['not-an-email', 'a@b', '@example.org', 'a@@example.org', 'a@b@example.org', 'a b@example.org',
            'a@example..org', 'a@.example.org', 'a@example.', 'ä@example.org', `${'a'.repeat(250)}@example.org`, ''])
            await badField({ email }, 'email');
    });

    test('register enforces username rules (3-30 of a-z 0-9 _)', async () => {
        for (const username of ['ab', 'a'.repeat(31), 'Alice', 'al-ice', 'al ice', 'al.ice', 'ålice', 'bob!', ''])
            await badField({ username, email: `${uniq('e')}@example.org` }, 'username');
        // The edges are accepted.
        const three = `${randomBytes(1).toString('hex')}_`.slice(0, 3);
        const res3 = await register(newUserInput({ username: three }));
        assert.ok(res3.status === 201 || res3.status === 409, `3 chars accepted: ${res3.text}`);
        const thirty = uniq('t').padEnd(30, '9');
        assert.equal(thirty.length, 30);
        const res30 = await register(newUserInput({ username: thirty }));
        assert.equal(res30.status, 201, res30.text);
    });

    test('register enforces the password policy', async () => {
        const username = uniq('pw');
        for (const password of ['Short-1', 'abcdefghijkl', 'ABCDEFGHIJKLmn', '123456789012', '!!!!!!!!!!!!', 'a1b2c3d4e', ''])
            await badField({ username, email: `${username}@example.org`, password }, 'password');
        // A password equal to the username is refused even when long and mixed.
        const long = `${uniq('same')}_1`;
        await badField({ username: long, email: `${long}@example.org`, password: long }, 'password');
        // 10 characters mixing letters and a digit is enough.
        const res = await register(newUserInput({ password: 'abcdefghi1' }));
        assert.equal(res.status, 201, res.text);
    });

    test('register checks display name length and content', async () => {
        for (const display_name of ['', ' ', 'x'.repeat(81), 'é'.repeat(81), 'tab\there', 'nl\nhere', 'nul\u0001'])
            await badField({ display_name }, 'display_name');
        // 80 characters, counted as characters rather than bytes.
        const res = await register(newUserInput({ display_name: 'é'.repeat(80) }));
        assert.equal(res.status, 201, res.text);
        assert.equal(res.body.display_name, 'é'.repeat(80));
    });

    test('register rejects wrong types', async () => {
        const res = await register({ email: 42, username: true, password: ['Correct-Horse-42'], display_name: { a: 1 } });
        const err = assertError(res, 400, 'validation_failed');
        assert.deepEqual(Object.keys(err.fields).sort(), ['display_name', 'email', 'password', 'username']);
        for (const f of Object.values(err.fields)) assert.equal(typeof f, 'string');
        // A NUL inside a string is refused (as malformed or invalid), never truncated.
        const nul = await register(newUserInput({ display_name: 'nul\u0000byte' }));
        assertError(nul, 400);
    });

    test('register names every missing field', async () => {
        const err = assertError(await register({}), 400, 'validation_failed');
        assert.deepEqual(Object.keys(err.fields).sort(), ['display_name', 'email', 'password', 'username']);
        const nulls = assertError(
            await register({ email: null, username: null, password: null, display_name: null }),
            400,
            'validation_failed',
        );
        assert.deepEqual(Object.keys(nulls.fields).sort(), ['display_name', 'email', 'password', 'username']);
        await badField({ display_name: undefined }, 'display_name');
    });

    test('register rejects unknown fields (a client cannot choose its role)', async () => {
        const name = uniq('unk');
        const err = await badField({ username: name, email: `${name}@example.org`, role: 'admin' }, 'role');
        assert.equal(Object.keys(err.fields).length, 1, JSON.stringify(err.fields));
        await badField({ id: '01890a5d-ac96-774b-bcce-b302099a8057' }, 'id');
        // Nothing was created.
        assertError(await login({ login: name, password: PASSWORD }), 401);
    });

    test('duplicate email or username is 409 naming the field', async () => {
        const { input } = await srv.register();
        let err = assertError(await register(newUserInput({ email: input.email })), 409, 'conflict');
        assert.ok(err.fields.email, JSON.stringify(err.fields));
        assert.equal(err.fields.username, undefined);
        const other = uniq('dup');
        err = assertError(await register(newUserInput({ username: input.username, email: `${other}@example.org` })), 409);
        assert.ok(err.fields.username, JSON.stringify(err.fields));
        assert.equal(err.fields.email, undefined);
        err = assertError(await register(newUserInput({ username: input.username, email: input.email })), 409);
        assert.ok(err.fields.username && err.fields.email, JSON.stringify(err.fields));
        // The original account is intact.
        await srv.login(input.username);
    });

    test('concurrent registrations of one username: exactly one wins, the rest are 409', async () => {
        const username = uniq('race');
        const results = await Promise.all(
            Array.from({ length: 6 }, (_, i) => register(newUserInput({ username, email: `${username}.${i}@example.org` }))),
        );
        const statuses = results.map((r) => r.status).sort();
        assert.deepEqual(statuses, [201, 409, 409, 409, 409, 409], results.map((r) => r.text).join('\n'));
        for (const r of results.filter((x) => x.status === 409)) assertError(r, 409, 'conflict');
    });

    // ---- roles -----------------------------------------------------------------------------

    test('an admin changes a role, and the new role shows at once', async () => {
        const admin = await srv.login('admin', DEMO_PASSWORD);
        assert.equal(admin.user.role, 'admin');
        const { user, token } = await srv.session();
        const res = await srv.patch(`/api/v1/users/${user.id}/role`, { role: 'teacher' }, { token: admin.token });
        assert.equal(res.status, 200, res.text);
        assert.equal(res.body.id, user.id);
        assert.equal(res.body.role, 'teacher');
        assert.equal((await srv.get(`/api/v1/users/${user.id}`)).body.role, 'teacher');
        assert.equal((await srv.get('/api/v1/me', { token })).body.role, 'teacher', 'the open session sees the new role');
        // Setting the same role again is fine.
        const again = await srv.patch(`/api/v1/users/${user.id}/role`, { role: 'teacher' }, { token: admin.token });
        assert.equal(again.status, 200, again.text);
    });

    test('a promoted admin can change roles; a demoted one cannot, at once', async () => {
        const admin = await srv.login('admin', DEMO_PASSWORD);
        const boss = await srv.session();
        const target = await srv.register();
        assert.equal((await srv.patch(`/api/v1/users/${boss.user.id}/role`, { role: 'admin' }, { token: admin.token })).status, 200);
        const r1 = await srv.patch(`/api/v1/users/${target.user.id}/role`, { role: 'teacher' }, { token: boss.token });
        assert.equal(r1.status, 200, r1.text);
        assert.equal((await srv.patch(`/api/v1/users/${boss.user.id}/role`, { role: 'student' }, { token: admin.token })).status, 200);
        assertError(
            await srv.patch(`/api/v1/users/${target.user.id}/role`, { role: 'student' }, { token: boss.token }),
            403,
            'forbidden',
        );
    });

    test('students and teachers may not change roles (403), not even their own', async () => {
        const student = await srv.session();
        const teacher = await srv.login('ada', DEMO_PASSWORD);
        assert.equal(teacher.user.role, 'teacher');
        const victim = await srv.register();
        for (const token of [student.token, teacher.token]) {
            assertError(await srv.patch(`/api/v1/users/${victim.user.id}/role`, { role: 'admin' }, { token }), 403, 'forbidden');
        }
        assertError(
            await srv.patch(`/api/v1/users/${student.user.id}/role`, { role: 'admin' }, { token: student.token }),
            403,
            'forbidden',
        );
        assert.equal((await srv.get(`/api/v1/users/${victim.user.id}`)).body.role, 'student');
        assert.equal((await srv.get('/api/v1/me', { token: student.token })).body.role, 'student');
    });

    test('role change errors: own role 422, bad role 400, unknown user 404, no token 401', async () => {
        const admin = await srv.login('admin', DEMO_PASSWORD);
        const token = admin.token;
        assertError(await srv.patch(`/api/v1/users/${admin.user.id}/role`, { role: 'student' }, { token }), 422, 'unprocessable');
        const { user } = await srv.register();
        for (const body of [{ role: 'superuser' }, { role: '' }, { role: 1 }, {}, { role: 'teacher', extra: 1 }]) {
            const err = assertError(await srv.patch(`/api/v1/users/${user.id}/role`, body, { token }), 400, 'validation_failed');
            assert.ok(Object.keys(err.fields).length > 0, `${JSON.stringify(body)}: fields named`);
        }
        assertError(
            await srv.patch('/api/v1/users/01890a5d-ac96-774b-bcce-b302099a8057/role', { role: 'teacher' }, { token }),
            404,
            'not_found',
        );
        assertError(await srv.patch(`/api/v1/users/${user.id}/role`, { role: 'teacher' }), 401, 'unauthorized');
        assert.equal((await srv.get(`/api/v1/users/${user.id}`)).body.role, 'student');
    });

    test('the server shuts down cleanly after all of the above', async () => {
        await srv.assertHealthy();
        await srv.stopClean();
    });
});
