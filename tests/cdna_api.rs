//! CDNAService over the wire: config updates and their rules, the live token-weight limits on
//! token writes, profiles, scale validation, quarantine, history and concurrent updates. The
//! quarantine expiry itself is tested with paused time in `store::cdna`.

mod common;

use common::{batch, batch_rejected, count, create, token_at, TestServer};
use neurograph::api::pb;
use neurograph::api::pb::cdna_service_client::CdnaServiceClient;
use prost_types::FieldMask;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

type Client = CdnaServiceClient<Channel>;

/// The BadRequest field paths of `status`.
fn violation_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn get_config(client: &mut Client) -> pb::CdnaConfig {
    client
        .get_config(pb::GetConfigRequest {})
        .await
        .expect("get config")
        .into_inner()
}

/// UpdateConfig with `config` under `paths`.
async fn update(
    client: &mut Client,
    config: pb::CdnaConfig,
    paths: &[&str],
    expected_revision: Option<u64>,
    validate: Option<bool>,
) -> Result<pb::CdnaConfig, Status> {
    client
        .update_config(pb::UpdateConfigRequest {
            config: Some(config),
            update_mask: mask(paths),
            expected_revision,
            validate,
        })
        .await
        .map(|r| r.into_inner())
}

fn scales(values: [f32; 8]) -> pb::CdnaConfig {
    pb::CdnaConfig {
        dimension_scales: values.to_vec(),
        ..pb::CdnaConfig::default()
    }
}

fn weights(min: f32, max: f32) -> pb::CdnaConfig {
    pb::CdnaConfig {
        min_token_weight: min,
        max_token_weight: max,
        ..pb::CdnaConfig::default()
    }
}

/// `status` is INVALID_ARGUMENT whose message and details name every field of `fields`.
fn assert_invalid(status: &Status, fields: &[&str]) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = violation_fields(status);
    for field in fields {
        assert!(
            status.message().contains(field),
            "message {:?} names {field}",
            status.message()
        );
        assert!(
            details.iter().any(|f| f == field),
            "details {details:?} name {field}"
        );
    }
}

async fn switch(
    client: &mut Client,
    profile_id: &str,
) -> Result<pb::SwitchProfileResponse, Status> {
    client
        .switch_profile(pb::SwitchProfileRequest {
            profile_id: profile_id.into(),
            expected_revision: None,
        })
        .await
        .map(|r| r.into_inner())
}

async fn start(client: &mut Client, duration_seconds: u32) -> Result<pb::QuarantineStatus, Status> {
    client
        .start_quarantine(pb::StartQuarantineRequest { duration_seconds })
        .await
        .map(|r| r.into_inner())
}

async fn stop(client: &mut Client, apply: bool) -> Result<pb::QuarantineStatus, Status> {
    client
        .stop_quarantine(pb::StopQuarantineRequest { apply })
        .await
        .map(|r| r.into_inner())
}

