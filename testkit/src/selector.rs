//! Label and field selectors, as list and watch take them.

use serde_json::Value;

/// A parsed `labelSelector` plus `fieldSelector` (the fields in [`FIELDS`]).
#[derive(Debug, Default, Clone)]
pub struct Selector {
    labels: Vec<Requirement>,
    /// (JSON pointer, equal or not, value).
    fields: Vec<(String, bool, String)>,
}

#[derive(Debug, Clone)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// The field selectors served, with the JSON pointer each reads: the metadata fields every kind
/// supports, and the `involvedObject` fields a real API server supports on Events.
const FIELDS: [(&str, &str); 4] = [
    ("metadata.name", "/metadata/name"),
    ("metadata.namespace", "/metadata/namespace"),
    ("involvedObject.name", "/involvedObject/name"),
    ("involvedObject.kind", "/involvedObject/kind"),
];

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn set(values: &str) -> Vec<String> {
    values
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|v| v.trim().to_owned())
        .collect()
}

impl Selector {
    /// Parses the query parameters; an unsupported field selector is an error message.
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, String> {
        let mut selector = Self::default();
        for term in labels.map(split_terms).unwrap_or_default() {
            let requirement = if let Some((key, values)) = term.split_once(" notin ") {
                Requirement::NotIn(key.trim().into(), set(values))
            } else if let Some((key, values)) = term.split_once(" in ") {
                Requirement::In(key.trim().into(), set(values))
            } else if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(key.trim().into())
            } else {
                Requirement::Exists(term.into())
            };
            selector.labels.push(requirement);
        }
        for term in fields.map(split_terms).unwrap_or_default() {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector {term:?}"));
            };
            let field = field.trim();
            let Some((_, pointer)) = FIELDS.iter().find(|(name, _)| *name == field) else {
                let supported: Vec<&str> = FIELDS.iter().map(|(name, _)| *name).collect();
                return Err(format!(
                    "field selector {field:?} is not supported (the loopback cluster supports {})",
                    supported.join(", ")
                ));
            };
            selector
                .fields
                .push(((*pointer).to_owned(), equal, value.trim().to_owned()));
        }
        Ok(selector)
    }

    /// A selector from a Service's or workload's `matchLabels`-style map.
    pub fn from_labels(labels: &serde_json::Map<String, Value>) -> Self {
        Self {
            labels: labels
                .iter()
                .map(|(k, v)| {
                    Requirement::Equals(k.clone(), v.as_str().unwrap_or_default().to_owned())
                })
                .collect(),
            fields: Vec::new(),
        }
    }

    /// Whether `object` is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => label(k) == Some(v),
            Requirement::NotEquals(k, v) => label(k) != Some(v),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        });
        labels_match
            && self.fields.iter().all(|(pointer, equal, value)| {
                (object.pointer(pointer).and_then(Value::as_str) == Some(value)) == *equal
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_and_field_selectors() {
        let pod = json!({"metadata": {"name": "a", "namespace": "demo", "labels": {"app": "echo", "tier": "web"}}});
        let yes = |l: &str, f: &str| {
            Selector::parse(Some(l), Some(f))
                .expect("parses")
                .matches(&pod)
        };
        assert!(yes("app=echo", ""));
        assert!(yes("app==echo,tier", ""));
        assert!(yes("app in (echo, other),!missing", "metadata.name=a"));
        assert!(!yes("app notin (echo)", ""));
        assert!(!yes("app!=echo", ""));
        assert!(!yes("", "metadata.name=b"));
        assert!(yes("", "metadata.namespace=demo,metadata.name!=b"));
        assert!(Selector::parse(None, Some("spec.nodeName=x")).is_err());
    }

    #[test]
    fn events_select_by_involved_object() {
        let event = json!({"metadata": {"name": "e1", "namespace": "demo"},
            "involvedObject": {"kind": "Pod", "name": "cz-proxy-1"}});
        let selects = |f: &str| {
            Selector::parse(None, Some(f))
                .expect("parses")
                .matches(&event)
        };
        assert!(selects(
            "involvedObject.name=cz-proxy-1,involvedObject.kind=Pod"
        ));
        assert!(!selects("involvedObject.name=other"));
        assert!(!selects("involvedObject.kind=Deployment"));
    }
}
