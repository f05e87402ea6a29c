//! The per-call access check in process (no gRPC): `Credentials::authorize` on the headers
//! and peer of one `TokenService/GetToken` call, as the access layer runs it before every
//! call. Target: ≤ 2 µs per check.
//!
//! Cases: an API key in `authorization: Bearer` against a keys file of 3 and of 100 keys, the
//! same key in `x-api-key`, an HS256 JWT (secret file only, and with a 3-key file as well: a
//! bearer credential is looked up as a key first), protected mode from loopback (no
//! credential configured), `--allow-unauthenticated`, `methods::requirement` alone, and the
//! layer's whole decision (requirement, live-credentials load, authorize). The `parts` group
//! splits the cost: the SHA-256 digest every bearer lookup computes (of a key, and of a JWT,
//! which is looked up as a key first), `KeySet::find` alone at 3 and 100 keys, one
//! constant-time digest comparison (subtle's, and as four 64-bit words), and
//! `JwtVerifier::verify` alone (a full verification) and `verify_remembered` (a token seen
//! before: only its times are checked). Keys are 43 characters (`ng_` and 40 hex digits, one SHA-256
//! block); files live in a temp dir.
//!
//! `cargo bench --bench auth`

mod support;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use neurograph::auth::jwt::JwtVerifier;
use neurograph::auth::keys::{self, KeyDigest, KeySet};
use neurograph::auth::methods::{requirement, Requirement};
use neurograph::auth::{Credentials, PeerInfo, Role};
use neurograph::config::{AccessConfig, Config};
use subtle::ConstantTimeEq;
use support::XorShift;

/// The method every case checks, and the role it needs.
const GET_TOKEN: &str = "/neurograph.v1.TokenService/GetToken";
/// The HS256 secret of the JWT cases.
const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdef";

/// The access settings of a server started with no access flag.
fn default_access() -> AccessConfig {
    Config::for_listen("127.0.0.1:0".parse().expect("socket addr")).access
}

/// `count` distinct 43-character keys (`ng_` + 40 hex digits).
fn generated_keys(count: usize) -> Vec<String> {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    (0..count)
        .map(|_| {
            format!(
                "ng_{:016x}{:016x}{:08x}",
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64() as u32
            )
        })
        .collect()
}

/// A keys file in `dir` accepting every key of `keys` as a reader; its path.
fn keys_file(dir: &Path, keys: &[String]) -> std::path::PathBuf {
    let mut text = String::new();
    for (index, key) in keys.iter().enumerate() {
        text +=
            &format!("[[keys]]\nname = \"client-{index}\"\nrole = \"reader\"\nkey = \"{key}\"\n\n");
    }
    let path = dir.join(format!("keys-{}.toml", keys.len()));
    std::fs::write(&path, text).expect("write the keys file");
    path
}

/// Credentials loaded from `access`.
fn load(access: &AccessConfig) -> Credentials {
    Credentials::load(access).expect("the bench's credentials load")
}

/// Headers holding one `name: value`.
fn headers(name: &'static str, value: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(
        name,
        HeaderValue::from_str(value).expect("ASCII header value"),
    );
    map
}

/// An HS256 JWT for role reader, subject `bench`, expiring in an hour.
fn jwt() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = serde_json::json!({"exp": now + 3600, "role": "reader", "sub": "bench"});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("HMAC key"),
    )
    .expect("sign the JWT")
}

/// Constant-time equality of two digests compared as four 64-bit words (one barrier in all),
/// for comparison with subtle's byte-wise slice comparison.
fn words_ct_eq(a: &KeyDigest, b: &KeyDigest) -> subtle::Choice {
    let word = |d: &KeyDigest, i: usize| {
        u64::from_ne_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    };
    let diff = (0..4).fold(0u64, |acc, i| acc | (word(a, i) ^ word(b, i)));
    diff.ct_eq(&0)
}

/// Asserts that `credentials` admit a GetToken call with `metadata` from `peer`, so that no
/// case measures a refusal.
fn check(credentials: &Credentials, metadata: &HeaderMap, peer: &PeerInfo) {
    let caller = credentials
        .authorize(metadata, Some(peer), GET_TOKEN, Role::Reader)
        .expect("the bench's call is admitted");
    assert!(caller.role >= Role::Reader);
}

