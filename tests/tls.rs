//! `listenmode = "https"`: the hub serves TLS itself (rustls).

mod common;

use sha2::{Digest, Sha256};

/// A self-signed certificate for 127.0.0.1 and localhost, written to
/// `dir`; returns its PEM.
fn certificate(dir: &std::path::Path) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    cert.pem()
}

#[test]
fn serves_the_registry_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let pem = certificate(certs.path());
    let top = format!(
        "listenmode = \"https\"\nhttpscertfile = \"{0}/tls.crt\"\nhttpskeyfile = \"{0}/tls.key\"\n",
        certs.path().display()
    );
    let s = common::Server::start_top_config(&top, "");
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client.get(s.url("/v2/")).send().unwrap();
    assert_eq!(r.status(), 200, "the API version check over TLS");
    // A blob big enough for the file-backed (mapped) read path: over TLS
    // its bytes are read, encrypted and sent, not passed to sendfile.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let r = client
        .post(s.url(&format!("/v2/tls/test/blobs/uploads/?digest={digest}")))
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "push over TLS");
    let r = client
        .get(s.url(&format!("/v2/tls/test/blobs/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().unwrap() == data,
        "the blob comes back intact over TLS"
    );
    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::blocking::Client::new();
    let r = plain.get(format!("http://{}/v2/", s.addr)).send();
    assert!(
        r.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP on the TLS port must fail"
    );
}

#[test]
fn https_without_its_files_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runtime.toml");
    std::fs::write(
        &config,
        format!(
            "listenmode = \"https\"\nhttpscertfile = \"{0}/missing.crt\"\nhttpskeyfile = \"{0}/missing.key\"\n[dockyard]\npath = \"{0}/data\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockyard"))
        .args(["web", "--address", "127.0.0.1", "--port", "0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("httpscertfile"), "{err}");
}
