//! GridService over the wire: every query in every space against a brute-force scan of what the
//! server stored, index maintenance through updates, deletes and clears, user grids and their
//! rules, and every error the contract names.

mod common;

use common::{batch, create, full_token, violation_fields, TestServer};
use neurograph::api::pb;
use neurograph::api::pb::grid_service_client::GridServiceClient;
use prost_types::FieldMask;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// (field, Space value, scale) of the eight spaces.
const SPACES: [(&str, i32, f64); 8] = [
    ("l1_physical", 1, 100.0),
    ("l2_sensory", 2, 10000.0),
    ("l3_motor", 3, 1000.0),
    ("l4_emotional", 4, 10000.0),
    ("l5_cognitive", 5, 10000.0),
    ("l6_social", 6, 10000.0),
    ("l7_temporal", 7, 100.0),
    ("l8_abstract", 8, 10000.0),
];

/// A small deterministic generator, so that failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// One of a few quantised steps around 0, so that ties are common.
    fn coordinate(&mut self, scale: f64) -> f32 {
        ((self.next() % 9) as f64 - 4.0) as f32 / scale as f32
    }
}

fn point_mut(token: &mut pb::Token, space: i32) -> &mut Option<pb::Point3> {
    match space {
        1 => &mut token.l1_physical,
        2 => &mut token.l2_sensory,
        3 => &mut token.l3_motor,
        4 => &mut token.l4_emotional,
        5 => &mut token.l5_cognitive,
        6 => &mut token.l6_social,
        7 => &mut token.l7_temporal,
        _ => &mut token.l8_abstract,
    }
}

fn point(token: &pb::Token, space: i32) -> Option<pb::Point3> {
    *point_mut(&mut { *token }, space)
}

/// Tokens with random points (a few spaces left undefined) and field values.
fn random_tokens(rng: &mut Lcg, n: usize) -> Vec<pb::Token> {
    (0..n)
        .map(|_| {
            let mut token = pb::Token {
                weight: 0.5,
                field_radius: (rng.next() % 256) as f32 / 100.0,
                field_strength: (rng.next() % 256) as f32 / 255.0,
                ..pb::Token::default()
            };
            for (_, space, scale) in SPACES {
                if !rng.next().is_multiple_of(6) {
                    *point_mut(&mut token, space) = Some(pb::Point3 {
                        x: rng.coordinate(scale),
                        y: rng.coordinate(scale),
                        z: rng.coordinate(scale),
                    });
                }
            }
            token
        })
        .collect()
}

/// The stored value behind a returned f32 (`q as f32 / scale`), as the server computes with it.
fn stored(value: f32, scale: f64) -> f64 {
    (f64::from(value) * scale).round() / scale
}

/// Tokens defined in `space` with their exact distance to `centre`, in (distance, id) order.
fn brute_force(tokens: &[pb::Token], space: i32, scale: f64, centre: [f64; 3]) -> Vec<(u32, f64)> {
    let mut hits: Vec<(u32, f64)> = tokens
        .iter()
        .filter_map(|t| {
            point(t, space).map(|p| {
                let d = [p.x, p.y, p.z]
                    .iter()
                    .zip(centre)
                    .map(|(v, c)| (stored(*v, scale) - c).powi(2))
                    .sum::<f64>()
                    .sqrt();
                (t.id, d)
            })
        })
        .collect();
    hits.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    hits
}

fn pairs(neighbors: &[pb::Neighbor]) -> Vec<(u32, f64)> {
    neighbors.iter().map(|n| (n.token_id, n.distance)).collect()
}

async fn all_tokens(server: &TestServer) -> Vec<pb::Token> {
    common::list_all(&mut server.tokens().await).await
}

fn centre(x: f32, y: f32, z: f32) -> Option<pb::Point3> {
    Some(pb::Point3 { x, y, z })
}

async fn range(
    grids: &mut GridServiceClient<Channel>,
    grid_id: u32,
    space: i32,
    c: Option<pb::Point3>,
    radius: f64,
    limit: u32,
) -> Result<pb::RangeQueryResponse, Status> {
    grids
        .range_query(pb::RangeQueryRequest {
            grid_id,
            space,
            center: c,
            radius,
            limit,
        })
        .await
        .map(|r| r.into_inner())
}

