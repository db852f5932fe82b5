//! Database sources go through the egress policy as registries do: http(s) base URLs,
//! `nvd:` URLs, `oci://` artifacts and `db update`'s official URLs are refused when their
//! address is denied, before any connection, and redirects may not lead to a denied address.
//! Names are checked by the resolver of the client that connects: the addresses checked are
//! the addresses connected to.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use imagewarden_scanner::egress::EgressPolicy;
use imagewarden_scanner::vulndb::update::{update, UpdateOptions};
use imagewarden_scanner::vulndb::Db;

/// A listener on loopback that counts connections and answers each request with
/// `response` (with `{port}` replaced by its own port).
fn counting_server(response: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(response.replace("{port}", &port.to_string()).as_bytes());
        }
    });
    (format!("127.0.0.1:{port}"), hits)
}

fn default_policy() -> Arc<EgressPolicy> {
    Arc::new(EgressPolicy::default())
}

#[test]
fn url_nvd_and_oci_sources_on_a_denied_address_are_refused_before_connecting() {
    let (addr, hits) = counting_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    for source in [
        format!("http://{addr}/osv"),
        format!("http://{addr}/osv/npm/all.zip"),
        format!("nvd:http://{addr}/nvd"),
        format!("oci+http://{addr}/imagewarden/vulndb:1"),
    ] {
        let err = format!(
            "{:#}",
            Db::load_with(std::slice::from_ref(&source), default_policy()).unwrap_err()
        );
        assert!(
            err.contains("is not fetched") && err.contains("denied range 127.0.0.0/8"),
            "{source}: {err}"
        );
    }
    // A host name is checked once resolved: localhost is loopback too.
    let port = addr.rsplit(':').next().unwrap();
    let err = format!(
        "{:#}",
        Db::load_with(
            &[format!("oci+http://localhost:{port}/db:1")],
            default_policy()
        )
        .unwrap_err()
    );
    assert!(err.contains("localhost resolves to"), "{err}");
    let err = format!(
        "{:#}",
        Db::load_with(&[format!("http://localhost:{port}/osv/")], default_policy()).unwrap_err()
    );
    assert!(err.contains("localhost resolves to"), "{err}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a denied source was connected to"
    );

    // Allowed by the administrator: the same source is fetched (and found empty here).
    let allowed = Arc::new(EgressPolicy::new(&[], &["127.0.0.1/32".parse().unwrap()]));
    let err = format!(
        "{:#}",
        Db::load_with(&[format!("http://{addr}/osv/npm/all.zip")], allowed).unwrap_err()
    );
    assert!(!err.contains("is not fetched"), "{err}");
    assert!(hits.load(Ordering::SeqCst) > 0);
}

#[test]
fn a_redirect_to_a_denied_address_is_not_followed() {
    // 127.0.0.1 is allowed; the redirect points at 127.0.0.2, in the denied loopback range.
    let (target, target_hits) =
        counting_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let target_port = target.rsplit(':').next().unwrap().to_string();
    let location: &'static str = Box::leak(
        format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:{target_port}/all.zip\r\nContent-Length: 0\r\n\r\n"
        )
        .into_boxed_str(),
    );
    let (addr, hits) = counting_server(location);
    let allowed = Arc::new(EgressPolicy::new(&[], &["127.0.0.1/32".parse().unwrap()]));
    let err = format!(
        "{:#}",
        Db::load_with(&[format!("http://{addr}/npm/all.zip")], allowed).unwrap_err()
    );
    assert!(
        err.contains("127.0.0.2") && err.contains("denied range"),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(target_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn db_update_refuses_official_urls_on_denied_addresses() {
    let (addr, hits) = counting_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let cache = tempfile::tempdir().unwrap();
    let mut opts = UpdateOptions::new(cache.path().to_path_buf());
    opts.progress = false;
    opts.osv_url = format!("http://{addr}/osv");
    opts.nvd_url = format!("http://{addr}/nvd");
    opts.egress = default_policy();
    let err = format!("{:#}", update(&opts).await.unwrap_err());
    assert!(
        err.contains(&format!("http://{addr}/osv is not fetched")),
        "{err}"
    );
    // Cluster ranges given by the administrator are denied too (here, a metadata-like
    // address written literally in the URL).
    opts.osv_url = "http://169.254.169.254/osv".into();
    opts.egress = Arc::new(EgressPolicy::new(&[], &["127.0.0.1/32".parse().unwrap()]));
    let err = format!("{:#}", update(&opts).await.unwrap_err());
    assert!(err.contains("link-local"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

/// A name server that answers every name with `ip`.
struct AnswersWith(std::net::IpAddr);

impl reqwest::dns::Resolve for AnswersWith {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = std::net::SocketAddr::new(self.0, 0);
        Box::pin(async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) })
    }
}

#[test]
fn every_database_client_checks_the_addresses_its_own_lookup_returns() {
    let (addr, hits) = counting_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let port = addr.rsplit(':').next().unwrap();
    // A name the system cannot resolve, answered by the policy's own lookup with loopback.
    let lookup = Arc::new(AnswersWith([127, 0, 0, 1].into()));
    let denying = Arc::new(EgressPolicy::default().with_lookup(lookup.clone()));
    for source in [
        format!("http://db-mirror.test:{port}/osv/npm/all.zip"),
        format!("http://db-mirror.test:{port}/osv"),
        format!("nvd:http://db-mirror.test:{port}/nvd/nvdcve-2.0-2024.json.gz"),
        format!("oci+http://db-mirror.test:{port}/imagewarden/vulndb:1"),
    ] {
        let err = format!(
            "{:#}",
            Db::load_with(std::slice::from_ref(&source), denying.clone()).unwrap_err()
        );
        assert!(
            err.contains("db-mirror.test resolves to 127.0.0.1, in the denied range 127.0.0.0/8"),
            "{source}: {err}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a denied address was connected to"
    );

    // Allowed: the same name reaches the server at the address the lookup gave.
    let allowing =
        Arc::new(EgressPolicy::new(&[], &["127.0.0.1/32".parse().unwrap()]).with_lookup(lookup));
    for source in [
        format!("http://db-mirror.test:{port}/osv/npm/all.zip"),
        format!("oci+http://db-mirror.test:{port}/imagewarden/vulndb:1"),
    ] {
        let before = hits.load(Ordering::SeqCst);
        let err = format!(
            "{:#}",
            Db::load_with(std::slice::from_ref(&source), allowing.clone()).unwrap_err()
        );
        assert!(!err.contains("is not fetched"), "{source}: {err}");
        assert!(
            hits.load(Ordering::SeqCst) > before,
            "{source}: not connected"
        );
    }
}
