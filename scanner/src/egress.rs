//! Where outgoing requests may go. Every host name is checked after DNS resolution and the
//! connection is made to the checked address (the resolver below hands the HTTP client
//! only addresses that passed), so a name that resolves differently on the second lookup
//! cannot reach a denied address. Addresses written literally in a URL never reach a
//! resolver and are checked with [`EgressPolicy::check_url`] before each request.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

pub use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Ranges denied unless allow-listed: unspecified, loopback, link-local (with the cloud
/// metadata address 169.254.169.254), multicast and broadcast, for IPv4 and IPv6.
pub const DEFAULT_DENIED: &[&str] = &[
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
];

/// Docker Hub's token service lives on another host than its registry.
const BUILTIN_REALM_HOSTS: &[(&str, &str)] = &[
    ("registry-1.docker.io", "auth.docker.io"),
    ("index.docker.io", "auth.docker.io"),
];

/// An entry of an allow list: an address range, or a host name that token realms and
/// redirects may point at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowEntry {
    Range(IpNet),
    Host(String),
}

impl FromStr for AllowEntry {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Self::Range(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Range(IpNet::from(ip)));
        }
        let host = s.to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !host.starts_with('.')
            && !host.ends_with('.');
        if valid {
            Ok(Self::Host(host))
        } else {
            Err(format!(
                "{s:?} is neither an address range (10.0.0.0/8, 127.0.0.1) nor a host name"
            ))
        }
    }
}

/// Parses a range such as `10.96.0.0/12`, with a clear error.
pub fn parse_range(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address range such as 10.96.0.0/12"))
}

/// Which addresses outgoing requests may reach.
#[derive(Clone)]
pub struct EgressPolicy {
    denied: Vec<IpNet>,
    allowed: Vec<IpNet>,
    hosts: Vec<String>,
    /// Token realms may be on any host.
    any_host: bool,
    /// Where names are looked up before the answers are filtered; `None`: the system's
    /// resolver.
    lookup: Option<Arc<dyn Resolve>>,
}

impl fmt::Debug for EgressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressPolicy")
            .field("denied", &self.denied)
            .field("allowed", &self.allowed)
            .field("hosts", &self.hosts)
            .field("any_host", &self.any_host)
            .field("lookup", &self.lookup.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// Two policies are equal when they allow and deny the same (the resolver is not compared).
impl PartialEq for EgressPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.denied == other.denied
            && self.allowed == other.allowed
            && self.hosts == other.hosts
            && self.any_host == other.any_host
    }
}

impl Eq for EgressPolicy {}

impl Default for EgressPolicy {
    /// The default ranges denied, nothing allowed.
    fn default() -> Self {
        Self::new(&[], &[])
    }
}

/// Where the operator, its scanner Jobs and the scanner API (`imagewarden server`) may send
/// requests (registries, token services, notification receivers). Set by the cluster
/// administrator, never by a rule or a scan request.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct EgressSettings {
    /// The cluster's Service and Pod ranges (CIDRs, comma-separated): denied, like
    /// loopback, link-local (cloud metadata) and multicast addresses, unless allowed below.
    #[arg(
        long = "cluster-cidrs",
        env = "IMAGEWARDEN_CLUSTER_CIDRS",
        value_delimiter = ',',
        value_parser = parse_range
    )]
    pub cluster_cidrs: Vec<IpNet>,
    /// Address ranges requests may reach although denied above (e.g. an in-cluster
    /// registry's Service address, or 127.0.0.0/8 for a registry on the node), and host
    /// names token realms may point at besides the registry's own host; comma-separated.
    #[arg(
        long = "egress-allow",
        env = "IMAGEWARDEN_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    pub allow: Vec<AllowEntry>,
}

impl EgressSettings {
    /// The policy these settings describe.
    pub fn policy(&self) -> std::sync::Arc<EgressPolicy> {
        std::sync::Arc::new(EgressPolicy::new(&self.cluster_cidrs, &self.allow))
    }

    /// The same settings as command-line arguments (`scan-image` of scanner Jobs).
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.cluster_cidrs.is_empty() {
            let list: Vec<String> = self.cluster_cidrs.iter().map(ToString::to_string).collect();
            args.push(format!("--cluster-cidrs={}", list.join(",")));
        }
        if !self.allow.is_empty() {
            let list: Vec<String> = self.allow.iter().map(ToString::to_string).collect();
            args.push(format!("--egress-allow={}", list.join(",")));
        }
        args
    }
}

