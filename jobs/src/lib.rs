//! Data jobs (ingest, compact, crawl, clean, recipes) with no knowledge of the engine.