async fn neighbors(
    grids: &mut GridServiceClient<Channel>,
    grid_id: u32,
    token_id: u32,
    space: i32,
    k: u32,
    max_distance: f64,
) -> Result<Vec<(u32, f64)>, Status> {
    grids
        .find_neighbors(pb::FindNeighborsRequest {
            grid_id,
            token_id,
            space,
            k,
            max_distance,
        })
        .await
        .map(|r| pairs(&r.into_inner().neighbors))
}

async fn create_grid(
    grids: &mut GridServiceClient<Channel>,
    config: Option<pb::GridConfig>,
) -> pb::Grid {
    grids
        .create_grid(pb::CreateGridRequest { config })
        .await
        .expect("create grid")
        .into_inner()
}

async fn add(grids: &mut GridServiceClient<Channel>, grid_id: u32, token_id: u32) {
    grids
        .add_token(pb::AddTokenRequest { grid_id, token_id })
        .await
        .expect("add token");
}

/// Checks every query in every space on `grid_id` against the `members` brute force.
async fn assert_queries_exact(
    grids: &mut GridServiceClient<Channel>,
    grid_id: u32,
    members: &[pb::Token],
    everyone: &[pb::Token],
) {
    for (name, space, scale) in SPACES {
        // The centre travels as f32: the brute force uses exactly what is sent.
        let sent = [0.7 / scale, -1.3 / scale, 0.2 / scale].map(|v| f64::from(v as f32));
        let c = centre(sent[0] as f32, sent[1] as f32, sent[2] as f32);
        let radius = 3.0 / scale;
        let within: Vec<(u32, f64)> = brute_force(members, space, scale, sent)
            .into_iter()
            .filter(|h| h.1 <= radius)
            .collect();
        assert!(!within.is_empty(), "{name}: the test needs hits");
        let reply = range(grids, grid_id, space, c, radius, 7)
            .await
            .expect("range");
        assert_eq!(reply.total_in_range, within.len() as u64, "{name}");
        assert_eq!(
            pairs(&reply.results),
            within[..within.len().min(7)],
            "{name}"
        );

        let density = grids
            .calculate_density(pb::CalculateDensityRequest {
                grid_id,
                space,
                center: c,
                radius,
            })
            .await
            .expect("density")
            .into_inner();
        assert_eq!(density.tokens_in_range, within.len() as u64, "{name}");
        let expected = within.len() as f64 / (4.0 / 3.0 * std::f64::consts::PI * radius.powi(3));
        assert!(
            (density.density - expected).abs() <= expected * 1e-12,
            "{name}"
        );

        // k nearest of a member that is defined here, itself excluded.
        let origin = members
            .iter()
            .find(|t| point(t, space).is_some())
            .expect("a defined member");
        let p = point(origin, space).expect("defined");
        let at = [p.x, p.y, p.z].map(|v| stored(v, scale));
        let expected: Vec<(u32, f64)> = brute_force(members, space, scale, at)
            .into_iter()
            .filter(|h| h.0 != origin.id)
            .take(5)
            .collect();
        let found = neighbors(grids, grid_id, origin.id, space, 5, 0.0)
            .await
            .expect("neighbors");
        assert_eq!(found, expected, "{name}");
        // A non-member token may be the origin of a user grid query too: its neighbours are
        // the members nearest to it.
        if let Some(outsider) = everyone
            .iter()
            .find(|t| point(t, space).is_some() && !members.iter().any(|m| m.id == t.id))
        {
            let p = point(outsider, space).expect("defined");
            let at = [p.x, p.y, p.z].map(|v| stored(v, scale));
            let expected: Vec<(u32, f64)> = brute_force(members, space, scale, at)
                .into_iter()
                .take(3)
                .collect();
            let found = neighbors(grids, grid_id, outsider.id, space, 3, 0.0)
                .await
                .expect("a non-member origin");
            assert_eq!(found, expected, "{name}: around non-member {}", outsider.id);
        }

        // Influence: contributors and the sum, from the stored field values.
        let influence_radius = 2.0 / scale;
        let mut sum = 0.0;
        let mut contributors = 0u64;
        for t in members {
            let Some(d) = brute_force(std::slice::from_ref(t), space, scale, sent)
                .first()
                .map(|h| h.1)
            else {
                continue;
            };
            let field_radius = stored(t.field_radius, 100.0);
            let strength = stored(t.field_strength, 255.0);
            if field_radius > 0.0 && d <= influence_radius.min(field_radius) {
                sum += strength * (1.0 - d / field_radius);
                contributors += 1;
            }
        }
        let reply = grids
            .field_influence(pb::FieldInfluenceRequest {
                grid_id,
                space,
                center: c,
                radius: influence_radius,
            })
            .await
            .expect("influence")
            .into_inner();
        assert_eq!(reply.contributors, contributors, "{name}");
        let expected = if contributors < 3 { 0.0 } else { sum };
        assert!(
            (reply.influence - expected).abs() < 1e-9,
            "{name}: {reply:?} vs {expected}"
        );
    }
}

