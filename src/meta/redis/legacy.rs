//! `LegacyStore` on Redis. Every check-and-change is one Lua script (run
//! atomically by Redis); insert-only facts keep the first writer's value.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `P:v1:img:{id}` | hash | `json`, `parent`?, `anc` (JSON array), `ld`?, `ls`? (layer digest, size), `cs`? (checksum), `done` (0/1), `prepo`?, `at` |
//! | `P:v1:layer:{digest}` | hash | `diff`, `mt` |
//! | `P:v1:m:{manifest digest}` | hash | `id`, `mt`, `body` (a conversion) |
//! | `P:v1:i2m` | hash | v1 image id → manifest digest |
//! | `P:v1:ri:{repo}` | zset lex | ids the repository declares or references |
//! | `P:v1:refs:{id}` | zset lex | repositories referencing the image |
//! | `P:v1:decl:{id}` | zset lex | repositories declaring the image |
//!
//! Every variable part is the last of its key, so no escaping is needed.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;

use super::{RedisMeta, lex_after, parse_digest};
use crate::meta::accounts::{Change, Refusal};
use crate::meta::legacy::{Conversion, LayerInfo, LegacyStore, RepoMatch, V1Image, V1Layer};
use crate::meta::{MetaError, MetaResult};
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;

/// How many repositories one search step examines, and how many ids one
/// `forget_v1_repo` step removes.
const SCAN_BATCH: u32 = 500;

const PRELUDE: &str = "local P = ARGV[1] .. ':v1:'\n";

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

struct Scripts {
    put_image: Script,
    add_image: Script,
    set_layer: Script,
    complete: Script,
    set_checksum: Script,
    put_layer: Script,
    put_conversion: Script,
    manifest_of: Script,
    mark: Script,
    forget_repo: Script,
    search: Script,
}

