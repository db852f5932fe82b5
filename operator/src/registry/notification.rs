//! What registries report to the push endpoints, read from their bodies: pushes and
//! deletions in CNCF Distribution's notification envelope and in Harbor's webhook payloads
//! (`PUSH_ARTIFACT` / `DELETE_ARTIFACT`, and the same as CloudEvents), and why a body is
//! refused. The results of deleted images are marked `Deleted`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::client::{is_digest, MANIFEST_MEDIA_TYPES};
use super::push::PushEvent;

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("missing or wrong token in the Authorization header")]
    Unauthorized,
    #[error("malformed {format} webhook body: {message}")]
    Malformed {
        format: &'static str,
        message: String,
    },
    #[error("the operator is not accepting push events (shutting down)")]
    Unavailable,
    #[error("the request body did not arrive in time")]
    TooSlow,
    #[error("the request body could not be read or is larger than {limit} bytes")]
    BodyUnreadable { limit: usize },
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Malformed { .. } => StatusCode::BAD_REQUEST,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooSlow => StatusCode::REQUEST_TIMEOUT,
            Self::BodyUnreadable { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        };
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"imagewarden\""),
            );
        }
        response
    }
}

#[derive(Deserialize)]
pub(crate) struct Envelope {
    pub(crate) events: Vec<DistributionEvent>,
}

#[derive(Deserialize)]
pub(crate) struct DistributionEvent {
    #[serde(default)]
    pub(crate) action: String,
    #[serde(default)]
    pub(crate) target: Option<Target>,
    #[serde(default)]
    pub(crate) request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Target {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    pub(crate) digest: String,
    #[serde(default)]
    pub(crate) repository: String,
    #[serde(default)]
    pub(crate) tag: String,
    #[serde(default)]
    pub(crate) url: String,
}

#[derive(Deserialize)]
pub(crate) struct Request {
    #[serde(default)]
    pub(crate) host: String,
}

/// The tagged manifest pushes in a CNCF Distribution notification envelope.
pub fn parse_distribution_envelope(body: &[u8]) -> Result<Vec<PushEvent>, WebhookError> {
    let malformed = |message: String| WebhookError::Malformed {
        format: "Distribution",
        message,
    };
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "{e}; expected {{\"events\":[{{\"action\",\"target\",\"request\"}}]}}"
        ))
    })?;
    let mut pushes = Vec::new();
    for event in envelope.events {
        let Some(target) = event.target else { continue };
        let is_manifest = MANIFEST_MEDIA_TYPES.contains(&target.media_type.as_str())
            || target.url.contains("/manifests/");
        if event.action != "push" || !is_manifest || target.tag.is_empty() {
            continue;
        }
        if target.repository.is_empty() || !is_digest(&target.digest) {
            return Err(malformed(format!(
                "a manifest push of tag {:?} lacks a repository or a valid digest",
                target.tag
            )));
        }
        // The push request's Host is the registry name clients used; the target URL is
        // built from it too, so it serves when `request` is absent.
        let host = event
            .request
            .map(|r| r.host)
            .filter(|h| !h.is_empty())
            .or_else(|| url_host(&target.url))
            .ok_or_else(|| {
                malformed(format!(
                    "the push of {}:{} names no registry host (request.host or target.url)",
                    target.repository, target.tag
                ))
            })?;
        pushes.push(PushEvent {
            registry_host: host.to_ascii_lowercase(),
            repository: target.repository,
            tag: target.tag,
            digest: target.digest,
        });
    }
    Ok(pushes)
}

