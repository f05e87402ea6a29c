//! CDNA ("constitutional DNA") domain: the config and its change rules, the five preset
//! profiles, the scale rules, the quarantine record and history entries. Pure values and
//! functions: no locks, no clocks (times come in as arguments), no protobuf types. Every state
//! value is plain data (no `Instant`s) so that the persistence layer can store it as is.

use std::fmt;

use super::violation::Violations;

/// The config format version clients see.
pub const VERSION: &str = "2.1.0";
/// Number of dimension scales, one per space L1..L8.
pub const DIMENSIONS: usize = 8;
/// Most history entries kept; older ones are dropped.
pub const HISTORY_LIMIT: usize = 1000;
/// Quarantine duration when a request says 0.
pub const DEFAULT_QUARANTINE_SECONDS: u32 = 300;
/// Shortest quarantine a request may ask for.
pub const MIN_QUARANTINE_SECONDS: u32 = 60;
/// Longest quarantine a request may ask for.
pub const MAX_QUARANTINE_SECONDS: u32 = 3600;

/// One scale per space, L1..L8.
pub type Scales = [f32; DIMENSIONS];

/// A point in wall-clock time: milliseconds since the Unix epoch. Wall-clock (not monotonic)
/// so that a quarantine deadline keeps its meaning across a restart.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct WallTime(pub u64);

impl WallTime {
    /// The time `seconds` later.
    pub fn plus_seconds(self, seconds: u32) -> WallTime {
        WallTime(self.0.saturating_add(u64::from(seconds) * 1000))
    }

    /// Milliseconds from `self` until `later`; 0 if `later` is not after `self`.
    pub fn millis_until(self, later: WallTime) -> u64 {
        later.0.saturating_sub(self.0)
    }

    /// Whole seconds since the epoch.
    pub fn seconds(self) -> u64 {
        self.0 / 1000
    }

    /// Nanoseconds past the whole second.
    pub fn subsec_nanos(self) -> u32 {
        // < 1000 × 1_000_000, so it fits.
        ((self.0 % 1000) * 1_000_000) as u32
    }
}

/// The upper limit of each dimension's scale (L5 Cognitive 30, L8 Abstract 50, others 20).
pub const SCALE_LIMITS: Scales = [20.0, 20.0, 20.0, 20.0, 30.0, 20.0, 20.0, 50.0];

/// A named switch of the CDNA config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CdnaFlag {
    /// `validation`
    Validation,
    /// `events`
    Events,
    /// `mutation`
    Mutation,
    /// `strict`
    Strict,
}

impl CdnaFlag {
    /// Every flag, in field order.
    pub const ALL: [CdnaFlag; 4] = [
        CdnaFlag::Validation,
        CdnaFlag::Events,
        CdnaFlag::Mutation,
        CdnaFlag::Strict,
    ];

    /// The proto field name.
    pub fn field_name(self) -> &'static str {
        match self {
            CdnaFlag::Validation => "validation",
            CdnaFlag::Events => "events",
            CdnaFlag::Mutation => "mutation",
            CdnaFlag::Strict => "strict",
        }
    }

    /// The flag with proto field name `name`.
    pub fn from_field_name(name: &str) -> Option<CdnaFlag> {
        CdnaFlag::ALL.into_iter().find(|f| f.field_name() == name)
    }
}

/// The four switches of the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CdnaFlags {
    /// `validation`
    pub validation: bool,
    /// `events`
    pub events: bool,
    /// `mutation`
    pub mutation: bool,
    /// `strict`
    pub strict: bool,
}

impl Default for CdnaFlags {
    /// The fresh-store flags: validation and events on, mutation and strict off.
    fn default() -> Self {
        CdnaFlags {
            validation: true,
            events: true,
            mutation: false,
            strict: false,
        }
    }
}

impl CdnaFlags {
    /// The value of `flag`.
    pub fn get(self, flag: CdnaFlag) -> bool {
        match flag {
            CdnaFlag::Validation => self.validation,
            CdnaFlag::Events => self.events,
            CdnaFlag::Mutation => self.mutation,
            CdnaFlag::Strict => self.strict,
        }
    }

