//! The destination's resume journal: which segments of which large files a round has written
//! into their temp files, so a round cut mid-way (a link cut, a pod restart, kill -9) does
//! not start those files over.
//!
//! Every segment the destination writes into the temp file of a multi-segment file appends a
//! line to `STATE/journal/MODULE.jsonl`: the file's path, the source's size and mtime (the
//! version being rebuilt), the temp file's name, the segment's index and its blake3 chaining
//! value ([`ferry_core::hash::hash_segment`]). Lines are not fsynced: a line lost in a crash
//! just makes the resumable prefix shorter, and a line whose data did not reach the disk is
//! caught because every kept segment is read back and hashed, and the whole file is checked
//! against the source's blake3 before it is renamed into place.
//!
//! The next round reads the journal before its walk (whose stale-temp cleanup must spare the
//! partial files it names), and for each file it is about to request with the same path, size
//! and mtime, offers the source the contiguous prefix of segments held
//! ([`ferry_core::message::Message::Resume`]); the source answers segments that hash the same
//! with `Kept` and sends the rest. A successful round removes the partial files nobody
//! claimed and empties the journal; a failed one leaves both for the next.
//!
//! The journal is read as untrusted: size-capped, each line parsed alone (a torn last line is
//! skipped), paths validated as [`RelPath`]s, temp names required to be plain `.~ferry.` names.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ferry_core::RelPath;
use rustix::fs::{self as rfs, AtFlags};
use serde::{Deserialize, Serialize};

use super::write_state_file as write_atomic;
use crate::fs::dest::{Partial, ResumeJournal};
use crate::fs::walk::TEMP_PREFIX;
use crate::fs::Root;
use crate::lock;

/// Longest journal line read back (a line is a few hundred bytes; longer is damage).
const MAX_LINE: u64 = 16 << 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    path: Vec<u8>,
    size: u64,
    mtime_ns: i64,
    temp: Vec<u8>,
    index: u64,
    cv: [u8; 32],
    /// The file was committed: forget its partial file (a tombstone, so a long round that
    /// fails late does not carry every file it finished into the next one).
    #[serde(default)]
    done: bool,
}

/// The resume journal of one module.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    log: Mutex<File>,
    /// Partial files of earlier rounds, by path, not yet claimed by this round.
    partials: Mutex<HashMap<RelPath, Partial>>,
}

fn valid_temp(name: &[u8]) -> bool {
    name.starts_with(TEMP_PREFIX) && !name.contains(&b'/') && !name.contains(&0)
}

impl Journal {
    /// Opens the journal at `path` (laid out by [`crate::state::ModuleState`]): reads what
    /// earlier rounds left, and starts this round's log with it (so a partial file survives
    /// another interrupted round).
    ///
    /// # Errors
    /// I/O errors creating the journal.
    pub fn open(path: &Path) -> io::Result<Journal> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let path = path.to_path_buf();
        let partials = read_partials(&path);
        let mut text = Vec::new();
        for (p, part) in &partials {
            for (i, cv) in part.have.iter().enumerate() {
                let line = Line {
                    path: p.as_bytes().to_vec(),
                    size: part.size,
                    mtime_ns: part.mtime_ns,
                    temp: part.temp.clone(),
                    index: i as u64,
                    cv: *cv,
                    done: false,
                };
                serde_json::to_writer(&mut text, &line)?;
                text.push(b'\n');
            }
        }
        write_atomic(&path, &text)?;
        let log = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)?
        };
        Ok(Journal { path, log: Mutex::new(log), partials: Mutex::new(partials) })
    }

    fn append(&self, line: &Line) {
        let Ok(mut bytes) = serde_json::to_vec(line) else { return };
        bytes.push(b'\n');
        // Losing a line only shortens what can resume; it never fails the round.
        if let Err(e) = lock(&self.log).write_all(&bytes) {
            tracing::warn!("resume journal {}: {e}", self.path.display());
        }
    }

    /// Ends a successful round: removes the partial files no file of the round claimed (their
    /// file changed again, or went away) and empties the journal. Returns how many were removed.
    ///
    /// # Errors
    /// I/O errors emptying the journal.
    pub fn finish_ok(&self, root: &Root) -> io::Result<usize> {
        let left: Vec<(RelPath, Partial)> = lock(&self.partials).drain().collect();
        let mut removed = 0;
        for (path, p) in left {
            if let Ok(dir) = root.parent_of(&path) {
                if rfs::unlinkat(&dir, p.temp.as_slice(), AtFlags::empty()).is_ok() {
                    removed += 1;
                }
            }
        }
        write_atomic(&self.path, b"")?;
        Ok(removed)
    }
}

