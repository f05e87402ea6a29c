//! `neurograph healthcheck`: the client side of a probe (API.md §8). It asks a running
//! server's `grpc.health.v1.Health/Check` once, over TLS when the server's config has TLS on,
//! and turns the answer into an exit code: 0 for SERVING, 1 for anything else, a failed
//! connection or no answer within `--timeout` included.

use std::net::SocketAddr;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::config::{AccessConfig, HealthcheckArgs};

/// Asks the server `args` names (default `listen`) for the health of `args.service`; the
/// status it reported, or why there was none.
pub async fn check(
    args: &HealthcheckArgs,
    listen: SocketAddr,
    access: &AccessConfig,
) -> Result<ServingStatus, String> {
    let endpoint = endpoint(args, listen, access)?;
    let ask = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {}", source_chain(&e)))?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        Ok(answer.into_inner().status())
    };
    tokio::time::timeout(args.timeout, ask)
        .await
        .map_err(|_| format!("no answer within {:?}", args.timeout))?
}

/// Where and how to connect: plaintext, or TLS trusting `--tls-ca` (else the server's own
/// `--tls-cert` chain) with an optional client identity.
fn endpoint(
    args: &HealthcheckArgs,
    listen: SocketAddr,
    access: &AccessConfig,
) -> Result<Endpoint, String> {
    let addr = match &args.addr {
        Some(addr) => addr.clone(),
        None => probe_address(listen).to_string(),
    };
    let trust = args.tls_ca.as_ref().or(access.tls_cert.as_ref());
    let scheme = if trust.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(args.timeout)
        .timeout(args.timeout);
    if let Some(ca) = trust {
        let read = |path: &std::path::PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca)?))
            .domain_name(args.tls_server_name.clone());
        if let (Some(cert), Some(key)) = (&args.tls_client_cert, &args.tls_client_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS: {}", source_chain(&e)))?;
    }
    Ok(endpoint)
}

/// The address to probe for a server listening on `listen`: an unspecified IP (0.0.0.0,
/// [::]) is reached on loopback.
pub fn probe_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// An error with its sources, which is where tonic keeps the useful part.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_probed_on_loopback() {
        let probe = |listen: &str| probe_address(listen.parse().expect("addr")).to_string();
        assert_eq!(probe("0.0.0.0:50051"), "127.0.0.1:50051");
        assert_eq!(probe("[::]:7"), "[::1]:7");
        assert_eq!(probe("10.1.2.3:9"), "10.1.2.3:9");
    }
}
