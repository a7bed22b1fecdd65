-- Fleet packs imported into this install, one row per import. `emps up --fleet PACK` skips a
-- pack whose files are unchanged since an import (same digest); an install that holds an
-- imported fleet runs it without the simulator; the bootstrap builds the features of an import
-- whose readings no build has seen yet (features_built_at null).
create table if not exists raw.fleet_imports (
    id bigserial primary key,
    pack text not null,
    digest text not null,
    equipment integer not null,
    readings_loaded bigint not null,
    problems integer not null,
    summary jsonb not null,
    imported_at timestamptz not null default now(),
    features_built_at timestamptz
);
create index if not exists fleet_imports_digest_idx on raw.fleet_imports (digest);