    /// Sets `flag` to `on`.
    pub fn set(&mut self, flag: CdnaFlag, on: bool) {
        match flag {
            CdnaFlag::Validation => self.validation = on,
            CdnaFlag::Events => self.events = on,
            CdnaFlag::Mutation => self.mutation = on,
            CdnaFlag::Strict => self.strict = on,
        }
    }
}

/// The profile a config names: one of the presets, or `custom` once its scales left the preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ProfileId {
    /// `default`
    Default,
    /// `explorer`
    Explorer,
    /// `analyzer`
    Analyzer,
    /// `creative`
    Creative,
    /// `quarantine`
    Quarantine,
    /// `custom`: scales no longer match a preset.
    Custom,
}

impl ProfileId {
    /// The id clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileId::Default => "default",
            ProfileId::Explorer => "explorer",
            ProfileId::Analyzer => "analyzer",
            ProfileId::Creative => "creative",
            ProfileId::Quarantine => "quarantine",
            ProfileId::Custom => "custom",
        }
    }

    /// The preset with id `id` (never `custom`, which is no preset).
    pub fn preset(id: &str) -> Option<&'static Profile> {
        PROFILES.iter().find(|p| p.id.as_str() == id)
    }

    /// This id's preset, if it is one.
    pub fn profile(self) -> Option<&'static Profile> {
        PROFILES.iter().find(|p| p.id == self)
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A preset profile: scales plus informational tuning values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    /// Its id.
    pub id: ProfileId,
    /// Display name.
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Scales L1..L8.
    pub scales: Scales,
    /// Informational.
    pub plasticity: f32,
    /// Informational.
    pub evolution_rate: f32,
    /// Informational.
    pub restricted: bool,
    /// Informational; only the quarantine preset has one.
    pub max_change: Option<f32>,
}

/// The five presets of the contract, in table order.
pub const PROFILES: [Profile; 5] = [
    Profile {
        id: ProfileId::Default,
        name: "Default",
        description: "Balanced baseline: every space weighs the same",
        scales: [1.0; DIMENSIONS],
        plasticity: 0.5,
        evolution_rate: 0.1,
        restricted: false,
        max_change: None,
    },
    Profile {
        id: ProfileId::Explorer,
        name: "Explorer",
        description: "Loose structure, high plasticity",
        scales: [1.0, 1.5, 1.2, 2.0, 3.0, 2.5, 2.0, 5.0],
        plasticity: 0.8,
        evolution_rate: 0.5,
        restricted: false,
        max_change: None,
    },
    Profile {
        id: ProfileId::Analyzer,
        name: "Analyzer",
        description: "Strict rules, slow evolution",
        scales: [1.0, 1.0, 1.0, 1.5, 10.0, 5.0, 3.0, 20.0],
        plasticity: 0.2,
        evolution_rate: 0.1,
        restricted: false,
        max_change: None,
    },
    Profile {
        id: ProfileId::Creative,
        name: "Creative",
        description: "Experimental, wide abstract range",
        scales: [1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 34.0],
        plasticity: 0.95,
        evolution_rate: 0.8,
        restricted: false,
        max_change: None,
    },
    Profile {
        id: ProfileId::Quarantine,
        name: "Quarantine",
        description: "Isolated trial mode",
        scales: [1.0, 1.0, 1.0, 1.0, 2.0, 1.5, 1.0, 3.0],
        plasticity: 0.1,
        evolution_rate: 0.0,
        restricted: true,
        max_change: Some(0.5),
    },
];

/// How bad one dimension's scale is; the worst one is reported per dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Above 50% of the limit.
    Caution,
    /// Above 75% of the limit.
    Danger,
    /// ≤ 0 or above the limit.
    Error,
}

/// The one finding about one dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleIssue {
    /// 0-based dimension (L1 is 0).
    pub dimension: usize,
    /// How bad.
    pub severity: Severity,
    /// Whether the rule broken is `> 0` (kept by UpdateConfig even with `validate = false`).
    pub not_positive: bool,
    /// `L<n>: …`
    pub message: String,
}

/// What the scale rules say about 8 finite scales.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScaleReport {
    /// At most one per dimension, in dimension order.
    pub issues: Vec<ScaleIssue>,
}

impl ScaleReport {
    /// True when no dimension has an error.
    pub fn valid(&self) -> bool {
        self.errors().next().is_none()
    }

