"""emrsim-migrate: the EMRsim-chat SQLite database to PostgreSQL, as Dagster assets."""

from emrsim_assets.memory import bound_allocators

# Before Polars or any batch is loaded: the allocators decide how much memory a run keeps.
bound_allocators()
