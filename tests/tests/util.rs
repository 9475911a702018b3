use std::fs;
use std::path::{Path, PathBuf};

use ferry_tests::tree::{self, Snapshot};
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError};
use tempfile::TempDir;

/// A proptest config running `default_cases` cases, or `PROPTEST_CASES` when
/// set, so a long soak is one environment variable away.
pub(crate) fn config(default_cases: u32) -> Config {
    let cases =
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    Config {
        cases,
        // Every case touches megabytes on disk; unbounded shrinking could
        // take many minutes on a real failure.
        max_shrink_iters: 256,
        // Failing seeds go next to the test module (`<module>.proptest-regressions`);
        // the default looks for a lib.rs/main.rs, which a test binary lacks.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// A scratch directory holding empty `src/` and `dst/` directories.
pub(crate) struct Scratch {
    // Held for its Drop, which removes everything.
    _tmp: TempDir,
    pub(crate) src: PathBuf,
    pub(crate) dst: PathBuf,
}

impl Scratch {
    pub(crate) fn new() -> std::io::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let src = tmp.path().join("src");
        let dst = tmp.path().join("dst");
        fs::create_dir(&src)?;
        fs::create_dir(&dst)?;
        Ok(Self { _tmp: tmp, src, dst })
    }
}

/// Watches a file outside the test trees that generated symlinks point at.
/// A sync that opens, chmods or touches through a destination symlink would
/// change it; these tests run as root, so nothing else stops that.
pub(crate) struct OutsideGuard {
    path: &'static Path,
    before: Option<Snapshot>,
}

impl OutsideGuard {
    pub(crate) fn new() -> Self {
        let path = Path::new("/etc/passwd");
        Self { path, before: tree::snapshot(path).ok() }
    }

    pub(crate) fn check(&self) -> Result<(), TestCaseError> {
        let after = tree::snapshot(self.path).ok();
        if after != self.before {
            return Err(TestCaseError::fail(format!(
                "{} changed during the test: something wrote through a symlink",
                self.path.display()
            )));
        }
        Ok(())
    }
}

/// Fails the test case with the comparer's report unless `a` and `b` match.
pub(crate) fn same(a: &Path, b: &Path, when: &str) -> Result<(), TestCaseError> {
    let diffs = tree::diff(a, b);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!("{when}: {}", tree::report(a, b, &diffs))))
    }
}
