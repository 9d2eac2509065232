//! The `LegacyStore` part of the contract: v1 images (a complete image is
//! never replaced unless asked; an incomplete one is replaced whole; layer
//! and checksum only on incomplete images; completion only with the right
//! checksum, once, under races too), insert-only layer facts and
//! conversions (first write wins, both directions), which repositories
//! declare or reference an image, and repository search.

use bytes::Bytes;
use futures_util::future::join_all;

use super::{MetaStore, now, rand_digest, repo, repository, uniq};
use crate::meta::accounts::Refusal;
use crate::meta::legacy::{Conversion, LayerInfo, V1Image, V1Layer};
use crate::registry::name::RepoName;

/// Awaits a metadata call that must not fail.
macro_rules! q {
    ($e:expr) => {
        $e.await
            .unwrap_or_else(|e| panic!("{}: {e}", stringify!($e)))
    };
}

/// A fresh v1 image id (64 hex digits).
fn v1_id() -> String {
    format!("{}{}", uniq(""), "0".repeat(52))
}

fn image(id: &str, parent: Option<&V1Image>, push_repo: Option<&RepoName>) -> V1Image {
    let mut ancestry = vec![id.to_string()];
    if let Some(p) = parent {
        ancestry.extend(p.ancestry.iter().cloned());
    }
    V1Image {
        id: id.to_string(),
        // Stored byte for byte: keys in any order, non-ASCII text.
        json: Bytes::from(format!(
            "{{\"id\":\"{id}\",\"comment\":\"caf\u{e9} \u{2603}\",\"a\":1}}"
        )),
        parent: parent.map(|p| p.id.clone()),
        ancestry,
        layer: None,
        checksum: None,
        complete: false,
        push_repo: push_repo.cloned(),
        created_at: 1_700_000_000,
    }
}

fn layer(size: u64) -> V1Layer {
    V1Layer {
        digest: rand_digest(),
        size,
    }
}

pub async fn v1_images(s: &dyn MetaStore) {
    let r = repo(&format!("{}/img", uniq("vi")));
    let root = image(&v1_id(), None, Some(&r));
    assert_eq!(q!(s.v1_image(&root.id)), None);
    assert_eq!(q!(s.put_v1_image(&root, false)), Ok(()));
    assert_eq!(q!(s.v1_image(&root.id)), Some(root.clone()));

    // Layer and checksum on an incomplete image; completion needs the
    // checksum recorded with the layer.
    let missing = v1_id();
    assert!(matches!(
        q!(s.set_v1_layer(&missing, &layer(1), "sha256:x")),
        Err(Refusal::Missing(_))
    ));
    assert!(matches!(
        q!(s.complete_v1_image(&missing, "sha256:x")),
        Err(Refusal::Missing(_))
    ));
    assert!(
        matches!(
            q!(s.complete_v1_image(&root.id, "sha256:x")),
            Err(Refusal::Invalid(_))
        ),
        "completion without a layer"
    );
    let l = layer((5u64 << 32) + 3);
    assert_eq!(q!(s.set_v1_layer(&root.id, &l, "sha256:good")), Ok(()));
    assert!(
        matches!(
            q!(s.complete_v1_image(&root.id, "sha256:bad")),
            Err(Refusal::Invalid(_))
        ),
        "completion with another checksum"
    );
    let stored = q!(s.v1_image(&root.id)).expect("stored");
    assert!(!stored.complete, "a refused completion completed");
    assert_eq!(stored.layer, Some(l.clone()));
    assert_eq!(stored.checksum.as_deref(), Some("sha256:good"));

    // Racing completions: one wins, the others see it complete.
    let done = join_all((0..6).map(|_| s.complete_v1_image(&root.id, "sha256:good"))).await;
    let oks = done.iter().filter(|d| matches!(d, Ok(Ok(())))).count();
    assert_eq!(oks, 1, "racing completions: {done:?}");
    assert!(
        done.iter()
            .all(|d| matches!(d, Ok(Ok(())) | Ok(Err(Refusal::Exists(_))))),
        "{done:?}"
    );
    let complete = q!(s.v1_image(&root.id)).unwrap();
    assert!(complete.complete);

    // A complete image keeps its layer and is not replaced...
    assert!(matches!(
        q!(s.set_v1_layer(&root.id, &layer(1), "sha256:other")),
        Err(Refusal::Exists(_))
    ));
    let mut again = root.clone();
    again.json = Bytes::from_static(b"{\"other\":true}");
    assert!(matches!(
        q!(s.put_v1_image(&again, false)),
        Err(Refusal::Exists(_))
    ));
    assert_eq!(q!(s.v1_image(&root.id)), Some(complete.clone()));
    // ...unless asked: then it is replaced whole, layer and checksum gone.
    assert_eq!(q!(s.put_v1_image(&again, true)), Ok(()));
    assert_eq!(q!(s.v1_image(&root.id)), Some(again.clone()));

    // An incomplete image is replaced whole.
    let child = image(&v1_id(), Some(&again), Some(&r));
    assert_eq!(q!(s.put_v1_image(&child, false)), Ok(()));
    assert_eq!(q!(s.set_v1_layer(&child.id, &layer(9), "sha256:c")), Ok(()));
    let mut child2 = child.clone();
    child2.push_repo = None;
    child2.json = Bytes::from_static(b"{}");
    assert_eq!(q!(s.put_v1_image(&child2, false)), Ok(()));
    let got = q!(s.v1_image(&child.id)).unwrap();
    assert_eq!(got, child2, "the layer of the replaced image stayed");
    assert_eq!(got.ancestry, vec![child.id.clone(), root.id.clone()]);

    // Synthesized images: stored unless present; their checksum is set
    // once, later.
    let mut synth = image(&v1_id(), None, None);
    synth.complete = true;
    synth.layer = Some(layer(3));
    q!(s.add_v1_images(&[synth.clone(), {
        let mut other = synth.clone();
        other.json = Bytes::from_static(b"{\"second\":1}");
        other
    }]));
    assert_eq!(q!(s.v1_image(&synth.id)), Some(synth.clone()), "first wins");
    let mut changed = synth.clone();
    changed.json = Bytes::from_static(b"{\"changed\":1}");
    q!(s.add_v1_images(std::slice::from_ref(&changed)));
    assert_eq!(q!(s.v1_image(&synth.id)), Some(synth.clone()));
    q!(s.set_v1_checksum(&synth.id, "sha256:first"));
    q!(s.set_v1_checksum(&synth.id, "sha256:second"));
    assert_eq!(
        q!(s.v1_image(&synth.id)).unwrap().checksum.as_deref(),
        Some("sha256:first")
    );
    // Not on incomplete images.
    q!(s.set_v1_checksum(&child.id, "sha256:nope"));
    assert_eq!(q!(s.v1_image(&child.id)).unwrap().checksum, None);
}

