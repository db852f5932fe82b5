use super::*;

fn settings() -> CertSettings {
    CertSettings {
        secret: "imagewarden-admission-certs".into(),
        dns_names: vec!["imagewarden-admission.imagewarden-system.svc".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        ca_lifetime: Duration::from_secs(900),
        cert_lifetime: Duration::from_secs(300),
        webhook_configuration: Some("imagewarden-images".into()),
    }
}

fn one(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Parsed {
    parse_pem(&data[key]).into_iter().next().unwrap()
}

fn bundle(data: &BTreeMap<String, Vec<u8>>) -> Vec<Vec<u8>> {
    parse_pem(&data[CA_BUNDLE])
        .into_iter()
        .map(|p| p.der)
        .collect()
}

/// Applies plans until nothing changes; returns the last state.
fn settle(
    mut data: BTreeMap<String, Vec<u8>>,
    mut since: Option<i64>,
    published: bool,
    now: i64,
) -> (BTreeMap<String, Vec<u8>>, Option<i64>, Vec<&'static str>) {
    let mut reasons = Vec::new();
    for _ in 0..4 {
        match plan(&data, since, published, now, &settings()).unwrap() {
            Some(next) => {
                reasons.extend(next.reasons);
                data = next.data;
                since = next.next_since;
            }
            None => return (data, since, reasons),
        }
    }
    panic!("the plan does not settle: {reasons:?}");
}

fn signed_by(data: &BTreeMap<String, Vec<u8>>, ca_der: &[u8], cert_key: &str) -> bool {
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der).unwrap();
    let cert = one(data, cert_key);
    let (_, cert) = x509_parser::parse_x509_certificate(&cert.der).unwrap();
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

#[test]
fn an_empty_secret_gets_a_ca_and_a_serving_certificate_for_the_names() {
    let t0 = 1_800_000_000;
    let (data, since, reasons) = settle(BTreeMap::new(), None, false, t0);
    assert_eq!(reasons, vec!["CA created", "serving certificate issued"]);
    assert_eq!(since, None);
    let ca = one(&data, CA_CERT);
    assert_eq!(bundle(&data), vec![ca.der.clone()]);
    assert!(signed_by(&data, &ca.der, TLS_CERT));
    assert_eq!(ca.not_after, t0 + 900);
    let serving = one(&data, TLS_CERT);
    assert_eq!(serving.not_after, t0 + 300);
    let (_, x509) = x509_parser::parse_x509_certificate(&serving.der).unwrap();
    let san = format!(
        "{:?}",
        x509.subject_alternative_name().unwrap().unwrap().value
    );
    assert!(
        san.contains("imagewarden-admission.imagewarden-system.svc"),
        "{san}"
    );
    assert!(san.contains("[127, 0, 0, 1]"), "{san}");
    // Nothing to do until a renewal is due.
    assert_eq!(
        plan(&data, None, true, t0 + 150, &settings()).unwrap(),
        None
    );
}

#[test]
fn the_serving_certificate_is_renewed_at_two_thirds_of_its_life_by_the_same_ca() {
    let t0 = 1_800_000_000;
    let (data, _, _) = settle(BTreeMap::new(), None, true, t0);
    let before = one(&data, TLS_CERT);
    let at = before.renew_at();
    assert_eq!(plan(&data, None, true, at - 1, &settings()).unwrap(), None);
    let (renewed, since, reasons) = settle(data.clone(), None, true, at);
    assert_eq!(reasons, vec!["serving certificate issued"]);
    assert_eq!(since, None);
    assert_ne!(one(&renewed, TLS_CERT).der, before.der);
    assert_eq!(renewed[CA_CERT], data[CA_CERT]);
    assert_eq!(renewed[CA_BUNDLE], data[CA_BUNDLE]);
}

#[test]
fn a_ca_is_rotated_through_the_bundle_before_it_signs_and_the_old_one_stays_until_it_expires() {
    let t0 = 1_800_000_000;
    let (data, _, _) = settle(BTreeMap::new(), None, true, t0);
    let old_ca = one(&data, CA_CERT);
    // At 2/3 of the CA's life a successor joins the bundle; the serving certificate is
    // still the old CA's (the API server does not trust the new one yet).
    let t1 = old_ca.renew_at();
    let (data, since, reasons) = settle(data, None, false, t1);
    assert!(
        reasons.contains(&"next CA added to the bundle"),
        "{reasons:?}"
    );
    assert_eq!(since, Some(t1));
    let next_ca = one(&data, NEXT_CA_CERT);
    assert_eq!(bundle(&data), vec![old_ca.der.clone(), next_ca.der.clone()]);
    assert!(signed_by(&data, &old_ca.der, TLS_CERT));

    // Not promoted while the webhook configuration lacks it, nor before the delay.
    let delay = secs(promote_delay(settings().ca_lifetime));
    let (unpublished, _, _) = settle(data.clone(), since, false, t1 + delay + 5);
    assert_eq!(one(&unpublished, CA_CERT).der, old_ca.der);
    let (early, _, _) = settle(data.clone(), since, true, t1 + delay - 1);
    assert_eq!(one(&early, CA_CERT).der, old_ca.der);

    // Published and waited: the new CA signs; the old one is still trusted.
    let t2 = t1 + delay;
    let (data, since, reasons) = settle(data, since, true, t2);
    assert!(reasons.contains(&"next CA promoted"), "{reasons:?}");
    assert_eq!(since, None);
    assert_eq!(one(&data, CA_CERT).der, next_ca.der);
    assert!(!data.contains_key(NEXT_CA_CERT));
    assert!(signed_by(&data, &next_ca.der, TLS_CERT));
    assert_eq!(bundle(&data), vec![next_ca.der.clone(), old_ca.der.clone()]);

    // Once the old CA has expired it leaves the bundle.
    let (data, _, _) = settle(data, None, true, old_ca.not_after + 1);
    assert_eq!(bundle(&data), vec![next_ca.der.clone()]);
}

#[test]
fn a_serving_certificate_for_other_names_or_another_key_is_replaced() {
    let t0 = 1_800_000_000;
    let (data, _, _) = settle(BTreeMap::new(), None, true, t0);
    let mut other = settings();
    other
        .dns_names
        .push("imagewarden-admission.other.svc".into());
    let next = plan(&data, None, true, t0 + 1, &other).unwrap().unwrap();
    assert_eq!(next.reasons, vec!["serving certificate issued"]);
    let mut swapped = data.clone();
    swapped.insert(TLS_KEY.into(), data[CA_KEY].clone());
    let next = plan(&swapped, None, true, t0 + 1, &settings())
        .unwrap()
        .unwrap();
    assert_eq!(next.reasons, vec!["serving certificate issued"]);
}

#[test]
fn settings_are_checked() {
    let mut s = settings();
    assert!(s.validate().is_ok());
    s.ca_lifetime = Duration::from_secs(400);
    assert!(s
        .validate()
        .unwrap_err()
        .contains("--admission-ca-lifetime"));
    let mut s = settings();
    s.dns_names = vec!["bad name".into()];
    assert!(s.validate().unwrap_err().contains("not a DNS name"));
    let mut s = settings();
    s.dns_names.clear();
    s.ip_addresses.clear();
    assert!(s.validate().is_err());
}
