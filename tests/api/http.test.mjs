// http.test.mjs - the HTTP layer under abuse and its platform routes: bad
// bodies, huge bodies and headers, unknown routes and methods, tracing
// headers, /healthz, /readyz, /metrics and the OpenAPI document.
//
// Every bad request must be a 4xx in the error shape, never a 5xx, and the
// server must keep answering afterwards.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';

import { PASSWORD, assertError, rawRequest, startServer } from './harness.mjs';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

describe('http', () => {
    let srv;
    before(async () => {
        srv = await startServer();
    });
    after(async () => {
        await srv?.cleanup();
    });
    // The server is still up after every abuse below.
    afterEach(async () => {
        if (srv?.running) await srv.assertHealthy();
    });

    const raw = (data, opts) => rawRequest(srv.port, data, opts);
    const post = (path, body, contentType = 'application/json') =>
        srv.request('POST', path, { body, headers: { 'content-type': contentType } });

    // ---- bodies -------------------------------------------------------------------------

    test('malformed JSON is 400 malformed_json', async () => {
        for (const body of ['{', '{"login":', '{"login":"a",}', "{'login':'a'}", 'nul', '{"a":1}{"b":2}', '\u0000', '{"a":"\\x"}']) {
            const res = await post('/api/v1/auth/login', body);
            assertError(res, 400, 'malformed_json');
        }
    });

    test('JSON that is not an object is 400', async () => {
        for (const body of ['[]', '[{"login":"a"}]', '"login"', '42', 'true', 'null']) {
            const res = await post('/api/v1/auth/register', body);
            assertError(res, 400);
        }
    });

    test('a duplicate key is refused rather than silently resolved', async () => {
        const res = await post('/api/v1/auth/login', '{"login":"a","login":"b","password":"x"}');
        assertError(res, 400);
    });

    test('an empty body is 400', async () => {
        assertError(await post('/api/v1/auth/login', ''), 400);
        assertError(await srv.request('POST', '/api/v1/auth/register'), 400);
    });

    test('a wrong Content-Type is 415', async () => {
        const json = JSON.stringify({ login: 'a', password: 'b' });
        for (const ct of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonp', 'multipart/form-data; boundary=x']) {
            assertError(await post('/api/v1/auth/login', json, ct), 415, 'unsupported_media_type');
        }
        const none = await raw(
            `POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: ${json.length}\r\nConnection: close\r\n\r\n${json}`,
        );
        assertError(none, 415, 'unsupported_media_type');
        // Parameters and case are fine.
        const ok = await post('/api/v1/auth/login', json, 'Application/JSON; charset=utf-8');
        assertError(ok, 401, 'unauthorized');
    });

    test('invalid UTF-8 inside a JSON string is 400, not stored', async () => {
        const head = Buffer.from('{"email":"bad@example.org","username":"badutf","password":"Correct-Horse-42","display_name":"');
        const tail = Buffer.from('"}');
        const bads = [
            Buffer.from([0xff, 0xfe]),
            Buffer.from([0xc3]), // truncated sequence
            Buffer.from([0xc0, 0xaf]), // overlong '/'
            Buffer.from([0xed, 0xa0, 0x80]), // a UTF-16 surrogate
            Buffer.from([0xf4, 0x90, 0x80, 0x80]), // beyond U+10FFFF
        ];
        for (const bad of bads) {
            const body = Buffer.concat([head, Buffer.from('Ana '), bad, tail]);
            const res = await raw([
                `POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
                body,
            ]);
            assertError(res, 400);
        }
        // None of them created the account.
        const login = await srv.post('/api/v1/auth/login', { login: 'badutf', password: PASSWORD });
        assertError(login, 401);
    });

    test('a 2 MiB body is 413 (declared length), and the connection stays usable', async () => {
        const body = Buffer.alloc(2 * 1024 * 1024, 'a');
        const res = await raw(
            [
                `POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
                body,
                'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
            ],
            { untilClose: true },
        );
        assertError(res, 413, 'payload_too_large');
        // The body was read and dropped, so the next request on the connection is served.
        assert.match(res.rest, /^HTTP\/1\.1 200 /, `after the 413: ${res.rest.slice(0, 200)}`);
        assert.match(res.rest, /\{"status":"ok"\}$/);
    });

    test('a 2 MiB body is 413 (chunked, no length given)', async () => {
        const chunk = Buffer.alloc(64 * 1024, 'a');
        const parts = ['POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n'];
        for (let i = 0; i < 32; i++) parts.push(`${chunk.length.toString(16)}\r\n`, chunk, '\r\n');
        parts.push('0\r\n\r\n');
        const res = await raw(parts);
        assertError(res, 413, 'payload_too_large');
    });

    test('a body declared far beyond the limit, or awaiting 100-continue, is refused before it is sent', async () => {
        const huge = await raw(
            'POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{"a":',
        );
        assertError(huge, 413, 'payload_too_large');
        const expect = await raw(
            'POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\nExpect: 100-continue\r\n\r\n',
        );
        assertError(expect, 413, 'payload_too_large');
        assert.ok(!expect.raw.includes('100 Continue'), 'no 100 Continue for a body that will be refused');
    });

    test('a 2 MiB JSON body through fetch is 413', async () => {
        const big = JSON.stringify({ email: 'a@example.org', username: 'big', password: PASSWORD, display_name: 'x'.repeat(2 * 1024 * 1024) });
        const res = await srv.request('POST', '/api/v1/auth/register', { body: big, headers: { 'content-type': 'application/json' } });
        assertError(res, 413, 'payload_too_large');
    });

    test('a body just under the limit is read and judged on its content', async () => {
        const body = JSON.stringify({ login: 'x'.repeat(1000 * 1000), password: 'y' });
        const res = await post('/api/v1/auth/login', body);
        const err = assertError(res, 400, 'validation_failed');
        assert.ok(err.fields.login, 'an over-long login is a field error');
    });

    // ---- headers ------------------------------------------------------------------------

    test('~20 KB of headers is 431 in the error shape', async () => {
        const res = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\nConnection: close\r\n\r\n`);
        assertError(res, 431, 'headers_too_large');
        assert.match(res.headers.traceparent || '', TRACEPARENT);
    });

    test('~20 KB of headers spread over many lines is 431', async () => {
        let h = '';
        for (let i = 0; i < 200; i++) h += `X-H${i}: ${'b'.repeat(100)}\r\n`;
        const res = await raw(`GET /api/v1/me HTTP/1.1\r\nHost: x\r\n${h}Connection: close\r\n\r\n`);
        assertError(res, 431, 'headers_too_large');
    });

    test('many headers within the limit are served; hundreds of tiny ones are 431 in the error shape', async () => {
        let h = '';
        for (let i = 0; i < 100; i++) h += `X-H${i}: ${'c'.repeat(100)}\r\n`;
        const ok = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\n${h}Connection: close\r\n\r\n`);
        assert.equal(ok.status, 200, ok.raw.slice(0, 300));
        let tiny = '';
        for (let i = 0; i < 400; i++) tiny += `X-${i}: ${'d'.repeat(20)}\r\n`;
        assert.ok(tiny.length < 16 * 1024, 'fewer bytes than the limit');
        const res = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\n${tiny}Connection: close\r\n\r\n`);
        assertError(res, 431, 'headers_too_large');
    });

    test('headers far beyond the limit (~60 KB) get a 4xx', async () => {
        const res = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(60 * 1024)}\r\nConnection: close\r\n\r\n`);
        // libmicrohttpd answers this itself (HTML 431) or just closes; a status, if any, is a 4xx.
        if (res.status !== 0) assert.ok(res.status >= 400 && res.status < 500, `got ${res.status}`);
        else assert.ok(res.error === null || /ECONNRESET|EPIPE/.test(res.error), `connection error ${res.error}`);
    });

    test('a long URL is a 404 or 414, not a crash', async () => {
        const res = await srv.get(`/api/v1/users/${'x'.repeat(8000)}`);
        assert.ok([404, 414, 431].includes(res.status), `got ${res.status}`);
        if (res.status === 404) assertError(res, 404, 'not_found');
    });

    test('garbage instead of HTTP gets a 400 or a closed connection', async () => {
        for (const junk of ['\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n', 'HELLO\r\n\r\n', 'GET /healthz\r\n\r\n']) {
            const res = await raw(junk, { timeoutMs: 5000 });
            if (res.status !== 0) assert.ok(res.status >= 400 && res.status < 500, `${JSON.stringify(junk)} -> ${res.status}`);
        }
        // An HTTP version from the future is the one case where 505 is the right answer.
        const v = await raw('GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n', { timeoutMs: 5000 });
        assert.ok(v.status === 0 || v.status === 400 || v.status === 505, `HTTP/9.9 -> ${v.status}`);
    });

    // ---- routes and methods -------------------------------------------------------------

    test('unknown routes are 404 in the error shape', async () => {
        for (const p of ['/', '/nope', '/api/v1/nope', '/api/v1/users', '/api/v1/users/', '/api/v1/me/extra', '/api/v2/me', '/healthz/x']) {
            assertError(await srv.get(p), 404, 'not_found');
        }
        assertError(await srv.request('DELETE', '/api/v1/nothing/here'), 404, 'not_found');
    });

    test('wrong methods are 405 with Allow', async () => {
        const cases = [
            ['DELETE', '/healthz', ['GET']],
            ['POST', '/metrics', ['GET']],
            ['GET', '/api/v1/auth/login', ['POST']],
            ['PUT', '/api/v1/auth/register', ['POST']],
            ['DELETE', '/api/v1/me', ['GET', 'PATCH']],
            ['POST', '/api/v1/users/01890a5d-ac96-774b-bcce-b302099a8057', ['GET']],
            ['GET', '/api/v1/users/01890a5d-ac96-774b-bcce-b302099a8057/role', ['PATCH']],
        ];
        for (const [method, p, allowed] of cases) {
            const res = await srv.request(method, p);
            assertError(res, 405, 'method_not_allowed');
            const allow = (res.headers.get('allow') || '').split(',').map((s) => s.trim());
            for (const m of allowed) assert.ok(allow.includes(m), `${method} ${p}: Allow "${allow}" lacks ${m}`);
            assert.ok(!allow.includes(method), `${method} ${p}: Allow must not list ${method}`);
        }
    });

    test('HEAD on a GET route answers without a body', async () => {
        const res = await srv.request('HEAD', '/healthz');
        assert.equal(res.status, 200);
        assert.equal(res.text, '');
    });

    test('an unknown method is refused with a 4xx', async () => {
        const res = await raw('BREW /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
        assert.ok(res.status >= 400 && res.status < 500, `got ${res.status}`);
    });

    test('keep-alive serves several requests on one connection', async () => {
        const one = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
        const res = await raw([one, one, `GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`], { untilClose: true });
        assert.equal(res.status, 200);
        assert.equal((res.raw.match(/HTTP\/1\.1 200 /g) || []).length, 3, res.raw);
        assert.match(res.raw, /"status":"ready"/);
    });

    // ---- tracing ------------------------------------------------------------------------

    test('every response has a traceparent and an X-Request-Id', async () => {
        const responses = [
            await srv.get('/healthz'),
            await srv.get('/nope'),
            await srv.request('DELETE', '/healthz'),
            await post('/api/v1/auth/login', '{'),
            await srv.get('/api/v1/me'),
            await srv.get('/metrics'),
        ];
        const ids = new Set();
        const traces = new Set();
        for (const r of responses) {
            const tp = r.headers.get('traceparent');
            assert.match(tp || '', TRACEPARENT, `traceparent on a ${r.status}`);
            const rid = r.headers.get('x-request-id');
            assert.ok(rid && rid.length >= 8, `X-Request-Id on a ${r.status}`);
            ids.add(rid);
            traces.add(TRACEPARENT.exec(tp)[1]);
        }
        assert.equal(ids.size, responses.length, 'request ids are unique');
        assert.equal(traces.size, responses.length, 'new traces are unique');
    });

    test('a valid incoming traceparent keeps its trace-id, with a new span', async () => {
        const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
        const parent = '00f067aa0ba902b7';
        const res = await srv.get('/healthz', { headers: { traceparent: `00-${trace}-${parent}-01` } });
        const m = TRACEPARENT.exec(res.headers.get('traceparent') || '');
        assert.ok(m, res.headers.get('traceparent'));
        assert.equal(m[1], trace);
        assert.notEqual(m[2], parent, 'the server answers with its own span id');
        assert.equal(m[3], '01', 'the sampled flag is kept');
        // Flags are carried as given.
        const unsampled = await srv.get('/healthz', { headers: { traceparent: `00-${trace}-${parent}-00` } });
        assert.equal(TRACEPARENT.exec(unsampled.headers.get('traceparent'))[3], '00');
        // A future version is read by its version-00 prefix.
        const future = await srv.get('/healthz', { headers: { traceparent: `01-${trace}-${parent}-01-extra` } });
        assert.equal(TRACEPARENT.exec(future.headers.get('traceparent'))[1], trace);
        // And on errors too.
        const err = await srv.get('/api/v1/me', { headers: { traceparent: `00-${trace}-${parent}-01` } });
        assert.equal(TRACEPARENT.exec(err.headers.get('traceparent'))[1], trace);
    });

    test('an invalid traceparent is replaced by a new valid one', async () => {
        const bad = [
            'garbage',
            '00-00000000000000000000000000000000-00f067aa0ba902b7-01', // all-zero trace-id
            '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', // all-zero parent-id
            '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01', // upper case
            'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', // forbidden version
            '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01', // short trace-id
            '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra', // v00 with a tail
            '00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01',
            '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g',
            '',
        ];
        for (const tp of bad) {
            const res = await srv.get('/healthz', { headers: { traceparent: tp } });
            assert.equal(res.status, 200);
            const out = res.headers.get('traceparent') || '';
            const m = TRACEPARENT.exec(out);
            assert.ok(m, `${JSON.stringify(tp)} -> ${out}`);
            assert.ok(!/^0+$/.test(m[1]) && !/^0+$/.test(m[2]), 'ids are non-zero');
            assert.ok(!tp.toLowerCase().includes(m[1]), `${JSON.stringify(tp)}: the bad trace-id was not continued`);
        }
    });

    test('a sane X-Request-Id is echoed, a bad one replaced', async () => {
        const res = await srv.get('/healthz', { headers: { 'x-request-id': 'client-req_42.a' } });
        assert.equal(res.headers.get('x-request-id'), 'client-req_42.a');
        const evil = await srv.get('/healthz', { headers: { 'x-request-id': 'a"b\\c{"x":1}' } });
        assert.notEqual(evil.headers.get('x-request-id'), 'a"b\\c{"x":1}');
        assert.match(evil.headers.get('x-request-id') || '', /^[A-Za-z0-9._-]+$/);
        const long = await srv.get('/healthz', { headers: { 'x-request-id': 'r'.repeat(500) } });
        assert.ok((long.headers.get('x-request-id') || '').length < 200, 'an over-long id is not echoed');
    });

    test('the access log names each request with its ids', async () => {
        const rid = `probe-${Date.now()}`;
        await srv.get('/api/v1/nope', { headers: { 'x-request-id': rid } });
        // The line is written when the request completes, after the answer.
        let line;
        for (let i = 0; i < 50 && !line; i++) {
            line = srv.logLines().find((l) => l.msg === 'access' && l.request_id === rid);
            if (!line) await new Promise((r) => setTimeout(r, 20));
        }
        assert.ok(line, 'an access line for the request');
        assert.equal(line.status, 404);
        assert.equal(line.method, 'GET');
        assert.match(line.trace_id || '', /^[0-9a-f]{32}$/);
    });

    // ---- platform routes ------------------------------------------------------------------

    test('/healthz and /readyz are ok', async () => {
        const h = await srv.get('/healthz');
        assert.equal(h.status, 200);
        assert.deepEqual(h.body, { status: 'ok' });
        const r = await srv.get('/readyz');
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.status, 'ready');
        assert.equal(r.body.checks['identity.sql'], 'ok', r.text);
    });

    test('/metrics counts requests per route and status, with a latency histogram', async () => {
        for (let i = 0; i < 3; i++) await srv.get('/api/v1/users/01890a5d-ac96-774b-bcce-b302099a8057');
        await srv.get('/api/v1/openapi.json');
        // A request is counted when the server has finished sending it, which may be a moment after the
        // client has read the whole response (the OpenAPI document is large): read until it is in.
        let res, text;
        for (let i = 0; i < 100; i++) {
            res = await srv.get('/metrics');
            text = res.text;
            if (/^pulse_http_requests_total\{method="GET",route="\/api\/v1\/openapi.json",status="200"\} \d+$/m.test(text)) break;
            await new Promise((r) => setTimeout(r, 20));
        }
        assert.equal(res.status, 200);
        assert.match(res.headers.get('content-type') || '', /^text\/plain/);
        assert.match(text, /^# TYPE pulse_http_requests_total counter$/m);
        assert.match(text, /^# TYPE pulse_http_request_duration_seconds histogram$/m);
        const count = (labels) => {
            const re = new RegExp(`^pulse_http_requests_total\\{${labels}\\} (\\d+)$`, 'm');
            const m = re.exec(text);
            return m ? Number(m[1]) : 0;
        };
        assert.ok(count('method="GET",route="/api/v1/users/\\{id\\}",status="404"') >= 3, text.slice(0, 3000));
        assert.ok(count('method="GET",route="/api/v1/openapi.json",status="200"') >= 1);
        assert.ok(count('method="GET",route="/healthz",status="200"') >= 1);
        // Every series of the histogram has monotone buckets ending in +Inf == _count.
        const series = new Map();
        for (const m of text.matchAll(/^pulse_http_request_duration_seconds_bucket\{(.*),le="([^"]+)"\} (\d+)$/gm)) {
            if (!series.has(m[1])) series.set(m[1], []);
            series.get(m[1]).push([m[2], Number(m[3])]);
        }
        assert.ok(series.size >= 3, 'a histogram per route and status');
        for (const [labels, buckets] of series) {
            for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i][1] >= buckets[i - 1][1], `monotone: ${labels}`);
            assert.equal(buckets.at(-1)[0], '+Inf');
            const c = new RegExp(`^pulse_http_request_duration_seconds_count\\{${labels.replace(/[{}()[\]\\.^$|?*+/]/g, '\\$&')}\\} (\\d+)$`, 'm').exec(text);
            assert.ok(c, `_count for ${labels}`);
            assert.equal(Number(c[1]), buckets.at(-1)[1], `+Inf bucket equals _count for ${labels}`);
            assert.match(text, new RegExp(`^pulse_http_request_duration_seconds_sum\\{${labels.replace(/[{}()[\]\\.^$|?*+/]/g, '\\$&')}\\} [0-9.e+-]+$`, 'm'));
        }
        // Unmatched requests are counted, but not one series per URL.
        await srv.get(`/random/${Date.now()}`);
        const again = (await srv.get('/metrics')).text;
        assert.ok(!again.includes('/random/'), 'unknown paths do not become label values');
        // No request so far ended in a 5xx.
        assert.doesNotMatch(again, /status="5\d\d"/);
    });

    test('the OpenAPI document lists every identity path and method', async () => {
        const res = await srv.get('/api/v1/openapi.json');
        assert.equal(res.status, 200);
        const doc = res.body;
        assert.match(doc.openapi, /^3\./);
        const want = {
            '/api/v1/auth/register': ['post'],
            '/api/v1/auth/login': ['post'],
            '/api/v1/auth/logout': ['post'],
            '/api/v1/me': ['get', 'patch'],
            '/api/v1/users/{id}': ['get'],
            '/api/v1/users/{id}/role': ['patch'],
            '/healthz': ['get'],
            '/readyz': ['get'],
            '/metrics': ['get'],
        };
        for (const [p, methods] of Object.entries(want)) {
            assert.ok(doc.paths[p], `paths has ${p}`);
            for (const m of methods) assert.ok(doc.paths[p][m], `${m.toUpperCase()} ${p}`);
        }
        assert.ok(doc.paths['/api/v1/me'].get.security, 'authenticated routes declare security');
        assert.equal(doc.paths['/api/v1/auth/login'].post.security, undefined, 'login needs no token');
    });

    test('shuts down cleanly after all of the above', async () => {
        await srv.stopClean();
    });
});
