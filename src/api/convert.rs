//! Proto ↔ model conversions. Field rules live in `model`; this module only copies values and
//! puts violation paths under the request root.

use prost_types::Timestamp;

use super::pb;
use crate::model::grid::GridConfig;
use crate::model::token::ExpiryInput;
use crate::model::{
    FlagName, Space, Token, TokenFilter, TokenFlags, TokenId, TokenInput, TokenPatch, UpdatePath,
    Violations,
};
use crate::store::{TokenEvent, TokenEventKind};

impl From<&pb::TokenFlags> for TokenFlags {
    fn from(flags: &pb::TokenFlags) -> Self {
        TokenFlags::from_bools([
            flags.active,
            flags.persistent,
            flags.mutable,
            flags.locked,
            flags.user_1,
            flags.user_2,
            flags.user_3,
            flags.user_4,
        ])
    }
}

impl From<TokenFlags> for pb::TokenFlags {
    fn from(flags: TokenFlags) -> Self {
        let [active, persistent, mutable, locked, user_1, user_2, user_3, user_4] =
            FlagName::ALL.map(|f| flags.get(f));
        pb::TokenFlags {
            active,
            persistent,
            mutable,
            locked,
            user_1,
            user_2,
            user_3,
            user_4,
        }
    }
}

/// The proto point field of `space` in `token`.
fn point_field(token: &pb::Token, space: Space) -> Option<&pb::Point3> {
    match space {
        Space::L1Physical => token.l1_physical.as_ref(),
        Space::L2Sensory => token.l2_sensory.as_ref(),
        Space::L3Motor => token.l3_motor.as_ref(),
        Space::L4Emotional => token.l4_emotional.as_ref(),
        Space::L5Cognitive => token.l5_cognitive.as_ref(),
        Space::L6Social => token.l6_social.as_ref(),
        Space::L7Temporal => token.l7_temporal.as_ref(),
        Space::L8Abstract => token.l8_abstract.as_ref(),
    }
}

/// The expiry a request's `ttl_seconds` gives its tokens that have none of their own
/// (`None` for 0), counted from `now`.
pub fn ttl_expiry(ttl_seconds: u32, now: u32) -> Result<Option<ExpiryInput>, Violations> {
    if ttl_seconds == 0 {
        return Ok(None);
    }
    ExpiryInput::after(now, ttl_seconds)
        .map(Some)
        .map_err(|rule| Violations::one("ttl_seconds", rule))
}

/// The token as sent, expiring at `ttl` unless it has its own `expires_at` (API.md §10).
pub fn token_input(token: &pb::Token, ttl: Option<ExpiryInput>) -> TokenInput {
    let mut input = TokenInput::from(token);
    if input.expires_at.is_none() {
        input.expires_at = ttl;
    }
    input
}

impl From<&pb::Token> for TokenInput {
    /// The token as sent; an `expires_at` is checked against the server's time now.
    fn from(token: &pb::Token) -> Self {
        let now = crate::store::write_path::unix_now();
        TokenInput {
            expires_at: token.expires_at.as_ref().map(|t| ExpiryInput {
                seconds: t.seconds,
                nanos: t.nanos,
                now,
            }),
            id: token.id,
            entity_type: token.entity_type,
            domain: token.domain,
            weight: token.weight,
            field_radius: token.field_radius,
            field_strength: token.field_strength,
            flags: token.flags.as_ref().map(TokenFlags::from),
            points: Space::ALL.map(|s| point_field(token, s).map(|p| [p.x, p.y, p.z])),
        }
    }
}

impl From<&Token> for pb::Token {
    fn from(token: &Token) -> Self {
        let data = &token.data;
        let point = |space: Space| {
            data.point(space).map(|q| {
                let [x, y, z] = q.to_f32(space);
                pb::Point3 { x, y, z }
            })
        };
        pb::Token {
            id: token.id.get(),
            local_id: token.id.local_id(),
            entity_type: token.id.entity_type(),
            domain: token.id.domain(),
            weight: data.weight(),
            field_radius: data.field_radius(),
            field_strength: data.field_strength(),
            flags: Some(data.flags().into()),
            timestamp: Some(Timestamp {
                seconds: i64::from(data.timestamp()),
                nanos: 0,
            }),
            l1_physical: point(Space::L1Physical),
            l2_sensory: point(Space::L2Sensory),
            l3_motor: point(Space::L3Motor),
            l4_emotional: point(Space::L4Emotional),
            l5_cognitive: point(Space::L5Cognitive),
            l6_social: point(Space::L6Social),
            l7_temporal: point(Space::L7Temporal),
            l8_abstract: point(Space::L8Abstract),
            expires_at: data.expires_at().map(|second| Timestamp {
                seconds: i64::from(second),
                nanos: 0,
            }),
        }
    }
}

impl From<TokenEventKind> for pb::TokenEventKind {
    fn from(kind: TokenEventKind) -> Self {
        match kind {
            TokenEventKind::Created => pb::TokenEventKind::Created,
            TokenEventKind::Updated => pb::TokenEventKind::Updated,
            TokenEventKind::Deleted => pb::TokenEventKind::Deleted,
            TokenEventKind::Cleared => pb::TokenEventKind::Cleared,
            TokenEventKind::Expired => pb::TokenEventKind::Expired,
            TokenEventKind::Entered => pb::TokenEventKind::Entered,
            TokenEventKind::Exited => pb::TokenEventKind::Exited,
        }
    }
}

impl From<&TokenEvent> for pb::TokenEvent {
    fn from(event: &TokenEvent) -> Self {
        pb::TokenEvent {
            kind: pb::TokenEventKind::from(event.kind).into(),
            id: event.id(),
            token: event.token.as_ref().map(pb::Token::from),
            sequence: event.sequence,
        }
    }
}

