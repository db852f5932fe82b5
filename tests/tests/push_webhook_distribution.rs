//! The push-webhook receiver with the real registry as sender: a push becomes one
//! `PushEvent` with the pushed digest, a burst of pushes becomes one batch per rule, and
//! requests without the shared token or with bodies that are not webhooks are refused.

use std::time::Duration;

use anyhow::{Context, Result};
use imagewarden_operator::crd::ScanRuleSpec;
use imagewarden_operator::registry::webhook::{serve_with, tls_config, ServerOptions};
use imagewarden_operator::registry::{coalesce_pushes, rule_matches_push, serve, PushEvent};
use imagewarden_tests::image::{push_image, LayerBuilder, TestImage};
use imagewarden_tests::registry::{NotificationEndpoint, RegistryOptions};
use imagewarden_tests::{Registry, RegistryMode};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const TOKEN: &str = "push-hook-token-0123456789";

fn image(content: &str) -> Result<TestImage> {
    let layer = LayerBuilder::new()
        .file("app/version", 0o644, content.as_bytes())?
        .finish()?;
    Ok(TestImage {
        layers: vec![layer],
        ..Default::default()
    })
}

/// Starts the receiver on a free port; returns its base URL and the pushes it emits.
async fn start_receiver() -> Result<(String, mpsc::Receiver<PushEvent>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(serve(listener, TOKEN, tx));
    Ok((base, rx))
}

/// A registry that notifies `base`'s Distribution endpoint with `token`.
async fn notifying_registry(base: &str, token: &str) -> Result<Registry> {
    Registry::start_with(
        RegistryMode::Plain,
        RegistryOptions {
            notifications: vec![NotificationEndpoint {
                name: "imagewarden".into(),
                url: format!("{base}/webhook/distribution"),
                bearer_token: Some(token.into()),
            }],
            ..Default::default()
        },
    )
    .await
}

async fn next_event(rx: &mut mpsc::Receiver<PushEvent>) -> Result<PushEvent> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .context("no push event within 30 s")?
        .context("receiver stopped")
}

#[tokio::test]
async fn a_push_to_the_real_registry_becomes_one_push_event() -> Result<()> {
    let (base, mut rx) = start_receiver().await?;
    let registry = notifying_registry(&base, TOKEN).await?;

    let digest = push_image(&registry, "team-a/app", "v1", &image("app 1")?).await?;

    let event = next_event(&mut rx).await?;
    assert_eq!(
        event,
        PushEvent {
            registry_host: registry.host.clone(),
            repository: "team-a/app".into(),
            tag: "v1".into(),
            digest,
        }
    );
    // Layer and config blob pushes, and the fixture's pull-back, are not pushes of a tag.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rx.try_recv().is_err(), "only the manifest push counts");
    Ok(())
}

#[tokio::test]
async fn a_registry_with_the_wrong_token_is_refused() -> Result<()> {
    let (base, mut rx) = start_receiver().await?;
    let registry = notifying_registry(&base, "not-the-token").await?;
    push_image(&registry, "team-a/app", "v1", &image("app 1")?).await?;

    assert!(
        tokio::time::timeout(Duration::from_secs(4), rx.recv())
            .await
            .is_err(),
        "no event may come through with a wrong token"
    );
    let log = registry.log();
    assert!(
        log.contains("401"),
        "the registry should log the refusals:\n{log}"
    );
    Ok(())
}

