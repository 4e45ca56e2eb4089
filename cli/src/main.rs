//! `boxyard`: the command-line tool of Boxyard (boxes, executions, a local stack).

mod dev;
mod profile;

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use boxyard::attach::{Event, OutputStream};
use boxyard::{Client, CreateBox, ExecRequest};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "boxyard", version, about = "Run untrusted code in microVM boxes", long_about = None)]
struct Cli {
    /// Profile from `boxyard login` (default: the last one logged in). BOXYARD_URL + BOXYARD_KEY override profiles.
    #[arg(long, global = true, env = "BOXYARD_PROFILE")]
    profile: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Save an API URL and key as a profile (checked against the API first).
    Login {
        #[arg(long)]
        url: String,
        #[arg(long, env = "BOXYARD_KEY", hide_env_values = true)]
        key: String,
        /// Profile name.
        #[arg(long = "name", default_value = "default")]
        name: String,
    },
    /// Create a box from a snapshot, run a command in it, stream its output; exit with its exit code.
    Run(RunArgs),
    /// Run a command in an existing box and stream its output.
    Exec {
        box_id: String,
        #[arg(short = 'e', long = "env", value_parser = parse_kv)]
        env: Vec<(String, String)>,
        #[arg(short = 'w', long)]
        workdir: Option<String>,
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List boxes.
    Ls,
    /// Show a box.
    Inspect { box_id: String },
    /// Delete boxes.
    Rm { box_ids: Vec<String> },
    /// Replay an execution's output (everything it printed), to the end.
    Logs {
        box_id: String,
        exec_id: String,
        /// Start from this cursor.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// The local stack: PostgreSQL, S3, control plane and a runner on this machine.
    #[command(subcommand)]
    Dev(DevCmd),
}

#[derive(Subcommand)]
enum DevCmd {
    /// Start everything (idempotent), push the `base` snapshot, make `dev` the default profile.
    Up(dev::DevArgs),
    /// Stop everything (boxes included); data is kept.
    Down(dev::DevArgs),
    /// Show what runs.
    Status(dev::DevArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Delete the box when the command ends.
    #[arg(long)]
    rm: bool,
    /// Environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Working directory.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User (a name in the box, uid, or uid:gid).
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(long)]
    cpus: Option<i64>,
    /// Memory in MiB.
    #[arg(long)]
    memory: Option<i64>,
    /// The snapshot to boot.
    snapshot: String,
    /// The command (after --); empty: the snapshot's default.
    #[arg(last = true)]
    command: Vec<String>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn client(profile: Option<&str>) -> anyhow::Result<Client> {
    let p = profile::resolve(profile)?;
    Ok(Client::new(p.url, p.key)?)
}

/// Streams an execution's output to stdout/stderr; returns the process exit status to use.
async fn stream(c: &Client, box_id: &str, exec_id: &str, from: u64) -> anyhow::Result<i32> {
    let mut a = c.attach(box_id, exec_id, from);
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(ev) = a.next().await {
        match ev? {
            Event::Output { stream: OutputStream::Stdout, data, .. } => {
                out.write_all(&data)?;
                out.flush()?;
            }
            Event::Output { stream: OutputStream::Stderr, data, .. } => {
                err.write_all(&data)?;
                err.flush()?;
            }
            Event::Gap { from, to } => eprintln!("boxyard: [{} bytes of output were dropped by retention]", to - from),
            Event::Exit(x) => {
                if let Some(e) = &x.error {
                    eprintln!("boxyard: {e}");
                }
                return Ok(match (x.exit_code, x.signal.as_deref()) {
                    (Some(c), _) => c,
                    (None, Some(_)) => 128 + 9,
                    _ => 125,
                });
            }
        }
    }
    anyhow::bail!("the output ended without an exit status")
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

async fn main_inner(cli: Cli) -> anyhow::Result<i32> {
    let profile = cli.profile.as_deref();
    match cli.cmd {
        Cmd::Login { url, key, name } => {
            let c = Client::new(&url, &key)?;
            let me = c.me().await.context("the key was refused")?;
            let mut all = profile::Profiles::load()?;
            all.put(&name, profile::Profile { url, key });
            all.save()?;
            eprintln!("logged in to org {} as a {} (profile {name:?})", me.org_name, me.role);
            Ok(0)
        }
        Cmd::Run(r) => {
            let c = client(profile)?;
            let b = c
                .create_box(&CreateBox {
                    snapshot: Some(r.snapshot),
                    vcpus: r.cpus,
                    memory_mib: r.memory,
                    ..Default::default()
                })
                .await?;
            let req = ExecRequest {
                command: r.command,
                env: r.env.into_iter().collect::<BTreeMap<_, _>>(),
                working_dir: r.workdir,
                user: r.user,
                ..Default::default()
            };
            let result = async {
                let x = c.exec(&b.id, &req).await?;
                stream(&c, &b.id, &x.id, 0).await
            }
            .await;
            if r.rm {
                if let Err(e) = c.delete_box(&b.id).await {
                    eprintln!("boxyard: the box {} was not deleted: {e}", b.id);
                }
            } else {
                eprintln!("boxyard: box {}", b.id);
            }
            result
        }
        Cmd::Exec { box_id, env, workdir, user, command } => {
            let c = client(profile)?;
            let req = ExecRequest {
                command,
                env: env.into_iter().collect(),
                working_dir: workdir,
                user,
                ..Default::default()
            };
            let x = c.exec(&box_id, &req).await?;
            eprintln!("boxyard: execution {}", x.id);
            stream(&c, &box_id, &x.id, 0).await
        }
        Cmd::Ls => {
            let c = client(profile)?;
            let mut all = Vec::new();
            let mut cursor = None;
            loop {
                let p = c.list_boxes(cursor.as_deref()).await?;
                all.extend(p.items);
                match p.next_cursor {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            if cli.json {
                print_json(&all);
            } else {
                println!("{:<38} {:<10} {:<12} {:>5} {:>7}  CREATED", "ID", "STATE", "SNAPSHOT", "CPUS", "MEMORY");
                for b in all {
                    println!(
                        "{:<38} {:<10} {:<12} {:>5} {:>6}M  {}",
                        b.id,
                        b.state,
                        b.snapshot.as_deref().unwrap_or("-"),
                        b.vcpus,
                        b.memory_mib,
                        b.created_at
                    );
                }
            }
            Ok(0)
        }
        Cmd::Inspect { box_id } => {
            print_json(&client(profile)?.get_box(&box_id).await?);
            Ok(0)
        }
        Cmd::Rm { box_ids } => {
            let c = client(profile)?;
            for b in box_ids {
                c.delete_box(&b).await?;
                println!("{b}");
            }
            Ok(0)
        }
        Cmd::Logs { box_id, exec_id, from } => stream(&client(profile)?, &box_id, &exec_id, from).await,
        Cmd::Dev(DevCmd::Up(a)) => dev::up(&a).await.map(|_| 0),
        Cmd::Dev(DevCmd::Down(a)) => dev::down(&a).await.map(|_| 0),
        Cmd::Dev(DevCmd::Status(a)) => Ok(if dev::status(&a).await? { 0 } else { 1 }),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match main_inner(cli).await {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            // API errors print their code and message on one line.
            match e.downcast_ref::<boxyard::Error>() {
                Some(boxyard::Error::Api { code, message, .. }) => eprintln!("boxyard: error: {code}: {message}"),
                _ => eprintln!("boxyard: error: {e:#}"),
            }
            std::process::ExitCode::from(125)
        }
    }
}
