// audit.test.mjs - the tamper-evident audit trail (both profiles).
//
//   billing      a premium purchase through the saga leaves payment_captured
//                and invoice_issued entries about the buyer; a declined one
//                order_failed; a role change role_changed (admins read it)
//   verify       `pulse audit verify` says intact (exit 0), then catches each
//                kind of tampering done straight in the store, by someone who
//                first dropped the append-only triggers: an altered entry, a
//                removed entry, two entries swapped, the last entry removed
//                (exit 3, naming the entry); undone, the trail is intact again
//   probes       a student reads no audit trail (403); no token 401
//
// The store is reached the way an attacker with database access would: the
// sqlite3 shell on the service's file (embedded) or psql on its schema.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { PROFILE, assertError, profileEnv, startServer } from './harness.mjs';
import { BUS_ENV, auditAll, pulseCmd, waitFor } from './bus-harness.mjs';

const DEMO_PASSWORD = 'campus-demo-1';
const ENV = { ...BUS_ENV, PULSE_SERVICE_COMMERCE_EXECUTOR_POLL: '20ms' };

// Runs SQL against the audit store; returns stdout (rows as "a|b" lines).
function auditSql(dataDir, sql) {
    let r;
    if (PROFILE === 'distributed') {
        const env = profileEnv(dataDir);
        const schema = `${env.PULSE_SERVER_NAMESPACE}_audit`;
        r = spawnSync('psql', [env.PULSE_DEFAULTS_SQL, '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-c',
            `SET search_path TO "${schema}"; ${sql}`], { encoding: 'utf8' });
    } else {
        r = spawnSync('sqlite3', ['-bail', path.join(dataDir, 'audit.db'), sql], { encoding: 'utf8' });
    }
    assert.equal(r.status, 0, `sql failed: ${sql}\n${r.stderr}`);
    return r.stdout.trim();
}

async function verify(dataDir) {
    const r = await pulseCmd(dataDir, ['audit', 'verify']);
    return { code: r.code, out: r.stdout + r.stderr };
}