    /// The error items.
    pub fn errors(&self) -> impl Iterator<Item = &ScaleIssue> {
        self.issues.iter().filter(|i| i.severity == Severity::Error)
    }

    /// The warning items (danger and caution).
    pub fn warnings(&self) -> impl Iterator<Item = &ScaleIssue> {
        self.issues.iter().filter(|i| i.severity != Severity::Error)
    }
}

/// Checks proposed scales. A wrong count or a non-finite value is a violation (paths relative
/// to the scales field: `` for the count, `[i]` for a value); otherwise the report lists at
/// most one item per dimension: an error (≤ 0 or above the limit) over a danger warning (above
/// 75% of the limit) over a caution warning (above 50%). Exactly 50% or 75% is not above.
pub fn validate_scales(scales: &[f32]) -> Result<(Scales, ScaleReport), Violations> {
    let mut violations = Violations::default();
    if scales.len() != DIMENSIONS {
        violations.push(
            "",
            format!(
                "{} values sent; exactly {DIMENSIONS} are required, L1..L8",
                scales.len()
            ),
        );
    }
    // Only the first eight are looked at: a million NaNs must not make a million violations.
    for (i, scale) in scales.iter().enumerate().take(DIMENSIONS) {
        if !scale.is_finite() {
            violations.push(
                format!("[{i}]"),
                format!("L{}: {scale} is not a finite number", i + 1),
            );
        }
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    let scales: Scales = scales.try_into().expect("the length was checked above");
    let issues = scales
        .iter()
        .zip(SCALE_LIMITS)
        .enumerate()
        .filter_map(|(dimension, (&scale, limit))| scale_issue(dimension, scale, limit))
        .collect();
    Ok((scales, ScaleReport { issues }))
}

fn scale_issue(dimension: usize, scale: f32, limit: f32) -> Option<ScaleIssue> {
    let n = dimension + 1;
    let value = f64::from(scale);
    let limit = f64::from(limit);
    let (severity, message) = if value <= 0.0 {
        (Severity::Error, format!("L{n}: {scale} must be > 0"))
    } else if value > limit {
        (
            Severity::Error,
            format!("L{n}: {scale} is above the limit of {limit}"),
        )
    } else if value > limit * 0.75 {
        (
            Severity::Danger,
            format!("L{n}: danger: {scale} is above 75% of the limit of {limit}"),
        )
    } else if value > limit * 0.5 {
        (
            Severity::Caution,
            format!("L{n}: caution: {scale} is above 50% of the limit of {limit}"),
        )
    } else {
        return None;
    };
    Some(ScaleIssue {
        dimension,
        severity,
        not_positive: value <= 0.0,
        message,
    })
}

/// The live runtime configuration.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CdnaConfig {
    /// The preset it follows, or `custom`.
    pub profile: ProfileId,
    /// Scales L1..L8.
    pub scales: Scales,
    /// Switches.
    pub flags: CdnaFlags,
    /// Lowest weight a token write may set.
    pub min_token_weight: f32,
    /// Highest weight a token write may set.
    pub max_token_weight: f32,
    /// Rises by one on every change; never goes back.
    pub revision: u64,
    /// When the last change happened.
    pub updated_at: WallTime,
}

/// A mutable path of the config, as UpdateConfig's mask names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigPath {
    /// `dimension_scales` (all 8).
    DimensionScales,
    /// `flags` (all four).
    Flags,
    /// `flags.<name>`
    Flag(CdnaFlag),
    /// `min_token_weight`
    MinTokenWeight,
    /// `max_token_weight`
    MaxTokenWeight,
}

impl ConfigPath {
    /// The path named `path`, or the rule it breaks.
    pub fn parse(path: &str) -> Result<ConfigPath, String> {
        let parsed = match path {
            "dimension_scales" => Some(ConfigPath::DimensionScales),
            "flags" => Some(ConfigPath::Flags),
            "min_token_weight" => Some(ConfigPath::MinTokenWeight),
            "max_token_weight" => Some(ConfigPath::MaxTokenWeight),
            other => other
                .strip_prefix("flags.")
                .and_then(CdnaFlag::from_field_name)
                .map(ConfigPath::Flag),
        };
        parsed.ok_or_else(|| {
            format!(
                "path {path:?} is not mutable; allowed: dimension_scales, flags, flags.<validation|events|mutation|strict>, min_token_weight, max_token_weight"
            )
        })
    }
}

