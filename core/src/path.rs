//! [`RelPath`]: a path received from a peer, parsed before anything else touches it.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted path, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest accepted path component, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Why a byte string is not an acceptable relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty (the root itself is never named by a peer).
    #[error("empty path")]
    Empty,
    /// The path starts with `/`.
    #[error("absolute path")]
    Absolute,
    /// The path contains a NUL byte.
    #[error("path contains a NUL byte")]
    Nul,
    /// A component is empty (`a//b` or a trailing `/`).
    #[error("empty path component")]
    EmptyComponent,
    /// A component is `.`.
    #[error("`.` component")]
    Dot,
    /// A component is `..`.
    #[error("`..` component")]
    DotDot,
    /// A component is longer than [`MAX_COMPONENT_LEN`].
    #[error("path component of {len} bytes exceeds {MAX_COMPONENT_LEN}")]
    ComponentTooLong {
        /// Length of the offending component.
        len: usize,
    },
    /// The whole path is longer than [`MAX_PATH_LEN`].
    #[error("path of {len} bytes exceeds {MAX_PATH_LEN}")]
    TooLong {
        /// Length of the path.
        len: usize,
    },
}

/// A relative path beneath a sync root, as raw bytes (Linux names are bytes, not UTF-8).
///
/// Construction is the only validation: a `RelPath` is relative, has no `.`, `..` or empty
/// component, no NUL, components of at most 255 bytes and at most 4096 bytes in all.
///
/// # Ordering
/// Paths order component by component, which is the byte order of the path with `/` sorting
/// before every other byte. This is the order a depth-first walk with sorted directory
/// listings produces, so both sides of a sync can stream their trees and merge-join them.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Parses `bytes` as a relative path.
    ///
    /// # Errors
    /// A [`PathError`] naming the first rule the bytes break.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, PathError> {
        let bytes = bytes.into();
        validate(&bytes)?;
        Ok(RelPath(bytes))
    }

    /// The path as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Consumes the path, returning its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The path's components.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &[u8]> + '_ {
        self.0.split(|&b| b == b'/')
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        // A RelPath is never empty, so rsplit yields at least one item.
        self.0.rsplit(|&b| b == b'/').next().unwrap_or(&self.0)
    }

    /// The parent path, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<RelPath> {
        let pos = self.0.iter().rposition(|&b| b == b'/')?;
        Some(RelPath(self.0[..pos].to_vec()))
    }

    /// `self/name`, checked.
    ///
    /// # Errors
    /// When `name` is not a valid single component or the result is too long.
    pub fn join(&self, name: &[u8]) -> Result<RelPath, PathError> {
        if name.contains(&b'/') {
            return Err(PathError::EmptyComponent);
        }
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        v.push(b'/');
        v.extend_from_slice(name);
        RelPath::new(v)
    }

    /// A top-level path made of one component.
    ///
    /// # Errors
    /// When `name` is not a valid component.
    pub fn from_component(name: &[u8]) -> Result<RelPath, PathError> {
        if name.contains(&b'/') {
            return Err(PathError::EmptyComponent);
        }
        RelPath::new(name.to_vec())
    }

    /// Whether `self` is `ancestor` or lies beneath it.
    pub fn starts_with(&self, ancestor: &RelPath) -> bool {
        self.0.starts_with(&ancestor.0)
            && (self.0.len() == ancestor.0.len() || self.0[ancestor.0.len()] == b'/')
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        self.0.iter().filter(|&&b| b == b'/').count() + 1
    }
}

/// Compares two paths component-wise (`/` before any other byte).
pub fn cmp_path_bytes(a: &[u8], b: &[u8]) -> Ordering {
    let key = |x: u8| if x == b'/' { 0u8 } else { x };
    // NUL never occurs in a valid path, so mapping `/` to 0 keeps the order total.
    a.iter().map(|&x| key(x)).cmp(b.iter().map(|&x| key(x)))
}

