//! The tensor endpoints: `/submit_pseudograd`, `/global_params`, `/init_params`.
//!
//! An upload is streamed through the [`UploadReceiver`]: the frame header names the worker
//! (refused at once if unknown), then the tensors are validated as they arrive. The round's
//! first upload is stored into the accumulator piece by piece (nothing has to be undone if it
//! fails: its parameters have no contribution yet); every later one takes a staging buffer
//! (at most `limits.staged_uploads` at once; the others wait with their bytes in the kernel's
//! socket buffers) and is folded only when complete and valid.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use diloco_contract::api::{self, ErrorKind, ROUND_HEADER, TENSOR_CONTENT_TYPE, WIRE_FORMAT_QUERY};
use diloco_contract::wire::frame::PayloadFormat;

use super::api_error::ApiError;
use super::{App, audit_if_forbidden};
use crate::engine::{EngineError, Published, UploadTicket};
use crate::fold::StreamStore;
use crate::identity::Caller;
use crate::upload::{DataSink, Expectation, StagedUpload, UploadReceiver};

/// Most bytes read and discarded after a refused upload, so the client gets the error
/// response instead of a reset connection.
const DRAIN_LIMIT: u64 = 1 << 30;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The codec of a tensor response: the request's `wire_format` query parameter
/// ([`WIRE_FORMAT_QUERY`]), else the one `/info` announces (`training.wire_format`).
pub fn response_format(app: &App, uri: &Uri) -> Result<PayloadFormat, ApiError> {
    let requested = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == WIRE_FORMAT_QUERY);
    match requested {
        None => Ok(app.engine.config().training.wire_format),
        Some((_, name)) => PayloadFormat::parse(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown {WIRE_FORMAT_QUERY} {name:?}: safetensors or pickle"
            ))
        }),
    }
}