fn scripts() -> &'static Scripts {
    static S: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    S.get_or_init(|| Scripts {
        // id, replace complete (0/1), field/value pairs -> ok | exists
        put_image: script(
            r#"
local key = P .. 'img:' .. ARGV[2]
if ARGV[3] ~= '1' and redis.call('HGET', key, 'done') == '1' then return 'exists' end
redis.call('DEL', key)
redis.call('HSET', key, unpack(ARGV, 4))
return 'ok'
"#,
        ),
        // id, field/value pairs -> 1 if stored
        add_image: script(
            r#"
local key = P .. 'img:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, unpack(ARGV, 3))
return 1
"#,
        ),
        // id, layer digest, size, checksum -> ok | missing | exists
        set_layer: script(
            r#"
local key = P .. 'img:' .. ARGV[2]
local done = redis.call('HGET', key, 'done')
if not done then return 'missing' end
if done == '1' then return 'exists' end
redis.call('HSET', key, 'ld', ARGV[3], 'ls', ARGV[4], 'cs', ARGV[5])
return 'ok'
"#,
        ),
        // id, checksum -> ok | missing | exists | nolayer | mismatch
        complete: script(
            r#"
local key = P .. 'img:' .. ARGV[2]
local f = redis.call('HMGET', key, 'done', 'ld', 'cs')
if not f[1] then return 'missing' end
if f[1] == '1' then return 'exists' end
if not f[2] then return 'nolayer' end
if f[3] ~= ARGV[3] then return 'mismatch' end
redis.call('HSET', key, 'done', '1')
return 'ok'
"#,
        ),
        // id, checksum
        set_checksum: script(
            r#"
local key = P .. 'img:' .. ARGV[2]
if redis.call('HGET', key, 'done') == '1' and redis.call('HEXISTS', key, 'cs') == 0 then
  redis.call('HSET', key, 'cs', ARGV[3])
end
return 1
"#,
        ),
        // digest, diff id, media type
        put_layer: script(
            r#"
local key = P .. 'layer:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then
  redis.call('HSET', key, 'diff', ARGV[3], 'mt', ARGV[4])
end
return 1
"#,
        ),
        // manifest digest, image id, media type, body
        put_conversion: script(
            r#"
local key = P .. 'm:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then
  redis.call('HSET', key, 'id', ARGV[3], 'mt', ARGV[4], 'body', ARGV[5])
end
redis.call('HSETNX', P .. 'i2m', ARGV[3], ARGV[2])
return 1
"#,
        ),
        // image id -> {manifest digest, media type, body} or nil
        manifest_of: script(
            r#"
local d = redis.call('HGET', P .. 'i2m', ARGV[2])
if not d then return false end
local m = redis.call('HMGET', P .. 'm:' .. d, 'mt', 'body')
if not m[1] then return {d} end
return {d, m[1], m[2]}
"#,
        ),
        // repo, kind ('decl' or 'refs'), ids...
        mark: script(
            r#"
local repo, kind = ARGV[2], ARGV[3]
for i = 4, #ARGV do
  redis.call('ZADD', P .. 'ri:' .. repo, 0, ARGV[i])
  redis.call('ZADD', P .. kind .. ':' .. ARGV[i], 0, repo)
end
return 1
"#,
        ),
        // repo, batch -> ids left
        forget_repo: script(
            r#"
local repo = ARGV[2]
local ri = P .. 'ri:' .. repo
for _, id in ipairs(redis.call('ZRANGE', ri, 0, tonumber(ARGV[3]) - 1)) do
  redis.call('ZREM', P .. 'refs:' .. id, repo)
  redis.call('ZREM', P .. 'decl:' .. id, repo)
  redis.call('ZREM', ri, id)
end
return redis.call('ZCARD', ri)
"#,
        ),
        // query, range start, batch, want
        // -> {{name, has comment, comment, ...}, last name examined, exhausted}
        search: script(
            r#"
local q, want = ARGV[2], tonumber(ARGV[5])
local names = redis.call('ZRANGEBYLEX', ARGV[1] .. ':repos', ARGV[3], '+', 'LIMIT', 0,
  tonumber(ARGV[4]))
local out, last, found = {}, false, 0
for _, n in ipairs(names) do
  last = n
  local c = redis.call('HGET', ARGV[1] .. ':repo:' .. n, 'comment')
  local hit = q == '' or string.find(n, q, 1, true)
  if not hit and c then hit = string.find(string.lower(c), q, 1, true) end
  if hit then
    out[#out + 1] = n
    if c then out[#out + 1] = '1'; out[#out + 1] = c
    else out[#out + 1] = '0'; out[#out + 1] = '' end
    found = found + 1
    if found >= want then break end
  end
end
local exhausted = 0
if #names < tonumber(ARGV[4]) and (#names == 0 or last == names[#names]) then exhausted = 1 end
return {out, last, exhausted}
"#,
        ),
    })
}

/// A record as `HGETALL` returns it (values are binary-safe).
type Fields = HashMap<String, Vec<u8>>;

fn text(f: &Fields, id: &str, field: &str) -> MetaResult<Option<String>> {
    f.get(field)
        .map(|v| {
            String::from_utf8(v.clone())
                .map_err(|_| MetaError::Corrupt(format!("v1 image {id}: {field} is not UTF-8")))
        })
        .transpose()
}

fn image_from(id: &str, f: Fields) -> MetaResult<V1Image> {
    let corrupt = |what: &str| MetaError::Corrupt(format!("v1 image {id}: {what}"));
    let ancestry: Vec<String> =
        serde_json::from_str(&text(&f, id, "anc")?.ok_or_else(|| corrupt("no ancestry"))?)
            .map_err(|e| corrupt(&format!("ancestry: {e}")))?;
    let layer = match (text(&f, id, "ld")?, text(&f, id, "ls")?) {
        (Some(d), Some(s)) => Some(V1Layer {
            digest: parse_digest(&d)?,
            size: s.parse().map_err(|_| corrupt("layer size"))?,
        }),
        _ => None,
    };
    let push_repo = text(&f, id, "prepo")?
        .map(|r| r.parse::<RepoName>().map_err(|e| corrupt(&e.to_string())))
        .transpose()?;
    Ok(V1Image {
        id: id.to_string(),
        json: Bytes::from(f.get("json").cloned().ok_or_else(|| corrupt("no json"))?),
        parent: text(&f, id, "parent")?,
        ancestry,
        layer,
        checksum: text(&f, id, "cs")?,
        complete: text(&f, id, "done")?.as_deref() == Some("1"),
        push_repo,
        created_at: text(&f, id, "at")?
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("no time"))?,
    })
}

/// Field/value pairs of an image record.
fn image_pairs(i: &V1Image) -> Vec<(&'static str, Vec<u8>)> {
    let mut p: Vec<(&'static str, Vec<u8>)> = vec![
        ("json", i.json.to_vec()),
        (
            "anc",
            serde_json::to_vec(&i.ancestry).expect("strings serialize"),
        ),
        (
            "done",
            if i.complete {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            },
        ),
        ("at", i.created_at.to_string().into_bytes()),
    ];
    if let Some(parent) = &i.parent {
        p.push(("parent", parent.clone().into_bytes()));
    }
    if let Some(l) = &i.layer {
        p.push(("ld", l.digest.to_string().into_bytes()));
        p.push(("ls", l.size.to_string().into_bytes()));
    }
    if let Some(cs) = &i.checksum {
        p.push(("cs", cs.clone().into_bytes()));
    }
    if let Some(r) = &i.push_repo {
        p.push(("prepo", r.to_string().into_bytes()));
    }
    p
}

fn change(outcome: &str, id: &str) -> MetaResult<Change> {
    match outcome {
        "ok" => Ok(Ok(())),
        "exists" => Ok(Err(Refusal::Exists(format!("v1 image {id}")))),
        "missing" => Ok(Err(Refusal::Missing(format!("v1 image {id}")))),
        "nolayer" => Ok(Err(Refusal::Invalid(format!(
            "v1 image {id} has no layer yet"
        )))),
        "mismatch" => Ok(Err(Refusal::Invalid(format!(
            "the checksum is not that of v1 image {id}"
        )))),
        other => Err(MetaError::Backend(format!(
            "unexpected script answer {other:?}"
        ))),
    }
}

fn repo_names(names: Vec<String>) -> MetaResult<Vec<RepoName>> {
    names
        .into_iter()
        .map(|n| {
            n.parse()
                .map_err(|e| MetaError::Corrupt(format!("repository {n:?}: {e}")))
        })
        .collect()
}

impl RedisMeta {
    async fn mark(&self, repo: &RepoName, kind: &str, ids: &[String]) -> MetaResult<()> {
        for batch in ids.chunks(SCAN_BATCH as usize) {
            let mut inv = self.script(&scripts().mark);
            inv.arg(repo.as_str()).arg(kind);
            for id in batch {
                inv.arg(id);
            }
            let _: i64 = self.run(&inv).await?;
        }
        Ok(())
    }

    async fn zrange(&self, key: &str, after: Option<&str>, limit: u32) -> MetaResult<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.query(
            redis::cmd("ZRANGEBYLEX")
                .arg(self.key(key))
                .arg(lex_after(after))
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(limit),
        )
        .await
    }
}

