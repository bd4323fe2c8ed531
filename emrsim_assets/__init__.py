"""emrsim-migrate: move EMRsim-chat from SQLite to PostgreSQL as Dagster assets, with proof."""
