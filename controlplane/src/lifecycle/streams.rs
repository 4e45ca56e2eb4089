//! The streams the gateway bridges to a box's runner: attach (output from a cursor, input with offsets) and files
//! (tar upload and download). Opening each one has a deadline: a runner that does not answer in time is
//! `503 runner_unavailable`, never a request that hangs. Once open, the stream itself is as long as its content.

use boxyard_proto::runner as pb;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::executions::runner_of;
use crate::error::{ApiError, ApiResult};
use crate::machine::BoxState;
use crate::runners::{deadline_missed, within};
use crate::state::AppState;
use crate::store::boxes::BoxRow;
use crate::store::executions::ExecRow;

/// An attach opened on the runner: its events, the sender of client input, and where stdin stands (when the
/// runner can tell).
pub struct OpenAttach {
    /// Runner events (`attached` already consumed).
    pub events: Streaming<pb::AttachEvent>,
    /// Requests to the runner (input, resize, signal).
    pub input: mpsc::Sender<pb::AttachRequest>,
    /// Bytes of stdin the process has received.
    pub stdin_offset: Option<u64>,
}

fn cursor_error(s: tonic::Status) -> ApiError {
    if s.code() == tonic::Code::OutOfRange {
        ApiError::bad_request("invalid_cursor", s.message().to_string())
    } else {
        s.into()
    }
}

/// Opens an attach to execution `x` of box `b` from `cursor`. The box's output is on its runner, so it may be
/// running, stopping or stopped (replay of a finished execution), not elsewhere.
pub async fn open_attach(st: &AppState, b: &BoxRow, x: &ExecRow, cursor: u64) -> ApiResult<OpenAttach> {
    let runner = match (b.runner_id, b.state) {
        (Some(r), BoxState::Running | BoxState::Stopping | BoxState::Stopped) => r,
        (_, s) => {
            return Err(ApiError::conflict(
                "box_not_running",
                format!("box {} is {s}; its output is on a runner that cannot be reached", b.id),
            ));
        }
    };
    let (_, mut client) = st.runners.for_runner(&st.db, runner).await?;
    let (tx, rx) = mpsc::channel::<pb::AttachRequest>(16);
    let start = pb::AttachRequest {
        msg: Some(pb::attach_request::Msg::Start(pb::AttachStart {
            execution_id: x.id.to_string(),
            from_cursor: cursor,
        })),
    };
    tx.try_send(start).map_err(|_| ApiError::internal("a new attach channel refused its first message"))?;
    let timeout = st.config.runner_call_timeout;
    let open = async {
        let mut events = client.attach(ReceiverStream::new(rx)).await.map_err(cursor_error)?.into_inner();
        // The runner answers `attached` first, or an error (bad cursor, unknown execution).
        // For an execution with stdin, `attached` says where stdin stands (when the runner could tell).
        match events.message().await.map_err(cursor_error)? {
            Some(pb::AttachEvent { event: Some(pb::attach_event::Event::Attached(a)) }) => {
                Ok(OpenAttach { events, input: tx, stdin_offset: a.stdin_offset })
            }
            other => Err(ApiError::internal(format!("the runner opened the attach with {other:?}"))),
        }
    };
    tokio::time::timeout(timeout, open).await.map_err(|_| deadline_missed(timeout))?
}

/// Streams a tar archive into directory `dest` of running box `b`. Returns (bytes, entries) unpacked.
///
/// An upload lasts as long as the client sends, so its deadline is on the runner's progress: the runner must take
/// each chunk, and answer after the last, within the call deadline. Time spent waiting for the client's next chunk
/// does not count.
pub async fn upload(
    st: &AppState,
    b: &BoxRow,
    dest: String,
    data: impl Stream<Item = Vec<u8>> + Send + Unpin + 'static,
) -> ApiResult<(u64, u64)> {
    use futures::StreamExt;
    let runner = runner_of(b)?;
    let (_, mut c) = st.runners.for_runner(&st.db, runner).await?;
    let box_id = b.id.to_string();
    let mut first = true;
    let progress = Progress::default();
    let watched = Watched { inner: data, progress: progress.clone() };
    let chunks = watched.map(move |data| {
        let (box_id, dest_dir) =
            if std::mem::take(&mut first) { (box_id.clone(), dest.clone()) } else { Default::default() };
        pb::UploadChunk { box_id, dest_dir, data }
    });
    let timeout = st.config.runner_call_timeout;
    let call = c.upload_files(chunks);
    tokio::pin!(call);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    let r = loop {
        tokio::select! {
            r = &mut call => break r?.into_inner(),
            _ = tick.tick() => {
                if progress.stalled_for() > timeout {
                    return Err(deadline_missed(timeout));
                }
            }
        }
    };
    super::touch(st, b.id).await?;
    Ok((r.bytes, r.entries))
}

/// When the runner side of a streamed request last made progress.
#[derive(Clone, Default)]
struct Progress(std::sync::Arc<std::sync::Mutex<ProgressState>>);

#[derive(Default)]
struct ProgressState {
    /// Last time the transport asked for a chunk.
    polled: Option<std::time::Instant>,
    /// The client has not sent the next chunk yet (waiting on it does not count).
    waiting_on_client: bool,
}

impl Progress {
    fn stalled_for(&self) -> std::time::Duration {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match (s.waiting_on_client, s.polled) {
            (false, Some(t)) => t.elapsed(),
            _ => std::time::Duration::ZERO,
        }
    }
}

/// A request stream that records when the transport polls it.
struct Watched<S> {
    inner: S,
    progress: Progress,
}

impl<S: Stream<Item = Vec<u8>> + Unpin> Stream for Watched<S> {
    type Item = Vec<u8>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Vec<u8>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        let mut s = self.progress.0.lock().unwrap_or_else(|p| p.into_inner());
        s.polled = Some(std::time::Instant::now());
        s.waiting_on_client = r.is_pending();
        r
    }
}

/// Opens a tar stream of `path` in running box `b`: its first chunk (or none, for an empty archive) and the rest.
pub async fn download(
    st: &AppState,
    b: &BoxRow,
    path: String,
) -> ApiResult<(Option<pb::DownloadChunk>, Streaming<pb::DownloadChunk>)> {
    let runner = runner_of(b)?;
    let (_, mut c) = st.runners.for_runner(&st.db, runner).await?;
    let timeout = st.config.runner_call_timeout;
    let mut stream = within(timeout, c.download_files(pb::DownloadRequest { box_id: b.id.to_string(), path })).await?;
    // The first chunk decides between an HTTP error and a 200.
    let first = tokio::time::timeout(timeout, stream.message()).await.map_err(|_| deadline_missed(timeout))??;
    super::touch(st, b.id).await?;
    Ok((first, stream))
}
