-- agentflow schema, version 1 (later versions add and change indexes and columns: see _sqlite_schema.migrate). Times are epoch seconds (REAL); JSON values are TEXT.
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS instances (
    iid INTEGER PRIMARY KEY,
    workflow TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT,
    output TEXT,
    error_name TEXT,
    error_message TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ready_at REAL NOT NULL,          -- when it last became runnable: fairness order
    woken INTEGER NOT NULL DEFAULT 0, -- has run before: woken instances go before new ones
    wake_at REAL,                    -- waiting: when a timer is due
    wait_types TEXT,                 -- waiting: JSON list of event types that wake it
    paused_at REAL,                  -- paused: since when (resume shifts pending timers)
    owner TEXT,                      -- '<worker>#<run>' while a worker runs it
    lease_until REAL,
    runs INTEGER NOT NULL DEFAULT 0,
    tenant TEXT,                     -- set for instances created through dispatch
    -- Scheduling key, one index for both queues: a waiting instance's wake time; a queued
    -- one's queue position, where woken instances get a 60 second head start over new ones
    -- (they go first, yet a new instance that waited longer than that is not starved).
    sched REAL GENERATED ALWAYS AS (
        CASE WHEN status = 'waiting' THEN wake_at ELSE ready_at - woken * 60.0 END
    ) VIRTUAL,
    UNIQUE (workflow, id)
);
CREATE INDEX IF NOT EXISTS instances_by_id ON instances (id);
CREATE INDEX IF NOT EXISTS instances_schedule ON instances (workflow, status, sched, tenant);

CREATE TABLE IF NOT EXISTS steps (
    seq INTEGER PRIMARY KEY,
    iid INTEGER NOT NULL,
    name TEXT NOT NULL,
    count INTEGER NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    error_name TEXT,
    error_message TEXT,
    error_detail TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    wake_at REAL,
    event_type TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    UNIQUE (iid, name, count)
);

CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY,
    iid INTEGER NOT NULL,
    type TEXT NOT NULL,
    payload TEXT,
    at REAL NOT NULL,
    consumed_by INTEGER              -- steps.seq of the wait that took it
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (iid, type, seq) WHERE consumed_by IS NULL;

CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY,
    iid INTEGER NOT NULL,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    step TEXT,
    count INTEGER,
    attempt INTEGER,
    since REAL,                      -- compact 'step.completed': also stands for its start
    data TEXT
);
CREATE INDEX IF NOT EXISTS history_by_instance ON history (iid, seq);

-- Tenant plan code, content-addressed: (tenant, name) -> versions.
CREATE TABLE IF NOT EXISTS code (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (tenant, name, sha256)
);
CREATE INDEX IF NOT EXISTS code_by_sha ON code (tenant, sha256);
CREATE INDEX IF NOT EXISTS code_versions ON code (tenant, name, version);
