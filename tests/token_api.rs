//! TokenService behaviour over the wire: ids, quantisation, updates, paging, batch, stream.

mod common;

use std::collections::BTreeSet;

use common::{
    batch, batch_rejected, count, create, full_token, token_at, violation_fields, TestServer,
};
use neurograph::api::pb;
use prost_types::FieldMask;
use tonic::Code;

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

#[tokio::test]
async fn create_allocates_local_ids_per_pair_from_one() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let a = create(&mut client, token_at(0.5, 1.0, 2.0, 3.0)).await;
    let b = create(&mut client, token_at(0.5, 1.0, 2.0, 3.0)).await;
    let typed = create(
        &mut client,
        pb::Token {
            entity_type: 5,
            domain: 2,
            ..token_at(0.1, 0.0, 0.0, 0.0)
        },
    )
    .await;
    assert_eq!((a.id, a.local_id), (1, 1));
    assert_eq!((b.id, b.local_id), (2, 2));
    assert_eq!(typed.id, 0x2500_0001);
    assert_eq!((typed.domain, typed.entity_type, typed.local_id), (2, 5, 1));
}

#[tokio::test]
async fn explicit_ids_raise_the_counter_and_may_reuse_deleted_ids() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let explicit = create(
        &mut client,
        pb::Token {
            id: 0x0300_0010,
            ..token_at(0.5, 0.0, 0.0, 0.0)
        },
    )
    .await;
    assert_eq!((explicit.entity_type, explicit.local_id), (3, 16));
    let next = create(
        &mut client,
        pb::Token {
            entity_type: 3,
            ..token_at(0.5, 0.0, 0.0, 0.0)
        },
    )
    .await;
    assert_eq!(next.id, 0x0300_0011);

    let again = client
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::Token {
                id: 0x0300_0010,
                ..token_at(0.5, 0.0, 0.0, 0.0)
            }),
            ttl_seconds: 0,
        })
        .await
        .expect_err("id is live");
    assert_eq!(again.code(), Code::AlreadyExists);

    client
        .delete_token(pb::DeleteTokenRequest { id: 0x0300_0010 })
        .await
        .expect("delete");
    let reused = create(
        &mut client,
        pb::Token {
            id: 0x0300_0010,
            ..token_at(0.5, 0.0, 0.0, 0.0)
        },
    )
    .await;
    assert_eq!(reused.id, 0x0300_0010);
}

#[tokio::test]
async fn create_exhausts_a_pair_at_the_highest_local_id() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    create(
        &mut client,
        pb::Token {
            id: 0x01FF_FFFF,
            ..token_at(0.5, 0.0, 0.0, 0.0)
        },
    )
    .await;
    let status = client
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::Token {
                entity_type: 1,
                ..token_at(0.5, 0.0, 0.0, 0.0)
            }),
            ttl_seconds: 0,
        })
        .await
        .expect_err("pair used up");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(count(&mut client).await, 1);
    // Other pairs are unaffected.
    assert_eq!(
        create(&mut client, token_at(0.5, 0.0, 0.0, 0.0)).await.id,
        1
    );
}

#[tokio::test]
async fn stored_values_are_quantised_exactly() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let sent = pb::Token {
        weight: 0.3,
        field_radius: 2.554,
        field_strength: 0.5,
        l1_physical: Some(pb::Point3 {
            x: 327.67,
            y: -327.67,
            z: 1.234,
        }),
        l2_sensory: Some(pb::Point3 {
            x: 0.12345,
            y: -3.2767,
            z: 0.0,
        }),
        ..pb::Token::default()
    };
    let stored = create(&mut client, sent).await;
    let fetched = client
        .get_token(pb::GetTokenRequest { id: stored.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(stored, fetched);
    assert_eq!(fetched.weight, 0.3);
    assert_eq!(fetched.field_radius, 255.0 / 100.0);
    assert_eq!(fetched.field_strength, 128.0 / 255.0);
    let l1 = fetched.l1_physical.expect("defined");
    assert_eq!(
        (l1.x, l1.y, l1.z),
        (32767.0 / 100.0, -32767.0 / 100.0, 123.0 / 100.0)
    );
    let l2 = fetched.l2_sensory.expect("defined");
    // 0.12345 × 10000 = 1234.5 (in f64 from the f32 sent) rounds away from zero.
    let expected_q = (f64::from(0.12345f32) * 10000.0).round() as f32;
    assert_eq!(l2.x, expected_q / 10000.0);
    assert_eq!(l2.y, -32767.0 / 10000.0);
    assert!(fetched.l3_motor.is_none(), "absent space stays undefined");
    assert!(
        fetched.flags.expect("flags").active,
        "absent flags means active"
    );
    assert!(fetched.timestamp.expect("timestamp").seconds > 1_700_000_000);
}

#[tokio::test]
async fn quantisation_rounds_ties_away_from_zero() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    // 0.125 is exact in f32, so ×100 is exactly 12.5: a tie that half-to-even would round to 12.
    let stored = create(
        &mut client,
        pb::Token {
            field_radius: 0.125,
            l1_physical: Some(pb::Point3 {
                x: -0.125,
                y: 0.125,
                z: 0.375,
            }),
            ..pb::Token::default()
        },
    )
    .await;
    assert_eq!(stored.field_radius, 13.0 / 100.0);
    let l1 = stored.l1_physical.expect("defined");
    assert_eq!(
        (l1.x, l1.y, l1.z),
        (-13.0 / 100.0, 13.0 / 100.0, 38.0 / 100.0)
    );
}

