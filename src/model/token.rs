//! The token: ids, the eight spaces, quantisation, flags, the compact stored record, and the
//! validation of create and update input. Everything here is a pure value.

use std::fmt;
use std::num::NonZeroU32;

use super::violation::Violations;

/// Number of coordinate spaces of a token.
pub const SPACE_COUNT: usize = 8;
/// Largest quantised coordinate magnitude the contract accepts.
pub const MAX_QUANTISED: i64 = 32767;
/// Marks an undefined space in the X of a stored point: a value the contract never stores.
const UNDEFINED_MARK: i16 = i16::MIN;
/// Largest local id (24 bits).
pub const MAX_LOCAL_ID: u32 = (1 << 24) - 1;
/// Largest entity type or domain (4 bits).
pub const MAX_NIBBLE: u32 = 15;

/// One of the eight named coordinate spaces.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Space {
    /// L1 Physical (scale 100).
    L1Physical,
    /// L2 Sensory (scale 10000).
    L2Sensory,
    /// L3 Motor (scale 1000).
    L3Motor,
    /// L4 Emotional (scale 10000).
    L4Emotional,
    /// L5 Cognitive (scale 10000).
    L5Cognitive,
    /// L6 Social (scale 10000).
    L6Social,
    /// L7 Temporal (scale 100).
    L7Temporal,
    /// L8 Abstract (scale 10000).
    L8Abstract,
}

impl Space {
    /// Every space, in L1..L8 order.
    pub const ALL: [Space; SPACE_COUNT] = [
        Space::L1Physical,
        Space::L2Sensory,
        Space::L3Motor,
        Space::L4Emotional,
        Space::L5Cognitive,
        Space::L6Social,
        Space::L7Temporal,
        Space::L8Abstract,
    ];

    /// Position of the space, 0 for L1 … 7 for L8.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The space at position `index` (0..8).
    pub fn from_index(index: usize) -> Option<Space> {
        Self::ALL.get(index).copied()
    }

    /// Fixed-point scale: stored value = round(value × scale).
    pub fn scale(self) -> f64 {
        match self {
            Space::L1Physical | Space::L7Temporal => 100.0,
            Space::L3Motor => 1000.0,
            _ => 10000.0,
        }
    }

    /// The proto field name of the space in a token, e.g. `l2_sensory`.
    pub fn field_name(self) -> &'static str {
        match self {
            Space::L1Physical => "l1_physical",
            Space::L2Sensory => "l2_sensory",
            Space::L3Motor => "l3_motor",
            Space::L4Emotional => "l4_emotional",
            Space::L5Cognitive => "l5_cognitive",
            Space::L6Social => "l6_social",
            Space::L7Temporal => "l7_temporal",
            Space::L8Abstract => "l8_abstract",
        }
    }

    /// The space whose token field is `name`.
    pub fn from_field_name(name: &str) -> Option<Space> {
        Self::ALL.into_iter().find(|s| s.field_name() == name)
    }

    /// Largest representable magnitude in the space's own units.
    pub fn max_value(self) -> f64 {
        MAX_QUANTISED as f64 / self.scale()
    }
}

/// A token id: `domain << 28 | entity_type << 24 | local_id`, never 0.
///
/// ```
/// use neurograph::model::TokenId;
///
/// let id = TokenId::from_parts(2, 5, 1).expect("parts in range");
/// assert_eq!(id.get(), 620_756_993); // 0x2500_0001
/// assert_eq!((id.domain(), id.entity_type(), id.local_id()), (2, 5, 1));
/// assert!(TokenId::new(0x2500_0000).is_none(), "local_id 0 names no token");
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
// Decoded through `new`, so that a log entry cannot smuggle in an id with local_id 0.
#[serde(try_from = "u32", into = "u32")]
pub struct TokenId(NonZeroU32);

impl TryFrom<u32> for TokenId {
    type Error = String;

