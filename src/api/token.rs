//! `neurograph.v1.TokenService`: translates requests into store reads and write commands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::consistency::{answer_write, begin_read, call_writes, with_commit_sequence};
use super::convert::{
    existing_id, required, token_filter, token_input, token_not_found, token_patch, ttl_expiry,
};
use super::error::{request_stream_status, target_status, to_status};
use super::import::ImportReport;
use super::offload::{call_deadline, write_heavy};
use super::paging;
use super::pb::{self, token_service_server::TokenService};
use super::watch::{check_resumable, start_watch, WatchRequest, WatchSources};
use super::ShutdownSignal;
use crate::heavy::HeavyWork;
use crate::model::token::ExpiryInput;
use crate::model::{TokenDraft, Violations};
use crate::store::feed::history::History;
use crate::store::write_path::unix_now;
use crate::store::{ChangeFeed, Engine, SpatialIndex, Store, StoreError, Writes};

/// Tokens read per step of StreamTokens; the id set's lock is released between steps.
const STREAM_CHUNK: usize = 256;
/// Events a WatchTokens call buffers towards its client (beyond that the feed's lag counts).
const WATCH_BUFFER: usize = 256;

/// The TokenService implementation over a shared store.
#[derive(Clone)]
pub struct TokenApi {
    store: Arc<Store>,
    writes: Writes,
    index: Arc<SpatialIndex>,
    feed: Arc<ChangeFeed>,
    history: History,
    shutdown: ShutdownSignal,
    heavy: HeavyWork,
    /// Set while a compaction after an import waits for its turn.
    compaction_pending: Arc<AtomicBool>,
}

impl TokenApi {
    /// A service over the engine's store, writes, index and feed, whose streams end with
    /// UNAVAILABLE when `shutdown` fires, and whose big calls run as `heavy` work.
    pub fn new(engine: &Engine, shutdown: ShutdownSignal, heavy: HeavyWork) -> Self {
        TokenApi {
            store: Arc::clone(&engine.store),
            writes: engine.writes.clone(),
            index: Arc::clone(&engine.index),
            feed: Arc::clone(&engine.feed),
            history: engine.history.clone(),
            shutdown,
            heavy,
            compaction_pending: Arc::default(),
        }
    }
}

/// UNAVAILABLE for a stream cut short by shutdown.
pub(super) fn shutting_down() -> StoreError {
    StoreError::Unavailable("server is shutting down".into())
}

