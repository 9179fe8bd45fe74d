//! The API server's HTTP side: discovery, the REST verbs on every served kind, watches, and the
//! pod `portforward` subresource. Everything here translates HTTP to [`Store`] calls and back.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::auth::Authenticator;
use crate::patch::{self, PatchType};
use crate::rbac::{self, User};
use crate::resources::{self, Kind};
use crate::selector::Selector;
use crate::store::{ApiError, ChangeType, Propagation, Store};
use crate::table;

/// Largest request body accepted (etcd's object limit).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// A response body: a JSON document or a watch stream.
pub type ApiBody = BoxBody<Bytes, Infallible>;

/// Everything a request handler needs.
pub struct Api {
    /// The objects.
    pub store: Arc<Store>,
    /// `host:port` the server is reached at, for discovery.
    pub address: String,
    /// Who holds which token.
    pub auth: Arc<Authenticator>,
    /// Where the kubelet keeps pod logs, for `pods/log`.
    pub pod_dirs: crate::logs::PodDirs,
    /// Where pods are, for `pods/portforward`.
    pub network: Arc<crate::network::ClusterNetwork>,
}

fn json_response(code: StatusCode, value: &Value) -> Response<ApiBody> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &ApiError) -> Response<ApiBody> {
    json_response(
        StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &error.status(),
    )
}