async fn quarantine_status(client: &mut Client) -> pb::QuarantineStatus {
    client
        .get_quarantine_status(pb::GetQuarantineStatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

async fn history(
    client: &mut Client,
    page_size: i32,
    page_token: &str,
) -> Result<pb::GetHistoryResponse, Status> {
    client
        .get_history(pb::GetHistoryRequest {
            page_size,
            page_token: page_token.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn reset(
    client: &mut Client,
    clear_history: bool,
    expected_revision: Option<u64>,
) -> Result<pb::CdnaConfig, Status> {
    client
        .reset_config(pb::ResetConfigRequest {
            clear_history,
            expected_revision,
        })
        .await
        .map(|r| r.into_inner())
}

fn fresh_flags() -> pb::CdnaFlags {
    pb::CdnaFlags {
        validation: true,
        events: true,
        mutation: false,
        strict: false,
    }
}

mod config {
    use super::*;

    #[tokio::test]
    async fn a_fresh_store_has_the_default_config() {
        let server = TestServer::start().await;
        let config = get_config(&mut server.cdna().await).await;
        assert_eq!(config.version, "2.1.0");
        assert_eq!(config.profile, "default");
        assert_eq!(config.dimension_scales, vec![1.0; 8]);
        assert_eq!(config.flags, Some(fresh_flags()));
        assert_eq!(
            (config.min_token_weight, config.max_token_weight),
            (0.0, 1.0)
        );
        assert_eq!(config.revision, 1);
        assert!(config.updated_at.expect("set").seconds > 1_600_000_000);
    }

    #[tokio::test]
    async fn update_requires_a_mask() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        for update_mask in [None, mask(&[])] {
            let status = client
                .update_config(pb::UpdateConfigRequest {
                    config: Some(weights(0.1, 0.9)),
                    update_mask,
                    expected_revision: None,
                    validate: None,
                })
                .await
                .expect_err("mask required");
            assert_invalid(&status, &["update_mask"]);
        }
        assert_eq!(get_config(&mut client).await.revision, 1);
    }

    #[tokio::test]
    async fn update_requires_the_config() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let status = client
            .update_config(pb::UpdateConfigRequest {
                config: None,
                update_mask: mask(&["min_token_weight"]),
                expected_revision: None,
                validate: None,
            })
            .await
            .expect_err("config required");
        assert_invalid(&status, &["config"]);
        assert_eq!(get_config(&mut client).await.revision, 1);
    }

    #[tokio::test]
    async fn update_rejects_every_path_that_is_not_mutable() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let paths = [
            "min_token_weight",
            "profile",
            "revision",
            "flags.other",
            "dimension_scales[0]",
            "version",
        ];
        let status = update(&mut client, weights(0.1, 1.0), &paths, None, None)
            .await
            .expect_err("bad paths");
        assert_invalid(
            &status,
            &[
                "update_mask.paths[1]",
                "update_mask.paths[2]",
                "update_mask.paths[3]",
                "update_mask.paths[4]",
                "update_mask.paths[5]",
            ],
        );
        assert_eq!(violation_fields(&status).len(), 5);
        let config = get_config(&mut client).await;
        assert_eq!((config.revision, config.min_token_weight), (1, 0.0));
    }

    #[tokio::test]
    async fn update_changes_only_the_masked_fields_and_raises_the_revision() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let before = get_config(&mut client).await;
        let sent = pb::CdnaConfig {
            flags: Some(pb::CdnaFlags {
                strict: true,
                validation: false,
                ..Default::default()
            }),
            min_token_weight: 0.3,
            max_token_weight: 0.4,
            profile: "creative".into(),
            revision: 99,
            ..scales([2.0; 8])
        };
        let after = update(
            &mut client,
            sent,
            &["flags.strict", "max_token_weight"],
            Some(1),
            None,
        )
        .await
        .expect("update");
        assert_eq!(after.revision, 2);
        assert_eq!(after.profile, "default");
        assert_eq!(after.dimension_scales, vec![1.0; 8]);
        assert_eq!(
            after.flags,
            Some(pb::CdnaFlags {
                strict: true,
                ..fresh_flags()
            })
        );
        assert_eq!((after.min_token_weight, after.max_token_weight), (0.0, 0.4));
        let seconds = |c: &pb::CdnaConfig| c.updated_at.as_ref().map(|t| (t.seconds, t.nanos));
        assert!(seconds(&after) >= seconds(&before));
        assert_eq!(get_config(&mut client).await, after);

        // `flags` replaces all four (an absent field is false, as in proto3).
        let all = pb::CdnaConfig {
            flags: Some(pb::CdnaFlags {
                mutation: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let after = update(&mut client, all, &["flags"], None, None)
            .await
            .expect("update flags");
        assert_eq!(
            after.flags,
            Some(pb::CdnaFlags {
                mutation: true,
                ..Default::default()
            })
        );
        assert_eq!(after.revision, 3);
    }

    #[tokio::test]
    async fn a_stale_expected_revision_is_aborted_and_changes_nothing() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        update(
            &mut client,
            weights(0.1, 1.0),
            &["min_token_weight"],
            Some(1),
            None,
        )
        .await
        .expect("current revision");
        let before = get_config(&mut client).await;
        let status = update(
            &mut client,
            weights(0.5, 1.0),
            &["min_token_weight"],
            Some(1),
            None,
        )
        .await
        .expect_err("stale");
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        assert!(
            status.message().contains("revision 2"),
            "{}",
            status.message()
        );
        assert_eq!(get_config(&mut client).await, before);
    }

    #[tokio::test]
    async fn scales_breaking_the_limits_are_rejected_listing_every_failure() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let bad = scales([20.5, 1.0, 1.0, 1.0, 31.0, 1.0, 20.0, 51.0]);
        let status = update(&mut client, bad, &["dimension_scales"], None, None)
            .await
            .expect_err("above the limits");
        assert_invalid(
            &status,
            &[
                "config.dimension_scales[0]",
                "config.dimension_scales[4]",
                "config.dimension_scales[7]",
            ],
        );
        assert_eq!(
            violation_fields(&status).len(),
            3,
            "L7 at its limit is no failure"
        );
        for n in ["L1: ", "L5: ", "L8: "] {
            assert!(status.message().contains(n), "{}", status.message());
        }
        let explicit = update(
            &mut client,
            scales([1.0, 1.0, 1.0, 1.0, 31.0, 1.0, 1.0, 1.0]),
            &["dimension_scales"],
            None,
            Some(true),
        )
        .await
        .expect_err("validate true is the default");
        assert_invalid(&explicit, &["config.dimension_scales[4]"]);
        assert_eq!(get_config(&mut client).await.revision, 1);
    }

    #[tokio::test]
    async fn validate_false_skips_only_the_limit_rules() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let above = [25.0, 1.0, 1.0, 1.0, 40.0, 1.0, 1.0, 60.0];
        let config = update(
            &mut client,
            scales(above),
            &["dimension_scales"],
            None,
            Some(false),
        )
        .await
        .expect("limits skipped");
        assert_eq!(config.dimension_scales, above.to_vec());
        assert_eq!(config.profile, "custom");

        let zero = update(
            &mut client,
            scales([1.0, 0.0, 1.0, 1.0, 1.0, -2.0, 1.0, 1.0]),
            &["dimension_scales"],
            None,
            Some(false),
        )
        .await
        .expect_err("> 0 still required");
        assert_invalid(
            &zero,
            &["config.dimension_scales[1]", "config.dimension_scales[5]"],
        );
        let mut nan = scales([1.0; 8]);
        nan.dimension_scales[3] = f32::NAN;
        let status = update(&mut client, nan, &["dimension_scales"], None, Some(false))
            .await
            .expect_err("finite required");
        assert_invalid(&status, &["config.dimension_scales[3]"]);
        let seven = pb::CdnaConfig {
            dimension_scales: vec![1.0; 7],
            ..Default::default()
        };
        let status = update(&mut client, seven, &["dimension_scales"], None, Some(false))
            .await
            .expect_err("8 required");
        assert_invalid(&status, &["config.dimension_scales"]);
        assert_eq!(get_config(&mut client).await, config);
    }

    #[tokio::test]
    async fn scales_leaving_the_preset_make_the_profile_custom() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        switch(&mut client, "explorer").await.expect("switch");
        let explorer = [1.0, 1.5, 1.2, 2.0, 3.0, 2.5, 2.0, 5.0];
        let same = update(
            &mut client,
            scales(explorer),
            &["dimension_scales"],
            None,
            None,
        )
        .await
        .expect("same scales");
        assert_eq!(same.profile, "explorer");
        let mut changed = explorer;
        changed[0] = 1.1;
        let custom = update(
            &mut client,
            scales(changed),
            &["dimension_scales"],
            None,
            None,
        )
        .await
        .expect("changed scales");
        assert_eq!(custom.profile, "custom");
        let weights_only = update(
            &mut client,
            weights(0.0, 0.9),
            &["max_token_weight"],
            None,
            None,
        )
        .await
        .expect("weights");
        assert_eq!(weights_only.profile, "custom");
    }

    #[tokio::test]
    async fn weight_limits_stay_ordered_within_zero_and_one() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let both = ["min_token_weight", "max_token_weight"];
        for (min, max, field) in [
            (-0.1, 1.0, "config.min_token_weight"),
            (0.0, 1.5, "config.max_token_weight"),
            (f32::NAN, 1.0, "config.min_token_weight"),
            (0.6, 0.5, "config.min_token_weight"),
        ] {
            let status = update(&mut client, weights(min, max), &both, None, None)
                .await
                .expect_err("bad limits");
            assert_invalid(&status, &[field]);
        }
        update(&mut client, weights(0.5, 0.5), &both, None, None)
            .await
            .expect("min == max is allowed");
        // Against the live config: raising min above the live max is rejected too.
        let status = update(
            &mut client,
            weights(0.7, 0.0),
            &["min_token_weight"],
            None,
            None,
        )
        .await
        .expect_err("above the live max");
        assert_invalid(&status, &["config.min_token_weight"]);
        let config = get_config(&mut client).await;
        assert_eq!(
            (config.min_token_weight, config.max_token_weight),
            (0.5, 0.5)
        );
        assert_eq!(config.revision, 2);
    }
}

