//! The destination refuses what a hostile or confused peer could make it do: nothing escapes
//! the root, nothing unverified lands, no existing inode is modified.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use ferry_agent::fs::dest::ResumeJournal;
use ferry_agent::fs::dest::{Destination, LocalDestination};
use ferry_agent::fs::walk::WalkOptions;
use ferry_agent::fs::Root;
use ferry_agent::round::{self as sync, SyncOptions};
use ferry_core::delta::{BlockSize, SignatureHeader};
use ferry_core::entry::{Entry, EntryKind, Meta};
use ferry_core::message::{Encoding, Payload};
use ferry_core::session::{TargetOutcome, TargetWork};
use ferry_core::{Limits, RelPath};

fn dest(root: &Path) -> LocalDestination {
    LocalDestination::new(
        Arc::new(Root::open(root).unwrap()),
        WalkOptions::default(),
        Limits::default(),
    )
}

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn file_entry(path: &str, size: u64) -> Entry {
    Entry {
        path: p(path),
        kind: EntryKind::File,
        size,
        meta: Meta { mode: 0o644, uid: 0, gid: 0, mtime_ns: 1_600_000_000_000_000_000 },
        xattrs: vec![],
        hash: None,
    }
}

/// Names in `dir`, ignoring nothing: temp files included.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    v.sort();
    v
}

#[test]
fn symlink_where_source_has_a_directory_is_replaced_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst, outside) =
        (t.path().join("src"), t.path().join("dst"), t.path().join("outside"));
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("a/x"), b"payload").unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("canary"), b"untouched").unwrap();
    std::os::unix::fs::symlink(&outside, dst.join("a")).unwrap();

    sync::run(&src, &dst, &SyncOptions::default()).unwrap();

    assert_eq!(names(&outside), ["canary"]);
    assert_eq!(std::fs::read(outside.join("canary")).unwrap(), b"untouched");
    assert!(std::fs::symlink_metadata(dst.join("a")).unwrap().is_dir());
    assert_eq!(std::fs::read(dst.join("a/x")).unwrap(), b"payload");
}

#[test]
fn writes_through_a_symlinked_directory_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let (dst, outside) = (t.path().join("dst"), t.path().join("outside"));
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dst.join("link")).unwrap();
    let d = dest(&dst);
    let out = d.perform(TargetWork::Write {
        file: 1,
        path: p("link/x"),
        index: 0,
        payload: Payload::Literal,
        encoding: Encoding::Raw,
        data: b"evil".to_vec(),
        len: 4,
        file_len: 4,
        mtime_ns: 0,
    });
    assert!(matches!(out, TargetOutcome::Fatal(_)), "{out:?}");
    let out = d.perform(TargetWork::MakeDir {
        entry: Entry { kind: EntryKind::Dir, ..file_entry("link/sub", 0) },
        replace: true,
    });
    assert!(matches!(out, TargetOutcome::Fatal(_)), "{out:?}");
    let del =
        ferry_core::LocalEntry { entry: file_entry("link/canary", 0), ino: 0, nlink: 1, dev: 0 };
    std::fs::write(outside.join("canary"), b"x").unwrap();
    let out = d.perform(TargetWork::Delete { entry: del });
    assert!(matches!(out, TargetOutcome::Fatal(_)), "{out:?}");
    assert_eq!(names(&outside), ["canary"]);
}

#[test]
fn unverified_content_never_lands_and_leaves_no_temp_file() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"old content").unwrap();
    let d = dest(t.path());
    let data = b"new content".to_vec();
    let w = d.perform(TargetWork::Write {
        file: 7,
        path: p("f"),
        index: 0,
        payload: Payload::Literal,
        encoding: Encoding::Raw,
        data: data.clone(),
        len: data.len(),
        file_len: data.len() as u64,
        mtime_ns: 0,
    });
    assert!(matches!(w, TargetOutcome::Written { matched: 0 }), "{w:?}");
    let wrong = *blake3::hash(b"something else").as_bytes();
    let out = d.perform(TargetWork::Finish {
        file: 7,
        entry: file_entry("f", data.len() as u64),
        hash: wrong,
    });
    assert!(matches!(out, TargetOutcome::Mismatch), "{out:?}");
    assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"old content");
    assert_eq!(names(t.path()), ["f"]);
}