    fn try_from(raw: u32) -> Result<Self, Self::Error> {
        TokenId::new(raw).ok_or_else(|| format!("{raw} is not a token id (local_id 0)"))
    }
}

impl From<TokenId> for u32 {
    fn from(id: TokenId) -> u32 {
        id.get()
    }
}

impl TokenId {
    /// The id with these parts; `None` when local_id is 0 or a part is out of range.
    pub fn from_parts(domain: u32, entity_type: u32, local_id: u32) -> Option<TokenId> {
        if domain > MAX_NIBBLE || entity_type > MAX_NIBBLE || local_id > MAX_LOCAL_ID {
            return None;
        }
        let raw = domain << 28 | entity_type << 24 | local_id;
        if local_id == 0 {
            return None;
        }
        NonZeroU32::new(raw).map(TokenId)
    }

    /// The id whose raw value is `raw`; `None` for 0 or a local_id of 0.
    pub fn new(raw: u32) -> Option<TokenId> {
        if raw & MAX_LOCAL_ID == 0 {
            return None;
        }
        NonZeroU32::new(raw).map(TokenId)
    }

    /// The raw u32.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// Bits 28..32.
    pub fn domain(self) -> u32 {
        self.get() >> 28
    }

    /// Bits 24..28.
    pub fn entity_type(self) -> u32 {
        (self.get() >> 24) & 0xF
    }

    /// Bits 0..24.
    pub fn local_id(self) -> u32 {
        self.get() & MAX_LOCAL_ID
    }

    /// The (domain, entity_type) allocation pair the id belongs to.
    pub fn pair(self) -> IdPair {
        IdPair((self.get() >> 24) as u8)
    }
}

/// A (domain, entity_type) pair: local ids are allocated per pair, so that ids of one kind of
/// entity stay dense.
///
/// ```
/// use neurograph::model::{IdPair, TokenId};
///
/// let pair = IdPair::new(2, 5).expect("nibbles");
/// assert_eq!((pair.domain(), pair.entity_type()), (2, 5));
/// assert_eq!(pair.token(7), TokenId::from_parts(2, 5, 7));
/// assert!(IdPair::new(16, 0).is_none());
/// ```
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct IdPair(u8);

impl IdPair {
    /// Number of pairs.
    pub const COUNT: usize = 256;

    /// The pair of `domain` and `entity_type`; `None` when either is not a nibble.
    pub fn new(domain: u32, entity_type: u32) -> Option<IdPair> {
        (domain <= MAX_NIBBLE && entity_type <= MAX_NIBBLE)
            .then_some(IdPair((domain << 4 | entity_type) as u8))
    }

    /// The pair with index `index` (as `index` returns it).
    pub fn from_index(index: u8) -> IdPair {
        IdPair(index)
    }

    /// Its index, 0..256: `domain << 4 | entity_type`, the id's top byte.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The domain.
    pub fn domain(self) -> u32 {
        u32::from(self.0 >> 4)
    }

    /// The entity type.
    pub fn entity_type(self) -> u32 {
        u32::from(self.0 & 0xF)
    }

    /// The id of local id `local_id` in this pair; `None` for 0 or above `MAX_LOCAL_ID`.
    pub fn token(self, local_id: u32) -> Option<TokenId> {
        TokenId::from_parts(self.domain(), self.entity_type(), local_id)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// A flag of a token, by its proto field name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FlagName {
    /// `active`
    Active,
    /// `persistent`
    Persistent,
    /// `mutable`
    Mutable,
    /// `locked`
    Locked,
    /// `user_1`
    User1,
    /// `user_2`
    User2,
    /// `user_3`
    User3,
    /// `user_4`
    User4,
}

impl FlagName {
    /// Every flag in bit order.
    pub const ALL: [FlagName; 8] = [
        FlagName::Active,
        FlagName::Persistent,
        FlagName::Mutable,
        FlagName::Locked,
        FlagName::User1,
        FlagName::User2,
        FlagName::User3,
        FlagName::User4,
    ];

