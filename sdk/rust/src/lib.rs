//! Boxyard's Rust SDK: a typed async client of the REST API (boxes, executions, files, snapshots, administration)
//! and WebSocket attaches that resume from their last cursor when the connection drops, so a caller never sees lost
//! or duplicated output.
//!
//! The request and response types are those of the API contract crate `boxyard-api`, shared with the control
//! plane (re-exported here, see [`types`]); nothing of the HTTP client the SDK uses appears in its interface.
//!
//! ```no_run
//! # async fn demo() -> boxyard::Result<()> {
//! use boxyard::{Client, CreateBox, ExecRequest};
//!
//! let client = Client::new("http://127.0.0.1:8080", std::env::var("BOXYARD_KEY").unwrap())?;
//! let b = client.create_box(&CreateBox { snapshot: Some("base".into()), ..Default::default() }).await?;
//! let out = client.run(&b.id, &ExecRequest::new(["sh", "-c", "echo hello; echo oops >&2; exit 3"])).await?;
//! assert_eq!(out.stdout, b"hello\n");
//! assert_eq!(out.exit.exit_code, Some(3));
//! client.delete_box(&b.id).await?;
//! # Ok(()) }
//! ```
//!
//! Streaming output as it comes, resuming across cuts:
//!
//! ```no_run
//! # async fn demo(client: boxyard::Client, box_id: &str, exec_id: &str) -> boxyard::Result<()> {
//! use boxyard::attach::Event;
//! let mut attach = client.attach(box_id, exec_id, 0);
//! while let Some(event) = attach.next().await {
//!     match event? {
//!         Event::Output { data, .. } => print!("{}", String::from_utf8_lossy(&data)),
//!         Event::Gap { from, to } => eprintln!("[{} bytes dropped by retention]", to - from),
//!         Event::Exit(exit) => eprintln!("exit: {:?}", exit.exit_code),
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod attach;
mod body;
mod client;
mod error;
pub mod types;

pub use body::Body;
pub use client::Client;
pub use error::{Error, Result};
pub use types::*;
