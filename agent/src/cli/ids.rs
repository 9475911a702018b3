//! Owner and group names in `--chown`, `--usermap` and `--groupmap`, resolved to ids from this
//! side's own `/etc/passwd` and `/etc/group`: the flags are given where entries are received,
//! so names mean the receiving side's users and groups. The databases are opened beneath `/`
//! without following a symlink, only as regular files, and read up to 16 MiB.

use std::io::{self, Read};

use rustix::fs::{self as rfs, Mode, OFlags};

/// Which database a name is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    /// `/etc/passwd`.
    Users,
    /// `/etc/group`.
    Groups,
}

impl Db {
    fn file(self) -> &'static str {
        match self {
            Db::Users => "passwd",
            Db::Groups => "group",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Db::Users => "user",
            Db::Groups => "group",
        }
    }
}

/// Largest database read.
const MAX_DB: u64 = 16 << 20;

/// `v` as an id: a number, or a name looked up in `db`.
///
/// # Errors
/// A message naming the name and the database when it is not there or cannot be read.
pub(crate) fn id(v: &str, db: Db) -> Result<u32, String> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u32>() {
        return Ok(n);
    }
    if v.is_empty() || v.contains(':') {
        return Err(format!("{v:?}: expected a numeric id or a {} name", db.what()));
    }
    let text = read_db(db).map_err(|e| format!("reading /etc/{}: {e}", db.file()))?;
    lookup(&text, v).ok_or_else(|| format!("no {} named {v:?} in /etc/{}", db.what(), db.file()))
}

/// The database's text: `/etc/FILE` opened beneath `/` one component at a time, `O_NOFOLLOW`.
fn read_db(db: Db) -> io::Result<String> {
    let dir = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let root = rfs::open("/", dir, Mode::empty())?;
    let etc = rfs::openat(&root, "etc", dir, Mode::empty())?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rfs::openat(&etc, db.file(), flags, Mode::empty())?;
    if !rfs::FileType::from_raw_mode(rfs::fstat(&fd)?.st_mode).is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd).take(MAX_DB).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The id of `name` in passwd- or group-format `text` (`name:password:ID:...`).
fn lookup(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        f.next()?;
        f.next()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_by_their_first_field_and_numbers_pass_through() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      # a comment\n\
                      broken\n\
                      www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(lookup(passwd, "www-data"), Some(33));
        assert_eq!(lookup(passwd, "nobody"), Some(65534));
        assert_eq!(lookup(passwd, "www"), None, "a prefix is not a name");
        assert_eq!(lookup(passwd, "broken"), None);
        assert_eq!(id("1234", Db::Users), Ok(1234));
        assert_eq!(id("root", Db::Users), Ok(0), "this machine's /etc/passwd");
        assert!(id("no-such-user-here", Db::Groups).unwrap_err().contains("/etc/group"));
        assert!(id("", Db::Users).is_err());
    }
}
