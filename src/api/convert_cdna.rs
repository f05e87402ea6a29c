//! Proto ↔ model conversions of the CDNA service. Rules live in `model::cdna`; this module
//! copies values and puts violation paths under the request root.

use prost_types::{FieldMask, Timestamp};

use super::pb;
use crate::model::cdna::{
    CdnaConfig, CdnaFlags, ConfigChanges, ConfigInput, ConfigPath, HistoryAction, HistoryEntry,
    Profile, QuarantineStatus, WallTime, VERSION,
};
use crate::model::Violations;

/// The proto timestamp of `time`.
pub fn timestamp(time: WallTime) -> Timestamp {
    Timestamp {
        seconds: i64::try_from(time.seconds()).unwrap_or(i64::MAX),
        nanos: i32::try_from(time.subsec_nanos()).unwrap_or(0),
    }
}

impl From<CdnaFlags> for pb::CdnaFlags {
    fn from(flags: CdnaFlags) -> Self {
        pb::CdnaFlags {
            validation: flags.validation,
            events: flags.events,
            mutation: flags.mutation,
            strict: flags.strict,
        }
    }
}

impl From<&pb::CdnaFlags> for CdnaFlags {
    fn from(flags: &pb::CdnaFlags) -> Self {
        CdnaFlags {
            validation: flags.validation,
            events: flags.events,
            mutation: flags.mutation,
            strict: flags.strict,
        }
    }
}

impl From<&CdnaConfig> for pb::CdnaConfig {
    fn from(config: &CdnaConfig) -> Self {
        pb::CdnaConfig {
            version: VERSION.to_string(),
            profile: config.profile.as_str().to_string(),
            dimension_scales: config.scales.to_vec(),
            flags: Some(config.flags.into()),
            min_token_weight: config.min_token_weight,
            max_token_weight: config.max_token_weight,
            revision: config.revision,
            updated_at: Some(timestamp(config.updated_at)),
        }
    }
}

impl From<&Profile> for pb::Profile {
    fn from(profile: &Profile) -> Self {
        pb::Profile {
            id: profile.id.as_str().to_string(),
            name: profile.name.to_string(),
            description: profile.description.to_string(),
            scales: profile.scales.to_vec(),
            plasticity: profile.plasticity,
            evolution_rate: profile.evolution_rate,
            restricted: profile.restricted,
            max_change: profile.max_change,
        }
    }
}

impl From<&QuarantineStatus> for pb::QuarantineStatus {
    fn from(status: &QuarantineStatus) -> Self {
        pb::QuarantineStatus {
            active: status.active,
            time_left_seconds: status.time_left_seconds,
            started_at: status.started_at.map(timestamp),
            duration_seconds: status.duration_seconds,
            token_churn: status.token_churn,
            config_changes: status.config_changes,
        }
    }
}

impl From<HistoryAction> for pb::HistoryAction {
    fn from(action: HistoryAction) -> Self {
        match action {
            HistoryAction::ConfigUpdate => pb::HistoryAction::ConfigUpdate,
            HistoryAction::ProfileSwitch => pb::HistoryAction::ProfileSwitch,
            HistoryAction::Reset => pb::HistoryAction::Reset,
            HistoryAction::QuarantineStart => pb::HistoryAction::QuarantineStart,
            HistoryAction::QuarantineStopApplied => pb::HistoryAction::QuarantineStopApplied,
            HistoryAction::QuarantineStopDiscarded => pb::HistoryAction::QuarantineStopDiscarded,
            HistoryAction::QuarantineExpired => pb::HistoryAction::QuarantineExpired,
        }
    }
}

impl From<&HistoryEntry> for pb::HistoryEntry {
    fn from(entry: &HistoryEntry) -> Self {
        pb::HistoryEntry {
            sequence: entry.sequence,
            action: pb::HistoryAction::from(entry.action) as i32,
            timestamp: Some(timestamp(entry.at)),
            revision: entry.revision,
            details: entry.details.clone(),
        }
    }
}

/// The changes an UpdateConfig request asks for. The mask is required; every bad mask path
/// (`update_mask.paths[i]`) and every bad value of a valid path (`config.…`) is reported.
pub fn config_changes(
    config: Option<&pb::CdnaConfig>,
    mask: Option<&FieldMask>,
    validate: bool,
) -> Result<ConfigChanges, Violations> {
    super::convert::check_mask_size(mask)?;
    let mut violations = Violations::default();
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        violations.push(
            "update_mask",
            "is required: name the fields to change (dimension_scales, flags, flags.<name>, min_token_weight, max_token_weight)",
        );
    }
    let paths: Vec<ConfigPath> = paths
        .iter()
        .enumerate()
        .filter_map(|(i, path)| {
            violations.take(
                ConfigPath::parse(path)
                    .map_err(|rule| Violations::one(format!("update_mask.paths[{i}]"), rule)),
            )
        })
        .collect();
    let Some(config) = config else {
        violations.push("config", "is required");
        return Err(violations);
    };
    let input = ConfigInput {
        scales: config.dimension_scales.clone(),
        // Proto3: an absent message reads as its default, every flag false.
        flags: CdnaFlags::from(&config.flags.unwrap_or_default()),
        min_token_weight: config.min_token_weight,
        max_token_weight: config.max_token_weight,
    };
    let changes = violations
        .take(ConfigChanges::new(&input, &paths, validate).map_err(|v| v.prefixed("config.")));
    match changes {
        Some(changes) if violations.is_empty() => Ok(changes),
        _ => Err(violations),
    }
}
