"""Reading, validating and writing: shards, ingest, atomic files, the manifest."""
