//! `neurograph.v1.CDNAService`: validates requests, turns changes into CDNA commands applied
//! through the write path, and answers reads from the CDNA component directly.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert_cdna::config_changes;
use super::paging;
use super::pb::{self, cdna_service_server::CdnaService};
use crate::model::cdna::{
    quarantine_duration, validate_scales, CdnaConfig, Profile, ProfileId, QuarantineStatus,
    PROFILES,
};
use crate::model::Violations;
use crate::store::cdna::{Cdna, CdnaCommand, CdnaEffect};
use crate::store::{Command, Effect, Store, StoreError};

/// The CDNAService implementation over the shared store and its CDNA component.
#[derive(Clone)]
pub struct CdnaApi {
    store: Arc<Store>,
    cdna: Arc<Cdna>,
}

impl CdnaApi {
    /// A service changing `cdna` through `store`'s write path (`cdna` must be one of its hooks).
    pub fn new(store: Arc<Store>, cdna: Arc<Cdna>) -> Self {
        CdnaApi { store, cdna }
    }

    /// Commits `command` (durably) and returns its effects.
    async fn commit(&self, command: CdnaCommand) -> Result<Vec<Effect>, StoreError> {
        Ok(self.store.commit(Command::Cdna(command)).await?.effects)
    }
}

/// The config a committed config change produced, with the profile before it.
fn changed_config(effects: &[Effect]) -> (ProfileId, &CdnaConfig) {
    effects
        .iter()
        .find_map(|effect| match effect {
            Effect::Cdna(CdnaEffect::Config {
                old_profile,
                config,
            }) => Some((*old_profile, config)),
            _ => None,
        })
        .unwrap_or_else(|| unreachable!("a config change commits its config, got {effects:?}"))
}

/// The quarantine status a committed quarantine command produced.
fn changed_quarantine(effects: &[Effect]) -> &QuarantineStatus {
    effects
        .iter()
        .find_map(|effect| match effect {
            Effect::Cdna(CdnaEffect::Quarantine(status)) => Some(status),
            _ => None,
        })
        .unwrap_or_else(|| unreachable!("a quarantine command commits its status, got {effects:?}"))
}

/// The preset named by `profile_id`: INVALID_ARGUMENT when empty, NOT_FOUND when unknown.
fn preset(profile_id: &str) -> Result<&'static Profile, StoreError> {
    if profile_id.is_empty() {
        return Err(StoreError::Invalid(Violations::one(
            "profile_id",
            "is required: one of default, explorer, analyzer, creative, quarantine",
        )));
    }
    ProfileId::preset(profile_id).ok_or_else(|| {
        StoreError::NotFound(format!(
            "profile {profile_id:?} does not exist; the presets are default, explorer, analyzer, creative, quarantine"
        ))
    })
}

