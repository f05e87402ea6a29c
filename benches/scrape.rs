//! In-process benchmark of a `/metrics` scrape at 1,000,000 tokens: the time of
//! `neurograph::metrics::render(Some(&engine))`, the whole exposition the side port serves
//! (recorded series, domain gauges read from the engine, the process collector). Target
//! (issue 12): ≤ 5 ms.
//!
//! The engine is `Engine::in_memory` with every hook (spatial index, grids, CDNA, feed), loaded
//! through `BatchCreate`s of `CHUNK` tokens with all eight spaces defined, as `benches/store.rs`
//! preloads its store. The recorder is installed first (`neurograph::metrics::handle()`), then
//! `RpcMetricsLayer::new()` registers every served method's series at zero, as the server does
//! at start, and calls driven through that layer (around a stub answering trailers-only with
//! the requested code) give every method `OK` calls, a few methods also `InvalidArgument` and
//! `NotFound`, so the exposition has the counters and histograms a busy server's has. The
//! histograms get fresh samples before every scrape (outside the timing) so that each
//! measured render also drains recorded samples, as a real scrape does.
//!
//! `cargo bench --bench scrape`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use neurograph::metrics::{self, Rejection, RpcMetricsLayer};
use neurograph::store::durable::Durability;
use neurograph::store::{Command, Engine, EngineOptions};
use prost::Message as _;
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};

mod support;

use support::{draft, preloaded_id, XorShift, AT, CHUNK};

/// Tokens preloaded before any measurement.
const PRELOAD: usize = 1_000_000;
/// Tokens preloaded when run as a test (`cargo test --benches`: each bench once, unoptimised).
const PRELOAD_AS_TEST: usize = 10_000;
/// Target for one render, in milliseconds.
const TARGET_MS: f64 = 5.0;
/// Services whose methods get calls (what `neurograph::server::SERVED_SERVICES` lists).
const SERVICES: [&str; 4] = [
    "neurograph.v1.TokenService",
    "neurograph.v1.GridService",
    "neurograph.v1.CDNAService",
    "neurograph.v1.System",
];
/// Methods that also get failed calls, and their codes (gRPC numbers).
const FAILING: [(&str, &[i32]); 3] = [
    ("/neurograph.v1.TokenService/GetToken", &[3, 5]),
    ("/neurograph.v1.TokenService/UpdateToken", &[3, 5, 9]),
    ("/neurograph.v1.TokenService/CreateToken", &[3, 8]),
];

/// An engine holding `tokens` tokens over all 256 pairs, loaded through the write path.
fn preloaded(rng: &mut XorShift, tokens: usize) -> Engine {
    let engine = Engine::in_memory(&EngineOptions {
        data_dir: None,
        durability: Durability::None,
        batch_delay: Duration::from_millis(2),
        max_grid_memberships: 10_000_000,
        watch_lag_limit: 10_000,
        watch_retention: 1_000_000,
        store_cache_bytes: 64 << 20,
        replicated: false,
    });
    let started = Instant::now();
    for chunk in 0..tokens / CHUNK {
        let pair = chunk % 256;
        let drafts = (0..CHUNK).map(|_| draft(rng, pair)).collect();
        engine
            .store
            .apply(Command::BatchCreate { drafts, at: AT })
            .expect("preload fits the id space");
    }
    assert!(engine.store.get(preloaded_id(tokens - 1)).is_some());
    eprintln!(
        "preloaded {} tokens (with the spatial index) in {:.2?}",
        engine.store.tables().len(),
        started.elapsed()
    );
    engine
}

/// `/service/method` of every method of `SERVICES`, plus health's.
fn method_paths() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(neurograph::api::FILE_DESCRIPTOR_SET)
        .expect("a valid descriptor set");
    let mut paths = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "neurograph.v1") {
        for service in &file.service {
            let name = format!("neurograph.v1.{}", service.name());
            if SERVICES.contains(&name.as_str()) {
                paths.extend(
                    service
                        .method
                        .iter()
                        .map(|m| format!("/{name}/{}", m.name())),
                );
            }
        }
    }
    paths.push("/grpc.health.v1.Health/Check".to_owned());
    assert!(paths.len() > 10, "the descriptor set lists our methods");
    paths
}

