//! Tests against the one-node Ceph of `packaging/services/ceph.sh` (started
//! on demand, shared by every test and test binary). Each store works in a
//! RADOS namespace of its own, so tests neither see each other's objects nor
//! earlier runs'.

use super::*;
use crate::storage::contract::{self, Subject, append, patch, random_bytes, read, session, sha256};
use crate::testsupport::{self, Service};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn config(chunk: u64, namespace: &str) -> RadosConfig {
    RadosConfig {
        conf: testsupport::start(Service::Ceph).into(),
        pool: "registry".into(),
        user: "admin".into(),
        chunksize: chunk,
        namespace: namespace.into(),
    }
}

fn namespace() -> String {
    format!("test-{}", contract::uid())
}

/// A store ("node") with its own connection.
fn node(chunk: u64, namespace: &str) -> RadosStore {
    let mut store = RadosStore::open(&config(chunk, namespace)).expect("open the test cluster");
    Arc::get_mut(&mut store.objs).unwrap().lock_wait = Duration::from_millis(300);
    store
}

struct Rig {
    store: RadosStore,
}

fn rig(chunk: u64) -> Rig {
    Rig {
        store: node(chunk, &namespace()),
    }
}

/// Names of the objects in the store's namespace, indexes excluded.
fn objects(store: &RadosStore) -> Vec<String> {
    let ctx = store.objs.io.rados_list_pool_objects().unwrap();
    let mut names: Vec<String> = ceph::ceph::Pool { ctx }
        .map(|o| o.name)
        .filter(|n| !n.starts_with("index."))
        .collect();
    names.sort();
    names
}

#[async_trait]
impl Subject for Rig {
    fn store(&self) -> &dyn BlobStore {
        &self.store
    }

    async fn pieces(&self) -> usize {
        objects(&self.store).len()
    }

    fn chunk(&self) -> Option<u64> {
        Some(self.store.chunk)
    }
}

#[tokio::test]
async fn contract_with_small_chunks() {
    contract::run_all(&rig(64 * KIB)).await;
}

#[tokio::test]
async fn contract_with_default_chunks() {
    contract::run_all(&rig(4 * MIB)).await;
}

#[tokio::test]
async fn big_blob_streams() {
    contract::big_blob(&rig(4 * MIB), 300 * MIB, 64 * MIB).await;
}

#[tokio::test]
async fn layout() {
    let rig = rig(64 * KIB);
    let store = &rig.store;
    let data = random_bytes(150_000);
    let id = session(store).await;
    patch(store, &id, 0, &data).await;
    let d = sha256(&data);
    store.commit_upload(&id, &d, 150_000).await.unwrap();
    let head = format!("blob.sha256.{}", d.hex());
    let mut want = vec![
        head.clone(),
        format!("chunk.{id}.0"),
        format!("chunk.{id}.1"),
        format!("chunk.{id}.2"),
    ];
    want.sort();
    assert_eq!(objects(store), want);
    let sizes: Vec<u64> = (0..3)
        .map(|n| store.objs.stat(&chunk_name(&id, n)).unwrap().unwrap().0)
        .collect();
    assert_eq!(sizes, [65536, 65536, 150_000 - 131072]);
    let h = store.objs.header(&d).unwrap().unwrap();
    assert_eq!(
        (h.size, h.chunk, h.generation.as_deref()),
        (150_000, Some(65536), Some(id.as_str()))
    );
    // A small blob is one object.
    let small = random_bytes(1000);
    let ds = sha256(&small);
    store.put_small(&ds, Bytes::from(small)).await.unwrap();
    assert_eq!(objects(store).len(), 5);
    store.delete(&d).await.unwrap();
    store.delete(&ds).await.unwrap();
    assert!(objects(store).is_empty());
}

