//! What the proxy tells a laptop besides requests: one [`Signal`] per unidirectional stream,
//! which the proxy opens, writes and finishes, and the laptop reads to its end and answers
//! nothing.
//!
//! * Since minor version [`NOTICES_SINCE`] (1): notices, UTF-8 messages for the developer (e.g.
//!   that a request matched this session's rule and another's, and was refused). To a laptop
//!   announcing minor version 1, the stream carries the message alone.
//! * Since minor version [`KINDS_SINCE`] (2): each stream starts with the signal's kind, one
//!   byte — `0` a notice, followed by its message; `1` [`Signal::Draining`], nothing follows. A
//!   laptop ignores a kind it does not know.
//!
//! Either side encodes for the other's minor version, as announced in its
//! [`Hello`](crate::protocol::Hello).

/// The minor version from which a laptop takes notices.
pub const NOTICES_SINCE: u16 = 1;

/// The minor version from which signal streams start with their kind, and a proxy announces
/// that it is draining.
pub const KINDS_SINCE: u16 = 2;

/// The longest notice message a laptop reads.
pub const MAX_NOTICE_LEN: usize = 4096;

/// The most bytes a signal stream carries.
pub const MAX_SIGNAL_LEN: usize = MAX_NOTICE_LEN + 1;

const NOTICE: u8 = 0;
const DRAINING: u8 = 1;

/// A message from the proxy to a laptop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A message for the developer.
    Notice(String),
    /// The proxy is shutting down (its pod is being deleted or replaced). It goes on serving this
    /// connection while the cluster moves its clients away, then closes it; the laptop dials the
    /// proxy's replacement now and serves both connections meanwhile.
    Draining,
}

/// A signal stream of a kind this laptop does not know (from a newer proxy): ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a signal of unknown kind {0} from the proxy")]
pub struct UnknownSignal(pub u8);

impl Signal {
    /// The stream's bytes for a laptop that announced minor version `minor`, or `None` if it
    /// would not understand this signal. A notice is cut to [`MAX_NOTICE_LEN`] bytes.
    pub fn encode(&self, minor: u16) -> Option<Vec<u8>> {
        match self {
            Self::Notice(message) if minor >= NOTICES_SINCE => {
                let mut bytes = Vec::with_capacity(MAX_SIGNAL_LEN.min(message.len() + 1));
                if minor >= KINDS_SINCE {
                    bytes.push(NOTICE);
                }
                let cut = cut_at_char_boundary(message, MAX_NOTICE_LEN);
                bytes.extend_from_slice(cut.as_bytes());
                Some(bytes)
            }
            Self::Draining if minor >= KINDS_SINCE => Some(vec![DRAINING]),
            Self::Notice(_) | Self::Draining => None,
        }
    }

    /// Reads a signal stream's bytes from a proxy that announced minor version `minor`.
    pub fn decode(bytes: &[u8], minor: u16) -> Result<Self, UnknownSignal> {
        let notice = |message: &[u8]| Self::Notice(String::from_utf8_lossy(message).into_owned());
        if minor < KINDS_SINCE {
            return Ok(notice(bytes));
        }
        match bytes.split_first() {
            Some((&NOTICE, message)) => Ok(notice(message)),
            Some((&DRAINING, _)) => Ok(Self::Draining),
            Some((&kind, _)) => Err(UnknownSignal(kind)),
            None => Ok(notice(&[])),
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip_at_each_minor_version() {
        let notice = Signal::Notice("two rules matched".into());
        for minor in [1, 2, 7] {
            let bytes = notice.encode(minor).expect("notices since 1");
            assert_eq!(Signal::decode(&bytes, minor), Ok(notice.clone()));
        }
        assert_eq!(
            notice.encode(1).expect("a notice"),
            b"two rules matched",
            "1.1 laptops read text"
        );
        let draining = Signal::Draining.encode(2).expect("draining since 2");
        assert_eq!(Signal::decode(&draining, 2), Ok(Signal::Draining));
    }

    #[test]
    fn a_laptop_too_old_for_a_signal_is_not_sent_it() {
        assert_eq!(Signal::Notice("hi".into()).encode(0), None);
        assert_eq!(Signal::Draining.encode(1), None);
    }

    #[test]
    fn unknown_kinds_are_reported_and_long_notices_cut_on_a_character() {
        assert_eq!(Signal::decode(&[9, 1, 2], 3), Err(UnknownSignal(9)));
        let long = "é".repeat(MAX_NOTICE_LEN);
        let bytes = Signal::Notice(long).encode(2).expect("a notice");
        assert!(bytes.len() <= MAX_SIGNAL_LEN);
        let Ok(Signal::Notice(cut)) = Signal::decode(&bytes, 2) else {
            panic!("a notice");
        };
        assert_eq!(cut, "é".repeat(MAX_NOTICE_LEN / 2));
    }
}
