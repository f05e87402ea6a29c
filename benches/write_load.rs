//! Write load on the real release binary over gRPC: `LOAD_CLIENTS` (default 32) concurrent
//! clients, each on its own connection, each looping single-token `CreateToken` calls (all
//! eight spaces defined, id 0) for `LOAD_SECONDS` (default 10) after a 1 s warm-up, against
//! the embedded store with `--durability immediate` (`LOAD_DURABILITY=batched|none` to compare).
//!
//! Reports the disk's own fsync latency first (1000 × a 4 KiB write at offset 0 plus
//! `fdatasync`, next to the data dir), then writes/s, latency p50/p99, and from the server's
//! `journal closed commits=N records=M` line at shutdown the fsyncs per acknowledged write:
//! each journal commit is one durable redb transaction, i.e. one fdatasync, and records are the
//! commands written. Target: commits / records ≤ 0.25 (group commit shares fsyncs).
//!
//! `cargo bench --bench write_load`

mod support;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use support::binary;
use support::wire::{self, env_or, mean, micros, millis, quantile};
use support::XorShift;

/// Warm-up before the measured window: connections, allocator, store file growth.
const WARM_UP: Duration = Duration::from_secs(1);
/// Samples of the fsync probe.
const FSYNC_SAMPLES: usize = 1000;
/// Bytes written before each fsync of the probe.
const FSYNC_BYTES: usize = 4096;
/// The target for fsyncs per acknowledged write.
const TARGET_FSYNCS_PER_WRITE: f64 = 0.25;

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    /// Latency of each write acknowledged inside the measured window (started in it).
    latencies: Vec<Duration>,
    /// Writes acknowledged during the warm-up.
    warm_up_acks: u64,
    /// Writes that failed, and the first failure.
    errors: u64,
    first_error: Option<tonic::Status>,
}

/// 1000 × (write 4 KiB at offset 0 + `sync_data`) in a temp file in `dir`; the latency of
/// each pair, ascending. One unmeasured pair first gives the file its size, so that every
/// measured `sync_data` is a pure data flush like a redb commit's.
fn fsync_probe(dir: &Path) -> Vec<Duration> {
    let file = tempfile::NamedTempFile::new_in(dir).expect("create the fsync probe file");
    let handle: &File = file.as_file();
    let block = vec![0xA5u8; FSYNC_BYTES];
    handle.write_all_at(&block, 0).expect("probe write");
    handle.sync_data().expect("probe fdatasync");
    let mut samples: Vec<Duration> = (0..FSYNC_SAMPLES)
        .map(|_| {
            let started = Instant::now();
            handle.write_all_at(&block, 0).expect("probe write");
            handle.sync_data().expect("probe fdatasync");
            started.elapsed()
        })
        .collect();
    samples.sort_unstable();
    samples
}

/// One client: its own connection, creating tokens until `end`; latencies count from
/// `measure_from`.
async fn client(addr: String, index: usize, measure_from: Instant, end: Instant) -> ClientResult {
    let mut tokens = TokenServiceClient::new(binary::channel(&addr).await);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ ((index as u64 + 1) << 32));
    let mut result = ClientResult::default();
    loop {
        let started = Instant::now();
        if started >= end {
            return result;
        }
        let request = pb::CreateTokenRequest {
            token: Some(wire::token(&mut rng, index)),
            ttl_seconds: 0,
        };
        match tokens.create_token(request).await {
            Ok(_) if started >= measure_from => result.latencies.push(started.elapsed()),
            Ok(_) => result.warm_up_acks += 1,
            Err(status) => {
                result.errors += 1;
                result.first_error.get_or_insert(status);
            }
        }
    }
}

