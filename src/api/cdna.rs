//! `neurograph.v1.CDNAService`: validates requests, turns changes into CDNA commands applied
//! through the write path, and answers reads from the CDNA component directly.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::consistency::{answer_write, begin_read, call_writes};
use super::convert_cdna::config_changes;
use super::error::not_found;
use super::paging;
use super::pb::{self, cdna_service_server::CdnaService};
use crate::model::cdna::{quarantine_duration, validate_scales, Profile, ProfileId, PROFILES};
use crate::model::Violations;
use crate::store::cdna::{Cdna, CdnaCommand};
use crate::store::{Engine, Store, Writes};

/// The CDNAService implementation over the shared store and its CDNA component.
#[derive(Clone)]
pub struct CdnaApi {
    store: Arc<Store>,
    writes: Writes,
    cdna: Arc<Cdna>,
}

impl CdnaApi {
    /// A service reading the engine's CDNA component and changing it through its writes.
    pub fn new(engine: &Engine) -> Self {
        CdnaApi {
            store: Arc::clone(&engine.store),
            writes: engine.writes.clone(),
            cdna: Arc::clone(&engine.cdna),
        }
    }
}

/// The preset named by `profile_id`: INVALID_ARGUMENT when empty, NOT_FOUND when unknown.
fn preset(profile_id: &str) -> Result<&'static Profile, Status> {
    if profile_id.is_empty() {
        return Err(Violations::one(
            "profile_id",
            "is required: one of default, explorer, analyzer, creative, quarantine",
        )
        .into());
    }
    ProfileId::preset(profile_id).ok_or_else(|| {
        not_found(format!(
            "profile {profile_id:?} does not exist; the presets are default, explorer, analyzer, creative, quarantine"
        ))
    })
}

#[tonic::async_trait]
impl CdnaService for CdnaApi {
    async fn get_config(
        &self,
        request: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::CdnaConfig>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
        read.answer((&self.cdna.config()).into()).await
    }

    async fn update_config(
        &self,
        request: Request<pb::UpdateConfigRequest>,
    ) -> Result<Response<pb::CdnaConfig>, Status> {
        let writes = call_writes(&self.writes, request.metadata())?;
        let request = request.into_inner();
        let changes = config_changes(
            request.config.as_ref(),
            request.update_mask.as_ref(),
            request.validate.unwrap_or(true),
        )?;
        let changed = writes
            .change_config(CdnaCommand::UpdateConfig {
                changes,
                expected_revision: request.expected_revision,
                at: self.cdna.now(),
            })
            .await?;
        Ok(answer_write(changed, |(_, config)| (&config).into()))
    }

    async fn list_profiles(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
        let response = pb::ListProfilesResponse {
            profiles: PROFILES.iter().map(pb::Profile::from).collect(),
        };
        read.answer(response).await
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
        let profile = preset(&request.into_inner().profile_id)?;
        read.answer(profile.into()).await
    }

    async fn switch_profile(
        &self,
        request: Request<pb::SwitchProfileRequest>,
    ) -> Result<Response<pb::SwitchProfileResponse>, Status> {
        let writes = call_writes(&self.writes, request.metadata())?;
        let request = request.into_inner();
        let profile = preset(&request.profile_id)?;
        // Presets always pass the limit rules (a unit test proves it); warnings may remain.
        let (_, report) = validate_scales(&profile.scales)?;
        let switched = writes
            .change_config(CdnaCommand::SwitchProfile {
                profile: profile.id,
                expected_revision: request.expected_revision,
                at: self.cdna.now(),
            })
            .await?;
        Ok(answer_write(switched, |(old_profile, config)| {
            pb::SwitchProfileResponse {
                old_profile: old_profile.as_str().to_string(),
                new_profile: config.profile.as_str().to_string(),
                config: Some((&config).into()),
                warnings: report.warnings().map(|w| w.message.clone()).collect(),
            }
        }))
    }

    async fn validate_scales(
        &self,
        request: Request<pb::ValidateScalesRequest>,
    ) -> Result<Response<pb::ValidateScalesResponse>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
        let scales = request.into_inner().scales;
        let (_, report) = validate_scales(&scales).map_err(|v| v.prefixed("scales"))?;
        let response = pb::ValidateScalesResponse {
            valid: report.valid(),
            errors: report.errors().map(|i| i.message.clone()).collect(),
            warnings: report.warnings().map(|i| i.message.clone()).collect(),
        };
        read.answer(response).await
    }

    async fn start_quarantine(
        &self,
        request: Request<pb::StartQuarantineRequest>,
    ) -> Result<Response<pb::QuarantineStatus>, Status> {
        let writes = call_writes(&self.writes, request.metadata())?;
        let duration_seconds = quarantine_duration(request.into_inner().duration_seconds)
            .map_err(|rule| Violations::one("duration_seconds", rule))?;
        let started = writes
            .change_quarantine(CdnaCommand::StartQuarantine {
                duration_seconds,
                at: self.cdna.now(),
            })
            .await?;
        Ok(answer_write(started, |status| (&status).into()))
    }

    async fn stop_quarantine(
        &self,
        request: Request<pb::StopQuarantineRequest>,
    ) -> Result<Response<pb::QuarantineStatus>, Status> {
        let writes = call_writes(&self.writes, request.metadata())?;
        let stopped = writes
            .change_quarantine(CdnaCommand::StopQuarantine {
                apply: request.into_inner().apply,
                at: self.cdna.now(),
            })
            .await?;
        Ok(answer_write(stopped, |status| (&status).into()))
    }

    async fn get_quarantine_status(
        &self,
        request: Request<pb::GetQuarantineStatusRequest>,
    ) -> Result<Response<pb::QuarantineStatus>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
        read.answer((&self.cdna.quarantine_status()).into()).await
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
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
        let response = pb::GetHistoryResponse {
            entries: page.entries.iter().map(pb::HistoryEntry::from).collect(),
            next_page_token,
            total_size: i64::try_from(page.total).unwrap_or(i64::MAX),
        };
        read.answer(response).await
    }

    async fn reset_config(
        &self,
        request: Request<pb::ResetConfigRequest>,
    ) -> Result<Response<pb::CdnaConfig>, Status> {
        let writes = call_writes(&self.writes, request.metadata())?;
        let request = request.into_inner();
        let reset = writes
            .change_config(CdnaCommand::Reset {
                clear_history: request.clear_history,
                expected_revision: request.expected_revision,
                at: self.cdna.now(),
            })
            .await?;
        Ok(answer_write(reset, |(_, config)| (&config).into()))
    }
}
