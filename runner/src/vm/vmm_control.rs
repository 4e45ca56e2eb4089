//! A client of `boxyard-vmm`'s control socket (`run_dir/ctl.sock`; protocol in docs/vmm.md, "Control socket"):
//! one JSON request line, one JSON answer line, within a deadline.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::VmError;

/// The deadline of one request (a pause waits up to 2 s for the vCPUs inside the VMM).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `{"op": op}` to the control socket at `path` and returns the answer's fields, or the VMM's error.
pub async fn request(path: &Path, op: &str, timeout: Duration) -> Result<Value, VmError> {
    let work = async {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| VmError::Control(format!("connecting to the VMM's control socket {}: {e}", path.display())))?;
        let (r, mut w) = stream.into_split();
        w.write_all(format!("{{\"op\":\"{op}\"}}\n").as_bytes()).await?;
        let mut line = String::new();
        let mut reader = BufReader::new(r);
        if reader.read_line(&mut line).await? == 0 {
            return Err(VmError::Control(format!("the VMM closed its control socket before answering {op}")));
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| VmError::Control(format!("bad answer to {op} from the VMM ({e}): {line:?}")))?;
        if v["ok"] == Value::Bool(true) {
            Ok(v)
        } else {
            let code = v["error"]["code"].as_str().unwrap_or("unknown");
            let msg = v["error"]["message"].as_str().unwrap_or("no message");
            Err(VmError::Control(format!("the VMM refused {op} ({code}): {msg}")))
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| VmError::Control(format!("the VMM did not answer {op} within {} s", timeout.as_secs())))?
}

/// The counters of a `metrics` answer, by name.
pub fn counters(answer: &Value) -> Vec<(String, u64)> {
    answer["metrics"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot fake VMM that answers every line with `answer`.
    async fn fake_vmm(
        answer: &'static str,
    ) -> (tempfile::TempDir, std::path::PathBuf, tokio::task::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let h = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut line = String::new();
            BufReader::new(r).read_line(&mut line).await.unwrap();
            w.write_all(answer.as_bytes()).await.unwrap();
            line
        });
        (dir, path, h)
    }

    #[tokio::test]
    async fn a_request_is_one_line_and_the_answer_is_parsed() {
        let (_d, path, h) = fake_vmm("{\"ok\":true,\"state\":\"paused\"}\n").await;
        let v = request(&path, "pause", REQUEST_TIMEOUT).await.unwrap();
        assert_eq!(v["state"], "paused");
        assert_eq!(h.await.unwrap(), "{\"op\":\"pause\"}\n");
    }

    #[tokio::test]
    async fn a_refusal_names_the_code_and_the_message() {
        let (_d, path, _h) =
            fake_vmm("{\"ok\":false,\"error\":{\"code\":\"invalid_state\",\"message\":\"the VM is stopping\"}}\n")
                .await;
        let e = request(&path, "pause", REQUEST_TIMEOUT).await.unwrap_err().to_string();
        assert!(e.contains("invalid_state") && e.contains("the VM is stopping"), "{e}");
    }

    #[tokio::test]
    async fn a_silent_vmm_hits_the_deadline_and_a_missing_one_says_so() {
        let (_d, path, _h) = fake_vmm("").await;
        let e = request(&path, "status", Duration::from_millis(200)).await.unwrap_err().to_string();
        assert!(e.contains("closed") || e.contains("within"), "{e}");
        let e = request(Path::new("/nonexistent/ctl.sock"), "status", REQUEST_TIMEOUT).await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ctl.sock"), "{e}");
    }

    #[test]
    fn counters_come_from_the_metrics_object() {
        let v: Value = serde_json::from_str(r#"{"ok":true,"metrics":{"exits_io":5,"pauses":1}}"#).unwrap();
        let mut c = counters(&v);
        c.sort();
        assert_eq!(c, vec![("exits_io".to_string(), 5), ("pauses".to_string(), 1)]);
        assert!(counters(&serde_json::json!({"ok": true})).is_empty());
    }
}
