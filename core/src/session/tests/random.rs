//! Random trees, random destination states, random completion orders and random faults.

use super::*;

/// A random node for `p`: mostly files (empty, small text, or noise big enough to be sent as a
/// delta), some directories and symlinks.
fn random_node(rng: &mut SplitMix64, salt: u64) -> MemNode {
    let m = meta(0o600 | (rng.index(2) as u32 * 0o044), 1000 + rng.index(3) as i64);
    match rng.index(10) {
        0 | 1 => MemNode::Dir { meta: m },
        // A symlink's own mode is always 0777 on Linux; the sessions rightly ignore it.
        2 => MemNode::Symlink {
            target: format!("t{}", rng.index(4)).into_bytes(),
            meta: Meta { mode: 0o777, ..m },
        },
        3 => MemNode::File { meta: m, bytes: Vec::new() },
        4 | 5 => MemNode::File { meta: m, bytes: text(1 + rng.index(900), "r") },
        _ => MemNode::File { meta: m, bytes: noise(1024 + rng.index(70_000), salt) },
    }
}

fn random_tree(rng: &mut SplitMix64, nodes: usize) -> MemTree {
    let mut t = MemTree::default();
    let mut dirs: Vec<Option<RelPath>> = vec![None];
    for i in 0..nodes {
        let name = format!("n{}", rng.index(12));
        let p = match &dirs[rng.index(dirs.len())] {
            Some(d) => d.join(name.as_bytes()),
            None => RelPath::from_component(name.as_bytes()),
        }
        .expect("valid name");
        if t.0.contains_key(&p) {
            continue;
        }
        let node = random_node(rng, i as u64);
        if matches!(node, MemNode::Dir { .. }) {
            dirs.push(Some(p.clone()));
        }
        t.0.insert(p, node);
    }
    t
}

/// An older version of `src`, as a destination might hold it: content edited (with a new
/// mtime), bytes inserted, modes changed, entries missing, entries of another type, and
/// entries the source no longer has.
fn older_version(src: &MemTree, rng: &mut SplitMix64) -> MemTree {
    let mut t = src.clone();
    let paths: Vec<RelPath> = t.0.keys().cloned().collect();
    for (i, p) in paths.iter().enumerate() {
        let Some(node) = t.0.get_mut(p) else { continue };
        match (rng.index(8), node) {
            (0, _) => {
                t.remove_subtree(p);
            }
            (1, MemNode::File { meta, bytes }) if !bytes.is_empty() => {
                let at = rng.index(bytes.len());
                bytes[at] ^= 0x55;
                meta.mtime_ns -= 7;
            }
            (2, MemNode::File { meta, bytes }) => {
                let at = rng.index(bytes.len() + 1);
                bytes.splice(at..at, noise(1 + rng.index(3000), i as u64));
                meta.mtime_ns -= 7;
            }
            (3, MemNode::File { meta, .. } | MemNode::Dir { meta }) => {
                meta.mode ^= 0o004;
            }
            (4, _) => {
                // Another type of entry at the same name (a directory loses its contents).
                t.remove_subtree(p);
                let node = match random_node(rng, 99) {
                    MemNode::Dir { meta } => MemNode::File { meta, bytes: text(10, "was") },
                    _ => MemNode::Dir { meta: meta(0o755, 5) },
                };
                t.0.insert(p.clone(), node);
            }
            (5, MemNode::Dir { .. }) => {
                let extra = p.join(format!("extra{i}").as_bytes()).expect("valid name");
                t.0.insert(extra, random_node(rng, i as u64 + 500));
            }
            _ => {}
        }
    }
    t
}

#[test]
fn random_trees_converge_in_one_round_and_then_stay_put() {
    for seed in 0..24u64 {
        let mut rng = SplitMix64::new(seed);
        let src = random_tree(&mut rng, 80);
        let dst = older_version(&src, &mut rng);
        // Small, varying windows so flow control, the file window and the local scan refills
        // are all in play; checksum mode on every other seed.
        let opts = SessionOptions {
            delete: true,
            checksum: seed % 2 == 1,
            window_entries: 4 + rng.index(16) as u64,
            window_files: 1 + rng.index(4),
            scan_batch: 2 + rng.index(8),
            max_inflight_work: 1 + rng.index(8),
            ..SessionOptions::default()
        };
        let mut pair = Pair::new(src.clone(), dst, opts.clone()).shuffled(seed);
        pair.drive().unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        assert_clean(&pair);
        assert_eq!(pair.dst_fs.tree, src, "seed {seed}");

        let (src, dst) = pair.into_trees();
        let mut again = Pair::new(src.clone(), dst, opts).shuffled(seed + 1000);
        again.drive().unwrap_or_else(|e| panic!("seed {seed}, second round: {e:?}"));
        assert_clean(&again);
        assert_eq!(again.dst_fs.tree, src, "seed {seed}, second round");
        assert_eq!(again.sent_to_dst("Segment"), 0, "seed {seed}: data sent for nothing");
        assert!(again.log.events.is_empty(), "seed {seed}: {:?}", again.log.events);
    }
}

#[test]
fn random_faults_spoil_only_their_own_files() {
    let (mut failed, mut resent) = (0, 0);
    for seed in 0..24u64 {
        let mut rng = SplitMix64::new(seed ^ 0xfa17);
        let src = random_tree(&mut rng, 60);
        let dst = older_version(&src, &mut rng);
        let opts = SessionOptions {
            delete: true,
            window_entries: 4 + rng.index(16) as u64,
            window_files: 1 + rng.index(4),
            scan_batch: 2 + rng.index(8),
            max_inflight_work: 1 + rng.index(8),
            ..SessionOptions::default()
        };
        let mut pair = Pair::new(src.clone(), dst, opts.clone()).shuffled(seed);
        // Some files change under the reader, some rebuild wrong once (resent), some twice
        // (given up).
        let mut faulty = Vec::new();
        for (p, n) in &src.0 {
            if !matches!(n, MemNode::File { .. }) {
                continue;
            }
            match rng.index(8) {
                0 => {
                    pair.src_fs.touch_on_read.insert(p.clone());
                }
                1 => {
                    pair.dst_fs.corrupt.insert(p.clone(), 1);
                }
                2 => {
                    pair.dst_fs.corrupt.insert(p.clone(), 2);
                }
                _ => continue,
            }
            faulty.push(p.clone());
        }
        pair.drive().unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        assert_clean(&pair);
        let s = *pair.dst.stats();
        assert!(s.files_failed + s.files_resent <= faulty.len() as u64, "seed {seed}: {s:?}");
        failed += s.files_failed;
        resent += s.files_resent;

        // Everywhere else the destination is the source.
        let spoiled = |p: &RelPath| faulty.iter().any(|f| p.starts_with(f));
        let (src_now, dst) = pair.into_trees();
        let clean = |t: &MemTree| -> Vec<(RelPath, MemNode)> {
            t.0.iter().filter(|(p, _)| !spoiled(p)).map(|(p, n)| (p.clone(), n.clone())).collect()
        };
        assert_eq!(clean(&dst), clean(&src_now), "seed {seed}");

        // And a round without faults repairs the rest.
        let again = round(src_now.clone(), dst, opts);
        assert_clean(&again);
        assert_eq!(again.dst_fs.tree, src_now, "seed {seed}, repair round");
    }
    // The faults did fire: files were given up and files were resent.
    assert!(failed > 0 && resent > 0, "failed {failed}, resent {resent}");
}
