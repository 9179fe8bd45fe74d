//! The resource kinds the loopback cluster serves, with what discovery says about them.

/// One served resource kind.
#[derive(Debug, PartialEq, Eq)]
pub struct Kind {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural resource name, as in URLs.
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// Object kind.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Whether `/status` is a subresource (then the main resource ignores status changes).
    pub has_status: bool,
}

impl Kind {
    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn kind(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    has_status: bool,
) -> Kind {
    Kind {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        has_status,
    }
}

pub static NAMESPACES: Kind = kind(
    "",
    "namespaces",
    "namespace",
    "Namespace",
    false,
    &["ns"],
    true,
);
pub static SERVICES: Kind = kind("", "services", "service", "Service", true, &["svc"], true);
pub static PODS: Kind = kind("", "pods", "pod", "Pod", true, &["po"], true);
pub static SECRETS: Kind = kind("", "secrets", "secret", "Secret", true, &[], false);
pub static CONFIGMAPS: Kind = kind(
    "",
    "configmaps",
    "configmap",
    "ConfigMap",
    true,
    &["cm"],
    false,
);
pub static ENDPOINTS: Kind = kind(
    "",
    "endpoints",
    "endpoints",
    "Endpoints",
    true,
    &["ep"],
    false,
);
pub static EVENTS: Kind = kind("", "events", "event", "Event", true, &["ev"], false);
pub static ENDPOINT_SLICES: Kind = kind(
    "discovery.k8s.io",
    "endpointslices",
    "endpointslice",
    "EndpointSlice",
    true,
    &[],
    false,
);
pub static DEPLOYMENTS: Kind = kind(
    "apps",
    "deployments",
    "deployment",
    "Deployment",
    true,
    &["deploy"],
    true,
);
pub static REPLICA_SETS: Kind = kind(
    "apps",
    "replicasets",
    "replicaset",
    "ReplicaSet",
    true,
    &["rs"],
    true,
);

/// The RBAC group (`rbac.authorization.k8s.io`), whose objects the RBAC authorizer reads.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
pub static ROLES: Kind = kind(RBAC_GROUP, "roles", "role", "Role", true, &[], false);
pub static ROLE_BINDINGS: Kind = kind(
    RBAC_GROUP,
    "rolebindings",
    "rolebinding",
    "RoleBinding",
    true,
    &[],
    false,
);
pub static CLUSTER_ROLES: Kind = kind(
    RBAC_GROUP,
    "clusterroles",
    "clusterrole",
    "ClusterRole",
    false,
    &[],
    false,
);
pub static CLUSTER_ROLE_BINDINGS: Kind = kind(
    RBAC_GROUP,
    "clusterrolebindings",
    "clusterrolebinding",
    "ClusterRoleBinding",
    false,
    &[],
    false,
);

/// Every served kind.
pub static ALL: [&Kind; 14] = [
    &NAMESPACES,
    &SERVICES,
    &PODS,
    &SECRETS,
    &CONFIGMAPS,
    &ENDPOINTS,
    &EVENTS,
    &ENDPOINT_SLICES,
    &DEPLOYMENTS,
    &REPLICA_SETS,
    &ROLES,
    &ROLE_BINDINGS,
    &CLUSTER_ROLES,
    &CLUSTER_ROLE_BINDINGS,
];

/// The kind served at `group`/`version`/`plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    ALL.iter()
        .copied()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The API groups other than core, in discovery order.
pub fn groups() -> Vec<&'static str> {
    let mut groups: Vec<_> = ALL
        .iter()
        .map(|k| k.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    groups
}