/// Drives calls through the RPC metrics layer: `per_method` OK calls on every method of
/// `paths`, plus one call per failing code of `FAILING`.
struct Traffic {
    runtime: tokio::runtime::Runtime,
    paths: Vec<String>,
}

impl Traffic {
    fn new() -> Traffic {
        Traffic {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime"),
            paths: method_paths(),
        }
    }

    fn call(&self, path: &str, code: i32) {
        // A stub server answering trailers-only with `code`, as every error answer is.
        let stub = tower::service_fn(move |_request: http::Request<Body>| async move {
            Ok::<_, Infallible>(
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", code.to_string())
                    .body(Body::empty())
                    .expect("a valid response"),
            )
        });
        let mut service = RpcMetricsLayer::new().layer(stub);
        let request = http::Request::builder()
            .method("POST")
            .uri(path)
            .body(Body::empty())
            .expect("a valid request");
        self.runtime.block_on(async {
            let ready = service.ready().await.expect("the stub is always ready");
            black_box(ready.call(request).await.expect("the stub never fails"));
        });
    }

    fn run(&self, per_method: usize) {
        for path in &self.paths {
            for _ in 0..per_method {
                self.call(path, 0);
            }
        }
        for (path, codes) in FAILING {
            for &code in codes {
                self.call(path, code);
            }
        }
    }
}

fn scrape_benches(c: &mut Criterion) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    // cargo passes `--bench` only to a real benchmark run.
    let tokens = if std::env::args().any(|a| a == "--bench") {
        PRELOAD
    } else {
        PRELOAD_AS_TEST
    };
    metrics::handle();
    let engine = preloaded(&mut rng, tokens);
    let traffic = Traffic::new();
    traffic.run(10);
    metrics::count_rejection(Rejection::Unauthenticated);
    metrics::count_rejection(Rejection::Overloaded);
    metrics::record_fsync(0.002);

    let exposition = metrics::render(Some(&engine));
    let samples = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert!(
        exposition.contains(&format!("neurograph_tokens {tokens}")),
        "the exposition shows the preloaded tokens"
    );
    assert!(exposition.contains("grpc_code=\"InvalidArgument\""));
    eprintln!(
        "exposition: {} bytes, {} lines, {samples} samples, {} methods",
        exposition.len(),
        exposition.lines().count(),
        traffic.paths.len()
    );

    let mut group = c.benchmark_group("scrape_1m");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    // Every method gets a call between scrapes (outside the timing), so each render drains
    // fresh histogram samples as a scrape of a busy server would.
    group.bench_function("render", |b| {
        b.iter_batched(
            || traffic.run(1),
            |()| black_box(metrics::render(Some(&engine))),
            BatchSize::PerIteration,
        )
    });

    // The same without new samples in between: the floor of a render.
    group.bench_function("render_idle", |b| {
        b.iter(|| black_box(metrics::render(Some(&engine))))
    });
    group.finish();

    // A plain figure to compare with the target, independent of criterion's report.
    let mut times: Vec<Duration> = (0..200)
        .map(|_| {
            traffic.run(1);
            let started = Instant::now();
            black_box(metrics::render(Some(&engine)));
            started.elapsed()
        })
        .collect();
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (p50, p99, max) = (times[100], times[197], times[199]);
    println!(
        "scrape at {tokens} tokens ({} bytes): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms over 200 renders (target ≤ {TARGET_MS} ms: {})",
        exposition.len(),
        ms(p50),
        ms(p99),
        ms(max),
        if ms(p99) <= TARGET_MS { "met" } else { "NOT met" }
    );

    // Where the time goes: the exporter's own render, and render without the engine's gauges
    // (which adds the process collector), each the median of 200 after fresh samples.
    let median_of = |f: &dyn Fn()| {
        let mut times: Vec<Duration> = (0..200)
            .map(|_| {
                traffic.run(1);
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .collect();
        times.sort_unstable();
        ms(times[100])
    };
    let exporter = median_of(&|| {
        black_box(metrics::handle().render());
    });
    let no_engine = median_of(&|| {
        black_box(metrics::render(None));
    });
    println!(
        "median ms: exporter render {exporter:.3}, + process collector {no_engine:.3}, + engine gauges (above) {:.3}",
        ms(p50)
    );
}

criterion_group!(benches, scrape_benches);
criterion_main!(benches);
