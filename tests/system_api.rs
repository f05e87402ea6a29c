//! System service, grpc.health.v1, reflection (v1 and v1alpha) and graceful shutdown.

mod common;

use std::time::Duration;

use common::{batch, create, full_token, TestServer};
use neurograph::api::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn health_and_ready_report_every_existing_component() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    create(&mut tokens, full_token()).await;
    let mut system = server.system().await;
    let health = system
        .health(pb::HealthRequest {})
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.status(), pb::HealthStatus::Healthy);
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(health.tokens_count, 1);
    assert_eq!(health.storage_backend, "memory");
    let ready = system
        .ready(pb::ReadyRequest {})
        .await
        .expect("ready")
        .into_inner();
    assert!(ready.ready);
    let mut names: Vec<_> = ready.checks.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cdna",
            "grids",
            "log",
            "spatial_index",
            "storage",
            "token_store"
        ]
    );
    assert!(ready.checks.values().all(|v| v == "ok"));
}

#[tokio::test]
async fn status_reports_real_figures() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    create(&mut tokens, full_token()).await;
    create(
        &mut tokens,
        pb::Token {
            flags: Some(pb::TokenFlags::default()),
            ..full_token()
        },
    )
    .await;
    let _second_connection = server.system().await;
    let mut system = server.system().await;
    let status = system
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.state(), pb::ServerState::Running);
    let counts = status.tokens.expect("tokens");
    assert_eq!((counts.total, counts.active), (2, 1));
    let connections = status.connections.expect("connections");
    assert!(connections.total >= 3, "{connections:?}");
    assert!(connections.active >= 3 && connections.active <= connections.total);
    assert!(
        status.memory_usage_mb > 1.0,
        "RSS of a running server: {}",
        status.memory_usage_mb
    );
    assert_eq!(status.cdna_profile, "default");
    assert_eq!(status.storage_backend, "memory");
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.log, "local: memory");
    assert_eq!(status.state_digest.len(), 64, "hex SHA-256");
    assert_eq!(status.applied_sequence, 2, "two creates");
    assert_eq!(
        status.components.get("token_store").map(String::as_str),
        Some("ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cpu_reflects_work_done_by_the_process() {
    let server = TestServer::start().await;
    let mut system = server.system().await;
    // The server runs in this process, so a busy thread here is CPU the sampler must see.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
    };
    let mut cpu = 0.0;
    // The sampler updates once a second: poll with a bounded number of tries.
    for _ in 0..100 {
        cpu = system
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .cpu_usage_percent;
        if cpu > 10.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().expect("busy thread");
    assert!(cpu > 10.0, "a spinning thread shows as CPU use, got {cpu}");
}

#[tokio::test]
async fn closed_connections_leave_the_active_count() {
    let server = TestServer::start().await;
    let mut system = server.system().await;
    let before = system
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let extra = server.system().await;
    drop(extra);
    // The server notices the close asynchronously: poll with a bounded number of tries.
    let mut settled = None;
    for _ in 0..1000 {
        let now = system
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        let c = now.connections.expect("connections");
        if c.total == before.connections.expect("c").total + 1 && c.active == 1 {
            settled = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        settled.is_some(),
        "active count drops back to 1 after a close"
    );
}

#[tokio::test]
async fn grpc_health_serves_implemented_services_only() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in [
        "",
        "neurograph.v1.TokenService",
        "neurograph.v1.GridService",
        "neurograph.v1.CDNAService",
        "neurograph.v1.System",
    ] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("known service")
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }
    for service in ["neurograph.v1.NoSuchService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect_err("not implemented yet");
        assert_eq!(status.code(), Code::NotFound, "{service}");
    }
}

#[tokio::test]
async fn health_watch_of_an_unknown_service_streams_service_unknown_and_stays_open() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    let check = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("Check of an unknown service");
    assert_eq!(check.code(), Code::NotFound);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect("Watch of an unknown service is answered")
        .into_inner();
    let first = watch.message().await.expect("first").expect("a status");
    assert_eq!(first.status(), ServingStatus::ServiceUnknown);
    // Still open: no further message and no end while nothing changes.
    let more = tokio::time::timeout(Duration::from_millis(200), watch.message()).await;
    assert!(more.is_err(), "the stream stays open: {more:?}");
    // It ends like every other stream at shutdown.
    let mut server = server;
    server.signal_shutdown();
    let ended = watch.message().await.expect_err("ends at shutdown");
    assert_eq!(ended.code(), Code::Unavailable);
}