#[tonic::async_trait]
impl CdnaService for CdnaApi {
    async fn get_config(
        &self,
        _request: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::CdnaConfig>, Status> {
        Ok(Response::new((&self.cdna.config()).into()))
    }

    async fn update_config(
        &self,
        request: Request<pb::UpdateConfigRequest>,
    ) -> Result<Response<pb::CdnaConfig>, Status> {
        let request = request.into_inner();
        let changes = config_changes(
            request.config.as_ref(),
            request.update_mask.as_ref(),
            request.validate.unwrap_or(true),
        )?;
        let effects = self
            .commit(CdnaCommand::UpdateConfig {
                changes,
                expected_revision: request.expected_revision,
                at: self.cdna.now(),
            })
            .await?;
        Ok(Response::new(changed_config(&effects).1.into()))
    }

    async fn list_profiles(
        &self,
        _request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        Ok(Response::new(pb::ListProfilesResponse {
            profiles: PROFILES.iter().map(pb::Profile::from).collect(),
        }))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let profile = preset(&request.into_inner().profile_id)?;
        Ok(Response::new(profile.into()))
    }

    async fn switch_profile(
        &self,
        request: Request<pb::SwitchProfileRequest>,
    ) -> Result<Response<pb::SwitchProfileResponse>, Status> {
        let request = request.into_inner();
        let profile = preset(&request.profile_id)?;
        // Presets always pass the limit rules (a unit test proves it); warnings may remain.
        let (_, report) = validate_scales(&profile.scales)?;
        let effects = self
            .commit(CdnaCommand::SwitchProfile {
                profile: profile.id,
                expected_revision: request.expected_revision,
                at: self.cdna.now(),
            })
            .await?;
        let (old_profile, config) = changed_config(&effects);
        Ok(Response::new(pb::SwitchProfileResponse {
            old_profile: old_profile.as_str().to_string(),
            new_profile: config.profile.as_str().to_string(),
            config: Some(config.into()),
            warnings: report.warnings().map(|w| w.message.clone()).collect(),
        }))
    }

    async fn validate_scales(
        &self,
        request: Request<pb::ValidateScalesRequest>,
    ) -> Result<Response<pb::ValidateScalesResponse>, Status> {
        let scales = request.into_inner().scales;
        let (_, report) = validate_scales(&scales).map_err(|v| v.prefixed("scales"))?;
        Ok(Response::new(pb::ValidateScalesResponse {
            valid: report.valid(),
            errors: report.errors().map(|i| i.message.clone()).collect(),
            warnings: report.warnings().map(|i| i.message.clone()).collect(),
        }))
    }

    async fn start_quarantine(
        &self,
        request: Request<pb::StartQuarantineRequest>,
    ) -> Result<Response<pb::QuarantineStatus>, Status> {
        let duration_seconds = quarantine_duration(request.into_inner().duration_seconds)
            .map_err(|rule| Violations::one("duration_seconds", rule))?;
        let effects = self
            .commit(CdnaCommand::StartQuarantine {
                duration_seconds,
                at: self.cdna.now(),
            })
            .await?;
        Ok(Response::new(changed_quarantine(&effects).into()))
    }

    async fn stop_quarantine(
        &self,
        request: Request<pb::StopQuarantineRequest>,
    ) -> Result<Response<pb::QuarantineStatus>, Status> {
        let effects = self
            .commit(CdnaCommand::StopQuarantine {
                apply: request.into_inner().apply,
                at: self.cdna.now(),
            })
            .await?;
        Ok(Response::new(changed_quarantine(&effects).into()))
    }

    async fn get_quarantine_status(
        &self,
        _request: Request<pb::GetQuarantineStatusRequest>,
    ) -> Result<Response<pb::QuarantineStatus>, Status> {
        Ok(Response::new((&self.cdna.quarantine_status()).into()))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::default();
        let size = violations.take(paging::page_size(request.page_size));
        let before = violations.take(paging::decode_history(&request.page_token));
        let (Some(size), Some(before)) = (size, before) else {
            return Err(violations.into());
        };
        let page = self.cdna.history_page(before, size);
        let next_page_token = match (page.more, page.entries.last()) {
            (true, Some(last)) => paging::encode_history(last.sequence),
            _ => String::new(),
        };
        Ok(Response::new(pb::GetHistoryResponse {
            entries: page.entries.iter().map(pb::HistoryEntry::from).collect(),
            next_page_token,
            total_size: i64::try_from(page.total).unwrap_or(i64::MAX),
        }))
    }

    async fn reset_config(
        &self,
        request: Request<pb::ResetConfigRequest>,
    ) -> Result<Response<pb::CdnaConfig>, Status> {
        let request = request.into_inner();
        let effects = self
            .commit(CdnaCommand::Reset {
                clear_history: request.clear_history,
                expected_revision: request.expected_revision,
                at: self.cdna.now(),
            })
            .await?;
        Ok(Response::new(changed_config(&effects).1.into()))
    }
}
