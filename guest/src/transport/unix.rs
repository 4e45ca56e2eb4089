//! Local mode: sessions on a unix socket, any number at once (test and development only; no VM, no isolation).

use std::path::Path;

use boxyard_proto::session::server_handshake;
use tokio::net::{UnixListener, UnixStream};

/// Accepts connections and yields those that complete the handshake.
pub fn sessions(path: &Path) -> std::io::Result<impl futures::Stream<Item = std::io::Result<UnixStream>> + use<>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if server_handshake(&mut stream).await.is_ok() {
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}