    /// The proto field name.
    pub fn field_name(self) -> &'static str {
        match self {
            FlagName::Active => "active",
            FlagName::Persistent => "persistent",
            FlagName::Mutable => "mutable",
            FlagName::Locked => "locked",
            FlagName::User1 => "user_1",
            FlagName::User2 => "user_2",
            FlagName::User3 => "user_3",
            FlagName::User4 => "user_4",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The eight informational flags, one bit each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TokenFlags(u8);

impl TokenFlags {
    /// `{active: true}`: the value of an absent `flags`.
    pub const DEFAULT: TokenFlags = TokenFlags(1);

    /// Whether `flag` is set.
    pub fn get(self, flag: FlagName) -> bool {
        self.0 & flag.bit() != 0
    }

    /// Sets or clears `flag`.
    pub fn set(&mut self, flag: FlagName, on: bool) {
        if on {
            self.0 |= flag.bit();
        } else {
            self.0 &= !flag.bit();
        }
    }

    /// The flags with each named flag set as `values` says, in `FlagName::ALL` order.
    pub fn from_bools(values: [bool; 8]) -> TokenFlags {
        let mut flags = TokenFlags(0);
        for (flag, on) in FlagName::ALL.into_iter().zip(values) {
            flags.set(flag, on);
        }
        flags
    }
}

/// A quantised point: each axis is round(value × scale) in [−32767, 32767].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QPoint(pub [i16; 3]);

impl QPoint {
    /// The point in the space's own units as the server returns it (`q as f32 / scale as f32`).
    pub fn to_f32(self, space: Space) -> [f32; 3] {
        let scale = space.scale() as f32;
        self.0.map(|q| q as f32 / scale)
    }

    /// The point in the space's own units in f64, for exact distance maths.
    pub fn to_f64(self, space: Space) -> [f64; 3] {
        let scale = space.scale();
        self.0.map(|q| q as f64 / scale)
    }
}

/// Quantises `value` with `scale`: round half away from zero, rejected (never clamped) when
/// non-finite or outside `0..=max_q` / `-max_q..=max_q`.
fn quantise(value: f32, scale: f64, min_q: i64, max_q: i64) -> Result<i64, String> {
    if !value.is_finite() {
        return Err(format!("{value} is not a finite number"));
    }
    // f64::round rounds half away from zero, as the contract requires.
    let q = (f64::from(value) * scale).round();
    if q < min_q as f64 || q > max_q as f64 {
        return Err(format!(
            "{value} is outside [{}, {}]",
            min_q as f64 / scale,
            max_q as f64 / scale
        ));
    }
    Ok(q as i64)
}

/// Scale of `field_radius` (steps of 0.01).
const RADIUS_SCALE: f64 = 100.0;
/// Scale of `field_strength` (steps of 1/255).
const STRENGTH_SCALE: f64 = 255.0;

/// The compact stored form of a token's values (64 bytes; the id is the map key).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct TokenData {
    /// Quantised coordinates per space; X = `UNDEFINED_MARK` marks an undefined space.
    coords: [[i16; 3]; SPACE_COUNT],
    /// Weight as sent (validated to 0..1).
    weight: f32,
    /// Unix seconds of the last create or update.
    timestamp: u32,
    /// round(field_radius × 100).
    field_radius_q: u8,
    /// round(field_strength × 255).
    field_strength_q: u8,
    /// The eight flags.
    flags: TokenFlags,
    _reserved: u8,
    /// Unix seconds when the server deletes the token by itself; 0 = never (API.md §10).
    expires_at: u32,
}

impl TokenData {
    /// The point of `space`, or `None` when undefined there.
    pub fn point(&self, space: Space) -> Option<QPoint> {
        let c = self.coords[space.index()];
        (c[0] != UNDEFINED_MARK).then_some(QPoint(c))
    }

