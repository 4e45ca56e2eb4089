//! The agent's gRPC service: maps the API of `boxyard.agent.v1` onto the execution table and the file transfer.

use std::pin::Pin;
use std::sync::Arc;

use boxyard_proto::agent::agent_server::Agent;
use boxyard_proto::agent::{
    DownloadChunk, DownloadRequest, ExecRequest, ExecResponse, ExecResult, ListExecsRequest, ListExecsResponse,
    OutputChunk, OutputEvent, OutputRequest, PingRequest, PingResponse, ReleaseRequest, ReleaseResponse, ResizeRequest,
    ResizeResponse, ShutdownRequest, ShutdownResponse, SignalRequest, SignalResponse, UploadChunk, UploadResponse,
    WaitRequest, WriteStdinRequest, WriteStdinResponse, output_event, output_request,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::boot::BootInfo;
use crate::exec::output::ReadError;
use crate::exec::{ExecError, ExecTable};
use crate::files::{self, FileError};

/// Largest amount of output sent per read of the ring.
const OUTPUT_BATCH: usize = 256 * 1024;

/// What Shutdown does: power the VM off, or (local mode) end the process.
pub type ShutdownHook = Arc<dyn Fn() + Send + Sync>;

pub struct AgentService {
    pub table: Arc<ExecTable>,
    pub boot: Arc<BootInfo>,
    pub shutdown: ShutdownHook,
}

impl From<ExecError> for Status {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::InvalidArgument(m) => Status::invalid_argument(m),
            ExecError::NotFound(_) => Status::not_found(e.to_string()),
            ExecError::AlreadyExists(_) => Status::already_exists(e.to_string()),
            ExecError::FailedPrecondition(m) => Status::failed_precondition(m),
            ExecError::Io(err) => Status::internal(format!("agent I/O error: {err}")),
        }
    }
}

impl From<FileError> for Status {
    fn from(e: FileError) -> Self {
        match e {
            FileError::InvalidArgument(m) => Status::invalid_argument(m),
            FileError::NotFound(m) => Status::not_found(m),
            FileError::Io(err) => Status::internal(format!("file transfer failed: {err}")),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(self.boot.ping()))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let exec = self.table.start(req.into_inner())?;
        Ok(Response::new(ExecResponse { exec_id: exec.id.clone() }))
    }

    type OutputStream = BoxStream<OutputEvent>;

    async fn output(&self, req: Request<Streaming<OutputRequest>>) -> Result<Response<Self::OutputStream>, Status> {
        let mut inbound = req.into_inner();
        let start = match inbound.message().await? {
            Some(OutputRequest { msg: Some(output_request::Msg::Start(s)) }) => s,
            _ => return Err(Status::invalid_argument("the first Output message must be `start`")),
        };
        let exec = self.table.get(&start.exec_id)?;
        exec.output.read(start.from_cursor, 0).map_err(|e| match e {
            ReadError::Released { .. } | ReadError::Beyond { .. } => Status::out_of_range(e.to_string()),
        })?;

        // Acknowledgements arrive on the inbound half for as long as the client keeps the call open.
        let acks = exec.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if let Some(output_request::Msg::Ack(cursor)) = msg.msg {
                    acks.output.ack(cursor);
                }
            }
        });

        let (tx, rx) = mpsc::channel::<Result<OutputEvent, Status>>(16);
        tokio::spawn(async move {
            let mut cursor = start.from_cursor;
            let mut changes = exec.output.subscribe();
            loop {
                changes.borrow_and_update();
                let chunks = match exec.output.read(cursor, OUTPUT_BATCH) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(Status::out_of_range(e.to_string()))).await;
                        return;
                    }
                };
                if !chunks.is_empty() {
                    for c in chunks {
                        cursor = c.cursor + c.data.len() as u64;
                        let ev = OutputEvent {
                            event: Some(output_event::Event::Chunk(OutputChunk {
                                stream: c.stream as i32,
                                cursor: c.cursor,
                                data: c.data,
                            })),
                        };
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                let pos = exec.output.position();
                if pos.closed && cursor == pos.end {
                    let result = exec.result().expect("the result is set before the output closes");
                    let _ = tx.send(Ok(OutputEvent { event: Some(output_event::Event::Exit(result)) })).await;
                    return;
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn write_stdin(&self, req: Request<WriteStdinRequest>) -> Result<Response<WriteStdinResponse>, Status> {
        let r = req.into_inner();
        let exec = self.table.get(&r.exec_id)?;
        let offset = exec.write_stdin(r.offset, &r.data, r.eof).await?;
        Ok(Response::new(WriteStdinResponse { offset }))
    }

    async fn signal(&self, req: Request<SignalRequest>) -> Result<Response<SignalResponse>, Status> {
        let r = req.into_inner();
        self.table.get(&r.exec_id)?.signal(&r.signal)?;
        Ok(Response::new(SignalResponse {}))
    }

    async fn resize(&self, req: Request<ResizeRequest>) -> Result<Response<ResizeResponse>, Status> {
        let r = req.into_inner();
        let tty = r.tty.ok_or_else(|| Status::invalid_argument("resize needs a tty size (rows, cols)"))?;
        let rows = u16::try_from(tty.rows).map_err(|_| Status::invalid_argument("rows out of range"))?;
        let cols = u16::try_from(tty.cols).map_err(|_| Status::invalid_argument("cols out of range"))?;
        self.table.get(&r.exec_id)?.resize(rows, cols)?;
        Ok(Response::new(ResizeResponse {}))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<ExecResult>, Status> {
        let exec = self.table.get(&req.into_inner().exec_id)?;
        Ok(Response::new(exec.wait().await))
    }

    async fn list_execs(&self, _: Request<ListExecsRequest>) -> Result<Response<ListExecsResponse>, Status> {
        Ok(Response::new(ListExecsResponse { execs: self.table.list().iter().map(|e| e.info()).collect() }))
    }

    async fn release(&self, req: Request<ReleaseRequest>) -> Result<Response<ReleaseResponse>, Status> {
        self.table.release(&req.into_inner().exec_id)?;
        Ok(Response::new(ReleaseResponse {}))
    }

    async fn upload_files(&self, req: Request<Streaming<UploadChunk>>) -> Result<Response<UploadResponse>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload: the first chunk must name dest_dir"))?;
        let dest = files::upload_dest(&first.dest_dir)?;
        let (tx, done) = files::start_unpack(dest);
        let feed = async {
            let tx = tx;
            if !first.data.is_empty() && tx.send(first.data).await.is_err() {
                return Ok(());
            }
            while let Some(chunk) = inbound.message().await? {
                if tx.send(chunk.data).await.is_err() {
                    // The unpacker stopped early (bad archive): its error is reported below.
                    break;
                }
            }
            Ok::<_, Status>(())
        };
        let fed = feed.await;
        let (bytes, entries) = done.await.map_err(|e| Status::internal(format!("upload task failed: {e}")))??;
        fed?;
        Ok(Response::new(UploadResponse { bytes, entries }))
    }

    type DownloadFilesStream = BoxStream<DownloadChunk>;

    async fn download_files(
        &self,
        req: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadFilesStream>, Status> {
        let rx = files::start_pack(&req.into_inner().path)?;
        let stream = futures::StreamExt::map(ReceiverStream::new(rx), |r| {
            r.map(|data| DownloadChunk { data }).map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn shutdown(&self, _: Request<ShutdownRequest>) -> Result<Response<ShutdownResponse>, Status> {
        let hook = self.shutdown.clone();
        // Answer first; power off a moment later.
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            hook();
        });
        Ok(Response::new(ShutdownResponse {}))
    }
}
