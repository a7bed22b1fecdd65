-- Ingest ledger additions.
-- stored_name: the claimed file's name under landing/processing/, so a run that restarts after
-- a crash can match a file it finds there to its ledger row.
-- duplicate_of: the ledger row whose identical content was loaded first.
alter table raw.ingest_files add column if not exists stored_name text;
alter table raw.ingest_files add column if not exists duplicate_of bigint
    references raw.ingest_files (id);
create unique index if not exists ingest_files_stored_name_key
    on raw.ingest_files (stored_name);
-- One loaded copy per content hash: a second run racing on the same bytes fails its commit
-- instead of loading the file twice.
create unique index if not exists ingest_files_sha256_loaded_key
    on raw.ingest_files (sha256) where status in ('loaded', 'partial');
create index if not exists ingest_files_claimed_idx
    on raw.ingest_files (claimed_at) where status = 'claimed';
