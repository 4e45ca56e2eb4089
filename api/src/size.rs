//! Byte sizes as the command-line tools take them (`--memory 2G`, `--capacity-memory 64GiB`): one parser, so every
//! tool accepts the same spellings.
//!
//! A size is a whole number, optionally followed (spaces allowed) by a unit, in any case: `B`; `K`, `KB`, `KiB`;
//! `M`, `MB`, `MiB`; `G`, `GB`, `GiB`; `T`, `TB`, `TiB`. Every unit is a power of 1024 (`1KB` is 1024 bytes, as
//! memory sizes are usually meant).

/// Parses a size in bytes; a bare number is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse(s, 1)
}

/// Parses a size in MiB, as the API's `memory_mib` and `disk_mib` take it: a bare number is MiB (`512`); with a
/// unit it must be a whole number of MiB (`512M`, `2G`, `2GiB`, `1048576KiB`).
pub fn parse_size_mib(s: &str) -> Result<u64, String> {
    let bytes = parse(s, MIB)?;
    if bytes % MIB != 0 {
        return Err(format!("{s:?} is not a whole number of MiB"));
    }
    Ok(bytes / MIB)
}

const MIB: u64 = 1 << 20;

/// The size `s` in bytes, a bare number counting `unit` bytes.
fn parse(s: &str, unit: u64) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size: use e.g. 4096, 512KiB, 512M, 2G, 1TiB"))?;
    let mult: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" => unit,
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("{s:?}: unknown size unit {u:?}; use B, K, M, G or T (or KiB, MiB, GiB, TiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_bytes() {
        // The spellings the runner's `serve`, `bench` and `vm run` took before they shared this parser.
        for (s, n) in [
            ("4096", 4096u64),
            ("1048576", 1 << 20),
            ("64MiB", 64 << 20),
            ("512M", 512 << 20),
            ("1G", 1 << 30),
            ("1g", 1 << 30),
            ("2GB", 2 << 30),
            ("20GiB", 20 << 30),
            ("512 KiB", 512 << 10),
            ("1 G", 1 << 30),
            ("8K", 8 << 10),
            ("1T", 1 << 40),
            ("3TiB", 3 << 40),
            ("7B", 7),
            (" 16 mib ", 16 << 20),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for s in ["", "MiB", "12 parsecs", "1.5G", "-1", "1PiB", "99999999999T"] {
            assert!(parse_size(s).is_err(), "{s} parsed");
        }
    }

    #[test]
    fn sizes_in_mib() {
        // The spellings `boxyard run/create --memory` took: a bare number is MiB.
        for (s, n) in [("512", 512u64), ("512M", 512), ("512MiB", 512), ("2G", 2048), ("2GiB", 2048), ("1T", 1 << 20)] {
            assert_eq!(parse_size_mib(s), Ok(n), "{s}");
        }
        assert_eq!(parse_size_mib("1024KiB"), Ok(1));
        assert!(parse_size_mib("1000KiB").is_err());
        assert!(parse_size_mib("lots").is_err());
    }
}
