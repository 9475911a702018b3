//! Criterion micro-benchmarks of Ferry's delta engine and hashing.
//!
//! One 64 MiB seeded pseudo-random buffer and a copy with 20 scattered 4 KiB overwrites and two
//! short inserts. Each group reports throughput in bytes of the buffer processed:
//!
//! - `signature`: `ferry_core::delta::signature_blocks` in a one-thread pool and in the default
//!   (all cores) pool.
//! - `delta`: `DeltaIndex::diff` over the whole buffer (one thread), and segment-parallel diffs
//!   (`par_chunks(SEGMENT_LEN)` against the shared index), as the agent does.
//! - `patch`: `ferry_core::delta::apply` of the whole-buffer delta (one thread), and of the
//!   segment deltas in parallel, both into reused output buffers.
//! - `blake3`: `blake3::hash` (one thread), `Hasher::update_rayon`, and
//!   `ferry_core::hash::hash_segment` per segment in parallel + `merge_segments`.
//!
//! Sample counts are small (10 samples, 3 s each) so `cargo bench -p ferry-bench` finishes in
//! a few minutes on two cores.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use ferry_bench::{Mutations, Signed, Workload};
use ferry_core::delta::{self, DeltaIndex};
use ferry_core::SEGMENT_LEN;

const SIZE: usize = 64 << 20;
const SEED: u64 = 0x5EED;

struct Fixture {
    w: Workload,
    signed: Signed,
    index: DeltaIndex,
    whole_delta: Vec<u8>,
    segment_deltas: Vec<Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let m = Mutations { overwrites: 20, inserts: 2, ..Mutations::REFERENCE };
        let w = Workload::generate(SIZE, m, SEED);
        let signed = ferry_bench::sign(&w.old);
        let index = ferry_bench::index(&signed).expect("signature within default limits");
        let whole_delta = index.diff(&w.new).expect("diff");
        let segment_deltas = ferry_bench::diff_segments(&index, &w.new).expect("diff");
        // Both ways of cutting the work must rebuild the new version, or timing them is moot.
        let mut whole = Vec::with_capacity(w.new.len());
        delta::apply(&w.old, &whole_delta, &mut whole, w.new.len()).expect("apply");
        assert!(whole == w.new, "whole-buffer delta does not rebuild the new version");
        let rebuilt =
            ferry_bench::patch_segments(&w.old, &segment_deltas, w.new.len()).expect("apply");
        assert!(rebuilt.concat() == w.new, "segment deltas do not rebuild the new version");
        Fixture { w, signed, index, whole_delta, segment_deltas }
    })
}

fn one_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("one-thread pool")
}

fn group<'a>(c: &'a mut Criterion, name: &str, bytes: usize) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    // Every iteration takes tens of milliseconds: flat sampling keeps the run near the
    // measurement time instead of criterion's linear ramp of 1 + 2 + ... + 10 iterations.
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(bytes as u64));
    g
}

fn signature(c: &mut Criterion) {
    let f = fixture();
    let bs = f.signed.header.block_size;
    let pool = one_thread();
    let mut g = group(c, "signature", f.w.old.len());
    g.bench_function("1-thread", |b| {
        b.iter(|| pool.install(|| delta::signature_blocks(black_box(&f.w.old), bs)))
    });
    g.bench_function("parallel", |b| b.iter(|| delta::signature_blocks(black_box(&f.w.old), bs)));
    g.finish();
}

fn diff(c: &mut Criterion) {
    let f = fixture();
    let mut g = group(c, "delta", f.w.new.len());
    g.bench_function("whole-1-thread", |b| {
        b.iter(|| f.index.diff(black_box(&f.w.new)).expect("diff"))
    });
    g.bench_function("segments-parallel", |b| {
        b.iter(|| ferry_bench::diff_segments(&f.index, black_box(&f.w.new)).expect("diff"))
    });
    g.finish();
}

fn patch(c: &mut Criterion) {
    let f = fixture();
    let len = f.w.new.len();
    let mut g = group(c, "patch", len);
    // Reused, already-touched output buffers: a fresh 64 MiB allocation per iteration is a
    // fresh mmap, and would time 16k page faults rather than the patch.
    let mut out = Vec::with_capacity(len);
    out.resize(len, 0xA5);
    g.bench_function("whole-1-thread", |b| {
        b.iter(|| {
            out.clear();
            delta::apply(black_box(&f.w.old), &f.whole_delta, &mut out, len).expect("apply");
            black_box(out.len())
        })
    });
    let mut outs = ferry_bench::segment_buffers(len);
    g.bench_function("segments-parallel", |b| {
        b.iter(|| {
            ferry_bench::patch_segments_into(black_box(&f.w.old), &f.segment_deltas, &mut outs, len)
                .expect("apply")
        })
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let f = fixture();
    let data = &f.w.new;
    let mut g = group(c, "blake3", data.len());
    g.bench_function("hash-1-thread", |b| b.iter(|| blake3::hash(black_box(data))));
    g.bench_function("update_rayon", |b| {
        b.iter(|| blake3::Hasher::new().update_rayon(black_box(data)).finalize())
    });
    g.bench_function("segments-parallel", |b| {
        b.iter(|| {
            let segments: Vec<&[u8]> = black_box(data).chunks(SEGMENT_LEN).collect();
            ferry_bench::hash_segments(&segments).expect("aligned segments")
        })
    });
    g.finish();
    // The three must agree, or the comparison means nothing.
    let segments: Vec<&[u8]> = data.chunks(SEGMENT_LEN).collect();
    assert_eq!(ferry_bench::hash_segments(&segments), Some(*blake3::hash(data).as_bytes()));
}

criterion_group!(benches, signature, diff, patch, hashing);
criterion_main!(benches);
