//! `boxyard`: the command-line tool of Boxyard (boxes, executions, a local stack).

mod admin;
mod dev;
mod profile;
mod term;

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use boxyard::attach::{Event, OutputStream};
use boxyard::{BoxState, Client, CreateBox, ExecRequest};
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
        #[command(flatten)]
        process: ProcessArgs,
        box_id: String,
        /// The command (after --).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List boxes.
    Ls,
    /// Show a box.
    Inspect { box_id: String },
    /// Delete boxes (running ones only with -f).
    Rm {
        /// Also delete running boxes.
        #[arg(short = 'f', long)]
        force: bool,
        box_ids: Vec<String>,
    },
    /// Replay an execution's output (everything it printed), to the end.
    Logs {
        box_id: String,
        exec_id: String,
        /// Start from this cursor.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Follow the output until the execution ends (default: print what exists now and exit).
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Create a box (it runs when this returns) and print its id.
    Create {
        snapshot: Option<String>,
        #[arg(long)]
        cpus: Option<i64>,
        /// Memory: 512 (MiB), 512M, 2G, 2GiB.
        #[arg(long, value_parser = parse_mib)]
        memory: Option<i64>,
        #[arg(short = 'e', long = "env", value_parser = parse_kv)]
        env: Vec<(String, String)>,
    },
    /// Start a stopped box.
    Start { box_id: String },
    /// Stop a box (its disk is kept).
    Stop { box_id: String },
    /// Attach to an execution's output (from a cursor), following it to the end.
    Attach {
        box_id: String,
        exec_id: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Copy a file or directory into a box (BOX:PATH as destination) or out of one (BOX:PATH as source).
    Cp { src: String, dest: String },
    /// Snapshots: build an image, push it, list, remove.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Administration: orgs, keys, quotas, runners, join tokens (`boxyard admin --help`).
    #[command(subcommand)]
    Admin(admin::AdminCmd),
    /// Shell completions: `boxyard completions bash > /etc/bash_completion.d/boxyard`.
    Completions { shell: clap_complete::Shell },
    /// The local stack: PostgreSQL, S3, control plane and a runner on this machine.
    #[command(subcommand)]
    Dev(DevCmd),
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Build an image from a directory or an OCI/docker-save archive (`--oci`); writes IMAGE and IMAGE.json
    /// (metadata: cmd, env, working_dir, user).
    Build {
        /// A directory (the root filesystem) or, with --oci, an image archive or layout.
        src: std::path::PathBuf,
        /// The image file to write.
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[arg(long)]
        oci: bool,
    },
    /// Register a snapshot and upload its image (metadata from IMAGE.json if present).
    Push {
        name: String,
        image: std::path::PathBuf,
        /// Publish to every org (platform admins).
        #[arg(long)]
        public: bool,
    },
    /// List the snapshots you can use.
    Ls,
    /// Delete a snapshot (by name or id).
    Rm { snapshot: String },
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

/// How a command runs: shared by `run` and `exec`.
#[derive(clap::Args)]
struct ProcessArgs {
    /// Keep stdin open and forward this terminal's input.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Run on a pseudo-terminal (this terminal in raw mode, window size changes forwarded).
    #[arg(short = 't', long)]
    tty: bool,
    /// Environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Working directory.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User (a name in the box, uid, or uid:gid).
    #[arg(short = 'u', long)]
    user: Option<String>,
}

impl ProcessArgs {
    /// The execution request for `command` with these settings.
    fn request(&self, command: Vec<String>) -> ExecRequest {
        ExecRequest {
            command,
            env: self.env.iter().cloned().collect::<BTreeMap<_, _>>(),
            working_dir: self.workdir.clone(),
            user: self.user.clone(),
            stdin: self.interactive,
            tty: self.tty.then(|| term::size().unwrap_or(boxyard::TtySize { rows: 24, cols: 80 })),
            ..Default::default()
        }
    }

    /// Starts `req` in the box and follows it on this terminal until it ends; returns the exit code to use.
    /// `announce`: print the execution id first (for `logs`/`attach` later) unless the terminal is taken over.
    async fn run(&self, c: &Client, box_id: &str, req: &ExecRequest, announce: bool) -> anyhow::Result<i32> {
        let x = c.exec(box_id, req).await?;
        if self.interactive || self.tty {
            return term::interactive(c.attach(box_id, x.id, 0), self.interactive, self.tty).await;
        }
        if announce {
            eprintln!("boxyard: execution {}", x.id);
        }
        stream(c, box_id, &x.id.to_string(), 0).await
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// Delete the box when the command ends.
    #[arg(long)]
    rm: bool,
    #[command(flatten)]
    process: ProcessArgs,
    #[arg(long)]
    cpus: Option<i64>,
    /// Memory: 512 (MiB), 512M, 2G, 2GiB.
    #[arg(long, value_parser = parse_mib)]
    memory: Option<i64>,
    /// The snapshot to boot.
    snapshot: String,
    /// The command (after --); empty: the snapshot's default.
    #[arg(last = true)]
    command: Vec<String>,
}

/// A memory size in MiB: a bare number is MiB; or a size with a unit (512M, 2G, 2GiB), as every tool spells it.
fn parse_mib(s: &str) -> Result<i64, String> {
    let mib = boxyard_api::size::parse_size_mib(s)?;
    i64::try_from(mib).map_err(|_| format!("{s:?} is too large"))
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
    term::interactive(c.attach(box_id, exec_id, from), false, false).await
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
            let req = r.process.request(r.command);
            let result = r.process.run(&c, &b.id.to_string(), &req, false).await;
            if r.rm {
                if let Err(e) = c.delete_box(&b.id).await {
                    eprintln!("boxyard: the box {} was not deleted: {e}", b.id);
                }
            } else {
                eprintln!("boxyard: box {}", b.id);
            }
            result
        }
        Cmd::Exec { process, box_id, command } => {
            let c = client(profile)?;
            process.run(&c, &box_id, &process.request(command), true).await
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
                        b.created_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    );
                }
            }
            Ok(0)
        }
        Cmd::Inspect { box_id } => {
            print_json(&client(profile)?.get_box(&box_id).await?);
            Ok(0)
        }
        Cmd::Rm { force, box_ids } => {
            let c = client(profile)?;
            for b in box_ids {
                if !force {
                    let info = c.get_box(&b).await?;
                    if matches!(info.state, BoxState::Running | BoxState::Starting | BoxState::Pending) {
                        anyhow::bail!("box {b} is {}: stop it first, or use rm -f", info.state);
                    }
                }
                c.delete_box(&b).await?;
                println!("{b}");
            }
            Ok(0)
        }
        Cmd::Logs { box_id, exec_id, from, follow } => {
            let c = client(profile)?;
            if follow {
                return stream(&c, &box_id, &exec_id, from).await;
            }
            let x = c.get_execution(&box_id, &exec_id).await?;
            if x.state != "running" {
                stream(&c, &box_id, &exec_id, from).await?;
                return Ok(0);
            }
            // Up to what exists now.
            let end = x.output_bytes as u64;
            let mut a = c.attach(&box_id, &exec_id, from);
            while a.cursor() < end {
                match a.next().await {
                    Some(Ok(Event::Output { stream: OutputStream::Stdout, data, .. })) => {
                        std::io::stdout().write_all(&data)?
                    }
                    Some(Ok(Event::Output { stream: OutputStream::Stderr, data, .. })) => {
                        std::io::stderr().write_all(&data)?
                    }
                    Some(Ok(_)) | None => break,
                    Some(Err(e)) => return Err(e.into()),
                }
            }
            Ok(0)
        }
        Cmd::Create { snapshot, cpus, memory, env } => {
            let c = client(profile)?;
            let b = c
                .create_box(&CreateBox {
                    snapshot,
                    vcpus: cpus,
                    memory_mib: memory,
                    env: env.into_iter().collect(),
                    ..Default::default()
                })
                .await?;
            if cli.json {
                print_json(&b);
            } else {
                println!("{}", b.id);
            }
            Ok(0)
        }
        Cmd::Start { box_id } => {
            let b = client(profile)?.start_box(&box_id).await?;
            println!("{} {}", b.id, b.state);
            Ok(0)
        }
        Cmd::Stop { box_id } => {
            let b = client(profile)?.stop_box(&box_id).await?;
            println!("{} {}", b.id, b.state);
            Ok(0)
        }
        Cmd::Attach { box_id, exec_id, from } => stream(&client(profile)?, &box_id, &exec_id, from).await,
        Cmd::Cp { src, dest } => cp(&client(profile)?, &src, &dest).await.map(|_| 0),
        Cmd::Snapshot(cmd) => snapshot(profile, cli.json, cmd).await,
        Cmd::Admin(cmd) => admin::run(&client(profile)?, cli.json, cmd).await.map(|_| 0),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "boxyard", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Dev(DevCmd::Up(a)) => dev::up(&a).await.map(|_| 0),
        Cmd::Dev(DevCmd::Down(a)) => dev::down(&a).await.map(|_| 0),
        Cmd::Dev(DevCmd::Status(a)) => Ok(if dev::status(&a).await? { 0 } else { 1 }),
    }
}

