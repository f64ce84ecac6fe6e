//! What a caller hands a [`Pool`](crate::Pool) and what it gets back.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};

/// One invocation, as a caller asks for it.
#[derive(Debug, Clone, Default)]
pub struct InvokeRequest {
    /// The event (JSON).
    pub payload: Bytes,
    /// Client context JSON, already base64-decoded; sent as `Lambda-Runtime-Client-Context`.
    pub client_context: Option<String>,
    /// Cognito identity JSON; sent as `Lambda-Runtime-Cognito-Identity`.
    pub cognito_identity: Option<String>,
    /// X-Ray trace header; one is made up when absent.
    pub trace_id: Option<String>,
}

/// The function failed: the caller sees `X-Amz-Function-Error: Unhandled` (Lambda never says
/// `Handled`, reference §1.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    /// The error type as Lambda recorded it: the runtime's (normalised) type, or a platform
    /// type such as `Sandbox.Timedout`, `Runtime.ExitError`, `Function.ResponseSizeTooLarge`.
    pub error_type: String,
}

impl FunctionError {
    /// The value of `X-Amz-Function-Error`.
    pub const UNHANDLED: &'static str = "Unhandled";

    pub(crate) fn new(error_type: impl Into<String>) -> Self {
        FunctionError {
            error_type: error_type.into(),
        }
    }
}

/// The result of a synchronous invoke, available as soon as the runtime has answered (or the
/// platform has failed the invoke). The log [`report`](InvokeResponse::report) follows when the
/// invoke is over (`END`/`REPORT` written).
#[derive(Debug)]
pub struct InvokeResponse {
    /// The invoke's request id.
    pub request_id: String,
    /// The response's content type: the runtime's, else `application/json`.
    pub content_type: String,
    /// Set when the function failed; then `body` is the error document.
    pub function_error: Option<FunctionError>,
    /// The response or error document.
    pub body: ResponseBody,
    /// Resolves when the invoke is over.
    pub report: ReportHandle,
}

/// A response body: whole, or streamed as the runtime sends it.
#[derive(Debug)]
pub enum ResponseBody {
    /// A buffered response (at most 6,291,556 bytes).
    Buffered(Bytes),
    /// A streamed response (`Lambda-Runtime-Function-Response-Mode: streaming`).
    Streaming(ResponseStream),
}

/// A streamed response failed mid-way: the runtime's error trailer, or the platform's error
/// (timeout, crash, size limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("streamed response failed with {error_type}")]
pub struct StreamError {
    /// Error type (trailer `Lambda-Runtime-Function-Error-Type`, normalised, or the platform's).
    pub error_type: String,
    /// Error document (trailer `Lambda-Runtime-Function-Error-Body`, base64-decoded).
    pub body: Bytes,
}

pub(crate) enum StreamItem {
    Chunk(Bytes),
    End(Result<(), StreamError>),
}

/// The chunks of a streamed response as they arrive; ends with `Err` if the stream failed.
pub struct ResponseStream {
    rx: mpsc::Receiver<StreamItem>,
    abort: oneshot::Receiver<StreamError>,
    done: bool,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// The sending side of a [`ResponseStream`].
pub(crate) struct StreamSender {
    pub(crate) chunks: mpsc::Sender<StreamItem>,
}

/// Lets the environment end a stream with a platform error (timeout, crash).
pub(crate) type StreamAbort = oneshot::Sender<StreamError>;

impl ResponseStream {
    pub(crate) fn channel() -> (StreamSender, StreamAbort, ResponseStream) {
        let (tx, rx) = mpsc::channel(16);
        let (abort_tx, abort_rx) = oneshot::channel();
        (
            StreamSender { chunks: tx },
            abort_tx,
            ResponseStream {
                rx,
                abort: abort_rx,
                done: false,
            },
        )
    }