#[tokio::test]
async fn queries_in_every_space_equal_brute_force() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let mut rng = Lcg(7);
    batch(&mut tokens, random_tokens(&mut rng, 400)).await;
    for t in random_tokens(&mut rng, 30) {
        create(&mut tokens, t).await;
    }
    let mut grids = server.grids().await;
    let everyone = all_tokens(&server).await;
    assert_queries_exact(&mut grids, 0, &everyone, &everyone).await;

    let grid = create_grid(&mut grids, None).await;
    let members: Vec<pb::Token> = everyone.iter().step_by(2).cloned().collect();
    for m in &members {
        add(&mut grids, grid.grid_id, m.id).await;
    }
    assert_queries_exact(&mut grids, grid.grid_id, &members, &everyone).await;
}

#[tokio::test]
async fn updates_and_deletes_keep_every_tree_exact() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let mut rng = Lcg(11);
    let created = batch(&mut tokens, random_tokens(&mut rng, 200)).await;
    let mut grids = server.grids().await;
    let grid = create_grid(&mut grids, None).await;
    for t in created.iter().take(120) {
        add(&mut grids, grid.grid_id, t.id).await;
    }
    // Move, undefine and define points; delete some tokens.
    let replacements = random_tokens(&mut rng, 60);
    for (target, mut replacement) in created.iter().zip(replacements) {
        replacement.id = target.id;
        tokens
            .update_token(pb::UpdateTokenRequest {
                token: Some(replacement),
                // `*`: absent spaces become undefined.
                update_mask: Some(FieldMask {
                    paths: vec!["*".into()],
                }),
            })
            .await
            .expect("update");
    }
    for target in created.iter().skip(60).step_by(3) {
        tokens
            .delete_token(pb::DeleteTokenRequest { id: target.id })
            .await
            .expect("delete");
    }
    let everyone = all_tokens(&server).await;
    assert_queries_exact(&mut grids, 0, &everyone, &everyone).await;
    let members: Vec<pb::Token> = everyone
        .iter()
        .filter(|t| created.iter().take(120).any(|c| c.id == t.id))
        .cloned()
        .collect();
    assert_queries_exact(&mut grids, grid.grid_id, &members, &everyone).await;
    let reply = grids
        .get_grid(pb::GetGridRequest {
            grid_id: grid.grid_id,
        })
        .await
        .expect("get grid")
        .into_inner();
    assert_eq!(
        reply.token_count,
        members.len() as u64,
        "deleted tokens left the grid"
    );
}

#[tokio::test]
async fn an_undefined_space_is_never_in_its_tree() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let mut token = full_token();
    token.l3_motor = None;
    let stored = create(&mut tokens, token).await;
    let mut grids = server.grids().await;
    let everywhere = range(&mut grids, 0, 3, centre(0.0, 0.0, 0.0), 1e6, 0)
        .await
        .expect("range");
    assert_eq!(everywhere.total_in_range, 0);
    // Defining it later indexes it; undefining it again removes it.
    let mut update = stored;
    update.l3_motor = Some(pb::Point3 {
        x: 1.0,
        y: 2.0,
        z: 3.0,
    });
    let mask = |p: &str| {
        Some(FieldMask {
            paths: vec![p.into()],
        })
    };
    tokens
        .update_token(pb::UpdateTokenRequest {
            token: Some(update),
            update_mask: mask("l3_motor"),
        })
        .await
        .expect("define l3");
    let hits = range(&mut grids, 0, 3, centre(1.0, 2.0, 3.0), 0.001, 0)
        .await
        .expect("range");
    assert_eq!(pairs(&hits.results), vec![(stored.id, 0.0)]);
    tokens
        .update_token(pb::UpdateTokenRequest {
            token: Some(stored),
            update_mask: mask("l3_motor"),
        })
        .await
        .expect("undefine l3");
    let hits = range(&mut grids, 0, 3, centre(1.0, 2.0, 3.0), 1e6, 0)
        .await
        .expect("range");
    assert_eq!(hits.total_in_range, 0);
    let status = neighbors(&mut grids, 0, stored.id, 3, 1, 0.0)
        .await
        .expect_err("undefined in L3");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("l3_motor"), "{status:?}");
}

