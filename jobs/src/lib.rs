//! Data jobs of the lake house, with no knowledge of the engine: the event model, the
//! synthetic generator, the raw zone (Firehose's layout), and — as they land — compaction,
//! crawling, cleaning and the DataBrew recipe interpreter.

pub mod catalog;
pub mod clean;
pub mod compact;
pub mod crawl;
pub mod event;
pub mod generate;
pub mod rawzone;
