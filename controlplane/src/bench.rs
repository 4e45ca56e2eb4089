//! `boxyard-controlplane bench`: placeholder replaced below.
use clap::Args;
#[derive(Args)]
pub struct BenchArgs {}
pub async fn run(_: BenchArgs) -> anyhow::Result<()> {
    Ok(())
}
