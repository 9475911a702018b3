//! Flow control: the entry, file and byte windows bound what is in flight, and never stall.

use super::*;

#[test]
fn tiny_entry_window_bounds_what_the_source_sends() {
    let src = many_files(10, 100);
    let opts = SessionOptions { window_entries: 16, scan_batch: 8, ..SessionOptions::default() };
    // `drive` fails the moment the source sends an entry beyond its credit; the target would
    // too (ProtocolError::Credit). A clean round with this window proves both agree.
    let pair = round(src.clone(), MemTree::default(), opts);
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    assert_eq!(pair.dst.stats().files_new, 1000);
    assert!(pair.flow.peak_entries_ahead <= 16);
    // Scans never exceed the batch size.
    for m in &pair.log.to_dst {
        if let Message::Entries(v) = m {
            assert!(!v.is_empty() && v.len() <= 8, "batch of {}", v.len());
        }
    }
    assert_eq!(pair.flow.entries_sent, 1010);
}

#[test]
fn one_file_window_keeps_one_file_in_flight() {
    let src = many_files(10, 100);
    let opts = SessionOptions {
        window_entries: 16,
        scan_batch: 8,
        window_files: 1,
        max_inflight_work: 4,
        ..SessionOptions::default()
    };
    let mut pair = Pair::new(src.clone(), MemTree::default(), opts).shuffled(3);
    pair.drive().expect("round completes");
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    assert_eq!(pair.flow.peak_files, 1);
    // With the target merging one file at a time the source runs into its entry credit: the
    // window was exercised, not merely never reached.
    assert_eq!(pair.flow.peak_entries_ahead, 16);

    // And a second round through the same tiny windows finds everything unchanged.
    let (src, dst) = pair.into_trees();
    let opts = SessionOptions {
        window_entries: 16,
        scan_batch: 8,
        window_files: 1,
        ..SessionOptions::default()
    };
    let again = round(src.clone(), dst, opts);
    assert_clean(&again);
    assert_eq!(again.dst.stats().files_unchanged, 1000);
    assert_eq!(again.sent_to_dst("Segment"), 0);
}

#[test]
fn byte_window_admits_a_file_larger_than_the_window() {
    // window_bytes is raised to two segments; a three-segment file must still get through.
    let src = sample_tree(true);
    let opts =
        SessionOptions { window_bytes: 1, max_inflight_work: 16, ..SessionOptions::default() };
    let mut pair = Pair::new(src.clone(), MemTree::default(), opts).shuffled(11);
    pair.drive().expect("round completes");
    assert_clean(&pair);
    assert_eq!(pair.dst_fs.tree, src);
    assert!(pair.flow.bytes_sent <= pair.flow.bytes_granted);
}

#[test]
fn scan_batch_of_one_does_not_stall() {
    let src = sample_tree(false);
    let opts = SessionOptions { scan_batch: 1, ..SessionOptions::default() };
    let mut pair = Pair::new(src.clone(), src.clone(), opts);
    let r = pair.drive();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(pair.dst_fs.tree, src);
}
