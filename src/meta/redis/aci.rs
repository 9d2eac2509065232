//! `AciStore` on Redis.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `P:aci:img:{esc repo}:{esc version}:{esc os}:{arch}` | hash | `repo`, `version`, `os`, `arch`, `aci`, `size`, `id`, `sig`?, `manifest`, `at` |
//! | `P:aci:conv:{key}` | hash | `key`, `repo`, `source`, `aci`, `size`, `id`, `manifest`, `at` |
//! | `P:aci:keys:{namespace}` | hash | `armored`, `at` |
//! | `P:aci:refs:{digest}` | hash | repository → number of image and conversion records naming the blob |
//!
//! Image writes and conversion inserts are scripts, so the reference
//! counts always match the records.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;

use super::{RedisMeta, esc, parse_digest};
use crate::meta::aci::{AciConversion, AciImage, AciStore};
use crate::meta::{MetaError, MetaResult};
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;

const PRELUDE: &str = r#"
local P = ARGV[1] .. ':'
local function unref(d, repo)
  if d and d ~= '' then
    local k = P .. 'aci:refs:' .. d
    if redis.call('HINCRBY', k, repo, -1) <= 0 then
      redis.call('HDEL', k, repo)
    end
  end
end
local function ref(d, repo)
  if d ~= '' then
    redis.call('HINCRBY', P .. 'aci:refs:' .. d, repo, 1)
  end
end
"#;

