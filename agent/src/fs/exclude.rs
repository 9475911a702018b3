//! `--exclude` patterns, with rsync's meaning: a pattern without `/` matches a name at any
//! depth; a pattern with `/` matches the whole path from the root (a leading `/` anchors it);
//! a trailing `/` matches directories only.

use globset::{Glob, GlobBuilder, GlobMatcher};

use ferry_core::RelPath;

/// A compiled set of exclude patterns.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    matcher: GlobMatcher,
    whole_path: bool,
    dir_only: bool,
}

impl Excludes {
    /// Compiles `patterns`.
    ///
    /// # Errors
    /// The first pattern that is not a valid glob.
    pub fn new(patterns: &[String]) -> Result<Excludes, globset::Error> {
        let mut rules = Vec::new();
        for p in patterns {
            let mut pat = p.as_str();
            let dir_only = pat.ends_with('/');
            pat = pat.trim_end_matches('/');
            let whole_path = pat.contains('/');
            pat = pat.trim_start_matches('/');
            let glob: Glob = GlobBuilder::new(pat).literal_separator(true).build()?;
            rules.push(Rule { matcher: glob.compile_matcher(), whole_path, dir_only });
        }
        Ok(Excludes { rules })
    }

    /// Whether `path` is excluded.
    pub fn is_excluded(&self, path: &RelPath, is_dir: bool) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let full = String::from_utf8_lossy(path.as_bytes());
        let name = String::from_utf8_lossy(path.file_name());
        self.rules.iter().any(|r| {
            (!r.dir_only || is_dir)
                && if r.whole_path {
                    r.matcher.is_match(&*full)
                } else {
                    r.matcher.is_match(&*name)
                }
        })
    }

    /// Whether no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(pats: &[&str], path: &str, dir: bool) -> bool {
        let pats: Vec<String> = pats.iter().map(|s| s.to_string()).collect();
        Excludes::new(&pats).unwrap().is_excluded(&RelPath::new(path).unwrap(), dir)
    }

    #[test]
    fn rsync_like_semantics() {
        assert!(ex(&["*.log"], "a/b/x.log", false));
        assert!(!ex(&["*.log"], "a/b/x.txt", false));
        assert!(ex(&["cache/"], "a/cache", true));
        assert!(!ex(&["cache/"], "a/cache", false));
        assert!(ex(&["/a/b"], "a/b", false));
        assert!(!ex(&["/a/b"], "x/a/b", false));
        assert!(!ex(&["a/*"], "a/b/c", false));
        assert!(ex(&["a/*"], "a/b", false));
    }
}
