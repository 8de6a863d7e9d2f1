import { startServer } from './harness.mjs';
const srv = await startServer({ args: ['--services', 'identity,commerce,testkit', '--demo'], env: { PULSE_SERVICE_COMMERCE_STEP_TIMEOUT: '1s', PULSE_SERVICE_COMMERCE_RETRY_BACKOFF: '20ms' } });
try {
  const admin = (await srv.post('/api/v1/auth/login', { login: 'admin', password: 'campus-demo-1' })).body.token;
  const { token, user } = await srv.session();
  const course = '0190aaaa-0000-7000-8000-000000000001';
  const emit = (type, subject, data) => srv.post('/api/v1/testkit/events', { type, subject, data });
  console.log((await emit('pl.courses.course_created.v1', course, { course_id: course, teacher_id: user.id, title: 'Rust <b>&</b> C', description: '', tags: [], level: 'beginner', premium: true, price_cents: parseInt(process.argv[2] || '4900'), currency: 'EUR', capacity: 1, published: true })).status);
  let r;
  for (let i = 0; i < 50; i++) {
    r = await srv.post(`/api/v1/courses/${course}/purchase`, undefined, { token, headers: { 'Idempotency-Key': 'k1' } });
    if (r.status !== 404) break;
    await new Promise((s) => setTimeout(s, 50));
  }
  console.log(r.status, r.body);
  const oid = r.body.id;
  const reply = async (type, extra = {}) => emit(type, oid, { order_id: oid, course_id: course, user_id: user.id, ...extra });
  const wait = async (pred) => { for (let i = 0; i < 100; i++) { const o = (await srv.get(`/api/v1/orders/${oid}`, { token })).body; if (pred(o)) return o; await new Promise((s) => setTimeout(s, 50)); } throw new Error('timeout'); };
  await reply('pl.courses.seat_reserved.v1');
  let o = await wait((o) => o.step !== 'reserving_seat' && o.step !== 'capturing_payment');
  console.log(o.step);
  if (o.step === 'granting_access') await reply('pl.courses.access_granted.v1', { enrollment_id: 'e1' });
  if (o.step === 'releasing_seat') await reply('pl.courses.seat_released.v1');
  o = await wait((o) => ['completed', 'failed', 'needs_attention'].includes(o.state));
  console.log(JSON.stringify(o, null, 1));
  if (o.invoice_id) { const inv = await srv.get(`/api/v1/invoices/${o.invoice_id}?format=html`, { token }); console.log(inv.status, inv.text.slice(0, 2000)); }
  console.log((await srv.get(`/api/v1/admin/payments/ledger?order_id=${oid}`, { token: admin })).body);
  const m = await srv.get('/metrics'); console.log(m.text.split('\n').filter((l) => l.includes('commerce')).join('\n'));
} finally { await srv.stop(); console.log(srv.stderr.split('\n').filter(l => /warn|error|ERROR|Sanitizer/.test(l)).slice(0, 20).join('\n')); }
