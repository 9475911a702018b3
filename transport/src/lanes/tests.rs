#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

/// One frame in the simulation: its place in the sender's order, its lane, whether it is a
/// barrier, and the dependencies the sender stamped on it.
#[derive(Debug, Clone)]
struct Sim {
    seq: usize,
    lane: usize,
    barrier: bool,
    deps: Vec<u64>,
}

/// Runs a receiver that reads lanes in the order `picks` suggests (at most one head per
/// lane, as the real one), delivering whatever is ready first. Returns the delivery order, or
/// `None` on a deadlock.
fn simulate(data: usize, ops: &[(usize, bool)], picks: &[usize]) -> Option<Vec<Sim>> {
    let mut stamp = Stamp::new(data);
    let mut queues: Vec<std::collections::VecDeque<Sim>> = vec![Default::default(); data + 1];
    for (seq, &(lane, barrier)) in ops.iter().enumerate() {
        let lane = lane % (data + 1);
        let deps = stamp.next(lane, barrier);
        queues[lane].push_back(Sim { seq, lane, barrier, deps });
    }
    let mut merge = Merge::new(data);
    let mut heads: Vec<Option<Sim>> = vec![None; data + 1];
    let mut out = Vec::new();
    let mut pick = picks.iter().cycle();
    while out.len() < ops.len() {
        if let Some(l) =
            (0..=data).find(|&l| heads[l].as_ref().is_some_and(|h| merge.ready(l, &h.deps)))
        {
            let h = heads[l].take().unwrap();
            merge.delivered(l);
            out.push(h);
            continue;
        }
        let readable: Vec<usize> =
            (0..=data).filter(|&l| heads[l].is_none() && !queues[l].is_empty()).collect();
        if readable.is_empty() {
            return None;
        }
        let l = readable[pick.next().copied().unwrap_or(0) % readable.len()];
        heads[l] = queues[l].pop_front();
    }
    Some(out)
}

proptest! {
    /// Whatever the sender does and however the receiver's reads interleave, every frame is
    /// delivered, lanes keep their order, a data frame never overtakes a control frame sent
    /// before it, and a barrier never overtakes a data frame sent before it.
    #[test]
    fn merge_meets_every_dependency_and_never_deadlocks(
        data in 0usize..5,
        ops in proptest::collection::vec((0usize..5, any::<bool>()), 0..200),
        picks in proptest::collection::vec(any::<usize>(), 1..50),
    ) {
        let out = simulate(data, &ops, &picks);
        prop_assert!(out.is_some(), "deadlock");
        let out = out.unwrap();
        prop_assert_eq!(out.len(), ops.len());
        let pos: std::collections::HashMap<usize, usize> =
            out.iter().enumerate().map(|(i, s)| (s.seq, i)).collect();
        for a in &out {
            for b in &out {
                if a.seq >= b.seq {
                    continue;
                }
                // a was sent before b: must b wait for a?
                let must = a.lane == b.lane
                    || (b.lane != 0 && a.lane == 0)
                    || (b.lane == 0 && b.barrier && a.lane != 0);
                if must {
                    prop_assert!(pos[&a.seq] < pos[&b.seq], "{a:?} delivered after {b:?}");
                }
            }
        }
    }
}

#[test]
fn non_barrier_control_frames_overtake_data() {
    // A control frame that is not a barrier must not wait for bulk data sent before it: the
    // point of the control lane.
    let mut stamp = Stamp::new(2);
    let d1 = stamp.next(1, false);
    let c = stamp.next(0, false);
    let merge = Merge::new(2);
    assert!(merge.ready(0, &c));
    assert!(merge.ready(1, &d1));
    let b = stamp.next(0, true);
    assert!(!merge.ready(0, &b), "a barrier waits for the data frame");
}

#[test]
fn a_dependency_on_an_ended_lane_is_an_error() {
    let merge = Merge::new(2);
    assert!(merge.check_ended(0, &[3, 0], &[false, true, false]).is_err());
    assert!(merge.check_ended(0, &[3, 0], &[false, false, true]).is_ok());
    assert!(merge.check_ended(1, &[1], &[true, false, false]).is_err());
}

fn credit(n: u64) -> Message {
    Message::Credit { entries: n, bytes: 0, decided: 0 }
}

fn credit_id(m: &Message) -> u64 {
    match m {
        Message::Credit { entries, .. } => *entries,
        other => panic!("unexpected {other:?}"),
    }
}

