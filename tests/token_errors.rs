//! Bad input gets the right code, a message naming the field and rule, BadRequest details with
//! request-root paths, and changes nothing.

mod common;

use common::{
    batch, batch_rejected, count, create, full_token, token_at, violation_fields, TestServer,
};
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use prost_types::FieldMask;
use tonic::transport::Channel;
use tonic::Code;

/// Creating `token` fails with INVALID_ARGUMENT naming `field`, and nothing is stored.
async fn assert_create_rejected(
    client: &mut TokenServiceClient<Channel>,
    token: pb::Token,
    field: &str,
) {
    let before = count(client).await;
    let status = client
        .create_token(pb::CreateTokenRequest {
            token: Some(token),
            ttl_seconds: 0,
        })
        .await
        .expect_err("must be rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    assert!(
        status.message().contains(field),
        "message {:?} names {field}",
        status.message()
    );
    assert!(
        violation_fields(&status).iter().any(|f| f == field),
        "details {:?} name {field}",
        violation_fields(&status)
    );
    assert_eq!(count(client).await, before, "nothing written for {field}");
}

fn with_point(space: usize, point: pb::Point3) -> pb::Token {
    let mut token = token_at(0.5, 0.0, 0.0, 0.0);
    let slot = match space {
        0 => &mut token.l1_physical,
        1 => &mut token.l2_sensory,
        2 => &mut token.l3_motor,
        3 => &mut token.l4_emotional,
        4 => &mut token.l5_cognitive,
        5 => &mut token.l6_social,
        6 => &mut token.l7_temporal,
        _ => &mut token.l8_abstract,
    };
    *slot = Some(point);
    token
}

const SPACES: [(&str, f32); 8] = [
    ("l1_physical", 327.67),
    ("l2_sensory", 3.2767),
    ("l3_motor", 32.767),
    ("l4_emotional", 3.2767),
    ("l5_cognitive", 3.2767),
    ("l6_social", 3.2767),
    ("l7_temporal", 327.67),
    ("l8_abstract", 3.2767),
];

#[tokio::test]
async fn create_rejects_out_of_range_coordinate_in_every_space() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    for (index, (name, max)) in SPACES.iter().enumerate() {
        // The bound itself is accepted…
        create(
            &mut client,
            with_point(
                index,
                pb::Point3 {
                    x: *max,
                    y: -max,
                    z: 0.0,
                },
            ),
        )
        .await;
        // …one step past it is not, on any axis.
        let over = max * 1.001;
        let point = pb::Point3 {
            x: 0.0,
            y: 0.0,
            z: -over,
        };
        assert_create_rejected(
            &mut client,
            with_point(index, point),
            &format!("token.{name}.z"),
        )
        .await;
        let point = pb::Point3 {
            x: over,
            y: 0.0,
            z: 0.0,
        };
        assert_create_rejected(
            &mut client,
            with_point(index, point),
            &format!("token.{name}.x"),
        )
        .await;
    }
}

/// A valid token with one scalar replaced: `weight`, `field_radius` or `field_strength`.
fn with_scalar(field: &str, value: f32) -> pb::Token {
    let mut token = full_token();
    match field {
        "weight" => token.weight = value,
        "field_radius" => token.field_radius = value,
        "field_strength" => token.field_strength = value,
        other => panic!("no scalar {other}"),
    }
    token
}

#[tokio::test]
async fn create_rejects_nan_and_infinite_values() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let point = pb::Point3 {
            x: 0.0,
            y: bad,
            z: 0.0,
        };
        assert_create_rejected(&mut client, with_point(3, point), "token.l4_emotional.y").await;
        for field in ["weight", "field_radius", "field_strength"] {
            let token = with_scalar(field, bad);
            assert_create_rejected(&mut client, token, &format!("token.{field}")).await;
        }
    }
}

#[tokio::test]
async fn create_rejects_scalars_out_of_range() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let cases = [
        ("weight", [-0.01, 1.01]),
        ("field_radius", [-0.01, 2.556]),
        ("field_strength", [-0.01, 1.01]),
    ];
    for (field, values) in cases {
        for value in values {
            let token = with_scalar(field, value);
            assert_create_rejected(&mut client, token, &format!("token.{field}")).await;
        }
    }
    let token = pb::Token {
        entity_type: 16,
        ..full_token()
    };
    assert_create_rejected(&mut client, token, "token.entity_type").await;
    let token = pb::Token {
        domain: 99,
        ..full_token()
    };
    assert_create_rejected(&mut client, token, "token.domain").await;
}

