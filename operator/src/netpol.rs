//! The NetworkPolicy that confines scanner Job Pods in the namespaces where they run: no
//! connection in; out only to DNS, the API server and registries (any address outside the
//! egress policy's denied ranges, plus what the administrator allowed), and the operator's
//! own Pods on the port where they serve the vulnerability database.

use std::collections::BTreeMap;

use imagewarden_scanner::egress::{AllowEntry, IpNet, DEFAULT_DENIED};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::Client;

use crate::config::{EgressSettings, NetworkPolicySettings};
use crate::context::FIELD_MANAGER;
use crate::Error;

/// Name of the NetworkPolicy in each namespace with scanner Jobs.
pub const SCANNER_NETWORK_POLICY: &str = "imagewarden-scanner";

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_string()),
        port: Some(IntOrString::Int(number)),
        ..Default::default()
    }
}

fn block(cidr: &str, except: Vec<String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_string(),
            except: (!except.is_empty()).then_some(except),
        }),
        ..Default::default()
    }
}

/// Where scanner Pods download the operator's database: Pods of the operator's namespace,
/// on the port the database is served on (a Service in front maps to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSource {
    pub namespace: String,
    pub port: u16,
}

/// The policy for scanner Pods of `namespace` (pure).
pub fn scanner_network_policy(
    namespace: &str,
    egress: &EgressSettings,
    settings: &NetworkPolicySettings,
    database: Option<&DatabaseSource>,
) -> NetworkPolicy {
    let denied: Vec<IpNet> = DEFAULT_DENIED
        .iter()
        .map(|r| r.parse().expect("built-in range"))
        .chain(egress.cluster_cidrs.iter().copied())
        .collect();
    // `except` must lie within the block's CIDR: one block per address family.
    let v4: Vec<String> = denied
        .iter()
        .filter(|n| matches!(n, IpNet::V4(_)) && n.prefix_len() > 0)
        .map(ToString::to_string)
        .collect();
    let v6: Vec<String> = denied
        .iter()
        .filter(|n| matches!(n, IpNet::V6(_)) && n.prefix_len() > 0)
        .map(ToString::to_string)
        .collect();
    let mut registries = vec![block("0.0.0.0/0", v4), block("::/0", v6)];
    for entry in &egress.allow {
        if let AllowEntry::Range(net) = entry {
            registries.push(block(&net.to_string(), Vec::new()));
        }
    }
    let mut rules = vec![
        // DNS, wherever the cluster runs it.
        NetworkPolicyEgressRule {
            to: None,
            ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
        },
        NetworkPolicyEgressRule {
            to: Some(registries),
            ports: None,
        },
    ];
    if let Some(db) = database {
        // The operator's Pods are in the cluster's Pod range, which the rule above denies.
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_string(),
                        db.namespace.clone(),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ports: Some(vec![port("TCP", i32::from(db.port))]),
        });
    }
    if !settings.api_server_cidrs.is_empty() {
        rules.push(NetworkPolicyEgressRule {
            to: Some(
                settings
                    .api_server_cidrs
                    .iter()
                    .map(|n| block(&n.to_string(), Vec::new()))
                    .collect(),
            ),
            ports: Some(
                settings
                    .api_server_ports
                    .iter()
                    .map(|p| port("TCP", i32::from(*p)))
                    .collect(),
            ),
        });
    }
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(SCANNER_NETWORK_POLICY.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "imagewarden-operator".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_string(),
                    "imagewarden-scanner".to_string(),
                )])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: Some(Vec::new()),
            egress: Some(rules),
        }),
    }
}

/// Applies the scanner NetworkPolicy in `namespace` (kept in step with the configuration).
pub async fn ensure_scanner_network_policy(
    client: &Client,
    namespace: &str,
    egress: &EgressSettings,
    settings: &NetworkPolicySettings,
    database: Option<&DatabaseSource>,
) -> Result<(), Error> {
    let policy = scanner_network_policy(namespace, egress, settings, database);
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    api.patch(
        SCANNER_NETWORK_POLICY,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&policy),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagewarden_scanner::egress::parse_range;

    #[test]
    fn scanner_pods_reach_dns_registries_and_the_api_server_but_not_denied_ranges() {
        let egress = EgressSettings {
            cluster_cidrs: vec![parse_range("10.96.0.0/12").unwrap()],
            allow: vec![
                "10.96.5.5".parse().unwrap(),
                "auth.example".parse().unwrap(),
            ],
        };
        let settings = NetworkPolicySettings {
            scanner_network_policy: true,
            api_server_cidrs: vec![parse_range("10.0.0.1").unwrap()],
            api_server_ports: vec![443, 6443],
        };
        let policy = scanner_network_policy("team-a", &egress, &settings, None);
        let spec = policy.spec.unwrap();
        assert_eq!(spec.ingress, Some(vec![]));
        let rules = spec.egress.unwrap();
        let registries = rules[1].to.as_ref().unwrap();
        let v4 = registries[0].ip_block.as_ref().unwrap();
        assert_eq!(v4.cidr, "0.0.0.0/0");
        let except = v4.except.as_ref().unwrap();
        for denied in ["10.96.0.0/12", "169.254.0.0/16", "127.0.0.0/8"] {
            assert!(except.iter().any(|e| e == denied), "{denied} in {except:?}");
        }
        assert!(except.iter().all(|e| !e.contains(':')), "{except:?}");
        assert_eq!(
            registries[2].ip_block.as_ref().unwrap().cidr,
            "10.96.5.5/32"
        );
        assert_eq!(registries.len(), 3, "host names are not address blocks");
        let api = rules[2].to.as_ref().unwrap();
        assert_eq!(api[0].ip_block.as_ref().unwrap().cidr, "10.0.0.1/32");
        assert_eq!(rules[2].ports.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn scanner_pods_reach_the_operators_database_port_in_its_namespace_only() {
        let egress = EgressSettings {
            cluster_cidrs: vec![parse_range("10.244.0.0/16").unwrap()],
            allow: Vec::new(),
        };
        let settings = NetworkPolicySettings {
            scanner_network_policy: true,
            api_server_cidrs: Vec::new(),
            api_server_ports: vec![443],
        };
        let db = DatabaseSource {
            namespace: "imagewarden-system".to_string(),
            port: 8081,
        };
        let without = scanner_network_policy("team-a", &egress, &settings, None);
        let with = scanner_network_policy("team-a", &egress, &settings, Some(&db));
        let (without, with) = (
            without.spec.unwrap().egress.unwrap(),
            with.spec.unwrap().egress.unwrap(),
        );
        assert_eq!(with.len(), without.len() + 1);
        let rule = with.last().unwrap();
        let peer = &rule.to.as_ref().unwrap()[0];
        assert_eq!(
            peer.namespace_selector.as_ref().unwrap().match_labels,
            Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                "imagewarden-system".to_string()
            )]))
        );
        assert!(peer.ip_block.is_none() && peer.pod_selector.is_none());
        assert_eq!(
            rule.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(8081))
        );
    }
}
