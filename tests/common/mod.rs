//! Starts the real server on 127.0.0.1:0 (in process, or the built binary in `binary`) and
//! hands out generated tonic clients.
#![allow(dead_code)]

pub mod binary;
pub mod certs;
pub mod metadata;
pub mod nats;
pub mod raw_h2;
pub mod tools;

use std::net::SocketAddr;
use std::time::Duration;

use neurograph::api::pb;
use neurograph::api::pb::cdna_service_client::CdnaServiceClient;
use neurograph::api::pb::grid_service_client::GridServiceClient;
use neurograph::api::pb::system_client::SystemClient;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use neurograph::config::Config;
use neurograph::server::{self, ServeError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// A server running in this test process.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Starts a server with the default config.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` changed its config.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_bound("127.0.0.1:0", adjust).await
    }

    /// Starts a server listening on `bind` (e.g. `10.1.2.1:0`) after `adjust` changed its
    /// config.
    pub async fn start_bound(bind: &str, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("local addr");
        let mut config = Config::for_listen(addr);
        adjust(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::serve(config, listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// A new connection to the server (the listener is bound, so this connects at once).
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to the test server")
    }

    /// A TokenService client on a new connection.
    pub async fn tokens(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel().await)
    }

    /// A GridService client on a new connection.
    pub async fn grids(&self) -> GridServiceClient<Channel> {
        GridServiceClient::new(self.channel().await)
    }

    /// A CDNAService client on a new connection.
    pub async fn cdna(&self) -> CdnaServiceClient<Channel> {
        CdnaServiceClient::new(self.channel().await)
    }

    /// A System client on a new connection.
    pub async fn system(&self) -> SystemClient<Channel> {
        SystemClient::new(self.channel().await)
    }

    /// Sends the shutdown signal without waiting for the server to stop.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.signal_shutdown();
        let handle = self.handle.take().expect("not stopped yet");
        handle.await.expect("server task did not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

/// Adds `authorization: Bearer <credential>` to every call of a client.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    /// Sends `credential` (an API key or a JWT).
    pub fn new(credential: &str) -> Bearer {
        Bearer(
            format!("Bearer {credential}")
                .parse()
                .expect("an ASCII credential"),
        )
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A TLS connection to `addr` trusting `ca_pem`, presenting `identity` (certificate and key
/// PEM) when given. Fails when the handshake does.
pub async fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("valid uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A health Check (service "") over a TLS connection made as `tls_channel` makes it: the
/// serving status, or the failure of the handshake or the call as UNAVAILABLE. Under TLS 1.3 a
/// client may finish its side of the handshake before the server's refusal arrives, so a
/// refused handshake can surface on the call instead of the connect.
pub async fn tls_health(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<i32, tonic::Status> {
    let channel = tls_channel(addr, ca_pem, identity)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
}

/// The BadRequest field paths of `status`.
pub fn violation_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// A token with a weight and the given point in L1 Physical.
pub fn token_at(weight: f32, x: f32, y: f32, z: f32) -> pb::Token {
    pb::Token {
        weight,
        l1_physical: Some(pb::Point3 { x, y, z }),
        ..pb::Token::default()
    }
}

/// A valid token with every space defined.
pub fn full_token() -> pb::Token {
    let p = |v: f32| {
        Some(pb::Point3 {
            x: v,
            y: -v,
            z: v / 2.0,
        })
    };
    pb::Token {
        weight: 0.5,
        field_radius: 1.0,
        field_strength: 0.5,
        flags: Some(pb::TokenFlags {
            active: true,
            persistent: true,
            ..Default::default()
        }),
        l1_physical: p(100.0),
        l2_sensory: p(1.5),
        l3_motor: p(20.0),
        l4_emotional: p(0.5),
        l5_cognitive: p(-1.0),
        l6_social: p(2.0),
        l7_temporal: p(-300.0),
        l8_abstract: p(3.0),
        ..pb::Token::default()
    }
}

/// Creates `token` and returns what the server stored.
pub async fn create(client: &mut TokenServiceClient<Channel>, token: pb::Token) -> pb::Token {
    client
        .create_token(pb::CreateTokenRequest {
            token: Some(token),
            ttl_seconds: 0,
        })
        .await
        .expect("create succeeds")
        .into_inner()
}

/// Number of tokens the server holds.
pub async fn count(client: &mut TokenServiceClient<Channel>) -> u64 {
    client
        .count_tokens(pb::CountTokensRequest { filter: None })
        .await
        .expect("count succeeds")
        .into_inner()
        .count
}

/// Creates `tokens` in one batch and returns what the server stored.
pub async fn batch(
    client: &mut TokenServiceClient<Channel>,
    tokens: Vec<pb::Token>,
) -> Vec<pb::Token> {
    client
        .batch_create_tokens(pb::BatchCreateTokensRequest {
            tokens,
            ttl_seconds: 0,
        })
        .await
        .expect("batch create succeeds")
        .into_inner()
        .tokens
}

/// Sends `tokens` as one batch that must be rejected; returns the status.
pub async fn batch_rejected(
    client: &mut TokenServiceClient<Channel>,
    tokens: Vec<pb::Token>,
) -> tonic::Status {
    client
        .batch_create_tokens(pb::BatchCreateTokensRequest {
            tokens,
            ttl_seconds: 0,
        })
        .await
        .expect_err("the batch must be rejected")
}

/// Every token the server holds, read page by page in id order.
pub async fn list_all(client: &mut TokenServiceClient<Channel>) -> Vec<pb::Token> {
    let mut tokens = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tokens(pb::ListTokensRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                filter: None,
            })
            .await
            .expect("list")
            .into_inner();
        tokens.extend(page.tokens);
        if page.next_page_token.is_empty() {
            return tokens;
        }
        page_token = page.next_page_token;
    }
}