/// The values an UpdateConfig request sends (only the masked ones matter).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigInput {
    /// `dimension_scales` as sent.
    pub scales: Vec<f32>,
    /// `flags` as sent (absent reads as all false, proto3's default message).
    pub flags: CdnaFlags,
    /// `min_token_weight` as sent.
    pub min_token_weight: f32,
    /// `max_token_weight` as sent.
    pub max_token_weight: f32,
}

/// A validated change of some config fields; what it does not name stays as it is.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfigChanges {
    /// New scales.
    pub scales: Option<Scales>,
    /// Flags to set, in mask order.
    pub flags: Vec<(CdnaFlag, bool)>,
    /// New lower weight limit.
    pub min_token_weight: Option<f32>,
    /// New upper weight limit.
    pub max_token_weight: Option<f32>,
}

fn check_weight_limit(value: f32, field: &str, violations: &mut Violations) {
    if !value.is_finite() || !(0.0..=1.0).contains(&value) {
        violations.push(field, format!("{value} is outside [0, 1]"));
    }
}

impl ConfigChanges {
    /// Validates the masked values of `input` (paths relative to the config). With `validate`
    /// the scales must pass every scale rule; without it only the count, finiteness and > 0.
    /// Each weight limit must lie in [0, 1]; whether min ≤ max depends on the live config and
    /// is `CdnaConfig::check_changes`'s job.
    pub fn new(
        input: &ConfigInput,
        paths: &[ConfigPath],
        validate: bool,
    ) -> Result<ConfigChanges, Violations> {
        let mut violations = Violations::default();
        let mut changes = ConfigChanges::default();
        for path in paths {
            match *path {
                ConfigPath::DimensionScales => {
                    if changes.scales.is_some() {
                        continue;
                    }
                    let checked =
                        validate_scales(&input.scales).map_err(|v| v.prefixed("dimension_scales"));
                    // Every finite value's broken rule is reported, also beside a wrong count
                    // or a non-finite value elsewhere, so one answer lists every violation.
                    let finite = input.scales.iter().enumerate().take(DIMENSIONS);
                    for (dimension, &scale) in finite.filter(|(_, s)| s.is_finite()) {
                        let issue = scale_issue(dimension, scale, SCALE_LIMITS[dimension]);
                        if let Some(issue) = issue.filter(|i| i.severity == Severity::Error) {
                            if validate || issue.not_positive {
                                violations
                                    .push(format!("dimension_scales[{dimension}]"), issue.message);
                            }
                        }
                    }
                    if let Some((scales, _)) = violations.take(checked) {
                        changes.scales = Some(scales);
                    }
                }
                ConfigPath::Flags => changes
                    .flags
                    .extend(CdnaFlag::ALL.map(|f| (f, input.flags.get(f)))),
                ConfigPath::Flag(flag) => changes.flags.push((flag, input.flags.get(flag))),
                ConfigPath::MinTokenWeight => {
                    check_weight_limit(input.min_token_weight, "min_token_weight", &mut violations);
                    changes.min_token_weight = Some(input.min_token_weight);
                }
                ConfigPath::MaxTokenWeight => {
                    check_weight_limit(input.max_token_weight, "max_token_weight", &mut violations);
                    changes.max_token_weight = Some(input.max_token_weight);
                }
            }
        }
        violations.into_result(changes)
    }

    /// The mask paths this change names, for history details.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.scales.is_some() {
            parts.push("dimension_scales".to_string());
        }
        for (flag, on) in &self.flags {
            parts.push(format!("flags.{}={on}", flag.field_name()));
        }
        if let Some(min) = self.min_token_weight {
            parts.push(format!("min_token_weight={min}"));
        }
        if let Some(max) = self.max_token_weight {
            parts.push(format!("max_token_weight={max}"));
        }
        parts.join(", ")
    }
}

impl CdnaConfig {
    /// The fresh-store config: profile `default`, scales 1.0, validation and events on,
    /// weights 0..1, revision 1.
    pub fn fresh(at: WallTime) -> CdnaConfig {
        CdnaConfig {
            profile: ProfileId::Default,
            scales: [1.0; DIMENSIONS],
            flags: CdnaFlags::default(),
            min_token_weight: 0.0,
            max_token_weight: 1.0,
            revision: 1,
            updated_at: at,
        }
    }

