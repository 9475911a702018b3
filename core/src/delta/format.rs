//! The delta format: ops parsed out of a delta, counted, encoded back, and applied to a basis.

use super::DeltaError;

/// Literal and matched byte counts of a delta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaCounts {
    /// Bytes carried in the delta itself.
    pub literal: u64,
    /// Bytes copied from the basis.
    pub matched: u64,
}

/// Applies one segment's `delta` to `basis`, appending to `out`, refusing more than `limit`
/// bytes of output.
///
/// # Errors
/// [`DeltaError::Apply`] for any malformed, out-of-range or over-long delta.
pub fn apply(
    basis: &[u8],
    delta: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), DeltaError> {
    fast_rsync::apply_limited(basis, delta, out, limit)?;
    Ok(())
}

/// One instruction of a delta: copy from the basis, or take bytes from the new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `len` bytes from the basis at `offset`.
    Copy {
        /// Offset in the basis.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// `len` literal bytes (carried in the delta).
    Literal {
        /// Length.
        len: u64,
    },
}

/// Parses a well-formed delta into its instructions (literal bytes are skipped over).
///
/// Returns `None` for a delta that does not parse.
pub fn ops(delta: &[u8]) -> Option<Vec<Op>> {
    let mut out = Vec::new();
    let mut rest = delta.strip_prefix(&DELTA_MAGIC.to_be_bytes())?;
    loop {
        let (&op, tail) = rest.split_first()?;
        rest = tail;
        match op {
            0 => return rest.is_empty().then_some(out),
            1..=0x40 => {
                let n = usize::from(op);
                rest = rest.get(n..)?;
                out.push(Op::Literal { len: n as u64 });
            }
            0x41..=0x44 => {
                let w = 1usize << (op - 0x41);
                let n = be(rest.get(..w)?);
                rest = rest.get(w..)?;
                rest = rest.get(usize::try_from(n).ok()?..)?;
                out.push(Op::Literal { len: n });
            }
            0x45..=0x54 => {
                let k = op - 0x45;
                let (ow, lw) = (1usize << (k / 4), 1usize << (k % 4));
                let offset = be(rest.get(..ow)?);
                let len = be(rest.get(ow..ow + lw)?);
                rest = rest.get(ow + lw..)?;
                out.push(Op::Copy { offset, len });
            }
            _ => return None,
        }
    }
}

/// Counts literal and matched bytes of a well-formed delta (as produced by
/// [`DeltaIndex::diff`](super::DeltaIndex::diff)).
///
/// Returns `None` for a delta that does not parse.
pub fn count(delta: &[u8]) -> Option<DeltaCounts> {
    let mut c = DeltaCounts::default();
    for op in ops(delta)? {
        match op {
            Op::Copy { len, .. } => c.matched += len,
            Op::Literal { len } => c.literal += len,
        }
    }
    Some(c)
}

const DELTA_MAGIC: u32 = 0x7273_0236;

/// Builds a delta (in the format [`apply`] reads) from instructions; `data` holds the literal
/// bytes, consumed in order by the `Literal` ops. Adjacent copies that continue each other are
/// merged.
///
/// # Panics
/// If the literal ops ask for more bytes than `data` holds (a caller bug, not peer input).
pub fn encode(ops: &[Op], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&DELTA_MAGIC.to_be_bytes());
    let mut pos = 0usize;
    let mut pending: Option<(u64, u64)> = None;
    let flush = |out: &mut Vec<u8>, p: &mut Option<(u64, u64)>| {
        if let Some((offset, len)) = p.take() {
            let (oc, ob) = width(offset);
            let (lc, lb) = width(len);
            out.push(0x45 + oc * 4 + lc);
            out.extend_from_slice(&offset.to_be_bytes()[8 - ob..]);
            out.extend_from_slice(&len.to_be_bytes()[8 - lb..]);
        }
    };
    for op in ops {
        match *op {
            Op::Copy { len: 0, .. } | Op::Literal { len: 0 } => {}
            Op::Copy { offset, len } => match &mut pending {
                Some((o, l)) if *o + *l == offset => *l += len,
                _ => {
                    flush(&mut out, &mut pending);
                    pending = Some((offset, len));
                }
            },
            Op::Literal { len } => {
                flush(&mut out, &mut pending);
                let n = len as usize;
                if n <= 64 {
                    out.push(n as u8);
                } else {
                    let (c, b) = width(len);
                    out.push(0x41 + c);
                    out.extend_from_slice(&len.to_be_bytes()[8 - b..]);
                }
                out.extend_from_slice(&data[pos..pos + n]);
                pos += n;
            }
        }
    }
    flush(&mut out, &mut pending);
    out.push(0);
    out
}

/// The size class (0..=3) and byte width of an integer in the delta format.
fn width(v: u64) -> (u8, usize) {
    if v <= u64::from(u8::MAX) {
        (0, 1)
    } else if v <= u64::from(u16::MAX) {
        (1, 2)
    } else if v <= u64::from(u32::MAX) {
        (2, 4)
    } else {
        (3, 8)
    }
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}
