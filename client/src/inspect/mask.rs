//! Which header values are secrets, and how views show them: `Authorization`, `Cookie`,
//! `Set-Cookie` and `Proxy-Authorization` are replaced by [`MASKED`] unless secrets are shown.

use super::headers::CapturedHeaders;

/// What a masked header value reads as. A replay that sends it back unchanged sends the
/// captured value instead.
pub const MASKED: &str = "[masked by czctl: start it with --inspect-secrets to see this value]";

/// Whether the values of `name` (lowercase) are masked.
pub(crate) fn is_secret(name: &str) -> bool {
    [
        "authorization",
        "cookie",
        "set-cookie",
        "proxy-authorization",
    ]
    .contains(&name)
}

/// `headers` as name/value pairs in order, secrets masked unless `show_secrets`; values that are
/// not UTF-8 are shown lossily.
pub(crate) fn header_pairs(headers: &CapturedHeaders, show_secrets: bool) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = if !show_secrets && is_secret(name) {
                MASKED.to_owned()
            } else {
                String::from_utf8_lossy(value).into_owned()
            };
            (name.to_owned(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> CapturedHeaders {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "authorization",
            "Bearer t0ken".parse().expect("valid test input"),
        );
        headers.insert(
            "proxy-authorization",
            "Basic cHc=".parse().expect("valid test input"),
        );
        headers.append("cookie", "session=abc".parse().expect("valid test input"));
        headers.append("set-cookie", "a=1".parse().expect("valid test input"));
        headers.append("set-cookie", "b=2".parse().expect("valid test input"));
        headers.insert("x-trace", "t-1".parse().expect("valid test input"));
        CapturedHeaders::from_map(&headers)
    }

    #[test]
    fn the_four_secret_headers_are_masked_and_nothing_else() {
        let pairs = header_pairs(&headers(), false);
        assert_eq!(pairs.len(), 6);
        for (name, value) in &pairs {
            if name == "x-trace" {
                assert_eq!(value, "t-1");
            } else {
                assert_eq!(value, MASKED, "{name}");
            }
        }
        let text = format!("{pairs:?}");
        for secret in ["t0ken", "cHc=", "abc", "a=1", "b=2"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[test]
    fn secrets_are_shown_when_asked() {
        let pairs = header_pairs(&headers(), true);
        assert!(pairs.contains(&("authorization".into(), "Bearer t0ken".into())));
        assert!(pairs.contains(&("set-cookie".into(), "b=2".into())));
    }
}
