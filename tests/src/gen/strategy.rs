//! The proptest strategies for random trees, names, mtimes and contents, and the resolution
//! of raw entries into a valid tree within [`TREE_BUDGET`](super::TREE_BUDGET).

use std::collections::BTreeSet;

use super::mutation::{mutation, Mutation};
use super::spec::{Content, EntryKind, Mtime, SparseWrite, TreeEntry, TreeSpec};
use super::{
    DIR_MODES, FILE_MODES, FIXED_TARGETS, INTERESTING_SIZES, MAX_DEPTH, NAMES, OWNERS, TREE_BUDGET,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

// The strategies first generate entries whose parent, hard-link source and
// symlink target are indexes into "whatever exists so far"; `resolve` then
// turns those into paths. That keeps every generated tree valid while still
// letting proptest shrink entries independently.

#[derive(Clone, Debug)]
enum RawTarget {
    Entry(Index),
    Fixed(Vec<u8>),
}

#[derive(Clone, Debug)]
enum RawKind {
    Dir,
    File(Content),
    Symlink(RawTarget),
    HardLink(Index),
}

#[derive(Clone, Debug)]
struct RawEntry {
    parent: Index,
    name: Vec<u8>,
    kind: RawKind,
    file_mode: u32,
    dir_mode: u32,
    mtime: Mtime,
    owner: Option<(u32, u32)>,
    xattr: Option<Vec<u8>>,
}

/// Random trees of up to 32 entries; see the module docs for what they
/// contain.
pub fn tree_spec() -> impl Strategy<Value = TreeSpec> {
    (vec(raw_entry(), 0..32), mtime()).prop_map(|(raw, root_mtime)| resolve(raw, root_mtime))
}

/// A random tree together with up to 8 mutations aimed at its entries.
pub fn tree_and_mutations() -> impl Strategy<Value = (TreeSpec, Vec<Mutation>)> {
    tree_spec().prop_flat_map(|spec| {
        let mutations = vec(mutation(&spec), 0..=8);
        (Just(spec), mutations)
    })
}

/// A file or directory name (never `.`, `..`, empty, or containing `/`).
pub fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-z0-9]{1,8}".prop_map(String::into_bytes),
        2 => select(NAMES).prop_map(<[u8]>::to_vec),
        // Long, but leaves room for the ".N" suffix that de-duplicates.
        1 => Just(vec![b'x'; 240]),
    ]
}

/// A modification time, mostly random with nanoseconds, sometimes on a
/// whole second or at the epoch itself.
pub fn mtime() -> impl Strategy<Value = Mtime> {
    // 2000-01-01 .. 2023-11-14: well in the past, so "now" never collides.
    let secs = 946_684_800_i64..1_700_000_000;
    prop_oneof![
        8 => (secs.clone(), 0u32..1_000_000_000).prop_map(|(sec, nsec)| Mtime { sec, nsec }),
        1 => secs.prop_map(|sec| Mtime { sec, nsec: 0 }),
        1 => Just(Mtime { sec: 0, nsec: 0 }),
    ]
}

/// File content: mostly small random data at interesting sizes, sometimes
/// a large repeating pattern or a sparse file.
pub fn content() -> impl Strategy<Value = Content> {
    let random_len = prop_oneof![select(INTERESTING_SIZES), 0u64..10_000];
    let sparse_write = (any::<Index>(), 1u32..200, any::<u64>());
    prop_oneof![
        6 => (any::<u64>(), random_len).prop_map(|(seed, len)| Content::Random { seed, len }),
        1 => (any::<u64>(), (256u64 << 10)..=(2 << 20))
            .prop_map(|(seed, len)| Content::Pattern { seed, len }),
        1 => ((64u64 << 10)..=(2 << 20), vec(sparse_write, 0..4)).prop_map(|(len, raw)| {
            let writes = raw
                .into_iter()
                .map(|(at, n, seed)| {
                    let offset = at.index(len as usize) as u64;
                    let room = u32::try_from(len - offset).unwrap_or(u32::MAX);
                    SparseWrite { offset, len: n.min(room), seed }
                })
                .collect();
            Content::Sparse { len, writes }
        }),
    ]
}