#[async_trait]
impl LegacyStore for RedisMeta {
    async fn put_v1_image(&self, image: &V1Image, replace_complete: bool) -> MetaResult<Change> {
        let mut inv = self.script(&scripts().put_image);
        inv.arg(&image.id)
            .arg(if replace_complete { "1" } else { "0" });
        for (f, v) in image_pairs(image) {
            inv.arg(f).arg(v);
        }
        let r: String = self.run(&inv).await?;
        change(&r, &image.id)
    }

    async fn add_v1_images(&self, images: &[V1Image]) -> MetaResult<()> {
        for image in images {
            let mut inv = self.script(&scripts().add_image);
            inv.arg(&image.id);
            for (f, v) in image_pairs(image) {
                inv.arg(f).arg(v);
            }
            let _: i64 = self.run(&inv).await?;
        }
        Ok(())
    }

    async fn v1_image(&self, id: &str) -> MetaResult<Option<V1Image>> {
        let f: Fields = self
            .query(redis::cmd("HGETALL").arg(self.key(&format!("v1:img:{id}"))))
            .await?;
        if f.is_empty() {
            return Ok(None);
        }
        image_from(id, f).map(Some)
    }

    async fn set_v1_layer(&self, id: &str, layer: &V1Layer, checksum: &str) -> MetaResult<Change> {
        let mut inv = self.script(&scripts().set_layer);
        inv.arg(id)
            .arg(layer.digest.as_str())
            .arg(layer.size)
            .arg(checksum);
        let r: String = self.run(&inv).await?;
        change(&r, id)
    }

    async fn complete_v1_image(&self, id: &str, checksum: &str) -> MetaResult<Change> {
        let mut inv = self.script(&scripts().complete);
        inv.arg(id).arg(checksum);
        let r: String = self.run(&inv).await?;
        change(&r, id)
    }

    async fn set_v1_checksum(&self, id: &str, checksum: &str) -> MetaResult<()> {
        let mut inv = self.script(&scripts().set_checksum);
        inv.arg(id).arg(checksum);
        let _: i64 = self.run(&inv).await?;
        Ok(())
    }

    async fn put_layer_info(&self, layer: &Digest, info: &LayerInfo) -> MetaResult<()> {
        let mut inv = self.script(&scripts().put_layer);
        inv.arg(layer.as_str())
            .arg(info.diff_id.as_str())
            .arg(&info.media_type);
        let _: i64 = self.run(&inv).await?;
        Ok(())
    }