    /// Whether a token write may set `weight`.
    pub fn allows_weight(&self, weight: f32) -> bool {
        (self.min_token_weight..=self.max_token_weight).contains(&weight)
    }

    /// The rules `changes` must meet against this config: min ≤ max after the change.
    /// Paths are relative to the config; the masked limit is named (min when both are).
    pub fn check_changes(&self, changes: &ConfigChanges) -> Result<(), Violations> {
        let min = changes.min_token_weight.unwrap_or(self.min_token_weight);
        let max = changes.max_token_weight.unwrap_or(self.max_token_weight);
        if min <= max {
            return Ok(());
        }
        let field = if changes.min_token_weight.is_some() {
            "min_token_weight"
        } else {
            "max_token_weight"
        };
        Err(Violations::one(
            field,
            format!(
                "min_token_weight {min} would be above max_token_weight {max}; 0 ≤ min ≤ max ≤ 1"
            ),
        ))
    }

    /// The config after `changes` (checked by `check_changes`) at `at`. Scales that differ
    /// from the profile's preset make the profile `custom`; a `custom` config stays custom.
    pub fn changed(&self, changes: &ConfigChanges, at: WallTime) -> CdnaConfig {
        let mut next = self.next_revision(at);
        if let Some(scales) = changes.scales {
            let matches_preset = self.profile.profile().is_some_and(|p| p.scales == scales);
            if !matches_preset {
                next.profile = ProfileId::Custom;
            }
            next.scales = scales;
        }
        for &(flag, on) in &changes.flags {
            next.flags.set(flag, on);
        }
        if let Some(min) = changes.min_token_weight {
            next.min_token_weight = min;
        }
        if let Some(max) = changes.max_token_weight {
            next.max_token_weight = max;
        }
        next
    }

    /// The config following `profile`: its id and scales, nothing else.
    pub fn switched(&self, profile: &Profile, at: WallTime) -> CdnaConfig {
        CdnaConfig {
            profile: profile.id,
            scales: profile.scales,
            ..self.next_revision(at)
        }
    }

    /// The values of `snapshot` under a new revision (a quarantine restore is a change).
    pub fn restored(&self, snapshot: &CdnaConfig, at: WallTime) -> CdnaConfig {
        CdnaConfig {
            revision: self.revision + 1,
            updated_at: at,
            ..snapshot.clone()
        }
    }

    /// The fresh-store values under a new revision.
    pub fn reset(&self, at: WallTime) -> CdnaConfig {
        CdnaConfig {
            revision: self.revision + 1,
            ..CdnaConfig::fresh(at)
        }
    }

    fn next_revision(&self, at: WallTime) -> CdnaConfig {
        CdnaConfig {
            revision: self.revision + 1,
            updated_at: at,
            ..self.clone()
        }
    }
}

/// The effective quarantine duration for a requested one: 0 → 300, else 60..=3600.
pub fn quarantine_duration(requested: u32) -> Result<u32, String> {
    match requested {
        0 => Ok(DEFAULT_QUARANTINE_SECONDS),
        s if (MIN_QUARANTINE_SECONDS..=MAX_QUARANTINE_SECONDS).contains(&s) => Ok(s),
        s => Err(format!(
            "{s} is outside [{MIN_QUARANTINE_SECONDS}, {MAX_QUARANTINE_SECONDS}] seconds; send 0 for the default of {DEFAULT_QUARANTINE_SECONDS}"
        )),
    }
}

/// A quarantine: the config before it, its deadline, and what happened during it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Quarantine {
    /// The config at the start, restored on discard or expiry.
    pub snapshot: CdnaConfig,
    /// When it started.
    pub started_at: WallTime,
    /// How long it lasts.
    pub duration_seconds: u32,
    /// When it expires (`started_at` + duration), wall-clock so that it survives a restart.
    pub deadline: WallTime,
    /// Token writes since the start.
    pub token_churn: u64,
    /// Config updates and switches since the start.
    pub config_changes: u64,
}

