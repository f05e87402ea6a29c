//! The resumable, filtered and regional change feed of WatchTokens over the wire (API.md §2,
//! §10): `from_sequence` replays the retained events after it and hands over to the live feed
//! with no gap and no repeat (a property test with a writer and subscribers running at once,
//! in process and on the binary with embedded storage); filters and regions with ENTERED and
//! EXITED, the boundary included; invalid requests named field by field; a sequence older
//! than `--watch-retention`; resuming across a restart; a sequence from the future.
//!
//! What a watcher must see comes from an oracle over the writes' own answers and commit
//! sequences (`x-neurograph-commit-sequence`), regions by brute force with exact f64 distances
//! on the stored values. A watch is read until the event of a ClearTokens written last
//! (CLEARED passes every filter and region), so that "nothing more" is observed, never waited
//! for; every wait is bounded by `EVENT_CAP`.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::binary::{self, runtime, Server};
use common::metadata::{sequence, COMMIT};
use common::{violation_fields, TestServer};
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use neurograph::api::pb::TokenEventKind as Kind;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use prost_types::FieldMask;
use tokio::sync::watch;
use tonic::codec::Streaming;
use tonic::transport::Channel;
use tonic::Code;

type Client = TokenServiceClient<Channel>;

/// Cap on the wait for something that must come (an event, a token's expiry, a gauge): it
/// only catches what never comes, and says nothing about how fast it comes.
const EVENT_CAP: Duration = Duration::from_secs(60);
/// Between two polls of a bounded wait.
const POLL: Duration = Duration::from_millis(20);

/// `future`'s output, or a panic naming `what` after `EVENT_CAP`.
async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(EVENT_CAP, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {EVENT_CAP:?}"))
}

// ---------------------------------------------------------------------------------------------
// The oracle: what a watcher must see.

/// What a watcher asks for besides `from_sequence`.
#[derive(Clone, Copy, Debug, Default)]
struct Interest {
    filter: Option<pb::TokenFilter>,
    region: Option<pb::WatchRegion>,
}

impl Interest {
    fn request(&self, from_sequence: Option<u64>) -> pb::WatchTokensRequest {
        pb::WatchTokensRequest {
            from_sequence,
            filter: self.filter,
            region: self.region,
        }
    }
}

/// One event as compared: kind, id, sequence and the token it carries.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    kind: Kind,
    id: u32,
    sequence: u64,
    token: Option<pb::Token>,
}

impl From<pb::TokenEvent> for Seen {
    fn from(event: pb::TokenEvent) -> Seen {
        let kind = Kind::try_from(event.kind)
            .unwrap_or_else(|_| panic!("an unknown event kind: {event:?}"));
        Seen {
            kind,
            id: event.id,
            sequence: event.sequence,
            token: event.token,
        }
    }
}

/// One token change of a committed command, as the writer saw it.
#[derive(Clone, Debug)]
enum Change {
    Created(pb::Token),
    Updated {
        before: Box<pb::Token>,
        after: pb::Token,
    },
    /// With the token's last state.
    Deleted(pb::Token),
    /// With the token's last state.
    Expired(pb::Token),
    Cleared,
}

/// A committed command: the sequence its write answered and its changes in order.
#[derive(Clone, Debug)]
struct Command {
    sequence: u64,
    changes: Vec<Change>,
}

fn scale(space: pb::Space) -> f64 {
    match space {
        pb::Space::L1Physical | pb::Space::L7Temporal => 100.0,
        pb::Space::L3Motor => 1000.0,
        _ => 10000.0,
    }
}

fn point_in(token: &pb::Token, space: pb::Space) -> Option<pb::Point3> {
    match space {
        pb::Space::Unspecified => None,
        pb::Space::L1Physical => token.l1_physical,
        pb::Space::L2Sensory => token.l2_sensory,
        pb::Space::L3Motor => token.l3_motor,
        pb::Space::L4Emotional => token.l4_emotional,
        pb::Space::L5Cognitive => token.l5_cognitive,
        pb::Space::L6Social => token.l6_social,
        pb::Space::L7Temporal => token.l7_temporal,
        pb::Space::L8Abstract => token.l8_abstract,
    }
}

/// The stored coordinate as RangeQuery measures it (`q / scale` in f64), recovered from the
/// f32 the server returns (`q as f32 / scale as f32`, which rounds back to q).
fn stored(value: f32, scale: f64) -> f64 {
    (f64::from(value) * scale).round() / scale
}

/// Whether `token` lies in the ball: defined in its space and d <= radius, d exact in f64
/// from the stored values and the centre as sent.
fn inside(region: &pb::WatchRegion, token: &pb::Token) -> bool {
    let space = pb::Space::try_from(region.space).expect("the oracle's regions are valid");
    let Some(point) = point_in(token, space) else {
        return false;
    };
    let centre = region.center.expect("the oracle's regions have a centre");
    let s = scale(space);
    let d = |v: f32, c: f32| stored(v, s) - f64::from(c);
    let distance = (d(point.x, centre.x).powi(2)
        + d(point.y, centre.y).powi(2)
        + d(point.z, centre.z).powi(2))
    .sqrt();
    distance <= region.radius
}

/// Whether a token with `id` matches `filter` (domain and entity type are in the id).
fn passes(filter: &pb::TokenFilter, id: u32) -> bool {
    filter.domain.is_none_or(|d| d == id >> 28)
        && filter.entity_type.is_none_or(|t| t == (id >> 24) & 0xF)
}

/// Brute force: the events a watcher with `interest` resuming from `after` must see, in order.
fn expected(log: &[Command], after: u64, interest: &Interest) -> Vec<Seen> {
    let kept = |token: &pb::Token| interest.filter.is_none_or(|f| passes(&f, token.id));
    let within = |token: &pb::Token| interest.region.is_none_or(|r| inside(&r, token));
    let mut events = Vec::new();
    for command in log.iter().filter(|c| c.sequence > after) {
        let seen = |kind: Kind, token: &pb::Token| Seen {
            kind,
            id: token.id,
            sequence: command.sequence,
            token: Some(*token),
        };
        for change in &command.changes {
            let event = match change {
                Change::Cleared => Some(Seen {
                    kind: Kind::Cleared,
                    id: 0,
                    sequence: command.sequence,
                    token: None,
                }),
                Change::Created(t) => (kept(t) && within(t)).then(|| seen(Kind::Created, t)),
                Change::Updated { before, after } if kept(after) => {
                    match (within(before), within(after)) {
                        (true, true) => Some(seen(Kind::Updated, after)),
                        (false, true) => Some(seen(Kind::Entered, after)),
                        (true, false) => Some(seen(Kind::Exited, after)),
                        (false, false) => None,
                    }
                }
                Change::Updated { .. } => None,
                Change::Deleted(t) => (kept(t) && within(t)).then(|| seen(Kind::Deleted, t)),
                Change::Expired(t) => (kept(t) && within(t)).then(|| seen(Kind::Expired, t)),
            };
            events.extend(event);
        }
    }
    events
}