mod weight_limits {
    use super::*;

    async fn narrowed(server: &TestServer) {
        let mut client = server.cdna().await;
        update(
            &mut client,
            weights(0.2, 0.8),
            &["min_token_weight", "max_token_weight"],
            None,
            None,
        )
        .await
        .expect("narrow");
    }

    #[tokio::test]
    async fn create_outside_the_limits_is_rejected_naming_the_weight() {
        let server = TestServer::start().await;
        let mut tokens = server.tokens().await;
        narrowed(&server).await;
        for weight in [0.1, 0.81, 1.0, 0.0] {
            let status = tokens
                .create_token(pb::CreateTokenRequest {
                    token: Some(token_at(weight, 0.0, 0.0, 0.0)),
                    ttl_seconds: 0,
                })
                .await
                .expect_err("outside the limits");
            assert_invalid(&status, &["token.weight"]);
            assert!(
                status.message().contains("[0.2, 0.8]"),
                "{}",
                status.message()
            );
        }
        assert_eq!(count(&mut tokens).await, 0);
        for weight in [0.2, 0.8] {
            create(&mut tokens, token_at(weight, 0.0, 0.0, 0.0)).await;
        }
    }

    #[tokio::test]
    async fn a_batch_with_any_weight_outside_the_limits_writes_nothing() {
        let server = TestServer::start().await;
        let mut tokens = server.tokens().await;
        narrowed(&server).await;
        let status = batch_rejected(
            &mut tokens,
            vec![
                token_at(0.5, 0.0, 0.0, 0.0),
                token_at(0.9, 0.0, 0.0, 0.0),
                token_at(0.5, 0.0, 0.0, 0.0),
                token_at(0.1, 0.0, 0.0, 0.0),
            ],
        )
        .await;
        assert_invalid(&status, &["tokens[1].weight", "tokens[3].weight"]);
        assert_eq!(violation_fields(&status).len(), 2);
        assert_eq!(count(&mut tokens).await, 0);
        batch(&mut tokens, vec![token_at(0.5, 0.0, 0.0, 0.0); 3]).await;
    }