fn auth_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir for the keys and secret files");
    let peer = PeerInfo {
        remote: Some("127.0.0.1:50000".parse().expect("socket addr")),
        client_certificate: None,
    };
    let none = HeaderMap::new();
    let needed = match requirement(GET_TOKEN) {
        Requirement::Role(role) => role,
        Requirement::Open => panic!("GetToken needs a role"),
    };
    assert_eq!(needed, Role::Reader);

    let keys_100 = generated_keys(100);
    let keys_3 = keys_100[..3].to_vec();
    let access_3_keys = {
        let mut access = default_access();
        access.api_keys_file = Some(keys_file(dir.path(), &keys_3));
        access
    };
    let with_3_keys = load(&access_3_keys);
    let with_100_keys = {
        let mut access = default_access();
        access.api_keys_file = Some(keys_file(dir.path(), &keys_100));
        load(&access)
    };
    assert_eq!(
        (with_3_keys.key_count(), with_100_keys.key_count()),
        (3, 100)
    );
    // The last key of each file (constant time: which entry matches does not matter).
    let bearer_3 = headers("authorization", &format!("Bearer {}", keys_3[2]));
    let bearer_100 = headers("authorization", &format!("Bearer {}", keys_100[99]));
    let x_api_key_3 = headers("x-api-key", &keys_3[2]);

    let secret_path = dir.path().join("jwt-secret");
    std::fs::write(&secret_path, format!("{JWT_SECRET}\n")).expect("write the JWT secret");
    let jwt_only = {
        let mut access = default_access();
        access.jwt_secret_file = Some(secret_path.clone());
        load(&access)
    };
    let jwt_and_3_keys = {
        let mut access = default_access();
        access.jwt_secret_file = Some(secret_path);
        access.api_keys_file = Some(keys_file(dir.path(), &keys_3));
        load(&access)
    };
    let token = jwt();
    let bearer_jwt = headers("authorization", &format!("Bearer {token}"));

    let protected = load(&default_access());
    let open = {
        let mut access = default_access();
        access.allow_unauthenticated = true;
        load(&access)
    };

    for (credentials, metadata) in [
        (&with_3_keys, &bearer_3),
        (&with_100_keys, &bearer_100),
        (&with_3_keys, &x_api_key_3),
        (&jwt_only, &bearer_jwt),
        (&jwt_and_3_keys, &bearer_jwt),
        (&protected, &none),
        (&open, &none),
    ] {
        check(credentials, metadata, &peer);
    }

    let mut group = c.benchmark_group("auth");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    group.bench_function("requirement", |b| {
        b.iter(|| requirement(black_box(GET_TOKEN)))
    });
    let cases = [
        ("bearer_key_3_keys", &with_3_keys, &bearer_3),
        ("bearer_key_100_keys", &with_100_keys, &bearer_100),
        ("x_api_key_3_keys", &with_3_keys, &x_api_key_3),
        ("jwt_hs256", &jwt_only, &bearer_jwt),
        ("jwt_hs256_and_3_keys", &jwt_and_3_keys, &bearer_jwt),
        ("protected_loopback", &protected, &none),
        ("allow_unauthenticated", &open, &none),
    ];
    for (name, credentials, metadata) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                credentials.authorize(
                    black_box(metadata),
                    Some(black_box(&peer)),
                    GET_TOKEN,
                    Role::Reader,
                )
            })
        });
    }

    // What the access layer does per call: the method's requirement, the live credentials
    // (an `ArcSwap` the SIGHUP reload replaces) and the decision.
    let live = Arc::new(ArcSwap::from_pointee(load(&access_3_keys)));
    group.bench_function("layer_decision_bearer_key_3_keys", |b| {
        b.iter(|| {
            let path = black_box(GET_TOKEN);
            let Requirement::Role(needed) = requirement(path) else {
                unreachable!("GetToken needs a role")
            };
            live.load()
                .authorize(black_box(&bearer_3), Some(black_box(&peer)), path, needed)
        })
    });
    group.finish();

    let mut parts = c.benchmark_group("parts");
    parts
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    parts.bench_function("sha256_key_43B", |b| {
        b.iter(|| keys::digest(black_box(keys_3[2].as_bytes())))
    });
    parts.bench_function(format!("sha256_jwt_{}B", token.len()), |b| {
        b.iter(|| keys::digest(black_box(token.as_bytes())))
    });
    for keys in [&keys_3, &keys_100] {
        let mut set = KeySet::default();
        for (index, key) in keys.iter().enumerate() {
            set.add(
                &format!("client-{index}"),
                Role::Reader,
                keys::digest(key.as_bytes()),
            )
            .expect("distinct keys");
        }
        let last = keys.last().expect("keys").as_bytes();
        parts.bench_function(format!("keyset_find_{}_keys", keys.len()), |b| {
            b.iter(|| set.find(black_box(last)).map(|(_, role)| role))
        });
    }
    // What a per-entry digest comparison costs: subtle's byte-slice `ct_eq` (one optimisation
    // barrier per byte; what `KeySet::find` first used) and four 64-bit words (what it uses).
    let (left, right) = (keys::digest(b"left"), keys::digest(b"right"));
    parts.bench_function("subtle_ct_eq_32B", |b| {
        b.iter(|| bool::from(black_box(&left).ct_eq(black_box(&right))))
    });
    parts.bench_function("ct_eq_32B_as_4_u64", |b| {
        b.iter(|| bool::from(words_ct_eq(black_box(&left), black_box(&right))))
    });
    let verifier = JwtVerifier::new(JWT_SECRET.as_bytes()).expect("JWT verifier");
    parts.bench_function("jwt_verify_full", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&token))
                .map(|verified| verified.caller.role)
        })
    });
    let digest = keys::digest(token.as_bytes());
    parts.bench_function("jwt_verify_remembered", |b| {
        b.iter(|| {
            verifier
                .verify_remembered(black_box(&token), &digest)
                .map(|caller| caller.role)
        })
    });
    parts.finish();
}

criterion_group!(benches, auth_benches);
criterion_main!(benches);
