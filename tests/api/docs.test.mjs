// The configuration reference is generated from the binary's key table;
// this keeps docs/CONFIG.md from drifting when a key is added or changed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = process.env.PULSE_TEST_BIN ?? path.join(root, 'build/asan/pulse');

test('docs/CONFIG.md matches the binary\'s configuration keys', () => {
    const generated = execFileSync('sh', [path.join(root, 'scripts/gen-config-doc.sh'), bin], {
        env: { PATH: process.env.PATH },
        encoding: 'utf8',
    });
    const committed = readFileSync(path.join(root, 'docs/CONFIG.md'), 'utf8');
    assert.equal(committed, generated,
        'docs/CONFIG.md is stale: run sh scripts/gen-config-doc.sh build/pulse > docs/CONFIG.md');
});