    #[tokio::test]
    async fn updates_writing_the_weight_are_checked_and_stored_tokens_never_change() {
        let server = TestServer::start().await;
        let mut tokens = server.tokens().await;
        let heavy = create(&mut tokens, token_at(0.95, 1.0, 2.0, 3.0)).await;
        narrowed(&server).await;
        let stored = tokens
            .get_token(pb::GetTokenRequest { id: heavy.id })
            .await
            .expect("get")
            .into_inner();
        assert_eq!(stored, heavy, "narrowing alters no stored token");

        let status = tokens
            .update_token(pb::UpdateTokenRequest {
                token: Some(pb::Token {
                    id: heavy.id,
                    ..token_at(0.9, 0.0, 0.0, 0.0)
                }),
                update_mask: mask(&["weight"]),
            })
            .await
            .expect_err("weight outside the limits");
        assert_invalid(&status, &["token.weight"]);
        let status = tokens
            .update_token(pb::UpdateTokenRequest {
                token: Some(pb::Token {
                    id: heavy.id,
                    ..token_at(0.9, 0.0, 0.0, 0.0)
                }),
                update_mask: None,
            })
            .await
            .expect_err("an empty mask writes the weight too");
        assert_invalid(&status, &["token.weight"]);
        let unchanged = tokens
            .get_token(pb::GetTokenRequest { id: heavy.id })
            .await
            .expect("get")
            .into_inner();
        assert_eq!(unchanged, heavy);

        let moved = tokens
            .update_token(pb::UpdateTokenRequest {
                token: Some(pb::Token {
                    id: heavy.id,
                    ..token_at(0.0, 5.0, 5.0, 5.0)
                }),
                update_mask: mask(&["l1_physical"]),
            })
            .await
            .expect("an update not writing the weight keeps the old one")
            .into_inner();
        assert_eq!(moved.weight, 0.95);
    }
}

mod profiles {
    use super::*;

    #[tokio::test]
    async fn list_holds_the_five_presets_of_the_contract() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let profiles = client
            .list_profiles(pb::ListProfilesRequest {})
            .await
            .expect("list")
            .into_inner()
            .profiles;
        let ids: Vec<_> = profiles.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            ["default", "explorer", "analyzer", "creative", "quarantine"]
        );
        let creative = &profiles[3];
        assert_eq!(creative.name, "Creative");
        assert_eq!(
            creative.scales,
            vec![1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 34.0]
        );
        assert_eq!((creative.plasticity, creative.evolution_rate), (0.95, 0.8));
        assert_eq!(creative.description, "Experimental, wide abstract range");
        assert_eq!(creative.max_change, None);
        let quarantine = &profiles[4];
        assert!(quarantine.restricted);
        assert_eq!(quarantine.max_change, Some(0.5));
        assert_eq!(
            quarantine.scales,
            vec![1.0, 1.0, 1.0, 1.0, 2.0, 1.5, 1.0, 3.0]
        );
        for profile in &profiles {
            let got = client
                .get_profile(pb::GetProfileRequest {
                    profile_id: profile.id.clone(),
                })
                .await
                .expect("get")
                .into_inner();
            assert_eq!(&got, profile);
        }
    }

    #[tokio::test]
    async fn unknown_profiles_are_not_found() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        for id in ["custom", "Default", "nope"] {
            let status = client
                .get_profile(pb::GetProfileRequest {
                    profile_id: id.into(),
                })
                .await
                .expect_err("unknown");
            assert_eq!(status.code(), Code::NotFound, "{id}");
            let status = switch(&mut client, id).await.expect_err("unknown");
            assert_eq!(status.code(), Code::NotFound, "{id}");
        }
        let status = switch(&mut client, "").await.expect_err("empty");
        assert_invalid(&status, &["profile_id"]);
        assert_eq!(get_config(&mut client).await.revision, 1);
    }

    #[tokio::test]
    async fn switching_sets_the_profile_and_its_scales_with_warnings() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        update(
            &mut client,
            weights(0.1, 0.9),
            &["min_token_weight", "max_token_weight"],
            None,
            None,
        )
        .await
        .expect("weights");
        let switched = switch(&mut client, "creative").await.expect("switch");
        assert_eq!(
            (switched.old_profile.as_str(), switched.new_profile.as_str()),
            ("default", "creative")
        );
        let config = switched.config.expect("config");
        assert_eq!(config.profile, "creative");
        assert_eq!(
            config.dimension_scales,
            vec![1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 34.0]
        );
        assert_eq!(config.revision, 3);
        assert_eq!(
            (config.min_token_weight, config.max_token_weight),
            (0.1, 0.9),
            "only the scales"
        );
        assert_eq!(get_config(&mut client).await, config);
        let danger: Vec<_> = switched
            .warnings
            .iter()
            .filter(|w| w.contains("danger"))
            .collect();
        assert_eq!(danger.len(), 1, "{:?}", switched.warnings);
        assert!(danger[0].starts_with("L7: "), "{danger:?}");
        let prefixes: Vec<_> = switched.warnings.iter().map(|w| &w[..4]).collect();
        assert_eq!(prefixes, ["L6: ", "L7: ", "L8: "]);

        let quiet = switch(&mut client, "default").await.expect("switch back");
        assert!(quiet.warnings.is_empty());
        assert_eq!(quiet.old_profile, "creative");
    }

    #[tokio::test]
    async fn switching_with_a_stale_expected_revision_is_aborted() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let status = client
            .switch_profile(pb::SwitchProfileRequest {
                profile_id: "analyzer".into(),
                expected_revision: Some(2),
            })
            .await
            .expect_err("stale");
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(get_config(&mut client).await.profile, "default");
        let ok = client
            .switch_profile(pb::SwitchProfileRequest {
                profile_id: "analyzer".into(),
                expected_revision: Some(1),
            })
            .await
            .expect("current")
            .into_inner();
        assert_eq!(ok.config.expect("config").revision, 2);
    }
}

