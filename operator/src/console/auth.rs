//! Who calls the status API and what they may see: the caller's bearer token is checked
//! with a `TokenReview`, every read and action with a `SubjectAccessReview` for the caller
//! on the object's resource and namespace. The API server decides; the operator only asks
//! (as Kubernetes Dashboard and Headlamp do with the user's own token).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::Client;
use sha2::Digest;

/// How long an answer of the API server is reused: short, so that a revoked token or
/// RoleBinding stops working within seconds.
const REUSE_FOR: Duration = Duration::from_secs(10);
/// Answers remembered at most (the cache is emptied when full).
const MAX_REMEMBERED: usize = 4096;
/// Longest bearer token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// An authenticated caller, as the `TokenReview` named them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
    /// A digest of the token: the key of remembered decisions.
    key: [u8; 32],
}

/// Why a request is refused before it is answered.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No usable bearer token (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The API server could not be asked (503).
    #[error("checking the caller with the Kubernetes API failed: {0}")]
    Unavailable(String),
}

/// One question for a `SubjectAccessReview`: may the caller `verb` the `resource` of
/// `group` (named `name`, in `namespace`; cluster-wide when `namespace` is empty).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub namespace: String,
    pub name: Option<String>,
}

impl Access {
    /// `verb` on imagewarden.io `resource` in `namespace` (empty: every namespace).
    pub fn imagewarden(verb: &'static str, resource: &'static str, namespace: &str) -> Self {
        Self {
            verb,
            group: "imagewarden.io",
            resource,
            namespace: namespace.to_string(),
            name: None,
        }
    }

    /// The same question about one named object.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}.{}", self.verb, self.resource, self.group)?;
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        if self.namespace.is_empty() {
            write!(f, " in every namespace")
        } else {
            write!(f, " in namespace {}", self.namespace)
        }
    }
}

/// Answers of the API server by key, each with the time it was given.
type Memory<K, T> = Mutex<HashMap<K, Remembered<T>>>;

struct Remembered<T> {
    value: T,
    at: Instant,
}

/// Asks the API server who a token is and what they may do, remembering the answers for
/// a few seconds.
pub struct Authorizer {
    client: Client,
    callers: Memory<[u8; 32], Caller>,
    decisions: Memory<([u8; 32], Access), bool>,
}

fn recall<K: std::hash::Hash + Eq, T: Clone>(map: &Memory<K, T>, key: &K) -> Option<T> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.get(key)
        .filter(|r| r.at.elapsed() < REUSE_FOR)
        .map(|r| r.value.clone())
}

fn remember<K: std::hash::Hash + Eq, T>(map: &Memory<K, T>, key: K, value: T) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= MAX_REMEMBERED {
        map.retain(|_, r| r.at.elapsed() < REUSE_FOR);
        if map.len() >= MAX_REMEMBERED {
            map.clear();
        }
    }
    map.insert(
        key,
        Remembered {
            value,
            at: Instant::now(),
        },
    );
}

/// The bearer token of an `Authorization` header value.
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let Some(value) = header else {
        return Err(AuthError::Unauthenticated(
            "no bearer token: send `Authorization: Bearer <token>` (e.g. from `kubectl create token`)".into(),
        ));
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            AuthError::Unauthenticated("the Authorization header is not `Bearer <token>`".into())
        })?;
    if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::Unauthenticated(
            "the bearer token is not a Kubernetes token".into(),
        ));
    }
    Ok(token)
}

impl Authorizer {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            callers: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// Who `token` is, by a `TokenReview`.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(caller) = recall(&self.callers, &key) {
            return Ok(caller);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        let user = status
            .user
            .filter(|_| status.authenticated == Some(true))
            .ok_or_else(|| {
                AuthError::Unauthenticated(
                    "the bearer token is not valid (unknown, expired or revoked)".into(),
                )
            })?;
        let caller = Caller {
            username: user.username.unwrap_or_default(),
            uid: user.uid,
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
            key,
        };
        remember(&self.callers, key, caller.clone());
        Ok(caller)
    }

    /// Whether `caller` may do `access`, by a `SubjectAccessReview`.
    pub async fn allowed(&self, caller: &Caller, access: &Access) -> Result<bool, AuthError> {
        let key = (caller.key, access.clone());
        if let Some(allowed) = recall(&self.decisions, &key) {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.username.clone()),
                uid: caller.uid.clone(),
                groups: Some(caller.groups.clone()),
                extra: Some(caller.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.to_string()),
                    group: Some(access.group.to_string()),
                    resource: Some(access.resource.to_string()),
                    namespace: Some(access.namespace.clone()),
                    name: access.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let allowed = answer
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true));
        remember(&self.decisions, key, allowed);
        Ok(allowed)
    }

    /// The namespaces, of `candidates`, in which `caller` may `verb` `resource`: all of
    /// them when allowed cluster-wide, else each one asked (a few at a time).
    pub async fn namespaces(
        &self,
        caller: &Caller,
        verb: &'static str,
        resource: &'static str,
        candidates: Vec<String>,
    ) -> Result<Scope, AuthError> {
        use futures::StreamExt;
        if self
            .allowed(caller, &Access::imagewarden(verb, resource, ""))
            .await?
        {
            return Ok(Scope::All);
        }
        let answers: Vec<(String, Result<bool, AuthError>)> =
            futures::stream::iter(candidates.into_iter().map(|ns| async move {
                let allowed = self
                    .allowed(caller, &Access::imagewarden(verb, resource, &ns))
                    .await;
                (ns, allowed)
            }))
            .buffer_unordered(8)
            .collect()
            .await;
        let mut allowed = std::collections::BTreeSet::new();
        for (ns, answer) in answers {
            if answer? {
                allowed.insert(ns);
            }
        }
        Ok(Scope::Some(allowed))
    }
}

/// The namespaces a caller may read a resource in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Some(std::collections::BTreeSet<String>),
}

impl Scope {
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Some(set) => set.contains(namespace),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Scope::Some(set) if set.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_header_with_a_plausible_token_is_accepted() {
        assert!(matches!(
            bearer_token(None),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(bearer_token(Some("Basic dXNlcjpwYXNz")).is_err());
        assert!(bearer_token(Some("Bearer ")).is_err());
        assert!(bearer_token(Some("Bearer a\u{7}b")).is_err());
        assert!(
            bearer_token(Some(&format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1)))).is_err()
        );
        assert_eq!(
            bearer_token(Some("Bearer eyJ.abc.def")).unwrap(),
            "eyJ.abc.def"
        );
    }

    #[test]
    fn a_scope_of_no_namespace_is_empty_and_all_contains_any() {
        assert!(Scope::Some(Default::default()).is_empty());
        assert!(!Scope::All.is_empty());
        assert!(Scope::All.contains("team-b"));
        let one = Scope::Some(["team-a".to_string()].into());
        assert!(one.contains("team-a") && !one.contains("team-b"));
    }
}
