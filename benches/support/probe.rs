//! A short fixed run of single calls over the wire, interleaved so that every kind sees the
//! same moment of the server (and of this noisy VM): grpc health Check, GetToken, FindNeighbors
//! k = 10, RangeQuery of ~50 hits and CreateToken, one after the other, each timed alone.

use std::time::{Duration, Instant};

use neurograph::api::pb;
use neurograph::api::pb::grid_service_client::GridServiceClient;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use neurograph::model::{Space, TokenId};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::wire::{self, micros};
use super::{range_query, XorShift};

/// The kinds of call, in the order each round makes them.
pub const KINDS: [&str; 5] = [
    "health Check",
    "GetToken",
    "kNN k=10",
    "range ~50",
    "CreateToken",
];

/// Latencies of every kind (indexed as `KINDS`), and the range queries' mean hit count.
pub struct Probe {
    /// Ascending latencies per kind.
    pub latencies: [Vec<Duration>; KINDS.len()],
    /// Mean `total_in_range` of the range queries.
    pub mean_hits: f64,
}

impl Probe {
    /// The median of kind `kind`.
    pub fn p50(&self, kind: usize) -> Duration {
        wire::quantile(&self.latencies[kind], 0.5)
    }

    /// The 99th percentile of kind `kind`.
    pub fn p99(&self, kind: usize) -> Duration {
        wire::quantile(&self.latencies[kind], 0.99)
    }

    /// Kind `kind`'s median over health Check's: what a call costs beyond the round trip.
    pub fn ratio(&self, kind: usize) -> f64 {
        self.p50(kind).as_secs_f64() / self.p50(0).as_secs_f64()
    }

    /// One line per kind: p50, p99 and the ratio to health Check.
    pub fn report(&self) -> String {
        KINDS
            .iter()
            .enumerate()
            .map(|(kind, name)| {
                format!(
                    "  {name:<13} p50 {:>8.1} µs  p99 {:>8.1} µs  p50 / health p50 {:>5.2}\n",
                    micros(self.p50(kind)),
                    micros(self.p99(kind)),
                    self.ratio(kind),
                )
            })
            .collect()
    }
}

/// `warmup` unmeasured then `rounds` measured rounds of one call of each kind over `channel`,
/// on a store holding `count` tokens (spread uniformly, for the range radius) whose ids `ids`
/// draws from. Every call must succeed.
pub async fn run(
    channel: Channel,
    count: usize,
    ids: impl Fn(&mut XorShift) -> TokenId,
    warmup: usize,
    rounds: usize,
) -> Probe {
    let mut health = HealthClient::new(channel.clone());
    let mut tokens = TokenServiceClient::new(channel.clone());
    let mut grid = GridServiceClient::new(channel);
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let mut latencies: [Vec<Duration>; KINDS.len()] = Default::default();
    let mut hits = 0u64;
    for round in 0..warmup + rounds {
        let mut took = [Duration::ZERO; KINDS.len()];
        let started = Instant::now();
        health
            .check(HealthCheckRequest::default())
            .await
            .expect("health Check");
        took[0] = started.elapsed();

        let id = ids(&mut rng).get();
        let started = Instant::now();
        tokens
            .get_token(pb::GetTokenRequest { id })
            .await
            .expect("GetToken of an imported id");
        took[1] = started.elapsed();

        let id = ids(&mut rng).get();
        let space = proto_space(Space::ALL[rng.below(Space::ALL.len())]);
        let started = Instant::now();
        let found = grid
            .find_neighbors(pb::FindNeighborsRequest {
                grid_id: 0,
                token_id: id,
                space,
                k: 10,
                max_distance: 0.0,
            })
            .await
            .expect("FindNeighbors")
            .into_inner()
            .neighbors
            .len();
        took[2] = started.elapsed();
        assert_eq!(found, 10, "kNN k=10 found {found}");

        let (space, [x, y, z], radius) = range_query(&mut rng, count);
        let started = Instant::now();
        let range = grid
            .range_query(pb::RangeQueryRequest {
                grid_id: 0,
                space: proto_space(space),
                center: Some(pb::Point3 {
                    x: x as f32,
                    y: y as f32,
                    z: z as f32,
                }),
                radius,
                limit: 1000,
            })
            .await
            .expect("RangeQuery")
            .into_inner();
        took[3] = started.elapsed();

        let pair = rng.below(256);
        let token = wire::token(&mut rng, pair);
        let started = Instant::now();
        tokens
            .create_token(pb::CreateTokenRequest {
                token: Some(token),
                ttl_seconds: 0,
            })
            .await
            .expect("CreateToken");
        took[4] = started.elapsed();

        if round >= warmup {
            hits += range.total_in_range;
            for (kind, took) in took.into_iter().enumerate() {
                latencies[kind].push(took);
            }
        }
    }
    for samples in &mut latencies {
        samples.sort_unstable();
    }
    Probe {
        latencies,
        mean_hits: hits as f64 / rounds.max(1) as f64,
    }
}

/// `space` as the proto enum's number (L1 = 1 … L8 = 8).
fn proto_space(space: Space) -> i32 {
    Space::ALL
        .iter()
        .position(|s| *s == space)
        .expect("a space") as i32
        + 1
}