mod validate_scales {
    use super::*;

    #[tokio::test]
    async fn a_million_nans_make_the_count_violation_and_at_most_eight_more() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let status = validate(&mut client, vec![f32::NAN; 1_000_000])
            .await
            .expect_err("wrong count");
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields = violation_fields(&status);
        assert_eq!(fields.len(), 9, "{fields:?}");
        assert_eq!(fields[0], "scales");
        assert!(status
            .message()
            .contains("1000000 values sent; exactly 8 are required"));
    }

    #[tokio::test]
    async fn an_update_mask_of_too_many_paths_is_one_violation() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let status = client
            .update_config(pb::UpdateConfigRequest {
                config: Some(weights(0.1, 0.9)),
                update_mask: Some(FieldMask {
                    paths: vec![String::new(); 100_000],
                }),
                expected_revision: None,
                validate: None,
            })
            .await
            .expect_err("too many paths");
        assert_eq!(violation_fields(&status), ["update_mask.paths"]);
        assert_eq!(get_config(&mut client).await.revision, 1);
    }

    async fn validate(
        client: &mut Client,
        scales: Vec<f32>,
    ) -> Result<pb::ValidateScalesResponse, Status> {
        client
            .validate_scales(pb::ValidateScalesRequest { scales })
            .await
            .map(|r| r.into_inner())
    }

    fn with(dimension: usize, value: f32) -> Vec<f32> {
        let mut scales = vec![1.0; 8];
        scales[dimension] = value;
        scales
    }

    #[tokio::test]
    async fn boundaries_give_errors_and_warnings_per_dimension() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        // (dimension, value, valid, errors, warnings, expected word)
        let cases: &[(usize, f32, bool, usize, usize, &str)] = &[
            (0, 10.0, true, 0, 0, ""),
            (0, 10.5, true, 0, 1, "caution"),
            (0, 15.0, true, 0, 1, "caution"),
            (0, 15.5, true, 0, 1, "danger"),
            (0, 20.0, true, 0, 1, "danger"),
            (0, 20.5, false, 1, 0, "limit"),
            (0, 0.0, false, 1, 0, "> 0"),
            (0, -3.0, false, 1, 0, "> 0"),
            (4, 15.0, true, 0, 0, ""),
            (4, 22.5, true, 0, 1, "caution"),
            (4, 30.0, true, 0, 1, "danger"),
            (4, 30.5, false, 1, 0, "limit"),
            (7, 25.0, true, 0, 0, ""),
            (7, 37.5, true, 0, 1, "caution"),
            (7, 50.0, true, 0, 1, "danger"),
            (7, 50.5, false, 1, 0, "limit"),
        ];
        for &(dimension, value, valid, errors, warnings, word) in cases {
            let reply = validate(&mut client, with(dimension, value))
                .await
                .expect("8 finite");
            let label = format!("L{} = {value}", dimension + 1);
            assert_eq!(reply.valid, valid, "{label}");
            assert_eq!(
                (reply.errors.len(), reply.warnings.len()),
                (errors, warnings),
                "{label}"
            );
            for item in reply.errors.iter().chain(&reply.warnings) {
                assert!(item.starts_with(&format!("L{}: ", dimension + 1)), "{item}");
                assert!(item.contains(word), "{label}: {item}");
            }
        }
        let many = validate(&mut client, vec![0.0, 11.0, 16.0, 21.0, 1.0, 1.0, 1.0, 1.0])
            .await
            .expect("finite");
        assert!(!many.valid);
        assert_eq!((many.errors.len(), many.warnings.len()), (2, 2));
        assert_eq!(
            get_config(&mut client).await.revision,
            1,
            "validation changes nothing"
        );
    }

    #[tokio::test]
    async fn wrong_count_or_non_finite_values_are_invalid_arguments() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        for (scales, field) in [
            (vec![1.0; 7], "scales"),
            (vec![1.0; 9], "scales"),
            (vec![], "scales"),
            (with(2, f32::NAN), "scales[2]"),
            (with(7, f32::INFINITY), "scales[7]"),
            (with(0, f32::NEG_INFINITY), "scales[0]"),
        ] {
            let status = validate(&mut client, scales).await.expect_err("invalid");
            assert_invalid(&status, &[field]);
        }
    }
}