impl Ord for RelPath {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_path_bytes(&self.0, &other.0)
    }
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl RelPath {
    /// A printable form: UTF-8 shown as is, other bytes as `\xNN`.
    pub fn display(&self) -> String {
        self.0.escape_ascii().to_string()
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parse, don't validate: a path off the wire is checked before it exists as a RelPath.
        let bytes: Vec<u8> = serde_bytes_vec(d)?;
        RelPath::new(bytes).map_err(serde::de::Error::custom)
    }
}

fn serde_bytes_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("path bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            if v.len() > MAX_PATH_LEN {
                return Err(E::custom(PathError::TooLong { len: v.len() }));
            }
            Ok(v.to_vec())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                if v.len() >= MAX_PATH_LEN {
                    return Err(serde::de::Error::custom(PathError::TooLong { len: v.len() + 1 }));
                }
                v.push(b);
            }
            Ok(v)
        }
    }
    d.deserialize_bytes(V)
}

fn validate(bytes: &[u8]) -> Result<(), PathError> {
    if bytes.is_empty() {
        return Err(PathError::Empty);
    }
    if bytes.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong { len: bytes.len() });
    }
    if bytes[0] == b'/' {
        return Err(PathError::Absolute);
    }
    if bytes.contains(&0) {
        return Err(PathError::Nul);
    }
    for c in bytes.split(|&b| b == b'/') {
        match c {
            b"" => return Err(PathError::EmptyComponent),
            b"." => return Err(PathError::Dot),
            b".." => return Err(PathError::DotDot),
            c if c.len() > MAX_COMPONENT_LEN => {
                return Err(PathError::ComponentTooLong { len: c.len() })
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_escapes_or_is_malformed() {
        let long_component = vec![b'a'; 256];
        let long_path = [&b"a/"[..]; 2049].concat();
        let cases: &[(&[u8], PathError)] = &[
            (b"", PathError::Empty),
            (b"../x", PathError::DotDot),
            (b"/etc/x", PathError::Absolute),
            (b"a/../../x", PathError::DotDot),
            (b"a/./b", PathError::Dot),
            (b".", PathError::Dot),
            (b"a//b", PathError::EmptyComponent),
            (b"a/", PathError::EmptyComponent),
            (b"a\0b", PathError::Nul),
            (&long_component, PathError::ComponentTooLong { len: 256 }),
            (&long_path, PathError::TooLong { len: 4098 }),
        ];
        for (input, want) in cases {
            assert_eq!(RelPath::new(input.to_vec()).unwrap_err(), *want, "{input:?}");
        }
    }

    #[test]
    fn accepts_non_utf8_and_dotfiles() {
        for ok in [&b"a"[..], b"..a", b".hidden/x", b"\xff\xfe/q", &[b'a'; 255][..]] {
            assert!(RelPath::new(ok.to_vec()).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn orders_children_before_siblings_with_higher_bytes() {
        let mut v: Vec<RelPath> =
            ["a.txt", "a/b", "a", "a-b", "b"].iter().map(|s| RelPath::new(*s).unwrap()).collect();
        v.sort();
        let got: Vec<String> = v.iter().map(|p| p.display()).collect();
        assert_eq!(got, ["a", "a/b", "a-b", "a.txt", "b"]);
    }

    #[test]
    fn deserialize_validates() {
        let bytes = postcard::to_allocvec(&b"../x".to_vec()).unwrap();
        assert!(postcard::from_bytes::<RelPath>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&RelPath::new("ok/x").unwrap()).unwrap();
        assert_eq!(postcard::from_bytes::<RelPath>(&bytes).unwrap(), RelPath::new("ok/x").unwrap());
    }

    #[test]
    fn parent_join_starts_with() {
        let p = RelPath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap(), RelPath::new("a/b").unwrap());
        assert_eq!(p.file_name(), b"c");
        assert!(p.starts_with(&RelPath::new("a/b").unwrap()));
        assert!(!p.starts_with(&RelPath::new("a/bc").unwrap()));
        assert!(!RelPath::new("a/bc").unwrap().starts_with(&RelPath::new("a/b").unwrap()));
        assert_eq!(RelPath::new("a").unwrap().join(b"x").unwrap(), RelPath::new("a/x").unwrap());
        assert!(RelPath::new("a").unwrap().join(b"..").is_err());
    }
}
