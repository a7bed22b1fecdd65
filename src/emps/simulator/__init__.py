"""The seeded fleet simulator: history backfill straight into the database, live drop files."""