#[tokio::test]
async fn put_small_beyond_a_chunk() {
    let rig = rig(64 * KIB);
    let store = &rig.store;
    let data = random_bytes(200_000);
    let d = sha256(&data);
    store
        .put_small(&d, Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(200_000));
    assert!(read(store, &d, 0..200_000).await == data);
    assert_eq!(objects(store).len(), 1 + 4, "head and four chunks");
    assert!(store.stale_uploads(i64::MAX, 10).await.unwrap().is_empty());
    store.delete(&d).await.unwrap();
    assert!(objects(store).is_empty());
}

#[tokio::test]
async fn another_node_continues_an_upload() {
    let ns = namespace();
    let a = node(64 * KIB, &ns);
    // Another chunk size on the other node: the session keeps its own.
    let b = node(256 * KIB, &ns);
    let data = random_bytes(500_000);
    let id = session(&a).await;
    let n = patch(&a, &id, 0, &data[..100_001]).await;
    assert_eq!(b.upload_state(&id).await.unwrap().unwrap().offset, n);
    let n = patch(&b, &id, n, &data[100_001..300_000]).await;
    let n = patch(&a, &id, n, &data[300_000..]).await;
    let back = contract::collect(b.read_upload(&id, n).await.unwrap())
        .await
        .unwrap();
    assert!(back == data);
    let d = sha256(&data);
    // As the core does at the start of every request.
    b.upload_state(&id).await.unwrap();
    b.commit_upload(&id, &d, n).await.unwrap();
    assert!(read(&a, &d, 0..n).await == data);
    assert_eq!(a.upload_state(&id).await.unwrap(), None);
    assert_eq!(objects(&a).len(), 1 + 8, "head and 8 chunks of 64 KiB");
    a.delete(&d).await.unwrap();
    assert!(objects(&b).is_empty());
}

#[tokio::test]
async fn concurrent_commits_of_one_digest() {
    let ns = namespace();
    let a = node(64 * KIB, &ns);
    let b = node(64 * KIB, &ns);
    for round in 0..5 {
        let data = random_bytes(300_000 + round);
        let d = sha256(&data);
        let ia = session(&a).await;
        let ib = session(&b).await;
        let n = patch(&a, &ia, 0, &data).await;
        patch(&b, &ib, 0, &data).await;
        let (ra, rb) = tokio::join!(a.commit_upload(&ia, &d, n), b.commit_upload(&ib, &d, n));
        ra.unwrap();
        rb.unwrap();
        assert!(read(&a, &d, 0..n).await == data);
        // One copy: a head and five chunks; both sessions gone.
        assert_eq!(objects(&a).len(), 1 + 5, "round {round}: {:?}", objects(&a));
        assert_eq!(a.upload_state(&ia).await.unwrap(), None);
        assert_eq!(a.upload_state(&ib).await.unwrap(), None);
        a.delete(&d).await.unwrap();
        assert!(objects(&a).is_empty());
    }
}

#[tokio::test]
async fn interrupted_commit_before_the_head() {
    let rig = rig(64 * KIB);
    let store = &rig.store;
    let objs = &store.objs;
    let data = random_bytes(200_000);
    let d = sha256(&data);
    let id = session(store).await;
    let n = patch(store, &id, 0, &data).await;
    // The commit got as far as the marker and the index entry.
    let s = objs.lock(&id, None).unwrap().unwrap();
    let meta = SessionMeta {
        chunk: s.meta.chunk,
        commit: Some(d.to_string()),
    };
    WriteOp::new()
        .setxattr(X_SESSION, &serde_json::to_vec(&meta).unwrap())
        .run(&objs.io, &state_name(&id))
        .unwrap();
    objs.omap_set(&blob_index(&d), d.hex(), b"200000").unwrap();
    objs.unlock(&id);
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert!(store.list_blobs(None, 100).await.unwrap().is_empty());
    // The client may retry...
    store.commit_upload(&id, &d, n).await.unwrap();
    assert!(read(store, &d, 0..n).await == data);
    store.delete(&d).await.unwrap();
    // ...or the janitor removes the session, chunks and all.
    let id = session(store).await;
    patch(store, &id, 0, &data).await;
    let s = objs.lock(&id, None).unwrap().unwrap();
    WriteOp::new()
        .setxattr(
            X_SESSION,
            &serde_json::to_vec(&SessionMeta {
                chunk: s.meta.chunk,
                commit: Some(d.to_string()),
            })
            .unwrap(),
        )
        .run(&objs.io, &state_name(&id))
        .unwrap();
    objs.unlock(&id);
    let stale = store.stale_uploads(unix_now() + 5, 10).await.unwrap();
    assert_eq!(stale, std::slice::from_ref(&id));
    store.delete_upload(&id).await.unwrap();
    assert!(objects(store).is_empty(), "{:?}", objects(store));
}