fn main() {
    let clients: usize = env_or("LOAD_CLIENTS", 32);
    let seconds: f64 = env_or("LOAD_SECONDS", 10.0);
    let durability: String = env_or("LOAD_DURABILITY", "immediate".to_owned());
    assert!(
        clients > 0 && seconds > 0.0,
        "LOAD_CLIENTS and LOAD_SECONDS must be positive"
    );
    let window = Duration::from_secs_f64(seconds);

    let data_dir = wire::temp_dir("write-load-");
    let probe_dir = data_dir.path().parent().expect("the data dir has a parent");
    println!("fsync probe in {} ...", probe_dir.display());
    let fsyncs = fsync_probe(probe_dir);

    let mut server = wire::start(data_dir.path(), &durability, &[]);
    let runtime = binary::runtime();
    runtime.block_on(binary::wait_serving(&server.addr));
    println!(
        "{clients} clients × {seconds} s, durability {durability}, server at {} ...",
        server.addr
    );

    let (results, counted) = runtime.block_on(async {
        let start = Instant::now();
        let measure_from = start + WARM_UP;
        let end = measure_from + window;
        let tasks: Vec<_> = (0..clients)
            .map(|index| tokio::spawn(client(server.addr.clone(), index, measure_from, end)))
            .collect();
        let mut results = Vec::with_capacity(clients);
        for task in tasks {
            results.push(task.await.expect("client task"));
        }
        let counted = wire::count_tokens(&server.addr).await;
        (results, counted)
    });
    drop(runtime);
    server.stop();

    let journal = server
        .log_line("journal closed")
        .unwrap_or_else(|| panic!("no `journal closed` line in the log\n{}", server.log()));
    let commits = wire::log_field(&journal, "commits").expect("commits= in the journal line");
    let records = wire::log_field(&journal, "records").expect("records= in the journal line");

    let mut latencies: Vec<Duration> = results
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let measured = latencies.len() as u64;
    let warm_up: u64 = results.iter().map(|r| r.warm_up_acks).sum();
    let acks = measured + warm_up;
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    if let Some(status) = results.iter().find_map(|r| r.first_error.as_ref()) {
        println!("{errors} writes failed; the first: {status}");
    }
    assert_eq!(
        counted, acks,
        "CountTokens disagrees with the acknowledged writes"
    );

    let per_record = commits as f64 / records.max(1) as f64;
    let per_ack = commits as f64 / acks.max(1) as f64;
    let verdict = if per_record <= TARGET_FSYNCS_PER_WRITE {
        "met"
    } else {
        "NOT met"
    };
    println!();
    println!("```text");
    let mut settings = String::new();
    if clients != 32 {
        settings += &format!("LOAD_CLIENTS={clients} ");
    }
    if window != Duration::from_secs(10) {
        settings += &format!("LOAD_SECONDS={seconds} ");
    }
    if durability != "immediate" {
        settings += &format!("LOAD_DURABILITY={durability} ");
    }
    println!("$ {settings}cargo bench --bench write_load");
    println!(
        "disk fsync (4 KiB pwrite + fdatasync, {FSYNC_SAMPLES}x): mean {:.0} µs, p50 {:.0} µs, p99 {:.0} µs",
        micros(mean(&fsyncs)),
        micros(quantile(&fsyncs, 0.50)),
        micros(quantile(&fsyncs, 0.99)),
    );
    println!(
        "CreateToken, {clients} clients, durability {durability}: {:.0} writes/s ({measured} acks in {seconds} s after a {} s warm-up of {warm_up})",
        measured as f64 / window.as_secs_f64(),
        WARM_UP.as_secs(),
    );
    println!(
        "latency: p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms; failed writes: {errors}",
        millis(quantile(&latencies, 0.50)),
        millis(quantile(&latencies, 0.99)),
        millis(mean(&latencies)),
    );
    println!(
        "journal: commits={commits} records={records}; acknowledged {acks} (CountTokens {counted})"
    );
    println!(
        "fsyncs per acknowledged write: commits/records {per_record:.3}, commits/acks {per_ack:.3} (target ≤ {TARGET_FSYNCS_PER_WRITE}: {verdict})"
    );
    println!("```");
}