#[test]
fn uptime_seconds_is_uint32_in_health_and_status() {
    use prost::Message as _;
    use prost_types::field_descriptor_proto::Type;
    let set = prost_types::FileDescriptorSet::decode(neurograph::api::FILE_DESCRIPTOR_SET)
        .expect("descriptors");
    for message in ["HealthResponse", "StatusResponse"] {
        let field = set
            .file
            .iter()
            .filter(|f| f.package() == "neurograph.v1")
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == message)
            .and_then(|m| m.field.iter().find(|f| f.name() == "uptime_seconds"))
            .unwrap_or_else(|| panic!("{message}.uptime_seconds"));
        assert_eq!(field.r#type(), Type::Uint32, "{message}.uptime_seconds");
    }
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_ends_streams_unavailable() {
    let mut server = TestServer::start_with(|c| c.shutdown_timeout = Duration::from_secs(3)).await;
    let mut tokens = server.tokens().await;
    for _ in 0..5 {
        batch(&mut tokens, vec![full_token(); 1000]).await;
    }
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "neurograph.v1.TokenService".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("first").expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let mut stream = tokens
        .stream_tokens(pb::StreamTokensRequest { filter: None })
        .await
        .expect("stream")
        .into_inner();
    assert!(stream.message().await.expect("first token").is_some());

    server.signal_shutdown();
    let next = watch.message().await.expect("update").expect("a status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    let ended = watch
        .message()
        .await
        .expect_err("the watch ends after NOT_SERVING");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");

    let mut received = 1;
    let ended = loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let status = ended.expect("the stream ends with an error, not a clean end");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(received < 5000, "the stream was cut short: {received}");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_stops_accepting_new_connections() {
    let server = TestServer::start().await;
    let addr = server.addr;
    server.stop().await.expect("clean stop");
    let connected = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await;
    assert!(connected.is_err(), "nobody listens after shutdown");
}

mod reflection {
    use super::*;
    use tokio_stream::StreamExt;

    const EXPECTED: [&str; 7] = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "neurograph.v1.CDNAService",
        "neurograph.v1.GridService",
        "neurograph.v1.System",
        "neurograph.v1.TokenService",
    ];

    #[tokio::test]
    async fn v1_lists_served_services_and_resolves_imports() {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;

        let server = TestServer::start().await;
        let mut client = ServerReflectionClient::new(server.channel().await);
        let requests = vec![
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol("neurograph.v1.TokenService".into()),
            MessageRequest::FileByFilename("google/protobuf/field_mask.proto".into()),
            MessageRequest::FileByFilename("google/protobuf/timestamp.proto".into()),
            MessageRequest::FileContainingSymbol("grpc.reflection.v1alpha.ServerReflection".into()),
            MessageRequest::FileContainingSymbol("google.rpc.BadRequest".into()),
            MessageRequest::FileContainingSymbol("neurograph.v1.CDNAService".into()),
            MessageRequest::FileContainingSymbol("neurograph.v1.GridService".into()),
            MessageRequest::FileContainingSymbol("neurograph.v1.NoSuchService".into()),
        ];
        let stream = tokio_stream::iter(requests.into_iter().map(|m| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        }));
        let mut replies = client
            .server_reflection_info(stream)
            .await
            .expect("reflection")
            .into_inner();
        let mut answers = Vec::new();
        let mut ended = None;
        while let Some(reply) = replies.next().await {
            match reply {
                Ok(reply) => answers.push(reply.message_response.expect("response")),
                Err(status) => {
                    ended = Some(status);
                    break;
                }
            }
        }
        assert_eq!(answers.len(), 8);
        let ended = ended.expect("an unknown service is absent");
        assert_eq!(ended.code(), Code::NotFound, "{ended:?}");
        match &answers[0] {
            MessageResponse::ListServicesResponse(list) => {
                let mut names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
                names.sort();
                assert_eq!(names, EXPECTED);
            }
            other => panic!("expected a service list, got {other:?}"),
        }
        for answer in &answers[1..] {
            match answer {
                MessageResponse::FileDescriptorResponse(files) => {
                    assert!(!files.file_descriptor_proto.is_empty())
                }
                other => panic!("expected descriptors, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn v1alpha_lists_served_services() {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;

        let server = TestServer::start().await;
        let mut client = ServerReflectionClient::new(server.channel().await);
        let stream = tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]);
        let mut replies = client
            .server_reflection_info(stream)
            .await
            .expect("reflection")
            .into_inner();
        let reply = replies.next().await.expect("one reply").expect("ok");
        match reply.message_response.expect("response") {
            MessageResponse::ListServicesResponse(list) => {
                let mut names: Vec<_> = list.service.iter().map(|s| s.name.clone()).collect();
                names.sort();
                assert_eq!(names, EXPECTED);
            }
            other => panic!("expected a service list, got {other:?}"),
        }
    }
}
