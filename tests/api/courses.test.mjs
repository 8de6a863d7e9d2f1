// courses.test.mjs - the courses service end to end: catalog and draft
// visibility, teacher ownership, lessons in order, free enrollment under
// concurrency, progress and the once-only completion, quizzes (grading of each
// kind, answers never shown to students, attempt limits), malformed input on
// every endpoint, and the purchase saga's participant driven by commerce's
// command events published onto the bus (replies, idempotency on redelivery,
// the last-seat race, the fault-injection switch). Every event courses emits
// here is validated against its schema.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { Tail, adminToken, assertValidEvent, dlqList, emit, loadSchemas, startBusServer, waitFor } from './bus-harness.mjs';
import { assertError, uniq } from './harness.mjs';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const QUIZ_MAX_ATTEMPTS = 2; // service.courses.quiz_max_attempts for this server

describe('courses', () => {
    let srv, tail, admin, teacher, other, student;

    const asUser = async () => {
        const s = await srv.session({ username: uniq('cs') });
        return { id: s.user.id, token: s.token };
    };
    const asTeacher = async () => {
        const u = await asUser();
        const r = await srv.patch(`/api/v1/users/${u.id}/role`, { role: 'teacher' }, { token: admin });
        assert.equal(r.status, 200, r.text);
        return u;
    };
    const put = (p, json, opts = {}) => srv.request('PUT', p, { ...opts, json });
    const del = (p, opts = {}) => srv.request('DELETE', p, opts);

    // A course of `who` (defaults: free, published, beginner).
    async function course(who, fields = {}) {
        const body = { title: uniq('course'), description: 'about', level: 'beginner', published: true, ...fields };
        const r = await srv.post('/api/v1/courses', body, { token: who.token });
        assert.equal(r.status, 201, r.text);
        return r.body;
    }
    async function lesson(who, courseId, title, content = `content of ${title}`) {
        const r = await srv.post(`/api/v1/courses/${courseId}/lessons`, { title, content }, { token: who.token });
        assert.equal(r.status, 201, r.text);
        return r.body;
    }
    const enroll = (who, courseId) => srv.post(`/api/v1/courses/${courseId}/enroll`, undefined, { token: who.token });
    const courseEvents = (pred) => tail.events.filter((e) => e.type.startsWith('pl.courses.') && pred(e));

    before(async () => {
        srv = await startBusServer({
            services: 'identity,courses,testkit',
            demo: true,
            env: {
                PULSE_SERVICE_COURSES_FAULT_INJECTION: 'true',
                PULSE_SERVICE_COURSES_QUIZ_MAX_ATTEMPTS: String(QUIZ_MAX_ATTEMPTS),
            },
        });
        tail = new Tail(srv.dataDir, { pattern: 'pl.courses.*', fromStart: true });
        admin = await adminToken(srv);
        [teacher, other, student] = await Promise.all([asTeacher(), asTeacher(), asUser()]);
    });
    after(async () => {
        if (tail) {
            await tail.stop();
        }
        await srv?.stopClean();
        await srv?.cleanup();
    });

    // ---- demo, catalog and visibility ----------------------------------------------------------

    test('demo data: courses of the demo teacher (learned from identity events), a quiz and a path', async () => {
        const r = await waitFor(async () => {
            const x = await srv.get('/api/v1/courses?tag=c');
            return x.body.items.length >= 3 && x;
        }, { what: 'the demo courses' });
        const c = r.body.items.find((x) => x.title === 'C from scratch');
        assert.ok(c, r.text);
        const t = await srv.get(`/api/v1/users/${c.teacher_id}`);
        assert.equal(t.body.username, 'ada', 'owned by identity\'s demo teacher');
        const one = await srv.get(`/api/v1/courses/${c.id}`);
        assert.deepEqual(one.body.teacher, { id: c.teacher_id, username: 'ada', display_name: 'Ada Lovelace' }, one.text);
        assert.equal(one.body.lesson_count, 3);
        assert.ok(!r.body.items.some((x) => x.published === false), 'drafts are not in the catalog');
        const paths = await srv.get('/api/v1/paths');
        assert.ok(paths.body.items.some((p) => p.course_ids.includes(c.id)), paths.text);
    });

    test('students cannot create courses; teachers and admins can', async () => {
        assertError(await srv.post('/api/v1/courses', { title: 'x', level: 'beginner' }, { token: student.token }), 403, 'forbidden');
        assertError(await srv.post('/api/v1/courses', { title: 'x', level: 'beginner' }), 401);
        const c = await course(teacher, { tags: ['rust', 'systems'], capacity: 10 });
        assert.match(c.id, UUID);
        assert.equal(c.teacher_id, teacher.id);
        assert.deepEqual(c.tags, ['rust', 'systems']);
        assert.equal(c.capacity, 10);
        assert.equal(c.seats_left, 10);
        const byAdmin = await srv.post('/api/v1/courses', { title: 'admin made', level: 'advanced' }, { token: admin });
        assert.equal(byAdmin.status, 201, byAdmin.text);
    });

    test('a draft is seen only by its teacher and admins; publishing puts it in the catalog', async () => {
        const d = await course(teacher, { published: false, tags: ['draftcheck'] });
        for (const token of [undefined, student.token, other.token])
            assertError(await srv.get(`/api/v1/courses/${d.id}`, { token }), 404, 'not_found');
        assertError(await srv.get(`/api/v1/courses/${d.id}/lessons`, { token: student.token }), 404);
        for (const token of [teacher.token, admin]) assert.equal((await srv.get(`/api/v1/courses/${d.id}`, { token })).status, 200);
        assert.equal((await srv.get('/api/v1/courses?tag=draftcheck')).body.items.length, 0);
        assertError(await enroll(student, d.id), 404);
        const p = await srv.patch(`/api/v1/courses/${d.id}`, { published: true }, { token: teacher.token });
        assert.equal(p.status, 200, p.text);
        assert.equal(p.body.published, true);
        const list = await srv.get('/api/v1/courses?tag=draftcheck');
        assert.deepEqual(list.body.items.map((x) => x.id), [d.id]);
        await tail.waitFor(() => courseEvents((e) => e.type === 'pl.courses.course_published.v1' && e.data.course_id === d.id).length === 1);
    });

    test('only the course\'s teacher and admins change it (another teacher gets 403)', async () => {
        const c = await course(teacher);
        assertError(await srv.patch(`/api/v1/courses/${c.id}`, { title: 'hijack' }, { token: other.token }), 403, 'forbidden');
        assertError(await srv.patch(`/api/v1/courses/${c.id}`, { title: 'hijack' }, { token: student.token }), 403);
        assertError(await srv.post(`/api/v1/courses/${c.id}/lessons`, { title: 'x' }, { token: other.token }), 403);
        assert.equal((await srv.get(`/api/v1/courses/${c.id}`)).body.title, c.title, 'nothing changed');
        const a = await srv.patch(`/api/v1/courses/${c.id}`, { title: 'renamed by admin' }, { token: admin });
        assert.equal(a.status, 200, a.text);
        assert.equal(a.body.title, 'renamed by admin');
        assert.equal(a.body.teacher_id, teacher.id, 'the teacher stays');
    });

    test('catalog filters (tag, level, premium, teacher) and cursor pagination', async () => {
        const tag = uniq('t').replace(/_/g, '-');
        const t2 = await asTeacher();
        const made = [];
        made.push(await course(t2, { tags: [tag], level: 'advanced' }));
        made.push(await course(t2, { tags: [tag], premium: true, price_cents: 1999, currency: 'EUR' }));
        made.push(await course(t2, { tags: [tag] }));
        await course(t2, { tags: [tag], published: false });
        const seen = [];
        let cursor = null;
        for (let i = 0; i < 5; i++) {
            const r = await srv.get(`/api/v1/courses?tag=${tag}&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
            assert.equal(r.status, 200, r.text);
            seen.push(...r.body.items.map((x) => x.id));
            cursor = r.body.next_cursor;
            if (!cursor) break;
        }
        assert.deepEqual(seen, made.map((x) => x.id).reverse(), 'newest first, every published one once');
        const ids = async (q) => (await srv.get(`/api/v1/courses?tag=${tag}&${q}`)).body.items.map((x) => x.id);
        assert.deepEqual(await ids('level=advanced'), [made[0].id]);
        assert.deepEqual(await ids('premium=true'), [made[1].id]);
        assert.deepEqual(await ids('premium=false'), [made[2].id, made[0].id]);
        assert.deepEqual((await srv.get(`/api/v1/courses?teacher=${t2.id}&limit=100`)).body.items.length, 3);
        const prem = made[1];
        assert.equal(prem.price_cents, 1999);
        assert.equal(prem.currency, 'EUR');
    });

    // ---- lessons --------------------------------------------------------------------------------

    test('lessons: appended in order, reordered, edited, deleted (positions stay dense)', async () => {
        const c = await course(teacher);
        const [a, b, d] = [await lesson(teacher, c.id, 'A'), await lesson(teacher, c.id, 'B'), await lesson(teacher, c.id, 'C')];
        assert.deepEqual([a.position, b.position, d.position], [1, 2, 3]);
        const order = async (token = teacher.token) => (await srv.get(`/api/v1/courses/${c.id}/lessons`, { token })).body.items;
        const r = await put(`/api/v1/courses/${c.id}/lessons/order`, { lesson_ids: [d.id, a.id, b.id] }, { token: teacher.token });
        assert.equal(r.status, 200, r.text);
        assert.deepEqual((await order()).map((x) => [x.title, x.position]), [['C', 1], ['A', 2], ['B', 3]]);
        // a partial or foreign list changes nothing
        assertError(await put(`/api/v1/courses/${c.id}/lessons/order`, { lesson_ids: [d.id, a.id] }, { token: teacher.token }), 400);
        assertError(await put(`/api/v1/courses/${c.id}/lessons/order`, { lesson_ids: [d.id, a.id, randomUUID()] }, { token: teacher.token }), 400);
        assertError(await put(`/api/v1/courses/${c.id}/lessons/order`, { lesson_ids: [b.id, a.id, d.id] }, { token: other.token }), 403);
        assert.deepEqual((await order()).map((x) => x.title), ['C', 'A', 'B']);
        const e = await srv.patch(`/api/v1/courses/${c.id}/lessons/${a.id}`, { title: 'A2', content: 'new' }, { token: teacher.token });
        assert.equal(e.status, 200, e.text);
        assert.equal(e.body.title, 'A2');
        assertError(await del(`/api/v1/courses/${c.id}/lessons/${d.id}`, { token: other.token }), 403);
        assert.equal((await del(`/api/v1/courses/${c.id}/lessons/${d.id}`, { token: teacher.token })).status, 204);
        assertError(await del(`/api/v1/courses/${c.id}/lessons/${d.id}`, { token: teacher.token }), 404);
        assert.deepEqual((await order()).map((x) => [x.title, x.position]), [['A2', 1], ['B', 2]]);
    });

    test('lesson content: titles to anyone, content to enrolled students, the teacher and admins', async () => {
        const c = await course(teacher);
        await lesson(teacher, c.id, 'secret', 'the secret content');
        const u = await asUser();
        for (const token of [undefined, u.token, other.token]) {
            const r = await srv.get(`/api/v1/courses/${c.id}/lessons`, { token });
            assert.equal(r.status, 200, r.text);
            assert.equal(r.body.items[0].title, 'secret');
            assert.ok(!r.text.includes('the secret content'), 'content leaked to a non-enrolled caller');
        }
        assert.equal((await enroll(u, c.id)).status, 201);
        for (const token of [u.token, teacher.token, admin])
            assert.equal((await srv.get(`/api/v1/courses/${c.id}/lessons`, { token })).body.items[0].content, 'the secret content');
    });

    // ---- enrollment, progress, completion ---------------------------------------------------------------

    test('premium courses are not enrolled for free: 402 pointing to purchase', async () => {
        const c = await course(teacher, { premium: true, price_cents: 500, currency: 'USD' });
        const err = assertError(await enroll(student, c.id), 402, 'purchase_required');
        assert.equal(err.fields.purchase, `/api/v1/courses/${c.id}/purchase`);
    });

    test('20 parallel enrollments for 5 seats: exactly 5 succeed', async () => {
        const c = await course(teacher, { capacity: 5 });
        const users = await Promise.all(Array.from({ length: 20 }, () => asUser()));
        const res = await Promise.all(users.map((u) => enroll(u, c.id)));
        const ok = res.filter((r) => r.status === 201);
        assert.equal(ok.length, 5, res.map((r) => r.status).join(','));
        for (const r of res.filter((x) => x.status !== 201)) assertError(r, 409, 'sold_out');
        assert.equal((await srv.get(`/api/v1/courses/${c.id}`)).body.seats_left, 0);
        const again = await enroll(users[res.indexOf(ok[0])], c.id);
        assertError(again, 409, 'already_enrolled');
    });

    test('progress and completion: course_completed exactly once', async () => {
        const c = await course(teacher);
        const [l1, l2] = [await lesson(teacher, c.id, 'one'), await lesson(teacher, c.id, 'two')];
        const u = await asUser();
        const complete = (l, who = u) => srv.post(`/api/v1/courses/${c.id}/lessons/${l.id}/complete`, undefined, { token: who.token });
        assertError(await complete(l1), 403, 'forbidden');
        assert.equal((await enroll(u, c.id)).status, 201);
        let r = await complete(l1);
        assert.equal(r.status, 200, r.text);
        assert.deepEqual([r.body.completed_lessons, r.body.total_lessons, r.body.progress, r.body.course_completed], [1, 2, 0.5, false]);
        r = await complete(l1);
        assert.equal(r.body.completed_lessons, 1, 'completing twice counts once');
        assertError(await srv.post(`/api/v1/courses/${c.id}/lessons/${randomUUID()}/complete`, undefined, { token: u.token }), 404);
        r = await complete(l2);
        assert.equal(r.body.course_completed, true);
        r = await complete(l2);
        const me = await srv.get('/api/v1/me/enrollments', { token: u.token });
        const e = me.body.items.find((x) => x.course_id === c.id);
        assert.deepEqual([e.completed_lessons, e.total_lessons, e.progress, e.completed, e.via], [2, 2, 1, true, 'free']);
        assert.equal((await srv.get('/api/v1/me/enrollments', { token: student.token })).body.items.some((x) => x.course_id === c.id), false);
        // a lesson added later does not complete the course a second time
        const l3 = await lesson(teacher, c.id, 'three');
        await complete(l3);
        await tail.waitFor(() => courseEvents((ev) => ev.type === 'pl.courses.lesson_completed.v1' && ev.data.user_id === u.id).length === 3);
        const done = courseEvents((ev) => ev.type === 'pl.courses.course_completed.v1' && ev.data.course_id === c.id);
        assert.equal(done.length, 1);
        assert.equal(done[0].data.user_id, u.id);
    });

    // ---- quizzes ------------------------------------------------------------------------------------------------

    const QUESTIONS = [
        { kind: 'single', prompt: 'Which is 4?', options: ['three', 'four'], correct: 1 },
        { kind: 'multiple', prompt: 'Primes?', options: ['2', '4', '5'], correct: [0, 2] },
        { kind: 'text', prompt: 'Capital of France?', accepted: ['Paris', 'ville de paris'] },
    ];

    test('quizzes: answers never reach students; each kind graded; pass mark; attempt limit', async () => {
        const c = await course(teacher);
        const u = await asUser();
        const q = await srv.post(`/api/v1/courses/${c.id}/quizzes`, { title: 'check', questions: QUESTIONS, pass_mark: 70 }, { token: teacher.token });
        assert.equal(q.status, 201, q.text);
        assert.equal(q.body.max_attempts, QUIZ_MAX_ATTEMPTS, 'the configured default');
        assertError(await srv.post(`/api/v1/courses/${c.id}/quizzes`, { title: 'x', questions: QUESTIONS }, { token: other.token }), 403);
        assertError(await srv.post(`/api/v1/courses/${c.id}/quizzes`, { title: 'x', questions: QUESTIONS }, { token: u.token }), 403);
        const url = `/api/v1/courses/${c.id}/quizzes/${q.body.id}`;
        const submit = (answers, who = u) => srv.post(`${url}/submissions`, { answers }, { token: who.token });
        assertError(await srv.get(url, { token: u.token }), 403);
        assertError(await submit([1, [0, 2], 'paris']), 403, 'forbidden');
        assert.equal((await enroll(u, c.id)).status, 201);
        const view = await srv.get(url, { token: u.token });
        assert.equal(view.status, 200, view.text);
        for (const leak of ['correct', 'accepted', 'Paris', 'ville de paris']) assert.ok(!view.text.includes(leak), `${leak} leaked: ${view.text}`);
        assert.equal(view.body.questions.length, 3);
        const list = await srv.get(`/api/v1/courses/${c.id}/quizzes`, { token: u.token });
        assert.ok(!list.text.includes('Paris'), list.text);
        const tview = await srv.get(url, { token: teacher.token });
        assert.deepEqual(tview.body.questions[1].correct, [0, 2], 'the teacher sees the answers');

        assertError(await submit([1, [0, 2]]), 400, 'validation_failed');
        assertError(await submit([9, null, null]), 400);
        assertError(await submit('all of them'), 400);
        let r = await submit([1, [2, 0], '  VILLE  de Paris ']);
        assert.equal(r.status, 201, r.text);
        assert.deepEqual([r.body.score, r.body.passed, r.body.attempt, r.body.results], [100, true, 1, [true, true, true]]);
        r = await submit([0, [0], 'London']);
        assert.deepEqual([r.body.score, r.body.passed, r.body.attempt, r.body.attempts_left], [0, false, 2, 0]);
        const err = assertError(await submit([1, [0, 2], 'paris']), 409, 'attempts_exhausted');
        assert.equal(err.fields.max_attempts, QUIZ_MAX_ATTEMPTS);
        await tail.waitFor(() => courseEvents((e) => e.type === 'pl.courses.quiz_completed.v1' && e.data.user_id === u.id).length === 2);
        const evs = courseEvents((e) => e.type === 'pl.courses.quiz_completed.v1' && e.data.user_id === u.id);
        assert.deepEqual(evs.map((e) => [e.data.score, e.data.passed, e.data.attempt]), [[100, true, 1], [0, false, 2]]);
    });

    test('quiz pass mark and partial scores; a quiz-level max_attempts', async () => {
        const c = await course(teacher);
        const u = await asUser();
        await enroll(u, c.id);
        const q = await srv.post(`/api/v1/courses/${c.id}/quizzes`, { title: 'one try', questions: QUESTIONS, max_attempts: 1 }, { token: teacher.token });
        assert.equal(q.body.pass_mark, 60);
        const r = await srv.post(`/api/v1/courses/${c.id}/quizzes/${q.body.id}/submissions`, { answers: [1, [0], 'paris'] }, { token: u.token });
        assert.deepEqual([r.body.score, r.body.passed], [67, true]);
        assertError(await srv.post(`/api/v1/courses/${c.id}/quizzes/${q.body.id}/submissions`, { answers: [1, [0], 'paris'] }, { token: u.token }), 409, 'attempts_exhausted');
    });

    // ---- learning paths -----------------------------------------------------------------------------------------

    test('learning paths: ordered courses; drafts hidden from others; owner or admin edits', async () => {
        const [c1, c2, draft] = [await course(teacher), await course(teacher), await course(teacher, { published: false })];
        assertError(await srv.post('/api/v1/paths', { title: 'p', course_ids: [c1.id] }, { token: student.token }), 403);
        assertError(await srv.post('/api/v1/paths', { title: 'p', course_ids: [draft.id] }, { token: other.token }), 400, 'validation_failed');
        const p = await srv.post('/api/v1/paths', { title: 'path', description: 'd', course_ids: [c2.id, draft.id, c1.id] }, { token: teacher.token });
        assert.equal(p.status, 201, p.text);
        assert.deepEqual(p.body.course_ids, [c2.id, draft.id, c1.id]);
        const pub = await srv.get(`/api/v1/paths/${p.body.id}`);
        assert.deepEqual(pub.body.courses.map((x) => x.id), [c2.id, c1.id], 'the draft is left out for others');
        assertError(await srv.patch(`/api/v1/paths/${p.body.id}`, { title: 'mine' }, { token: other.token }), 403);
        const e = await srv.patch(`/api/v1/paths/${p.body.id}`, { course_ids: [c1.id] }, { token: admin });
        assert.equal(e.status, 200, e.text);
        assert.deepEqual(e.body.course_ids, [c1.id]);
        assertError(await del(`/api/v1/paths/${p.body.id}`, { token: other.token }), 403);
        assert.equal((await del(`/api/v1/paths/${p.body.id}`, { token: teacher.token })).status, 204);
        assertError(await srv.get(`/api/v1/paths/${p.body.id}`), 404);
    });

    // ---- malformed input ------------------------------------------------------------------------------------------

    test('malformed input on every endpoint: a 4xx in the error shape, nothing changed', async () => {
        const c = await course(teacher, { capacity: 3 });
        const l = await lesson(teacher, c.id, 'L');
        const q = await srv.post(`/api/v1/courses/${c.id}/quizzes`, { title: 'q', questions: QUESTIONS }, { token: teacher.token });
        const p = await srv.post('/api/v1/paths', { title: 'p', course_ids: [c.id] }, { token: teacher.token });
        await enroll(student, c.id);
        const T = teacher.token;
        const cases = [
            ['POST', '/api/v1/courses', { title: '', level: 'beginner' }, T],
            ['POST', '/api/v1/courses', { title: 'x', level: 'expert' }, T],
            ['POST', '/api/v1/courses', { title: 'x', level: 'beginner', premium: true }, T],
            ['POST', '/api/v1/courses', { title: 'x', level: 'beginner', premium: true, price_cents: 100, currency: 'eur' }, T],
            ['POST', '/api/v1/courses', { title: 'x', level: 'beginner', price_cents: 100 }, T],
            ['POST', '/api/v1/courses', { title: 'x', level: 'beginner', tags: ['a', 'a'] }, T],
            ['POST', '/api/v1/courses', { title: 'x', level: 'beginner', tags: 'a' }, T],
            ['POST', '/api/v1/courses', { title: 'x', level: 'beginner', tags: ['x'.repeat(33)] }, T],
            ['POST', '/api/v1/courses', { title: 'x', level: 'beginner', capacity: 0 }, T],
            ['POST', '/api/v1/courses', { title: 'x', level: 'beginner', teacher_id: student.id }, T],
            ['POST', '/api/v1/courses', [1, 2], T],
            ['PATCH', `/api/v1/courses/${c.id}`, { capacity: 'many' }, T],
            ['PATCH', `/api/v1/courses/${c.id}`, { title: null }, T],
            ['PATCH', `/api/v1/courses/${c.id}`, { published: 'yes' }, T],
            ['PATCH', `/api/v1/courses/${c.id}`, { capacity: 0 }, T],
            ['GET', '/api/v1/courses?limit=0'],
            ['GET', '/api/v1/courses?limit=abc'],
            ['GET', '/api/v1/courses?cursor=nope'],
            ['GET', '/api/v1/courses?level=expert'],
            ['GET', '/api/v1/courses?premium=maybe'],
            ['GET', '/api/v1/courses?teacher=bob'],
            ['GET', '/api/v1/courses/not-a-uuid'],
            ['GET', `/api/v1/courses/${randomUUID()}/lessons`],
            ['POST', `/api/v1/courses/${c.id}/lessons`, { title: '' }, T],
            ['POST', `/api/v1/courses/${c.id}/lessons`, { title: 'x', content: 5 }, T],
            ['PATCH', `/api/v1/courses/${c.id}/lessons/${l.id}`, { title: 7 }, T],
            ['PATCH', `/api/v1/courses/${c.id}/lessons/nope`, { title: 'x' }, T],
            ['DELETE', `/api/v1/courses/${c.id}/lessons/nope`, undefined, T],
            ['PUT', `/api/v1/courses/${c.id}/lessons/order`, { lesson_ids: 'x' }, T],
            ['PUT', `/api/v1/courses/${c.id}/lessons/order`, { lesson_ids: [l.id, l.id] }, T],
            ['POST', `/api/v1/courses/${c.id}/lessons/nope/complete`, undefined, student.token],
            ['POST', `/api/v1/courses/${c.id}/enroll`, { seat: 1 }, student.token],
            ['POST', `/api/v1/courses/${randomUUID()}/enroll`, undefined, student.token],
            ['GET', '/api/v1/me/enrollments?limit=-1', undefined, student.token],
            ['POST', `/api/v1/courses/${c.id}/quizzes`, { title: 'q', questions: [] }, T],
            ['POST', `/api/v1/courses/${c.id}/quizzes`, { title: 'q', questions: [{ kind: 'single', prompt: 'p', options: ['a'], correct: 0 }] }, T],
            ['POST', `/api/v1/courses/${c.id}/quizzes`, { title: 'q', questions: QUESTIONS, pass_mark: 101 }, T],
            ['GET', `/api/v1/courses/${c.id}/quizzes/nope`, undefined, T],
            ['POST', `/api/v1/courses/${c.id}/quizzes/${q.body.id}/submissions`, { answers: [1, [0, 0], 'x'] }, student.token],
            ['POST', `/api/v1/courses/${c.id}/quizzes/${q.body.id}/submissions`, { answers: [1, [0], 'x'], extra: 1 }, student.token],
            ['POST', `/api/v1/courses/${c.id}/quizzes/${q.body.id}/submissions`, {}, student.token],
            ['POST', '/api/v1/paths', { title: 'p', course_ids: ['x'] }, T],
            ['POST', '/api/v1/paths', { course_ids: [] }, T],
            ['PATCH', `/api/v1/paths/${p.body.id}`, { course_ids: [c.id, c.id] }, T],
            ['GET', '/api/v1/paths?limit=1000'],
            ['GET', '/api/v1/paths/nope'],
            ['PUT', `/api/v1/courses/${c.id}/faults`, { fail_access_grant: 'yes' }, admin],
            ['PUT', `/api/v1/courses/${c.id}/faults`, { fail_access_grant: true }, T],
        ];
        for (const [method, path, json, token] of cases) {
            const r = await srv.request(method, path, { json, token });
            assert.ok(r.status >= 400 && r.status < 500, `${method} ${path} ${JSON.stringify(json)}: ${r.status} ${r.text}`);
            assertError(r, r.status);
        }
        // bodies that are not JSON objects, and the wrong content type
        for (const [method, path] of [['POST', '/api/v1/courses'], ['PATCH', `/api/v1/courses/${c.id}`], ['POST', `/api/v1/courses/${c.id}/lessons`],
            ['PUT', `/api/v1/courses/${c.id}/lessons/order`], ['POST', `/api/v1/courses/${c.id}/quizzes`], ['POST', '/api/v1/paths'],
            ['POST', `/api/v1/courses/${c.id}/quizzes/${q.body.id}/submissions`], ['POST', `/api/v1/courses/${c.id}/enroll`]]) {
            for (const [body, ct] of [['{"title":', 'application/json'], ['title=x', 'text/plain']]) {
                const r = await srv.request(method, path, { body, headers: { 'content-type': ct }, token: T });
                assert.ok(r.status >= 400 && r.status < 500, `${method} ${path} ${body}: ${r.status} ${r.text}`);
                assertError(r, r.status);
            }
        }
        const after = await srv.get(`/api/v1/courses/${c.id}`, { token: T });
        assert.deepEqual([after.body.title, after.body.capacity, after.body.seats_left, after.body.published], [c.title, 3, 2, true]);
        const quiz = await srv.get(`/api/v1/courses/${c.id}/quizzes/${q.body.id}`, { token: student.token });
        assert.equal(quiz.body.attempts_used, 0, 'no rejected submission counted');
    });

    // ---- the purchase saga's participant -----------------------------------------------------------------------------

    const command = (name, data) =>
        emit(srv, { type: `pl.commerce.${name}.v1`, subject: data.order_id, data });
    const replies = (orderId) => tail.events.filter((e) => e.data?.order_id === orderId && e.type !== 'pl.courses.enrolled.v1');
    const waitReplies = (orderId, n) =>
        tail.waitFor(() => replies(orderId).length >= n && replies(orderId), { what: `${n} replies for ${orderId}` });
    const strip = (e) => ({ type: e.type, subject: e.subject, partitionkey: e.partitionkey, data: e.data });

    test('saga: reserve, redelivery answered the same, grant makes an enrollment, grant again the same', async () => {
        const c = await course(teacher, { premium: true, price_cents: 2500, currency: 'EUR', capacity: 3 });
        const buyer = await asUser();
        const order = randomUUID();
        const d = { order_id: order, course_id: c.id, user_id: buyer.id };
        await command('seat_reserve_requested', d);
        await command('seat_reserve_requested', d); // delivered again (a new event for the same order)
        let r = await waitReplies(order, 2);
        assert.deepEqual(r.map(strip), [0, 1].map(() => ({ type: 'pl.courses.seat_reserved.v1', subject: order, partitionkey: order, data: d })));
        assert.equal((await srv.get(`/api/v1/courses/${c.id}`)).body.seats_left, 2, 'one seat held, not two');
        await command('access_grant_requested', d);
        await command('access_grant_requested', d);
        r = await waitReplies(order, 4);
        assert.equal(r[2].type, 'pl.courses.access_granted.v1');
        assert.deepEqual(strip(r[3]), strip(r[2]), 'the same reply, the same enrollment id');
        assert.match(r[2].data.enrollment_id, UUID);
        const me = await srv.get('/api/v1/me/enrollments', { token: buyer.token });
        const e = me.body.items.find((x) => x.course_id === c.id);
        assert.deepEqual([e.id, e.via, e.order_id], [r[2].data.enrollment_id, 'purchase', order]);
        assert.equal((await srv.get(`/api/v1/courses/${c.id}`)).body.seats_left, 2, 'the reservation\'s seat became the enrollment\'s');
        const enrolled = tail.events.filter((x) => x.type === 'pl.courses.enrolled.v1' && x.data.order_id === order);
        assert.equal(enrolled.length, 1);
        assert.equal(enrolled[0].data.via, 'purchase');
        // a second order by the same buyer is rejected
        const again = randomUUID();
        await command('seat_reserve_requested', { ...d, order_id: again });
        r = await waitReplies(again, 1);
        assert.deepEqual([r[0].type, r[0].data.reason], ['pl.courses.seat_reservation_rejected.v1', 'already_enrolled']);
    });

    test('saga: rejections (not_found, not_for_sale, sold_out) and release (also of an unknown order)', async () => {
        const free = await course(teacher);
        const draft = await course(teacher, { premium: true, price_cents: 100, currency: 'EUR', published: false });
        const c = await course(teacher, { premium: true, price_cents: 100, currency: 'EUR', capacity: 1 });
        const cases = [[randomUUID(), 'not_found'], [free.id, 'not_for_sale'], [draft.id, 'not_found']];
        for (const [courseId, reason] of cases) {
            const order = randomUUID();
            await command('seat_reserve_requested', { order_id: order, course_id: courseId, user_id: student.id });
            const [r] = await waitReplies(order, 1);
            assert.deepEqual([r.type, r.data.reason], ['pl.courses.seat_reservation_rejected.v1', reason]);
        }
        const [o1, o2] = [randomUUID(), randomUUID()];
        await command('seat_reserve_requested', { order_id: o1, course_id: c.id, user_id: student.id });
        assert.equal((await waitReplies(o1, 1))[0].type, 'pl.courses.seat_reserved.v1');
        const u2 = await asUser();
        await command('seat_reserve_requested', { order_id: o2, course_id: c.id, user_id: u2.id });
        assert.equal((await waitReplies(o2, 1))[0].data.reason, 'sold_out');
        await command('seat_release_requested', { order_id: o1, course_id: c.id, user_id: student.id });
        await command('seat_release_requested', { order_id: o1, course_id: c.id, user_id: student.id });
        const rel = await waitReplies(o1, 3);
        assert.deepEqual(rel.slice(1).map((x) => x.type), ['pl.courses.seat_released.v1', 'pl.courses.seat_released.v1']);
        assert.equal((await srv.get(`/api/v1/courses/${c.id}`)).body.seats_left, 1, 'released once, freed once');
        // the rejected order is answered the same even now that a seat is free
        await command('seat_reserve_requested', { order_id: o2, course_id: c.id, user_id: u2.id });
        assert.equal((await waitReplies(o2, 2))[1].data.reason, 'sold_out');
        // a grant after the release fails; an unknown order's release converges
        await command('access_grant_requested', { order_id: o1, course_id: c.id, user_id: student.id });
        const g = (await waitReplies(o1, 4))[3];
        assert.deepEqual([g.type, g.data.reason], ['pl.courses.access_grant_failed.v1', 'reservation_released']);
        const ghost = randomUUID();
        await command('seat_release_requested', { order_id: ghost, course_id: c.id, user_id: u2.id });
        assert.equal((await waitReplies(ghost, 1))[0].type, 'pl.courses.seat_released.v1');
        await command('seat_reserve_requested', { order_id: ghost, course_id: c.id, user_id: u2.id });
        assert.equal((await waitReplies(ghost, 2))[1].type, 'pl.courses.seat_released.v1', 'a late reserve takes no seat');
        assert.equal((await srv.get(`/api/v1/courses/${c.id}`)).body.seats_left, 1);
        const none = randomUUID();
        await command('access_grant_requested', { order_id: none, course_id: c.id, user_id: u2.id });
        assert.equal((await waitReplies(none, 1))[0].data.reason, 'no_reservation');
    });

    test('saga: many reservations race for the last seat: exactly one seat_reserved', async () => {
        const c = await course(teacher, { premium: true, price_cents: 100, currency: 'EUR', capacity: 2 });
        assert.equal((await enroll(student, c.id)).status, 402);
        const first = randomUUID();
        await command('seat_reserve_requested', { order_id: first, course_id: c.id, user_id: randomUUID() });
        await waitReplies(first, 1);
        const orders = Array.from({ length: 12 }, () => randomUUID());
        await Promise.all(orders.map((o) => command('seat_reserve_requested', { order_id: o, course_id: c.id, user_id: randomUUID() })));
        await tail.waitFor(() => orders.every((o) => replies(o).length === 1), { what: 'a reply per order' });
        const types = orders.map((o) => replies(o)[0]);
        assert.equal(types.filter((r) => r.type === 'pl.courses.seat_reserved.v1').length, 1);
        assert.equal(types.filter((r) => r.data.reason === 'sold_out').length, 11);
        assert.equal((await srv.get(`/api/v1/courses/${c.id}`)).body.seats_left, 0);
    });

    test('saga: the fault-injection switch fails the grant; release then frees the seat', async () => {
        const c = await course(teacher, { premium: true, price_cents: 100, currency: 'EUR', capacity: 1 });
        assertError(await put(`/api/v1/courses/${c.id}/faults`, { fail_access_grant: true }, { token: teacher.token }), 403);
        const f = await put(`/api/v1/courses/${c.id}/faults`, { fail_access_grant: true }, { token: admin });
        assert.equal(f.status, 200, f.text);
        const d = { order_id: randomUUID(), course_id: c.id, user_id: student.id };
        await command('seat_reserve_requested', d);
        await command('access_grant_requested', d);
        await command('seat_release_requested', d);
        const r = await waitReplies(d.order_id, 3);
        assert.deepEqual(r.map((x) => x.type), ['pl.courses.seat_reserved.v1', 'pl.courses.access_grant_failed.v1', 'pl.courses.seat_released.v1']);
        assert.equal(r[1].data.reason, 'fault_injected');
        assert.equal((await srv.get(`/api/v1/courses/${c.id}`)).body.seats_left, 1);
        assert.equal((await srv.get('/api/v1/me/enrollments', { token: student.token })).body.items.some((x) => x.course_id === c.id), false);
    });

    test('saga: a release after the grant revokes the purchase and frees the seat; a command without ids is dead-lettered', async () => {
        const c = await course(teacher, { premium: true, price_cents: 100, currency: 'EUR', capacity: 1 });
        const buyer = await asUser();
        const d = { order_id: randomUUID(), course_id: c.id, user_id: buyer.id };
        await command('seat_reserve_requested', d);
        await command('access_grant_requested', d);
        await waitReplies(d.order_id, 2);
        assert.equal((await srv.get('/api/v1/me/enrollments', { token: buyer.token })).body.items.filter((x) => x.course_id === c.id).length, 1);
        await command('seat_release_requested', d);
        const r = await waitReplies(d.order_id, 3);
        assert.equal(r[2].type, 'pl.courses.seat_released.v1');
        assert.equal((await srv.get('/api/v1/me/enrollments', { token: buyer.token })).body.items.some((x) => x.course_id === c.id), false);
        assert.equal((await srv.get(`/api/v1/courses/${c.id}`)).body.seats_left, 1);
        await command('access_grant_requested', d);
        assert.equal((await waitReplies(d.order_id, 4))[3].data.reason, 'reservation_released');
        const bad = randomUUID();
        const [id] = await emit(srv, { type: 'pl.commerce.seat_reserve_requested.v1', subject: bad, data: { order_id: bad, course_id: c.id } });
        const dead = await waitFor(async () => (await dlqList(srv.dataDir)).find((x) => x.event_id === id),
            { what: 'the malformed command in the dead-letter queue' });
        assert.equal(dead.consumer, 'courses.saga');
        assert.match(dead.error, /order_id, course_id and user_id/);
        assert.equal(replies(bad).length, 0, 'no reply to a command without user_id');
    });

    // Last: every event courses emitted during this file validates against its schema.
    test('every courses event validates against its JSON Schema', async () => {
        const schemas = loadSchemas();
        const sentinel = await course(teacher, { title: 'sentinel' });
        await tail.waitFor(() => tail.events.some((e) => e.type === 'pl.courses.course_created.v1' && e.data.course_id === sentinel.id));
        const seen = new Set();
        for (const e of tail.events.filter((x) => x.type.startsWith('pl.courses.'))) {
            assertValidEvent(schemas, e);
            assert.equal(e.source, '/pulse/courses');
            seen.add(e.type);
        }
        for (const t of ['course_created', 'course_updated', 'course_published', 'enrolled', 'lesson_completed', 'course_completed',
            'quiz_completed', 'seat_reserved', 'seat_reservation_rejected', 'seat_released', 'access_granted', 'access_grant_failed'])
            assert.ok(seen.has(`pl.courses.${t}.v1`), `no ${t} seen`);
    });
});