#[tokio::test]
async fn requests_need_the_token_and_a_webhook_body() -> Result<()> {
    let (base, mut rx) = start_receiver().await?;
    let http = reqwest::Client::new();
    let distribution = format!("{base}/webhook/distribution");
    let envelope = r#"{"events":[]}"#;

    let status = |r: reqwest::Response| r.status().as_u16();
    let missing = http.post(&distribution).body(envelope).send().await?;
    assert_eq!(status(missing), 401);
    let wrong = http
        .post(&distribution)
        .bearer_auth("wrong")
        .body(envelope)
        .send()
        .await?;
    assert_eq!(status(wrong), 401);

    let malformed = http
        .post(&distribution)
        .bearer_auth(TOKEN)
        .header(
            "content-type",
            "application/vnd.docker.distribution.events.v1+json",
        )
        .body("{\"events\": 42}")
        .send()
        .await?;
    assert_eq!(malformed.status().as_u16(), 400);
    let text = malformed.text().await?;
    assert!(
        text.contains("malformed Distribution webhook body"),
        "{text}"
    );

    let empty = http
        .post(&distribution)
        .bearer_auth(TOKEN)
        .body(envelope)
        .send()
        .await?;
    assert_eq!(status(empty), 202);
    assert!(rx.try_recv().is_err());
    Ok(())
}

/// Harbor's documented PUSH_ARTIFACT payload, sent the way Harbor sends it: the
/// configured auth header verbatim in `Authorization`.
#[tokio::test]
async fn harbor_push_artifact_webhook_is_accepted() -> Result<()> {
    let (base, mut rx) = start_receiver().await?;
    let digest = "sha256:8a9e9863dbb6e10edb5adfe917c00da84e1700fa76e7ed02476aa6e6fb8ee0d8";
    let body = serde_json::json!({
        "type": "PUSH_ARTIFACT",
        "occur_at": 1586922308,
        "operator": "admin",
        "event_data": {
            "resources": [{
                "digest": digest,
                "tag": "latest",
                "resource_url": "hj.harbor.com/library/busybox:latest"
            }],
            "repository": {
                "date_created": 1586922308,
                "name": "busybox",
                "namespace": "library",
                "repo_full_name": "library/busybox",
                "repo_type": "private"
            }
        }
    });
    let response = reqwest::Client::new()
        .post(format!("{base}/webhook/harbor"))
        .header("authorization", TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(
        next_event(&mut rx).await?,
        PushEvent {
            registry_host: "hj.harbor.com".into(),
            repository: "library/busybox".into(),
            tag: "latest".into(),
            digest: digest.into(),
        }
    );

    let refused = reqwest::Client::new()
        .post(format!("{base}/webhook/harbor"))
        .header("authorization", "Basic d3Jvbmc=")
        .body(body.to_string())
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 401);
    Ok(())
}