/// The filter of a request (absent = match all); violations under `filter.`.
pub fn token_filter(filter: Option<&pb::TokenFilter>) -> Result<TokenFilter, Violations> {
    let Some(filter) = filter else {
        return Ok(TokenFilter::default());
    };
    TokenFilter::new(filter.domain, filter.entity_type).map_err(|v| v.prefixed("filter."))
}

/// A required message field, or a violation naming it.
pub fn required<'a, T>(value: Option<&'a T>, field: &str) -> Result<&'a T, Violations> {
    value.ok_or_else(|| Violations::one(field, "is required"))
}

/// An id naming an existing token. 0 is a violation at `field`; a non-zero id with local_id 0
/// is `Ok(None)`: valid input that no token can have, so NOT_FOUND once the rest of the
/// request is valid.
pub fn existing_id(raw: u32, field: &str) -> Result<Option<TokenId>, Violations> {
    if raw == 0 {
        return Err(Violations::one(
            field,
            "0 names no token; send the id of an existing token",
        ));
    }
    Ok(TokenId::new(raw))
}

/// NOT_FOUND for the token with raw id `raw`, named by the request's `field`.
pub fn token_not_found(field: &str, raw: u32) -> tonic::Status {
    super::error::not_found(format!("{field}: token {raw} does not exist"))
}

/// The patch an UpdateToken request asks for (API.md §2): an absent or empty mask means the
/// fields set in `token` (AIP-134), `*` every mutable field; every bad mask path
/// (`update_mask.paths[i]`) and every bad value of a valid path (`token.…`) is reported.
pub fn token_patch(
    token: &pb::Token,
    mask: Option<&prost_types::FieldMask>,
) -> Result<TokenPatch, Violations> {
    check_mask_size(mask)?;
    let mut violations = Violations::default();
    let input = TokenInput::from(token);
    let paths = match mask.map(|m| m.paths.as_slice()).unwrap_or_default() {
        [] => UpdatePath::set_in(&input),
        [all] if all == "*" => UpdatePath::all(),
        paths if paths.iter().any(|p| p == "*") => {
            violations.push(
                "update_mask.paths",
                "`*` (replace every mutable field) must be the only path",
            );
            Vec::new()
        }
        paths => paths
            .iter()
            .enumerate()
            .filter_map(|(i, path)| {
                violations.take(
                    UpdatePath::parse(path)
                        .map_err(|rule| Violations::one(format!("update_mask.paths[{i}]"), rule)),
                )
            })
            .collect(),
    };
    let patch = violations.take(TokenPatch::new(&input, paths).map_err(|v| v.prefixed("token.")));
    match patch {
        Some(patch) if violations.is_empty() => Ok(patch),
        _ => Err(violations),
    }
}

/// Most paths an update mask may hold: far more than there are fields, and few enough that
/// a violation per bad path stays small (a 4 MiB mask of empty paths would otherwise make
/// two million violations).
pub const MAX_MASK_PATHS: usize = 64;

/// A single violation when `mask` holds more than `MAX_MASK_PATHS` paths, checked before
/// any path is.
pub fn check_mask_size(mask: Option<&prost_types::FieldMask>) -> Result<(), Violations> {
    let count = mask.map_or(0, |m| m.paths.len());
    if count > MAX_MASK_PATHS {
        return Err(Violations::one(
            "update_mask.paths",
            format!("{count} paths is more than the {MAX_MASK_PATHS} a mask may hold"),
        ));
    }
    Ok(())
}

/// The space a query names; SPACE_UNSPECIFIED and unknown values are violations at `field`.
pub fn space(raw: i32, field: &str) -> Result<Space, Violations> {
    let rule = "must be one of SPACE_L1_PHYSICAL (1) .. SPACE_L8_ABSTRACT (8)";
    match pb::Space::try_from(raw) {
        Ok(pb::Space::Unspecified) => Err(Violations::one(
            field,
            format!("{rule}, got SPACE_UNSPECIFIED"),
        )),
        Ok(_) => {
            let index = usize::try_from(raw - 1).expect("a known Space above 0");
            Ok(Space::from_index(index).expect("proto and model spaces agree"))
        }
        Err(_) => Err(Violations::one(field, format!("{rule}, got {raw}"))),
    }
}

/// A required query centre as sent (f32 widened, never quantised); every non-finite
/// coordinate is a violation at `field.x|y|z`.
pub fn centre(point: Option<&pb::Point3>, field: &str) -> Result<[f64; 3], Violations> {
    let point = required(point, field)?;
    let mut violations = Violations::default();
    for (axis, value) in [("x", point.x), ("y", point.y), ("z", point.z)] {
        if !value.is_finite() {
            violations.push(
                format!("{field}.{axis}"),
                format!("must be a finite number, got {value}"),
            );
        }
    }
    violations.into_result([point.x, point.y, point.z].map(f64::from))
}

/// The effective config of a CreateGrid request (absent fields take their defaults);
/// violations under `config.`.
pub fn grid_config(config: Option<&pb::GridConfig>) -> Result<GridConfig, Violations> {
    match config {
        None => Ok(GridConfig::default()),
        Some(c) => GridConfig::from_options(c.density_threshold, c.min_field_nodes)
            .map_err(|v| v.prefixed("config.")),
    }
}

impl From<GridConfig> for pb::GridConfig {
    fn from(config: GridConfig) -> Self {
        pb::GridConfig {
            density_threshold: Some(config.density_threshold),
            min_field_nodes: Some(config.min_field_nodes),
        }
    }
}