#[tokio::test]
async fn range_limit_defaults_to_1000_and_ties_go_to_the_smallest_ids() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let mut pile = full_token();
    pile.l1_physical = Some(pb::Point3 {
        x: 5.0,
        y: 5.0,
        z: 5.0,
    });
    let mut created = Vec::new();
    for _ in 0..2 {
        created.extend(batch(&mut tokens, vec![pile; 600]).await);
    }
    let mut grids = server.grids().await;
    let reply = range(&mut grids, 0, 1, centre(5.0, 5.0, 5.0), 0.5, 0)
        .await
        .expect("range");
    assert_eq!(reply.total_in_range, 1200);
    assert_eq!(reply.results.len(), 1000);
    let mut ids: Vec<u32> = created.iter().map(|t| t.id).collect();
    ids.sort();
    let got: Vec<u32> = reply.results.iter().map(|n| n.token_id).collect();
    assert_eq!(got, ids[..1000]);
    let found = neighbors(&mut grids, 0, ids[500], 1, 3, 0.0)
        .await
        .expect("neighbors");
    assert_eq!(found, vec![(ids[0], 0.0), (ids[1], 0.0), (ids[2], 0.0)]);
}

#[tokio::test]
async fn max_distance_bounds_neighbors_inclusively() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let mut ids = Vec::new();
    for x in [0.0, 1.0, 2.0, 3.0] {
        ids.push(
            create(&mut tokens, common::token_at(0.5, x, 0.0, 0.0))
                .await
                .id,
        );
    }
    let mut grids = server.grids().await;
    let found = neighbors(&mut grids, 0, ids[0], 1, 10, 2.0)
        .await
        .expect("ok");
    assert_eq!(found, vec![(ids[1], 1.0), (ids[2], 2.0)]);
    let found = neighbors(&mut grids, 0, ids[0], 1, 10, 0.0)
        .await
        .expect("ok");
    assert_eq!(found.len(), 3);
}

#[tokio::test]
async fn density_and_influence_follow_the_grid_config() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let mut ids = Vec::new();
    for (x, radius, strength) in [
        (0.0, 2.0, 1.0),
        (1.0, 2.0, 0.51),
        (1.5, 1.0, 1.0),
        (2.0, 0.0, 1.0),
    ] {
        let mut t = common::token_at(0.5, x, 0.0, 0.0);
        t.field_radius = radius;
        t.field_strength = strength;
        ids.push(create(&mut tokens, t).await.id);
    }
    let mut grids = server.grids().await;
    let influence = |grid_id: u32| pb::FieldInfluenceRequest {
        grid_id,
        space: 1,
        center: centre(0.0, 0.0, 0.0),
        radius: 1.5,
    };
    // Contributors: x=0 (R 2, d 0), x=1 (R 2, d 1); x=1.5 has R 1 < d; x=2 has R 0.
    let reply = grids
        .field_influence(influence(0))
        .await
        .expect("influence")
        .into_inner();
    assert_eq!(reply.contributors, 2);
    assert_eq!(reply.influence, 0.0, "2 contributors < min_field_nodes 3");
    let grid = create_grid(
        &mut grids,
        Some(pb::GridConfig {
            density_threshold: Some(0.05),
            min_field_nodes: Some(2),
        }),
    )
    .await;
    for id in &ids {
        add(&mut grids, grid.grid_id, *id).await;
    }
    let reply = grids
        .field_influence(influence(grid.grid_id))
        .await
        .expect("influence")
        .into_inner();
    let strength = f64::from((0.51f32 * 255.0).round() / 255.0);
    let expected = 1.0 + strength * (1.0 - 1.0 / 2.0);
    assert!(
        (reply.influence - expected).abs() < 1e-6,
        "{reply:?} vs {expected}"
    );
    let density = |grid_id: u32| pb::CalculateDensityRequest {
        grid_id,
        space: 1,
        center: centre(0.0, 0.0, 0.0),
        radius: 2.0,
    };
    // 4 tokens within 2: density 4 / 33.51 ≈ 0.119: dense at 0.05, not at the default 0.5.
    let user = grids
        .calculate_density(density(grid.grid_id))
        .await
        .expect("ok")
        .into_inner();
    let default = grids
        .calculate_density(density(0))
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(user.tokens_in_range, 4);
    assert!(user.dense);
    assert!(!default.dense);
    assert_eq!(user.density, default.density);
}

