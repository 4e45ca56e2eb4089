//! Builds a snapshot image from a directory: `cargo run -p boxyard-snapshot --example build_image -- DIR OUT`.

#![allow(clippy::unwrap_used)] // An example: a failure ends it with its location.

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let b = boxyard_snapshot::image::build_from_dir(a[1].as_ref(), a[2].as_ref()).unwrap();
    println!("{} {} bytes", b.digest, b.size);
}