impl Quarantine {
    /// A quarantine of `snapshot` starting at `at` for `duration_seconds`.
    pub fn start(snapshot: CdnaConfig, at: WallTime, duration_seconds: u32) -> Quarantine {
        Quarantine {
            snapshot,
            started_at: at,
            duration_seconds,
            deadline: at.plus_seconds(duration_seconds),
            token_churn: 0,
            config_changes: 0,
        }
    }

    /// Whether it has expired at `now` (the deadline itself counts as passed).
    pub fn expired_at(&self, now: WallTime) -> bool {
        now >= self.deadline
    }

    /// Its status at `now`, `active` or ended.
    pub fn status(&self, active: bool, now: WallTime) -> QuarantineStatus {
        let time_left_seconds = if active {
            // Rounded up: 0.2 s left is 1 s left.
            let millis = now.millis_until(self.deadline);
            u32::try_from(millis.div_ceil(1000)).unwrap_or(u32::MAX)
        } else {
            0
        };
        QuarantineStatus {
            active,
            time_left_seconds,
            started_at: Some(self.started_at),
            duration_seconds: self.duration_seconds,
            token_churn: self.token_churn,
            config_changes: self.config_changes,
        }
    }
}

/// What clients see of the quarantine: the active one, or the figures of the last one.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuarantineStatus {
    /// Whether one is running.
    pub active: bool,
    /// Seconds until expiry, rounded up; 0 when not active.
    pub time_left_seconds: u32,
    /// Start of the active or last quarantine; `None` if there never was one.
    pub started_at: Option<WallTime>,
    /// Its duration.
    pub duration_seconds: u32,
    /// Token writes during it.
    pub token_churn: u64,
    /// Config updates and switches during it.
    pub config_changes: u64,
}

/// What a history entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HistoryAction {
    /// UpdateConfig.
    ConfigUpdate,
    /// SwitchProfile.
    ProfileSwitch,
    /// ResetConfig.
    Reset,
    /// StartQuarantine.
    QuarantineStart,
    /// StopQuarantine keeping the changes.
    QuarantineStopApplied,
    /// StopQuarantine restoring the snapshot.
    QuarantineStopDiscarded,
    /// The deadline passed and the snapshot was restored.
    QuarantineExpired,
}