#[tokio::test]
async fn user_grids_are_created_listed_and_deleted_with_ids_never_reused() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    batch(&mut tokens, vec![full_token(); 3]).await;
    let mut grids = server.grids().await;
    let first = create_grid(&mut grids, None).await;
    assert_eq!(first.grid_id, 1);
    assert_eq!(
        first.config,
        Some(pb::GridConfig {
            density_threshold: Some(0.5),
            min_field_nodes: Some(3)
        })
    );
    let second = create_grid(
        &mut grids,
        Some(pb::GridConfig {
            density_threshold: Some(0.9),
            min_field_nodes: None,
        }),
    )
    .await;
    assert_eq!(second.grid_id, 2);
    assert_eq!(
        second.config.as_ref().and_then(|c| c.min_field_nodes),
        Some(3)
    );
    let listed = grids
        .list_grids(pb::ListGridsRequest {})
        .await
        .expect("list")
        .into_inner()
        .grids;
    assert_eq!(
        listed.iter().map(|g| g.grid_id).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(listed[0].token_count, 3, "grid 0 holds every token");
    assert_eq!(
        listed[0].config, first.config,
        "grid 0 has the default config"
    );
    grids
        .delete_grid(pb::DeleteGridRequest { grid_id: 2 })
        .await
        .expect("delete");
    let status = grids
        .get_grid(pb::GetGridRequest { grid_id: 2 })
        .await
        .expect_err("gone");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("grid_id"), "{status:?}");
    assert_eq!(
        create_grid(&mut grids, None).await.grid_id,
        3,
        "2 is not reused"
    );
}

#[tokio::test]
async fn at_most_100_user_grids() {
    let server = TestServer::start().await;
    let mut grids = server.grids().await;
    for _ in 0..100 {
        create_grid(&mut grids, None).await;
    }
    let status = grids
        .create_grid(pb::CreateGridRequest { config: None })
        .await
        .expect_err("101st");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let listed = grids
        .list_grids(pb::ListGridsRequest {})
        .await
        .expect("list");
    assert_eq!(listed.into_inner().grids.len(), 101);
    grids
        .delete_grid(pb::DeleteGridRequest { grid_id: 50 })
        .await
        .expect("delete");
    assert_eq!(create_grid(&mut grids, None).await.grid_id, 101);
}

