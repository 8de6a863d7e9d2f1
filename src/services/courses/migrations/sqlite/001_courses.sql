-- courses: catalog, lessons, learning paths, enrollments with progress, quizzes,
-- the purchase saga's seat reservations and a read model of identity's users.
-- Booleans are INTEGER 0/1; times are RFC 3339 UTC text; ids are UUIDv7 text
-- (time-ordered, so ORDER BY id is creation order and a cursor).
CREATE TABLE courses (
    id           TEXT PRIMARY KEY,
    teacher_id   TEXT NOT NULL,
    title        TEXT NOT NULL,
    description  TEXT NOT NULL,
    tags         TEXT NOT NULL,                 -- JSON array, as given (also in course_tags)
    level        TEXT NOT NULL CHECK (level IN ('beginner', 'intermediate', 'advanced')),
    premium      INTEGER NOT NULL,
    price_cents  INTEGER,                       -- premium only
    currency     TEXT,                          -- premium only
    capacity     INTEGER,                       -- NULL: unlimited
    seats_used   INTEGER NOT NULL DEFAULT 0,    -- enrollments + live reservations
    published    INTEGER NOT NULL,
    fail_access_grant INTEGER NOT NULL DEFAULT 0, -- fault injection (service.courses.fault_injection)
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    CHECK (capacity IS NULL OR seats_used <= capacity)
);
CREATE INDEX courses_teacher ON courses (teacher_id, id);

CREATE TABLE course_tags (
    course_id TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    tag       TEXT NOT NULL,
    PRIMARY KEY (course_id, tag)
);
CREATE INDEX course_tags_tag ON course_tags (tag, course_id);

CREATE TABLE lessons (
    id         TEXT PRIMARY KEY,
    course_id  TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,              -- 1..n, dense
    title      TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX lessons_course ON lessons (course_id, position);

CREATE TABLE enrollments (
    id           TEXT PRIMARY KEY,
    course_id    TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    via          TEXT NOT NULL CHECK (via IN ('free', 'purchase')),
    order_id     TEXT,
    enrolled_at  TEXT NOT NULL,
    completed_at TEXT,                          -- set once, when every lesson was completed
    UNIQUE (course_id, user_id)
);
CREATE INDEX enrollments_user ON enrollments (user_id, id);

CREATE TABLE lesson_completions (
    lesson_id    TEXT NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    course_id    TEXT NOT NULL,
    completed_at TEXT NOT NULL,
    PRIMARY KEY (lesson_id, user_id)
);
CREATE INDEX lesson_completions_user ON lesson_completions (course_id, user_id);

CREATE TABLE paths (
    id          TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE path_courses (
    path_id   TEXT NOT NULL REFERENCES paths (id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    course_id TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    PRIMARY KEY (path_id, position)
);

CREATE TABLE quizzes (
    id           TEXT PRIMARY KEY,
    course_id    TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    pass_mark    INTEGER NOT NULL,
    max_attempts INTEGER,                       -- NULL: service.courses.quiz_max_attempts
    questions    TEXT NOT NULL,                 -- JSON, answers included (never sent to students)
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX quizzes_course ON quizzes (course_id, id);

CREATE TABLE quiz_submissions (
    id         TEXT PRIMARY KEY,
    quiz_id    TEXT NOT NULL REFERENCES quizzes (id) ON DELETE CASCADE,
    course_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    score      INTEGER NOT NULL,
    passed     INTEGER NOT NULL,
    answers    TEXT NOT NULL,
    results    TEXT NOT NULL,                   -- JSON array of booleans, per question
    created_at TEXT NOT NULL,
    UNIQUE (quiz_id, user_id, attempt)
);

-- The purchase saga's participant: one row per order, whatever came of it.
-- reply_reserve is what the reserve command was answered (re-sent on redelivery).
CREATE TABLE seat_reservations (
    order_id      TEXT PRIMARY KEY,
    course_id     TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('reserved', 'released', 'granted', 'rejected')),
    reason        TEXT,                         -- rejected: its reason; released: "tombstone" when no reserve came first
    holds_seat    INTEGER NOT NULL,             -- 1 while reserved (counted in courses.seats_used)
    enrollment_id TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

-- identity's users as its events tell them (pl.identity.*): names of teachers.
CREATE TABLE course_users (
    user_id      TEXT PRIMARY KEY,
    username     TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

-- Demo seeding waits for the demo teacher to arrive through identity's events.
-- state: none | pending | done. The row is also the lock that orders the demo
-- hook and the users consumer.
CREATE TABLE courses_demo (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL
);
INSERT INTO courses_demo (id, state) VALUES (1, 'none');