    /// Sets or undefines the point of `space`.
    pub fn set_point(&mut self, space: Space, point: Option<QPoint>) {
        self.coords[space.index()] = match point {
            Some(p) => p.0,
            None => [UNDEFINED_MARK, 0, 0],
        };
    }

    /// Weight.
    pub fn weight(&self) -> f32 {
        self.weight
    }

    /// Field radius as stored (`q / 100`).
    pub fn field_radius(&self) -> f32 {
        self.field_radius_q as f32 / RADIUS_SCALE as f32
    }

    /// Field strength as stored (`q / 255`).
    pub fn field_strength(&self) -> f32 {
        self.field_strength_q as f32 / STRENGTH_SCALE as f32
    }

    /// Field radius for exact maths: `q / 100` in f64 (the f32 form widened is not exactly it,
    /// e.g. 0.7f32 is 0.69999998807).
    pub fn field_radius_f64(&self) -> f64 {
        f64::from(self.field_radius_q) / RADIUS_SCALE
    }

    /// Field strength for exact maths: `q / 255` in f64.
    pub fn field_strength_f64(&self) -> f64 {
        f64::from(self.field_strength_q) / STRENGTH_SCALE
    }

    /// Flags.
    pub fn flags(&self) -> TokenFlags {
        self.flags
    }

    /// Unix seconds of the last create or update.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Unix seconds when the token expires, `None` when it never does.
    pub fn expires_at(&self) -> Option<u32> {
        (self.expires_at != 0).then_some(self.expires_at)
    }

    /// Sets when the token expires (`None` = never).
    pub fn set_expires_at(&mut self, expires_at: Option<u32>) {
        self.expires_at = expires_at.unwrap_or(0);
    }

    /// A token with every space undefined and every scalar 0.
    pub fn empty(timestamp: u32) -> TokenData {
        TokenData {
            coords: [[UNDEFINED_MARK, 0, 0]; SPACE_COUNT],
            weight: 0.0,
            timestamp,
            field_radius_q: 0,
            field_strength_q: 0,
            flags: TokenFlags::DEFAULT,
            _reserved: 0,
            expires_at: 0,
        }
    }
}

/// A stored token: its id and values.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    /// The id.
    pub id: TokenId,
    /// The values.
    pub data: TokenData,
}

/// Token values as a client sent them, before any rule is checked.
///
/// ```
/// use neurograph::model::{Space, TokenInput};
///
/// let mut input = TokenInput { weight: 0.5, field_radius: 2.554, ..TokenInput::default() };
/// input.points[Space::L2Sensory.index()] = Some([0.12345, -3.2767, 0.0]);
/// let draft = input.to_draft().expect("valid");
/// assert_eq!(draft.data.field_radius(), 2.55); // quantised, not clamped
///
/// input.points[Space::L2Sensory.index()] = Some([4.5, 0.0, 0.0]);
/// let violations = input.to_draft().expect_err("out of range");
/// assert_eq!(violations.to_string(), "l2_sensory.x: 4.5 is outside [-3.2767, 3.2767]");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenInput {
    /// Raw id (0 = allocate).
    pub id: u32,
    /// Entity type as sent.
    pub entity_type: u32,
    /// Domain as sent.
    pub domain: u32,
    /// Weight as sent.
    pub weight: f32,
    /// Field radius as sent.
    pub field_radius: f32,
    /// Field strength as sent.
    pub field_strength: f32,
    /// Flags; `None` means `{active: true}`.
    pub flags: Option<TokenFlags>,
    /// One point per space; `None` = undefined.
    pub points: [Option<[f32; 3]>; SPACE_COUNT],
    /// When the token should expire, as sent; `None` = never.
    pub expires_at: Option<ExpiryInput>,
}

/// An expiry time as a client sent it (a protobuf Timestamp), with the server's time of the
/// request, which the rule "in the future" is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryInput {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Fraction of a second in nanoseconds (0..1e9); a fraction rounds up, so that a token
    /// never goes before the time asked for.
    pub nanos: i32,
    /// Unix seconds when the request arrived.
    pub now: u32,
}

