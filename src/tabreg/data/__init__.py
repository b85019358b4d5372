"""The data layer: ingest (source, archive, identity), validation, split, synthetic data."""
