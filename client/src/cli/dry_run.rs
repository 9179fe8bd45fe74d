//! `--dry-run -o yaml|json`: what an intercept would create and change, printed so that a
//! reviewer reads it and `kubectl apply --dry-run=client -f -` takes it. YAML is one document per
//! object, after comments saying what is elided; JSON is one `v1` `List`.

use anyhow::Context;
use cz_shared::control::CONTROL_PORT_NAME;
use czctl::{Plan, SHADOW_IP_PLACEHOLDER, SHADOW_UID_PLACEHOLDER};
use serde_json::json;

/// The format of `--dry-run` (`-o/--output`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// YAML documents, one per object.
    #[default]
    Yaml,
    /// One JSON `v1` `List`.
    Json,
}

/// `plan` of the intercept of `service` (`NAMESPACE/NAME`) in `format`.
pub fn render(plan: &Plan, service: &str, format: OutputFormat) -> anyhow::Result<String> {
    let objects = plan
        .objects()
        .context("could not turn the objects into JSON")?;
    match format {
        OutputFormat::Json => {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
            serde_json::to_string_pretty(&list).context("could not print JSON")
        }
        OutputFormat::Yaml => {
            let version = plan.resource_version();
            let mut text = match plan {
                Plan::Create(_) => format!(
                    "# czctl service intercept {service} --dry-run: what czctl would send, in this order.\n\
                     # 1-3 are created (labelled app.kubernetes.io/managed-by=czctl; the shadow Service and the proxy owned\n\
                     # by the Service, the Secret by the shadow Service);\n\
                     # 4 is the one change to {service}: czctl sends it as a JSON patch that replaces the\n\
                     # selector and adds the annotation, refused if the Service changed since resourceVersion {version}.\n\
                     # Elided: the Secret's data (generated on the laptop when the intercept starts),\n\
                     # {SHADOW_UID_PLACEHOLDER} in its owner reference (the Secret goes with the shadow Service) and\n\
                     # {SHADOW_IP_PLACEHOLDER} in the proxy's arguments (both assigned when the shadow Service is created).\n"
                ),
                Plan::Join(joining) => {
                    let mut text = format!(
                        "# czctl service intercept {service} --dry-run: {service} is intercepted on this port already, by\n\
                         # session {} with:\n",
                        joining.proxy_session
                    );
                    for member in &joining.members {
                        text.push_str(&format!("#   {member}\n"));
                    }
                    text.push_str(&format!(
                        "# This session would join it: nothing is created and the selector stays. The one change to\n\
                         # {service} adds this session to the annotation: czctl sends it as a JSON patch, refused if the\n\
                         # Service changed since resourceVersion {version}. Then czctl registers this session's header rule\n\
                         # and session CA (generated on the laptop when the intercept starts) with the running proxy, over\n\
                         # its control channel (PUT /v1/routes/SESSION on its port {CONTROL_PORT_NAME}, through a port-forward).\n"
                    ));
                    text
                }
            };
            for object in &objects {
                let document = serde_saphyr::to_string(object).context("could not print YAML")?;
                text.push_str("---\n");
                text.push_str(document.trim_end());
                text.push('\n');
            }
            Ok(text)
        }
    }
}