/// Pairs of in-memory byte streams, one per lane, each direction buffering only `buf` bytes so
/// that a lane the receiver does not read blocks its writer.
fn pipes(lanes: usize, buf: usize) -> (Vec<LinkWriter>, Vec<LinkReader>) {
    let mut ws = Vec::new();
    let mut rs = Vec::new();
    for _ in 0..lanes {
        let (a, b) = tokio::io::duplex(buf);
        ws.push(Box::pin(a) as LinkWriter);
        rs.push(Box::pin(b) as LinkReader);
    }
    (ws, rs)
}

#[tokio::test]
async fn lanes_deliver_in_dependency_order_through_small_buffers() {
    let (ws, rs) = pipes(3, 4096);
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let (mut tx, writers) = spawn_writers(ws, sent.clone(), 0, None);
    let mut rx = spawn_readers(rs, Limits::default(), received.clone());
    // A big message on lane 1 fills its pipe many times over; lane 2 and lane 0 keep moving.
    let big = Message::Segment {
        file: 1,
        index: 0,
        payload: ferry_core::message::Payload::Literal,
        encoding: ferry_core::message::Encoding::Raw,
        data: vec![7u8; 1 << 20],
    };
    tx.send(1, big, false);
    let mut order = Vec::new();
    for i in 0..50u64 {
        tx.send((i % 3) as usize, credit(i), i % 10 == 9);
    }
    drop(tx);
    let mut got_big = false;
    while let Some(m) = rx.next().await.unwrap() {
        match m {
            Message::Segment { data, .. } => {
                assert_eq!(data.len(), 1 << 20);
                got_big = true;
                order.push(u64::MAX);
            }
            m => order.push(credit_id(&m)),
        }
    }
    writers.await.unwrap().unwrap();
    assert!(got_big);
    assert_eq!(order.len(), 51);
    assert_eq!(sent.load(Ordering::Relaxed), received.load(Ordering::Relaxed));
    let at = |id: u64| order.iter().position(|x| *x == id).unwrap();
    let big_at = at(u64::MAX);
    for i in 0..50u64 {
        let lane = i % 3;
        if lane == 0 && i % 10 == 9 {
            // A barrier comes after the big segment and every earlier data frame.
            assert!(at(i) > big_at, "barrier {i} overtook the big segment");
            for j in (0..i).filter(|j| j % 3 != 0) {
                assert!(at(i) > at(j), "barrier {i} overtook data {j}");
            }
        }
        if lane != 0 {
            for j in (0..i).filter(|j| j % 3 == 0) {
                assert!(at(i) > at(j), "data {i} overtook control {j}");
            }
        }
        for j in (0..i).filter(|j| j % 3 == lane) {
            assert!(at(i) > at(j), "lane order broken: {j} after {i}");
        }
    }
    // Lane 2's frames did not wait for the megabyte on lane 1.
    assert!(at(2) < big_at, "lane 2 queued behind lane 1: {order:?}");
}

#[tokio::test]
async fn a_frame_waiting_for_messages_that_never_come_is_an_error() {
    let (mut ws, rs) = pipes(2, 1 << 16);
    let mut rx = spawn_readers(rs, Limits::default(), Arc::new(AtomicU64::new(0)));
    // Lane 0 frame that claims to follow 3 messages on lane 1; lane 1 then ends empty.
    let mut frame = 3u64.to_le_bytes().to_vec();
    ferry_core::message::write_frame(&credit(1), &mut frame);
    ws[0].write_all(&frame).await.unwrap();
    ws[0].shutdown().await.unwrap();
    ws[1].shutdown().await.unwrap();
    let e = rx.next().await.unwrap_err();
    assert!(e.to_string().contains("depends on 3"), "{e}");
}

#[tokio::test]
async fn a_lane_cut_mid_frame_is_an_error() {
    let (mut ws, rs) = pipes(2, 1 << 16);
    let mut rx = spawn_readers(rs, Limits::default(), Arc::new(AtomicU64::new(0)));
    ws[1].write_all(&[1, 0, 0]).await.unwrap();
    ws[1].shutdown().await.unwrap();
    assert!(rx.next().await.is_err());
}

#[tokio::test]
async fn frames_that_wait_for_each_other_are_an_error() {
    let (mut ws, rs) = pipes(2, 1 << 16);
    let mut rx = spawn_readers(rs, Limits::default(), Arc::new(AtomicU64::new(0)));
    // Lane 0 waits for one message on lane 1, which waits for one on lane 0; both stay open.
    let mut a = 1u64.to_le_bytes().to_vec();
    ferry_core::message::write_frame(&credit(1), &mut a);
    let mut b = 1u64.to_le_bytes().to_vec();
    ferry_core::message::write_frame(&credit(2), &mut b);
    ws[0].write_all(&a).await.unwrap();
    ws[1].write_all(&b).await.unwrap();
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), rx.next())
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(e.to_string().contains("wait for each other"), "{e}");
}
