//! Heap memory of the spatial index (8 R-trees, every token defined in every space) per token,
//! after a bulk build and after one-by-one inserts. Targets at 1M tokens: ≤ 500 bytes per token
//! bulk-built, ≤ 950 after single inserts.
//!
//! Each case runs in a child process (this binary re-executed with `--child CASE N`), so that
//! one case's freed trees do not shape the next one's heap. Only the trees are counted: the
//! tokens they are built from exist before the baseline is taken.
//! `cargo bench --bench index_memory`; figures go in the README.

use std::process::Command as Process;
use std::time::Instant;

use neurograph::store::SpaceTrees;
use neurograph::telemetry::resident_bytes;

mod support;

use support::alloc::{live_bytes, CountingAlloc};
use support::{tokens, XorShift};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Tokens indexed.
const TOKENS: usize = 1_000_000;
/// (case, target heap bytes per token).
const CASES: [(&str, f64); 2] = [("bulk", 500.0), ("inserts", 950.0)];

/// One case, in this process: prints `heap_bytes,rss_bytes,secs`.
fn measure(case: &str, n: usize) {
    let tokens = tokens(&mut XorShift(0x2545_F491_4F6C_DD1D), n);
    let heap_before = live_bytes();
    let rss_before = resident_bytes();
    let started = Instant::now();
    let trees = match case {
        "bulk" => SpaceTrees::bulk_built(&tokens),
        "inserts" => {
            let trees = SpaceTrees::default();
            for token in &tokens {
                trees.insert(std::slice::from_ref(token));
            }
            trees
        }
        other => panic!("unknown case {other}"),
    };
    let secs = started.elapsed().as_secs_f64();
    let heap = live_bytes().saturating_sub(heap_before);
    let rss = resident_bytes().saturating_sub(rss_before);
    assert!(!trees.is_empty());
    println!("{heap},{rss},{secs:.2}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|a| a == "--child") {
        let case = &args[position + 1];
        let n = args[position + 2].parse().expect("--child CASE N");
        measure(case, n);
        return;
    }
    // `cargo test --benches` runs this with no `--bench`: there is nothing to check quickly.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let exe = std::env::current_exe().expect("own path to re-execute");
    println!(
        "{:>8} {:>10} {:>14} {:>12} {:>12} {:>8} {:>8}",
        "case", "tokens", "heap bytes", "heap B/tok", "rss B/tok", "secs", "target"
    );
    for (case, target) in CASES {
        let output = Process::new(&exe)
            .args(["--child", case, &TOKENS.to_string()])
            .output()
            .expect("child runs");
        assert!(
            output.status.success(),
            "child {case} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = String::from_utf8(output.stdout).expect("UTF-8");
        let fields: Vec<f64> = line
            .trim()
            .split(',')
            .map(|f| f.parse().expect("a number"))
            .collect();
        let [heap, rss, secs] = fields[..] else {
            panic!("child printed {line:?}");
        };
        let per_token = heap / TOKENS as f64;
        let verdict = if per_token <= target {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "{case:>8} {TOKENS:>10} {heap:>14} {per_token:>12.1} {:>12.1} {secs:>8.2} {:>8}",
            rss / TOKENS as f64,
            format!("≤{target} {verdict}")
        );
    }
}
