//! The `AciStore` part of the contract: image records keyed by repository,
//! version, os and arch (replaced on write); conversions where the first
//! write under a key wins, races included; namespace keys; and which blobs
//! the records keep from the garbage collector.

use bytes::Bytes;
use futures_util::future::join_all;

use super::{MetaStore, now, rand_digest, repo, uniq};
use crate::meta::accounts::Refusal;
use crate::meta::aci::{AciConversion, AciImage};
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;

/// Awaits a metadata call that must not fail.
macro_rules! q {
    ($e:expr) => {
        $e.await
            .unwrap_or_else(|e| panic!("{}: {e}", stringify!($e)))
    };
}

fn image(r: &RepoName, version: &str, aci: &Digest, sig: Option<&Digest>) -> AciImage {
    AciImage {
        repo: r.clone(),
        version: version.to_string(),
        os: "linux".into(),
        arch: "amd64".into(),
        aci: aci.clone(),
        size: 1234,
        image_id: format!("sha512-{}", "ab".repeat(64)),
        signature: sig.cloned(),
        // Binary-safe: manifests are stored as bytes.
        manifest: Bytes::from(format!("{{\"name\":\"{r}\",\"v\":\"{version}\"}}\0\u{ff}")),
        created_at: now(),
    }
}

fn conversion(r: &RepoName, key: &str, aci: &Digest) -> AciConversion {
    AciConversion {
        key: key.to_string(),
        repo: r.clone(),
        source: rand_digest(),
        aci: aci.clone(),
        size: 99,
        image_id: format!("sha512-{}", "cd".repeat(64)),
        manifest: Bytes::from_static(b"{\"acKind\":\"ImageManifest\"}"),
        created_at: now(),
    }
}

pub async fn aci_images(s: &dyn MetaStore) {
    let r = repo(&format!("{}/app", uniq("ai")));
    let (a1, a2, sig) = (rand_digest(), rand_digest(), rand_digest());
    assert_eq!(q!(s.aci_image(&r, "1.0", "linux", "amd64")), None);
    let one = image(&r, "1.0", &a1, Some(&sig));
    q!(s.put_aci_image(&one));
    assert_eq!(
        q!(s.aci_image(&r, "1.0", "linux", "amd64")),
        Some(one.clone())
    );
    // Every part of the key counts, case included.
    assert_eq!(q!(s.aci_image(&r, "1.0", "linux", "arm64")), None);
    assert_eq!(q!(s.aci_image(&r, "1.0", "freebsd", "amd64")), None);
    assert_eq!(q!(s.aci_image(&r, "1.0.0", "linux", "amd64")), None);
    assert_eq!(q!(s.aci_image(&r, "1.0", "Linux", "amd64")), None);
    let other = repo(&format!("{}/app", uniq("ai")));
    assert_eq!(q!(s.aci_image(&other, "1.0", "linux", "amd64")), None);

    // A write replaces the record, signature included.
    let two = image(&r, "1.0", &a2, None);
    q!(s.put_aci_image(&two));
    assert_eq!(q!(s.aci_image(&r, "1.0", "linux", "amd64")), Some(two));
    let mut arm = image(&r, "1.0", &a1, None);
    arm.arch = "aarch64".into();
    q!(s.put_aci_image(&arm));
    assert_eq!(q!(s.aci_image(&r, "1.0", "linux", "aarch64")), Some(arm));
    assert_eq!(
        q!(s.aci_image(&r, "1.0", "linux", "amd64")).unwrap().aci,
        a2
    );
}