mod quarantine {
    use super::*;

    #[tokio::test]
    async fn start_snapshots_and_reports_the_default_duration() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let idle = quarantine_status(&mut client).await;
        assert_eq!(idle, pb::QuarantineStatus::default());
        let before = get_config(&mut client).await;
        let started = start(&mut client, 0).await.expect("start");
        assert!(started.active);
        assert_eq!(started.duration_seconds, 300);
        assert_eq!(started.time_left_seconds, 300, "rounded up");
        assert!(started.started_at.is_some());
        assert_eq!((started.token_churn, started.config_changes), (0, 0));
        assert_eq!(
            get_config(&mut client).await,
            before,
            "starting is no change"
        );
        let status = quarantine_status(&mut client).await;
        assert!(
            status.active && status.time_left_seconds <= 300 && status.time_left_seconds >= 299
        );
    }

    #[tokio::test]
    async fn durations_outside_60_to_3600_are_invalid() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        for duration in [1, 59, 3601, u32::MAX] {
            let status = start(&mut client, duration)
                .await
                .expect_err("out of range");
            assert_invalid(&status, &["duration_seconds"]);
        }
        assert!(!quarantine_status(&mut client).await.active);
        for duration in [60, 3600] {
            let started = start(&mut client, duration).await.expect("in range");
            assert_eq!(started.duration_seconds, duration);
            stop(&mut client, true).await.expect("stop");
        }
    }

    #[tokio::test]
    async fn starting_twice_or_stopping_none_is_a_failed_precondition() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let status = stop(&mut client, true).await.expect_err("none active");
        assert_eq!(status.code(), Code::FailedPrecondition);
        start(&mut client, 60).await.expect("start");
        let status = start(&mut client, 60).await.expect_err("already active");
        assert_eq!(status.code(), Code::FailedPrecondition);
        stop(&mut client, false).await.expect("stop");
        let status = stop(&mut client, false).await.expect_err("stopped already");
        assert_eq!(status.code(), Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn stop_with_apply_keeps_the_changes() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        start(&mut client, 60).await.expect("start");
        switch(&mut client, "explorer").await.expect("switch");
        update(
            &mut client,
            weights(0.1, 1.0),
            &["min_token_weight"],
            None,
            None,
        )
        .await
        .expect("update");
        let kept = get_config(&mut client).await;
        let stopped = stop(&mut client, true).await.expect("stop");
        assert!(!stopped.active);
        assert_eq!((stopped.time_left_seconds, stopped.config_changes), (0, 2));
        assert_eq!(get_config(&mut client).await, kept, "keeping is no change");
        assert_eq!(quarantine_status(&mut client).await, stopped);
    }

    #[tokio::test]
    async fn stop_without_apply_restores_the_snapshot_under_a_new_revision() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let before = get_config(&mut client).await;
        start(&mut client, 60).await.expect("start");
        switch(&mut client, "creative").await.expect("switch");
        update(
            &mut client,
            weights(0.0, 0.5),
            &["max_token_weight"],
            None,
            None,
        )
        .await
        .expect("update");
        let stopped = stop(&mut client, false).await.expect("stop");
        assert_eq!(stopped.config_changes, 2);
        let after = get_config(&mut client).await;
        assert_eq!(after.revision, 4, "the restore is a change");
        assert_eq!(
            pb::CdnaConfig {
                revision: before.revision,
                updated_at: before.updated_at,
                ..after.clone()
            },
            before
        );
    }

    #[tokio::test]
    async fn token_writes_during_a_quarantine_count_as_churn() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let mut tokens = server.tokens().await;
        create(&mut tokens, token_at(0.5, 0.0, 0.0, 0.0)).await;
        start(&mut client, 60).await.expect("start");
        let a = create(&mut tokens, token_at(0.5, 0.0, 0.0, 0.0)).await;
        batch(&mut tokens, vec![token_at(0.5, 0.0, 0.0, 0.0); 3]).await;
        tokens
            .update_token(pb::UpdateTokenRequest {
                token: Some(pb::Token {
                    id: a.id,
                    ..token_at(0.6, 0.0, 0.0, 0.0)
                }),
                update_mask: mask(&["weight"]),
            })
            .await
            .expect("update");
        tokens
            .delete_token(pb::DeleteTokenRequest { id: a.id })
            .await
            .expect("delete");
        // A rejected write is no churn.
        tokens
            .create_token(pb::CreateTokenRequest {
                token: Some(token_at(2.0, 0.0, 0.0, 0.0)),
                ttl_seconds: 0,
            })
            .await
            .expect_err("invalid");
        assert_eq!(quarantine_status(&mut client).await.token_churn, 6);
        // A clear counts each of the 4 tokens it removes.
        tokens
            .clear_tokens(pb::ClearTokensRequest {})
            .await
            .expect("clear");
        assert_eq!(quarantine_status(&mut client).await.token_churn, 10);
        let stopped = stop(&mut client, true).await.expect("stop");
        assert_eq!(stopped.token_churn, 10);
        create(&mut tokens, token_at(0.5, 0.0, 0.0, 0.0)).await;
        assert_eq!(quarantine_status(&mut client).await.token_churn, 10);
    }

    #[tokio::test]
    async fn reset_during_a_quarantine_is_a_failed_precondition() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        switch(&mut client, "analyzer").await.expect("switch");
        start(&mut client, 60).await.expect("start");
        let status = reset(&mut client, false, None)
            .await
            .expect_err("quarantine active");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(get_config(&mut client).await.profile, "analyzer");
        stop(&mut client, true).await.expect("stop");
        let config = reset(&mut client, false, Some(2)).await.expect("reset");
        assert_eq!(config.profile, "default");
        assert_eq!(config.revision, 3);
    }
}

