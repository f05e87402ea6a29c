//! Resident memory per token at 500k, 1M and 2M tokens, every space defined. Target: ≤ 160
//! bytes per token, worst of the three sizes.
//!
//! Each size runs in a child process (this binary re-executed with `--child N`): a freed store
//! leaves the allocator's heap grown and fragmented, so a second size in the same process would
//! start from an inflated baseline and reuse resident pages, and its figure would be wrong in
//! either direction. A fresh process per size measures only that size's store.
//!
//! Besides RSS, a counting global allocator reports the heap bytes the store holds live, which
//! separates what the data structures ask for from what the allocator keeps resident.
//! `cargo bench --bench memory`; figures go in the README.

use std::process::Command as Process;
use std::time::Instant;

use neurograph::store::{Command, Store};
use neurograph::telemetry::resident_bytes;

mod support;

use support::alloc::{live_bytes, CountingAlloc};
use support::{draft, XorShift, AT, CHUNK};

/// Store sizes to measure.
const SIZES: [usize; 3] = [500_000, 1_000_000, 2_000_000];
/// The target, in bytes of resident memory per token.
const TARGET_BYTES_PER_TOKEN: f64 = 160.0;

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// One size, in this process: prints `N,rss_bytes,rss_per_token,heap_bytes,heap_per_token,secs`.
fn measure(tokens: usize) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let rss_before = resident_bytes();
    let heap_before = live_bytes();
    let started = Instant::now();
    let store = Store::default();
    for chunk in 0..tokens.div_ceil(CHUNK) {
        let pair = chunk % 256;
        let count = CHUNK.min(tokens - chunk * CHUNK);
        let drafts = (0..count).map(|_| draft(&mut rng, pair)).collect();
        store
            .apply(Command::BatchCreate { drafts, at: AT })
            .expect("sizes fit the id space");
    }
    let secs = started.elapsed().as_secs_f64();
    let rss = resident_bytes().saturating_sub(rss_before);
    let heap = live_bytes().saturating_sub(heap_before);
    assert_eq!(store.tables().len(), tokens as u64);
    println!(
        "{tokens},{rss},{:.1},{heap},{:.1},{secs:.2}",
        rss as f64 / tokens as f64,
        heap as f64 / tokens as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|a| a == "--child") {
        let tokens = args
            .get(position + 1)
            .and_then(|n| n.parse().ok())
            .expect("--child takes a token count");
        measure(tokens);
        return;
    }
    // `cargo test --benches` runs this with no `--bench`: there is nothing to check quickly.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }

    let exe = std::env::current_exe().expect("own path to re-execute");
    println!(
        "{:>10} {:>14} {:>12} {:>14} {:>12} {:>8}",
        "tokens", "rss bytes", "rss B/token", "heap bytes", "heap B/token", "load s"
    );
    let mut worst: f64 = 0.0;
    for tokens in SIZES {
        let output = Process::new(&exe)
            .args(["--child", &tokens.to_string()])
            .output()
            .expect("child runs");
        assert!(
            output.status.success(),
            "child for {tokens} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = String::from_utf8(output.stdout).expect("child prints UTF-8");
        let fields: Vec<&str> = line.trim().split(',').collect();
        let [n, rss, rss_per, heap, heap_per, secs] = fields[..] else {
            panic!("child printed {line:?}");
        };
        worst = worst.max(rss_per.parse().expect("child prints a number"));
        println!("{n:>10} {rss:>14} {rss_per:>12} {heap:>14} {heap_per:>12} {secs:>8}");
    }
    let verdict = if worst <= TARGET_BYTES_PER_TOKEN {
        "met"
    } else {
        "NOT met"
    };
    println!("worst {worst:.1} B/token resident; target ≤ {TARGET_BYTES_PER_TOKEN}: {verdict}");
}
