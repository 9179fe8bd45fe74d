//! Which exchanges a list, an event stream or an export shows: by status class, method, path
//! text and header, given as query parameters (`?status=4xx&method=POST&path=/api&header=x-user:ann`).

use super::exchange::Exchange;

/// A filter on exchanges; empty matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// `4` for `4xx`.
    status_class: Option<u16>,
    method: Option<String>,
    path: Option<String>,
    /// A header name, and text its value (or one of its values) contains.
    header: Option<(String, Option<String>)>,
    /// Exchange ids (`ids=3,5`).
    ids: Option<Vec<u64>>,
}

/// A query parameter that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid `{name}` filter {value:?}: {expected}")]
pub(crate) struct BadFilter {
    name: String,
    value: String,
    expected: &'static str,
}

impl Filter {
    /// The filter a query string gives; unknown parameters are ignored.
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, BadFilter> {
        let mut filter = Self::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if value.is_empty() {
                continue;
            }
            let bad = |expected| BadFilter {
                name: name.clone().into_owned(),
                value: value.clone().into_owned(),
                expected,
            };
            match &*name {
                "status" => {
                    let class = value
                        .strip_suffix("xx")
                        .and_then(|digit| digit.parse().ok())
                        .filter(|class| (1..=5).contains(class))
                        .ok_or_else(|| bad("1xx to 5xx"))?;
                    filter.status_class = Some(class);
                }
                "method" => filter.method = Some(value.to_ascii_uppercase()),
                "path" => filter.path = Some(value.into_owned()),
                "header" => {
                    let (name, text) = match value.split_once(':') {
                        Some((name, text)) => (name, Some(text.trim().to_owned())),
                        None => (&*value, None),
                    };
                    filter.header = Some((name.trim().to_ascii_lowercase(), text));
                }
                "ids" => {
                    let ids = value
                        .split(',')
                        .map(|id| id.trim().parse())
                        .collect::<Result<Vec<u64>, _>>()
                        .map_err(|_| bad("comma-separated exchange numbers"))?;
                    filter.ids = Some(ids);
                }
                _ => {}
            }
        }
        Ok(filter)
    }

    /// Whether `exchange` passes.
    pub(crate) fn matches(&self, exchange: &Exchange) -> bool {
        let status_ok = self.status_class.is_none_or(|class| {
            exchange
                .status()
                .is_some_and(|status| status.as_u16() / 100 == class)
        });
        let method_ok = self
            .method
            .as_ref()
            .is_none_or(|method| exchange.request.method.as_str() == method);
        let path_ok = self
            .path
            .as_ref()
            .is_none_or(|text| exchange.path().contains(text.as_str()));
        let ids_ok = self
            .ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&exchange.id));
        status_ok && method_ok && path_ok && ids_ok && self.header_matches(exchange)
    }

    /// The header filter, on the request's and the response's headers.
    fn header_matches(&self, exchange: &Exchange) -> bool {
        let Some((name, text)) = &self.header else {
            return true;
        };
        let request = Some(&exchange.request.headers);
        let response = exchange.response.as_ref().map(|response| &response.headers);
        [request, response]
            .into_iter()
            .flatten()
            .flat_map(|headers| headers.get_all(name.as_str()))
            .any(|value| {
                text.as_ref().is_none_or(|text| {
                    String::from_utf8_lossy(value)
                        .to_ascii_lowercase()
                        .contains(&text.to_ascii_lowercase())
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::testing::exchange;

    #[test]
    fn each_parameter_filters_and_an_empty_filter_passes_everything() {
        let get = exchange("GET", "/api/users?page=2", 200, &[("x-user", "Ann Lee")]);
        let post = exchange("POST", "/login", 401, &[]);
        let all = Filter::parse(None).expect("valid test input");
        assert!(all.matches(&get) && all.matches(&post));
        let cases = [
            ("status=4xx", false, true),
            ("method=post", false, true),
            ("path=users", true, false),
            ("header=x-user", true, false),
            ("header=X-User:%20ann", true, false),
            ("header=x-user:bob", false, false),
            ("status=2xx&method=GET&path=/api", true, false),
        ];
        for (query, get_passes, post_passes) in cases {
            let filter = Filter::parse(Some(query)).expect("valid test input");
            assert_eq!(filter.matches(&get), get_passes, "{query} on GET");
            assert_eq!(filter.matches(&post), post_passes, "{query} on POST");
        }
    }

    #[test]
    fn ids_select_exchanges() {
        let mut first = exchange("GET", "/", 200, &[]);
        first.id = 3;
        let filter = Filter::parse(Some("ids=1,3")).expect("valid test input");
        assert!(filter.matches(&first));
        first.id = 2;
        assert!(!filter.matches(&first));
    }

    #[test]
    fn bad_values_are_refused() {
        for query in ["status=9xx", "status=40x", "ids=1,x"] {
            assert!(Filter::parse(Some(query)).is_err(), "{query}");
        }
    }
}