mod reset_and_history {
    use super::*;

    #[tokio::test]
    async fn reset_restores_the_fresh_config_under_a_new_revision() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        switch(&mut client, "creative").await.expect("switch");
        update(
            &mut client,
            pb::CdnaConfig {
                flags: Some(pb::CdnaFlags::default()),
                ..weights(0.3, 0.4)
            },
            &["flags", "min_token_weight", "max_token_weight"],
            None,
            None,
        )
        .await
        .expect("update");
        let status = reset(&mut client, false, Some(1)).await.expect_err("stale");
        assert_eq!(status.code(), Code::Aborted);
        let config = reset(&mut client, false, Some(3)).await.expect("reset");
        assert_eq!(config.profile, "default");
        assert_eq!(config.dimension_scales, vec![1.0; 8]);
        assert_eq!(config.flags, Some(fresh_flags()));
        assert_eq!(
            (config.min_token_weight, config.max_token_weight),
            (0.0, 1.0)
        );
        assert_eq!(config.revision, 4);
        assert_eq!(get_config(&mut client).await, config);
    }

    #[tokio::test]
    async fn every_action_is_an_entry_newest_first() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        assert_eq!(
            history(&mut client, 0, "").await.expect("empty").total_size,
            0
        );
        update(
            &mut client,
            weights(0.1, 1.0),
            &["min_token_weight"],
            None,
            None,
        )
        .await
        .expect("update");
        switch(&mut client, "explorer").await.expect("switch");
        start(&mut client, 60).await.expect("start");
        stop(&mut client, true).await.expect("stop applied");
        start(&mut client, 60).await.expect("start");
        switch(&mut client, "creative").await.expect("switch");
        stop(&mut client, false).await.expect("stop discarded");
        reset(&mut client, false, None).await.expect("reset");
        let page = history(&mut client, 0, "").await.expect("history");
        use pb::HistoryAction as A;
        let actions: Vec<_> = page.entries.iter().map(|e| e.action()).collect();
        assert_eq!(
            actions,
            [
                A::Reset,
                A::QuarantineStopDiscarded,
                A::ProfileSwitch,
                A::QuarantineStart,
                A::QuarantineStopApplied,
                A::QuarantineStart,
                A::ProfileSwitch,
                A::ConfigUpdate,
            ]
        );
        let revisions: Vec<_> = page.entries.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, [6, 5, 4, 3, 3, 3, 3, 2]);
        let sequences: Vec<_> = page.entries.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, [8, 7, 6, 5, 4, 3, 2, 1]);
        assert!(page
            .entries
            .iter()
            .all(|e| e.timestamp.is_some() && !e.details.is_empty()));
        assert!(
            page.entries[2].details.contains("explorer → creative"),
            "{}",
            page.entries[2].details
        );
        assert_eq!(page.total_size, 8);
        assert!(page.next_page_token.is_empty());
    }

    #[tokio::test]
    async fn pages_walk_the_history_and_bad_paging_is_invalid() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        for _ in 0..5 {
            switch(&mut client, "explorer").await.expect("switch");
        }
        let mut token = String::new();
        let mut seen = Vec::new();
        let mut added = 0;
        loop {
            let page = history(&mut client, 2, &token).await.expect("page");
            assert_eq!(page.total_size, 5 + added, "counted when the page was read");
            assert!(page.entries.len() <= 2);
            seen.extend(page.entries.iter().map(|e| e.sequence));
            if page.next_page_token.is_empty() {
                break;
            }
            // A change between pages does not make the walk skip or repeat.
            switch(&mut client, "default").await.expect("switch");
            added += 1;
            token = page.next_page_token;
        }
        assert_eq!(seen, [5, 4, 3, 2, 1]);

        let status = history(&mut client, -1, "").await.expect_err("negative");
        assert_invalid(&status, &["page_size"]);
        let status = history(&mut client, 0, "garbage")
            .await
            .expect_err("malformed");
        assert_invalid(&status, &["page_token"]);
        let mut tokens = server.tokens().await;
        batch(&mut tokens, vec![token_at(0.5, 0.0, 0.0, 0.0); 3]).await;
        let list_token = tokens
            .list_tokens(pb::ListTokensRequest {
                page_size: 1,
                page_token: String::new(),
                filter: None,
            })
            .await
            .expect("list")
            .into_inner()
            .next_page_token;
        let status = history(&mut client, 0, &list_token)
            .await
            .expect_err("a ListTokens token");
        assert_invalid(&status, &["page_token"]);
    }

    #[tokio::test]
    async fn history_keeps_the_newest_1000_and_clear_history_leaves_the_reset() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        for _ in 0..1003 {
            switch(&mut client, "explorer").await.expect("switch");
        }
        let first = history(&mut client, 5000, "").await.expect("history");
        assert_eq!(first.total_size, 1000);
        assert_eq!(
            first.entries.len(),
            1000,
            "page_size above 1000 serves 1000"
        );
        assert_eq!(first.entries[0].sequence, 1003);
        assert_eq!(first.entries[999].sequence, 4);
        assert!(first.next_page_token.is_empty());
        let default_page = history(&mut client, 0, "").await.expect("history");
        assert_eq!(default_page.entries.len(), 50);

        let config = reset(&mut client, true, None).await.expect("reset");
        let page = history(&mut client, 0, "").await.expect("history");
        assert_eq!(page.total_size, 1);
        assert_eq!(page.entries[0].action(), pb::HistoryAction::Reset);
        assert_eq!(page.entries[0].sequence, 1004);
        assert_eq!(page.entries[0].revision, config.revision);
    }
}