#[tokio::test]
async fn interrupted_commit_after_the_head() {
    let rig = rig(64 * KIB);
    let store = &rig.store;
    let objs = &store.objs;
    let data = random_bytes(200_000);
    let d = sha256(&data);
    let id = session(store).await;
    let n = patch(store, &id, 0, &data).await;
    // Everything but removing the session.
    objs.lock(&id, None).unwrap().unwrap();
    let meta = SessionMeta {
        chunk: 64 * KIB,
        commit: Some(d.to_string()),
    };
    WriteOp::new()
        .setxattr(X_SESSION, &serde_json::to_vec(&meta).unwrap())
        .run(&objs.io, &state_name(&id))
        .unwrap();
    let header = Header {
        size: n,
        chunk: Some(64 * KIB),
        generation: Some(id.clone()),
    };
    assert!(objs.create_head(&d, &header, &[]).unwrap());
    objs.unlock(&id);
    assert!(read(store, &d, 0..n).await == data);
    // The session takes no more data: the chunks are the blob's.
    assert!(matches!(
        store.append_upload(&id, n),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.append_upload(&id, 0),
        Err(StoreError::NotFound)
    ));
    // A retried commit succeeds; expiring the session keeps the blob.
    store.commit_upload(&id, &d, n).await.unwrap();
    assert!(read(store, &d, 0..n).await == data);
    assert_eq!(objects(store).len(), 1 + 4);
    store.delete(&d).await.unwrap();
    assert!(objects(store).is_empty());
}

#[tokio::test]
async fn interrupted_delete() {
    let rig = rig(64 * KIB);
    let store = &rig.store;
    let objs = &store.objs;
    let data = random_bytes(200_000);
    let d = contract::upload(store, &data).await;
    let h = objs.header(&d).unwrap().unwrap();
    let generation = h.generation.clone().unwrap();
    // Stopped after making the chunks findable: the blob is whole, and the
    // janitor leaves it so.
    objs.trash(&d, h.size, h.chunk.unwrap(), &generation)
        .unwrap();
    let stale = store.stale_uploads(unix_now() - 60, 10).await.unwrap();
    assert_eq!(stale, std::slice::from_ref(&generation));
    store.delete_upload(&generation).await.unwrap();
    assert!(read(store, &d, 0..200_000).await == data);
    assert_eq!(objects(store).len(), 1 + 4);
    // Stopped after removing the head: the janitor removes the rest.
    objs.trash(&d, h.size, h.chunk.unwrap(), &generation)
        .unwrap();
    objs.remove(&head_name(&d)).unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert!(store.list_blobs(None, 10).await.unwrap().is_empty());
    for id in store.stale_uploads(unix_now() - 60, 10).await.unwrap() {
        store.delete_upload(&id).await.unwrap();
    }
    assert!(objects(store).is_empty(), "{:?}", objects(store));
}