describe('audit', () => {
    let srv, admin;
    before(async () => {
        srv = await startServer({ env: ENV, args: ['--demo'] });
        admin = (await srv.login('admin', DEMO_PASSWORD)).token;
    });
    after(async () => {
        await srv?.cleanup();
    });

    test('billing and role actions are in the trail', async () => {
        const { user } = await srv.session();
        const buyer = (await srv.login(user.username)).token;
        const course = await srv.post(
            '/api/v1/courses',
            { title: 'Audited course', level: 'beginner', premium: true, price_cents: 1200, currency: 'EUR', capacity: 5, published: true },
            { token: admin },
        );
        assert.equal(course.status, 201, course.text);
        const declined = await srv.post(
            '/api/v1/courses',
            // the simulator declines amounts ending in 01 (src/services/commerce/README.md)
            { title: 'Declined course', level: 'beginner', premium: true, price_cents: 1201, currency: 'EUR', capacity: 5, published: true },
            { token: admin },
        );
        assert.equal(declined.status, 201, declined.text);
        const buy = (courseId, key) =>
            waitFor(async () => {
                const r = await srv.request('POST', `/api/v1/courses/${courseId}/purchase`, { token: buyer, headers: { 'Idempotency-Key': key } });
                return r.status === 202 ? r.body : null; // 404 until commerce's catalog knows the course
            }, { what: 'the purchase accepted' });
        const ok = await buy(course.body.id, 'audit-ok');
        const bad = await buy(declined.body.id, 'audit-declined');
        const role = await srv.request('PATCH', `/api/v1/users/${user.id}/role`, { token: admin, json: { role: 'teacher' } });
        assert.equal(role.status, 200, role.text);

        const entries = await waitFor(async () => {
            const all = await auditAll(srv, admin);
            const mine = all.filter((e) => e.subject_id === user.id);
            const actions = new Set(mine.map((e) => e.action));
            return ['payment_captured', 'invoice_issued', 'order_failed', 'role_changed'].every((a) => actions.has(a)) && mine;
        }, { what: 'billing and role entries', timeoutMs: 20000 });
        const byAction = Object.fromEntries(entries.map((e) => [e.action, e]));
        assert.equal(byAction.payment_captured.detail.order_id, ok.id);
        assert.equal(byAction.payment_captured.detail.amount_cents, 1200);
        assert.equal(byAction.invoice_issued.detail.order_id, ok.id);
        assert.equal(byAction.order_failed.detail.order_id, bad.id);
        assert.equal(byAction.role_changed.actor_id, (await srv.get('/api/v1/me', { token: admin })).body.id);
    });

    test('a student reads no audit trail', async () => {
        const { token } = await srv.session();
        assertError(await srv.get('/api/v1/admin/audit', { token }), 403, 'forbidden');
        assertError(await srv.get('/api/v1/admin/audit'), 401, 'unauthorized');
    });

    test('pulse audit verify catches altered, removed, reordered and truncated entries', async () => {
        const dir = srv.dataDir;
        let v = await verify(dir);
        assert.equal(v.code, 0, v.out);
        assert.match(v.out, /intact/);
        const n = Number(auditSql(dir, 'SELECT count(*) FROM audit_entries'));
        assert.ok(n >= 4, `enough entries to tamper with (${n})`);
        const seqs = auditSql(dir, 'SELECT seq FROM audit_entries ORDER BY seq').split('\n').map(Number);
        const [a, b] = [seqs[1], seqs[2]];
        const last = seqs[seqs.length - 1];

        // an attacker with database access first lifts the append-only guard
        auditSql(dir, PROFILE === 'distributed'
            ? 'DROP TRIGGER audit_entries_no_update ON audit_entries'
            : 'DROP TRIGGER audit_entries_no_update; DROP TRIGGER audit_entries_no_delete');

        const broken = async (what, re) => {
            const r = await verify(dir);
            assert.equal(r.code, 3, `${what}: ${r.out}`);
            assert.match(r.out, re, what);
        };
        const intact = async (what) => {
            const r = await verify(dir);
            assert.equal(r.code, 0, `${what} undone: ${r.out}`);
        };

        // altered: one entry's detail rewritten
        const detail = auditSql(dir, `SELECT detail FROM audit_entries WHERE seq = ${a}`);
        auditSql(dir, `UPDATE audit_entries SET detail = '{"amount_cents":1}' WHERE seq = ${a}`);
        await broken('altered', new RegExp(`seq ${a}.*altered`));
        auditSql(dir, `UPDATE audit_entries SET detail = '${detail.replace(/'/g, "''")}' WHERE seq = ${a}`);
        await intact('altered');

        // removed from the middle
        auditSql(dir, `CREATE TABLE kept AS SELECT * FROM audit_entries WHERE seq = ${a}; DELETE FROM audit_entries WHERE seq = ${a}`);
        await broken('removed', new RegExp(`seq ${b}.*removed`));
        auditSql(dir, 'INSERT INTO audit_entries SELECT * FROM kept; DROP TABLE kept');
        await intact('removed');

        // reordered: two entries swap places
        const swap = `UPDATE audit_entries SET seq = -1 WHERE seq = ${a}; UPDATE audit_entries SET seq = ${a} WHERE seq = ${b};`
            + ` UPDATE audit_entries SET seq = ${b} WHERE seq = -1`;
        auditSql(dir, swap);
        await broken('reordered', new RegExp(`seq ${a}.*reordered`));
        auditSql(dir, swap);
        await intact('reordered');

        // the newest entry removed: only the chain head can tell
        auditSql(dir, `CREATE TABLE kept AS SELECT * FROM audit_entries WHERE seq = ${last}; DELETE FROM audit_entries WHERE seq = ${last}`);
        await broken('truncated', /chain head does not match/);
        auditSql(dir, 'INSERT INTO audit_entries SELECT * FROM kept; DROP TABLE kept');
        await intact('truncated');
    });
});
