//! The filesystem room: safe access beneath a root, the walk, excludes, the one mmap, and the
//! two sides of a round on local files (the source that reads, the destination that writes).
//!
//! Nothing here knows about the state directory: what the destination remembers between
//! rounds comes through the seam traits [`dest::ResumeJournal`] and [`dest::SignatureStore`].

pub mod dest;
pub mod exclude;
pub mod image;
pub mod mmap;
mod root;
pub mod source;
pub mod tree;
pub mod walk;

pub use root::*;
