//! Byte-level helpers for the destination's temp files: names, sparse writes, read-back of
//! kept segments, and reflink-or-copy of unchanged content.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use rustix::fs as rfs;

use crate::fs::walk::TEMP_PREFIX;

/// `.~ferry.<nonce>.`: the prefix of every temp file of the round with this nonce.
pub(super) fn temp_prefix(nonce: u64) -> Vec<u8> {
    let mut v = TEMP_PREFIX.to_vec();
    v.extend_from_slice(format!("{nonce:x}.").as_bytes());
    v
}

/// Reads `len` bytes of a kept segment at `offset`. Past the end of the file reads zeros:
/// trailing zero blocks were never written (they are holes until `Finish` sets the length).
/// A read error leaves a buffer that will not hash as the segment did.
pub(super) fn read_kept(f: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // Unreadable: make sure it cannot pass for the kept bytes.
                buf.iter_mut().for_each(|b| *b = 0xa5);
                break;
            }
        }
    }
    buf
}

/// Writes `data` at `offset`, leaving all-zero 4 KiB blocks as holes (the file is new, so a
/// hole reads as zeros).
pub(super) fn write_sparse(f: &File, data: &[u8], offset: u64) -> io::Result<()> {
    const B: usize = 4096;
    let mut i = 0;
    while i < data.len() {
        let end = (i + B).min(data.len());
        if data[i..end].iter().all(|&b| b == 0) {
            i = end;
            continue;
        }
        let mut j = end;
        while j < data.len() {
            let e = (j + B).min(data.len());
            if data[j..e].iter().all(|&b| b == 0) {
                break;
            }
            j = e;
        }
        f.write_all_at(&data[i..j], offset + i as u64)?;
        i = j;
    }
    Ok(())
}

/// Copies `from` into the new, empty `to`: a reflink where the filesystem shares extents,
/// else the data regions only (holes stay holes).
pub(super) fn copy_content(from: &File, to: &File) -> io::Result<()> {
    if rfs::ioctl_ficlone(to, from).is_ok() {
        return Ok(());
    }
    let len = from.metadata()?.len();
    let mut pos = 0u64;
    while pos < len {
        let data = match rfs::seek(from, rfs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => pos,
        };
        let hole = rfs::seek(from, rfs::SeekFrom::Hole(data)).unwrap_or(len);
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            let want = (hole - off_in) as usize;
            let n = rfs::copy_file_range(
                from.as_fd(),
                Some(&mut off_in),
                to.as_fd(),
                Some(&mut off_out),
                want,
            )?;
            if n == 0 {
                break;
            }
        }
        pos = hole;
    }
    to.set_len(len)
}