#[test]
fn bad_deltas_and_compression_bombs_are_bad_data() {
    let t = tempfile::tempdir().unwrap();
    let basis: Vec<u8> = (0..8192u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(t.path().join("f"), &basis).unwrap();
    let d = dest(t.path());
    let bs = BlockSize::new(1024).unwrap();
    let signed = d.perform(TargetWork::Signature { file: 1, path: p("f"), block_size: bs });
    let TargetOutcome::Signed(Some((h, _))) = signed else { panic!("{signed:?}") };
    assert_eq!(h, SignatureHeader::new(bs, 8192));
    // A copy far past the end of the basis.
    let mut oob = 0x7273_0236u32.to_be_bytes().to_vec();
    oob.push(0x54);
    oob.extend_from_slice(&100_000u64.to_be_bytes());
    oob.extend_from_slice(&100u64.to_be_bytes());
    oob.push(0);
    let w = |data: Vec<u8>, encoding, len| TargetWork::Write {
        file: 1,
        path: p("f"),
        index: 0,
        payload: Payload::Delta,
        encoding,
        data,
        len,
        file_len: len as u64,
        mtime_ns: 0,
    };
    assert!(matches!(d.perform(w(oob, Encoding::Raw, 100)), TargetOutcome::BadData(_)));
    // A literal longer than the announced segment.
    let mut long = 0x7273_0236u32.to_be_bytes().to_vec();
    long.push(0x41);
    long.push(200);
    long.extend_from_slice(&[9; 200]);
    long.push(0);
    assert!(matches!(d.perform(w(long, Encoding::Raw, 100)), TargetOutcome::BadData(_)));
    // A zstd frame that inflates far past any cap.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    let lit = TargetWork::Write {
        file: 2,
        path: p("g"),
        index: 0,
        payload: Payload::Literal,
        encoding: Encoding::Zstd,
        data: bomb,
        len: 4096,
        file_len: 4096,
        mtime_ns: 0,
    };
    assert!(matches!(d.perform(lit), TargetOutcome::BadData(_)));
    assert_eq!(std::fs::read(t.path().join("f")).unwrap(), basis);
}

#[test]
fn hard_link_to_a_symlink_is_refused() {
    let t = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.path().join("s")).unwrap();
    let d = dest(t.path());
    let out = d.perform(TargetWork::HardLink { path: p("z"), to: p("s") });
    assert!(matches!(out, TargetOutcome::Done(c) if c.failed == 1 && !c.created), "{out:?}");
    assert!(!t.path().join("z").exists());
}

/// Snapshots share inodes with the live tree; a metadata-only change must go to a new inode.
#[test]
fn metadata_change_does_not_touch_a_shared_inode() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst, snap) = (t.path().join("src"), t.path().join("dst"), t.path().join("snap"));
    for d in [&src, &dst, &snap] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(src.join("f"), b"same bytes").unwrap();
    sync::run(&src, &dst, &SyncOptions::default()).unwrap();
    std::fs::hard_link(dst.join("f"), snap.join("f")).unwrap();
    let before = std::fs::metadata(snap.join("f")).unwrap();
    std::fs::set_permissions(src.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let r = sync::run(&src, &dst, &SyncOptions::default()).unwrap();

    assert_eq!(r.stats.files_metadata, 1);
    let live = std::fs::metadata(dst.join("f")).unwrap();
    assert_eq!(live.permissions().mode() & 0o7777, 0o600);
    let after = std::fs::metadata(snap.join("f")).unwrap();
    assert_eq!(after.permissions().mode(), before.permissions().mode());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
    assert_ne!(after.ino(), live.ino());
    assert_eq!(std::fs::read(snap.join("f")).unwrap(), b"same bytes");
}

/// A content change is a new inode too: the old one, shared with a snapshot, keeps its bytes.
#[test]
fn content_change_leaves_the_old_inode_alone() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst, snap) = (t.path().join("src"), t.path().join("dst"), t.path().join("snap"));
    for d in [&src, &dst, &snap] {
        std::fs::create_dir_all(d).unwrap();
    }
    let old: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("f"), &old).unwrap();
    sync::run(&src, &dst, &SyncOptions::default()).unwrap();
    std::fs::hard_link(dst.join("f"), snap.join("f")).unwrap();
    let mut new = old.clone();
    new[100_000..100_010].copy_from_slice(b"0123456789");
    std::fs::write(src.join("f"), &new).unwrap();

    let r = sync::run(&src, &dst, &SyncOptions::default()).unwrap();

    assert_eq!(r.stats.files_changed, 1);
    assert!(r.stats.matched_bytes > 150_000, "{:?}", r.stats);
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), new);
    assert_eq!(std::fs::read(snap.join("f")).unwrap(), old);
}

