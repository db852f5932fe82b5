//! Deletions reported by registries: CNCF Distribution's `delete` notifications and
//! Harbor's `DELETE_ARTIFACT` (`harbor.artifact.deleted` in CloudEvents format). They
//! arrive at the push endpoints; the results of deleted images are marked `Deleted`.

use super::client::is_digest;
use super::webhook::{
    harbor_event, harbor_host, harbor_malformed, url_host, Envelope, WebhookError,
};

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
