//! A minimal QMP (QEMU Machine Protocol) client: JSON lines over the VM's control socket.
//!
//! Only what the backend needs: the capabilities handshake and single commands with their replies (asynchronous
//! events in between are skipped).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::super::VmError;

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, VmError> {
        let work = async {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|e| VmError::Control(format!("connect {}: {e}", path.display())))?;
            let (r, w) = stream.into_split();
            let mut qmp = Qmp { reader: BufReader::new(r), writer: w };
            let greeting = qmp.read_message().await?;
            if greeting.get("QMP").is_none() {
                return Err(VmError::Control(format!("unexpected QMP greeting: {greeting}")));
            }
            qmp.execute("qmp_capabilities", None).await?;
            Ok(qmp)
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| VmError::Control("QMP did not answer in time".into()))?
    }

    async fn read_message(&mut self) -> Result<Value, VmError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(VmError::Control("QMP connection closed".into()));
        }
        serde_json::from_str(&line).map_err(|e| VmError::Control(format!("bad QMP message {line:?}: {e}")))
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, VmError> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        loop {
            let reply = self.read_message().await?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                return Err(VmError::Control(format!("QMP {command} failed: {e}")));
            }
            // An asynchronous event: not ours.
        }
    }
}