impl ExpiryInput {
    /// The expiry `ttl_seconds` after `now`, or why it cannot be stored.
    pub fn after(now: u32, ttl_seconds: u32) -> Result<ExpiryInput, String> {
        let seconds = i64::from(now) + i64::from(ttl_seconds);
        if seconds > i64::from(u32::MAX) {
            return Err(format!(
                "{ttl_seconds} s from now is after the last storable second {} (2106-02-07)",
                u32::MAX
            ));
        }
        Ok(ExpiryInput {
            seconds,
            nanos: 0,
            now,
        })
    }

    /// The stored second, or why it is refused: not in the future, or not storable.
    pub fn check(self) -> Result<u32, String> {
        if !(0..1_000_000_000).contains(&self.nanos) {
            return Err(format!("nanos {} is outside [0, 999999999]", self.nanos));
        }
        let second = self.seconds.saturating_add(i64::from(self.nanos > 0));
        if second <= i64::from(self.now) {
            return Err(format!(
                "{second} is not in the future (the server's time is {})",
                self.now
            ));
        }
        u32::try_from(second).map_err(|_| {
            format!(
                "{second} is after the last storable second {} (2106-02-07)",
                u32::MAX
            )
        })
    }
}

fn check_expiry(expiry: Option<ExpiryInput>, violations: &mut Violations) -> Option<u32> {
    let expiry = expiry?;
    match expiry.check() {
        Ok(second) => Some(second),
        Err(rule) => {
            violations.push("expires_at", rule);
            None
        }
    }
}

/// Where a new token's id comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IdRequest {
    /// Allocate the next local id of this pair.
    Allocate(IdPair),
    /// Use exactly this id.
    Explicit(TokenId),
}

/// A validated token to create: its id request and values (timestamp set when committed).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenDraft {
    /// Where the id comes from.
    pub id: IdRequest,
    /// The values.
    pub data: TokenData,
}

fn check_weight(weight: f32, violations: &mut Violations) -> f32 {
    if !weight.is_finite() {
        violations.push("weight", format!("{weight} is not a finite number"));
    } else if !(0.0..=1.0).contains(&weight) {
        violations.push("weight", format!("{weight} is outside [0, 1]"));
    }
    weight
}

fn check_radius(value: f32, violations: &mut Violations) -> u8 {
    match quantise(value, RADIUS_SCALE, 0, 255) {
        Ok(q) => q as u8,
        Err(e) => {
            violations.push("field_radius", e);
            0
        }
    }
}

fn check_strength(value: f32, violations: &mut Violations) -> u8 {
    match quantise(value, STRENGTH_SCALE, 0, 255) {
        Ok(q) => q as u8,
        Err(e) => {
            violations.push("field_strength", e);
            0
        }
    }
}

fn check_point(space: Space, point: [f32; 3], violations: &mut Violations) -> QPoint {
    let mut q = [0i16; 3];
    for (axis, (value, out)) in ["x", "y", "z"].iter().zip(point.iter().zip(q.iter_mut())) {
        match quantise(*value, space.scale(), -MAX_QUANTISED, MAX_QUANTISED) {
            Ok(v) => *out = v as i16,
            Err(e) => violations.push(format!("{}.{axis}", space.field_name()), e),
        }
    }
    QPoint(q)
}

impl TokenInput {
    /// Checks every value rule; the stored values (timestamp 0) or every violation.
    fn to_data(&self, violations: &mut Violations) -> TokenData {
        let mut data = TokenData::empty(0);
        data.weight = check_weight(self.weight, violations);
        data.field_radius_q = check_radius(self.field_radius, violations);
        data.field_strength_q = check_strength(self.field_strength, violations);
        data.flags = self.flags.unwrap_or(TokenFlags::DEFAULT);
        data.set_expires_at(check_expiry(self.expires_at, violations));
        for space in Space::ALL {
            if let Some(point) = self.points[space.index()] {
                let q = check_point(space, point, violations);
                data.set_point(space, Some(q));
            }
        }
        data
    }