fn raw_entry() -> impl Strategy<Value = RawEntry> {
    let kind = prop_oneof![
        3 => Just(RawKind::Dir),
        5 => content().prop_map(RawKind::File),
        2 => prop_oneof![
            any::<Index>().prop_map(RawTarget::Entry),
            select(FIXED_TARGETS).prop_map(|t| RawTarget::Fixed(t.to_vec())),
        ]
        .prop_map(RawKind::Symlink),
        1 => any::<Index>().prop_map(RawKind::HardLink),
    ];
    let owner = prop_oneof![3 => Just(None), 1 => select(OWNERS).prop_map(Some)];
    let xattr = prop_oneof![3 => Just(None), 1 => vec(any::<u8>(), 0..64).prop_map(Some)];
    (any::<Index>(), name(), kind, select(FILE_MODES), select(DIR_MODES), mtime(), owner, xattr)
        .prop_map(|(parent, name, kind, file_mode, dir_mode, mtime, owner, xattr)| RawEntry {
            parent,
            name,
            kind,
            file_mode,
            dir_mode,
            mtime,
            owner,
            xattr,
        })
}

fn resolve(raw: Vec<RawEntry>, root_mtime: Mtime) -> TreeSpec {
    let mut entries: Vec<TreeEntry> = Vec::new();
    let mut taken = BTreeSet::new();
    // (path, depth), root first.
    let mut dirs: Vec<(Vec<u8>, usize)> = vec![(Vec::new(), 0)];
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut budget = TREE_BUDGET;

    for r in raw {
        let parents: Vec<&(Vec<u8>, usize)> = match r.kind {
            RawKind::Dir => dirs.iter().filter(|(_, depth)| *depth < MAX_DEPTH).collect(),
            _ => dirs.iter().collect(),
        };
        // Never empty: the root has depth 0.
        let (parent, depth) = parents[r.parent.index(parents.len())].clone();
        let path = unique_child(&parent, &r.name, &taken);
        let (kind, mode, owner, xattr) = match r.kind {
            RawKind::Dir => {
                dirs.push((path.clone(), depth + 1));
                (EntryKind::Dir, r.dir_mode, r.owner, r.xattr)
            }
            RawKind::File(content) => {
                files.push(path.clone());
                (EntryKind::File(fit(content, &mut budget)), r.file_mode, r.owner, r.xattr)
            }
            RawKind::Symlink(RawTarget::Fixed(target)) => {
                (EntryKind::Symlink(target), 0o777, r.owner, None)
            }
            RawKind::Symlink(RawTarget::Entry(i)) => {
                let target = match entries.len() {
                    0 => Vec::new(),
                    n => entries[i.index(n)].path.clone(),
                };
                (EntryKind::Symlink(relative_target(depth, &target)), 0o777, r.owner, None)
            }
            RawKind::HardLink(_) if files.is_empty() => {
                let empty = Content::Random { seed: 0, len: 0 };
                files.push(path.clone());
                (EntryKind::File(empty), r.file_mode, r.owner, r.xattr)
            }
            RawKind::HardLink(i) => {
                (EntryKind::HardLink(files[i.index(files.len())].clone()), 0, None, None)
            }
        };
        taken.insert(path.clone());
        entries.push(TreeEntry { path, kind, mode, mtime: r.mtime, owner, xattr });
    }
    TreeSpec { entries, root_mtime }
}

/// `parent/name`, with a `.N` suffix if that path is already taken.
fn unique_child(parent: &[u8], name: &[u8], taken: &BTreeSet<Vec<u8>>) -> Vec<u8> {
    let mut base = parent.to_vec();
    if !base.is_empty() {
        base.push(b'/');
    }
    base.extend_from_slice(name);
    let mut path = base.clone();
    let mut n = 1;
    while taken.contains(&path) {
        path = base.clone();
        path.extend_from_slice(format!(".{n}").as_bytes());
        n += 1;
    }
    path
}

/// A relative symlink target reaching `target` (relative to the root) from
/// a directory `depth` levels below the root.
fn relative_target(depth: usize, target: &[u8]) -> Vec<u8> {
    let mut out = b"../".repeat(depth);
    out.extend_from_slice(target);
    if out.is_empty() {
        out.push(b'.');
    } else if out.ends_with(b"/") {
        out.pop();
    }
    out
}

/// Keeps a tree under [`TREE_BUDGET`]: content that does not fit becomes a
/// small random file.
fn fit(content: Content, budget: &mut u64) -> Content {
    let len = content.len();
    if len <= *budget {
        *budget -= len;
        return content;
    }
    let seed = match content {
        Content::Random { seed, .. } | Content::Pattern { seed, .. } => seed,
        Content::Sparse { len, .. } => len,
    };
    let len = (len % 4096).min(*budget);
    *budget -= len;
    Content::Random { seed, len }
}