/// (kind, id, sequence) of each event: what a failure shows first.
fn summary(events: &[Seen]) -> Vec<(Kind, u32, u64)> {
    events.iter().map(|e| (e.kind, e.id, e.sequence)).collect()
}

/// Asserts that a watch delivered exactly `expected`, tokens included.
fn assert_feed(received: &[Seen], expected: &[Seen], what: &str) {
    assert_eq!(
        summary(received),
        summary(expected),
        "{what}: (kind, id, sequence)"
    );
    for (got, want) in received.iter().zip(expected) {
        assert_eq!(
            got.token, want.token,
            "{what}: the token of {:?} {} at {}",
            want.kind, want.id, want.sequence
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Writing and watching.

/// Writes through one client and records each command's changes under its commit sequence.
struct Writer {
    client: Client,
    log: Vec<Command>,
    /// Every live token's last state, by id.
    live: BTreeMap<u32, pb::Token>,
}

impl Writer {
    fn new(client: Client) -> Writer {
        Writer {
            client,
            log: Vec::new(),
            live: BTreeMap::new(),
        }
    }

    fn last_sequence(&self) -> u64 {
        self.log.last().map_or(0, |c| c.sequence)
    }

    fn record(&mut self, sequence: u64, changes: Vec<Change>) {
        let last = self.last_sequence();
        assert!(
            sequence > last,
            "commit sequences strictly increase: {sequence} after {last}"
        );
        self.log.push(Command { sequence, changes });
    }

    async fn create(&mut self, token: pb::Token) -> pb::Token {
        self.create_with_ttl(token, 0).await
    }

    async fn create_with_ttl(&mut self, token: pb::Token, ttl_seconds: u32) -> pb::Token {
        let response = self
            .client
            .create_token(pb::CreateTokenRequest {
                token: Some(token),
                ttl_seconds,
            })
            .await
            .expect("create succeeds");
        let sequence = sequence(response.metadata(), COMMIT);
        let created = response.into_inner();
        self.live.insert(created.id, created);
        self.record(sequence, vec![Change::Created(created)]);
        created
    }

    async fn batch(&mut self, tokens: Vec<pb::Token>) -> Vec<pb::Token> {
        let response = self
            .client
            .batch_create_tokens(pb::BatchCreateTokensRequest {
                tokens,
                ttl_seconds: 0,
            })
            .await
            .expect("batch create succeeds");
        let sequence = sequence(response.metadata(), COMMIT);
        let created = response.into_inner().tokens;
        for token in &created {
            self.live.insert(token.id, *token);
        }
        self.record(
            sequence,
            created.iter().copied().map(Change::Created).collect(),
        );
        created
    }

    /// Updates the fields `paths` name to their values in `token`.
    async fn update(&mut self, token: pb::Token, paths: &[&str]) -> pb::Token {
        let before = self.live[&token.id];
        let response = self
            .client
            .update_token(pb::UpdateTokenRequest {
                token: Some(token),
                update_mask: Some(FieldMask {
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                }),
            })
            .await
            .expect("update succeeds");
        let sequence = sequence(response.metadata(), COMMIT);
        let after = response.into_inner();
        self.live.insert(after.id, after);
        self.record(
            sequence,
            vec![Change::Updated {
                before: Box::new(before),
                after,
            }],
        );
        after
    }

    /// Moves a token in L1 (`None` makes the space undefined).
    async fn move_to(&mut self, id: u32, point: Option<pb::Point3>) -> pb::Token {
        let token = pb::Token {
            id,
            l1_physical: point,
            ..pb::Token::default()
        };
        self.update(token, &["l1_physical"]).await
    }

    async fn delete(&mut self, id: u32) {
        let response = self
            .client
            .delete_token(pb::DeleteTokenRequest { id })
            .await
            .expect("delete succeeds");
        let last = self.live.remove(&id).expect("a live token");
        self.record(
            sequence(response.metadata(), COMMIT),
            vec![Change::Deleted(last)],
        );
    }

    /// Clears every token; its sequence.
    async fn clear(&mut self) -> u64 {
        let response = self
            .client
            .clear_tokens(pb::ClearTokensRequest {})
            .await
            .expect("clear succeeds");
        let sequence = sequence(response.metadata(), COMMIT);
        self.live.clear();
        self.record(sequence, vec![Change::Cleared]);
        sequence
    }

    /// Records the expiry of token `id`, a command of the server's own at `sequence` (learnt
    /// from an unfiltered watch: no write answers it).
    fn expired(&mut self, id: u32, sequence: u64) {
        let last = self.live.remove(&id).expect("a live token expires");
        match self.log.iter_mut().find(|c| c.sequence == sequence) {
            Some(command) => command.changes.push(Change::Expired(last)),
            None => {
                self.log.push(Command {
                    sequence,
                    changes: vec![Change::Expired(last)],
                });
                self.log.sort_by_key(|c| c.sequence);
            }
        }
    }
}

async fn subscribe(
    client: &mut Client,
    interest: &Interest,
    from_sequence: Option<u64>,
) -> Result<Streaming<pb::TokenEvent>, tonic::Status> {
    client
        .watch_tokens(interest.request(from_sequence))
        .await
        .map(|r| r.into_inner())
}

/// The next event of a watch that must go on.
async fn next_event(events: &mut Streaming<pb::TokenEvent>) -> Seen {
    bounded("the next event", events.message())
        .await
        .unwrap_or_else(|status| panic!("the watch ended: {status:?}"))
        .expect("the watch goes on")
        .into()
}

/// Reads a watch until the event of sequence `stop` (a clear, which every watch sees),
/// that one included.
async fn read_through(events: &mut Streaming<pb::TokenEvent>, stop: u64) -> Vec<Seen> {
    let mut received = Vec::new();
    loop {
        let event = next_event(events).await;
        let done = event.sequence >= stop;
        received.push(event);
        if done {
            return received;
        }
    }
}

/// Reads a watch while the writer goes on, until the event of the final clear, whose
/// sequence `stop` gives once it is known.
async fn follow(
    events: &mut Streaming<pb::TokenEvent>,
    mut stop: watch::Receiver<Option<u64>>,
) -> Vec<Seen> {
    let mut received = Vec::new();
    loop {
        let event = next_event(events).await;
        let (cleared, at) = (event.kind == Kind::Cleared, event.sequence);
        received.push(event);
        if cleared {
            let last = *bounded("the final clear", stop.wait_for(Option::is_some))
                .await
                .expect("the writer publishes the final clear");
            if at >= last.expect("waited for it") {
                return received;
            }
        }
    }
}

fn l1(x: f32, y: f32, z: f32) -> Option<pb::Point3> {
    Some(pb::Point3 { x, y, z })
}

/// A token with `id` (0 = allocate), at `point` in L1 and always defined in L2.
fn token(id: u32, point: Option<pb::Point3>) -> pb::Token {
    pb::Token {
        id,
        weight: 0.5,
        l1_physical: point,
        l2_sensory: Some(pb::Point3 {
            x: 0.5,
            y: 0.0,
            z: 0.0,
        }),
        ..pb::Token::default()
    }
}

/// A ball in L1 Physical.
fn ball(x: f32, y: f32, z: f32, radius: f64) -> pb::WatchRegion {
    pb::WatchRegion {
        space: pb::Space::L1Physical as i32,
        center: l1(x, y, z),
        radius,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The exact cut-over, as a property.

/// A token to create: its allocation pair, point and weight.
#[derive(Clone, Debug)]
struct Spec {
    domain: u32,
    entity_type: u32,
    point: Option<pb::Point3>,
    weight_tenths: u8,
}

impl Spec {
    fn token(&self) -> pb::Token {
        pb::Token {
            domain: self.domain,
            entity_type: self.entity_type,
            weight: f32::from(self.weight_tenths) / 10.0,
            l1_physical: self.point,
            ..pb::Token::default()
        }
    }
}

/// One write; `pick` chooses among the live tokens by id order, modulo their number.
#[derive(Clone, Debug)]
enum Op {
    Create(Spec),
    Batch(Vec<Spec>),
    Move {
        pick: usize,
        point: Option<pb::Point3>,
        weight_tenths: u8,
    },
    Delete(usize),
    Clear,
}

/// A subscriber: it subscribes once the writer has done `after_ops` writes, from a sequence
/// `pick` chooses in [0, the writer's last sequence].
#[derive(Clone, Debug)]
struct Plan {
    after_ops: usize,
    pick: u64,
    interest: Interest,
}

#[derive(Clone, Debug)]
struct Scenario {
    ops: Vec<Op>,
    plans: Vec<Plan>,
}

/// Coordinates in half units of L1: exact in f32 and f64, and many points lie exactly on the
/// boundaries of the regions (centres on the same lattice, radii in half units).
fn half_unit(range: std::ops::RangeInclusive<i8>) -> impl Strategy<Value = f32> {
    range.prop_map(|h| f32::from(h) / 2.0)
}

fn point() -> impl Strategy<Value = Option<pb::Point3>> {
    prop_oneof![
        1 => Just(None),
        5 => (half_unit(-6..=6), half_unit(-6..=6), half_unit(-6..=6))
            .prop_map(|(x, y, z)| l1(x, y, z)),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u32..3, 0u32..3, point(), 1u8..=9).prop_map(|(domain, entity_type, point, w)| Spec {
        domain,
        entity_type,
        point,
        weight_tenths: w,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => spec().prop_map(Op::Create),
        3 => prop::collection::vec(spec(), 1..5).prop_map(Op::Batch),
        12 => (any::<usize>(), point(), 1u8..=9).prop_map(|(pick, point, weight_tenths)| Op::Move {
            pick,
            point,
            weight_tenths,
        }),
        4 => any::<usize>().prop_map(Op::Delete),
        1 => Just(Op::Clear),
    ]
}

fn filter() -> impl Strategy<Value = pb::TokenFilter> {
    prop_oneof![
        (0u32..3).prop_map(|d| pb::TokenFilter {
            domain: Some(d),
            entity_type: None
        }),
        (0u32..3).prop_map(|t| pb::TokenFilter {
            domain: None,
            entity_type: Some(t)
        }),
        (0u32..3, 0u32..3).prop_map(|(d, t)| pb::TokenFilter {
            domain: Some(d),
            entity_type: Some(t)
        }),
    ]
}

fn region() -> impl Strategy<Value = pb::WatchRegion> {
    (
        half_unit(-2..=2),
        half_unit(-2..=2),
        half_unit(-2..=2),
        1u8..=8,
    )
        .prop_map(|(x, y, z, r)| ball(x, y, z, f64::from(r) / 2.0))
}

/// Six subscribers: none, a filter, a region, both, a region, both.
fn scenario() -> impl Strategy<Value = Scenario> {
    let plan = (0usize..=60, any::<u64>(), filter(), region());
    (
        prop::collection::vec(op(), 20..60),
        prop::collection::vec(plan, 6),
    )
        .prop_map(|(ops, raw)| {
            let plans = raw
                .into_iter()
                .enumerate()
                .map(|(i, (after_ops, pick, filter, region))| {
                    let (filter, region) = match i {
                        0 => (None, None),
                        1 => (Some(filter), None),
                        2 | 4 => (None, Some(region)),
                        _ => (Some(filter), Some(region)),
                    };
                    Plan {
                        after_ops: after_ops.min(ops.len()),
                        pick,
                        interest: Interest { filter, region },
                    }
                })
                .collect();
            Scenario { ops, plans }
        })
}

impl Writer {
    fn pick_live(&self, pick: usize) -> Option<u32> {
        let len = self.live.len();
        (len > 0).then(|| *self.live.keys().nth(pick % len).expect("in range"))
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            Op::Create(spec) => {
                self.create(spec.token()).await;
            }
            Op::Batch(specs) => {
                self.batch(specs.iter().map(Spec::token).collect()).await;
            }
            Op::Move {
                pick,
                point,
                weight_tenths,
            } => {
                if let Some(id) = self.pick_live(*pick) {
                    let token = pb::Token {
                        id,
                        weight: f32::from(*weight_tenths) / 10.0,
                        l1_physical: *point,
                        ..pb::Token::default()
                    };
                    self.update(token, &["weight", "l1_physical"]).await;
                }
            }
            Op::Delete(pick) => {
                if let Some(id) = self.pick_live(*pick) {
                    self.delete(id).await;
                }
            }
            Op::Clear => {
                self.clear().await;
            }
        }
    }
}

/// Runs `scenario` against the server at `addr`: the writer writes while the subscribers
/// subscribe at their moments and read; then a final clear; every subscriber must have seen
/// exactly the oracle's events after its sequence. The writer goes on once a due subscriber
/// is about to call, so that its next writes race with the call and its replay.
async fn run_scenario(addr: &str, scenario: &Scenario) {
    let mut writer = Writer::new(TokenServiceClient::new(binary::channel(addr).await));
    // (writes done, the writer's last sequence)
    let (progress, progress_seen) = watch::channel((0usize, 0u64));
    let (stop, stop_seen) = watch::channel(None::<u64>);
    let mut subscribers = Vec::new();
    // Per number of writes done, the signals of the subscribers due then.
    let mut calling: BTreeMap<usize, Vec<tokio::sync::oneshot::Receiver<()>>> = BTreeMap::new();
    for plan in &scenario.plans {
        let plan = plan.clone();
        let addr = addr.to_owned();
        let mut progress = progress_seen.clone();
        let stop = stop_seen.clone();
        let (about_to_call, signal) = tokio::sync::oneshot::channel();
        calling.entry(plan.after_ops).or_default().push(signal);
        subscribers.push(tokio::spawn(async move {
            let mut client = TokenServiceClient::new(binary::channel(&addr).await);
            let (_, last) = *bounded(
                "the writer's progress",
                progress.wait_for(|(done, _)| *done >= plan.after_ops),
            )
            .await
            .expect("the writer goes on");
            let from = plan.pick % (last + 1);
            let _ = about_to_call.send(());
            let mut events = subscribe(&mut client, &plan.interest, Some(from))
                .await
                .unwrap_or_else(|s| panic!("watch from {from} (last {last}): {s:?}"));
            (from, follow(&mut events, stop).await)
        }));
    }
    let mut done = 0;
    loop {
        for signal in calling.remove(&done).unwrap_or_default() {
            bounded("a subscriber's call", signal)
                .await
                .expect("the subscriber runs");
        }
        let Some(op) = scenario.ops.get(done) else {
            break;
        };
        writer.apply(op).await;
        done += 1;
        progress.send_replace((done, writer.last_sequence()));
    }
    let last = writer.clear().await;
    stop.send_replace(Some(last));
    for (subscriber, plan) in subscribers.into_iter().zip(&scenario.plans) {
        let (from, received) = subscriber
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let want = expected(&writer.log, from, &plan.interest);
        assert_feed(
            &received,
            &want,
            &format!(
                "from_sequence {from} after {} writes, {:?}",
                plan.after_ops, plan.interest
            ),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 6,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_subscriber_sees_exactly_the_events_after_its_sequence(scenario in scenario()) {
        runtime().block_on(async {
            let server = TestServer::start().await;
            run_scenario(&server.addr.to_string(), &scenario).await;
        });
    }
}

#[test]
fn every_subscriber_sees_exactly_the_events_after_its_sequence_on_the_binary_with_embedded_storage()
{
    let mut runner = TestRunner::deterministic();
    let scenario = scenario()
        .new_tree(&mut runner)
        .expect("a scenario")
        .current();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_on(dir.path(), &[]);
    runtime().block_on(async {
        binary::wait_serving(&server.addr).await;
        run_scenario(&server.addr, &scenario).await;
    });
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// 2. Filter and region rules.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_regions_keep_the_events_the_rules_name_live_and_replayed_alike() {
    use Kind::{Cleared, Created, Deleted, Entered, Exited, Updated};
    let server = TestServer::start().await;
    let mut writer = Writer::new(server.tokens().await);
    let mut client = server.tokens().await;
    let region = ball(0.0, 0.0, 0.0, 3.0);
    let domain_1 = pb::TokenFilter {
        domain: Some(1),
        entity_type: None,
    };
    let type_2 = pb::TokenFilter {
        domain: None,
        entity_type: Some(2),
    };
    let interests = [
        Interest {
            filter: None,
            region: Some(region),
        },
        Interest {
            filter: Some(domain_1),
            region: None,
        },
        Interest {
            filter: Some(type_2),
            region: None,
        },
        Interest {
            filter: Some(domain_1),
            region: Some(region),
        },
    ];
    let mut live = Vec::new();
    for interest in &interests {
        live.push(
            subscribe(&mut client, interest, None)
                .await
                .expect("a live watch"),
        );
    }

    // Domain 1 (type 1): a, b, c, d; domain 2 (type 2): o, e.
    let a = writer.create(token(0x1100_0001, l1(3.0, 0.0, 0.0))).await; // 1: on the boundary
    let b = writer.create(token(0x1100_0002, l1(4.0, 0.0, 0.0))).await; // 2: outside
    let c = writer.create(token(0x1100_0003, None)).await; // 3: undefined in L1
    let o = writer.create(token(0x2200_0001, l1(1.0, 0.0, 0.0))).await; // 4: inside
    writer.move_to(a.id, l1(0.0, 3.0, 0.0)).await; // 5: inside → inside
    writer.move_to(b.id, l1(5.0, 0.0, 0.0)).await; // 6: outside → outside
    writer.move_to(b.id, l1(0.0, 0.0, -3.0)).await; // 7: enters onto the boundary
    writer.move_to(a.id, l1(3.01, 0.0, 0.0)).await; // 8: exits, just past it
    writer.move_to(c.id, l1(1.0, 2.0, 2.0)).await; // 9: defined at d = 3 exactly: enters
    let b_undefined = writer.move_to(b.id, None).await; // 10: undefined: exits
    let weight = pb::Token {
        id: a.id,
        weight: 0.25,
        ..pb::Token::default()
    };
    writer.update(weight, &["weight"]).await; // 11: outside, another field
    let pair = writer
        .batch(vec![
            token(0x1100_0004, l1(2.0, 2.0, 1.0)), // d = 3: inside
            token(0x2200_0002, l1(0.0, 0.0, 3.5)), // outside
        ])
        .await; // 12
    let (d, e) = (pair[0], pair[1]);
    writer.delete(c.id).await; // 13: inside
    writer.delete(a.id).await; // 14: outside
    let weight = pb::Token {
        id: o.id,
        weight: 0.75,
        ..pb::Token::default()
    };
    writer.update(weight, &["weight"]).await; // 15: inside → inside
    let stop = writer.clear().await; // 16
    assert_eq!(writer.log.len(), 16);
    assert_eq!(
        b_undefined.l1_physical, None,
        "the mask undefined the space"
    );

    let at = |step: usize| writer.log[step - 1].sequence;
    let rules: [Vec<(Kind, u32, usize)>; 4] = [
        vec![
            (Created, a.id, 1),
            (Created, o.id, 4),
            (Updated, a.id, 5),
            (Entered, b.id, 7),
            (Exited, a.id, 8),
            (Entered, c.id, 9),
            (Exited, b.id, 10),
            (Created, d.id, 12),
            (Deleted, c.id, 13),
            (Updated, o.id, 15),
            (Cleared, 0, 16),
        ],
        vec![
            (Created, a.id, 1),
            (Created, b.id, 2),
            (Created, c.id, 3),
            (Updated, a.id, 5),
            (Updated, b.id, 6),
            (Updated, b.id, 7),
            (Updated, a.id, 8),
            (Updated, c.id, 9),
            (Updated, b.id, 10),
            (Updated, a.id, 11),
            (Created, d.id, 12),
            (Deleted, c.id, 13),
            (Deleted, a.id, 14),
            (Cleared, 0, 16),
        ],
        vec![
            (Created, o.id, 4),
            (Created, e.id, 12),
            (Updated, o.id, 15),
            (Cleared, 0, 16),
        ],
        vec![
            (Created, a.id, 1),
            (Updated, a.id, 5),
            (Entered, b.id, 7),
            (Exited, a.id, 8),
            (Entered, c.id, 9),
            (Exited, b.id, 10),
            (Created, d.id, 12),
            (Deleted, c.id, 13),
            (Cleared, 0, 16),
        ],
    ];
    for ((interest, events), rule) in interests.iter().zip(&mut live).zip(&rules) {
        let what = format!("{interest:?}");
        let want = expected(&writer.log, 0, interest);
        let named: Vec<(Kind, u32, u64)> = rule.iter().map(|&(k, id, s)| (k, id, at(s))).collect();
        assert_eq!(
            summary(&want),
            named,
            "the oracle agrees with the rules: {what}"
        );

        let received = read_through(events, stop).await;
        assert_feed(&received, &want, &format!("live, {what}"));
        let mut again = subscribe(&mut client, interest, Some(0))
            .await
            .expect("a replay from 0");
        let replayed = read_through(&mut again, stop).await;
        assert_eq!(replayed, received, "replayed equals live: {what}");
        // From the middle: the suffix.
        let mut half = subscribe(&mut client, interest, Some(at(8)))
            .await
            .expect("a replay from the middle");
        let suffix: Vec<Seen> = received
            .iter()
            .filter(|e| e.sequence > at(8))
            .cloned()
            .collect();
        assert_eq!(read_through(&mut half, stop).await, suffix, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_sees_the_expiry_of_a_token_inside_and_not_of_one_outside() {
    let server = TestServer::start().await;
    let mut writer = Writer::new(server.tokens().await);
    let mut client = server.tokens().await;
    let everything = Interest::default();
    let region = Interest {
        filter: None,
        region: Some(ball(0.0, 0.0, 0.0, 3.0)),
    };
    let mut all = subscribe(&mut client, &everything, None)
        .await
        .expect("watch");
    let mut regional = subscribe(&mut client, &region, None).await.expect("watch");
    let kept = writer.create(token(0, l1(0.0, 0.0, 2.5))).await;
    let inside = writer.create_with_ttl(token(0, l1(0.0, 0.0, 3.0)), 1).await;
    let outside = writer.create_with_ttl(token(0, l1(0.0, 0.0, 3.5)), 1).await;

    // Expiries are the server's own commands: their sequences come from the unfiltered watch.
    let mut received = Vec::new();
    let mut expiries = 0;
    while expiries < 2 {
        let event = next_event(&mut all).await;
        if event.kind == Kind::Expired {
            writer.expired(event.id, event.sequence);
            expiries += 1;
        }
        received.push(event);
    }
    let stop = writer.clear().await;
    received.extend(read_through(&mut all, stop).await);
    assert_feed(
        &received,
        &expected(&writer.log, 0, &everything),
        "no region",
    );

    let want = expected(&writer.log, 0, &region);
    let expired_at = writer
        .log
        .iter()
        .find(|c| {
            c.changes
                .iter()
                .any(|ch| matches!(ch, Change::Expired(t) if t.id == inside.id))
        })
        .expect("recorded")
        .sequence;
    assert_eq!(
        summary(&want),
        [
            (Kind::Created, kept.id, writer.log[0].sequence),
            (Kind::Created, inside.id, writer.log[1].sequence),
            (Kind::Expired, inside.id, expired_at),
            (Kind::Cleared, 0, stop),
        ],
        "the oracle: {outside:?} is outside"
    );
    assert_feed(&read_through(&mut regional, stop).await, &want, "live");
    let mut replay = subscribe(&mut client, &region, Some(0))
        .await
        .expect("replay");
    assert_feed(&read_through(&mut replay, stop).await, &want, "replayed");
}

/// Ids of the tokens RangeQuery finds in `region` (on the default grid).
async fn range_ids(
    grids: &mut neurograph::api::pb::grid_service_client::GridServiceClient<Channel>,
    region: &pb::WatchRegion,
) -> Vec<u32> {
    let range = grids
        .range_query(pb::RangeQueryRequest {
            grid_id: 0,
            space: region.space,
            center: region.center,
            radius: region.radius,
            limit: 1000,
        })
        .await
        .expect("range query")
        .into_inner();
    assert_eq!(range.results.len() as u64, range.total_in_range);
    let mut ids: Vec<u32> = range.results.iter().map(|n| n.token_id).collect();
    ids.sort_unstable();
    ids
}

/// Points around the sphere of `region`, a few half steps of its space inside and outside
/// along several directions: sent between steps, quantisation decides on which side they land.
fn shell(region: &pb::WatchRegion) -> Vec<pb::Point3> {
    let space = pb::Space::try_from(region.space).expect("valid");
    let half_step = 0.5 / scale(space);
    let c = region.center.expect("a centre");
    let directions: [[f64; 3]; 8] = [
        [1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],
        [1.0, -1.0, 1.0],
        [-2.0, 1.0, 2.0],
        [3.0, -4.0, 0.0],
        [-1.0, -1.0, -1.0],
    ];
    let mut points = Vec::new();
    for d in directions {
        let norm = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        for k in -3..=3 {
            let length = region.radius + f64::from(k) * half_step;
            let at = |i: usize, centre: f32| (f64::from(centre) + d[i] / norm * length) as f32;
            points.push(pb::Point3 {
                x: at(0, c.x),
                y: at(1, c.y),
                z: at(2, c.z),
            });
        }
    }
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_measures_the_stored_values_as_range_query_does() {
    let server = TestServer::start().await;
    let mut writer = Writer::new(server.tokens().await);
    let mut client = server.tokens().await;
    let mut grids = server.grids().await;
    // Centres off the lattice, radii that are no multiple of a step.
    let sensory = pb::WatchRegion {
        space: pb::Space::L2Sensory as i32,
        center: Some(pb::Point3 {
            x: 0.10003,
            y: -0.2,
            z: 0.30007,
        }),
        radius: 0.0123,
    };
    let motor = pb::WatchRegion {
        space: pb::Space::L3Motor as i32,
        center: Some(pb::Point3 {
            x: 1.2345,
            y: -2.5,
            z: 0.0005,
        }),
        radius: 0.25,
    };
    let interests = [sensory, motor].map(|region| Interest {
        filter: None,
        region: Some(region),
    });
    let mut watches = Vec::new();
    for interest in &interests {
        watches.push(subscribe(&mut client, interest, None).await.expect("watch"));
    }
    let (around_sensory, around_motor) = (shell(&sensory), shell(&motor));
    let tokens = around_sensory
        .iter()
        .zip(&around_motor)
        .map(|(s, m)| pb::Token {
            weight: 0.5,
            l2_sensory: Some(*s),
            l3_motor: Some(*m),
            ..pb::Token::default()
        })
        .collect();
    let created = writer.batch(tokens).await;
    let check_range =
        |what: &str, found: Vec<u32>, interest: &Interest, live: &BTreeMap<u32, pb::Token>| {
            let region = interest.region.expect("a region");
            let oracle: Vec<u32> = live
                .values()
                .filter(|t| inside(&region, t))
                .map(|t| t.id)
                .collect();
            assert_eq!(
                found, oracle,
                "{what}: RangeQuery and the oracle, {region:?}"
            );
            assert!(
                !oracle.is_empty() && oracle.len() < live.len(),
                "{what}: tokens on both sides of {region:?}"
            );
        };
    for interest in &interests {
        let found = range_ids(&mut grids, &interest.region.expect("a region")).await;
        check_range("after the batch", found, interest, &writer.live);
    }
    // Each token moves to its neighbour's point: some enter, some exit, some stay.
    for (i, token) in created.iter().enumerate() {
        let next = (i + 1) % created.len();
        let moved = pb::Token {
            id: token.id,
            l2_sensory: Some(around_sensory[next]),
            l3_motor: Some(around_motor[(next + 3) % created.len()]),
            ..pb::Token::default()
        };
        writer.update(moved, &["l2_sensory", "l3_motor"]).await;
    }
    for interest in &interests {
        let found = range_ids(&mut grids, &interest.region.expect("a region")).await;
        check_range("after the moves", found, interest, &writer.live);
    }
    let stop = writer.clear().await;
    for (interest, events) in interests.iter().zip(&mut watches) {
        let want = expected(&writer.log, 0, interest);
        let kinds: Vec<Kind> = want.iter().map(|e| e.kind).collect();
        for kind in [Kind::Created, Kind::Updated, Kind::Entered, Kind::Exited] {
            assert!(
                kinds.contains(&kind),
                "{interest:?}: no {kind:?} in {kinds:?}"
            );
        }
        assert_feed(
            &read_through(events, stop).await,
            &want,
            &format!("{interest:?}"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Invalid requests.

/// The value of gauge `name` on the side port at `http`.
fn gauge(http: &str, name: &str) -> f64 {
    let mut stream = TcpStream::connect(http).expect("connect to the side port");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{answer}"))
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn an_invalid_region_or_filter_is_invalid_argument_naming_each_violation_and_subscribes_nothing() {
    const SUBSCRIBERS: &str = "neurograph_watch_subscribers";
    let server = Server::start(&[]);
    let http = server.http_addr();
    runtime().block_on(async {
        binary::wait_serving(&server.addr).await;
        let mut client = TokenServiceClient::new(binary::channel(&server.addr).await);
        let mut kept = subscribe(&mut client, &Interest::default(), None)
            .await
            .expect("a valid watch");
        let started = Instant::now();
        while gauge(&http, SUBSCRIBERS) != 1.0 {
            assert!(
                started.elapsed() < EVENT_CAP,
                "the valid watch is not counted"
            );
            tokio::time::sleep(POLL).await;
        }

        let centre = l1(0.0, 0.0, 0.0);
        let region = |space: i32, center: Option<pb::Point3>, radius: f64| Interest {
            filter: None,
            region: Some(pb::WatchRegion {
                space,
                center,
                radius,
            }),
        };
        let filter = |domain, entity_type| pb::TokenFilter {
            domain,
            entity_type,
        };
        let mut cases: Vec<(Interest, Vec<&str>)> = vec![
            (region(0, centre, 1.0), vec!["region.space"]),
            (region(9, centre, 1.0), vec!["region.space"]),
            (region(-1, centre, 1.0), vec!["region.space"]),
            (region(1, None, 1.0), vec!["region.center"]),
            (
                region(1, l1(f32::NAN, 0.0, 0.0), 1.0),
                vec!["region.center.x"],
            ),
            (
                region(1, l1(0.0, f32::NEG_INFINITY, 0.0), 1.0),
                vec!["region.center.y"],
            ),
            (
                region(1, l1(0.0, 0.0, f32::INFINITY), 1.0),
                vec!["region.center.z"],
            ),
            (
                region(0, None, -2.0),
                vec!["region.space", "region.center", "region.radius"],
            ),
            (
                Interest {
                    filter: Some(filter(Some(16), None)),
                    region: None,
                },
                vec!["filter.domain"],
            ),
            (
                Interest {
                    filter: Some(filter(None, Some(16))),
                    region: None,
                },
                vec!["filter.entity_type"],
            ),
            (
                Interest {
                    filter: Some(filter(Some(99), Some(16))),
                    region: None,
                },
                vec!["filter.domain", "filter.entity_type"],
            ),
            (
                Interest {
                    filter: Some(filter(Some(16), Some(1))),
                    region: Some(ball(0.0, 0.0, 0.0, f64::NAN)),
                },
                vec!["filter.domain", "region.radius"],
            ),
        ];
        for radius in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            cases.push((region(1, centre, radius), vec!["region.radius"]));
        }
        for (interest, fields) in &cases {
            for from_sequence in [None, Some(0)] {
                let what = format!("{interest:?}, from_sequence {from_sequence:?}");
                let status = subscribe(&mut client, interest, from_sequence)
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{what}: the call itself must fail"));
                assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
                let mut named = violation_fields(&status);
                named.sort();
                let mut want: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
                want.sort();
                assert_eq!(named, want, "{what}: {status:?}");
                for field in fields {
                    assert!(
                        status.message().contains(field),
                        "{what}: the message names {field}: {status:?}"
                    );
                }
            }
        }
        assert_eq!(
            gauge(&http, SUBSCRIBERS),
            1.0,
            "no refused call left a subscriber"
        );
        // The valid watch was not disturbed.
        let created = TokenServiceClient::new(binary::channel(&server.addr).await)
            .create_token(pb::CreateTokenRequest {
                token: Some(token(0, l1(1.0, 0.0, 0.0))),
                ttl_seconds: 0,
            })
            .await
            .expect("create")
            .into_inner();
        let event = next_event(&mut kept).await;
        assert_eq!((event.kind, event.id), (Kind::Created, created.id));
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Older than the retention.

/// The integers a message contains.
fn numbers_in(message: &str) -> Vec<u64> {
    message
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The first answer of a watch from `from` on: its first event, or the status it fails with
/// (on the call or as the stream's first item). Only for `from` below the last sequence, so
/// that an accepted watch has an event to send.
async fn first_answer(client: &mut Client, from: u64) -> Result<Seen, tonic::Status> {
    let mut events = subscribe(client, &Interest::default(), Some(from)).await?;
    match bounded("the first answer", events.message()).await {
        Ok(Some(event)) => Ok(event.into()),
        Ok(None) => panic!("the watch from {from} ended at once"),
        Err(status) => Err(status),
    }
}

fn assert_too_old(status: &tonic::Status, from: u64) {
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "from_sequence {from}: {status:?}"
    );
}

/// `--watch-retention` of the servers that trim.
const RETENTION: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_older_than_the_retention_is_failed_precondition_naming_where_to_resume() {
    let server = TestServer::start_with(|c| c.watch_retention = RETENTION).await;
    too_old(&server.addr.to_string()).await;
}

#[test]
fn a_sequence_older_than_the_retention_of_the_embedded_store_is_failed_precondition_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let retention = RETENTION.to_string();
    let mut server = Server::start_on(dir.path(), &["--watch-retention", &retention]);
    runtime().block_on(async {
        binary::wait_serving(&server.addr).await;
        too_old(&server.addr).await;
    });
    server.stop();
}

/// Writes 250 single-token commands to a server retaining `RETENTION` events, then checks
/// the refusal of sequences before the oldest resumable one and the resumption from it.
async fn too_old(addr: &str) {
    let mut writer = Writer::new(TokenServiceClient::new(binary::channel(addr).await));
    let mut client = TokenServiceClient::new(binary::channel(addr).await);
    for i in 0..250u16 {
        writer
            .create(token(0, l1(f32::from(i % 7), 0.0, 0.0)))
            .await;
    }
    let last = writer.last_sequence();
    let refused = first_answer(&mut client, 0)
        .await
        .expect_err("from_sequence 0 is no longer retained");
    assert_too_old(&refused, 0);

    // The oldest resumable sequence as the server behaves: the smallest it resumes from.
    let first = first_answer(&mut client, last - 1)
        .await
        .expect("the latest events are retained");
    assert_eq!(
        first,
        expected(&writer.log, last - 1, &Interest::default())[0]
    );
    let (mut refused_at, mut resumed_at) = (0, last - 1);
    while resumed_at - refused_at > 1 {
        let middle = (refused_at + resumed_at) / 2;
        match first_answer(&mut client, middle).await {
            Ok(event) => {
                assert_eq!(
                    event,
                    expected(&writer.log, middle, &Interest::default())[0]
                );
                resumed_at = middle;
            }
            Err(status) => {
                assert_too_old(&status, middle);
                refused_at = middle;
            }
        }
    }
    let oldest = resumed_at;
    assert!(
        numbers_in(refused.message()).contains(&oldest),
        "the message names the oldest sequence to resume from, {oldest}: {refused:?}"
    );
    let just_before = first_answer(&mut client, oldest - 1)
        .await
        .expect_err("just before the oldest");
    assert_too_old(&just_before, oldest - 1);
    assert!(
        numbers_in(just_before.message()).contains(&oldest),
        "{just_before:?} names {oldest}"
    );
    let retained: usize = writer
        .log
        .iter()
        .filter(|c| c.sequence > oldest)
        .map(|c| c.changes.len())
        .sum();
    assert!(
        retained as u64 >= RETENTION,
        "at least the last {RETENTION} events are retained: {retained} after {oldest}"
    );

    // Resuming from the oldest: exactly the events after it, then live ones.
    let mut events = subscribe(&mut client, &Interest::default(), Some(oldest))
        .await
        .expect("resume from the oldest");
    let stop = writer.clear().await;
    assert_feed(
        &read_through(&mut events, stop).await,
        &expected(&writer.log, oldest, &Interest::default()),
        &format!("from {oldest}"),
    );
    let live = writer.create(token(0, l1(1.0, 1.0, 1.0))).await;
    let event = next_event(&mut events).await;
    assert_eq!(
        (event.kind, event.id, event.token),
        (Kind::Created, live.id, Some(live))
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Across a restart.

#[test]
fn a_watch_resumes_across_a_restart_of_the_binary_and_goes_on_live() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = runtime();
    let everything = Interest::default();
    let region = Interest {
        filter: None,
        region: Some(ball(0.0, 0.0, 0.0, 2.0)),
    };
    let mut server = Server::start_on(dir.path(), &[]);
    let (mut writer, resume_from, a) = rt.block_on(async {
        binary::wait_serving(&server.addr).await;
        let mut writer = Writer::new(TokenServiceClient::new(binary::channel(&server.addr).await));
        let mut client = TokenServiceClient::new(binary::channel(&server.addr).await);
        let mut all = subscribe(&mut client, &everything, None)
            .await
            .expect("watch");
        let a = writer.create(token(0, l1(1.0, 0.0, 0.0))).await;
        let b = writer.create(token(0, l1(2.0, 0.0, 0.0))).await;
        let resume_from = writer.last_sequence();
        writer.move_to(a.id, l1(1.0, 1.0, 0.0)).await; // inside → inside
        let pair = writer
            .batch(vec![
                token(0, l1(3.0, 0.0, 0.0)),
                token(0, l1(4.0, 0.0, 0.0)),
            ])
            .await;
        writer.move_to(pair[0].id, l1(0.0, 2.0, 0.0)).await; // enters onto the boundary
        writer.delete(b.id).await; // inside
        writer.move_to(pair[1].id, l1(0.0, 0.0, 2.01)).await; // outside → outside
        let due = writer.create_with_ttl(token(0, l1(0.0, 0.0, 1.0)), 1).await;
        // The expiry is a command of the server's own: its sequence comes from the watch.
        loop {
            let event = next_event(&mut all).await;
            if event.kind == Kind::Expired {
                assert_eq!(event.id, due.id, "{event:?}");
                writer.expired(event.id, event.sequence);
                break;
            }
        }
        writer.move_to(pair[0].id, l1(0.0, 3.0, 0.0)).await; // exits
        (writer, resume_from, a)
    });
    server.stop();

    let mut server = Server::start_on(dir.path(), &[]);
    rt.block_on(async {
        binary::wait_serving(&server.addr).await;
        writer.client = TokenServiceClient::new(binary::channel(&server.addr).await);
        let before_restart = writer.last_sequence();
        writer.move_to(a.id, l1(1.0, 1.0, 1.0)).await; // inside → inside
        writer.create(token(0, l1(5.0, 0.0, 0.0))).await; // outside
        writer.move_to(a.id, l1(2.0, 2.0, 2.0)).await; // exits

        let mut client = TokenServiceClient::new(binary::channel(&server.addr).await);
        for interest in [everything, region] {
            let what = format!("from {resume_from}, {interest:?}");
            let mut events = subscribe(&mut client, &interest, Some(resume_from))
                .await
                .expect("resume from before the restart");
            let want = expected(&writer.log, resume_from, &interest);
            assert!(
                want.iter().any(|e| e.sequence <= before_restart)
                    && want.iter().any(|e| e.sequence > before_restart),
                "{what}: events from both sides of the restart"
            );
            let mut replayed = Vec::new();
            for _ in 0..want.len() {
                replayed.push(next_event(&mut events).await);
            }
            assert_feed(&replayed, &want, &what);

            let live = writer.create(token(0, l1(0.5, 0.0, 0.0))).await;
            let event = next_event(&mut events).await;
            assert_eq!(
                (event.kind, event.id, event.sequence, event.token),
                (Kind::Created, live.id, writer.last_sequence(), Some(live)),
                "{what}: the next event is the live one"
            );
        }
        let kinds: Vec<Kind> = expected(&writer.log, resume_from, &region)
            .iter()
            .map(|e| e.kind)
            .collect();
        for kind in [
            Kind::Updated,
            Kind::Entered,
            Kind::Exited,
            Kind::Deleted,
            Kind::Expired,
        ] {
            assert!(
                kinds.contains(&kind),
                "the region replay had no {kind:?}: {kinds:?}"
            );
        }
    });
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// 6. From the future.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_from_sequence_beyond_the_current_one_delivers_only_later_events() {
    let server = TestServer::start().await;
    let mut writer = Writer::new(server.tokens().await);
    let mut client = server.tokens().await;
    for x in 0..3u8 {
        writer.create(token(0, l1(f32::from(x), 0.0, 0.0))).await;
    }
    let current = writer.last_sequence();
    let from = current + 3;
    let everything = Interest::default();
    let region = Interest {
        filter: None,
        region: Some(ball(0.0, 0.0, 0.0, 2.0)),
    };
    let mut events = subscribe(&mut client, &everything, Some(from))
        .await
        .expect("a future sequence is accepted");
    let mut regional = subscribe(&mut client, &region, Some(from))
        .await
        .expect("a future sequence is accepted");
    // The current sequence itself: nothing to replay, every later event.
    let mut now = subscribe(&mut client, &everything, Some(current))
        .await
        .expect("the current sequence is accepted");
    for x in 0..5u8 {
        writer.create(token(0, l1(f32::from(x), 0.0, 0.0))).await;
    }
    writer
        .batch(vec![
            token(0, l1(1.0, 0.0, 0.0)),
            token(0, l1(9.0, 0.0, 0.0)),
        ])
        .await;
    assert!(
        writer
            .log
            .iter()
            .any(|c| c.sequence > current && c.sequence <= from),
        "some writes after the call fall at or before {from}: {:?}",
        writer.log.iter().map(|c| c.sequence).collect::<Vec<_>>()
    );
    let stop = writer.clear().await;
    assert_feed(
        &read_through(&mut events, stop).await,
        &expected(&writer.log, from, &everything),
        &format!("from {from}, current {current}"),
    );
    assert_feed(
        &read_through(&mut regional, stop).await,
        &expected(&writer.log, from, &region),
        &format!("region, from {from}, current {current}"),
    );
    assert_feed(
        &read_through(&mut now, stop).await,
        &expected(&writer.log, current, &everything),
        &format!("from the current {current}"),
    );
}