    async fn layer_info(&self, layer: &Digest) -> MetaResult<Option<LayerInfo>> {
        let v: (Option<String>, Option<String>) = self
            .query(
                redis::cmd("HMGET")
                    .arg(self.key(&format!("v1:layer:{layer}")))
                    .arg("diff")
                    .arg("mt"),
            )
            .await?;
        match v {
            (Some(diff), Some(mt)) => Ok(Some(LayerInfo {
                diff_id: parse_digest(&diff)?,
                media_type: mt,
            })),
            _ => Ok(None),
        }
    }

    async fn put_v1_conversion(&self, c: &Conversion) -> MetaResult<()> {
        let mut inv = self.script(&scripts().put_conversion);
        inv.arg(c.manifest.as_str())
            .arg(&c.image)
            .arg(&c.media_type)
            .arg(c.body.as_ref());
        let _: i64 = self.run(&inv).await?;
        Ok(())
    }

    async fn v1_image_of_manifest(&self, manifest: &Digest) -> MetaResult<Option<String>> {
        self.query(
            redis::cmd("HGET")
                .arg(self.key(&format!("v1:m:{manifest}")))
                .arg("id"),
        )
        .await
    }

    async fn manifest_of_v1_image(&self, image: &str) -> MetaResult<Option<Conversion>> {
        let mut inv = self.script(&scripts().manifest_of);
        inv.arg(image);
        let r: Option<Vec<Vec<u8>>> = self.run(&inv).await?;
        let Some(mut r) = r else { return Ok(None) };
        if r.len() != 3 {
            return Err(MetaError::Corrupt(format!(
                "v1 image {image} names a manifest that has no conversion"
            )));
        }
        let body = Bytes::from(r.pop().unwrap_or_default());
        let mt = String::from_utf8(r.pop().unwrap_or_default())
            .map_err(|_| MetaError::Corrupt("conversion media type".into()))?;
        let d = String::from_utf8(r.pop().unwrap_or_default())
            .map_err(|_| MetaError::Corrupt("conversion digest".into()))?;
        Ok(Some(Conversion {
            manifest: parse_digest(&d)?,
            media_type: mt,
            body,
            image: image.to_string(),
        }))
    }

    async fn declare_v1_images(&self, repo: &RepoName, ids: &[String]) -> MetaResult<()> {
        self.mark(repo, "decl", ids).await
    }

    async fn reference_v1_images(&self, repo: &RepoName, ids: &[String]) -> MetaResult<()> {
        self.mark(repo, "refs", ids).await
    }

    async fn v1_references(&self, repo: &RepoName, id: &str) -> MetaResult<bool> {
        let score: Option<f64> = self
            .query(
                redis::cmd("ZSCORE")
                    .arg(self.key(&format!("v1:refs:{id}")))
                    .arg(repo.as_str()),
            )
            .await?;
        Ok(score.is_some())
    }

    async fn v1_repo_images(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<String>> {
        self.zrange(&format!("v1:ri:{repo}"), after, limit).await
    }

    async fn v1_image_repos(&self, id: &str, limit: u32) -> MetaResult<Vec<RepoName>> {
        repo_names(self.zrange(&format!("v1:refs:{id}"), None, limit).await?)
    }

    async fn v1_declaring_repos(&self, id: &str, limit: u32) -> MetaResult<Vec<RepoName>> {
        repo_names(self.zrange(&format!("v1:decl:{id}"), None, limit).await?)
    }

    async fn forget_v1_repo(&self, repo: &RepoName) -> MetaResult<()> {
        loop {
            let mut inv = self.script(&scripts().forget_repo);
            inv.arg(repo.as_str()).arg(SCAN_BATCH);
            let left: i64 = self.run(&inv).await?;
            if left == 0 {
                return Ok(());
            }
        }
    }

    async fn search_repos(
        &self,
        query: &str,
        after: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<RepoMatch>> {
        let mut out = Vec::new();
        let mut start = lex_after(after);
        while out.len() < limit as usize {
            let mut inv = self.script(&scripts().search);
            inv.arg(query)
                .arg(&start)
                .arg(SCAN_BATCH)
                .arg(limit as usize - out.len());
            let (found, last, exhausted): (Vec<String>, Option<String>, i64) =
                self.run(&inv).await?;
            for t in found.chunks_exact(3) {
                out.push(RepoMatch {
                    name: t[0]
                        .parse()
                        .map_err(|e| MetaError::Corrupt(format!("repository {:?}: {e}", t[0])))?,
                    comment: (t[1] == "1").then(|| t[2].clone()),
                });
            }
            match last {
                Some(last) if exhausted == 0 => start = format!("({last}"),
                _ => break,
            }
        }
        Ok(out)
    }
}