#[tokio::test]
async fn create_rejects_explicit_id_with_local_id_zero_or_another_type() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    assert_create_rejected(
        &mut client,
        pb::Token {
            id: 0x0500_0000,
            ..full_token()
        },
        "token.id",
    )
    .await;
    assert_create_rejected(
        &mut client,
        pb::Token {
            id: 0x0500_0001,
            entity_type: 4,
            ..full_token()
        },
        "token.entity_type",
    )
    .await;
    assert_create_rejected(
        &mut client,
        pb::Token {
            id: 0x1500_0001,
            domain: 2,
            ..full_token()
        },
        "token.domain",
    )
    .await;
}

#[tokio::test]
async fn create_without_token_is_invalid() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let status = client
        .create_token(pb::CreateTokenRequest {
            token: None,
            ttl_seconds: 0,
        })
        .await
        .expect_err("token required");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&status), ["token"]);
}

#[tokio::test]
async fn every_violation_of_a_request_is_reported() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let token = pb::Token {
        weight: 2.0,
        domain: 16,
        l2_sensory: Some(pb::Point3 {
            x: 4.5,
            y: 0.0,
            z: 0.0,
        }),
        ..pb::Token::default()
    };
    let status = client
        .create_token(pb::CreateTokenRequest {
            token: Some(token),
            ttl_seconds: 0,
        })
        .await
        .expect_err("invalid");
    assert_eq!(
        violation_fields(&status),
        ["token.weight", "token.l2_sensory.x", "token.domain"]
    );
    assert!(
        status
            .message()
            .contains("token.l2_sensory.x: 4.5 is outside [-3.2767, 3.2767]"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn id_zero_and_unknown_ids_are_rejected() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let status = client
        .get_token(pb::GetTokenRequest { id: 0 })
        .await
        .expect_err("id 0");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&status), ["id"]);
    let status = client
        .delete_token(pb::DeleteTokenRequest { id: 0 })
        .await
        .expect_err("id 0");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .update_token(pb::UpdateTokenRequest {
            token: Some(full_token()),
            update_mask: None,
        })
        .await
        .expect_err("id 0");
    assert_eq!(violation_fields(&status), ["token.id"]);

    // 0x0500_0000 has local_id 0: no token can have it, but it is a valid question.
    for id in [1, 0x1234_5678, 0x0500_0000] {
        let status = client
            .get_token(pb::GetTokenRequest { id })
            .await
            .expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains(&id.to_string()));
        let status = client
            .delete_token(pb::DeleteTokenRequest { id })
            .await
            .expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound);
        let status = client
            .update_token(pb::UpdateTokenRequest {
                token: Some(pb::Token { id, ..full_token() }),
                update_mask: None,
            })
            .await
            .expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound);
    }
}

#[tokio::test]
async fn update_rejects_immutable_paths_and_bad_values_without_writing() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let created = create(&mut client, full_token()).await;
    for (index, path) in [
        "id",
        "entity_type",
        "domain",
        "local_id",
        "timestamp",
        "l1_physical.x",
        "flags.nope",
    ]
    .iter()
    .enumerate()
    {
        let status = client
            .update_token(pb::UpdateTokenRequest {
                token: Some(pb::Token {
                    id: created.id,
                    ..pb::Token::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["weight".to_string(), path.to_string()],
                }),
            })
            .await
            .expect_err("immutable path");
        assert_eq!(status.code(), Code::InvalidArgument, "{path}");
        assert_eq!(
            violation_fields(&status),
            ["update_mask.paths[1]"],
            "{path} ({index})"
        );
        assert!(status.message().contains(path), "{}", status.message());
    }
    let status = client
        .update_token(pb::UpdateTokenRequest {
            token: Some(pb::Token {
                id: created.id,
                weight: 0.7,
                l6_social: Some(pb::Point3 {
                    x: f32::NAN,
                    y: 0.0,
                    z: 0.0,
                }),
                ..pb::Token::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["weight".into(), "l6_social".into()],
            }),
        })
        .await
        .expect_err("NaN");
    assert_eq!(violation_fields(&status), ["token.l6_social.x"]);
    let after = client
        .get_token(pb::GetTokenRequest { id: created.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(after, created, "nothing changed");
}

#[tokio::test]
async fn list_rejects_negative_page_size_and_bad_page_tokens() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    batch(&mut client, vec![full_token(); 10]).await;
    let status = client
        .list_tokens(pb::ListTokensRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("negative");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&status), ["page_size"]);

    let status = client
        .list_tokens(pb::ListTokensRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("malformed");
    assert_eq!(violation_fields(&status), ["page_token"]);

    let first = client
        .list_tokens(pb::ListTokensRequest {
            page_size: 3,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let status = client
        .list_tokens(pb::ListTokensRequest {
            page_size: 3,
            page_token: first.next_page_token,
            filter: Some(pb::TokenFilter {
                domain: Some(0),
                entity_type: None,
            }),
        })
        .await
        .expect_err("token of another filter");
    assert_eq!(violation_fields(&status), ["page_token"]);

    let status = client
        .count_tokens(pb::CountTokensRequest {
            filter: Some(pb::TokenFilter {
                domain: Some(16),
                entity_type: None,
            }),
        })
        .await
        .expect_err("domain 16");
    assert_eq!(violation_fields(&status), ["filter.domain"]);
}

#[tokio::test]
async fn batch_of_1001_is_rejected() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let status = batch_rejected(&mut client, vec![full_token(); 1001]).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&status), ["tokens"]);
    assert!(status.message().contains("1000"));
    assert_eq!(count(&mut client).await, 0);
}