/// A request the egress policy refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EgressDenied {
    pub message: String,
}

impl EgressPolicy {
    /// Denies [`DEFAULT_DENIED`] and `extra_denied` (the cluster's Service and Pod ranges),
    /// except what `allow` lists.
    pub fn new(extra_denied: &[IpNet], allow: &[AllowEntry]) -> Self {
        let mut denied: Vec<IpNet> = DEFAULT_DENIED
            .iter()
            .map(|r| r.parse().expect("built-in range"))
            .collect();
        denied.extend(extra_denied.iter().map(IpNet::trunc));
        let mut allowed = Vec::new();
        let mut hosts = Vec::new();
        for entry in allow {
            match entry {
                AllowEntry::Range(net) => allowed.push(*net),
                AllowEntry::Host(host) => hosts.push(host.clone()),
            }
        }
        Self {
            denied,
            allowed,
            hosts,
            any_host: false,
            lookup: None,
        }
    }

    /// This policy with names looked up by `lookup` instead of the system's resolver (its
    /// answers are filtered all the same): for a resolver of the cluster's own, or to show
    /// in a test what a name that answers differently from one lookup to the next reaches.
    pub fn with_lookup(mut self, lookup: Arc<dyn Resolve>) -> Self {
        self.lookup = Some(lookup);
        self
    }

    /// A policy that lets everything through, token realms on any host included (the
    /// CLI, run by a user on their own machine against registries they chose).
    pub fn unrestricted() -> Self {
        Self {
            denied: Vec::new(),
            allowed: Vec::new(),
            hosts: Vec::new(),
            any_host: true,
            lookup: None,
        }
    }

    /// Whether `ip` may be connected to; the error names the range that denied it.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), EgressDenied> {
        let ip = ip.to_canonical();
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match self.denied.iter().find(|n| n.contains(&ip)) {
            None => Ok(()),
            Some(range) => Err(EgressDenied {
                message: format!(
                    "{host} resolves to {ip}, in the denied range {range} ({}); a cluster \
                     administrator may allow it in the operator's egress allow list",
                    describe(range)
                ),
            }),
        }
    }

    /// Checks a URL whose host is an address literal (names are checked when resolved).
    pub fn check_url(&self, url: &Url) -> Result<(), EgressDenied> {
        let Some(host) = url.host_str() else {
            return Err(EgressDenied {
                message: format!("{url} has no host"),
            });
        };
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        match literal.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(host, ip),
            Err(_) => Ok(()),
        }
    }

    /// Whether `other` (a token realm's or redirect target's host) may be used by a client
    /// of `registry` (both `host` without port): the same host, a host on the allow list,
    /// or the built-in pair of Docker Hub.
    pub fn may_follow(&self, registry: &str, other: &str) -> bool {
        let registry = registry.to_ascii_lowercase();
        let other = other.to_ascii_lowercase();
        self.any_host
            || registry == other
            || self.hosts.contains(&other)
            || BUILTIN_REALM_HOSTS
                .iter()
                .any(|(r, realm)| *r == registry && *realm == other)
    }

    /// A DNS resolver for `reqwest::ClientBuilder::dns_resolver` that returns only the
    /// addresses this policy allows, and an error when none is left.
    pub fn resolver(self: &Arc<Self>) -> Arc<dyn Resolve> {
        Arc::new(PolicyResolver(self.clone()))
    }

    /// `builder` with this policy's resolver.
    pub fn apply(self: &Arc<Self>, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        builder.dns_resolver(self.resolver())
    }

    /// `builder` for downloads that carry no credentials (database sources): this policy's
    /// resolver, and redirects followed (at most 10) only to addresses it allows.
    pub fn apply_to_downloads(
        self: &Arc<Self>,
        builder: reqwest::ClientBuilder,
    ) -> reqwest::ClientBuilder {
        let policy = self.clone();
        self.apply(builder)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 10 {
                    let message = format!("more than 10 redirects, the last to {}", attempt.url());
                    return attempt.error(EgressDenied { message });
                }
                match policy.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(denial) => attempt.error(denial),
                }
            }))
    }

    /// Checks a URL given as text before a request to it (see [`Self::check_url`]).
    pub fn check_url_str(&self, url: &str) -> Result<(), EgressDenied> {
        let parsed = Url::parse(url).map_err(|_| EgressDenied {
            message: format!("{url} is not a URL"),
        })?;
        self.check_url(&parsed)
    }
}