/// One recorded change of the CDNA state.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryEntry {
    /// Its own increasing number (never reused, also not after a clear).
    pub sequence: u64,
    /// What happened.
    pub action: HistoryAction,
    /// When.
    pub at: WallTime,
    /// Config revision after the action.
    pub revision: u64,
    /// Human-readable summary.
    pub details: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(dimension: usize, value: f32) -> Vec<f32> {
        let mut scales = vec![1.0; DIMENSIONS];
        scales[dimension] = value;
        scales
    }

    /// The one issue of `scales`, if any.
    fn only_issue(scales: &[f32]) -> Option<(usize, Severity)> {
        let (_, report) = validate_scales(scales).expect("8 finite values");
        assert!(report.issues.len() <= 1, "{report:?}");
        report.issues.first().map(|i| (i.dimension, i.severity))
    }

    #[test]
    fn scale_rules_at_every_boundary() {
        use Severity::*;
        // (dimension, value, expected finding); limits: L5 30, L8 50, others 20.
        let cases: &[(usize, f32, Option<Severity>)] = &[
            (0, 0.0, Some(Error)),
            (0, -1.0, Some(Error)),
            (0, f32::MIN_POSITIVE, None),
            (0, 10.0, None),
            (0, 10.001, Some(Caution)),
            (0, 15.0, Some(Caution)),
            (0, 15.001, Some(Danger)),
            (0, 20.0, Some(Danger)),
            (0, 20.001, Some(Error)),
            (1, 20.5, Some(Error)),
            (3, 15.0, Some(Caution)),
            (4, 15.0, None),
            (4, 15.01, Some(Caution)),
            (4, 22.5, Some(Caution)),
            (4, 22.51, Some(Danger)),
            (4, 30.0, Some(Danger)),
            (4, 30.01, Some(Error)),
            (6, 20.0, Some(Danger)),
            (6, 21.0, Some(Error)),
            (7, 25.0, None),
            (7, 25.01, Some(Caution)),
            (7, 37.5, Some(Caution)),
            (7, 37.51, Some(Danger)),
            (7, 50.0, Some(Danger)),
            (7, 50.01, Some(Error)),
            (7, -0.0, Some(Error)),
        ];
        for &(dimension, value, expected) in cases {
            let found = only_issue(&with(dimension, value));
            assert_eq!(
                found,
                expected.map(|s| (dimension, s)),
                "L{} = {value}",
                dimension + 1
            );
        }
    }

    #[test]
    fn every_item_names_its_dimension_and_the_worst_finding_wins() {
        let (_, report) =
            validate_scales(&[0.0, 11.0, 16.0, 21.0, 1.0, 1.0, 1.0, 51.0]).expect("finite");
        let messages: Vec<_> = report.issues.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(messages.len(), 5);
        for (message, n) in messages
            .iter()
            .zip(["L1: ", "L2: ", "L3: ", "L4: ", "L8: "])
        {
            assert!(message.starts_with(n), "{message} starts with {n}");
        }
        assert_eq!(report.errors().count(), 3);
        assert_eq!(report.warnings().count(), 2);
        assert!(!report.valid());
    }

    #[test]
    fn wrong_count_or_non_finite_is_a_violation() {
        for bad in [
            vec![1.0; 7],
            vec![1.0; 9],
            vec![],
            with(2, f32::NAN),
            with(7, f32::INFINITY),
            with(0, f32::NEG_INFINITY),
        ] {
            let violations = validate_scales(&bad).expect_err("rejected");
            assert!(!violations.is_empty(), "{bad:?}");
        }
        let violations = validate_scales(&with(2, f32::NAN)).expect_err("NaN");
        assert_eq!(violations.0[0].field, "[2]");
        assert!(violations.0[0].description.starts_with("L3: "));
    }

    #[test]
    fn every_preset_passes_its_own_validation() {
        for profile in &PROFILES {
            let (_, report) = validate_scales(&profile.scales).expect("8 finite values");
            assert!(report.valid(), "{}: {report:?}", profile.id);
        }
        let creative = ProfileId::Creative.profile().expect("preset");
        let (_, report) = validate_scales(&creative.scales).expect("finite");
        let danger: Vec<_> = report
            .issues
            .iter()
            .filter(|i| i.severity == Severity::Danger)
            .collect();
        assert_eq!(danger.len(), 1);
        assert!(danger[0].message.starts_with("L7: "));
    }

    #[test]
    fn presets_are_found_by_id_and_custom_is_none() {
        for profile in &PROFILES {
            assert_eq!(ProfileId::preset(profile.id.as_str()), Some(profile));
        }
        assert_eq!(ProfileId::preset("custom"), None);
        assert_eq!(ProfileId::preset("Default"), None);
    }

    #[test]
    fn update_paths_parse_and_others_are_rejected() {
        assert_eq!(
            ConfigPath::parse("flags.strict"),
            Ok(ConfigPath::Flag(CdnaFlag::Strict))
        );
        for bad in [
            "profile",
            "revision",
            "flags.other",
            "dimension_scales[0]",
            "",
        ] {
            assert!(ConfigPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_scale_violation_is_reported_beside_a_non_finite_one() {
        let input = ConfigInput {
            scales: vec![0.0, f32::NAN, 25.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            ..ConfigInput::default()
        };
        let paths = [ConfigPath::DimensionScales];
        let fields = |validate| -> Vec<String> {
            let err = ConfigChanges::new(&input, &paths, validate).unwrap_err();
            err.0.into_iter().map(|v| v.field).collect()
        };
        assert_eq!(
            fields(true),
            [
                "dimension_scales[0]",
                "dimension_scales[2]",
                "dimension_scales[1]"
            ]
        );
        assert_eq!(
            fields(false),
            ["dimension_scales[0]", "dimension_scales[1]"]
        );
    }

    #[test]
    fn changes_without_validate_still_require_positive_scales() {
        let input = ConfigInput {
            scales: with(4, 99.0),
            ..ConfigInput::default()
        };
        let paths = [ConfigPath::DimensionScales];
        let strict = ConfigChanges::new(&input, &paths, true).expect_err("above limit");
        assert_eq!(strict.0[0].field, "dimension_scales[4]");
        assert!(ConfigChanges::new(&input, &paths, false).is_ok());
        let zero = ConfigInput {
            scales: with(1, 0.0),
            ..ConfigInput::default()
        };
        let rejected = ConfigChanges::new(&zero, &paths, false).expect_err("zero");
        assert_eq!(rejected.0[0].field, "dimension_scales[1]");
    }

    #[test]
    fn weight_limits_stay_within_zero_and_one_and_ordered() {
        let paths = [ConfigPath::MinTokenWeight, ConfigPath::MaxTokenWeight];
        for (min, max, ok) in [
            (0.0, 1.0, true),
            (0.5, 0.5, true),
            (-0.1, 1.0, false),
            (0.0, 1.1, false),
            (f32::NAN, 1.0, false),
        ] {
            let input = ConfigInput {
                min_token_weight: min,
                max_token_weight: max,
                ..ConfigInput::default()
            };
            assert_eq!(
                ConfigChanges::new(&input, &paths, true).is_ok(),
                ok,
                "{min}..{max}"
            );
        }
        let config = CdnaConfig::fresh(WallTime(0));
        let narrow_max = ConfigChanges {
            max_token_weight: Some(0.2),
            ..ConfigChanges::default()
        };
        let config = config.changed(&narrow_max, WallTime(1));
        let min_above = ConfigChanges {
            min_token_weight: Some(0.3),
            ..ConfigChanges::default()
        };
        let violations = config.check_changes(&min_above).expect_err("min > max");
        assert_eq!(violations.0[0].field, "min_token_weight");
    }

    #[test]
    fn scales_leaving_the_preset_make_the_profile_custom() {
        let config = CdnaConfig::fresh(WallTime(0));
        let same = ConfigChanges {
            scales: Some([1.0; DIMENSIONS]),
            ..ConfigChanges::default()
        };
        let kept = config.changed(&same, WallTime(5));
        assert_eq!(kept.profile, ProfileId::Default);
        assert_eq!((kept.revision, kept.updated_at), (2, WallTime(5)));
        let other = ConfigChanges {
            scales: Some([2.0; DIMENSIONS]),
            ..ConfigChanges::default()
        };
        let custom = kept.changed(&other, WallTime(6));
        assert_eq!(custom.profile, ProfileId::Custom);
        let flags_only = ConfigChanges {
            flags: vec![(CdnaFlag::Strict, true)],
            ..ConfigChanges::default()
        };
        let still_custom = custom.changed(&flags_only, WallTime(7));
        assert_eq!(still_custom.profile, ProfileId::Custom);
        assert!(still_custom.flags.strict);
        assert_eq!(still_custom.revision, 4);
    }

    #[test]
    fn restore_and_reset_take_a_new_revision() {
        let fresh = CdnaConfig::fresh(WallTime(0));
        let creative = fresh.switched(ProfileId::Creative.profile().expect("preset"), WallTime(10));
        assert_eq!(creative.revision, 2);
        let restored = creative.restored(&fresh, WallTime(20));
        assert_eq!(restored.profile, ProfileId::Default);
        assert_eq!((restored.revision, restored.updated_at), (3, WallTime(20)));
        let reset = creative.reset(WallTime(30));
        assert_eq!(
            reset,
            CdnaConfig {
                revision: 3,
                ..CdnaConfig::fresh(WallTime(30))
            }
        );
    }

    #[test]
    fn quarantine_durations() {
        for (requested, expected) in [
            (0, Some(300)),
            (59, None),
            (60, Some(60)),
            (3600, Some(3600)),
            (3601, None),
            (1, None),
        ] {
            assert_eq!(quarantine_duration(requested).ok(), expected, "{requested}");
        }
    }

    #[test]
    fn time_left_rounds_up_and_the_deadline_is_expiry() {
        let q = Quarantine::start(CdnaConfig::fresh(WallTime(0)), WallTime(1_000), 60);
        assert_eq!(q.deadline, WallTime(61_000));
        assert_eq!(q.status(true, WallTime(1_000)).time_left_seconds, 60);
        assert_eq!(q.status(true, WallTime(1_001)).time_left_seconds, 60);
        assert_eq!(q.status(true, WallTime(60_001)).time_left_seconds, 1);
        assert_eq!(q.status(true, WallTime(61_000)).time_left_seconds, 0);
        assert!(!q.expired_at(WallTime(60_999)));
        assert!(q.expired_at(WallTime(61_000)));
        assert_eq!(q.status(false, WallTime(2_000)).time_left_seconds, 0);
    }
}
