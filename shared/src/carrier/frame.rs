//! The framing of QUIC datagrams on a byte stream: a big-endian `u16` length, then the datagram.
//! Pure functions over buffers; they know nothing of the stream that carries them.

use bytes::{Buf, Bytes, BytesMut};

use super::STREAM_MTU;

/// Bytes of the length prefix.
pub(super) const HEADER_LEN: usize = 2;

/// A frame whose length is zero or above [`STREAM_MTU`]: the peer is not a carrier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("carrier frame of {0} bytes (expected 1..={STREAM_MTU}): the peer does not speak the carrier framing")]
pub(super) struct BadLength(pub(super) usize);

/// Appends `datagram`, framed, to `out`. The caller checks the length (1..=[`STREAM_MTU`]).
pub(super) fn encode(datagram: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(datagram.len()).expect("datagrams are checked against STREAM_MTU");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(datagram);
}

/// Takes the first whole datagram off `buffer`: `None` while it is incomplete.
pub(super) fn decode(buffer: &mut BytesMut) -> Result<Option<Bytes>, BadLength> {
    let Some(&[high, low]) = buffer.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([high, low]));
    if len == 0 || len > usize::from(STREAM_MTU) {
        return Err(BadLength(len));
    }
    if buffer.len() < HEADER_LEN + len {
        return Ok(None);
    }
    buffer.advance(HEADER_LEN);
    Ok(Some(buffer.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_round_trip_back_to_back() {
        let datagrams = [vec![1u8], vec![7; 1200], vec![9; usize::from(STREAM_MTU)]];
        let mut wire = Vec::new();
        for datagram in &datagrams {
            encode(datagram, &mut wire);
        }
        let mut buffer = BytesMut::from(&wire[..]);
        for datagram in &datagrams {
            assert_eq!(
                decode(&mut buffer).expect("valid").as_deref(),
                Some(&datagram[..])
            );
        }
        assert_eq!(decode(&mut buffer), Ok(None));
        assert!(buffer.is_empty());
    }

    #[test]
    fn partial_input_waits_for_more() {
        let mut wire = Vec::new();
        encode(b"hello", &mut wire);
        for cut in 0..wire.len() {
            let mut buffer = BytesMut::from(&wire[..cut]);
            assert_eq!(decode(&mut buffer), Ok(None), "cut at {cut}");
            assert_eq!(buffer.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn garbage_lengths_are_refused() {
        let too_long = (STREAM_MTU + 1).to_be_bytes();
        for head in [[0, 0], too_long] {
            let mut buffer = BytesMut::from(&[head[0], head[1], 1, 2, 3][..]);
            assert!(decode(&mut buffer).is_err(), "{head:?}");
        }
        let mut http = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(decode(&mut http).is_err(), "0x4745 is above STREAM_MTU");
    }
}