    /// Validates input for a create: value rules plus the id rules of the contract.
    pub fn to_draft(&self) -> Result<TokenDraft, Violations> {
        let mut violations = Violations::default();
        let data = self.to_data(&mut violations);
        for (name, value) in [("entity_type", self.entity_type), ("domain", self.domain)] {
            if value > MAX_NIBBLE {
                violations.push(name, format!("{value} is outside [0, {MAX_NIBBLE}]"));
            }
        }
        let id = if self.id == 0 {
            IdRequest::Allocate(
                IdPair::new(self.domain & 0xF, self.entity_type & 0xF).expect("masked to nibbles"),
            )
        } else {
            match TokenId::new(self.id) {
                Some(id) => {
                    for (name, sent, in_id) in [
                        ("entity_type", self.entity_type, id.entity_type()),
                        ("domain", self.domain, id.domain()),
                    ] {
                        if sent != 0 && sent != in_id && sent <= MAX_NIBBLE {
                            violations.push(
                                name,
                                format!("{sent} does not match the id's {name} {in_id} (send 0 or {in_id})"),
                            );
                        }
                    }
                    IdRequest::Explicit(id)
                }
                None => {
                    violations.push(
                        "id",
                        format!("{} has local_id 0; an explicit id needs a local_id in [1, {MAX_LOCAL_ID}]", self.id),
                    );
                    IdRequest::Allocate(IdPair::default())
                }
            }
        };
        violations.into_result(TokenDraft { id, data })
    }
}

/// A field an update may replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UpdatePath {
    /// `weight`
    Weight,
    /// `field_radius`
    FieldRadius,
    /// `field_strength`
    FieldStrength,
    /// `flags` as a whole
    Flags,
    /// `flags.<name>`
    Flag(FlagName),
    /// `l1_physical` … `l8_abstract` as a whole point
    Point(Space),
    /// `expires_at`
    ExpiresAt,
}

impl UpdatePath {
    /// What an absent or empty mask means (AIP-134): the fields set in `input`, i.e. non-zero
    /// scalars, present spaces and `flags` when present; nothing else changes.
    pub fn set_in(input: &TokenInput) -> Vec<UpdatePath> {
        let scalars = [
            (input.weight, UpdatePath::Weight),
            (input.field_radius, UpdatePath::FieldRadius),
            (input.field_strength, UpdatePath::FieldStrength),
        ];
        let mut paths: Vec<UpdatePath> = scalars
            .into_iter()
            // NaN is "set" too, so that it is refused rather than ignored.
            .filter(|(value, _)| *value != 0.0)
            .map(|(_, path)| path)
            .collect();
        if input.flags.is_some() {
            paths.push(UpdatePath::Flags);
        }
        if input.expires_at.is_some() {
            paths.push(UpdatePath::ExpiresAt);
        }
        paths.extend(
            Space::ALL
                .into_iter()
                .filter(|space| input.points[space.index()].is_some())
                .map(UpdatePath::Point),
        );
        paths
    }

    /// Every mutable path: what the mask `*` means.
    pub fn all() -> Vec<UpdatePath> {
        let mut paths = vec![
            UpdatePath::Weight,
            UpdatePath::FieldRadius,
            UpdatePath::FieldStrength,
            UpdatePath::Flags,
            UpdatePath::ExpiresAt,
        ];
        paths.extend(Space::ALL.map(UpdatePath::Point));
        paths
    }