struct Scripts {
    put_image: Script,
    put_conversion: Script,
    blob_in_use: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let s = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
    Scripts {
        // key suffix, repo, aci, signature ('' none), then field/value pairs
        put_image: s(r#"
local key = P .. 'aci:img:' .. ARGV[2]
local old = redis.call('HMGET', key, 'aci', 'sig')
unref(old[1], ARGV[3])
unref(old[2], ARGV[3])
ref(ARGV[4], ARGV[3])
ref(ARGV[5], ARGV[3])
redis.call('DEL', key)
redis.call('HSET', key, unpack(ARGV, 6))
return 1
"#),
        // key, repo, aci, then field/value pairs -> 1 if stored, 0 if one was
        put_conversion: s(r#"
local key = P .. 'aci:conv:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then
  return 0
end
ref(ARGV[4], ARGV[3])
redis.call('HSET', key, unpack(ARGV, 5))
return 1
"#),
        // digest -> 1 if a record names it and its repository links it
        blob_in_use: s(r#"
local d = ARGV[2]
for _, repo in ipairs(redis.call('HKEYS', P .. 'aci:refs:' .. d)) do
  local id = redis.call('HGET', P .. 'repo:' .. repo, 'id')
  if id and redis.call('HEXISTS', P .. 'r:' .. id .. ':blobs', d) == 1 then
    return 1
  end
end
return 0
"#),
    }
});

type Record = HashMap<String, Vec<u8>>;

fn text(r: &Record, field: &str) -> MetaResult<String> {
    let v = r
        .get(field)
        .ok_or_else(|| MetaError::Corrupt(format!("ACI record lacks {field}")))?;
    String::from_utf8(v.clone())
        .map_err(|_| MetaError::Corrupt(format!("ACI record field {field} is not UTF-8")))
}

fn number(r: &Record, field: &str) -> MetaResult<i64> {
    text(r, field)?
        .parse()
        .map_err(|_| MetaError::Corrupt(format!("ACI record field {field} is not a number")))
}

fn repo_of(r: &Record) -> MetaResult<RepoName> {
    let s = text(r, "repo")?;
    s.parse()
        .map_err(|e| MetaError::Corrupt(format!("stored repository {s:?}: {e}")))
}

fn image_key(repo: &RepoName, version: &str, os: &str, arch: &str) -> String {
    format!("{}:{}:{}:{arch}", esc(repo.as_str()), esc(version), esc(os))
}

#[async_trait]
impl AciStore for RedisMeta {
    async fn put_aci_image(&self, img: &AciImage) -> MetaResult<()> {
        let mut inv = self.script(&SCRIPTS.put_image);
        let sig = img.signature.as_ref().map_or("", |d| d.as_str());
        inv.arg(image_key(&img.repo, &img.version, &img.os, &img.arch))
            .arg(img.repo.as_str())
            .arg(img.aci.as_str())
            .arg(sig);
        inv.arg("repo")
            .arg(img.repo.as_str())
            .arg("version")
            .arg(&img.version)
            .arg("os")
            .arg(&img.os)
            .arg("arch")
            .arg(&img.arch)
            .arg("aci")
            .arg(img.aci.as_str())
            .arg("size")
            .arg(img.size)
            .arg("id")
            .arg(&img.image_id)
            .arg("manifest")
            .arg(img.manifest.as_ref())
            .arg("at")
            .arg(img.created_at);
        if !sig.is_empty() {
            inv.arg("sig").arg(sig);
        }
        let _: i64 = self.run(&inv).await?;
        Ok(())
    }

    async fn aci_image(
        &self,
        repo: &RepoName,
        version: &str,
        os: &str,
        arch: &str,
    ) -> MetaResult<Option<AciImage>> {
        let key = self.key(&format!("aci:img:{}", image_key(repo, version, os, arch)));
        let r: Record = self.query(redis::cmd("HGETALL").arg(key)).await?;
        if r.is_empty() {
            return Ok(None);
        }
        Ok(Some(AciImage {
            repo: repo_of(&r)?,
            version: text(&r, "version")?,
            os: text(&r, "os")?,
            arch: text(&r, "arch")?,
            aci: parse_digest(&text(&r, "aci")?)?,
            size: number(&r, "size")? as u64,
            image_id: text(&r, "id")?,
            signature: match r.contains_key("sig") {
                true => Some(parse_digest(&text(&r, "sig")?)?),
                false => None,
            },
            manifest: Bytes::from(r.get("manifest").cloned().unwrap_or_default()),
            created_at: number(&r, "at")?,
        }))
    }

    async fn put_aci_conversion(&self, c: &AciConversion) -> MetaResult<AciConversion> {
        let mut inv = self.script(&SCRIPTS.put_conversion);
        inv.arg(&c.key)
            .arg(c.repo.as_str())
            .arg(c.aci.as_str())
            .arg("key")
            .arg(&c.key)
            .arg("repo")
            .arg(c.repo.as_str())
            .arg("source")
            .arg(c.source.as_str())
            .arg("aci")
            .arg(c.aci.as_str())
            .arg("size")
            .arg(c.size)
            .arg("id")
            .arg(&c.image_id)
            .arg("manifest")
            .arg(c.manifest.as_ref())
            .arg("at")
            .arg(c.created_at);
        let _: i64 = self.run(&inv).await?;
        // A stored conversion never changes: reading it back is safe.
        self.aci_conversion(&c.key).await?.ok_or_else(|| {
            MetaError::Backend(format!("conversion {} vanished after its insert", c.key))
        })
    }

    async fn aci_conversion(&self, key: &str) -> MetaResult<Option<AciConversion>> {
        let r: Record = self
            .query(redis::cmd("HGETALL").arg(self.key(&format!("aci:conv:{key}"))))
            .await?;
        if r.is_empty() {
            return Ok(None);
        }
        Ok(Some(AciConversion {
            key: text(&r, "key")?,
            repo: repo_of(&r)?,
            source: parse_digest(&text(&r, "source")?)?,
            aci: parse_digest(&text(&r, "aci")?)?,
            size: number(&r, "size")? as u64,
            image_id: text(&r, "id")?,
            manifest: Bytes::from(r.get("manifest").cloned().unwrap_or_default()),
            created_at: number(&r, "at")?,
        }))
    }

    async fn set_aci_pubkeys(&self, namespace: &str, armored: &str, at: i64) -> MetaResult<()> {
        let _: i64 = self
            .query(
                redis::cmd("HSET")
                    .arg(self.key(&format!("aci:keys:{namespace}")))
                    .arg("armored")
                    .arg(armored)
                    .arg("at")
                    .arg(at),
            )
            .await?;
        Ok(())
    }

    async fn aci_pubkeys(&self, namespace: &str) -> MetaResult<Option<String>> {
        self.query(
            redis::cmd("HGET")
                .arg(self.key(&format!("aci:keys:{namespace}")))
                .arg("armored"),
        )
        .await
    }

    async fn delete_aci_pubkeys(&self, namespace: &str) -> MetaResult<bool> {
        let n: i64 = self
            .query(redis::cmd("DEL").arg(self.key(&format!("aci:keys:{namespace}"))))
            .await?;
        Ok(n > 0)
    }

    async fn aci_blob_in_use(&self, digest: &Digest) -> MetaResult<bool> {
        let mut inv = self.script(&SCRIPTS.blob_in_use);
        inv.arg(digest.as_str());
        let n: i64 = self.run(&inv).await?;
        Ok(n == 1)
    }
}