#[tokio::test]
async fn session_lock_across_nodes() {
    let ns = namespace();
    let a = node(64 * KIB, &ns);
    let b = node(64 * KIB, &ns);
    let id = session(&a).await;
    let mut w = a.append_upload(&id, 0).unwrap();
    w.write(&random_bytes(100_000)).unwrap();
    // While a writes, b can neither write nor drop the session.
    let e = b.append_upload(&id, 0).err().expect("b must wait for a");
    assert!(e.to_string().contains("in use"), "{e}");
    assert!(b.delete_upload(&id).await.is_err());
    assert_eq!(w.finish().unwrap(), 100_000);
    a.save_upload_state(&id, &contract::state(100_000))
        .await
        .unwrap();
    // Now b may.
    b.upload_state(&id).await.unwrap();
    let n = append(&b, &id, 100_000, b"more", 1);
    assert_eq!(n, 100_004);
    b.save_upload_state(&id, &contract::state(n)).await.unwrap();
    // A node that died holding the lock blocks the session until it expires.
    std::mem::forget(a.append_upload(&id, n).unwrap());
    assert!(b.append_upload(&id, n).is_err());
    WriteOp::new()
        .setxattr(X_UNTIL, (unix_now() - 1).to_string().as_bytes())
        .run(&b.objs.io, &state_name(&id))
        .unwrap();
    let w = b.append_upload(&id, n).unwrap();
    // The old holder notices it lost the lock.
    assert!(a.objs.renew(&id).is_err());
    drop(w);
    b.delete_upload(&id).await.unwrap();
    assert!(objects(&a).is_empty());
}

#[tokio::test]
async fn state_from_before_another_write_is_refused() {
    let ns = namespace();
    let a = node(64 * KIB, &ns);
    let b = node(64 * KIB, &ns);
    let id = session(&a).await;
    a.upload_state(&id).await.unwrap();
    b.upload_state(&id).await.unwrap();
    // Both continue from offset 0; b writes after a finished, before a saved.
    assert_eq!(append(&a, &id, 0, &random_bytes(100), 7), 100);
    let mine = random_bytes(50);
    assert_eq!(append(&b, &id, 0, &mine, 7), 50);
    let e = a
        .save_upload_state(&id, &contract::state(100))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("meanwhile"), "{e}");
    b.save_upload_state(&id, &contract::state(50))
        .await
        .unwrap();
    // a read the state before b's write: its hash is stale, no commit.
    a.upload_state(&id).await.unwrap();
    b.upload_state(&id).await.unwrap();
    patch(&b, &id, 50, b"xyz").await;
    let d = sha256(b"whatever a hashed");
    let e = a.commit_upload(&id, &d, 50).await.unwrap_err();
    assert!(e.to_string().contains("meanwhile"), "{e}");
    assert_eq!(a.stat(&d).await.unwrap(), None);
    // b's view is current.
    let mut want = mine.clone();
    want.extend_from_slice(b"xyz");
    let d = sha256(&want);
    b.commit_upload(&id, &d, 53).await.unwrap();
    assert!(read(&a, &d, 0..53).await == want);
    a.delete(&d).await.unwrap();
    assert!(objects(&a).is_empty());
}

#[tokio::test]
async fn failed_request_then_commit() {
    // A PATCH that died half-way (data beyond the saved offset, no save),
    // then a PUT without a body: the saved state still describes the data
    // below its offset, so the commit goes ahead.
    let rig = rig(64 * KIB);
    let store = &rig.store;
    let data = random_bytes(100_000);
    let id = session(store).await;
    let n = patch(store, &id, 0, &data).await;
    store.upload_state(&id).await.unwrap();
    append(store, &id, n, &random_bytes(70_000), 1000);
    store.upload_state(&id).await.unwrap();
    let d = sha256(&data);
    store.commit_upload(&id, &d, n).await.unwrap();
    assert!(read(store, &d, 0..n).await == data);
    assert_eq!(objects(store).len(), 1 + 2);
    store.delete(&d).await.unwrap();
}

#[tokio::test]
async fn open_errors_name_the_key() {
    let mut cfg = config(4 * MIB, "");
    cfg.pool = format!("no-such-pool-{}", contract::uid());
    let e = RadosStore::open(&cfg).err().unwrap().to_string();
    assert!(e.contains("rados.pool"), "{e}");
    let mut cfg = config(4 * MIB, "");
    cfg.conf = "/nonexistent/ceph.conf".into();
    let e = RadosStore::open(&cfg).err().unwrap().to_string();
    assert!(e.contains("rados.conf"), "{e}");
}