/// A response carrying the published parameters in `format`. θ is published as safetensors;
/// a pickle response carries the round's `torch.save` copy of the same bytes, written once.
pub async fn tensor_response(
    published: &Published,
    format: PayloadFormat,
) -> Result<Response, ApiError> {
    let body = match format {
        PayloadFormat::Safetensors => Body::from(published.encoded.clone()),
        PayloadFormat::Pickle => Body::from(
            published
                .torch_save()
                .await
                .map_err(|e| ApiError::internal(format!("encoding torch.save failed: {e}")))?,
        ),
    };
    Ok((
        [
            (header::CONTENT_TYPE, TENSOR_CONTENT_TYPE.to_string()),
            (
                header::HeaderName::from_static(ROUND_HEADER),
                published.round.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

pub async fn global_params(State(app): State<App>, uri: Uri) -> Result<Response, ApiError> {
    let format = response_format(&app, &uri)?;
    let published = app.engine.latest().await?;
    tensor_response(&published, format).await
}

pub async fn submit_fragment() -> ApiError {
    ApiError::bad_request(
        "fragment submissions are not supported yet: /info announces num_fragments_default 1; \
         use /submit_pseudograd",
    )
}

pub async fn submit_pseudograd(State(app): State<App>, request: Request) -> Response {
    let extensions = request.extensions().clone();
    let result = match response_format(&app, request.uri()) {
        Ok(format) => match submit(&app, request).await {
            Ok(published) => tensor_response(&published, format).await,
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    match result {
        Ok(response) => response,
        Err(error) => {
            app.engine
                .metrics()
                .reject(error.kind.map_or("other", ErrorKind::as_str));
            audit_if_forbidden(&app, &extensions, api::SUBMIT_PSEUDOGRAD, error).into_response()
        }
    }
}

async fn submit(app: &App, request: Request) -> Result<Arc<Published>, ApiError> {
    let (ticket, mut upload) = receive(app, request, None).await?;
    let mut ticket = ticket.ok_or_else(|| ApiError::internal("upload without a worker"))?;
    let round = loop {
        let coordinator = app.engine.clone();
        let (result, returned_ticket, returned_upload) = tokio::task::spawn_blocking(move || {
            let result = coordinator.complete_upload(&mut ticket, &upload);
            (result, ticket, upload)
        })
        .await
        .map_err(|e| ApiError::internal(format!("folding the upload failed: {e}")))?;
        (ticket, upload) = (returned_ticket, returned_upload);
        match result? {
            Some(round) => break round,
            // The round's first upload is still streaming into the accumulator.
            None => app.engine.stream_finished().await,
        }
    };
    // Frees the staging buffer for the next upload before waiting for the round.
    drop(upload);
    let engine = &app.engine;
    Ok(engine
        .await_round_after(round, engine.round_wait_timeout())
        .await?)
}

pub async fn init_params(State(app): State<App>, request: Request) -> Result<Response, ApiError> {
    if app.engine.is_initialized() {
        return Err(EngineError::AlreadyInitialized.into());
    }
    let format = response_format(&app, request.uri())?;
    let (_, upload) = receive(&app, request, Some(Expectation::InitialParameters)).await?;
    let coordinator = app.engine.clone();
    let published = tokio::task::spawn_blocking(move || coordinator.initialize(upload))
        .await
        .map_err(|e| ApiError::internal(format!("initialization failed: {e}")))??;
    tensor_response(&published, format).await
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

type Received = (Option<UploadTicket>, StagedUpload);

/// Streams an upload body through the receiver. With `expectation` set, no worker check is
/// made (initial parameters); otherwise the frame's worker must be allowed to upload, and the
/// data is stored into the accumulator as it arrives (the round's first upload) or staged.
async fn receive(
    app: &App,
    request: Request,
    expectation: Option<Expectation>,
) -> Result<Received, ApiError> {
    let engine = &app.engine;
    let limit = engine.config().limits.max_upload_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload exceeds limits.max_upload_bytes ({limit} bytes)"),
        )
        .kind(ErrorKind::TooLarge)
    };
    let declared = content_length(request.headers());
    // Absent on a listener without authentication (a cleartext bulk plane).
    let caller = request.extensions().get::<Caller>().cloned();
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    // A client that stops sending mid-body is dropped after this long without a byte, so it
    // cannot hold a receive buffer (or the round's streaming slot) forever.
    let stall = Duration::from_secs(engine.config().training.heartbeat_timeout_seconds.max(1));
    let mut body = request.into_body().into_data_stream();
    let with_expectation = expectation.is_some();
    let mut receiver = match expectation {
        Some(expectation) => UploadReceiver::new(expectation, limit),
        None => UploadReceiver::awaiting_expectation(limit),
    };
    let mut ticket: Option<UploadTicket> = None;
    let mut store: Option<StreamStore> = None;
    let mut received = 0u64;
    let outcome: Result<(), ApiError> = async {
        loop {
            let next = tokio::time::timeout(stall, body.next())
                .await
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "no upload data for {}s; the upload was dropped",
                        stall.as_secs()
                    ))
                    .kind(ErrorKind::Stalled)
                })?;
            let Some(chunk) = next else { break };
            let chunk: Bytes = chunk.map_err(|e| {
                ApiError::bad_request(format!("failed to read the upload: {e}"))
                    .kind(ErrorKind::Truncated)
            })?;
            received += chunk.len() as u64;
            if received > limit {
                return Err(too_large());
            }
            receiver.push(chunk)?;
            if ticket.is_none()
                && !with_expectation
                && let Some(frame) = receiver.frame()
            {
                let started = engine.begin_upload(frame, caller.as_ref())?;
                let sink = if started.streaming {
                    DataSink::Stream
                } else {
                    DataSink::Stage(engine.staging_buffer().await)
                };
                receiver.set_expectation(started.expectation.clone(), sink)?;
                ticket = Some(started);
            }
            if let Some(ticket) = ticket.as_ref().filter(|t| t.streaming) {
                let pieces = receiver.take_validated();
                if pieces.is_empty() {
                    continue;
                }
                if store.is_none()
                    && let Some((dtype, tensors)) = receiver.plan_so_far()
                {
                    store = Some(StreamStore::new(tensors.to_vec(), dtype));
                }
                if let Some(store) = store.as_mut() {
                    for (offset, bytes) in pieces {
                        engine.store_streamed(ticket, store, offset, &bytes)?;
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(error) = outcome {
        drop(ticket);
        let budget = declared
            .unwrap_or(DRAIN_LIMIT)
            .saturating_sub(received)
            .min(DRAIN_LIMIT);
        drain(&mut body, budget).await;
        return Err(error);
    }
    let upload = receiver.finish()?;
    Ok((ticket, upload))
}

/// Reads and discards up to `budget` more bytes of a refused body.
async fn drain(body: &mut axum::body::BodyDataStream, budget: u64) {
    let mut left = budget;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while left > 0 {
            match body.next().await {
                Some(Ok(chunk)) => left = left.saturating_sub(chunk.len() as u64),
                _ => break,
            }
        }
    })
    .await;
}
