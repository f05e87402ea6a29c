//! Access control over the wire (API.md §7): every method of every served service tried with a
//! reader, a writer and an admin credential against the role table; missing, wrong and broken
//! credentials; JWTs; probes and reflection open; refused calls changing nothing; a bad keys
//! file stopping the start.

mod common;

use std::path::PathBuf;

use common::{token_at, Bearer, TestServer};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use neurograph::api::FILE_DESCRIPTOR_SET;
use neurograph::auth::methods::METHOD_ROLES;
use neurograph::auth::Role;
use neurograph::config::Secret;
use prost::Message as _;
use serde_json::json;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const READER_KEY: &str = "reader-key-0123456789";
const WRITER_KEY: &str = "writer-key-0123456789";
const ADMIN_KEY: &str = "admin-key-0123456789";
const JWT_SECRET: &str = "jwt-secret-for-tests";

/// A method of a served service as its descriptor describes it.
struct Method {
    path: String,
    client_streaming: bool,
    server_streaming: bool,
}

/// Every method of every `neurograph.v1` service in the descriptors the server is built from.
fn served_methods() -> Vec<Method> {
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut methods = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "neurograph.v1") {
        for service in &file.service {
            for method in &service.method {
                methods.push(Method {
                    path: format!("/neurograph.v1.{}/{}", service.name(), method.name()),
                    client_streaming: method.client_streaming(),
                    server_streaming: method.server_streaming(),
                });
            }
        }
    }
    assert!(methods.len() > 30, "the descriptors hold every service");
    methods
}

/// The role the table says `path` needs; fails the test for a method it does not name.
fn table_role(path: &str) -> Role {
    METHOD_ROLES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, role)| *role)
        .unwrap_or_else(|| panic!("{path} is missing from the role table (src/auth/methods.rs)"))
}

/// A keys file with one key per role, in a temp dir kept alive by the returned guard.
fn keys_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[keys]]
name = "dash"
role = "reader"
key = "{READER_KEY}"

[[keys]]
name = "ingest"
role = "writer"
key = "{WRITER_KEY}"

[[keys]]
name = "ops"
role = "admin"
key_sha256 = "{}"
"#,
            sha256_hex(ADMIN_KEY)
        ),
    )
    .expect("write the keys file");
    (dir, path)
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A server that accepts the three keys of `keys_file` and JWTs signed with `JWT_SECRET`.
async fn keyed_server() -> (TestServer, tempfile::TempDir) {
    let (dir, keys) = keys_file();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, format!("{JWT_SECRET}\n")).expect("write the JWT secret");
    let server = TestServer::start_with(|config| {
        config.access.api_keys_file = Some(keys);
        config.access.jwt_secret_file = Some(secret);
    })
    .await;
    (server, dir)
}

/// Calls `method` with an empty request message and `credential`; the status it ends with
/// (OK when the call was admitted and answered).
async fn call_empty(channel: &Channel, method: &Method, credential: Option<&str>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("channel ready");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = PathAndQuery::try_from(method.path.as_str()).expect("path");
    fn with_credential<T>(mut request: Request<T>, credential: Option<&str>) -> Request<T> {
        if let Some(credential) = credential {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {credential}").parse().expect("ascii"),
            );
        }
        request
    }
    let result = match (method.client_streaming, method.server_streaming) {
        (false, false) => grpc
            .unary(with_credential(Request::new(()), credential), path, codec)
            .await
            .map(|_| ()),
        (false, true) => grpc
            .server_streaming(with_credential(Request::new(()), credential), path, codec)
            .await
            .map(|_| ()),
        (true, false) => grpc
            .client_streaming(
                with_credential(Request::new(tokio_stream::iter(vec![()])), credential),
                path,
                codec,
            )
            .await
            .map(|_| ()),
        (true, true) => grpc
            .streaming(
                with_credential(Request::new(tokio_stream::iter(vec![()])), credential),
                path,
                codec,
            )
            .await
            .map(|_| ()),
    };
    result.err().unwrap_or_else(|| Status::ok(""))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn jwt(claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).expect("key"),
    )
    .expect("sign")
}

#[test]
fn every_served_method_is_in_the_role_table_and_nothing_else_is() {
    let methods = served_methods();
    for method in &methods {
        table_role(&method.path);
    }
    for (path, _) in METHOD_ROLES {
        assert!(
            methods.iter().any(|m| m.path == *path),
            "{path} is in the role table but no service has it"
        );
    }
}

