//! Many volumes as one job: the list file that names them (`ferry push|pull --list`,
//! `ferry serve --modules-from`) and the directory whose subdirectories are modules
//! (`ferry serve --modules-dir`).
//!
//! A list file is two columns: a module name, then the local directory (the rest of the line,
//! so spaces are allowed; leading and trailing whitespace is trimmed). `#` starts a comment
//! line; blank lines are ignored. Names are Kubernetes DNS-1123 labels, so a PVC's name is a
//! module name as it is. The whole file is checked before anything moves: the first bad line
//! is an error naming its number and why.
//!
//! ```text
//! # module   directory
//! data       /mnt/data
//! wal        /mnt/my wal volume
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::net::{Access, Module, Url};

/// Bytes a list file may hold: far more than any namespace's volumes need, little enough to
/// read whole.
pub const MAX_LIST_BYTES: usize = 1 << 20;
/// Lines a list file may hold (comments and blank lines included).
pub const MAX_LIST_LINES: usize = 10_000;
/// Longest module name: a DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63;

/// One line of a list file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The module name (a DNS-1123 label).
    pub name: String,
    /// The local directory, as written.
    pub dir: PathBuf,
    /// The 1-based line it came from.
    pub line: usize,
}

/// Why a list file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The file could not be read.
    #[error("{what}: {source}")]
    Read {
        /// The file (or stdin).
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_LIST_BYTES`].
    #[error("{what}: larger than {limit} bytes")]
    TooLarge {
        /// The file (or stdin).
        what: String,
        /// The limit.
        limit: usize,
    },
    /// The file has more than [`MAX_LIST_LINES`] lines.
    #[error("{what}: more than {limit} lines")]
    TooManyLines {
        /// The file (or stdin).
        what: String,
        /// The limit.
        limit: usize,
    },
    /// The file is not UTF-8.
    #[error("{what}: not UTF-8 text")]
    NotText {
        /// The file (or stdin).
        what: String,
    },
    /// A line is malformed.
    #[error("{what} line {line}: {why}")]
    Line {
        /// The file (or stdin).
        what: String,
        /// 1-based.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The file names no module.
    #[error("{what}: no modules (only comments and blank lines): nothing to do")]
    Empty {
        /// The file (or stdin).
        what: String,
    },
}

/// Checks `name` as a DNS-1123 label: 1 to 63 of lowercase ASCII letters, digits and `-`,
/// starting and ending with a letter or digit.
///
/// # Errors
/// Why the name is not one.
pub fn check_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Err("empty module name".into());
    }
    if b.len() > MAX_NAME_LEN {
        return Err(format!("module name longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(c) =
        name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "module name {:?} has {c:?}: only lowercase letters, digits and '-' (a Kubernetes name)",
            ferry_transport::printable(name)
        ));
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' {
        return Err(format!("module name {name:?} must start and end with a letter or digit"));
    }
    Ok(())
}

/// Reads and parses a list file; `-` is stdin. `what` in errors is the path (or "stdin").
///
/// # Errors
/// [`ListError`]: unreadable, too large, or a bad line.
pub fn read_list(path: &Path) -> Result<Vec<ListEntry>, ListError> {
    let what =
        if path == Path::new("-") { "stdin".to_string() } else { path.display().to_string() };
    let read = |r: &mut dyn Read| -> Result<Vec<u8>, ListError> {
        let mut buf = Vec::new();
        // One byte past the limit tells "too large" from "exactly the limit".
        r.take(MAX_LIST_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|source| ListError::Read { what: what.clone(), source })?;
        if buf.len() > MAX_LIST_BYTES {
            return Err(ListError::TooLarge { what: what.clone(), limit: MAX_LIST_BYTES });
        }
        Ok(buf)
    };
    let bytes = if path == Path::new("-") {
        read(&mut std::io::stdin().lock())?
    } else {
        let mut f = std::fs::File::open(path)
            .map_err(|source| ListError::Read { what: what.clone(), source })?;
        read(&mut f)?
    };
    let text = String::from_utf8(bytes).map_err(|_| ListError::NotText { what: what.clone() })?;
    parse_list(&text, &what)
}

/// Parses a list file's text; `what` names it in errors.
///
/// # Errors
/// [`ListError`] for the first bad line, a duplicate name, too many lines, or no module.
pub fn parse_list(text: &str, what: &str) -> Result<Vec<ListEntry>, ListError> {
    let mut out: Vec<ListEntry> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        if line > MAX_LIST_LINES {
            return Err(ListError::TooManyLines { what: what.into(), limit: MAX_LIST_LINES });
        }
        let bad = |why: String| ListError::Line { what: what.into(), line, why };
        // CRLF files (written on Windows, pasted into a ConfigMap) read as LF ones.
        let l = raw.strip_suffix('\r').unwrap_or(raw).trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad("control characters".into()));
        }
        let (name, dir) = match l.split_once([' ', '\t']) {
            Some((n, d)) => (n, d.trim()),
            None => (l, ""),
        };
        check_name(name).map_err(bad)?;
        if dir.is_empty() {
            return Err(bad(format!(
                "module {name:?} has no directory (expected: NAME DIRECTORY)"
            )));
        }
        if let Some(first) = out.iter().find(|e| e.name == name) {
            return Err(bad(format!("module {name:?} is already on line {}", first.line)));
        }
        out.push(ListEntry { name: name.into(), dir: PathBuf::from(dir), line });
    }
    if out.is_empty() {
        return Err(ListError::Empty { what: what.into() });
    }
    Ok(out)
}

/// A server address for `--list`, `ferry://HOST[:PORT]` (a trailing `/` allowed), as a
/// [`Url`] whose module is empty; or a whole `ferry://HOST[:PORT]/MODULE`, whose module
/// `--list` refuses later with a clear message.
///
/// # Errors
/// A message saying what is wrong, as [`Url::parse`].
pub fn parse_url(s: &str) -> Result<Url, String> {
    match s.strip_prefix("ferry://") {
        Some(rest) if rest.trim_end_matches('/').split_once('/').is_none() => {
            let host = rest.trim_end_matches('/');
            let mut u = Url::parse(&format!("ferry://{host}/_"))
                .map_err(|_| format!("{s:?}: expected ferry://HOST[:PORT]"))?;
            u.module.clear();
            Ok(u)
        }
        _ => Url::parse(s),
    }
}

/// `base` (a server, from [`parse_url`]) with `module`.
pub fn module_url(base: &Url, module: &str) -> Url {
    Url { module: module.to_string(), ..base.clone() }
}

/// The modules `ferry serve --modules-from` serves: a list file whose directories may end in
/// `:ro`, `:wo` or `:rw`, as with `--module`.
///
/// # Errors
/// [`ListError`] as [`read_list`].
pub fn served_modules(path: &Path) -> Result<Vec<Module>, ListError> {
    Ok(read_list(path)?.into_iter().map(|e| module_of(&e.name, &e.dir)).collect())
}

/// `NAME DIR[:ro|:wo|:rw]` as a module.
fn module_of(name: &str, dir: &Path) -> Module {
    let s = dir.to_string_lossy();
    let (path, access) = match s.rsplit_once(':') {
        Some((p, "ro")) if !p.is_empty() => (PathBuf::from(p), Access::ReadOnly),
        Some((p, "wo")) if !p.is_empty() => (PathBuf::from(p), Access::WriteOnly),
        Some((p, "rw")) if !p.is_empty() => (PathBuf::from(p), Access::ReadWrite),
        _ => (dir.to_path_buf(), Access::ReadWrite),
    };
    Module { name: name.into(), path, access }
}

/// `ferry serve --modules-dir DIR[:ro|:wo]`: each subdirectory of `dir` whose name is a
/// module name is a module, looked up when a client asks for it.
#[derive(Debug, Clone)]
pub struct ModulesDir {
    /// The directory holding one subdirectory per module.
    pub dir: PathBuf,
    /// What peers may do with each of them.
    pub access: Access,
}

impl ModulesDir {
    /// Parses `DIR[:ro|:wo|:rw]`.
    ///
    /// # Errors
    /// A message for an empty directory.
    pub fn parse(s: &str) -> Result<ModulesDir, String> {
        let m = module_of("x", Path::new(s));
        if m.path.as_os_str().is_empty() {
            return Err(format!("{s:?}: empty directory"));
        }
        Ok(ModulesDir { dir: m.path, access: m.access })
    }

    /// The module `name` if `dir` has a subdirectory of that name now: a real directory, not
    /// a symlink to one, and a valid module name (so never hidden, `.` or `..`). Looked up
    /// fd-relative without following a symlink; blocking (one `open` and one `statat`).
    pub fn lookup(&self, name: &str) -> Option<Module> {
        check_name(name).ok()?;
        let root = crate::fs::Root::open(&self.dir).ok()?;
        let st = rustix::fs::statat(root.fd(), name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?;
        (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory)
            .then(|| Module { name: name.into(), path: self.dir.join(name), access: self.access })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(s: &str) -> Result<Vec<ListEntry>, ListError> {
        parse_list(s, "list")
    }

    fn line_error(s: &str) -> (usize, String) {
        match parse(s) {
            Err(ListError::Line { line, why, .. }) => (line, why),
            other => panic!("{s:?}: expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn comments_blank_lines_and_spaces_in_paths() {
        let l = parse(
            "# volumes\n\n  data   /mnt/data  \n\twal\t/mnt/my wal volume\n   # indented comment\n",
        )
        .unwrap();
        assert_eq!(
            l,
            vec![
                ListEntry { name: "data".into(), dir: "/mnt/data".into(), line: 3 },
                ListEntry { name: "wal".into(), dir: "/mnt/my wal volume".into(), line: 4 },
            ]
        );
    }

    #[test]
    fn crlf_reads_as_lf() {
        let l = parse("a /x\r\nb /y z\r\n").unwrap();
        assert_eq!(l[0].dir, PathBuf::from("/x"));
        assert_eq!(l[1].dir, PathBuf::from("/y z"));
    }

    #[test]
    fn invalid_names_name_their_line_and_why() {
        for (text, line, why) in [
            ("ok /a\nData /b\n", 2, "'D'"),
            ("ok /a\n\nmy_vol /b\n", 3, "'_'"),
            ("-lead /a\n", 1, "start and end"),
            ("trail- /a\n", 1, "start and end"),
            ("a.b /a\n", 1, "'.'"),
            ("nodir\n", 1, "no directory"),
            ("nodir   \n", 1, "no directory"),
        ] {
            let (l, w) = line_error(text);
            assert_eq!(l, line, "{text:?}");
            assert!(w.contains(why), "{text:?}: {w}");
        }
        let long = format!("{} /a\n", "a".repeat(64));
        assert!(line_error(&long).1.contains("longer than 63"));
        assert!(parse(&format!("{} /a\n", "a".repeat(63))).is_ok());
        assert!(parse("0 /a\n9-x-0 /b\n").is_ok(), "digits may start and end a label");
    }

    #[test]
    fn duplicates_are_errors() {
        let (line, why) = line_error("a /x\nb /y\na /z\n");
        assert_eq!(line, 3);
        assert!(why.contains("already on line 1"), "{why}");
    }

    #[test]
    fn an_empty_file_is_nothing_to_do() {
        for text in ["", "\n\n", "# only\n   # comments\n"] {
            assert!(matches!(parse(text), Err(ListError::Empty { .. })), "{text:?}");
        }
    }

    #[test]
    fn a_very_long_line_is_one_module_or_a_clear_error() {
        let dir = format!("/{}", "d".repeat(100_000));
        let l = parse(&format!("big {dir}\n")).unwrap();
        assert_eq!(l[0].dir, PathBuf::from(&dir));
        let (_, why) = line_error(&format!("{} /a\n", "x".repeat(100_000)));
        assert!(why.contains("longer than 63"), "the error is short: {}", why.len());
        assert!(why.len() < 200);
    }

    #[test]
    fn files_over_the_bounds_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("big");
        std::fs::write(&big, vec![b'#'; MAX_LIST_BYTES + 1]).unwrap();
        assert!(matches!(read_list(&big), Err(ListError::TooLarge { .. })));
        let many = "\n".repeat(MAX_LIST_LINES + 1);
        assert!(matches!(parse(&many), Err(ListError::TooManyLines { .. })));
        let missing = t.path().join("missing");
        assert!(matches!(read_list(&missing), Err(ListError::Read { .. })));
        std::fs::write(&big, b"a /\xff\n").unwrap();
        assert!(matches!(read_list(&big), Err(ListError::NotText { .. })));
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(line_error("a /x\u{1b}[2J\n").1.contains("control"));
        assert!(parse("a\t/x\ty\n").is_ok(), "tabs separate and may be in a path");
    }

    #[test]
    fn list_urls_name_the_server_only() {
        let u = parse_url("ferry://h:9/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.module.as_str()), ("h", 9, ""));
        assert_eq!(parse_url("ferry://[::1]:9").unwrap().host, "::1");
        assert_eq!(parse_url("ferry://h:9/m").unwrap().module, "m");
        assert_eq!(module_url(&u, "data").to_string(), "ferry://h:9/data");
        for bad in ["http://h:9", "ferry://", "ferry://h:x", "ferry://h/a/b"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn served_modules_take_the_module_flag_suffixes() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("list");
        std::fs::write(&f, "a /x:ro\nb /y:wo\nc /z w\nd /w:rw\n").unwrap();
        let m = served_modules(&f).unwrap();
        let got: Vec<_> = m.iter().map(|m| (m.name.as_str(), m.path.clone(), m.access)).collect();
        assert_eq!(
            got,
            vec![
                ("a", PathBuf::from("/x"), Access::ReadOnly),
                ("b", PathBuf::from("/y"), Access::WriteOnly),
                ("c", PathBuf::from("/z w"), Access::ReadWrite),
                ("d", PathBuf::from("/w"), Access::ReadWrite),
            ]
        );
    }

    #[test]
    fn a_modules_dir_serves_real_subdirectories_with_module_names() {
        let t = tempfile::tempdir().unwrap();
        for d in ["good", ".hidden", "Bad", "has_underscore"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        std::fs::write(t.path().join("file"), b"").unwrap();
        std::os::unix::fs::symlink(t.path().join("good"), t.path().join("link")).unwrap();
        let md = ModulesDir::parse(&format!("{}:ro", t.path().display())).unwrap();
        assert_eq!(md.access, Access::ReadOnly);
        let m = md.lookup("good").unwrap();
        assert_eq!(m.path, t.path().join("good"));
        for name in [".hidden", "Bad", "has_underscore", "file", "link", "missing", "..", ".", ""] {
            assert!(md.lookup(name).is_none(), "{name:?} served");
        }
        std::fs::create_dir(t.path().join("later")).unwrap();
        assert!(md.lookup("later").is_some(), "looked up when asked");
        std::fs::remove_dir(t.path().join("good")).unwrap();
        assert!(md.lookup("good").is_none(), "dropped once gone");
    }
}