/// Temp files left by an interrupted round are removed by the next one (and never mistaken
/// for data: they are neither listed nor deleted as extraneous entries of the source).
#[test]
fn stale_temp_files_are_removed_by_the_next_round() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::create_dir_all(dst.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"data").unwrap();
    std::fs::write(dst.join(".~ferry.abc123.0"), b"half-written").unwrap();
    std::fs::write(dst.join("d/.~ferry.abc123.7"), b"half-written").unwrap();
    let r = sync::run(&src, &dst, &SyncOptions::default()).unwrap();
    assert!(r.warnings.iter().any(|w| w.contains("removed 2 temp file(s)")), "{:?}", r.warnings);
    assert_eq!(names(&dst), ["d"]);
    assert_eq!(names(&dst.join("d")), ["f"]);
}

/// A resumed file is rebuilt in the temp file an interrupted round left: segments the source
/// sends again (here, all zeros) must overwrite the old bytes there, not skip zero blocks as
/// holes, and a kept segment whose tail was a hole (never written) reads back as zeros.
#[test]
fn a_resumed_temp_file_never_keeps_old_bytes_under_new_zeros() {
    use ferry_agent::state::ModuleState;
    use ferry_core::hash::hash_segment;
    use ferry_core::SEGMENT_LEN;
    let t = tempfile::tempdir().unwrap();
    let (data, state) = (t.path().join("data"), t.path().join("state"));
    std::fs::create_dir_all(&data).unwrap();
    let seg = SEGMENT_LEN;
    let size = 2 * seg as u64;
    // Segment 0 ends in 1 MiB of zeros (a hole in the old temp file); the old segment 1 is
    // garbage the new version replaces with zeros.
    let mut seg0 = vec![7u8; seg];
    seg0[seg - (1 << 20)..].fill(0);
    let temp = ".~ferry.1.1";
    std::fs::write(data.join(temp), &seg0[..seg - (1 << 20)]).unwrap();
    let garbage = vec![0xeeu8; seg];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(data.join(temp)).unwrap();
        // Segment 0's zero tail stays a hole.
        f.write_all_at(&garbage, seg as u64).unwrap();
    }
    let j = ModuleState::new(&state, "m").journal().unwrap();
    j.record(&p("f"), size, 5, temp.as_bytes(), 0, hash_segment(0, &seg0, size).0);
    j.record(&p("f"), size, 5, temp.as_bytes(), 1, hash_segment(1, &garbage, size).0);
    drop(j);
    let d = dest(&data);
    d.use_journal(Arc::new(ModuleState::new(&state, "m").journal().unwrap()));
    let have = match d.perform(TargetWork::Resume { file: 1, path: p("f"), size, mtime_ns: 5 }) {
        TargetOutcome::Resumable(h) => h,
        o => panic!("{o:?}"),
    };
    assert_eq!(have.len(), 2);
    let write = |index: u64, payload, data: Vec<u8>| {
        d.perform(TargetWork::Write {
            file: 1,
            path: p("f"),
            index,
            payload,
            encoding: Encoding::Raw,
            data,
            len: seg,
            file_len: size,
            mtime_ns: 5,
        })
    };
    assert!(matches!(write(0, Payload::Kept, vec![]), TargetOutcome::Written { .. }));
    let zeros = vec![0u8; seg];
    assert!(matches!(write(1, Payload::Literal, zeros.clone()), TargetOutcome::Written { .. }));
    let mut want = seg0.clone();
    want.extend_from_slice(&zeros);
    let mut entry = file_entry("f", size);
    entry.meta.mtime_ns = 5;
    let out =
        d.perform(TargetWork::Finish { file: 1, entry, hash: *blake3::hash(&want).as_bytes() });
    assert!(matches!(out, TargetOutcome::Verified(_)), "{out:?}");
    assert!(matches!(
        d.perform(TargetWork::Commit { files: vec![1] }),
        TargetOutcome::Committed(_)
    ));
    assert!(std::fs::read(data.join("f")).unwrap() == want, "old bytes survived");
}