pub(crate) fn url_host(url: &str) -> Option<String> {
    reqwest::Url::parse(url).ok().and_then(|u| {
        let host = u.host_str()?.to_string();
        Some(match u.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    })
}

#[derive(Deserialize)]
pub(crate) struct HarborWebhook {
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    /// The default payload format's event.
    #[serde(default)]
    pub(crate) event_data: Option<serde_json::Value>,
    /// The CloudEvents format's event.
    #[serde(default)]
    pub(crate) data: Option<serde_json::Value>,
}

/// Harbor's push event type in its default and its CloudEvents payload formats.
const HARBOR_PUSH_TYPES: &[&str] = &["PUSH_ARTIFACT", "harbor.artifact.pushed"];

#[derive(Deserialize)]
pub(crate) struct HarborEventData {
    #[serde(default)]
    pub(crate) resources: Vec<HarborResource>,
    repository: HarborRepository,
}

#[derive(Deserialize)]
pub(crate) struct HarborResource {
    #[serde(default)]
    pub(crate) digest: String,
    #[serde(default)]
    pub(crate) tag: String,
    #[serde(default)]
    pub(crate) resource_url: String,
}

#[derive(Deserialize)]
struct HarborRepository {
    #[serde(default)]
    repo_full_name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

/// The tagged pushes in a Harbor webhook (default or CloudEvents payload format). Other
/// event types yield no pushes.
pub fn parse_harbor_webhook(body: &[u8]) -> Result<Vec<PushEvent>, WebhookError> {
    let malformed = harbor_malformed;
    let Some((data, repository)) = harbor_event(body, HARBOR_PUSH_TYPES)? else {
        return Ok(Vec::new());
    };
    let mut pushes = Vec::new();
    for resource in data.resources {
        // A push by digest carries no tag, or the digest in its place.
        if resource.tag.is_empty() || is_digest(&resource.tag) {
            continue;
        }
        if !is_digest(&resource.digest) {
            return Err(malformed(format!(
                "the push of {repository}:{} has no valid digest",
                resource.tag
            )));
        }
        let host = harbor_host(&resource.resource_url).ok_or_else(|| {
            malformed(format!(
                "the push of {repository}:{} has no registry host in resource_url {:?}",
                resource.tag, resource.resource_url
            ))
        })?;
        pushes.push(PushEvent {
            registry_host: host,
            repository: repository.clone(),
            tag: resource.tag,
            digest: resource.digest,
        });
    }
    Ok(pushes)
}

pub(crate) fn harbor_malformed(message: String) -> WebhookError {
    WebhookError::Malformed {
        format: "Harbor",
        message,
    }
}

/// The registry host of a Harbor `resource_url` (`host[:port]/namespace/name:tag`).
pub(crate) fn harbor_host(resource_url: &str) -> Option<String> {
    resource_url
        .split_once('/')
        .map(|(host, _)| host)
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
}

/// The event data and repository of a Harbor webhook whose type is one of `types`;
/// `None` for other types.
pub(crate) fn harbor_event(
    body: &[u8],
    types: &[&str],
) -> Result<Option<(HarborEventData, String)>, WebhookError> {
    let malformed = harbor_malformed;
    let webhook: HarborWebhook = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "{e}; expected {{\"type\":\"PUSH_ARTIFACT\",\"event_data\":{{\"resources\",\"repository\"}}}}"
        ))
    })?;
    if !types.contains(&webhook.event_type.as_str()) {
        return Ok(None);
    }
    let data = webhook.event_data.or(webhook.data).ok_or_else(|| {
        malformed(format!(
            "{} without event_data (or data)",
            webhook.event_type
        ))
    })?;
    let data: HarborEventData = serde_json::from_value(data).map_err(|e| {
        malformed(format!(
            "{e}; expected {{\"resources\":[{{\"digest\",\"tag\",\"resource_url\"}}],\"repository\":{{\"repo_full_name\"}}}}"
        ))
    })?;
    let repository = if !data.repository.repo_full_name.is_empty() {
        data.repository.repo_full_name.clone()
    } else if !data.repository.namespace.is_empty() && !data.repository.name.is_empty() {
        format!("{}/{}", data.repository.namespace, data.repository.name)
    } else {
        return Err(malformed(
            "event_data.repository has neither repo_full_name nor namespace and name".into(),
        ));
    };
    Ok(Some((data, repository)))
}

/// A manifest (by digest) or a tag deleted from a registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeleteEvent {
    /// `host[:port]` of the registry, as the delete request named it.
    pub registry_host: String,
    pub repository: String,
    /// The deleted manifest; `None` when only a tag was deleted.
    pub digest: Option<String>,
    /// The deleted tag, when the registry names one.
    pub tag: Option<String>,
}

/// Harbor's artifact deletion in its default and CloudEvents payload formats.
const HARBOR_DELETE_TYPES: &[&str] = &["DELETE_ARTIFACT", "harbor.artifact.deleted"];

/// The deletions in a CNCF Distribution notification envelope. Distribution reports blob
/// deletions in the same shape as manifest deletions; a blob digest never names an image,
/// so it matches no result. Events without a repository or a digest or tag are skipped.
pub fn parse_distribution_deletes(body: &[u8]) -> Result<Vec<DeleteEvent>, WebhookError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| WebhookError::Malformed {
        format: "Distribution",
        message: format!("{e}; expected {{\"events\":[{{\"action\",\"target\",\"request\"}}]}}"),
    })?;
    let mut deletes = Vec::new();
    for event in envelope.events {
        if event.action != "delete" {
            continue;
        }
        let Some(target) = event.target else { continue };
        let digest = Some(target.digest).filter(|d| is_digest(d));
        let tag = Some(target.tag).filter(|t| !t.is_empty());
        if target.repository.is_empty() || (digest.is_none() && tag.is_none()) {
            continue;
        }
        let Some(host) = event
            .request
            .map(|r| r.host)
            .filter(|h| !h.is_empty())
            .or_else(|| url_host(&target.url))
        else {
            continue;
        };
        deletes.push(DeleteEvent {
            registry_host: host.to_ascii_lowercase(),
            repository: target.repository,
            digest,
            tag,
        });
    }
    Ok(deletes)
}