impl ResumeJournal for Journal {
    /// Names of the temp files the journal holds partial files in: the walk must keep them.
    fn temp_names(&self) -> HashSet<Vec<u8>> {
        lock(&self.partials).values().map(|p| p.temp.clone()).collect()
    }

    /// Claims the partial file of `path` if it is of this version (`size`, `mtime_ns`).
    fn take(&self, path: &RelPath, size: u64, mtime_ns: i64) -> Option<Partial> {
        let mut partials = lock(&self.partials);
        let p = partials.get(path)?;
        (p.size == size && p.mtime_ns == mtime_ns).then(|| partials.remove(path)).flatten()
    }

    /// Records that segment `index` (chaining value `cv`) of `path`'s version (`size`,
    /// `mtime_ns`) is written in temp file `temp`.
    fn record(
        &self,
        path: &RelPath,
        size: u64,
        mtime_ns: i64,
        temp: &[u8],
        index: u64,
        cv: [u8; 32],
    ) {
        let line = Line {
            path: path.as_bytes().to_vec(),
            size,
            mtime_ns,
            temp: temp.to_vec(),
            index,
            cv,
            done: false,
        };
        self.append(&line);
    }

    /// Records that the file rebuilt in temp file `temp` was committed to `path`.
    fn done(&self, path: &RelPath, temp: &[u8]) {
        let line = Line {
            path: path.as_bytes().to_vec(),
            size: 0,
            mtime_ns: 0,
            temp: temp.to_vec(),
            index: 0,
            cv: [0; 32],
            done: true,
        };
        self.append(&line);
    }
}