/// API.md §7's role table, row by row as written there, kept apart from the server's table
/// (`METHOD_ROLES`) so that a change to either shows.
const API_MD_ROLES: &[(Role, &[&str])] = &[
    (
        Role::Reader,
        &[
            "TokenService/GetToken",
            "TokenService/ListTokens",
            "TokenService/CountTokens",
            "TokenService/StreamTokens",
            "TokenService/WatchTokens",
            "GridService/FindNeighbors",
            "GridService/RangeQuery",
            "GridService/CalculateDensity",
            "GridService/FieldInfluence",
            "GridService/GetGrid",
            "GridService/ListGrids",
            "CDNAService/GetConfig",
            "CDNAService/ListProfiles",
            "CDNAService/GetProfile",
            "CDNAService/ValidateScales",
            "CDNAService/GetQuarantineStatus",
            "CDNAService/GetHistory",
            "System/Health",
            "System/Ready",
            "System/Status",
        ],
    ),
    (
        Role::Writer,
        &[
            "TokenService/CreateToken",
            "TokenService/UpdateToken",
            "TokenService/DeleteToken",
            "TokenService/BatchCreateTokens",
            "TokenService/ImportTokens",
            "GridService/CreateGrid",
            "GridService/DeleteGrid",
            "GridService/AddToken",
            "GridService/RemoveToken",
        ],
    ),
    (
        Role::Admin,
        &[
            "TokenService/ClearTokens",
            "CDNAService/UpdateConfig",
            "CDNAService/SwitchProfile",
            "CDNAService/ResetConfig",
            "CDNAService/StartQuarantine",
            "CDNAService/StopQuarantine",
            "System/CreateBackup",
        ],
    ),
];

#[test]
fn the_role_table_is_api_md_s_table() {
    let mut expected: Vec<(String, Role)> = API_MD_ROLES
        .iter()
        .flat_map(|(role, methods)| {
            methods
                .iter()
                .map(move |method| (format!("/neurograph.v1.{method}"), *role))
        })
        .collect();
    let mut actual: Vec<(String, Role)> = METHOD_ROLES
        .iter()
        .map(|(path, role)| ((*path).to_owned(), *role))
        .collect();
    expected.sort();
    actual.sort();
    assert_eq!(actual, expected);
}

#[tokio::test]
async fn every_method_admits_exactly_the_roles_the_table_names() {
    let (server, _dir) = keyed_server().await;
    let channel = server.channel().await;
    let credentials = [
        (Role::Reader, READER_KEY.to_owned(), "dash"),
        (Role::Writer, WRITER_KEY.to_owned(), "ingest"),
        (Role::Admin, ADMIN_KEY.to_owned(), "ops"),
    ];
    for method in served_methods() {
        let needed = table_role(&method.path);
        for (role, key, name) in &credentials {
            let status = call_empty(&channel, &method, Some(key)).await;
            if *role >= needed {
                assert!(
                    !matches!(
                        status.code(),
                        Code::Unauthenticated | Code::PermissionDenied
                    ),
                    "{} as {role}: refused: {status:?}",
                    method.path
                );
            } else {
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{} as {role}: {status:?}",
                    method.path
                );
                let message = status.message();
                assert!(
                    message.contains(&format!("needs role {needed}"))
                        && message.contains(&format!("credential \"{name}\" has role {role}")),
                    "{} as {role}: {message}",
                    method.path
                );
            }
        }
        let anonymous = call_empty(&channel, &method, None).await;
        assert_eq!(anonymous.code(), Code::Unauthenticated, "{}", method.path);
        assert_eq!(anonymous.message(), "missing credentials");
    }
}

#[tokio::test]
async fn wrong_and_broken_credentials_are_unauthenticated_saying_which() {
    let (server, _dir) = keyed_server().await;
    let channel = server.channel().await;
    let get = served_methods()
        .into_iter()
        .find(|m| m.path == "/neurograph.v1.TokenService/CountTokens")
        .expect("CountTokens");
    let cases = [
        ("wrong-key".to_owned(), "unknown API key"),
        (
            jwt(
                json!({"exp": now() + 60, "role": "admin"}),
                "another-secret",
            ),
            "JWT signature does not verify",
        ),
        (
            jwt(json!({"exp": now() - 5, "role": "admin"}), JWT_SECRET),
            "JWT has expired",
        ),
        (
            jwt(
                json!({"exp": now() + 60, "nbf": now() + 30, "role": "admin"}),
                JWT_SECRET,
            ),
            "JWT is not valid yet",
        ),
        (
            jwt(json!({"exp": now() + 60, "sub": "x"}), JWT_SECRET),
            "JWT has no `role` claim",
        ),
        (
            jwt(json!({"role": "admin"}), JWT_SECRET),
            "JWT has no `exp` claim",
        ),
    ];
    for (credential, expected) in cases {
        let status = call_empty(&channel, &get, Some(&credential)).await;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{expected}: {status:?}"
        );
        assert!(
            status.message().contains(expected),
            "expected {expected:?} in {:?}",
            status.message()
        );
        assert!(
            !status.message().contains(&credential),
            "the message repeats the credential"
        );
    }
}

