//! The on-disk record of the execution log.
//!
//! ```text
//! offset  size  field
//! 0       1     kind     1 = output
//! 1       1     stream   1 = stdout, 2 = stderr
//! 2       2     reserved (0)
//! 4       4     len      data length, little endian
//! 8       8     cursor   cursor of the first data byte, little endian
//! 16      4     crc32    over bytes 0..16 and the data
//! 20      len   data
//! ```
//!
//! A record is valid only if it is complete and its checksum matches; the first invalid record of a segment marks
//! its torn tail.

/// Bytes of a record header.
pub const HEADER: usize = 20;
/// The kind of an output record.
pub const KIND_OUTPUT: u8 = 1;
/// Largest data length of one record.
pub const MAX_DATA: usize = 1 << 20;

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// 1 (stdout) or 2 (stderr).
    pub stream: u8,
    /// Data length.
    pub len: u32,
    /// Cursor of the first data byte.
    pub cursor: u64,
    /// Checksum over the header's first 16 bytes and the data.
    pub crc: u32,
}

/// Appends one record to `out`.
pub fn encode(stream: u8, cursor: u64, data: &[u8], out: &mut Vec<u8>) {
    debug_assert!(data.len() <= MAX_DATA);
    let start = out.len();
    out.push(KIND_OUTPUT);
    out.push(stream);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&cursor.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start..start + 16]);
    h.update(data);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(data);
}

/// Decodes a header; None if it cannot be a record header.
pub fn decode_header(b: &[u8; HEADER]) -> Option<Header> {
    if b[0] != KIND_OUTPUT || !(1..=2).contains(&b[1]) || b[2] != 0 || b[3] != 0 {
        return None;
    }
    let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    if len as usize > MAX_DATA {
        return None;
    }
    Some(Header {
        stream: b[1],
        len,
        cursor: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        crc: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
    })
}

/// Whether `data` matches the header's checksum.
pub fn verify(b: &[u8; HEADER], h: &Header, data: &[u8]) -> bool {
    let mut c = crc32fast::Hasher::new();
    c.update(&b[..16]);
    c.update(data);
    c.finalize() == h.crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut buf = Vec::new();
        encode(2, 77, b"hello", &mut buf);
        let hb: [u8; HEADER] = buf[..HEADER].try_into().unwrap();
        let h = decode_header(&hb).unwrap();
        assert_eq!((h.stream, h.len, h.cursor), (2, 5, 77));
        assert!(verify(&hb, &h, &buf[HEADER..]));
        assert!(!verify(&hb, &h, b"hellp"));
        assert!(decode_header(&[0u8; HEADER]).is_none());
    }
}