#[tokio::test]
async fn update_replaces_only_masked_paths() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let created = create(&mut client, full_token()).await;
    let updated = client
        .update_token(pb::UpdateTokenRequest {
            token: Some(pb::Token {
                id: created.id,
                weight: 0.9,
                flags: Some(pb::TokenFlags {
                    user_2: true,
                    ..Default::default()
                }),
                l3_motor: Some(pb::Point3 {
                    x: 1.0,
                    y: 2.0,
                    z: 3.0,
                }),
                ..pb::Token::default()
            }),
            update_mask: mask(&["weight", "flags.user_2", "l3_motor", "l4_emotional"]),
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.weight, 0.9);
    let flags = updated.flags.expect("flags");
    assert!(
        flags.user_2 && flags.active && flags.persistent,
        "only user_2 changed: {flags:?}"
    );
    assert_eq!(
        updated.l3_motor,
        Some(pb::Point3 {
            x: 1.0,
            y: 2.0,
            z: 3.0
        })
    );
    assert!(
        updated.l4_emotional.is_none(),
        "masked absent space becomes undefined"
    );
    assert_eq!(
        updated.l1_physical, created.l1_physical,
        "unmasked space kept"
    );
    assert_eq!(updated.field_radius, created.field_radius);
    let fetched = client
        .get_token(pb::GetTokenRequest { id: created.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched, updated);
}

#[tokio::test]
async fn update_without_a_mask_changes_only_the_fields_set() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let created = create(&mut client, full_token()).await;
    for update_mask in [None, mask(&[])] {
        let updated = client
            .update_token(pb::UpdateTokenRequest {
                token: Some(pb::Token {
                    id: created.id,
                    weight: 0.25,
                    l2_sensory: Some(pb::Point3 {
                        x: 0.5,
                        y: 0.5,
                        z: 0.5,
                    }),
                    ..pb::Token::default()
                }),
                update_mask,
            })
            .await
            .expect("update")
            .into_inner();
        assert_eq!(updated.weight, 0.25);
        assert_eq!(
            updated.l2_sensory,
            Some(pb::Point3 {
                x: 0.5,
                y: 0.5,
                z: 0.5
            })
        );
        // AIP-134: what the client did not send stays as it was.
        assert_eq!(updated.field_radius, created.field_radius);
        assert_eq!(updated.field_strength, created.field_strength);
        assert_eq!(updated.flags, created.flags);
        assert_eq!(updated.l1_physical, created.l1_physical);
        assert_eq!(updated.l8_abstract, created.l8_abstract);
        assert!(updated.timestamp.is_some());
    }
}

#[tokio::test]
async fn update_with_the_star_mask_replaces_every_mutable_field() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let created = create(&mut client, full_token()).await;
    let updated = client
        .update_token(pb::UpdateTokenRequest {
            token: Some(pb::Token {
                id: created.id,
                weight: 0.25,
                ..pb::Token::default()
            }),
            update_mask: mask(&["*"]),
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.weight, 0.25);
    assert_eq!(updated.field_radius, 0.0);
    assert_eq!(updated.field_strength, 0.0);
    let flags = updated.flags.expect("flags");
    assert!(
        flags.active && !flags.persistent,
        "absent flags become {{active: true}}"
    );
    assert!(updated.l1_physical.is_none() && updated.l8_abstract.is_none());
    assert_eq!(updated.id, created.id);
}

