//! The API server's request routing: authentication, then discovery or the REST verbs on every
//! served kind and their subresources, each handed to its module ([`crate::discovery`],
//! [`crate::watch`], [`crate::scale`], [`crate::logs`], [`crate::portforward`]). Everything here
//! translates HTTP to [`Store`] calls and back.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::auth::Authenticator;
use crate::body::{error_response, json_response, read_json, ApiBody};
use crate::patch::{self, PatchType};
use crate::query::query_param;
use crate::rbac::{self, User};
use crate::resources;
use crate::selector::Selector;
use crate::store::{ApiError, Propagation, Store};
use crate::target::Target;
use crate::{negotiation, scale, table};

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
    /// The port-forwards being served, for [`crate::Cluster::cut_port_forwards`].
    pub port_forwards: Arc<crate::portforward::PortForwards>,
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
        if let Some(document) = crate::discovery::document(&segments, &self.address) {
            return json_response(StatusCode::OK, &document);
        }
        let result = match segments.as_slice() {
            ["healthz" | "readyz" | "livez"] => {
                Ok(Response::new(Full::new(Bytes::from_static(b"ok")).boxed()))
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
        let target = Target::parse(group, rest)?;
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
                    return crate::watch::serve(
                        &self.store,
                        kind,
                        target.namespace.as_deref(),
                        selector,
                        &query,
                    );
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
            (Method::GET, Some(name), Some("scale")) if scale::is_scalable(kind) => {
                Ok(json_response(
                    StatusCode::OK,
                    &scale::get(&self.store, kind, &namespace, name)?,
                ))
            }
            (Method::PUT, Some(name), Some("scale")) if scale::is_scalable(kind) => {
                let body = read_json(request).await?;
                let scaled = scale::replace(&self.store, kind, &namespace, name, &body)?;
                Ok(json_response(StatusCode::OK, &scaled))
            }
            (Method::PATCH, Some(name), Some("scale")) if scale::is_scalable(kind) => {
                let patch_type = PatchType::of(&request)?;
                let body = read_json(request).await?;
                let scaled = scale::patch(&self.store, kind, &namespace, name, patch_type, body)?;
                Ok(json_response(StatusCode::OK, &scaled))
            }
            (Method::GET, Some(name), Some("portforward"))
                if std::ptr::eq(kind, &resources::PODS) =>
            {
                let pod = self.store.get(kind, &namespace, name)?;
                crate::portforward::upgrade(
                    request,
                    &self.network,
                    &self.port_forwards,
                    &pod,
                    &query,
                )
            }
            (Method::GET, Some(name), Some("log")) if std::ptr::eq(kind, &resources::PODS) => {
                let pod = self.store.get(kind, &namespace, name)?;
                crate::logs::serve(&self.pod_dirs, self.store.clone(), &pod, &query).await
            }
            (Method::POST, None, None) => {
                let mut object = negotiation::read_object(request, kind).await?;
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
                let object = negotiation::read_object(request, kind).await?;
                let replaced = self
                    .store
                    .replace(kind, &namespace, name, object, sub.is_some())?;
                Ok(json_response(StatusCode::OK, &replaced))
            }
            (Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
                let patch_type = PatchType::of(&request)?;
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
        rbac::authorize(&self.store, user, &attributes)?;
        if rbac::needs_create_too(request.method(), &attributes) {
            rbac::authorize(
                &self.store,
                user,
                &rbac::Attributes {
                    verb: "create".to_owned(),
                    ..attributes
                },
            )?;
        }
        Ok(())
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
        let review = negotiation::read_review(request, resource).await?;
        let answered = crate::review::answer(&self.store, &user, resource, review)?;
        Ok(json_response(StatusCode::CREATED, &answered))
    }
}