#[tokio::test]
async fn a_valid_jwt_and_an_x_api_key_are_credentials() {
    let (server, _dir) = keyed_server().await;
    let token = jwt(
        json!({"exp": now() + 60, "role": "writer", "sub": "svc-a"}),
        JWT_SECRET,
    );
    let mut writer =
        TokenServiceClient::with_interceptor(server.channel().await, Bearer::new(&token));
    let created = writer
        .create_token(pb::CreateTokenRequest {
            token: Some(token_at(0.5, 1.0, 2.0, 3.0)),
            ttl_seconds: 0,
        })
        .await
        .expect("a writer JWT creates");
    assert!(created.into_inner().id > 0);
    let denied = writer
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect_err("a writer JWT may not clear");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied
        .message()
        .contains("credential \"svc-a\" has role writer"));

    let mut by_header = TokenServiceClient::new(server.channel().await);
    let mut request = Request::new(pb::CountTokensRequest { filter: None });
    request
        .metadata_mut()
        .insert("x-api-key", READER_KEY.parse().expect("ascii"));
    let counted = by_header
        .count_tokens(request)
        .await
        .expect("x-api-key reads");
    assert_eq!(counted.into_inner().count, 1);
}

#[tokio::test]
async fn health_and_reflection_need_no_credential_while_keys_are_configured() {
    let (server, _dir) = keyed_server().await;
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "neurograph.v1.TokenService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health without a credential")
            .into_inner()
            .status;
        assert_eq!(status, 1, "SERVING for {service:?}");
    }
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection without a credential")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "neurograph.v1.TokenService"));
}

#[tokio::test]
async fn refused_calls_change_nothing() {
    let (server, _dir) = keyed_server().await;
    let mut writer =
        TokenServiceClient::with_interceptor(server.channel().await, Bearer::new(WRITER_KEY));
    for x in [1.0, 2.0] {
        writer
            .create_token(pb::CreateTokenRequest {
                token: Some(token_at(0.5, x, x, x)),
                ttl_seconds: 0,
            })
            .await
            .expect("a writer creates");
    }

    let mut reader =
        TokenServiceClient::with_interceptor(server.channel().await, Bearer::new(READER_KEY));
    let denied = reader
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect_err("a reader may not clear");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = reader
        .create_token(pb::CreateTokenRequest {
            token: Some(token_at(0.5, 3.0, 3.0, 3.0)),
            ttl_seconds: 0,
        })
        .await
        .expect_err("a reader may not create");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut anonymous = TokenServiceClient::new(server.channel().await);
    let refused = anonymous
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect_err("no credential, no clear");
    assert_eq!(refused.code(), Code::Unauthenticated);

    let counted = writer
        .count_tokens(pb::CountTokensRequest { filter: None })
        .await
        .expect("count")
        .into_inner()
        .count;
    assert_eq!(counted, 2, "nothing was cleared or added");
}

#[tokio::test]
async fn flag_keys_are_admin_and_reader() {
    let server = TestServer::start_with(|config| {
        config.access.api_key = Some(Secret::new("flag-admin"));
        config.access.read_only_api_key = Some(Secret::new("flag-reader"));
    })
    .await;
    let mut admin =
        TokenServiceClient::with_interceptor(server.channel().await, Bearer::new("flag-admin"));
    admin
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect("the --api-key is an admin");
    let mut reader =
        TokenServiceClient::with_interceptor(server.channel().await, Bearer::new("flag-reader"));
    reader
        .count_tokens(pb::CountTokensRequest { filter: None })
        .await
        .expect("the read-only key reads");
    let denied = reader
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect_err("the read-only key is a reader");
    assert!(denied
        .message()
        .contains("credential \"read-only\" has role reader"));
}

#[tokio::test]
async fn a_bad_keys_file_stops_the_start_naming_the_file_and_the_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "[[keys]]\nname = \"a\"\nrole = \"reader\"\nkey = \"k1\"\n[[keys]]\nname = \"b\"\nrole = \"superuser\"\nkey = \"k2\"\n",
            "entry 2 (name \"b\"): unknown role \"superuser\"",
        ),
        (
            "[[keys]]\nname = \"a\"\nrole = \"reader\"\nkey = \"k1\"\n[[keys]]\nname = \"a\"\nrole = \"admin\"\nkey = \"k2\"\n",
            "entry 2 (name \"a\"): duplicate name",
        ),
        ("[[keys]]\nname = \"a\"\nrole = \n", "line 3"),
    ];
    for (index, (text, expected)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("keys-{index}.toml"));
        std::fs::write(&path, text).expect("write");
        let server = TestServer::start_with(|config| {
            config.access.api_keys_file = Some(path.clone());
        })
        .await;
        let error = server
            .stop()
            .await
            .expect_err("the start must fail")
            .to_string();
        assert!(
            error.contains(&path.display().to_string()) && error.contains(expected),
            "expected the file and {expected:?} in {error:?}"
        );
    }
}
