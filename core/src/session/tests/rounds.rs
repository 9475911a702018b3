//! Whole rounds between honest peers: what is sent, what is planned, what the destination
//! ends up with.

use super::*;

#[test]
fn initial_round_copies_the_tree_exactly() {
    let src = sample_tree(true);
    let pair = round(src.clone(), MemTree::default(), SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);

    let s = pair.dst.stats();
    assert_eq!(s.files_new, 4, "deep.txt, empty, z.txt, big.bin");
    assert_eq!(s.dirs_created, 3, "a, a/b, a/c");
    assert_eq!(s.links_created, 1);
    assert_eq!((s.files_changed, s.files_unchanged, s.files_metadata), (0, 0, 0));
    assert_eq!((s.files_deleted, s.files_failed, s.files_resent), (0, 0, 0));
    assert_eq!(s.literal_bytes, src.total_file_bytes());
    assert_eq!(s.matched_bytes, 0);

    let ss = pair.src.stats();
    assert_eq!(ss.entries_scanned, 8);
    assert_eq!(ss.files_scanned, 4);
    assert_eq!(ss.source_bytes, src.total_file_bytes());
    assert_eq!(ss.literal_bytes, src.total_file_bytes());
    // The text compresses, the noise does not: what went on the wire is less than the data,
    // but not by much.
    assert!(ss.payload_bytes < ss.literal_bytes, "{ss:?}");
    assert!(ss.payload_bytes > BIG as u64, "{ss:?}");

    // The big file went as three literal segments, in order; the empty file as none.
    let lit = Payload::Literal;
    assert_eq!(pair.segments_for("big.bin"), [(0, lit), (1, lit), (2, lit)]);
    assert!(pair.segments_for("a/empty").is_empty());
    // New files are wanted whole: there is nothing to sign.
    assert_eq!(pair.wants("big.bin"), [false]);
    assert_eq!(pair.asked("Signature"), 0);
    assert_eq!(pair.asked("MakeDir"), 3);
    assert_eq!(pair.asked("Finish"), 4);
    assert_eq!(pair.asked("SyncDirs"), 1);
}

#[test]
fn initial_round_is_exact_whatever_order_work_completes_in() {
    let src = sample_tree(true);
    for seed in 1..=3 {
        let opts = SessionOptions { max_inflight_work: 8, ..SessionOptions::default() };
        let mut pair = Pair::new(src.clone(), MemTree::default(), opts).shuffled(seed);
        pair.drive().unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        assert_clean(&pair);
        assert_eq!(pair.dst_fs.tree, src, "seed {seed}");
        assert_eq!(pair.dst.stats().files_new, 4, "seed {seed}");
    }
}

#[test]
fn incremental_round_sends_a_delta() {
    let first = round(sample_tree(true), MemTree::default(), SessionOptions::default());
    let (mut src, dst) = first.into_trees();

    // 1000 bytes inserted in the middle of segment 1 shift everything after them, segment 2
    // included.
    let (m, big) = src.file_mut("big.bin");
    big.splice(12 << 20..12 << 20, noise(1000, 2));
    m.mtime_ns += 10_000_000_000;
    let (m, z) = src.file_mut("z.txt");
    z[2500..2520].copy_from_slice(b"an edit in the midst");
    m.mtime_ns += 10_000_000_000;
    let (m, deep) = src.file_mut("a/b/deep.txt");
    deep[..4].copy_from_slice(b"DEEP");
    m.mtime_ns += 10_000_000_000;

    let pair = round(src.clone(), dst, SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);

    let s = pair.dst.stats();
    assert_eq!(s.files_changed, 3);
    assert_eq!(s.files_unchanged, 2, "a/empty and the symlink");
    assert_eq!((s.files_new, s.dirs_created, s.links_created), (0, 0, 0));
    let big_len = src.bytes("big.bin").len() as u64;
    assert!(s.literal_bytes * 20 < big_len, "literal {} of {big_len}", s.literal_bytes);
    assert!(pair.src.stats().literal_bytes * 20 < big_len, "{:?}", pair.src.stats());
    assert!(s.matched_bytes > big_len - big_len / 20, "{s:?}");
    assert!(s.signature_bytes > 0);

    // Files with a basis of 1 KiB or more are signed and sent as deltas; smaller ones whole.
    let d = Payload::Delta;
    assert_eq!(pair.wants("big.bin"), [true]);
    assert_eq!(pair.segments_for("big.bin"), [(0, d), (1, d), (2, d)]);
    assert_eq!(pair.wants("z.txt"), [true]);
    assert_eq!(pair.wants("a/b/deep.txt"), [false]);
    assert_eq!(pair.segments_for("a/b/deep.txt"), [(0, Payload::Literal)]);
}

