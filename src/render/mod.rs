//! From a snapshot to the bytes of `/metrics`: which series a snapshot becomes (`series`),
//! written as text (`text`), the usage part cached while its reports stay the same (`cache`),
//! and served in the format and encoding each scraper asks for (`exposition`); and the same
//! snapshot as an HTML page for people (`page`).

pub(crate) mod cache;
pub mod exposition;
pub mod page;
mod series;
mod text;

pub use series::{RenderOptions, render_snapshot, snapshot_family_names};