mod concurrency {
    use super::*;

    const N: usize = 16;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_updates_with_one_expected_revision_let_exactly_one_win() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let mut tasks = Vec::new();
        for i in 0..N {
            let mut client = server.cdna().await;
            tasks.push(tokio::spawn(async move {
                let min = i as f32 / 100.0;
                update(
                    &mut client,
                    weights(min, 1.0),
                    &["min_token_weight"],
                    Some(1),
                    None,
                )
                .await
            }));
        }
        let mut ok = 0;
        let mut aborted = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(config) => {
                    ok += 1;
                    assert_eq!(config.revision, 2);
                }
                Err(status) if status.code() == Code::Aborted => aborted += 1,
                Err(status) => panic!("unexpected {status:?}"),
            }
        }
        assert_eq!((ok, aborted), (1, N - 1));
        assert_eq!(get_config(&mut client).await.revision, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_updates_without_expected_revision_each_raise_it_once() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let mut tasks = Vec::new();
        for i in 0..N {
            let mut client = server.cdna().await;
            tasks.push(tokio::spawn(async move {
                let strict = pb::CdnaConfig {
                    flags: Some(pb::CdnaFlags {
                        strict: i % 2 == 0,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                update(&mut client, strict, &["flags.strict"], None, None).await
            }));
        }
        let mut revisions = Vec::new();
        for task in tasks {
            revisions.push(task.await.expect("task").expect("update").revision);
        }
        revisions.sort();
        assert_eq!(revisions, (2..2 + N as u64).collect::<Vec<_>>());
        assert_eq!(get_config(&mut client).await.revision, 1 + N as u64);
    }
}

mod system {
    use super::*;

    #[tokio::test]
    async fn status_reports_the_live_profile_and_ready_checks_cdna() {
        let server = TestServer::start().await;
        let mut client = server.cdna().await;
        let mut system = server.system().await;
        let profile = |status: pb::StatusResponse| status.cdna_profile;
        let status = system
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(profile(status), "default");
        switch(&mut client, "analyzer").await.expect("switch");
        let status = system
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(
            status.components.get("cdna").map(String::as_str),
            Some("ok")
        );
        assert_eq!(profile(status), "analyzer");
        update(
            &mut client,
            scales([2.0; 8]),
            &["dimension_scales"],
            None,
            None,
        )
        .await
        .expect("custom scales");
        let status = system
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(profile(status), "custom");
        let ready = system
            .ready(pb::ReadyRequest {})
            .await
            .expect("ready")
            .into_inner();
        assert_eq!(ready.checks.get("cdna").map(String::as_str), Some("ok"));
    }
}
