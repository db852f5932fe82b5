//! Which namespaces the operator watches and writes: every namespace, or only those an
//! administrator listed (`--watch-namespaces`), so that its RBAC can be Roles in those
//! namespaces instead of cluster-wide rules.

use kube::api::{Api, ListParams};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

/// The namespaces the operator acts in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace (cluster-wide RBAC).
    #[default]
    All,
    /// Only these namespaces (sorted, without duplicates, never empty).
    Namespaces(Vec<String>),
}

impl WatchScope {
    /// The scope of a `--watch-namespaces` list: empty means every namespace.
    pub fn from_list(namespaces: &[String]) -> Self {
        let mut list: Vec<String> = namespaces.to_vec();
        list.sort();
        list.dedup();
        if list.is_empty() {
            WatchScope::All
        } else {
            WatchScope::Namespaces(list)
        }
    }

    /// Whether objects of `namespace` are the operator's to read and write.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            WatchScope::All => true,
            WatchScope::Namespaces(list) => list.iter().any(|n| n == namespace),
        }
    }

    /// One API handle per watched scope: one for all namespaces, or one per listed namespace
    /// (the watches and lists of a kind go through these, so that a scoped operator never
    /// makes a cluster-wide request).
    pub fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            WatchScope::All => vec![Api::all(client.clone())],
            WatchScope::Namespaces(list) => list
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect(),
        }
    }

    /// The namespace of each handle [`WatchScope::apis`] returns, in the same order
    /// (`None`: every namespace).
    pub fn namespaces(&self) -> Vec<Option<String>> {
        match self {
            WatchScope::All => vec![None],
            WatchScope::Namespaces(list) => list.iter().cloned().map(Some).collect(),
        }
    }

    /// Every object of kind `K` in the watched namespaces that `params` selects.
    pub async fn list<K>(&self, client: &Client, params: &ListParams) -> kube::Result<Vec<K>>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let mut items = Vec::new();
        for api in self.apis::<K>(client) {
            items.extend(api.list(params).await?.items);
        }
        Ok(items)
    }
}

/// Checks one `--watch-namespaces` entry: a namespace name (an RFC 1123 label).
pub fn parse_namespace(s: &str) -> Result<String, String> {
    let s = s.trim();
    let valid = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if valid {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a namespace name (lower-case letters, digits and '-', at most 63)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_watches_everything_and_a_list_only_its_namespaces() {
        assert_eq!(WatchScope::from_list(&[]), WatchScope::All);
        assert!(WatchScope::All.contains("anything"));
        let scope = WatchScope::from_list(&["team-b".into(), "team-a".into(), "team-b".into()]);
        assert_eq!(
            scope,
            WatchScope::Namespaces(vec!["team-a".into(), "team-b".into()])
        );
        assert!(scope.contains("team-a"));
        assert!(!scope.contains("team-c"));
    }

    #[test]
    fn namespace_names_are_checked() {
        assert_eq!(parse_namespace(" team-a ").unwrap(), "team-a");
        for bad in ["", "Team", "-a", "a-", "a_b", &"a".repeat(64)] {
            let err = parse_namespace(bad).unwrap_err();
            assert!(err.contains("not a namespace name"), "{bad}: {err}");
        }
    }
}
