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

#[tokio::test]
async fn an_index_pushed_to_a_registry_loads_as_the_same_database() -> Result<()> {
    let registry = Registry::start(RegistryMode::Plain).await?;
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