    /// Parses one mask path; `Err` says why it is not mutable.
    pub fn parse(path: &str) -> Result<UpdatePath, String> {
        let parsed = match path {
            "weight" => Some(UpdatePath::Weight),
            "field_radius" => Some(UpdatePath::FieldRadius),
            "field_strength" => Some(UpdatePath::FieldStrength),
            "flags" => Some(UpdatePath::Flags),
            "expires_at" => Some(UpdatePath::ExpiresAt),
            _ => {
                if let Some(name) = path.strip_prefix("flags.") {
                    FlagName::ALL
                        .into_iter()
                        .find(|f| f.field_name() == name)
                        .map(UpdatePath::Flag)
                } else {
                    Space::from_field_name(path).map(UpdatePath::Point)
                }
            }
        };
        parsed.ok_or_else(|| {
            format!(
                "path {path:?} is not mutable; allowed: weight, field_radius, field_strength, flags, flags.<name>, expires_at, l1_physical … l8_abstract"
            )
        })
    }
}

/// A validated update: which paths to replace and their new values.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenPatch {
    /// The paths to replace.
    pub paths: Vec<UpdatePath>,
    /// New values (only the masked ones are meaningful).
    pub values: TokenData,
    /// Whether the weight is written (so the CDNA weight limits apply).
    pub writes_weight: bool,
}

impl TokenPatch {
    /// Validates the masked values of `input`; other fields are ignored, as AIP-134 says.
    pub fn new(input: &TokenInput, paths: Vec<UpdatePath>) -> Result<TokenPatch, Violations> {
        let mut violations = Violations::default();
        let mut values = TokenData::empty(0);
        for path in &paths {
            match *path {
                UpdatePath::Weight => values.weight = check_weight(input.weight, &mut violations),
                UpdatePath::FieldRadius => {
                    values.field_radius_q = check_radius(input.field_radius, &mut violations)
                }
                UpdatePath::FieldStrength => {
                    values.field_strength_q = check_strength(input.field_strength, &mut violations)
                }
                UpdatePath::Flags | UpdatePath::Flag(_) => {
                    values.flags = input.flags.unwrap_or(TokenFlags::DEFAULT)
                }
                UpdatePath::Point(space) => {
                    let point =
                        input.points[space.index()].map(|p| check_point(space, p, &mut violations));
                    values.set_point(space, point);
                }
                UpdatePath::ExpiresAt => {
                    values.set_expires_at(check_expiry(input.expires_at, &mut violations))
                }
            }
        }
        let writes_weight = paths.contains(&UpdatePath::Weight);
        violations.into_result(TokenPatch {
            paths,
            values,
            writes_weight,
        })
    }

    /// The token after the patch, stamped at `timestamp`.
    pub fn apply(&self, before: &TokenData, timestamp: u32) -> TokenData {
        let mut after = *before;
        for path in &self.paths {
            match *path {
                UpdatePath::Weight => after.weight = self.values.weight,
                UpdatePath::FieldRadius => after.field_radius_q = self.values.field_radius_q,
                UpdatePath::FieldStrength => after.field_strength_q = self.values.field_strength_q,
                UpdatePath::Flags => after.flags = self.values.flags,
                UpdatePath::Flag(flag) => after.flags.set(flag, self.values.flags.get(flag)),
                UpdatePath::Point(space) => after.set_point(space, self.values.point(space)),
                UpdatePath::ExpiresAt => after.expires_at = self.values.expires_at,
            }
        }
        after.timestamp = timestamp;
        after
    }
}