/// Where a resource request points.
struct Target {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| decode(v))
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                    out.push(byte);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Api {
    /// Answers one request.
    pub async fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> Response<ApiBody> {
        let user = match self.auth.authenticate(request.headers(), &self.store) {
            Ok(user) => user,
            Err(error) => return error_response(&error),
        };
        request.extensions_mut().insert(user);
        let path = request.uri().path().trim_end_matches('/').to_owned();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let result = match segments.as_slice() {
            ["version"] => Ok(json_response(
                StatusCode::OK,
                &json!({
                    "major": "1", "minor": "33", "gitVersion": "v1.33.0-cz-testkit", "gitCommit": "", "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"
                }),
            )),
            ["healthz" | "readyz" | "livez"] => {
                Ok(Response::new(Full::new(Bytes::from_static(b"ok")).boxed()))
            }
            ["api"] => Ok(json_response(
                StatusCode::OK,
                &json!({
                    "kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}]
                }),
            )),
            ["apis"] => Ok(json_response(
                StatusCode::OK,
                &json!({
                    "kind": "APIGroupList", "apiVersion": "v1",
                    "groups": resources::groups().into_iter().map(group_json).collect::<Vec<_>>()
                }),
            )),
            ["apis", group] if resources::groups().contains(group) => {
                Ok(json_response(StatusCode::OK, &{
                    let mut group = group_json(group);
                    group["kind"] = json!("APIGroup");
                    group["apiVersion"] = json!("v1");
                    group
                }))
            }
            ["api", "v1"] => Ok(json_response(StatusCode::OK, &resource_list(""))),
            ["apis", group, "v1"] if resources::groups().contains(group) => {
                Ok(json_response(StatusCode::OK, &resource_list(group)))
            }
            ["openapi", "v3"] => Ok(json_response(StatusCode::OK, &openapi_index())),
            ["openapi", "v3", "api", "v1"] => Ok(json_response(StatusCode::OK, &openapi_group(""))),
            ["openapi", "v3", "apis", group, "v1"] if resources::groups().contains(group) => {
                Ok(json_response(StatusCode::OK, &openapi_group(group)))
            }
            ["apis", crate::review::GROUP | crate::review::AUTHENTICATION_GROUP, "v1", review]
                if request.method() == Method::POST =>
            {
                let review = review.to_string();
                self.review(&review, request).await
            }
            ["api", "v1", rest @ ..] => self.resource("", rest, request).await,
            ["apis", group, "v1", rest @ ..] => {
                let group = group.to_string();
                self.resource(&group, rest, request).await
            }
            _ => Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            )),
        };
        result.unwrap_or_else(|error| error_response(&error))
    }

    async fn resource(
        &self,
        group: &str,
        rest: &[&str],
        request: Request<Incoming>,
    ) -> Result<Response<ApiBody>, ApiError> {
        let target = parse_target(group, rest)?;
        let query = request.uri().query().unwrap_or_default().to_owned();
        let table = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|accept| accept.contains("as=Table"));
        let kind = target.kind;
        let namespace = target.namespace.clone().unwrap_or_default();
        self.authorize(&request, &target, &query)?;
        if kind.namespaced && target.name.is_some() && target.namespace.is_none() {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("{} must be addressed within a namespace", kind.plural),
            ));
        }
        let method = request.method().clone();
        match (
            method,
            target.name.as_deref(),
            target.subresource.as_deref(),
        ) {
            (Method::GET, None, None) => {
                let selector = Selector::parse(
                    query_param(&query, "labelSelector").as_deref(),
                    query_param(&query, "fieldSelector").as_deref(),
                )
                .map_err(ApiError::bad_request)?;
                if query_param(&query, "watch").is_some_and(|w| w == "true" || w == "1") {
                    return self.watch(kind, target.namespace.as_deref(), selector, &query);
                }
                let (items, revision) =
                    self.store
                        .list(kind, target.namespace.as_deref(), &selector);
                let items: Vec<Value> = items.iter().map(|item| (**item).clone()).collect();
                if table {
                    return Ok(json_response(
                        StatusCode::OK,
                        &table::render(kind, &items, revision),
                    ));
                }
                Ok(json_response(
                    StatusCode::OK,
                    &json!({
                        "kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": revision.to_string()}, "items": items,
                    }),
                ))
            }
            (Method::GET, Some(name), None | Some("status")) => {
                let object = self.store.get(kind, &namespace, name)?;
                if table {
                    return Ok(json_response(
                        StatusCode::OK,
                        &table::render(kind, &[(*object).clone()], 0),
                    ));
                }
                Ok(json_response(StatusCode::OK, &object))
            }
            (Method::GET, Some(name), Some("portforward"))
                if std::ptr::eq(kind, &resources::PODS) =>
            {
                let pod = self.store.get(kind, &namespace, name)?;
                crate::portforward::upgrade(request, &self.network, &pod, &query)
            }
            (Method::GET, Some(name), Some("log")) if std::ptr::eq(kind, &resources::PODS) => {
                let pod = self.store.get(kind, &namespace, name)?;
                crate::logs::serve(&self.pod_dirs, self.store.clone(), &pod, &query).await
            }
            (Method::POST, None, None) => {
                let mut object = read_json(request).await?;
                let body_namespace = object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if kind.namespaced && !body_namespace.is_empty() && body_namespace != namespace {
                    return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
                }
                if !kind.namespaced {
                    object["metadata"]["namespace"] = Value::Null;
                }
                if std::ptr::eq(kind, &resources::PODS) {
                    let name = object
                        .pointer("/metadata/name")
                        .or_else(|| object.pointer("/metadata/generateName"));
                    let name = name.and_then(Value::as_str).unwrap_or_default().to_owned();
                    crate::pod_security::admit(&self.store, &namespace, &name, &object)?;
                }
                let created = self.store.create(kind, &namespace, object)?;
                Ok(json_response(StatusCode::CREATED, &created))
            }
            (Method::PUT, Some(name), sub @ (None | Some("status"))) => {
                let object = read_json(request).await?;
                let replaced = self
                    .store
                    .replace(kind, &namespace, name, object, sub.is_some())?;
                Ok(json_response(StatusCode::OK, &replaced))
            }
            (Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
                let content_type = request
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|c| c.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let patch_type = PatchType::from_content_type(&content_type)?;
                let body = read_json(request).await?;
                let current = self.store.get(kind, &namespace, name)?;
                let mut patched = (*current).clone();
                patch::apply(&mut patched, patch_type, body)?;
                // A patch without a resourceVersion applies to whatever is current; one with a
                // resourceVersion is a precondition, checked by replace.
                if patched
                    .pointer("/metadata/resourceVersion")
                    .is_none_or(|rv| rv == &current["metadata"]["resourceVersion"])
                {
                    patched["metadata"]["resourceVersion"] =
                        current["metadata"]["resourceVersion"].clone();
                }
                let replaced =
                    self.store
                        .replace(kind, &namespace, name, patched, sub.is_some())?;
                Ok(json_response(StatusCode::OK, &replaced))
            }
            (Method::DELETE, Some(name), None) => {
                let options = read_json(request).await.unwrap_or(Value::Null);
                let policy = query_param(&query, "propagationPolicy").or_else(|| {
                    options
                        .get("propagationPolicy")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                let propagation = match policy.as_deref() {
                    Some("Orphan") => Propagation::Orphan,
                    Some("Foreground") => Propagation::Foreground,
                    _ => Propagation::Background,
                };
                if let Some(uid) = options
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str)
                {
                    let current = self.store.get(kind, &namespace, name)?;
                    if current["metadata"]["uid"] != uid {
                        return Err(ApiError::new(409, "Conflict", format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", current["metadata"]["uid"])));
                    }
                }
                let deleted = self.store.delete(kind, &namespace, name, propagation)?;
                Ok(json_response(StatusCode::OK, &deleted))
            }
            (method, _, subresource) => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!(
                    "{method} is not supported on {}{} by the loopback cluster",
                    kind.plural,
                    subresource.map(|s| format!("/{s}")).unwrap_or_default()
                ),
            )),
        }
    }

    /// Checks the request's user may do what it asks (403 `Forbidden` if not).
    fn authorize(
        &self,
        request: &Request<Incoming>,
        target: &Target,
        query: &str,
    ) -> Result<(), ApiError> {
        let user = request
            .extensions()
            .get::<User>()
            .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized"))?;
        let watch = query_param(query, "watch").is_some_and(|w| w == "true" || w == "1");
        let attributes = rbac::Attributes {
            verb: rbac::verb(request.method(), target.name.is_some(), watch).to_owned(),
            group: target.kind.group.to_owned(),
            resource: target.kind.plural.to_owned(),
            subresource: target.subresource.clone().unwrap_or_default(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: target.name.clone().unwrap_or_default(),
        };
        rbac::authorize(&self.store, user, &attributes)
    }

    /// A `SelfSubjectAccessReview` or `SelfSubjectRulesReview`, answered for the request's user.
    async fn review(
        &self,
        resource: &str,
        request: Request<Incoming>,
    ) -> Result<Response<ApiBody>, ApiError> {
        let user = request
            .extensions()
            .get::<User>()
            .cloned()
            .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized"))?;
        let protobuf = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|c| {
                c.as_bytes()
                    .starts_with(crate::proto::CONTENT_TYPE.as_bytes())
            });
        let review = if protobuf {
            crate::proto::review(resource, &read_body(request).await?)?
        } else {
            read_json(request).await?
        };
        let answered = crate::review::answer(&self.store, &user, resource, review)?;
        Ok(json_response(StatusCode::CREATED, &answered))
    }

    /// A watch stream: newline-delimited watch events until the client goes or `timeoutSeconds`.
    fn watch(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        selector: Selector,
        query: &str,
    ) -> Result<Response<ApiBody>, ApiError> {
        let revision =
            query_param(query, "resourceVersion").filter(|rv| !rv.is_empty() && rv != "0");
        let revision = revision
            .map(|rv| {
                rv.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))
            })
            .transpose()?;
        let timeout = query_param(query, "timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1800u64);
        let bookmarks = query_param(query, "allowWatchBookmarks").is_some_and(|b| b == "true");
        let start = self.store.watch(kind, namespace, revision)?;
        let namespace = namespace.map(str::to_owned);
        let (events_tx, events_rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        tokio::spawn(async move {
            let send = |event: Value| {
                let events_tx = events_tx.clone();
                async move {
                    events_tx
                        .send(Ok(Frame::data(Bytes::from(format!("{event}\n")))))
                        .await
                        .is_ok()
                }
            };
            let mut last = start.revision;
            for change in start.replay {
                last = last.max(change.revision);
                if selector.matches(&change.object)
                    && !send(json!({"type": change.change.as_str(), "object": *change.object}))
                        .await
                {
                    return;
                }
            }
            let mut live = start.live;
            let deadline = tokio::time::sleep(Duration::from_secs(timeout));
            tokio::pin!(deadline);
            let mut bookmark = tokio::time::interval(Duration::from_secs(30));
            loop {
                let change = tokio::select! {
                    () = &mut deadline => return,
                    () = events_tx.closed() => return,
                    _ = bookmark.tick(), if bookmarks => {
                        let marker = json!({"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": {"resourceVersion": last.to_string()}}});
                        if !send(marker).await { return; }
                        continue;
                    }
                    change = live.recv() => change,
                };
                let change = match change {
                    Ok(change) => change,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let gone = ApiError::new(
                            410,
                            "Expired",
                            "the watch fell too far behind; list again",
                        );
                        let _ = send(json!({"type": "ERROR", "object": gone.status()})).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if change.revision <= last || !std::ptr::eq(change.kind, kind) {
                    continue;
                }
                last = change.revision;
                let in_namespace = namespace
                    .as_deref()
                    .is_none_or(|ns| change.object["metadata"]["namespace"] == ns);
                if !in_namespace {
                    continue;
                }
                // Objects entering or leaving the selection are added or deleted, as a real
                // watch cache reports them.
                let now = selector.matches(&change.object);
                let before = change
                    .previous
                    .as_ref()
                    .is_some_and(|p| selector.matches(p));
                let event_type = match (change.change, before, now) {
                    (ChangeType::Modified, false, true) => ChangeType::Added,
                    (ChangeType::Modified, true, false) => ChangeType::Deleted,
                    (ChangeType::Modified, false, false) => continue,
                    (other, _, true) => other,
                    (ChangeType::Deleted | ChangeType::Added, _, false) => continue,
                };
                if !send(json!({"type": event_type.as_str(), "object": *change.object})).await {
                    return;
                }
            }
        });
        let body = StreamBody::new(futures_util::stream::unfold(
            events_rx,
            |mut rx| async move { rx.recv().await.map(|event| (event, rx)) },
        ));
        let mut response = Response::new(BodyExt::boxed(body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    Ok(Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|error| {
            ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("could not read the request body: {error}"),
            )
        })?
        .to_bytes())
}

async fn read_json(request: Request<Incoming>) -> Result<Value, ApiError> {
    let body = read_body(request).await?;
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
    })
}