#[tokio::test]
async fn the_star_mask_must_stand_alone() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let created = create(&mut client, full_token()).await;
    let status = client
        .update_token(pb::UpdateTokenRequest {
            token: Some(pb::Token {
                id: created.id,
                weight: 0.25,
                ..pb::Token::default()
            }),
            update_mask: mask(&["*", "weight"]),
        })
        .await
        .expect_err("`*` with another path");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&status), ["update_mask.paths"]);
    let unchanged = client
        .get_token(pb::GetTokenRequest { id: created.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(unchanged, created);
}

#[tokio::test]
async fn delete_removes_and_second_delete_is_not_found() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let created = create(&mut client, full_token()).await;
    client
        .delete_token(pb::DeleteTokenRequest { id: created.id })
        .await
        .expect("delete");
    let get = client
        .get_token(pb::GetTokenRequest { id: created.id })
        .await
        .expect_err("gone");
    assert_eq!(get.code(), Code::NotFound);
    let again = client
        .delete_token(pb::DeleteTokenRequest { id: created.id })
        .await
        .expect_err("gone");
    assert_eq!(again.code(), Code::NotFound);
}

async fn list_all(
    client: &mut pb::token_service_client::TokenServiceClient<tonic::transport::Channel>,
    page_size: i32,
    filter: Option<pb::TokenFilter>,
) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tokens(pb::ListTokensRequest {
                page_size,
                page_token: page_token.clone(),
                filter,
            })
            .await
            .expect("list")
            .into_inner();
        ids.extend(page.tokens.iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn list_walks_every_token_in_id_order_with_filters() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let mut tokens = Vec::new();
    for i in 0..120u32 {
        tokens.push(pb::Token {
            domain: i % 3,
            entity_type: i % 4,
            ..token_at(0.5, 0.0, 0.0, 0.0)
        });
    }
    let created = batch(&mut client, tokens).await;
    let all: BTreeSet<u32> = created.iter().map(|t| t.id).collect();

    let walked = list_all(&mut client, 7, None).await;
    assert_eq!(walked, all.iter().copied().collect::<Vec<_>>());

    let filter = pb::TokenFilter {
        domain: None,
        entity_type: Some(2),
    };
    let expected: Vec<u32> = all
        .iter()
        .copied()
        .filter(|id| (id >> 24) & 0xF == 2)
        .collect();
    assert_eq!(list_all(&mut client, 4, Some(filter)).await, expected);

    let filter = pb::TokenFilter {
        domain: Some(1),
        entity_type: Some(3),
    };
    let expected: Vec<u32> = all
        .iter()
        .copied()
        .filter(|id| id >> 28 == 1 && (id >> 24) & 0xF == 3)
        .collect();
    let page = client
        .list_tokens(pb::ListTokensRequest {
            page_size: 0,
            page_token: String::new(),
            filter: Some(filter),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.total_size as usize, expected.len());
    assert_eq!(
        page.tokens.iter().map(|t| t.id).collect::<Vec<_>>(),
        expected
    );
    let counted = client
        .count_tokens(pb::CountTokensRequest {
            filter: Some(filter),
        })
        .await
        .expect("count")
        .into_inner()
        .count;
    assert_eq!(counted as usize, expected.len());
}

#[tokio::test]
async fn list_page_size_defaults_to_50_and_caps_at_1000() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    for _ in 0..2 {
        let tokens = vec![token_at(0.5, 0.0, 0.0, 0.0); 1000];
        batch(&mut client, tokens).await;
    }
    for (asked, served) in [(0, 50), (5000, 1000), (1, 1)] {
        let page = client
            .list_tokens(pb::ListTokensRequest {
                page_size: asked,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(page.tokens.len(), served, "page_size {asked}");
        assert_eq!(page.total_size, 2000);
        assert!(!page.next_page_token.is_empty());
    }
}

#[tokio::test]
async fn paging_neither_skips_nor_repeats_tokens_under_concurrent_writes() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    // Stable tokens take odd local ids; between pages, tokens come and go at even local ids
    // both before the cursor and after it. An offset-based pager would skip or repeat.
    let stable: Vec<u32> = (0..300u32).map(|i| 2 * i + 1).collect();
    let tokens = stable
        .iter()
        .map(|&id| pb::Token { id, ..full_token() })
        .collect();
    batch(&mut client, tokens).await;
    let mut writer = server.tokens().await;
    let mut walked = Vec::new();
    let mut page_token = String::new();
    let mut churn_round = 0u32;
    loop {
        let page = client
            .list_tokens(pb::ListTokensRequest {
                page_size: 17,
                page_token: page_token.clone(),
                filter: None,
            })
            .await
            .expect("list")
            .into_inner();
        walked.extend(page.tokens.iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        let cursor = *walked.last().expect("a full page");
        // Create two tokens before the cursor and two after it, and delete those of the
        // previous round.
        for id in [2, cursor - 1, cursor + 1, 600 - churn_round * 2].map(|id| id & !1) {
            if id == 0 {
                continue;
            }
            let _ = writer.delete_token(pb::DeleteTokenRequest { id }).await;
            let _ = writer
                .create_token(pb::CreateTokenRequest {
                    token: Some(pb::Token { id, ..full_token() }),
                    ttl_seconds: 0,
                })
                .await;
        }
        churn_round += 1;
    }
    assert!(churn_round >= 10, "the walk spanned many pages");
    let mut seen = std::collections::BTreeMap::new();
    for id in &walked {
        *seen.entry(*id).or_insert(0) += 1;
    }
    assert!(
        walked.windows(2).all(|w| w[0] < w[1]),
        "ascending, no repeats"
    );
    for id in stable {
        assert_eq!(
            seen.get(&id),
            Some(&1),
            "stable token {id} walked exactly once"
        );
    }
}

#[tokio::test]
async fn clear_removes_everything_but_keeps_id_counters() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    for _ in 0..3 {
        create(&mut client, full_token()).await;
    }
    let cleared = client
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect("clear")
        .into_inner()
        .cleared;
    assert_eq!(cleared, 3);
    assert_eq!(count(&mut client).await, 0);
    let page = client
        .list_tokens(pb::ListTokensRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(page.tokens.is_empty() && page.total_size == 0);
    assert_eq!(create(&mut client, full_token()).await.id, 4);
}

#[tokio::test]
async fn batch_create_is_all_or_nothing() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let mut tokens = vec![full_token(); 5];
    tokens[3].weight = 7.0;
    let status = batch_rejected(&mut client, tokens).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("tokens[3].weight"),
        "{}",
        status.message()
    );
    assert_eq!(count(&mut client).await, 0);

    let mut tokens = vec![full_token(); 3];
    tokens[0].id = 9;
    tokens[2].id = 9;
    let status = batch_rejected(&mut client, tokens).await;
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(count(&mut client).await, 0);

    let created = batch(&mut client, vec![full_token(); 1000]).await;
    assert_eq!(created.len(), 1000);
    assert_eq!(created[999].id, 1000);
    assert_eq!(count(&mut client).await, 1000);
}