#[tokio::test]
async fn message_over_the_default_limit_is_resource_exhausted() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let big = pb::UpdateTokenRequest {
        token: Some(full_token()),
        update_mask: Some(FieldMask {
            paths: vec!["x".repeat(4 * 1024 * 1024 + 1)],
        }),
    };
    let status = client.update_token(big).await.expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-message-bytes (4194304)"),
        "{}",
        status.message()
    );
    // The connection stays usable and nothing was written.
    assert_eq!(count(&mut client).await, 0);
}

#[tokio::test]
async fn message_over_a_configured_limit_is_resource_exhausted() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 16 * 1024).await;
    let mut client = server.tokens().await;
    let status = batch_rejected(&mut client, vec![full_token(); 500]).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(count(&mut client).await, 0);
    let stream = client
        .stream_tokens(pb::StreamTokensRequest {
            filter: Some(pb::TokenFilter::default()),
        })
        .await;
    assert!(stream.is_ok(), "small requests still pass");
}

#[tokio::test]
async fn update_reports_id_path_and_value_violations_together() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let status = client
        .update_token(pb::UpdateTokenRequest {
            token: Some(pb::Token {
                id: 0,
                weight: 5.0,
                ..pb::Token::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["weight".into(), "foo".into()],
            }),
        })
        .await
        .expect_err("three violations");
    assert_eq!(
        violation_fields(&status),
        ["token.id", "update_mask.paths[1]", "token.weight"]
    );
}

#[tokio::test]
async fn list_reports_page_size_and_filter_violations_together() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let status = client
        .list_tokens(pb::ListTokensRequest {
            page_size: -1,
            page_token: String::new(),
            filter: Some(pb::TokenFilter {
                domain: Some(16),
                entity_type: Some(3),
            }),
        })
        .await
        .expect_err("two violations");
    assert_eq!(violation_fields(&status), ["page_size", "filter.domain"]);
}

#[tokio::test]
async fn the_message_limit_applies_to_health_and_reflection_too() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let server = TestServer::start_with(|c| c.max_message_bytes = 64).await;
    let mut health = HealthClient::new(server.channel().await);
    let status = health
        .check(HealthCheckRequest {
            service: "x".repeat(200),
        })
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let small = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(small.is_ok(), "{small:?}");
}

#[tokio::test]
async fn an_update_mask_of_millions_of_paths_is_one_violation() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let created = create(&mut client, full_token()).await;
    // 65 paths, and the hostile form: two million empty paths (4 MiB on the wire), which
    // once made two million violations and a 289 MB error message.
    for paths in [
        vec!["weight".to_string(); 65],
        vec![String::new(); 2_000_000],
    ] {
        let count = paths.len();
        let status = client
            .update_token(pb::UpdateTokenRequest {
                token: Some(pb::Token {
                    id: created.id,
                    weight: 0.1,
                    ..pb::Token::default()
                }),
                update_mask: Some(FieldMask { paths }),
            })
            .await
            .expect_err("too many paths");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violation_fields(&status), ["update_mask.paths"]);
        assert_eq!(
            status.message(),
            format!("update_mask.paths: {count} paths is more than the 64 a mask may hold")
        );
    }
    let after = client
        .get_token(pb::GetTokenRequest { id: created.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(after, created, "nothing changed");
}