/// The deleted artifacts in a Harbor webhook; other event types yield none.
pub fn parse_harbor_deletes(body: &[u8]) -> Result<Vec<DeleteEvent>, WebhookError> {
    let Some((data, repository)) = harbor_event(body, HARBOR_DELETE_TYPES)? else {
        return Ok(Vec::new());
    };
    let mut deletes = Vec::new();
    for resource in data.resources {
        if !is_digest(&resource.digest) {
            return Err(harbor_malformed(format!(
                "the deletion of an artifact of {repository} has no valid digest"
            )));
        }
        let host = harbor_host(&resource.resource_url).ok_or_else(|| {
            harbor_malformed(format!(
                "the deletion of {repository}@{} has no registry host in resource_url {:?}",
                resource.digest, resource.resource_url
            ))
        })?;
        deletes.push(DeleteEvent {
            registry_host: host,
            repository: repository.clone(),
            digest: Some(resource.digest),
            tag: Some(resource.tag).filter(|t| !t.is_empty() && !is_digest(t)),
        });
    }
    Ok(deletes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:8a9e9863dbb6e10edb5adfe917c00da84e1700fa76e7ed02476aa6e6fb8ee0d8";

    #[test]
    fn distribution_manifest_deletes_are_read_and_pushes_are_not() {
        // The shape Distribution 2.8 sends for `DELETE /v2/<name>/manifests/<digest>`.
        let body = format!(
            r#"{{"events":[
              {{"id":"1","action":"delete","target":{{"digest":"{DIGEST}","repository":"team-a/app"}},"request":{{"id":"r","addr":"127.0.0.1:4000","host":"127.0.0.1:5000","method":"DELETE","useragent":"x"}},"actor":{{}},"source":{{"addr":"h:5000"}}}},
              {{"action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{DIGEST}","repository":"team-a/app","tag":"v1"}},"request":{{"host":"r:5000"}}}},
              {{"action":"delete","target":{{"repository":"team-a/app","tag":"old"}},"request":{{"host":"R:5000"}}}},
              {{"action":"delete","target":{{"digest":"not-a-digest","repository":"team-a/app"}},"request":{{"host":"r:5000"}}}}
            ]}}"#
        );
        assert_eq!(
            parse_distribution_deletes(body.as_bytes()).unwrap(),
            vec![
                DeleteEvent {
                    registry_host: "127.0.0.1:5000".into(),
                    repository: "team-a/app".into(),
                    digest: Some(DIGEST.into()),
                    tag: None,
                },
                DeleteEvent {
                    registry_host: "r:5000".into(),
                    repository: "team-a/app".into(),
                    digest: None,
                    tag: Some("old".into()),
                },
            ]
        );
    }

    #[test]
    fn harbor_artifact_deletions_are_read_in_both_formats() {
        let default = format!(
            r#"{{"type":"DELETE_ARTIFACT","occur_at":1586922308,"operator":"admin","event_data":{{"resources":[{{"digest":"{DIGEST}","tag":"latest","resource_url":"hj.harbor.com/library/busybox:latest"}}],"repository":{{"name":"busybox","namespace":"library","repo_full_name":"library/busybox","repo_type":"private"}}}}}}"#
        );
        let want = vec![DeleteEvent {
            registry_host: "hj.harbor.com".into(),
            repository: "library/busybox".into(),
            digest: Some(DIGEST.into()),
            tag: Some("latest".into()),
        }];
        assert_eq!(parse_harbor_deletes(default.as_bytes()).unwrap(), want);
        let cloud = format!(
            r#"{{"specversion":"1.0","type":"harbor.artifact.deleted","data":{{"resources":[{{"digest":"{DIGEST}","tag":"latest","resource_url":"hj.harbor.com/library/busybox:latest"}}],"repository":{{"repo_full_name":"library/busybox"}}}}}}"#
        );
        assert_eq!(parse_harbor_deletes(cloud.as_bytes()).unwrap(), want);
        let push = r#"{"type":"PUSH_ARTIFACT","event_data":{"resources":[],"repository":{"repo_full_name":"a/b"}}}"#;
        assert!(parse_harbor_deletes(push.as_bytes()).unwrap().is_empty());
        let bad = r#"{"type":"DELETE_ARTIFACT","event_data":{"resources":[{"digest":"x","resource_url":"h/a/b"}],"repository":{"repo_full_name":"a/b"}}}"#;
        assert!(parse_harbor_deletes(bad.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("no valid digest"));
    }
}
