"""The Dagster layer: thin wrappers that turn the core's results into assets, checks and metadata."""