pub async fn v1_conversions(s: &dyn MetaStore) {
    let l = rand_digest();
    assert_eq!(q!(s.layer_info(&l)), None);
    let info = LayerInfo {
        diff_id: rand_digest(),
        media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
    };
    q!(s.put_layer_info(&l, &info));
    q!(s.put_layer_info(
        &l,
        &LayerInfo {
            diff_id: rand_digest(),
            media_type: "other".into(),
        }
    ));
    assert_eq!(q!(s.layer_info(&l)), Some(info), "first wins");

    let id = v1_id();
    let m1 = rand_digest();
    let conv = Conversion {
        manifest: m1.clone(),
        media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
        // Binary-safe.
        body: Bytes::from((0..=255u8).collect::<Vec<u8>>()),
        image: id.clone(),
    };
    assert_eq!(q!(s.v1_image_of_manifest(&m1)), None);
    assert_eq!(q!(s.manifest_of_v1_image(&id)), None);
    q!(s.put_v1_conversion(&conv));
    assert_eq!(q!(s.v1_image_of_manifest(&m1)), Some(id.clone()));
    assert_eq!(q!(s.manifest_of_v1_image(&id)), Some(conv.clone()));

    // Another manifest of the same image (another media type, say): it
    // maps to the image; the image keeps its first manifest.
    let m2 = rand_digest();
    let conv2 = Conversion {
        manifest: m2.clone(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: Bytes::from_static(b"{}"),
        image: id.clone(),
    };
    q!(s.put_v1_conversion(&conv2));
    assert_eq!(q!(s.v1_image_of_manifest(&m2)), Some(id.clone()));
    assert_eq!(q!(s.manifest_of_v1_image(&id)), Some(conv.clone()));
    // The first record of a manifest stays too.
    let mut conv3 = conv.clone();
    conv3.image = v1_id();
    q!(s.put_v1_conversion(&conv3));
    assert_eq!(q!(s.v1_image_of_manifest(&m1)), Some(id.clone()));
    assert_eq!(q!(s.manifest_of_v1_image(&conv3.image)), Some(conv3));

    // Racing records of one manifest: one image wins for it.
    let m3 = rand_digest();
    let ids: Vec<String> = (0..6).map(|_| v1_id()).collect();
    join_all(ids.iter().map(|i| {
        let c = Conversion {
            manifest: m3.clone(),
            media_type: "x".into(),
            body: Bytes::from(i.clone()),
            image: i.clone(),
        };
        async move { q!(s.put_v1_conversion(&c)) }
    }))
    .await;
    let winner = q!(s.v1_image_of_manifest(&m3)).expect("recorded");
    assert!(ids.contains(&winner));
}

pub async fn v1_repo_images(s: &dyn MetaStore) {
    let base = uniq("vr");
    let a = repo(&format!("{base}/a"));
    let b = repo(&format!("{base}/b"));
    let mut ids: Vec<String> = (0..5).map(|_| v1_id()).collect();
    ids.sort();
    q!(s.declare_v1_images(&a, &ids[..3]));
    q!(s.reference_v1_images(&a, &ids[2..4]));
    q!(s.reference_v1_images(&b, &ids[3..]));
    // Idempotent, and a reference keeps the declaration (and back).
    q!(s.declare_v1_images(&a, &ids[2..3]));
    q!(s.reference_v1_images(&a, &ids[2..3]));

    assert!(!q!(s.v1_references(&a, &ids[0])), "declared only");
    assert!(q!(s.v1_references(&a, &ids[2])));
    assert!(q!(s.v1_references(&a, &ids[3])));
    assert!(!q!(s.v1_references(&a, &ids[4])));
    assert_eq!(q!(s.v1_repo_images(&a, None, 100)), ids[..4].to_vec());
    assert_eq!(
        q!(s.v1_repo_images(&a, Some(&ids[1]), 2)),
        ids[2..4].to_vec()
    );
    assert_eq!(q!(s.v1_repo_images(&b, None, 100)), ids[3..].to_vec());
    assert_eq!(
        q!(s.v1_image_repos(&ids[3], 10)),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(q!(s.v1_image_repos(&ids[3], 1)), vec![a.clone()]);
    assert_eq!(q!(s.v1_image_repos(&ids[0], 10)), Vec::<RepoName>::new());
    assert_eq!(q!(s.v1_declaring_repos(&ids[0], 10)), vec![a.clone()]);
    assert_eq!(q!(s.v1_declaring_repos(&ids[2], 10)), vec![a.clone()]);
    assert_eq!(
        q!(s.v1_declaring_repos(&ids[4], 10)),
        Vec::<RepoName>::new()
    );

    // Many at once.
    let many: Vec<String> = (0..450).map(|_| v1_id()).collect();
    q!(s.reference_v1_images(&b, &many));
    assert_eq!(q!(s.v1_repo_images(&b, None, 1000)).len(), 452);

    q!(s.forget_v1_repo(&a));
    assert!(q!(s.v1_repo_images(&a, None, 100)).is_empty());
    assert!(!q!(s.v1_references(&a, &ids[2])));
    assert_eq!(q!(s.v1_image_repos(&ids[3], 10)), vec![b.clone()]);
    assert!(q!(s.v1_declaring_repos(&ids[0], 10)).is_empty());
    q!(s.forget_v1_repo(&b));
    assert!(q!(s.v1_repo_images(&b, None, 1000)).is_empty());
    assert!(q!(s.v1_image_repos(&many[0], 10)).is_empty());
    q!(s.forget_v1_repo(&repo(&uniq("nothing"))));
}

pub async fn v1_search(s: &dyn MetaStore) {
    let word = uniq("srch");
    let ns = uniq("sn");
    let mk = |name: String, comment: Option<&str>| {
        let mut r = repository(&repo(&name));
        r.comment = comment.map(str::to_string);
        r.created_at = now();
        r
    };
    let by_name = mk(format!("{ns}/{word}-app"), None);
    let by_comment = mk(
        format!("{ns}/zz"),
        Some(&format!("The {} Service", word.to_uppercase())),
    );
    let underscore = mk(format!("{ns}/a_b{word}"), None);
    let other = mk(format!("{ns}/axb{word}x"), Some("nothing here"));
    for r in [&by_name, &by_comment, &underscore, &other] {
        assert_eq!(q!(s.create_repo(r)), Ok(()));
    }
    let names = |v: Vec<crate::meta::legacy::RepoMatch>| -> Vec<String> {
        v.into_iter()
            .filter(|m| m.name.as_str().starts_with(&ns))
            .map(|m| m.name.to_string())
            .collect()
    };
    let all = names(q!(s.search_repos(&word, None, 1000)));
    assert_eq!(
        all,
        vec![
            underscore.name.to_string(),
            other.name.to_string(),
            by_name.name.to_string(),
            by_comment.name.to_string(),
        ],
        "name and comment matches, in byte order"
    );
    let found = q!(s.search_repos(&format!("the {word} service"), None, 1000));
    let hit = found
        .iter()
        .find(|m| m.name == by_comment.name)
        .expect("a comment matches whatever its case");
    assert_eq!(hit.comment, by_comment.comment);
    // Pattern characters are literal.
    assert_eq!(
        names(q!(s.search_repos(&format!("a_b{word}"), None, 1000))),
        vec![underscore.name.to_string()]
    );
    assert!(names(q!(s.search_repos(&format!("%{word}"), None, 1000))).is_empty());
    // Paging.
    let first = q!(s.search_repos(&word, Some(&ns), 2));
    assert_eq!(names(first.clone()).len(), 2);
    let rest = q!(s.search_repos(&word, Some(first[1].name.as_str()), 1000));
    assert_eq!(
        names(first)
            .into_iter()
            .chain(names(rest))
            .collect::<Vec<_>>(),
        all
    );
    assert!(q!(s.search_repos(&word, None, 0)).is_empty());
    // An empty query matches everything.
    assert!(q!(s.search_repos("", Some(&ns), 1000)).len() >= 4);
}