    /// Reads the whole stream, up to `limit` bytes (more is an error of type
    /// `Function.ResponseSizeTooLarge`). Returns what arrived and how the stream ended.
    pub async fn collect_bytes(mut self, limit: usize) -> (Bytes, Result<(), StreamError>) {
        use futures_util::StreamExt;
        let mut buf = BytesMut::new();
        while let Some(item) = self.next().await {
            match item {
                Ok(chunk) => {
                    if buf.len() + chunk.len() > limit {
                        return (
                            buf.freeze(),
                            Err(StreamError {
                                error_type: "Function.ResponseSizeTooLarge".to_owned(),
                                body: Bytes::from(crate::wire::response_too_large_body(limit)),
                            }),
                        );
                    }
                    buf.extend_from_slice(&chunk);
                }
                Err(e) => return (buf.freeze(), Err(e)),
            }
        }
        (buf.freeze(), Ok(()))
    }
}

impl Stream for ResponseStream {
    type Item = Result<Bytes, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        // Chunks already sent are delivered first. A platform abort (timeout, crash) replaces
        // whatever error the runtime's broken upload ends with; a stream that had completed
        // stays complete.
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(StreamItem::Chunk(c))) => Poll::Ready(Some(Ok(c))),
            Poll::Ready(Some(StreamItem::End(Ok(())))) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(StreamItem::End(Err(e)))) => {
                self.done = true;
                Poll::Ready(Some(Err(self.take_abort().unwrap_or(e))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.take_abort().map(Err))
            }
            Poll::Pending => match Pin::new(&mut self.abort).poll(cx) {
                Poll::Ready(Ok(err)) => {
                    self.done = true;
                    Poll::Ready(Some(Err(err)))
                }
                _ => Poll::Pending,
            },
        }
    }
}

impl ResponseStream {
    fn take_abort(&mut self) -> Option<StreamError> {
        self.abort.try_recv().ok()
    }
}

/// How an invoke ended, as its `REPORT` line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeStatus {
    /// The runtime answered (a response, or an error it reported itself).
    Completed,
    /// The function ran past its timeout (`Status: timeout`).
    Timeout,
    /// The platform failed the invoke (`Status: error`, `Error Type: …`): the runtime exited,
    /// ran out of memory, or could not be started or initialised.
    Error(String),
}

/// What the `REPORT` line of an invoke says, and the log tail.
#[derive(Debug, Clone)]
pub struct InvokeReport {
    /// The invoke's request id.
    pub request_id: String,
    /// From `START` to the runtime's next `/next` (or the failure).
    pub duration: Duration,
    /// Duration plus, on a cold start, init; rounded up to the millisecond.
    pub billed_duration_ms: u64,
    /// Init time, on a cold start whose init succeeded in the init phase.
    pub init_duration: Option<Duration>,
    /// Peak memory of the environment (the configured size when it cannot be measured).
    pub max_memory_used_mb: u64,
    /// How it ended.
    pub status: InvokeStatus,
    /// The last 4 KB of the invoke's log, `START` to `REPORT` (what `X-Amz-Log-Result` holds,
    /// before base64).
    pub log_tail: Bytes,
}

/// Resolves to the [`InvokeReport`] once the invoke is over.
#[derive(Debug)]
pub struct ReportHandle(pub(crate) oneshot::Receiver<InvokeReport>);

impl ReportHandle {
    /// Waits for the report; `None` if the invoke was abandoned (the pool was dropped).
    pub async fn wait(self) -> Option<InvokeReport> {
        self.0.await.ok()
    }
}

/// Why an invoke was not run at all. Function failures are not errors: they are
/// [`InvokeResponse`]s with a [`FunctionError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// Every environment is busy and the queue is full (`TooManyRequestsException`, 429).
    #[error("too many requests: all {concurrency} environments are busy and {queued} invokes are queued")]
    TooManyRequests {
        /// The pool's concurrency.
        concurrency: usize,
        /// The queue's capacity.
        queued: usize,
    },
    /// The payload is over the limit of its invocation type (`RequestTooLargeException`, 413).
    #[error("payload of {size} bytes is over the {limit}-byte limit")]
    RequestTooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The platform could not start an environment (`ServiceException`, 500).
    #[error("cannot start an execution environment: {0}")]
    Sandbox(String),
    /// The pool is shutting down.
    #[error("the function is shutting down")]
    ShuttingDown,
}