fn describe(range: &IpNet) -> &'static str {
    let ip = range.network();
    if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() || range.prefix_len() == 8 && ip == IpAddr::from([0, 0, 0, 0]) {
        "unspecified"
    } else if ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        "multicast or broadcast"
    } else if matches!(ip, IpAddr::V4(v4) if v4.is_link_local())
        || matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
    {
        "link-local, where cloud metadata services live"
    } else {
        "a cluster range"
    }
}

struct PolicyResolver(Arc<EgressPolicy>);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> = match &policy.lookup {
                Some(lookup) => lookup.resolve(name).await?.collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let mut first_denial = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match policy.check_ip(&host, a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        first_denial.get_or_insert(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let denial = first_denial.unwrap_or_else(|| EgressDenied {
                    message: format!("{host} resolves to no address"),
                });
                return Err(Box::new(denial) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The egress denial somewhere in an error's chain of sources.
pub fn denial_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressDenied> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(d) = e.downcast_ref::<EgressDenied>() {
            return Some(d);
        }
        current = e.source();
    }
    None
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Range(n) => write!(f, "{n}"),
            Self::Host(h) => f.write_str(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_policy_denies_local_and_metadata_addresses() {
        let p = EgressPolicy::default();
        for denied in [
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(p.check_ip("h", ip(denied)).is_err(), "{denied}");
        }
        for allowed in ["10.1.2.3", "192.168.1.1", "8.8.8.8", "2001:db8::1"] {
            assert!(p.check_ip("h", ip(allowed)).is_ok(), "{allowed}");
        }
        let err = p.check_ip("evil", ip("169.254.169.254")).unwrap_err();
        assert!(err.message.contains("cloud metadata"), "{err}");
    }

    #[test]
    fn cluster_ranges_are_denied_and_the_allow_list_wins() {
        let cluster = [parse_range("10.96.0.0/12").unwrap()];
        let p = EgressPolicy::new(&cluster, &[]);
        assert!(p.check_ip("svc", ip("10.96.0.10")).is_err());
        assert!(p.check_ip("other", ip("10.200.0.1")).is_ok());
        let allow: Vec<AllowEntry> = ["10.96.5.5", "127.0.0.0/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let p = EgressPolicy::new(&cluster, &allow);
        assert!(p.check_ip("svc", ip("10.96.5.5")).is_ok());
        assert!(p.check_ip("svc", ip("10.96.5.6")).is_err());
        assert!(p.check_ip("lo", ip("127.0.0.1")).is_ok());
        assert!(p.check_ip("md", ip("169.254.169.254")).is_err());
    }

    #[test]
    fn literal_urls_are_checked() {
        let p = EgressPolicy::default();
        assert!(p
            .check_url(&Url::parse("http://169.254.169.254/latest").unwrap())
            .is_err());
        assert!(p
            .check_url(&Url::parse("http://[::1]:5000/v2/").unwrap())
            .is_err());
        assert!(p
            .check_url(&Url::parse("https://registry.example/v2/").unwrap())
            .is_ok());
    }

    #[test]
    fn realm_hosts_follow_the_registry_or_the_allow_list() {
        let p = EgressPolicy::new(&[], &["auth.example".parse().unwrap()]);
        assert!(p.may_follow("reg.example", "reg.example"));
        assert!(p.may_follow("reg.example", "auth.example"));
        assert!(!p.may_follow("reg.example", "evil.example"));
        assert!(EgressPolicy::default().may_follow("registry-1.docker.io", "auth.docker.io"));
        assert!(!EgressPolicy::default().may_follow("ghcr.io", "auth.docker.io"));
        assert!("not a host!".parse::<AllowEntry>().is_err());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_denied_addresses() {
        let p = Arc::new(EgressPolicy::default());
        let client = p.apply(reqwest::Client::builder()).build().unwrap();
        let err = client.get("http://localhost:9/").send().await.unwrap_err();
        let denial = denial_in(&err).expect("an egress denial in the chain");
        assert!(denial.message.contains("localhost"), "{denial}");
        assert!(denial.message.contains("loopback"), "{denial}");
    }
}