#[test]
fn unchanged_round_sends_no_data() {
    let first = round(sample_tree(true), MemTree::default(), SessionOptions::default());
    let (src, dst) = first.into_trees();
    let pair = round(src.clone(), dst, SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);

    let s = pair.dst.stats();
    assert_eq!(s.files_unchanged, 5, "four files and the symlink");
    assert_eq!((s.files_new, s.files_changed, s.files_metadata), (0, 0, 0));
    assert_eq!((s.dirs_created, s.links_created, s.files_deleted), (0, 0, 0));
    assert_eq!((s.literal_bytes, s.matched_bytes, s.payload_bytes), (0, 0, 0));
    assert_eq!(pair.src.stats().literal_bytes, 0);
    assert_eq!(pair.sent_to_dst("Segment"), 0);
    assert!(!pair.log.to_src.iter().any(|m| matches!(m, Message::Want { .. })));
    for kind in ["Signature", "Write", "Finish", "MakeDir", "Link", "Retouch", "Delete"] {
        assert_eq!(pair.asked(kind), 0, "{kind}");
    }
    assert!(pair.log.events.is_empty(), "{:?}", pair.log.events);
}

#[test]
fn metadata_only_change_makes_a_new_inode_without_data() {
    let first = round(sample_tree(false), MemTree::default(), SessionOptions::default());
    let (mut src, dst) = first.into_trees();
    src.file_mut("z.txt").0.mode = 0o600;

    let pair = round(src.clone(), dst, SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    assert_eq!(pair.dst.stats().files_metadata, 1);
    assert!(pair.asked_for("Retouch", "z.txt"));
    assert_eq!(pair.sent_to_dst("Segment"), 0);
    assert_eq!(
        pair.log.events,
        [Itemized { path: path("z.txt"), action: Action::Metadata, kind: "file" }]
    );
}

#[test]
fn type_changes_replace_what_is_in_the_way() {
    let mut src = MemTree::default();
    src.dir("x", meta(0o755, 1))
        .file("x/in.txt", meta(0o644, 2), text(100, "in"))
        .file("y", meta(0o644, 3), text(2000, "y"))
        .symlink("w", "x", meta(0o777, 4));
    let mut dst = MemTree::default();
    dst.file("x", meta(0o644, 5), text(50, "old x"))
        .dir("y", meta(0o755, 6))
        .file("y/old", meta(0o644, 7), text(10, "old"))
        .dir("y/sub", meta(0o755, 8))
        .file("y/sub/older", meta(0o644, 9), text(10, "older"))
        .dir("w", meta(0o755, 10))
        .file("w/q", meta(0o644, 11), text(10, "q"));

    // Without --delete too: what stands in the way of a source entry always goes.
    let pair = round(src.clone(), dst, SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    let s = pair.dst.stats();
    assert_eq!((s.dirs_created, s.files_new, s.links_created), (1, 2, 1));
    // The old contents of y/ and w/ were never planned on their own.
    assert!(!pair.log.dst_work.iter().any(|(k, _)| *k == "Delete"));
    let ev = |p: &str, action, kind| Itemized { path: path(p), action, kind };
    assert_eq!(
        pair.log.events,
        [
            ev("w", Action::Changed, "symlink"),
            ev("x", Action::New, "dir"),
            ev("x/in.txt", Action::New, "file"),
            ev("y", Action::New, "file"),
        ]
    );
}

#[test]
fn delete_removes_extraneous_entries_only_when_asked() {
    let src = sample_tree(false);
    let mut dst = src.clone();
    dst.file("a/b/stray.txt", meta(0o644, 1), text(10, "stray"))
        .dir("olddir", meta(0o755, 2))
        .file("olddir/x", meta(0o644, 3), text(10, "x"))
        .dir("olddir/sub", meta(0o755, 4))
        .file("olddir/sub/y", meta(0o644, 5), text(10, "y"));

    let keep = round(src.clone(), dst.clone(), SessionOptions::default());
    assert_clean(&keep);
    assert_eq!(keep.dst_fs.tree, dst, "without --delete nothing goes");
    assert_eq!(keep.dst.stats().files_deleted, 0);
    assert_eq!(keep.asked("Delete"), 0);

    let opts = SessionOptions { delete: true, ..SessionOptions::default() };
    let del = round(src.clone(), dst, opts);
    assert_clean(&del);
    assert_eq!(del.dst_fs.tree, src);
    // One Delete per extraneous top: the directory takes its contents with it.
    assert_eq!(del.asked("Delete"), 2);
    assert!(del.asked_for("Delete", "olddir") && del.asked_for("Delete", "a/b/stray.txt"));
    assert_eq!(del.dst.stats().files_deleted, 5, "stray.txt, olddir and its 3 entries");
    let deletes: Vec<&str> =
        del.log.events.iter().filter(|e| e.action == Action::Delete).map(|e| e.kind).collect();
    assert_eq!(deletes, ["file", "dir"]);
}

#[test]
fn checksum_detects_a_change_with_the_same_size_and_mtime() {
    let first = round(sample_tree(false), MemTree::default(), SessionOptions::default());
    let (mut src, dst) = first.into_trees();
    // Same length, same mtime: invisible to the quick check.
    src.file_mut("z.txt").1[100..105].copy_from_slice(b"SNEAK");

    let quick = round(src.clone(), dst.clone(), SessionOptions::default());
    assert_clean(&quick);
    assert_eq!(quick.dst.stats().files_changed, 0);
    assert_ne!(quick.dst_fs.tree.bytes("z.txt"), src.bytes("z.txt"), "the quick check misses it");

    let opts = SessionOptions { checksum: true, ..SessionOptions::default() };
    let sum = round(src.clone(), dst, opts);
    assert_clean(&sum);
    assert_eq!(sum.dst_fs.tree, src);
    let s = sum.dst.stats();
    assert_eq!(s.files_changed, 1);
    assert_eq!(s.files_unchanged, 3, "deep.txt, empty, and the symlink");
    // Every destination file of the same size was hashed (the empty one too).
    assert_eq!(sum.asked("HashLocal"), 3);
    assert_eq!(sum.wants("z.txt"), [true]);
}

#[test]
fn dry_run_itemizes_and_writes_nothing() {
    let src = sample_tree(false);
    let mut dst = MemTree::default();
    // The same directories (with the same metadata), one file changed, one missing, the
    // symlink missing, two extraneous entries.
    dst.dir("a", meta(0o755, 100))
        .dir("a/b", meta(0o750, 101))
        .file("a/b/deep.txt", meta(0o644, 50), text(300, "stale"))
        .dir("a/c", meta(0o700, 103))
        .file("old.txt", meta(0o644, 1), text(10, "old"))
        .dir("olddir", meta(0o755, 2))
        .file("olddir/x", meta(0o644, 3), text(10, "x"))
        .file("z.txt", meta(0o644, 106), text(5000, "z"));
    let opts = SessionOptions { dry_run: true, delete: true, ..SessionOptions::default() };
    let pair = round(src, dst.clone(), opts);
    assert_clean(&pair);

    let ev = |p: &str, action, kind| Itemized { path: path(p), action, kind };
    assert_eq!(
        pair.log.events,
        [
            ev("a/b/deep.txt", Action::Changed, "file"),
            ev("a/empty", Action::New, "file"),
            ev("link", Action::New, "symlink"),
            ev("old.txt", Action::Delete, "file"),
            ev("olddir", Action::Delete, "dir"),
        ]
    );
    let s = pair.dst.stats();
    assert_eq!((s.files_changed, s.files_new, s.links_created, s.files_unchanged), (1, 1, 1, 1));
    assert_eq!(s.files_deleted, 2);
    assert_eq!(pair.dst_fs.tree, dst, "the destination is untouched");
    for kind in [
        "Write",
        "Finish",
        "MakeDir",
        "Delete",
        "Retouch",
        "Link",
        "HardLink",
        "SyncDirs",
        "Signature",
    ] {
        assert_eq!(pair.asked(kind), 0, "{kind} asked in a dry run");
    }
    assert_eq!(pair.sent_to_dst("Segment"), 0);
}

#[test]
fn dry_run_sets_no_directory_metadata() {
    let src = sample_tree(false);
    let mut dst = MemTree::default();
    // `a` exists with other metadata; `a/b` and `a/c` do not exist at all.
    dst.dir("a", meta(0o700, 1));
    let opts = SessionOptions { dry_run: true, ..SessionOptions::default() };
    let mut pair = Pair::new(src, dst.clone(), opts);
    let r = pair.drive();
    assert!(r.is_ok(), "a dry run fails: {r:?}");
    assert_eq!(pair.asked("DirMeta"), 0);
    assert_eq!(pair.dst_fs.tree, dst, "a dry run changed the destination");
}

#[test]
fn a_file_changing_while_read_fails_alone_and_is_retried_next_round() {
    let src = sample_tree(true);
    let opts = SessionOptions { max_inflight_work: 8, ..SessionOptions::default() };
    let mut pair = Pair::new(src, MemTree::default(), opts).shuffled(7);
    pair.src_fs.touch_on_read.insert(path("big.bin"));
    pair.drive().expect("the round completes");
    assert_clean(&pair);

    assert_eq!(pair.dst.stats().files_failed, 1);
    assert_eq!(pair.src.stats().files_failed, 1);
    assert!(!pair.asked_for("Finish", "big.bin"), "a failed file was committed");
    assert_eq!(pair.asked("Discard"), 1);
    let id = pair.id_of("big.bin");
    assert!(pair.log.to_dst.iter().any(|m| matches!(
        m,
        Message::FileFailed { file, reason: FileFailure::Changed } if *file == id
    )));
    // Everything else arrived.
    let (src, dst) = pair.into_trees();
    let mut want = src.clone();
    want.0.remove(&path("big.bin"));
    assert_eq!(dst, want);

    // The next round sends the file as it now is.
    let again = round(src.clone(), dst, SessionOptions::default());
    assert_clean(&again);
    assert_eq!(again.dst_fs.tree, src);
    assert_eq!(again.dst.stats().files_new, 1);
}

#[test]
fn a_verification_mismatch_resends_the_file_whole() {
    let first = round(sample_tree(true), MemTree::default(), SessionOptions::default());
    let (mut src, dst) = first.into_trees();
    let (m, big) = src.file_mut("big.bin");
    big[5 << 20] ^= 0xff;
    m.mtime_ns += 1;

    let mut pair = Pair::new(src.clone(), dst, SessionOptions::default());
    pair.dst_fs.corrupt.insert(path("big.bin"), 1);
    pair.drive().expect("round completes");
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);

    let s = pair.dst.stats();
    assert_eq!(s.files_resent, 1);
    assert_eq!(s.files_failed, 0);
    // First as a delta against the basis, then whole.
    assert_eq!(pair.wants("big.bin"), [true, false]);
    let segs = pair.segments_for("big.bin");
    assert_eq!(segs.len(), 6, "{segs:?}");
    assert!(segs[..3].iter().all(|s| s.1 == Payload::Delta), "{segs:?}");
    assert!(segs[3..].iter().all(|s| s.1 == Payload::Literal), "{segs:?}");
    assert!(s.literal_bytes >= BIG as u64, "{s:?}");
}

#[test]
fn a_second_mismatch_gives_the_file_up_for_the_round() {
    let src = sample_tree(false);
    let mut pair = Pair::new(src.clone(), MemTree::default(), SessionOptions::default());
    pair.dst_fs.corrupt.insert(path("z.txt"), 2);
    pair.drive().expect("round completes");
    assert_clean(&pair);

    let s = pair.dst.stats();
    assert_eq!((s.files_failed, s.files_resent), (1, 0));
    assert_eq!(pair.wants("z.txt"), [false, false]);
    let id = pair.id_of("z.txt");
    assert!(pair.log.to_src.iter().any(|m| matches!(m, Message::Settled { file } if *file == id)));
    let mut want = src;
    want.0.remove(&path("z.txt"));
    assert_eq!(pair.dst_fs.tree, want, "nothing unverified is in place");
}

/// `data` with a second name `data-link`, and a file between them in walk order.
fn linked_tree() -> (MemTree, BTreeMap<RelPath, RelPath>) {
    let mut t = MemTree::default();
    t.file("data", meta(0o644, 1), noise(3000, 5))
        .file("data-link", meta(0o644, 1), noise(3000, 5))
        .file("data.txt", meta(0o644, 2), text(40, "between"));
    (t, BTreeMap::from([(path("data-link"), path("data"))]))
}

#[test]
fn hard_links_are_made_after_their_files_and_only_once() {
    let (src, links) = linked_tree();
    let mut pair = Pair::new(src.clone(), MemTree::default(), SessionOptions::default());
    pair.src_fs.links = links.clone();
    pair.drive().expect("round completes");
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    assert_eq!(pair.dst.stats().links_created, 1);
    assert_eq!(pair.dst.stats().files_new, 2, "the link is not a file of its own");
    assert!(pair.segments_for("data-link").is_empty(), "a link's content is not sent");
    // The link is made after every file is in place.
    let first_link = pair.log.dst_work.iter().position(|(k, _)| *k == "HardLink");
    let last_finish = pair.log.dst_work.iter().rposition(|(k, _)| *k == "Finish");
    assert!(first_link > last_finish, "{:?}", pair.log.dst_work);

    let (src, dst) = pair.into_trees();
    let mut again = Pair::new(src.clone(), dst, SessionOptions::default());
    again.src_fs.links = links;
    again.drive().expect("second round completes");
    assert_clean(&again);
    assert_eq!(again.dst_fs.tree, src);
    assert_eq!(again.dst.stats().links_created, 0, "the link was already in place");
}

#[test]
fn a_hard_link_to_a_file_that_failed_does_not_abort_the_round() {
    let (src, links) = linked_tree();
    let mut pair = Pair::new(src, MemTree::default(), SessionOptions::default());
    pair.src_fs.links = links;
    pair.src_fs.touch_on_read.insert(path("data"));
    let r = pair.drive();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(pair.dst.stats().files_failed, 1);
    assert_eq!(pair.dst_fs.tree.bytes("data.txt"), text(40, "between"));
}

/// Verified files are committed in batches (one flush for many files), never one by one when
/// many are in flight, and every file still ends up in place.
#[test]
fn verified_files_are_committed_in_batches() {
    let src = many_files(10, 100);
    let pair = round(src.clone(), MemTree::default(), SessionOptions::default());
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    let commits = pair.log.dst_work.iter().filter(|(k, _)| *k == "Commit").count();
    let finishes = pair.log.dst_work.iter().filter(|(k, _)| *k == "Finish").count();
    assert_eq!(finishes, 1000);
    assert!((1..=1000 / 16).contains(&commits), "{commits} commits for {finishes} files");
}