impl TokenDraft {
    /// The values stamped at `timestamp`.
    pub fn stamped(&self, timestamp: u32) -> TokenData {
        TokenData {
            timestamp,
            ..self.data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> TokenInput {
        TokenInput {
            weight: 0.5,
            ..TokenInput::default()
        }
    }

    #[test]
    fn stored_record_is_60_bytes() {
        assert_eq!(std::mem::size_of::<TokenData>(), 64);
    }

    #[test]
    fn quantise_rounds_half_away_from_zero_and_checks_q() {
        assert_eq!(quantise(327.67, 100.0, -32767, 32767), Ok(32767));
        assert_eq!(quantise(-327.67, 100.0, -32767, 32767), Ok(-32767));
        assert!(quantise(327.68, 100.0, -32767, 32767).is_err());
        assert_eq!(quantise(2.554, 100.0, 0, 255), Ok(255));
        assert!(quantise(2.556, 100.0, 0, 255).is_err());
        assert_eq!(quantise(0.125, 100.0, 0, 255), Ok(13));
        assert_eq!(quantise(-0.125, 100.0, -255, 255), Ok(-13));
        assert!(quantise(f32::NAN, 100.0, 0, 255).is_err());
        assert!(quantise(f32::INFINITY, 100.0, 0, 255).is_err());
    }

    #[test]
    fn id_parts_round_trip() {
        let id = TokenId::from_parts(2, 5, 1).expect("valid parts");
        assert_eq!(id.get(), 0x2500_0001);
        assert_eq!((id.domain(), id.entity_type(), id.local_id()), (2, 5, 1));
        assert!(TokenId::new(0x2500_0000).is_none());
        assert!(TokenId::new(0).is_none());
    }

    #[test]
    fn draft_names_every_bad_field() {
        let mut bad = input();
        bad.weight = f32::NAN;
        bad.points[1] = Some([4.5, 0.0, f32::INFINITY]);
        bad.entity_type = 16;
        let violations = bad.to_draft().expect_err("invalid");
        let fields: Vec<_> = violations.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["weight", "l2_sensory.x", "l2_sensory.z", "entity_type"]
        );
        assert_eq!(
            violations.0[1].description,
            "4.5 is outside [-3.2767, 3.2767]"
        );
    }

    #[test]
    fn explicit_id_must_match_sent_type() {
        let mut token = input();
        token.id = 0x0300_0007;
        token.entity_type = 4;
        let violations = token.to_draft().expect_err("mismatch");
        assert_eq!(violations.0[0].field, "entity_type");
        token.entity_type = 3;
        assert!(token.to_draft().is_ok());
    }

    #[test]
    fn patch_replaces_only_masked_paths() {
        let mut before = TokenData::empty(1);
        before.set_point(Space::L1Physical, Some(QPoint([1, 2, 3])));
        before.weight = 0.25;
        let mut sent = input();
        sent.weight = 0.75;
        sent.flags = Some(TokenFlags::from_bools([
            false, true, false, false, false, false, false, false,
        ]));
        let patch = TokenPatch::new(
            &sent,
            vec![
                UpdatePath::Point(Space::L1Physical),
                UpdatePath::Flag(FlagName::Persistent),
            ],
        )
        .expect("valid");
        let after = patch.apply(&before, 9);
        assert_eq!(after.point(Space::L1Physical), None);
        assert_eq!(after.weight(), 0.25);
        assert!(after.flags().get(FlagName::Active));
        assert!(after.flags().get(FlagName::Persistent));
        assert_eq!(after.timestamp(), 9);
    }

    #[test]
    fn an_empty_mask_means_the_fields_set() {
        let mut input = TokenInput {
            weight: 0.5,
            field_strength: f32::NAN,
            ..TokenInput::default()
        };
        input.points[Space::L3Motor.index()] = Some([1.0, 2.0, 3.0]);
        assert_eq!(
            UpdatePath::set_in(&input),
            [
                UpdatePath::Weight,
                UpdatePath::FieldStrength,
                UpdatePath::Point(Space::L3Motor)
            ]
        );
        input.flags = Some(TokenFlags::DEFAULT);
        assert!(UpdatePath::set_in(&input).contains(&UpdatePath::Flags));
        assert!(UpdatePath::set_in(&TokenInput::default()).is_empty());
    }

    #[test]
    fn update_paths_reject_immutable_fields() {
        for path in [
            "id",
            "entity_type",
            "domain",
            "local_id",
            "timestamp",
            "l1_physical.x",
            "flags.bogus",
        ] {
            assert!(UpdatePath::parse(path).is_err(), "{path}");
        }
        assert_eq!(
            UpdatePath::parse("flags.user_3"),
            Ok(UpdatePath::Flag(FlagName::User3))
        );
    }
}
