//! A sync must leave the destination identical to the source, by the
//! comparer's strict standard, whatever the tree and whatever changed since
//! the last sync.

use std::fs;
use std::os::unix::fs::FileExt;

use ferry_tests::driver::{self, Options};
use ferry_tests::gen::{self, Content, Mtime, SparseWrite};
use ferry_tests::tree;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

use crate::util::{self, OutsideGuard, Scratch};

proptest! {
    #![proptest_config(util::config(24))]

    /// Fresh copy, then an incremental sync with deletion after random
    /// edits, then a sync that must find nothing to do.
    #[test]
    fn sync_reproduces_random_trees((spec, mutations) in gen::tree_and_mutations()) {
        let guard = OutsideGuard::new();
        let s = Scratch::new()?;
        gen::materialize(&s.src, &spec)?;

        let first = driver::sync(&s.src, &s.dst, &Options::default()).map_err(TestCaseError::fail)?;
        util::same(&s.src, &s.dst, "after the initial sync")?;
        prop_assert_eq!(first.files_deleted, 0, "nothing to delete in an empty destination");
        guard.check()?;

        gen::apply(&s.src, &mutations)?;
        let delete = Options { delete: true, ..Options::default() };
        driver::sync(&s.src, &s.dst, &delete).map_err(TestCaseError::fail)?;
        util::same(&s.src, &s.dst, "after mutations and a sync with delete")?;
        guard.check()?;

        let idle = driver::sync(&s.src, &s.dst, &delete).map_err(TestCaseError::fail)?;
        util::same(&s.src, &s.dst, "after a sync with nothing to do")?;
        prop_assert_eq!(
            (
                idle.files_new,
                idle.files_changed,
                idle.files_metadata,
                idle.files_deleted,
                idle.files_failed,
                idle.literal_bytes,
            ),
            (0, 0, 0, 0, 0, 0),
            "a sync with nothing to do did work: {:?}", idle
        );
        guard.check()?;
    }
}

/// `len` bytes that are all hole except for a few bytes at the start, the
/// middle and the end.
fn sparse(len: u64) -> Content {
    let write = |offset, seed| SparseWrite { offset, len: 100, seed };
    Content::Sparse { len, writes: vec![write(0, 1), write(len / 2, 2), write(len - 100, 3)] }
}

/// Whether the filesystem under `s.src` keeps holes at all; if not, the
/// sparse tests have nothing to check.
fn holes_supported(s: &Scratch) -> bool {
    let probe = s.src.join(".hole-probe");
    let ok = sparse(8 << 20).write_to(&probe).is_ok() && tree::allocated_bytes(&probe) < 1 << 20;
    fs::remove_file(&probe).expect("remove probe");
    ok
}

const SPARSE_LEN: u64 = 32 << 20;

/// Well under the file's size, with room for the filesystem's metadata
/// blocks and for a copier that writes whole blocks around the data.
const SPARSE_MAX_ALLOCATED: u64 = 1 << 20;

#[test]
fn sparse_file_stays_sparse() {
    let s = Scratch::new().expect("scratch");
    if !holes_supported(&s) {
        eprintln!("skipping: {} does not keep holes", s.src.display());
        return;
    }
    sparse(SPARSE_LEN).write_to(&s.src.join("sparse")).expect("write");

    driver::run_sync(&s.src, &s.dst, false);

    tree::assert_same(&s.src, &s.dst);
    let dst = s.dst.join("sparse");
    assert_eq!(fs::metadata(&dst).expect("stat").len(), SPARSE_LEN);
    let allocated = tree::allocated_bytes(&dst);
    assert!(
        allocated < SPARSE_MAX_ALLOCATED,
        "{allocated} bytes allocated for a {SPARSE_LEN}-byte file that is nearly all hole"
    );
}

#[test]
fn sparse_file_stays_sparse_after_delta_update() {
    let s = Scratch::new().expect("scratch");
    if !holes_supported(&s) {
        eprintln!("skipping: {} does not keep holes", s.src.display());
        return;
    }
    let src = s.src.join("sparse");
    sparse(SPARSE_LEN).write_to(&src).expect("write");
    driver::run_sync(&s.src, &s.dst, false);

    // A small edit in the middle makes the next sync rebuild the file from
    // its old copy, mostly from all-zero blocks.
    let file = fs::OpenOptions::new().write(true).open(&src).expect("open");
    file.write_all_at(b"changed", SPARSE_LEN / 4).expect("write");
    drop(file);
    driver::run_sync(&s.src, &s.dst, false);

    tree::assert_same(&s.src, &s.dst);
    let allocated = tree::allocated_bytes(&s.dst.join("sparse"));
    assert!(allocated < SPARSE_MAX_ALLOCATED, "{allocated} bytes allocated after the update");
}

