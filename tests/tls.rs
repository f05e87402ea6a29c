//! TLS and mTLS on the gRPC port (API.md §7), with certificates made at run time: a handshake
//! and calls over TLS, health open over TLS, plaintext refused, client certificates required
//! and credentialed by their common name with `--tls-client-role`.

mod common;

use common::certs::TlsFiles;
use common::{tls_channel, tls_health, token_at, Bearer, TestServer};
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use neurograph::auth::Role;
use neurograph::config::Secret;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const ADMIN_KEY: &str = "tls-admin-key";

/// A server on TLS with an admin key; with `mtls`, client certificates signed by the same CA
/// are required and credentialed as `client_role`.
async fn tls_server(files: &TlsFiles, mtls: bool, client_role: Role) -> TestServer {
    TestServer::start_with(|config| {
        config.access.tls_cert = Some(files.cert_path.clone());
        config.access.tls_key = Some(files.key_path.clone());
        config.access.api_key = Some(Secret::new(ADMIN_KEY));
        if mtls {
            config.access.tls_client_ca = Some(files.ca_path.clone());
            config.access.tls_client_role = client_role;
        }
    })
    .await
}

/// Health of the whole server, `Err` when the call fails.
async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn calls_go_over_tls_and_health_needs_no_credential() {
    let files = TlsFiles::new();
    let server = tls_server(&files, false, Role::Writer).await;
    let channel = tls_channel(server.addr, &files.ca.pem, None)
        .await
        .expect("TLS handshake");
    assert_eq!(health(channel.clone()).await.expect("health over TLS"), 1);

    let mut tokens = TokenServiceClient::with_interceptor(channel.clone(), Bearer::new(ADMIN_KEY));
    let created = tokens
        .create_token(pb::CreateTokenRequest {
            token: Some(token_at(0.5, 1.0, 2.0, 3.0)),
            ttl_seconds: 0,
        })
        .await
        .expect("create over TLS")
        .into_inner();
    let got = tokens
        .get_token(pb::GetTokenRequest { id: created.id })
        .await
        .expect("get over TLS")
        .into_inner();
    assert_eq!(got, created);

    let refused = TokenServiceClient::new(channel)
        .count_tokens(pb::CountTokensRequest { filter: None })
        .await
        .expect_err("TLS is no credential by itself");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_plaintext_client_gets_nothing_from_the_tls_port() {
    let files = TlsFiles::new();
    let server = tls_server(&files, false, Role::Writer).await;
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(5));
    let answer = match plain.connect().await {
        Ok(channel) => health(channel).await,
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(
        answer.is_err(),
        "plaintext must not be answered: {answer:?}"
    );
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate() {
    let files = TlsFiles::new();
    let server = tls_server(&files, true, Role::Writer).await;
    let answer = tls_health(server.addr, &files.ca.pem, None).await;
    assert!(
        answer.is_err(),
        "no client certificate, no answer: {answer:?}"
    );

    let stranger = common::certs::TestCa::new("Another CA").client("intruder");
    let answer = tls_health(
        server.addr,
        &files.ca.pem,
        Some((&stranger.cert_pem, &stranger.key_pem)),
    )
    .await;
    assert!(
        answer.is_err(),
        "a client certificate of another CA must not verify: {answer:?}"
    );
}

#[tokio::test]
async fn a_verified_client_certificate_is_a_credential_named_by_its_common_name() {
    let files = TlsFiles::new();
    let server = tls_server(&files, true, Role::Writer).await;
    let client = files.ca.client("ingest-7");
    let channel = certificate_channel(&server, &files, &client).await;
    assert_eq!(health(channel.clone()).await.expect("health over mTLS"), 1);

    let mut as_certificate = TokenServiceClient::new(channel.clone());
    as_certificate
        .create_token(pb::CreateTokenRequest {
            token: Some(token_at(0.5, 1.0, 1.0, 1.0)),
            ttl_seconds: 0,
        })
        .await
        .expect("the certificate is a writer");
    let denied = as_certificate
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect_err("a writer may not clear");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied
            .message()
            .contains("credential \"ingest-7\" has role writer"),
        "{}",
        denied.message()
    );

    let mut with_key = TokenServiceClient::with_interceptor(channel, Bearer::new(ADMIN_KEY));
    with_key
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect("a key sent with the certificate decides the role");
    let mut with_wrong_key =
        TokenServiceClient::new(certificate_channel(&server, &files, &client).await);
    let mut request = tonic::Request::new(pb::CountTokensRequest { filter: None });
    request
        .metadata_mut()
        .insert("x-api-key", "wrong".parse().expect("ascii"));
    let refused = with_wrong_key
        .count_tokens(request)
        .await
        .expect_err("a wrong key is not made good by the certificate");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn tls_client_role_sets_the_role_of_certificates() {
    let files = TlsFiles::new();
    let server = tls_server(&files, true, Role::Reader).await;
    let client = files.ca.client("dashboard");
    let mut tokens = TokenServiceClient::new(certificate_channel(&server, &files, &client).await);
    tokens
        .count_tokens(pb::CountTokensRequest { filter: None })
        .await
        .expect("a reader reads");
    let denied = tokens
        .create_token(pb::CreateTokenRequest {
            token: Some(token_at(0.5, 1.0, 1.0, 1.0)),
            ttl_seconds: 0,
        })
        .await
        .expect_err("a reader may not write");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("needs role writer"));
}

/// A connection presenting `client`'s certificate.
async fn certificate_channel(
    server: &TestServer,
    files: &TlsFiles,
    client: &common::certs::Issued,
) -> Channel {
    tls_channel(
        server.addr,
        &files.ca.pem,
        Some((&client.cert_pem, &client.key_pem)),
    )
    .await
    .expect("mTLS handshake")
}