#[tokio::test]
async fn membership_rules() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let created = batch(&mut tokens, vec![full_token(); 2]).await;
    let mut grids = server.grids().await;
    let grid = create_grid(&mut grids, None).await.grid_id;
    add(&mut grids, grid, created[0].id).await;
    add(&mut grids, grid, created[0].id).await; // again: OK, still one membership
    let count = |g: pb::Grid| g.token_count;
    let get = pb::GetGridRequest { grid_id: grid };
    assert_eq!(
        count(grids.get_grid(get).await.expect("get").into_inner()),
        1
    );

    let remove = |token_id| pb::RemoveTokenRequest {
        grid_id: grid,
        token_id,
    };
    let status = grids
        .remove_token(remove(created[1].id))
        .await
        .expect_err("non-member");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    grids
        .remove_token(remove(created[0].id))
        .await
        .expect("member");
    assert_eq!(
        count(grids.get_grid(get).await.expect("get").into_inner()),
        0
    );

    for (grid_id, token_id, code) in [
        (0, created[0].id, Code::FailedPrecondition),
        (99, created[0].id, Code::NotFound),
        (grid, 0x0100_0fff, Code::NotFound),
        (grid, 0, Code::InvalidArgument),
    ] {
        let status = grids
            .add_token(pb::AddTokenRequest { grid_id, token_id })
            .await
            .expect_err("rejected");
        assert_eq!(status.code(), code, "add {grid_id}/{token_id}: {status:?}");
        let status = grids
            .remove_token(pb::RemoveTokenRequest { grid_id, token_id })
            .await
            .expect_err("rejected");
        assert_eq!(
            status.code(),
            code,
            "remove {grid_id}/{token_id}: {status:?}"
        );
    }
    let status = grids
        .delete_grid(pb::DeleteGridRequest { grid_id: 0 })
        .await
        .expect_err("grid 0");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = grids
        .delete_grid(pb::DeleteGridRequest { grid_id: 42 })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn deleting_a_token_removes_it_from_every_grid() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let created = batch(&mut tokens, vec![full_token(); 2]).await;
    let mut grids = server.grids().await;
    let a = create_grid(&mut grids, None).await.grid_id;
    let b = create_grid(&mut grids, None).await.grid_id;
    for g in [a, b] {
        for t in &created {
            add(&mut grids, g, t.id).await;
        }
    }
    tokens
        .delete_token(pb::DeleteTokenRequest { id: created[0].id })
        .await
        .expect("delete");
    for g in [a, b] {
        let grid = grids
            .get_grid(pb::GetGridRequest { grid_id: g })
            .await
            .expect("get");
        assert_eq!(grid.into_inner().token_count, 1);
        let hits = range(&mut grids, g, 1, centre(100.0, -100.0, 50.0), 1.0, 0)
            .await
            .expect("range");
        assert_eq!(pairs(&hits.results), vec![(created[1].id, 0.0)]);
    }
    // An explicit id reusing the deleted one is not a member anywhere.
    let mut again = full_token();
    again.id = created[0].id;
    create(&mut tokens, again).await;
    let grid = grids
        .get_grid(pb::GetGridRequest { grid_id: a })
        .await
        .expect("get");
    assert_eq!(grid.into_inner().token_count, 1);
}

#[tokio::test]
async fn clear_tokens_empties_user_grids_but_keeps_them() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let created = batch(&mut tokens, vec![full_token(); 5]).await;
    let mut grids = server.grids().await;
    let grid = create_grid(&mut grids, None).await.grid_id;
    for t in &created {
        add(&mut grids, grid, t.id).await;
    }
    tokens
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect("clear");
    let kept = grids
        .get_grid(pb::GetGridRequest { grid_id: grid })
        .await
        .expect("the grid survives")
        .into_inner();
    assert_eq!(kept.token_count, 0);
    for g in [0, grid] {
        let hits = range(&mut grids, g, 1, centre(100.0, -100.0, 50.0), 1.0, 0)
            .await
            .expect("range");
        assert_eq!(hits.total_in_range, 0, "grid {g}");
    }
    let fresh = create(&mut tokens, full_token()).await;
    add(&mut grids, grid, fresh.id).await;
    let hits = range(&mut grids, grid, 1, centre(100.0, -100.0, 50.0), 1.0, 0)
        .await
        .expect("range");
    assert_eq!(pairs(&hits.results), vec![(fresh.id, 0.0)]);
}

#[tokio::test]
async fn memberships_are_capped() {
    let server = TestServer::start_with(|c| c.max_grid_memberships = 3).await;
    let mut tokens = server.tokens().await;
    let created = batch(&mut tokens, vec![full_token(); 3]).await;
    let mut grids = server.grids().await;
    let a = create_grid(&mut grids, None).await.grid_id;
    let b = create_grid(&mut grids, None).await.grid_id;
    add(&mut grids, a, created[0].id).await;
    add(&mut grids, a, created[1].id).await;
    add(&mut grids, b, created[0].id).await;
    add(&mut grids, b, created[0].id).await; // already a member: no new membership
    let status = grids
        .add_token(pb::AddTokenRequest {
            grid_id: b,
            token_id: created[2].id,
        })
        .await
        .expect_err("over the cap");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-grid-memberships"),
        "{status:?}"
    );
    let grid = grids
        .get_grid(pb::GetGridRequest { grid_id: b })
        .await
        .expect("get");
    assert_eq!(grid.into_inner().token_count, 1, "nothing was added");
    grids
        .delete_grid(pb::DeleteGridRequest { grid_id: a })
        .await
        .expect("delete frees two");
    add(&mut grids, b, created[2].id).await;
}