fn parse_target(group: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let (namespace, rest) = match rest {
        ["namespaces", namespace, resource, tail @ ..] => (
            Some(namespace.to_string()),
            [&[*resource][..], tail].concat(),
        ),
        other => (None, other.to_vec()),
    };
    let (resource, name, subresource) = match rest.as_slice() {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, sub] => (*resource, Some(name.to_string()), Some(sub.to_string())),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        }
    };
    let kind = resources::find(group, "v1", resource).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({resource})"),
        )
    })?;
    Ok(Target {
        kind,
        namespace,
        name,
        subresource,
    })
}

fn group_json(group: &str) -> Value {
    let version = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [version.clone()], "preferredVersion": version})
}

fn resource_list(group: &str) -> Value {
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut resources = Vec::new();
    for kind in resources::ALL.iter().filter(|k| k.group == group) {
        resources.push(json!({
            "name": kind.plural, "singularName": kind.singular, "namespaced": kind.namespaced, "kind": kind.kind,
            "verbs": verbs, "shortNames": kind.short_names,
        }));
        if kind.has_status {
            resources.push(json!({"name": format!("{}/status", kind.plural), "singularName": "", "namespaced": kind.namespaced, "kind": kind.kind, "verbs": ["get", "patch", "update"]}));
        }
        if std::ptr::eq(*kind, &resources::PODS) {
            resources.push(json!({"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}));
            resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
        }
    }
    let group_version = if group.is_empty() {
        "v1".to_owned()
    } else {
        format!("{group}/v1")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// The OpenAPI v3 index. Only what kubectl needs to see that the server validates fields itself
/// (`fieldValidation`), so `kubectl apply` needs no schema; no schemas are served.
fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1?hash=cz-testkit"}),
    );
    for group in resources::groups() {
        paths.insert(
            format!("apis/{group}/v1"),
            json!({"serverRelativeURL": format!("/openapi/v3/apis/{group}/v1?hash=cz-testkit")}),
        );
    }
    json!({"paths": paths})
}

/// One group version's OpenAPI v3 document: create and patch operations per kind, with their
/// `fieldValidation` parameter and group-version-kind.
fn openapi_group(group: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for kind in resources::ALL.iter().filter(|k| k.group == group) {
        let prefix = if group.is_empty() {
            "/api/v1".to_owned()
        } else {
            format!("/apis/{group}/v1")
        };
        let path = if kind.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", kind.plural)
        } else {
            format!("{prefix}/{}", kind.plural)
        };
        let gvk = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
        let parameter = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let operation = json!({"parameters": [parameter], "x-kubernetes-group-version-kind": gvk, "responses": {}});
        paths.insert(format!("{path}/{{name}}"), json!({"patch": operation}));
        paths.insert(path, json!({"post": operation}));
    }
    json!({"openapi": "3.0.0", "info": {"title": "cz-testkit", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": {}}})
}
