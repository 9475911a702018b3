//! Ferry's end-to-end tests, built as a single binary so the workspace links
//! one test executable instead of one per file.
//!
//! Shared machinery (tree snapshots and comparison, random tree generation,
//! the call into the agent) lives in the `ferry-tests` library in `src/`.

// Helpers shared by the modules below: proptest configuration, scratch
// directories, a guard against writes escaping the test trees.
mod util;

// Tests of the tree comparer and the generators themselves. They need no
// agent, so they say whether a failure elsewhere is Ferry's or the harness's.
mod tree_model;

// Property tests: random trees and random edits, synced by the agent and
// compared with the source. Also sparse files, dry runs, --checksum and
// delta efficiency.
mod sync_props;

// The Kubernetes deployment: the Helm chart renders with each example and validates strictly
// against the official schemas (deploy/check-k8s).
mod deploy;