/// Reads a journal: per path, the version with the longest run of segments from 0.
fn read_partials(path: &Path) -> HashMap<RelPath, Partial> {
    use std::io::{BufRead, BufReader, Read};
    type Key = (Vec<u8>, u64, i64, Vec<u8>);
    // Streaming: memory is bounded by the partial files still open (committed ones are
    // dropped at their tombstone), not by the journal's length.
    let mut runs: HashMap<Key, BTreeMap<u64, [u8; 32]>> = HashMap::new();
    let Ok(f) = File::open(path) else { return HashMap::new() };
    let mut r = BufReader::new(f);
    let mut l = Vec::new();
    loop {
        l.clear();
        match (&mut r).take(MAX_LINE).read_until(b'\n', &mut l) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if l.last() != Some(&b'\n') && l.len() as u64 >= MAX_LINE {
            // Overlong: skip the rest of it, in bounded steps.
            loop {
                l.clear();
                match (&mut r).take(MAX_LINE).read_until(b'\n', &mut l) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if l.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
            continue;
        }
        let Ok(line) = serde_json::from_slice::<Line>(&l) else { continue };
        if line.done {
            runs.retain(|k, _| !(k.0 == line.path && k.3 == line.temp));
            continue;
        }
        if !valid_temp(&line.temp) || line.size == 0 {
            continue;
        }
        let segments = line.size.div_ceil(ferry_core::SEGMENT_LEN as u64);
        if line.index >= segments {
            continue;
        }
        runs.entry((line.path, line.size, line.mtime_ns, line.temp))
            .or_default()
            .insert(line.index, line.cv);
    }
    let mut out: HashMap<RelPath, Partial> = HashMap::new();
    for ((path, size, mtime_ns, temp), segs) in runs {
        let Ok(path) = RelPath::new(path) else { continue };
        let have: Vec<[u8; 32]> = segs
            .iter()
            .enumerate()
            .take_while(|(i, (k, _))| *i as u64 == **k)
            .map(|(_, (_, v))| *v)
            .collect();
        if have.is_empty() {
            continue;
        }
        let better = out.get(&path).is_none_or(|o| o.have.len() < have.len());
        if better {
            out.insert(path, Partial { size, mtime_ns, temp, have });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn a_reopened_journal_offers_the_contiguous_prefix_of_the_matching_version() {
        let t = tempfile::tempdir().unwrap();
        let j = crate::state::ModuleState::new(t.path(), "m").journal().unwrap();
        let size = 5 * ferry_core::SEGMENT_LEN as u64;
        for i in [0u64, 1, 3] {
            j.record(&rel("d/f"), size, 7, b".~ferry.1.2", i, [i as u8; 32]);
        }
        j.record(&rel("g"), size, 7, b".~ferry.1.3", 0, [9; 32]);
        j.record(&rel("h"), size, 7, b".~ferry.1.4", 0, [9; 32]);
        // h was committed: its tombstone drops it.
        j.done(&rel("h"), b".~ferry.1.4");
        drop(j);
        // A torn line and hostile lines are skipped.
        let p = t.path().join("journal/m.jsonl");
        let mut text = std::fs::read(&p).unwrap();
        text.extend_from_slice(
            b"{\"path\":[47,101],\"size\":1,\"mtime_ns\":0,\"temp\":[46],\"index\":0,\"cv\":[",
        );
        std::fs::write(&p, &text).unwrap();
        let j = crate::state::ModuleState::new(t.path(), "m").journal().unwrap();
        assert!(j.temp_names().contains(b".~ferry.1.2".as_slice()));
        assert_eq!(j.take(&rel("d/f"), size, 8), None, "another mtime: another version");
        let got = j.take(&rel("d/f"), size, 7).unwrap();
        assert_eq!(got.have, vec![[0; 32], [1; 32]], "segment 2 is missing, so 3 is not offered");
        assert_eq!(j.take(&rel("d/f"), size, 7), None, "claimed once");
        drop(j);
        // The rewritten journal still holds both partial files for yet another round.
        let j = crate::state::ModuleState::new(t.path(), "m").journal().unwrap();
        assert_eq!(j.temp_names().len(), 2);
    }

    #[test]
    fn hostile_lines_are_ignored() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("journal")).unwrap();
        let mut text = Vec::new();
        for (path, temp, index) in [
            (&b"../etc/passwd"[..], &b".~ferry.1"[..], 0u64),
            (b"ok", b"../../x", 0),
            (b"ok", b".~ferry.1/x", 0),
            (b"ok", b".~ferry.1", 99),
        ] {
            let l = Line {
                path: path.to_vec(),
                size: 1 << 24,
                mtime_ns: 0,
                temp: temp.to_vec(),
                index,
                cv: [0; 32],
                done: false,
            };
            serde_json::to_writer(&mut text, &l).unwrap();
            text.push(b'\n');
        }
        // An overlong line is skipped without holding it, and the next line still counts.
        text.extend(std::iter::repeat_n(b'x', 100_000));
        text.push(b'\n');
        let ok = Line {
            path: b"ok".to_vec(),
            size: 1 << 24,
            mtime_ns: 0,
            temp: b".~ferry.2".to_vec(),
            index: 0,
            cv: [0; 32],
            done: false,
        };
        serde_json::to_writer(&mut text, &ok).unwrap();
        text.push(b'\n');
        std::fs::write(t.path().join("journal/m.jsonl"), &text).unwrap();
        let j = crate::state::ModuleState::new(t.path(), "m").journal().unwrap();
        assert_eq!(j.temp_names(), HashSet::from([b".~ferry.2".to_vec()]));
    }
}