pub async fn aci_conversions(s: &dyn MetaStore) {
    let r = repo(&format!("{}/app", uniq("ac")));
    let key = uniq("k");
    assert_eq!(q!(s.aci_conversion(&key)), None);
    let first = conversion(&r, &key, &rand_digest());
    assert_eq!(q!(s.put_aci_conversion(&first)), first);
    // A later write under the key keeps the first.
    let second = conversion(&r, &key, &rand_digest());
    assert_eq!(q!(s.put_aci_conversion(&second)), first);
    assert_eq!(q!(s.aci_conversion(&key)), Some(first));

    // Racing writers all get the one stored record.
    let key = uniq("race");
    let candidates: Vec<AciConversion> = (0..8)
        .map(|_| conversion(&r, &key, &rand_digest()))
        .collect();
    let results = join_all(candidates.iter().map(|c| s.put_aci_conversion(c))).await;
    let results: Vec<AciConversion> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("racing put_aci_conversion: {e}")))
        .collect();
    assert!(candidates.contains(&results[0]));
    assert!(results.iter().all(|c| c == &results[0]), "{results:?}");
    assert_eq!(q!(s.aci_conversion(&key)), Some(results[0].clone()));
}

pub async fn aci_pubkeys(s: &dyn MetaStore) {
    let ns = uniq("pk");
    assert_eq!(q!(s.aci_pubkeys(&ns)), None);
    assert!(!q!(s.delete_aci_pubkeys(&ns)));
    let armored =
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQ==\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";
    q!(s.set_aci_pubkeys(&ns, armored, now()));
    assert_eq!(q!(s.aci_pubkeys(&ns)).as_deref(), Some(armored));
    assert_eq!(q!(s.aci_pubkeys(&ns.to_uppercase())), None);
    let big = armored.repeat(2000);
    q!(s.set_aci_pubkeys(&ns, &big, now()));
    assert_eq!(q!(s.aci_pubkeys(&ns)), Some(big));
    assert!(q!(s.delete_aci_pubkeys(&ns)));
    assert_eq!(q!(s.aci_pubkeys(&ns)), None);
    assert!(!q!(s.delete_aci_pubkeys(&ns)));
}

pub async fn aci_blobs_in_use(s: &dyn MetaStore) {
    let r = repo(&format!("{}/app", uniq("au")));
    let (aci, sig, next, conv) = (rand_digest(), rand_digest(), rand_digest(), rand_digest());
    for d in [&aci, &sig, &next, &conv] {
        q!(s.link_blob(&r, d, 10));
        assert!(!q!(s.aci_blob_in_use(d)), "{d} is named by nothing");
    }
    q!(s.put_aci_image(&image(&r, "1", &aci, Some(&sig))));
    assert!(q!(s.aci_blob_in_use(&aci)));
    assert!(q!(s.aci_blob_in_use(&sig)));
    // Two records name `aci`; replacing one keeps it in use.
    q!(s.put_aci_image(&image(&r, "latest", &aci, None)));
    q!(s.put_aci_image(&image(&r, "1", &next, None)));
    assert!(q!(s.aci_blob_in_use(&aci)));
    assert!(!q!(s.aci_blob_in_use(&sig)), "the replaced record named it");
    assert!(q!(s.aci_blob_in_use(&next)));
    q!(s.put_aci_image(&image(&r, "latest", &next, None)));
    assert!(!q!(s.aci_blob_in_use(&aci)));

    q!(s.put_aci_conversion(&conversion(&r, &uniq("k"), &conv)));
    assert!(q!(s.aci_blob_in_use(&conv)));
    // Only while the repository links the blob.
    assert!(q!(s.unlink_blob(&r, &conv)));
    assert!(!q!(s.aci_blob_in_use(&conv)));
    match q!(s.delete_repo(&r)) {
        Ok(()) => {}
        Err(Refusal::Missing(_)) => panic!("the repository exists"),
        Err(e) => panic!("delete_repo: {e:?}"),
    }
    assert!(!q!(s.aci_blob_in_use(&next)), "its repository is gone");
    // Linked again, the records name it again (the registry serves a
    // record only while its blobs are linked).
    q!(s.link_blob(&r, &next, 10));
    assert!(q!(s.aci_blob_in_use(&next)));
}