/// `result` is INVALID_ARGUMENT whose message and BadRequest details name `field`.
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    let status = result.expect_err("must be rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    assert!(status.message().contains(field), "{field}: {status:?}");
    assert!(
        violation_fields(&status).iter().any(|f| f == field),
        "{field} in {:?}",
        violation_fields(&status)
    );
}

#[tokio::test]
async fn query_arguments_are_validated() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let id = create(&mut tokens, full_token()).await.id;
    let mut grids = server.grids().await;
    let c = centre(0.0, 0.0, 0.0);
    assert_invalid(neighbors(&mut grids, 0, id, 0, 5, 0.0).await, "space");
    assert_invalid(neighbors(&mut grids, 0, id, 9, 5, 0.0).await, "space");
    assert_invalid(neighbors(&mut grids, 0, id, 1, 0, 0.0).await, "k");
    assert_invalid(neighbors(&mut grids, 0, id, 1, 1001, 0.0).await, "k");
    assert_invalid(
        neighbors(&mut grids, 0, id, 1, 5, -1.0).await,
        "max_distance",
    );
    assert_invalid(
        neighbors(&mut grids, 0, id, 1, 5, f64::INFINITY).await,
        "max_distance",
    );
    assert_invalid(
        neighbors(&mut grids, 0, id, 1, 5, f64::NAN).await,
        "max_distance",
    );
    assert_invalid(neighbors(&mut grids, 0, 0, 1, 5, 0.0).await, "token_id");
    assert!(neighbors(&mut grids, 0, id, 1, 1000, 0.0).await.is_ok());
    for radius in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_invalid(range(&mut grids, 0, 1, c, radius, 0).await, "radius");
    }
    assert_invalid(range(&mut grids, 0, 1, None, 1.0, 0).await, "center");
    assert_invalid(
        range(&mut grids, 0, 1, centre(f32::NAN, 0.0, 0.0), 1.0, 0).await,
        "center.x",
    );
    assert_invalid(
        range(&mut grids, 0, 1, centre(0.0, 0.0, f32::INFINITY), 1.0, 0).await,
        "center.z",
    );
    assert_invalid(range(&mut grids, 0, 1, c, 1.0, 100_001).await, "limit");
    assert!(range(&mut grids, 0, 1, c, 1.0, 100_000).await.is_ok());
    assert_invalid(range(&mut grids, 0, 0, c, 1.0, 0).await, "space");
    let density = grids
        .calculate_density(pb::CalculateDensityRequest {
            grid_id: 0,
            space: 0,
            center: None,
            radius: -2.0,
        })
        .await;
    let status = density.expect_err("three violations");
    assert_eq!(violation_fields(&status), ["space", "center", "radius"]);
    assert_invalid(
        grids
            .field_influence(pb::FieldInfluenceRequest {
                grid_id: 0,
                space: 1,
                center: c,
                radius: f64::NAN,
            })
            .await,
        "radius",
    );
    for bad in [
        pb::GridConfig {
            density_threshold: Some(1.5),
            min_field_nodes: None,
        },
        pb::GridConfig {
            density_threshold: Some(f64::NAN),
            min_field_nodes: None,
        },
    ] {
        assert_invalid(
            grids
                .create_grid(pb::CreateGridRequest { config: Some(bad) })
                .await,
            "config.density_threshold",
        );
    }
    for nodes in [0, 101] {
        assert_invalid(
            grids
                .create_grid(pb::CreateGridRequest {
                    config: Some(pb::GridConfig {
                        density_threshold: None,
                        min_field_nodes: Some(nodes),
                    }),
                })
                .await,
            "config.min_field_nodes",
        );
    }
    let listed = grids
        .list_grids(pb::ListGridsRequest {})
        .await
        .expect("list");
    assert_eq!(listed.into_inner().grids.len(), 1, "no grid was created");
}

