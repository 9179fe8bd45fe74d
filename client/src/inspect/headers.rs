//! Header fields as captured: every name and value copied into one buffer, one allocation per
//! message (cloning a `HeaderMap` costs one per value it shares for the first time, which the
//! data path would pay on every request).

use http::{HeaderMap, HeaderName, HeaderValue};

/// A message's header fields, in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CapturedHeaders {
    /// `name length (u16) | name | value length (u32) | value`, per field.
    block: Vec<u8>,
}

impl CapturedHeaders {
    /// A copy of `headers`.
    pub fn from_map(headers: &HeaderMap) -> Self {
        let size = headers
            .iter()
            .map(|(name, value)| 6 + name.as_str().len() + value.len())
            .sum();
        let mut block = Vec::with_capacity(size);
        for (name, value) in headers {
            // HTTP header names are far under 64 KiB; values under 4 GiB.
            block.extend_from_slice(&(name.as_str().len() as u16).to_be_bytes());
            block.extend_from_slice(name.as_str().as_bytes());
            block.extend_from_slice(&(value.len() as u32).to_be_bytes());
            block.extend_from_slice(value.as_bytes());
        }
        Self { block }
    }

    /// The fields in order: lowercase names, raw values.
    pub fn iter(&self) -> Fields<'_> {
        Fields {
            raw: RawFields { rest: &self.block },
        }
    }

    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        RawFields { rest: &self.block }
            .find(|(field, _)| *field == name.as_bytes())
            .map(|(_, value)| value)
    }

    /// Every value of `name` (lowercase), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        // Names compared as bytes: no UTF-8 check per field, as the data path looks some up.
        RawFields { rest: &self.block }
            .filter(move |(field, _)| *field == name.as_bytes())
            .map(|(_, value)| value)
    }

    /// The first value of `name` as text, if it is text.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// As a `HeaderMap` again.
    pub fn to_header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in self.iter() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

impl std::fmt::Debug for CapturedHeaders {
    /// Names only: values may be secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(name, _)| name))
            .finish()
    }
}

/// The fields of [`CapturedHeaders`].
#[derive(Debug)]
pub struct Fields<'a> {
    raw: RawFields<'a>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, value) = self.raw.next()?;
        // Names came from `HeaderName`s: ASCII.
        Some((std::str::from_utf8(name).unwrap_or_default(), value))
    }
}

/// The fields with their names as bytes.
#[derive(Debug)]
struct RawFields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RawFields<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (length, rest) = self.rest.split_first_chunk::<2>()?;
        let (name, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*length)))?;
        let (length, rest) = rest.split_first_chunk::<4>()?;
        let (value, rest) = rest.split_at_checked(u32::from_be_bytes(*length) as usize)?;
        self.rest = rest;
        Some((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_back_in_order_with_repeated_names() {
        let mut map = HeaderMap::new();
        map.append("set-cookie", HeaderValue::from_static("a=1"));
        map.append("x-custom", HeaderValue::from_static("v"));
        map.append("set-cookie", HeaderValue::from_static("b=2"));
        map.append(
            "x-bin",
            HeaderValue::from_bytes(b"\xff\xfe").expect("a value"),
        );
        let captured = CapturedHeaders::from_map(&map);
        let fields: Vec<(&str, &[u8])> = captured.iter().collect();
        assert_eq!(fields.len(), 4);
        assert_eq!(
            captured.get_all("set-cookie").collect::<Vec<_>>(),
            [b"a=1", b"b=2"]
        );
        assert_eq!(captured.get_str("x-custom"), Some("v"));
        assert_eq!(captured.get("x-bin"), Some(&b"\xff\xfe"[..]));
        assert!(captured.get("absent").is_none());
        assert_eq!(captured.to_header_map(), map);
        assert!(
            !format!("{captured:?}").contains("a=1"),
            "Debug shows no values"
        );
    }
}
