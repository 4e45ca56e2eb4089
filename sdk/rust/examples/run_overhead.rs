//! The Rust SDK's `run(["true"])` round trip on an existing box: the baseline the Python SDK's benchmark
//! (sdk/python/bench/) compares itself with, on the same box in the same run.
//!
//! `cargo run --release -p boxyard-sdk --example run_overhead -- URL KEY BOX_ID [N]` prints one JSON object:
//! `{"n": N, "median_ms": ..., "p90_ms": ..., "min_ms": ..., "samples_ms": [...]}` (N runs after 3 warm-up runs;
//! default 50).

use std::time::Instant;

use boxyard::{Client, ExecRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key, box_id, rest @ ..] = args.as_slice() else {
        return Err("usage: run_overhead URL KEY BOX_ID [N]".into());
    };
    let n: usize = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(50);
    let client = Client::new(url.as_str(), key.as_str())?;
    let req = ExecRequest::new(["true"]);
    for _ in 0..3 {
        client.run(box_id, &req).await?;
    }
    let mut ms: Vec<f64> = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let out = client.run(box_id, &req).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if out.exit.exit_code != Some(0) {
            return Err(format!("`true` exited with {:?}", out.exit.exit_code).into());
        }
    }
    let samples: Vec<String> = ms.iter().map(|m| format!("{m:.3}")).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"n\": {n}, \"median_ms\": {:.3}, \"p90_ms\": {:.3}, \"min_ms\": {:.3}, \"samples_ms\": [{}]}}",
        at(0.5),
        at(0.9),
        ms[0],
        samples.join(", ")
    );
    Ok(())
}
