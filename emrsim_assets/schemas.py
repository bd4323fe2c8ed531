"""The PostgreSQL schemas the migration writes, and the names every module agrees on."""

import psycopg

STAGING = "emrsim_staging"  # where tables load and are proven, before cutover
LIVE = "emrsim"  # what the app reads after cutover
MIGRATION = "emrsim_migration"  # the migration's own: ledgers, proofs, quarantine, legacy_id()
UNPARTITIONED = ""  # the ledgers' partition key for a whole-table load

Conn = psycopg.Connection[tuple[object, ...]]