/// Validates one token for a create, expiring at `ttl` unless it has its own expiry, with
/// violations under `prefix`.
fn draft(
    token: &pb::Token,
    ttl: Option<ExpiryInput>,
    prefix: &str,
) -> Result<TokenDraft, Violations> {
    token_input(token, ttl)
        .to_draft()
        .map_err(|v| v.prefixed(prefix))
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let writes = call_writes(&self.writes, request.metadata())?;
        let request = request.into_inner();
        let token = required(request.token.as_ref(), "token")?;
        let now = unix_now();
        let mut violations = Violations::default();
        let ttl = violations
            .take(ttl_expiry(request.ttl_seconds, now))
            .flatten();
        let draft = violations.take(draft(token, ttl, "token."));
        let Some(draft) = draft.filter(|_| violations.is_empty()) else {
            return Err(violations.into());
        };
        let created = writes.create_token(draft, now).await?;
        Ok(answer_write(created, |token| pb::Token::from(&token)))
    }

    async fn get_token(
        &self,
        request: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
        let raw = request.into_inner().id;
        let token = existing_id(raw, "id")?
            .and_then(|id| self.store.get(id))
            .ok_or_else(|| token_not_found("id", raw))?;
        read.answer(pb::Token::from(&token)).await
    }

    async fn update_token(
        &self,
        request: Request<pb::UpdateTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let writes = call_writes(&self.writes, request.metadata())?;
        let request = request.into_inner();
        let token = required(request.token.as_ref(), "token")?;
        let mut violations = Violations::default();
        let id = violations.take(existing_id(token.id, "token.id"));
        let patch = violations.take(token_patch(token, request.update_mask.as_ref()));
        let (Some(id), Some(patch)) = (id, patch) else {
            return Err(violations.into());
        };
        let id = id.ok_or_else(|| token_not_found("token.id", token.id))?;
        let updated = writes
            .update_token(id, patch, unix_now())
            .await
            .map_err(|e| target_status(e, "token.id"))?;
        Ok(answer_write(updated, |token| pb::Token::from(&token)))
    }

    async fn delete_token(
        &self,
        request: Request<pb::DeleteTokenRequest>,
    ) -> Result<Response<pb::DeleteTokenResponse>, Status> {
        let writes = call_writes(&self.writes, request.metadata())?;
        let raw = request.into_inner().id;
        let id = existing_id(raw, "id")?.ok_or_else(|| token_not_found("id", raw))?;
        let deleted = writes
            .delete_token(id)
            .await
            .map_err(|e| target_status(e, "id"))?;
        Ok(answer_write(deleted, |_| pb::DeleteTokenResponse {}))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
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
        let response = pb::ListTokensResponse {
            tokens: page.tokens.iter().map(pb::Token::from).collect(),
            next_page_token,
            total_size: i64::try_from(total_size).unwrap_or(i64::MAX),
        };
        read.answer(response).await
    }

    async fn count_tokens(
        &self,
        request: Request<pb::CountTokensRequest>,
    ) -> Result<Response<pb::CountTokensResponse>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
        let filter = token_filter(request.into_inner().filter.as_ref())?;
        let count = self.store.count(&filter);
        read.answer(pb::CountTokensResponse { count }).await
    }

    async fn clear_tokens(
        &self,
        request: Request<pb::ClearTokensRequest>,
    ) -> Result<Response<pb::ClearTokensResponse>, Status> {
        // Dropping a million tokens and their trees is heavy work too.
        let writes = call_writes(&self.writes, request.metadata())?;
        let cleared = write_heavy(&self.heavy, call_deadline(request.metadata()), move || {
            Ok((Some(writes.clear_tokens()), ()))
        })
        .await?;
        let (cleared, ()) = cleared;
        let cleared = cleared.expect("a clear was appended");
        Ok(answer_write(cleared, |cleared| pb::ClearTokensResponse {
            cleared,
        }))
    }

    async fn batch_create_tokens(
        &self,
        request: Request<pb::BatchCreateTokensRequest>,
    ) -> Result<Response<pb::BatchCreateTokensResponse>, Status> {
        // More than `codec::MAX_BATCH` tokens never get here: the codec refuses them before
        // decoding.
        let metadata = request.metadata().clone();
        let writes = call_writes(&self.writes, &metadata)?;
        let request = request.into_inner();
        let (tokens, ttl_seconds) = (request.tokens, request.ttl_seconds);
        let (created, ()) = write_heavy(&self.heavy, call_deadline(&metadata), move || {
            let now = unix_now();
            let mut violations = Violations::default();
            let ttl = violations.take(ttl_expiry(ttl_seconds, now)).flatten();
            let mut drafts = Vec::with_capacity(tokens.len());
            for (i, token) in tokens.iter().enumerate() {
                match draft(token, ttl, &format!("tokens[{i}].")) {
                    Ok(d) => drafts.push(d),
                    Err(v) => violations.extend(v),
                }
            }
            let drafts = violations.into_result(drafts)?;
            Ok((Some(writes.batch_create(drafts, now)), ()))
        })
        .await?;
        let created = created.expect("a batch was appended");
        Ok(answer_write(created, |tokens| {
            pb::BatchCreateTokensResponse {
                tokens: tokens.iter().map(pb::Token::from).collect(),
            }
        }))
    }

    async fn import_tokens(
        &self,
        request: Request<Streaming<pb::ImportTokensRequest>>,
    ) -> Result<Response<pb::ImportTokensResponse>, Status> {
        // One deadline for the whole call, not one per message.
        let deadline = call_deadline(request.metadata());
        let writes = call_writes(&self.writes, request.metadata())?;
        let mut messages = request.into_inner();
        let mut report = ImportReport::default();
        // The commit sequence of the last committed message (without any, the state the
        // answer reflects).
        let mut last_sequence = self.store.sequence();
        let mut message_number = 0;
        let mut shutdown = self.shutdown.clone();
        // Each message commits on its own: a break later on leaves the earlier ones in place.
        loop {
            let next = tokio::select! {
                next = messages.message() => next.map_err(request_stream_status)?,
                () = shutdown.wait() => return Err(to_status(shutting_down())),
            };
            let Some(message) = next else { break };
            // Validation and apply of up to 10,000 tokens run as heavy work; the report
            // travels with them.
            let writes = writes.clone();
            let number = message_number;
            message_number += 1;
            // A bad ttl ends the call; the messages before it stay committed.
            let now = unix_now();
            let ttl = ttl_expiry(message.ttl_seconds, now)
                .map_err(|v| Status::from(v.prefixed(&format!("messages[{number}]."))))?;
            let (imported, (back, rejected)) = write_heavy(&self.heavy, deadline, move || {
                let (drafts, rejected) = report.validate(&message.tokens, ttl);
                let pending = (!drafts.is_empty()).then(|| writes.import(number, drafts, now));
                Ok((pending, (report, rejected)))
            })
            .await?;
            report = back;
            if let Some(imported) = &imported {
                last_sequence = imported.sequence;
            }
            report.record(rejected, imported.as_ref().map(|i| &i.value));
        }
        // The messages left batches and trees in the index; once the stream is done, rebuild
        // it into one tree per space in the background (the reply does not wait). At most one
        // such rebuild is pending: a stream of nothing, or many streams, start no more.
        if report.created() > 0 && !self.compaction_pending.swap(true, Ordering::AcqRel) {
            let index = Arc::clone(&self.index);
            let pending = Arc::clone(&self.compaction_pending);
            self.heavy.spawn(move || {
                pending.store(false, Ordering::Release);
                index.compact();
            });
        }
        Ok(with_commit_sequence(
            Response::new(report.into()),
            last_sequence,
        ))
    }

    async fn watch_tokens(
        &self,
        request: Request<pb::WatchTokensRequest>,
    ) -> Result<Response<BoxStream<pb::TokenEvent>>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
        let watch = WatchRequest::parse(request.get_ref())?;
        check_resumable(&self.history, watch.from_sequence)?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let sources = WatchSources {
            feed: Arc::clone(&self.feed),
            history: self.history.clone(),
            store: Arc::clone(&self.store),
        };
        start_watch(sources, watch, self.shutdown.clone(), sender);
        Ok(read.stamp(Response::new(Box::pin(ReceiverStream::new(receiver)))))
    }

    async fn stream_tokens(
        &self,
        request: Request<pb::StreamTokensRequest>,
    ) -> Result<Response<BoxStream<pb::Token>>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
        let filter = token_filter(request.into_inner().filter.as_ref())?;
        let (sender, receiver) = mpsc::channel(STREAM_CHUNK);
        let store = Arc::clone(&self.store);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // Page by page by id, like ListTokens, reading the live tables each time: a stalled
            // client pins no snapshot, so a clear or delete frees its tokens at once.
            let mut after = None;
            loop {
                let page = store.tables().page(&filter, after, STREAM_CHUNK);
                after = page.tokens.last().map(|t| t.id.get());
                // Every page waits for the writes it could have seen, like a unary read.
                if let Err(error) = store.read_barrier().await {
                    let _ = sender.send(Err(to_status(error))).await;
                    return;
                }
                for token in &page.tokens {
                    tokio::select! {
                        sent = sender.send(Ok(pb::Token::from(token))) => if sent.is_err() { return },
                        () = shutdown.wait() => {
                            let _ = sender.send(Err(to_status(shutting_down()))).await;
                            return;
                        }
                    }
                }
                if !page.more {
                    return;
                }
            }
        });
        Ok(read.stamp(Response::new(Box::pin(ReceiverStream::new(receiver)))))
    }
}
