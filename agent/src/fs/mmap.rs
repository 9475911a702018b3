//! The one place Ferry maps a file: destination basis files, which Ferry controls.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::Mmap;

/// A read-only view of a destination basis file: mapped when possible, read otherwise.
#[derive(Debug)]
pub enum Basis {
    /// The file mapped read-only.
    Mapped(Mmap),
    /// The file read into memory (empty files, or filesystems that refuse mmap).
    Read(Vec<u8>),
}

impl Basis {
    /// Maps `file`, falling back to reading it.
    ///
    /// # Errors
    /// When neither mapping nor reading works.
    pub fn open(file: &File) -> io::Result<Basis> {
        let len = file.metadata()?.len();
        if len == 0 {
            return Ok(Basis::Read(Vec::new()));
        }
        // SAFETY: a mapping is undefined behaviour only if the file changes underneath it. We
        // map only basis files on the destination, inside the root Ferry replicates into, which
        // nothing else writes while a round runs (the destination volume is Ferry's), and no
        // inode there is ever modified in place by Ferry itself: new content always goes to a
        // new inode that is renamed over the old name. Live source files, which applications
        // do write, are never mapped; they are read with positioned reads.
        match unsafe { Mmap::map(file) } {
            Ok(m) => Ok(Basis::Mapped(m)),
            Err(_) => {
                use std::io::Read;
                let mut v = Vec::with_capacity(len as usize);
                (&*file).read_to_end(&mut v)?;
                Ok(Basis::Read(v))
            }
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Basis::Mapped(m) => m,
            Basis::Read(v) => v,
        }
    }
}
