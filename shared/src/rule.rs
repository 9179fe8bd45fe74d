//! The intercept rule: which requests go to the laptop.
//!
//! A rule is written `NAME:VALUE`, as `czctl service intercept --header` takes it. Header names
//! compare case-insensitively and treat `_` and `-` as equal (so `-x X-MY-HEADER:ME` also routes
//! `x_my_header: me`); values compare case-insensitively after trimming white space; a header
//! present several times matches if any of its values matches.

use std::fmt;
use std::str::FromStr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The rule of `czctl service intercept` when no `--header` is given.
pub const DEFAULT_RULE: &str = "X-C6O-INTERCEPT:yes";

/// A parsed `NAME:VALUE` intercept rule. Two rules are equal when they match the same
/// requests: same normalized name, values equal but for ASCII case.
#[derive(Clone, Eq)]
pub struct InterceptRule {
    /// Lower-case, with every `_` written as `-`.
    name: HeaderName,
    /// Trimmed, compared case-insensitively.
    value: Box<str>,
}

/// Why a `NAME:VALUE` rule could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// There is no `:` between name and value.
    #[error("intercept header {0:?} has no ':' between name and value; write it as NAME:VALUE, e.g. X-C6O-INTERCEPT:yes")]
    MissingColon(String),
    /// Nothing stands before the `:`.
    #[error("intercept header {0:?} has an empty name; write it as NAME:VALUE, e.g. X-C6O-INTERCEPT:yes")]
    EmptyName(String),
    /// The name has a character HTTP does not allow in header names.
    #[error("intercept header name {0:?} has a character not allowed in HTTP header names (use letters, digits and -_.!#$%&'*+^`|~)")]
    InvalidName(String),
    /// Nothing stands after the `:`.
    #[error("intercept header {0:?} has an empty value; write it as NAME:VALUE, e.g. X-C6O-INTERCEPT:yes")]
    EmptyValue(String),
    /// The value has a character HTTP does not allow in header values.
    #[error("intercept header value {0:?} has a character not allowed in HTTP header values (control characters are not allowed)")]
    InvalidValue(String),
}

impl InterceptRule {
    /// The header name the rule looks for, normalized (lower case, `-` for `_`).
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The header value the rule looks for, trimmed.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a request carrying `headers` should go to the laptop.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        // Fast path: the name as normalized, which is how nearly every client writes it.
        if headers
            .get_all(&self.name)
            .iter()
            .any(|v| self.value_matches(v))
        {
            return true;
        }
        // Slow path, for names spelled with `_`: only names of the rule's length can match, so
        // most names are passed over without a search for `_`.
        let len = self.name.as_str().len();
        headers.iter().any(|(name, value)| {
            let name = name.as_str().as_bytes();
            name.len() == len
                && name.contains(&b'_')
                && self.matches_name(name)
                && self.value_matches(value)
        })
    }

    /// Whether a header named `name` (in any case, `_` for `-`) is the one the rule looks at.
    pub fn matches_name(&self, name: &[u8]) -> bool {
        let wanted = self.name.as_str().as_bytes();
        name.len() == wanted.len() && name.iter().zip(wanted).all(|(&a, &b)| normalize(a) == b)
    }

    fn value_matches(&self, value: &HeaderValue) -> bool {
        value
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(self.value.as_bytes())
    }
}

/// Header names arrive lower-cased from the `http` crate; only `_` needs folding.
fn normalize(byte: u8) -> u8 {
    if byte == b'_' {
        b'-'
    } else {
        byte.to_ascii_lowercase()
    }
}

impl PartialEq for InterceptRule {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.value.eq_ignore_ascii_case(&other.value)
    }
}

impl FromStr for InterceptRule {
    type Err = RuleError;

    fn from_str(rule: &str) -> Result<Self, Self::Err> {
        let (name, value) = rule
            .split_once(':')
            .ok_or_else(|| RuleError::MissingColon(rule.to_owned()))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(RuleError::EmptyName(rule.to_owned()));
        }
        if value.is_empty() {
            return Err(RuleError::EmptyValue(rule.to_owned()));
        }
        let normalized: Vec<u8> = name.bytes().map(normalize).collect();
        let name = HeaderName::from_bytes(&normalized)
            .map_err(|_| RuleError::InvalidName(name.to_owned()))?;
        HeaderValue::from_str(value).map_err(|_| RuleError::InvalidValue(value.to_owned()))?;
        Ok(Self {
            name,
            value: value.into(),
        })
    }
}