#[tokio::test]
async fn unknown_grids_and_tokens_are_not_found() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let id = create(&mut tokens, full_token()).await.id;
    let mut grids = server.grids().await;
    let status = neighbors(&mut grids, 7, id, 1, 5, 0.0)
        .await
        .expect_err("grid 7");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("grid_id"), "{status:?}");
    let status = neighbors(&mut grids, 0, id + 1, 1, 5, 0.0)
        .await
        .expect_err("token");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("token_id"), "{status:?}");
    let status = range(&mut grids, 3, 1, centre(0.0, 0.0, 0.0), 1.0, 0)
        .await
        .expect_err("grid 3");
    assert_eq!(status.code(), Code::NotFound);
    for status in [
        grids
            .calculate_density(pb::CalculateDensityRequest {
                grid_id: 5,
                space: 1,
                center: centre(0.0, 0.0, 0.0),
                radius: 1.0,
            })
            .await
            .expect_err("grid 5"),
        grids
            .field_influence(pb::FieldInfluenceRequest {
                grid_id: 5,
                space: 1,
                center: centre(0.0, 0.0, 0.0),
                radius: 1.0,
            })
            .await
            .expect_err("grid 5"),
    ] {
        assert_eq!(status.code(), Code::NotFound);
    }
}

#[tokio::test]
async fn influence_counts_tokens_exactly_at_the_field_radius_and_at_the_query_radius() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    // d == R for the first two (0.7 is not exact in f32: the server must use q / 100 in f64);
    // the third has R 1 > d 0.7, the fourth d == query radius 1 < R 2.
    for (x, field_radius) in [(0.7, 0.7), (0.0, 0.7), (-0.7, 1.0), (0.0, 2.0)] {
        let mut t = common::token_at(0.5, x, 0.0, 0.0);
        if field_radius == 2.0 {
            t.l1_physical = Some(pb::Point3 {
                x: 0.0,
                y: 1.0,
                z: 0.0,
            });
        }
        t.field_radius = field_radius;
        t.field_strength = 1.0;
        create(&mut tokens, t).await;
    }
    let mut grids = server.grids().await;
    let reply = grids
        .field_influence(pb::FieldInfluenceRequest {
            grid_id: 0,
            space: 1,
            center: centre(0.0, 0.0, 0.0),
            radius: 1.0,
        })
        .await
        .expect("influence")
        .into_inner();
    assert_eq!(reply.contributors, 4, "{reply:?}");
    // 0 (d = R) + 1 (d = 0) + (1 − 0.7) + (1 − 1/2)
    assert!((reply.influence - 1.8).abs() < 1e-12, "{reply:?}");
}

#[tokio::test]
async fn density_is_dense_at_exactly_the_threshold_and_never_nan() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    create(&mut tokens, common::token_at(0.5, 1.0, 0.0, 0.0)).await;
    create(&mut tokens, common::token_at(0.5, 0.0, 1.0, 0.0)).await;
    let radius = 1.0;
    let density = 2.0 / (4.0 / 3.0 * std::f64::consts::PI * radius * radius * radius);
    let mut grids = server.grids().await;
    let grid = create_grid(
        &mut grids,
        Some(pb::GridConfig {
            density_threshold: Some(density),
            min_field_nodes: None,
        }),
    )
    .await
    .grid_id;
    let everyone = all_tokens(&server).await;
    for t in &everyone {
        add(&mut grids, grid, t.id).await;
    }
    let request = |radius: f64| pb::CalculateDensityRequest {
        grid_id: grid,
        space: 1,
        center: centre(0.0, 0.0, 0.0),
        radius,
    };
    let reply = grids
        .calculate_density(request(radius))
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(reply.tokens_in_range, 2);
    assert_eq!(reply.density, density);
    assert!(reply.dense, "density == threshold is dense");
    let reply = grids
        .calculate_density(request(0.999))
        .await
        .expect("ok")
        .into_inner();
    assert!(!reply.dense);
    // A ball whose volume underflows: empty is 0, never NaN.
    let reply = grids
        .calculate_density(request(1e-110))
        .await
        .expect("ok")
        .into_inner();
    assert_eq!((reply.tokens_in_range, reply.density), (0, 0.0));
}