/// BOX:PATH → (box, path).
fn remote(s: &str) -> Option<(&str, &str)> {
    s.split_once(':').filter(|(b, p)| !b.is_empty() && p.starts_with('/'))
}

async fn cp(c: &Client, src: &str, dest: &str) -> anyhow::Result<()> {
    match (remote(src), remote(dest)) {
        (None, Some((b, dir))) => {
            let path = std::path::Path::new(src);
            let name = path.file_name().context("the source has no file name")?;
            let mut t = tar::Builder::new(Vec::new());
            t.follow_symlinks(false);
            if path.is_dir() {
                t.append_dir_all(name, path)?;
            } else {
                t.append_path_with_name(path, name)?;
            }
            let r = c.upload_tar(b, dir, t.into_inner()?).await?;
            eprintln!("copied {} bytes ({} entries) to {b}:{dir}", r.bytes, r.entries);
            Ok(())
        }
        (Some((b, path)), None) => {
            let data = c.download_tar(b, path).await?;
            let dest = std::path::Path::new(dest);
            std::fs::create_dir_all(dest)?;
            tar::Archive::new(data.as_ref())
                .unpack(dest)
                .with_context(|| format!("cannot unpack into {}", dest.display()))?;
            eprintln!("copied {b}:{path} into {}", dest.display());
            Ok(())
        }
        _ => anyhow::bail!("one side must be BOX:/absolute/path and the other a local path"),
    }
}