#[tokio::test]
async fn a_burst_of_ten_pushes_becomes_one_batch_for_the_matching_rule() -> Result<()> {
    let (base, events) = start_receiver().await?;
    let registry = notifying_registry(&base, TOKEN).await?;
    let rule: ScanRuleSpec = serde_json::from_value(serde_json::json!({
        "registry": {"url": registry.host, "insecure": true},
        "scope": {"type": "Namespace", "name": "team-a"},
        "tagFilter": "^v",
        "triggers": {"onPush": true},
    }))?;

    let image = image("burst")?;
    let mut digest = String::new();
    for i in 0..10 {
        digest = push_image(&registry, "team-a/app", &format!("v{i}"), &image).await?;
    }
    // Outside the rule: another namespace, a tag the filter rejects.
    push_image(&registry, "team-b/app", "v1", &image).await?;
    push_image(&registry, "team-a/app", "latest", &image).await?;

    // The coalescer starts reading once the burst is over, so however slowly this
    // machine pushed, the burst's events all fall in its first window.
    let (batch_tx, mut batches) = mpsc::channel(8);
    tokio::spawn(coalesce_pushes(
        events,
        Duration::from_secs(3),
        move |event: &PushEvent| {
            if rule_matches_push(&rule, event) {
                vec!["team-a-rule".to_string()]
            } else {
                Vec::new()
            }
        },
        batch_tx,
    ));

    let batch = tokio::time::timeout(Duration::from_secs(40), batches.recv())
        .await
        .context("no batch")?
        .context("coalescer stopped")?;
    assert_eq!(batch.rule, "team-a-rule");
    let mut tags: Vec<&str> = batch.events.iter().map(|e| e.tag.as_str()).collect();
    tags.sort();
    let expected: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    assert_eq!(
        tags,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(batch
        .events
        .iter()
        .all(|e| e.repository == "team-a/app" && e.digest == digest));
    assert!(
        tokio::time::timeout(Duration::from_secs(2), batches.recv())
            .await
            .is_err(),
        "one batch only"
    );
    Ok(())
}

/// Starts the receiver with `options` on a free port; returns its address and the pushes.
async fn start_receiver_with(
    options: ServerOptions,
) -> Result<(std::net::SocketAddr, mpsc::Receiver<PushEvent>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(serve_with(listener, TOKEN, tx, options));
    Ok((addr, rx))
}

/// What the server sends on `stream` until it closes the connection, or `None` when it
/// is still open after `wait`.
async fn until_closed(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let options = ServerOptions {
        idle_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        ..ServerOptions::default()
    };
    let (addr, _rx) = start_receiver_with(options).await?;
    let wait = Duration::from_secs(5);

    // Connected and silent.
    let mut silent = tokio::net::TcpStream::connect(addr).await?;
    assert!(
        until_closed(&mut silent, wait).await.is_some(),
        "silent connection kept open"
    );

    // Half a request head, never finished.
    let mut slow_head = tokio::net::TcpStream::connect(addr).await?;
    slow_head
        .write_all(b"POST /webhook/distribution HTTP/1.1\r\nHost: x\r\n")
        .await?;
    assert!(
        until_closed(&mut slow_head, wait).await.is_some(),
        "slow head kept open"
    );

    // A whole head, then 10 of the 100 body bytes it announces: 408.
    let mut slow_body = tokio::net::TcpStream::connect(addr).await?;
    slow_body
        .write_all(
            format!(
                "POST /webhook/distribution HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"events\":"
            )
            .as_bytes(),
        )
        .await?;
    let reply = until_closed(&mut slow_body, wait)
        .await
        .context("slow body kept open")?;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");

    // A keep-alive connection after one request: closed once idle.
    let mut idle = tokio::net::TcpStream::connect(addr).await?;
    let body = r#"{"events":[]}"#;
    idle.write_all(
        format!(
            "POST /webhook/distribution HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let reply = until_closed(&mut idle, wait)
        .await
        .context("idle keep-alive connection kept open")?;
    assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");
    Ok(())
}

#[tokio::test]
async fn the_endpoint_serves_https_with_the_given_certificate() -> Result<()> {
    let ca = imagewarden_tests::pki::TestCa::new("webhook test CA")?;
    let server = ca.server(&["127.0.0.1", "localhost"])?;
    let dir = tempfile::tempdir()?;
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &server.cert_pem)?;
    std::fs::write(&key, &server.key_pem)?;
    let tls = tls_config(&cert, &key).map_err(anyhow::Error::msg)?;
    let (addr, mut rx) = start_receiver_with(ServerOptions {
        tls: Some(tls),
        ..ServerOptions::default()
    })
    .await?;

    let envelope = serde_json::json!({"events": [{
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", "ab".repeat(32)),
            "repository": "team-a/api",
            "tag": "v1",
            "url": "https://registry.example/v2/team-a/api/manifests/v1"
        },
        "request": {"host": "registry.example"}
    }]});
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(
            ca.cert_pem.as_bytes(),
        )?)
        .build()?;
    let response = client
        .post(format!("https://{addr}/webhook/distribution"))
        .bearer_auth(TOKEN)
        .body(envelope.to_string())
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(next_event(&mut rx).await?.repository, "team-a/api");

    // Plain HTTP gets no answer.
    let plain = reqwest::Client::new()
        .post(format!("http://{addr}/webhook/distribution"))
        .bearer_auth(TOKEN)
        .body(envelope.to_string())
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // Files that are not a certificate and key are named in the error.
    std::fs::write(&key, "not a key")?;
    let err = tls_config(&cert, &key).map(drop).unwrap_err();
    assert!(err.contains("tls.key"), "{err}");
    Ok(())
}