#[tokio::test]
async fn batch_reports_already_exists_before_resource_exhausted() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    create(
        &mut client,
        pb::Token {
            id: 5,
            ..full_token()
        },
    )
    .await;
    let tokens = vec![
        pb::Token {
            id: 0x02FF_FFFF,
            ..full_token()
        },
        pb::Token {
            entity_type: 2,
            ..full_token()
        },
        pb::Token {
            id: 5,
            ..full_token()
        },
    ];
    let status = batch_rejected(&mut client, tokens).await;
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("tokens[2]"),
        "{}",
        status.message()
    );
    assert_eq!(count(&mut client).await, 1);
}

#[tokio::test]
async fn stream_tokens_sends_every_match_in_id_order() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let tokens: Vec<pb::Token> = (0..700u32)
        .map(|i| pb::Token {
            domain: i % 2,
            ..full_token()
        })
        .collect();
    batch(&mut client, tokens).await;
    let mut stream = client
        .stream_tokens(pb::StreamTokensRequest {
            filter: Some(pb::TokenFilter {
                domain: Some(1),
                entity_type: None,
            }),
        })
        .await
        .expect("stream")
        .into_inner();
    let mut ids = Vec::new();
    while let Some(token) = stream.message().await.expect("message") {
        ids.push(token.id);
    }
    assert_eq!(ids.len(), 350);
    assert!(ids.iter().all(|id| id >> 28 == 1));
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn create_backup_with_memory_storage_is_a_failed_precondition() {
    let server = TestServer::start().await;
    let backup = server
        .system()
        .await
        .create_backup(pb::CreateBackupRequest {})
        .await
        .expect_err("nothing to back up");
    assert_eq!(backup.code(), Code::FailedPrecondition);
    assert!(backup.message().contains("--storage memory"), "{backup:?}");
}
