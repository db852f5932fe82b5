//! The vulnerability database as an OCI artifact in a real registry: pushed, pulled back
//! with digests verified, and loaded as `--db oci+http://...` / `oci://...`.

use anyhow::Result;
use imagewarden_scanner::vulndb::oci::{pull, push_index, OciOptions, OciSource, INDEX_MEDIA_TYPE};
use imagewarden_scanner::vulndb::{Db, DbBuilder};
use imagewarden_tests::{repo_root, Registry, RegistryMode};

fn osv_dir() -> String {
    repo_root()
        .join("scanner/testdata/osv")
        .display()
        .to_string()
}

fn built_index() -> Result<(Vec<u8>, Db)> {
    let mut builder = DbBuilder::new();
    builder.add_source(&osv_dir())?;
    let mut bytes = Vec::new();
    builder.write(&mut bytes)?;
    let db = Db::from_bytes(bytes.clone(), "test")?;
    Ok((bytes, db))
}

/// Pushes the index built from the test records to `imagewarden/vulndb:1` of a plain HTTP
/// registry; returns the index, its database and the artifact's source.
async fn pushed_index(registry: &Registry) -> Result<(Vec<u8>, Db, OciSource)> {
    let (bytes, local) = built_index()?;
    let source = OciSource::parse(&format!(
        "oci+http://{}/imagewarden/vulndb:1",
        registry.host
    ))
    .unwrap();
    push_index(
        bytes.clone(),
        serde_json::to_vec(local.info())?,
        &source,
        &OciOptions::default(),
    )
    .await?;
    Ok((bytes, local, source))
}

#[tokio::test]
async fn an_index_pushed_to_a_registry_loads_as_the_same_database() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
    let (bytes, local, source) = pushed_index(&registry).await?;

    let layers = pull(&source, &OciOptions::default()).await?;
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0].0, INDEX_MEDIA_TYPE);
    assert_eq!(layers[0].1, bytes);

    // What `--db oci+http://...` does (outside the async runtime, as the CLI and operator call it).
    let spec = format!("oci+http://{}/imagewarden/vulndb:1", registry.host);
    let loaded = tokio::task::spawn_blocking(move || Db::load(&[spec])).await??;
    assert_eq!(loaded.info().digest, local.info().digest);
    assert_eq!(loaded.info().records, local.info().records);
    Ok(())
}

#[tokio::test]
async fn a_tls_registry_needs_its_ca_and_a_missing_artifact_is_a_clear_error() -> Result<()> {
    let registry = Registry::start(RegistryMode::Tls).await?;
    let (bytes, local) = built_index()?;
    let source =
        OciSource::parse(&format!("oci://{}/imagewarden/vulndb:2", registry.host)).unwrap();
    let with_ca = OciOptions {
        ca_pem: registry.ca_pem().map(str::to_string),
        egress: None,
    };
    let err = push_index(
        bytes.clone(),
        b"{}".to_vec(),
        &source,
        &OciOptions {
            ca_pem: None,
            egress: None,
        },
    )
    .await
    .expect_err("an unknown CA is not trusted");
    assert!(
        format!("{err:#}").to_lowercase().contains("certificate"),
        "{err:#}"
    );
    push_index(bytes, serde_json::to_vec(local.info())?, &source, &with_ca).await?;
    assert_eq!(pull(&source, &with_ca).await?[0].0, INDEX_MEDIA_TYPE);

    let missing = OciSource::parse(&format!(
        "oci://{}/imagewarden/vulndb:absent",
        registry.host
    ))
    .unwrap();
    let err = pull(&missing, &with_ca).await.expect_err("no such tag");
    assert!(
        format!("{err:#}").contains("imagewarden/vulndb:absent"),
        "{err:#}"
    );
    Ok(())
}

/// A name server whose answer changes: `answers[i]` for the i-th lookup, the last one after.
struct ChangingAnswers {
    answers: Vec<std::net::IpAddr>,
    lookups: std::sync::atomic::AtomicUsize,
}

impl reqwest::dns::Resolve for ChangingAnswers {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let i = self
            .lookups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ip = self.answers[i.min(self.answers.len() - 1)];
        Box::pin(async move {
            Ok(Box::new(std::iter::once(std::net::SocketAddr::new(ip, 0))) as reqwest::dns::Addrs)
        })
    }
}

#[tokio::test]
async fn a_database_registry_name_is_checked_at_each_connection_not_once_before() -> Result<()> {
    use imagewarden_scanner::egress::EgressPolicy;
    use std::sync::Arc;

    let registry = Registry::start(RegistryMode::Plain).await?;
    let (bytes, _, _) = pushed_index(&registry).await?;

    // `db-mirror.test` first answers with the registry's (allowed) address, then with the
    // cloud metadata address: a check made once before the pull would let the second pull
    // through to whatever the name then points at.
    let port = registry.host.rsplit(':').next().unwrap();
    let by_name = OciSource::parse(&format!(
        "oci+http://db-mirror.test:{port}/imagewarden/vulndb:1"
    ))
    .unwrap();
    let answers = Arc::new(ChangingAnswers {
        answers: vec![[127, 0, 0, 1].into(), [169, 254, 169, 254].into()],
        lookups: Default::default(),
    });
    let egress = Arc::new(
        EgressPolicy::new(&[], &["127.0.0.1/32".parse().unwrap()]).with_lookup(answers.clone()),
    );
    let opts = OciOptions {
        ca_pem: None,
        egress: Some(egress),
    };
    let layers = pull(&by_name, &opts).await?;
    assert_eq!(
        layers[0].1, bytes,
        "the allowed address serves the database"
    );

    let err = format!("{:#}", pull(&by_name, &opts).await.unwrap_err());
    assert!(
        err.contains("is not fetched")
            && err.contains("db-mirror.test resolves to 169.254.169.254")
            && err.contains("link-local"),
        "{err}"
    );
    assert_eq!(
        answers.lookups.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one lookup per pull, made by the connection itself"
    );
    Ok(())
}
