//! `neurograph.v1.TokenService`: translates requests into store reads and write commands.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::convert::{existing_id, required, token_filter, token_not_found, token_patch};
use super::error::to_status;
use super::paging;
use super::pb::{self, token_service_server::TokenService};
use super::ShutdownSignal;
use crate::model::{TokenDraft, TokenInput, Violations};
use crate::store::write_path::unix_now;
use crate::store::{Command, Effect, Store, StoreError};

/// Most tokens one BatchCreateTokens may carry.
pub const MAX_BATCH: usize = 1000;
/// Tokens read per step of StreamTokens; the id set's lock is released between steps.
const STREAM_CHUNK: usize = 256;

/// The TokenService implementation over a shared store.
#[derive(Clone)]
pub struct TokenApi {
    store: Arc<Store>,
    shutdown: ShutdownSignal,
}

impl TokenApi {
    /// A service over `store` whose streams end with UNAVAILABLE when `shutdown` fires.
    pub fn new(store: Arc<Store>, shutdown: ShutdownSignal) -> Self {
        TokenApi { store, shutdown }
    }
}

/// Validates one token for a create, with violations under `prefix`.
fn draft(token: &pb::Token, prefix: &str) -> Result<TokenDraft, Violations> {
    TokenInput::from(token)
        .to_draft()
        .map_err(|v| v.prefixed(prefix))
}

/// The single created or updated token of a committed command.
fn changed_token(effects: &[Effect]) -> pb::Token {
    match effects.first() {
        Some(Effect::Created(token)) | Some(Effect::Updated { after: token, .. }) => {
            pb::Token::from(token)
        }
        other => unreachable!("a create or update commits one token, got {other:?}"),
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let request = request.into_inner();
        let token = required(request.token.as_ref(), "token")?;
        let draft = draft(token, "token.")?;
        let committed = self
            .store
            .commit(Command::CreateToken {
                draft,
                at: unix_now(),
            })
            .await?;
        Ok(Response::new(changed_token(&committed.effects)))
    }

    async fn get_token(
        &self,
        request: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let raw = request.into_inner().id;
        let token = existing_id(raw, "id")?
            .and_then(|id| self.store.get(id))
            .ok_or_else(|| token_not_found("id", raw))?;
        Ok(Response::new(pb::Token::from(&token)))
    }

    async fn update_token(
        &self,
        request: Request<pb::UpdateTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let request = request.into_inner();
        let token = required(request.token.as_ref(), "token")?;
        let mut violations = Violations::default();
        let id = violations.take(existing_id(token.id, "token.id"));
        let patch = violations.take(token_patch(token, request.update_mask.as_ref()));
        let (Some(id), Some(patch)) = (id, patch) else {
            return Err(violations.into());
        };
        let id = id.ok_or_else(|| token_not_found("token.id", token.id))?;
        let committed = self
            .store
            .commit(Command::UpdateToken {
                id,
                patch,
                at: unix_now(),
            })
            .await?;
        Ok(Response::new(changed_token(&committed.effects)))
    }

    async fn delete_token(
        &self,
        request: Request<pb::DeleteTokenRequest>,
    ) -> Result<Response<pb::DeleteTokenResponse>, Status> {
        let raw = request.into_inner().id;
        let id = existing_id(raw, "id")?.ok_or_else(|| token_not_found("id", raw))?;
        self.store.commit(Command::DeleteToken { id }).await?;
        Ok(Response::new(pb::DeleteTokenResponse {}))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::default();
        let size = violations.take(paging::page_size(request.page_size));
        let filter = violations.take(token_filter(request.filter.as_ref()));
        // A page token is checked against the filter, so only when the filter is valid.
        let after = filter.and_then(|f| violations.take(paging::decode(&request.page_token, &f)));
        let (Some(size), Some(filter), Some(after)) = (size, filter, after) else {
            return Err(violations.into());
        };
        let (page, total_size) = self.store.tables().page_with_count(&filter, after, size);
        let next_page_token = match (page.more, page.tokens.last()) {
            (true, Some(last)) => paging::encode(&filter, last.id.get()),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListTokensResponse {
            tokens: page.tokens.iter().map(pb::Token::from).collect(),
            next_page_token,
            total_size: i64::try_from(total_size).unwrap_or(i64::MAX),
        }))
    }

    async fn count_tokens(
        &self,
        request: Request<pb::CountTokensRequest>,
    ) -> Result<Response<pb::CountTokensResponse>, Status> {
        let filter = token_filter(request.into_inner().filter.as_ref())?;
        Ok(Response::new(pb::CountTokensResponse {
            count: self.store.count(&filter),
        }))
    }

    async fn clear_tokens(
        &self,
        _request: Request<pb::ClearTokensRequest>,
    ) -> Result<Response<pb::ClearTokensResponse>, Status> {
        let committed = self.store.commit(Command::ClearTokens).await?;
        let cleared = match committed.effects.first() {
            Some(Effect::Cleared { count }) => *count,
            _ => 0,
        };
        Ok(Response::new(pb::ClearTokensResponse { cleared }))
    }

    async fn batch_create_tokens(
        &self,
        request: Request<pb::BatchCreateTokensRequest>,
    ) -> Result<Response<pb::BatchCreateTokensResponse>, Status> {
        let tokens = request.into_inner().tokens;
        if tokens.len() > MAX_BATCH {
            let mut violations = Violations::default();
            violations.push(
                "tokens",
                format!(
                    "{} tokens is more than the {MAX_BATCH} a batch may hold",
                    tokens.len()
                ),
            );
            return Err(violations.into());
        }
        let mut violations = Violations::default();
        let mut drafts = Vec::with_capacity(tokens.len());
        for (i, token) in tokens.iter().enumerate() {
            match draft(token, &format!("tokens[{i}].")) {
                Ok(d) => drafts.push(d),
                Err(v) => violations.extend(v),
            }
        }
        let drafts = violations.into_result(drafts)?;
        let committed = self
            .store
            .commit(Command::BatchCreate {
                drafts,
                at: unix_now(),
            })
            .await?;
        let tokens = committed
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Created(token) => Some(pb::Token::from(token)),
                _ => None,
            })
            .collect();
        Ok(Response::new(pb::BatchCreateTokensResponse { tokens }))
    }

    async fn stream_tokens(
        &self,
        request: Request<pb::StreamTokensRequest>,
    ) -> Result<Response<BoxStream<pb::Token>>, Status> {
        let filter = token_filter(request.into_inner().filter.as_ref())?;
        let (sender, receiver) = mpsc::channel(STREAM_CHUNK);
        let store = Arc::clone(&self.store);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // One snapshot of the tables for the whole stream: a clear during the stream
            // does not cut it short halfway.
            let tables = store.tables();
            let tables = Arc::clone(&*tables);
            let mut after = None;
            loop {
                let page = tables.page(&filter, after, STREAM_CHUNK);
                after = page.tokens.last().map(|t| t.id.get());
                for token in &page.tokens {
                    tokio::select! {
                        sent = sender.send(Ok(pb::Token::from(token))) => if sent.is_err() { return },
                        () = shutdown.wait() => {
                            let ended = to_status(StoreError::Unavailable("server is shutting down".into()));
                            let _ = sender.send(Err(ended)).await;
                            return;
                        }
                    }
                }
                if !page.more {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
