//! virtio-console control messages: an 8-byte header (port id u32, event u16, value u16), then for PORT_NAME the
//! name bytes.

/// Driver → device: the driver is ready for PORT_ADD messages (value 1) or failed (0).
pub const DEVICE_READY: u16 = 0;
/// Device → driver: a port exists.
pub const PORT_ADD: u16 = 1;
/// Device → driver: a port is gone.
pub const PORT_REMOVE: u16 = 2;
/// Driver → device: the port is set up in the guest (value 1) or failed (0).
pub const PORT_READY: u16 = 3;
/// Device → driver: this port is a console.
pub const CONSOLE_PORT: u16 = 4;
/// Both ways: the host end (device → driver) or the guest end (driver → device) opened (1) or closed (0) the port.
pub const PORT_OPEN: u16 = 6;
/// Device → driver: the port's name follows the header.
pub const PORT_NAME: u16 = 7;

/// Size of the header.
pub const HEADER_LEN: usize = 8;

/// One control message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlMessage {
    /// Port id.
    pub id: u32,
    /// Event (one of the constants above).
    pub event: u16,
    /// Event value.
    pub value: u16,
    /// Bytes after the header (the name of PORT_NAME).
    pub payload: Vec<u8>,
}

impl ControlMessage {
    /// A message without payload.
    pub fn new(id: u32, event: u16, value: u16) -> Self {
        Self { id, event, value, payload: Vec::new() }
    }

    /// Its wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        v.extend_from_slice(&self.id.to_le_bytes());
        v.extend_from_slice(&self.event.to_le_bytes());
        v.extend_from_slice(&self.value.to_le_bytes());
        v.extend_from_slice(&self.payload);
        v
    }

    /// Parses a message; `None` when shorter than the header.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < HEADER_LEN {
            return None;
        }
        Some(Self {
            id: u32::from_le_bytes(b[0..4].try_into().ok()?),
            event: u16::from_le_bytes(b[4..6].try_into().ok()?),
            value: u16::from_le_bytes(b[6..8].try_into().ok()?),
            payload: b[HEADER_LEN..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_short_ones_are_rejected() {
        let m = ControlMessage { id: 1, event: PORT_NAME, value: 1, payload: b"boxyard.agent".to_vec() };
        let b = m.encode();
        assert_eq!(&b[..8], &[1, 0, 0, 0, 7, 0, 1, 0]);
        assert_eq!(ControlMessage::decode(&b), Some(m));
        assert_eq!(ControlMessage::decode(&b[..7]), None);
    }
}