async fn snapshot(profile: Option<&str>, json: bool, cmd: SnapshotCmd) -> anyhow::Result<i32> {
    use boxyard_snapshot_build::{image, oci};
    match cmd {
        SnapshotCmd::Build { src, output, oci: is_oci } => {
            let meta = if is_oci {
                let work = tempfile::tempdir()?;
                let tree = work.path().join("tree");
                let meta = oci::import(&src, &tree, &work.path().join("scratch"))?;
                eprintln!("imported {} layers' result into a tree; building the image", src.display());
                image::build_from_dir(&tree, &output)?;
                meta
            } else {
                image::build_from_dir(&src, &output)?;
                image::Metadata::default()
            };
            let digest = boxyard_snapshot_build::digest_file(&output)?;
            std::fs::write(output.with_extension("json"), serde_json::to_vec_pretty(&meta)?)?;
            println!("{} {}", output.display(), digest);
            Ok(0)
        }
        SnapshotCmd::Push { name, image, public } => {
            let c = client(profile)?;
            let meta: boxyard::SnapshotMetadata = match std::fs::read(image.with_extension("json")) {
                Ok(b) => serde_json::from_slice(&b).context("the image's .json metadata is invalid")?,
                Err(_) => Default::default(),
            };
            let s = c.create_snapshot(&name, &meta, public).await?;
            let size = std::fs::metadata(&image)?.len();
            let bar = indicatif::ProgressBar::new(size);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                    .expect("valid template"),
            );
            bar.set_message(format!("pushing {name}"));
            let file = tokio::fs::File::open(&image).await?;
            let b2 = bar.clone();
            let stream = futures::StreamExt::map(tokio_util_reader(file), move |r| {
                if let Ok(chunk) = &r {
                    b2.inc(chunk.len() as u64);
                }
                r
            });
            let done = c.upload_snapshot_image(s.id, boxyard::Body::from_stream(stream)).await?;
            bar.finish_and_clear();
            if json {
                print_json(&done);
            } else {
                println!("{} {} {} {}", done.id, done.name, done.state, done.digest.unwrap_or_default());
            }
            Ok(0)
        }
        SnapshotCmd::Ls => {
            let all = client(profile)?.list_snapshots().await?;
            if json {
                print_json(&all);
            } else {
                println!("{:<38} {:<16} {:<10} {:>12}  DIGEST", "ID", "NAME", "STATE", "SIZE");
                for s in all {
                    println!(
                        "{:<38} {:<16} {:<10} {:>12}  {}",
                        s.id,
                        s.name,
                        s.state,
                        s.size_bytes.map(|b| b.to_string()).unwrap_or_default(),
                        s.digest.unwrap_or_default()
                    );
                }
            }
            Ok(0)
        }
        SnapshotCmd::Rm { snapshot } => {
            let c = client(profile)?;
            let id = match c
                .list_snapshots()
                .await?
                .into_iter()
                .find(|s| s.name == snapshot || s.id.to_string() == snapshot)
            {
                Some(s) => s.id,
                None => anyhow::bail!("not_found: no snapshot named {snapshot:?}"),
            };
            c.delete_snapshot(&id).await?;
            println!("{id}");
            Ok(0)
        }
    }
}

/// A file as a stream of chunks.
fn tokio_util_reader(file: tokio::fs::File) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> {
    futures::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
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