#[test]
fn insert_in_the_middle_is_sent_as_a_small_delta() {
    let s = Scratch::new().expect("scratch");
    let len: u64 = 2 << 20;
    let path = s.src.join("big");
    Content::Random { seed: 42, len }.write_to(&path).expect("write");
    driver::run_sync(&s.src, &s.dst, false);

    let mut data = fs::read(&path).expect("read");
    let at = data.len() / 2 + 7;
    data.splice(at..at, *b"inserted, shifting everything after it by an odd amount");
    fs::write(&path, &data).expect("write");
    let stats = driver::run_sync(&s.src, &s.dst, false);

    tree::assert_same(&s.src, &s.dst);
    assert_eq!(stats.files_changed, 1, "{stats:?}");
    assert!(stats.literal_bytes < len / 8, "too much literal data: {stats:?}");
    assert!(stats.matched_bytes > len / 2, "too little reused: {stats:?}");
}

#[test]
fn checksum_mode_finds_edits_that_keep_size_and_mtime() {
    let s = Scratch::new().expect("scratch");
    let path = s.src.join("f");
    Content::Random { seed: 7, len: 10_000 }.write_to(&path).expect("write");
    let mtime = Mtime { sec: 1_500_000_000, nsec: 5 };
    gen::set_mtime(&path, mtime).expect("touch");
    driver::run_sync(&s.src, &s.dst, false);

    let mut data = fs::read(&path).expect("read");
    data[5000] ^= 0xff;
    fs::write(&path, &data).expect("write");
    gen::set_mtime(&path, mtime).expect("touch");

    let opts = Options { checksum: true, ..Options::default() };
    let stats = driver::sync(&s.src, &s.dst, &opts).expect("sync");
    tree::assert_same(&s.src, &s.dst);
    assert_eq!(stats.files_changed, 1, "{stats:?}");
}

#[test]
fn dry_run_changes_nothing() {
    let s = Scratch::new().expect("scratch");
    let spec = gen::tree_spec()
        .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
        .expect("strategy")
        .current();
    gen::materialize(&s.src, &spec).expect("materialize");
    fs::write(s.dst.join("extra"), b"not in the source").expect("write");
    let src_before = tree::snapshot(&s.src).expect("snapshot");
    let dst_before = tree::snapshot(&s.dst).expect("snapshot");

    let opts = Options { dry_run: true, delete: true, ..Options::default() };
    driver::sync(&s.src, &s.dst, &opts).expect("sync");

    let src_diffs = tree::diff_snapshots(&src_before, &tree::snapshot(&s.src).expect("snapshot"));
    assert!(src_diffs.is_empty(), "a dry run changed the source: {src_diffs:#?}");
    let dst_diffs = tree::diff_snapshots(&dst_before, &tree::snapshot(&s.dst).expect("snapshot"));
    assert!(dst_diffs.is_empty(), "a dry run changed the destination: {dst_diffs:#?}");
}

#[test]
fn extra_files_are_kept_without_delete_and_removed_with_it() {
    let s = Scratch::new().expect("scratch");
    fs::write(s.src.join("kept"), b"source").expect("write");
    fs::create_dir_all(s.dst.join("extra-dir/sub")).expect("mkdir");
    fs::write(s.dst.join("extra-dir/sub/file"), b"x").expect("write");
    fs::write(s.dst.join("extra"), b"x").expect("write");

    driver::run_sync(&s.src, &s.dst, false);
    assert!(s.dst.join("extra").exists() && s.dst.join("extra-dir/sub/file").exists());
    assert_eq!(fs::read(s.dst.join("kept")).expect("read"), b"source");

    let stats = driver::run_sync(&s.src, &s.dst, true);
    tree::assert_same(&s.src, &s.dst);
    assert!(stats.files_deleted > 0, "{stats:?}");
}