impl Default for InterceptRule {
    fn default() -> Self {
        DEFAULT_RULE.parse().expect("the default rule is valid")
    }
}

impl fmt::Display for InterceptRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.value)
    }
}

impl fmt::Debug for InterceptRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InterceptRule({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        map
    }

    fn rule(text: &str) -> InterceptRule {
        text.parse().expect("test rule")
    }

    #[test]
    fn default_rule_matches_its_header_in_any_case() {
        let rule = InterceptRule::default();
        assert!(rule.matches(&headers(&[("x-c6o-intercept", "yes")])));
        assert!(rule.matches(&headers(&[("X-C6O-Intercept", "YES")])));
        assert!(rule.matches(&headers(&[("x_c6o_intercept", " Yes ")])));
        assert!(!rule.matches(&headers(&[("x-c6o-intercept", "no")])));
        assert!(!rule.matches(&headers(&[("x-other", "yes")])));
        assert!(!rule.matches(&HeaderMap::new()));
    }

    #[test]
    fn reference_example_routes_both_spellings() {
        let rule = rule("X-MY-HEADER:ME");
        assert!(rule.matches(&headers(&[("x_my_header", "me")])));
        assert!(rule.matches(&headers(&[("x-my-header", "me")])));
        assert!(rule.matches(&headers(&[("x_my-header", "Me")])));
        assert!(!rule.matches(&headers(&[("x_my_headers", "me")])));
        assert!(!rule.matches(&headers(&[("x-my-header", "meme")])));
    }

    #[test]
    fn rule_written_with_underscores_matches_dashes() {
        let rule = rule("x_dev : alice ");
        assert_eq!(rule.name().as_str(), "x-dev");
        assert_eq!(rule.value(), "alice");
        assert!(rule.matches(&headers(&[("x-dev", "ALICE")])));
    }

    #[test]
    fn names_match_in_any_case_and_spelling() {
        let rule = rule("x-my-header:me");
        for name in ["x-my-header", "X_MY_HEADER", "x_My-header"] {
            assert!(rule.matches_name(name.as_bytes()), "{name}");
        }
        for name in ["x-my-headers", "x-my-heade", "x my header", ""] {
            assert!(!rule.matches_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn any_of_several_values_matches() {
        let rule = rule("x-dev:bob");
        assert!(rule.matches(&headers(&[("x-dev", "alice"), ("x-dev", "bob")])));
        assert!(rule.matches(&headers(&[("x-dev", "alice"), ("x_dev", "bob")])));
        assert!(!rule.matches(&headers(&[("x-dev", "alice"), ("x-dev", "carol")])));
    }

    #[test]
    fn rules_matching_the_same_requests_are_equal() {
        assert_eq!(rule("X_Dev:Alice"), rule("x-dev: alice"));
        assert_ne!(rule("x-dev:alice"), rule("x-dev:bob"));
        assert_ne!(rule("x-dev:alice"), rule("x-team:alice"));
    }

    #[test]
    fn value_may_contain_colons() {
        let rule = rule("x-target:host:8080");
        assert_eq!(rule.value(), "host:8080");
        assert!(rule.matches(&headers(&[("x-target", "host:8080")])));
    }

    #[test]
    fn bad_rules_name_the_problem() {
        assert_eq!(
            "novalue".parse::<InterceptRule>(),
            Err(RuleError::MissingColon("novalue".into()))
        );
        assert_eq!(
            ":yes".parse::<InterceptRule>(),
            Err(RuleError::EmptyName(":yes".into()))
        );
        assert_eq!(
            "x-a: ".parse::<InterceptRule>(),
            Err(RuleError::EmptyValue("x-a: ".into()))
        );
        assert_eq!(
            "x a:yes".parse::<InterceptRule>(),
            Err(RuleError::InvalidName("x a".into()))
        );
        assert_eq!(
            "x-a:y\u{7}s".parse::<InterceptRule>(),
            Err(RuleError::InvalidValue("y\u{7}s".into()))
        );
        let message = "novalue"
            .parse::<InterceptRule>()
            .expect_err("no colon")
            .to_string();
        assert!(message.contains("NAME:VALUE"), "{message}");
    }

    #[test]
    fn display_round_trips() {
        let rule = rule("X_My_Header:ME");
        assert_eq!(rule.to_string(), "x-my-header:ME");
        assert_eq!(rule.to_string().parse::<InterceptRule>(), Ok(rule));
    }
}
