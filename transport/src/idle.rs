//! Inactivity limits for byte streams that have no transport-level idle timeout of their own
//! (TLS over TCP, stdio): [`Idle`] fails a read that has waited `limit` for a byte, and a write
//! that has waited `limit` for room, so a peer that stops (or stops reading) cannot hold a
//! round, and the module it claimed, forever. QUIC has its own (quinn's idle timeout).
//!
//! The clock runs only while this side is waiting on the peer: a reader not polled because
//! its own side is busy is not counted against the peer. An honest peer keeps the stream warm
//! with keep-alive frames (zero-length frames, see [`crate::lanes::spawn_writers`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose reads and writes fail with `TimedOut` after `limit` without progress.
#[derive(Debug)]
pub struct Idle<T> {
    inner: T,
    limit: Duration,
    read_wait: Option<Pin<Box<Sleep>>>,
    write_wait: Option<Pin<Box<Sleep>>>,
}

impl<T> Idle<T> {
    /// Wraps `inner`; `limit` is the longest wait for the peer in either direction.
    pub fn new(inner: T, limit: Duration) -> Idle<T> {
        Idle { inner, limit, read_wait: None, write_wait: None }
    }
}

/// Polls the wait timer of one direction, started at the first `Pending`.
fn expired(slot: &mut Option<Pin<Box<Sleep>>>, limit: Duration, cx: &mut Context<'_>) -> bool {
    let t = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    t.as_mut().poll(cx).is_ready()
}

fn timed_out(limit: Duration, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("idle timeout: the peer {what} for {} s", limit.as_secs_f64()),
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {
                if expired(&mut this.read_wait, this.limit, cx) {
                    this.read_wait = None;
                    return Poll::Ready(Err(timed_out(this.limit, "sent nothing")));
                }
                Poll::Pending
            }
            ready => {
                this.read_wait = None;
                ready
            }
        }
    }
}

impl<T> Idle<T> {
    /// One rule for every write-side poll: waiting for room longer than the limit is a
    /// timeout; anything ready resets the wait.
    fn write_side<R>(
        &mut self,
        p: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match p {
            Poll::Pending => {
                if expired(&mut self.write_wait, self.limit, cx) {
                    self.write_wait = None;
                    return Poll::Ready(Err(timed_out(self.limit, "read nothing")));
                }
                Poll::Pending
            }
            ready => {
                self.write_wait = None;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_side(p, cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_side(p, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.write_side(p, cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_silent_peer_times_out_and_a_talking_one_does_not() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Idle::new(a, Duration::from_millis(300));
        let talker = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                b.write_all(b"x").await.unwrap();
            }
            b
        });
        let mut buf = [0u8; 1];
        for _ in 0..5 {
            a.read_exact(&mut buf).await.unwrap();
        }
        let _b = talker.await.unwrap();
        let e = a.read_exact(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // A peer that stops reading: the write waits for room, then fails.
        let e = loop {
            if let Err(e) = a.write_all(&[0u8; 1024]).await {
                break e;
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
