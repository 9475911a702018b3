//! A local user racing the destination: names Ferry just created, swapped for symlinks before
//! their metadata is set, never redirect a chmod, chown or utimes to another file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{ferry, s};

/// A racer thread keeps replacing every temp name in a destination subdirectory (owned by
/// another user, as a local user's directory would be) with a symlink to a root-owned 0600
/// victim, while `ferry sync --specials` creates fifos there, round after round for 5 s. The
/// victim's mode, owner and mtime never change.
#[test]
fn a_raced_temp_name_never_redirects_metadata_to_a_victim() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    let victim = t.path().join("victim");
    std::fs::write(&victim, b"secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::metadata(&victim).unwrap();
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..200 {
        let p = src.join(format!("sub/f{i:03}"));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_bits_truncate(0o777),
            0,
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::create_dir_all(dst.join("sub")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (sub, victim, stop) = (dst.join("sub"), victim.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swapped = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(rd) = std::fs::read_dir(&sub) else { continue };
                for e in rd.flatten() {
                    let name = e.file_name();
                    if name.to_string_lossy().starts_with(".~ferry.") {
                        let p = e.path();
                        if std::fs::remove_file(&p).is_ok()
                            && std::os::unix::fs::symlink(&victim, &p).is_ok()
                        {
                            swapped += 1;
                        }
                    }
                }
            }
            swapped
        })
    };
    let until = Instant::now() + Duration::from_secs(5);
    let mut rounds = 0;
    while Instant::now() < until {
        // Each round creates every fifo again.
        for e in std::fs::read_dir(dst.join("sub")).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        // The sub directory itself belongs to a local user (nobody).
        std::os::unix::fs::chown(dst.join("sub"), Some(65534), Some(65534)).unwrap();
        // Exit status does not matter: a raced round may fail; it must not hurt the victim.
        let _ = ferry(&["sync", "--specials", s(&src), s(&dst)]);
        rounds += 1;
        let now = std::fs::metadata(&victim).unwrap();
        assert_eq!(
            (now.mode(), now.uid(), now.gid(), now.mtime(), now.mtime_nsec()),
            (before.mode(), before.uid(), before.gid(), before.mtime(), before.mtime_nsec()),
            "round {rounds}: the victim's metadata changed"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let swapped = racer.join().unwrap();
    assert!(swapped > 0, "the racer never swapped a temp name in {rounds} rounds");
    eprintln!("{rounds} rounds, {swapped} temp names swapped for symlinks");
}
