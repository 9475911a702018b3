//! `--delete` and the walks stop at mount points, bind mounts of the same filesystem
//! included (same `st_dev`, another mount id).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{check_ok, ferry, s};

/// A bind mount, unmounted (lazily, so a failing test still cleans up) on drop.
struct BindMount(PathBuf);

impl BindMount {
    fn new(from: &Path, at: &Path) -> BindMount {
        let out = Command::new("mount").arg("--bind").arg(from).arg(at).output().unwrap();
        check_ok(&out);
        BindMount(at.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A directory of the destination is a bind mount of a directory outside it, on the same
/// filesystem. `sync --delete` from a source without it, or with it empty, leaves the
/// mounted directory's contents alone.
#[test]
fn delete_never_crosses_a_bind_mount_of_the_same_filesystem() {
    for case in ["source lacks the mount point", "source has it empty"] {
        let t = tempfile::tempdir().unwrap();
        let (src, dst, outside) =
            (t.path().join("src"), t.path().join("dst"), t.path().join("outside"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a"), b"a").unwrap();
        if case == "source has it empty" {
            std::fs::create_dir(src.join("m")).unwrap();
        }
        std::fs::create_dir_all(dst.join("m")).unwrap();
        std::fs::create_dir_all(outside.join("deep")).unwrap();
        std::fs::write(outside.join("precious"), b"keep me").unwrap();
        std::fs::write(outside.join("deep/also"), b"keep me too").unwrap();
        let _m = BindMount::new(&outside, &dst.join("m"));
        let out = ferry(&["sync", "--delete", "--json", s(&src), s(&dst)]);
        check_ok(&out);
        assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me", "{case}");
        assert_eq!(std::fs::read(outside.join("deep/also")).unwrap(), b"keep me too", "{case}");
        assert_eq!(std::fs::read(dst.join("a")).unwrap(), b"a", "{case}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if case == "source lacks the mount point" {
            assert_eq!(report["stats"]["mount_points_skipped"], 1, "{case}: {report}");
        }
    }
}

/// `-x` on the source: a bind mount inside it is not descended into.
#[test]
fn one_file_system_stops_at_a_bind_mount_in_the_source() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst, outside) =
        (t.path().join("src"), t.path().join("dst"), t.path().join("outside"));
    std::fs::create_dir_all(src.join("m")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("elsewhere"), b"x").unwrap();
    let _m = BindMount::new(&outside, &src.join("m"));
    check_ok(&ferry(&["sync", "-x", s(&src), s(&dst)]));
    assert!(dst.join("m").is_dir());
    assert!(!dst.join("m/elsewhere").exists(), "-x descended into a bind mount");
}
