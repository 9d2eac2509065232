//! The Lua scripts behind every multi-key change (and the reads that must
//! see one consistent state). A script runs atomically in Redis, so each
//! one is the transaction of the SQL implementation it mirrors.
//!
//! Every script gets the key prefix as `ARGV[1]` and builds its keys from
//! it (see the key layout in `mod.rs`); the shared helpers are in
//! [`PRELUDE`], which is prepended to each body.

use redis::Script;

/// Helpers shared by every script. `esc` must match `super::esc`.
const PRELUDE: &str = r#"
local P = ARGV[1] .. ':'
local function esc(s)
  return (string.gsub(s, '[%%:]', {['%'] = '%25', [':'] = '%3A'}))
end
local function rk(id, what)
  return P .. 'r:' .. id .. ':' .. what
end
local function repo_id(name)
  return redis.call('HGET', P .. 'repo:' .. name, 'id')
end
local function new_repo(name, ns, pub, at)
  local id = tostring(redis.call('INCR', P .. 'seq:repo'))
  redis.call('HSET', P .. 'repo:' .. name, 'name', name, 'id', id, 'ns', ns,
    'pub', pub, 'at', at)
  redis.call('ZADD', P .. 'repos', 0, name)
  redis.call('ZADD', P .. 'ns:' .. ns, 0, name)
  return id
end
local function ensure_repo(name, ns, at)
  return repo_id(name) or new_repo(name, ns, '0', at)
end
-- Removes a manifest's record, its referrer entries, its references (and
-- their counts) and the tags pointing at it. The caller removed it from
-- the repository's manifest set.
local function drop_manifest(id, d)
  local mkey = rk(id, 'm:' .. d)
  local f = redis.call('HMGET', mkey, 'subject', 'atype')
  if f[1] then
    redis.call('ZREM', rk(id, 'ref:' .. f[1]), d)
    if f[2] then
      redis.call('ZREM', rk(id, 'reft:' .. esc(f[1]) .. ':' .. f[2]), d)
    end
  end
  local refs = rk(id, 'mref:' .. d)
  for _, t in ipairs(redis.call('SMEMBERS', refs)) do
    if redis.call('HINCRBY', P .. 'refs', t, -1) <= 0 then
      redis.call('HDEL', P .. 'refs', t)
    end
  end
  local mtags = rk(id, 'mtags:' .. d)
  for _, tag in ipairs(redis.call('SMEMBERS', mtags)) do
    redis.call('HDEL', rk(id, 'tag'), tag)
    redis.call('ZREM', rk(id, 'tags'), tag)
  end
  redis.call('DEL', mkey, refs, mtags)
end
local function hset_pairs(key, first)
  if #ARGV >= first then
    redis.call('HSET', key, unpack(ARGV, first))
  end
end
"#;

macro_rules! scripts {
    ($($name:ident = $body:expr;)*) => {
        pub struct Scripts {
            $(pub $name: Script,)*
        }

        impl Scripts {
            pub fn new() -> Scripts {
                Scripts {
                    $($name: Script::new(&format!("{PRELUDE}\n{}", $body)),)*
                }
            }
        }
    };
}

scripts! {
    // ---- content -------------------------------------------------------

    // now, repo, namespace, digest, size
    link_blob = r#"
local now, d = ARGV[2], ARGV[5]
local id = ensure_repo(ARGV[3], ARGV[4], now)
local bk = P .. 'blob:' .. d
if redis.call('EXISTS', bk) == 0 then
  redis.call('HSET', bk, 'size', ARGV[6], 'at', now)
  redis.call('ZADD', P .. 'blobs', 0, d)
end
-- A fresh link restarts the garbage collector's grace period.
redis.call('HSET', rk(id, 'blobs'), d, now)
redis.call('HSET', P .. 'blob_links:' .. d, id, now)
return 1
"#;

    // repo, digest -> 1 if it was linked
    unlink_blob = r#"
local id, d = repo_id(ARGV[2]), ARGV[3]
if not id or redis.call('HDEL', rk(id, 'blobs'), d) == 0 then return 0 end
redis.call('HDEL', P .. 'blob_links:' .. d, id)
return 1
"#;

    // repo, digest -> size or nil
    repo_blob = r#"
local id, d = repo_id(ARGV[2]), ARGV[3]
if not id or redis.call('HEXISTS', rk(id, 'blobs'), d) == 0 then return false end
return redis.call('HGET', P .. 'blob:' .. d, 'size')
"#;

    // now, repo, namespace, digest, media type, body, subject ('' = none),
    // has artifact type, artifact type, has annotations, annotations,
    // tag ('' = none), n, n blob refs, m, m manifest refs
    // -> {missing blobs, missing manifests}; nothing changes unless both
    // are empty.
    put_manifest = r#"
local now, repo, ns, d = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local subject, tag = ARGV[8], ARGV[13]
local nb = tonumber(ARGV[14])
local nm = tonumber(ARGV[15 + nb])
local id = repo_id(repo)
local mb, mm = {}, {}
for i = 15, 14 + nb do
  if not id or redis.call('HEXISTS', rk(id, 'blobs'), ARGV[i]) == 0 then
    mb[#mb + 1] = ARGV[i]
  end
end
for i = 16 + nb, 15 + nb + nm do
  if not id or redis.call('SISMEMBER', rk(id, 'manifests'), ARGV[i]) == 0 then
    mm[#mm + 1] = ARGV[i]
  end
end
if #mb > 0 or #mm > 0 then return {mb, mm} end
id = ensure_repo(repo, ns, now)
if redis.call('SADD', rk(id, 'manifests'), d) == 1 then
  local f = {'mt', ARGV[6], 'body', ARGV[7], 'size', string.len(ARGV[7]),
    'at', now}
  if subject ~= '' then
    f[#f + 1] = 'subject'; f[#f + 1] = subject
    redis.call('ZADD', rk(id, 'ref:' .. subject), 0, d)
  end
  if ARGV[9] == '1' then
    f[#f + 1] = 'atype'; f[#f + 1] = ARGV[10]
    if subject ~= '' then
      redis.call('ZADD', rk(id, 'reft:' .. esc(subject) .. ':' .. ARGV[10]), 0, d)
    end
  end
  if ARGV[11] == '1' then
    f[#f + 1] = 'ann'; f[#f + 1] = ARGV[12]
  end
  redis.call('HSET', rk(id, 'm:' .. d), unpack(f))
end
local refs = rk(id, 'mref:' .. d)
for i = 15, 15 + nb + nm do
  if i ~= 15 + nb and redis.call('SADD', refs, ARGV[i]) == 1 then
    redis.call('HINCRBY', P .. 'refs', ARGV[i], 1)
  end
end
if tag ~= '' then
  local old = redis.call('HGET', rk(id, 'tag'), tag)
  if old ~= d then
    if old then redis.call('SREM', rk(id, 'mtags:' .. old), tag) end
    redis.call('HSET', rk(id, 'tag'), tag, d)
    redis.call('ZADD', rk(id, 'tags'), 0, tag)
    redis.call('SADD', rk(id, 'mtags:' .. d), tag)
  end
end
return {mb, mm}
"#;

    // repo, digest -> {media type, body} or nil
    manifest_by_digest = r#"
local id = repo_id(ARGV[2])
if not id then return false end
local m = redis.call('HMGET', rk(id, 'm:' .. ARGV[3]), 'mt', 'body')
if not m[1] then return false end
return m
"#;

    // repo, tag -> {digest, media type, body} or nil
    manifest_by_tag = r#"
local id = repo_id(ARGV[2])
if not id then return false end
local d = redis.call('HGET', rk(id, 'tag'), ARGV[3])
if not d then return false end
local m = redis.call('HMGET', rk(id, 'm:' .. d), 'mt', 'body')
if not m[1] then return false end
return {d, m[1], m[2]}
"#;

    // repo, digest -> 1 if it existed
    delete_manifest = r#"
local id, d = repo_id(ARGV[2]), ARGV[3]
if not id or redis.call('SREM', rk(id, 'manifests'), d) == 0 then return 0 end
drop_manifest(id, d)
return 1
"#;

    // repo, tag -> 1 if it existed
    delete_tag = r#"
local id, tag = repo_id(ARGV[2]), ARGV[3]
if not id then return 0 end
local d = redis.call('HGET', rk(id, 'tag'), tag)
if not d then return 0 end
redis.call('HDEL', rk(id, 'tag'), tag)
redis.call('ZREM', rk(id, 'tags'), tag)
redis.call('SREM', rk(id, 'mtags:' .. d), tag)
return 1
"#;

    // repo, range start ('-' or '(' .. last), limit -> tags
    list_tags = r#"
local id = repo_id(ARGV[2])
if not id then return {} end
return redis.call('ZRANGEBYLEX', rk(id, 'tags'), ARGV[3], '+', 'LIMIT', 0, ARGV[4])
"#;

    // repo, subject, has artifact type, artifact type, range start, limit
    // -> {{digest, media type, size, artifact type, annotations}...}
    referrers = r#"
local id, subject = repo_id(ARGV[2]), ARGV[3]
if not id then return {} end
local key = rk(id, 'ref:' .. subject)
if ARGV[4] == '1' then key = rk(id, 'reft:' .. esc(subject) .. ':' .. ARGV[5]) end
local out = {}
for _, d in ipairs(redis.call('ZRANGEBYLEX', key, ARGV[6], '+', 'LIMIT', 0, ARGV[7])) do
  local m = redis.call('HMGET', rk(id, 'm:' .. d), 'mt', 'size', 'atype', 'ann')
  if m[1] then out[#out + 1] = {d, m[1], m[2], m[3], m[4]} end
end
return out
"#;

    // before, range start, want, batch
    // -> {{digest, size, ...}, last digest examined or nil, exhausted}
    gc_scan = r#"
local before, want, batch = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ds = redis.call('ZRANGEBYLEX', P .. 'blobs', ARGV[3], '+', 'LIMIT', 0, batch)
local out, last, found = {}, false, 0
for _, d in ipairs(ds) do
  last = d
  local b = redis.call('HMGET', P .. 'blob:' .. d, 'size', 'at')
  if b[2] and tonumber(b[2]) <= before and not redis.call('HGET', P .. 'refs', d) then
    local recent = false
    for _, t in ipairs(redis.call('HVALS', P .. 'blob_links:' .. d)) do
      if tonumber(t) > before then recent = true; break end
    end
    if not recent then
      out[#out + 1] = d; out[#out + 1] = b[1]
      found = found + 1
      if found >= want then break end
    end
  end
end
local exhausted = 0
if #ds < batch and (#ds == 0 or last == ds[#ds]) then exhausted = 1 end
return {out, last, exhausted}
"#;

    // digest -> 1 if forgotten, 0 if a manifest references it
    forget_blob = r#"
local d = ARGV[2]
if redis.call('HGET', P .. 'refs', d) then return 0 end
local links = P .. 'blob_links:' .. d
for _, id in ipairs(redis.call('HKEYS', links)) do
  redis.call('HDEL', rk(id, 'blobs'), d)
end
redis.call('DEL', links, P .. 'blob:' .. d)
redis.call('ZREM', P .. 'blobs', d)
return 1
"#;

    // repository id, batch -> 1 once everything of the deleted repository
    // is gone
    drain = r#"
local id, n = ARGV[2], tonumber(ARGV[3])
redis.call('UNLINK', rk(id, 'tags'), rk(id, 'tag'))
for _, d in ipairs(redis.call('SPOP', rk(id, 'manifests'), n)) do
  drop_manifest(id, d)
end
local blobs = rk(id, 'blobs')
for _, d in ipairs(redis.call('HRANDFIELD', blobs, n)) do
  redis.call('HDEL', P .. 'blob_links:' .. d, id)
  redis.call('HDEL', blobs, d)
end
if redis.call('EXISTS', rk(id, 'manifests'), blobs) == 0 then
  redis.call('SREM', P .. 'trash', id)
  return 1
end
return 0
"#;

    // ---- accounts ------------------------------------------------------

    // name, is admin, field/value pairs -> ok | exists
    create_user = r#"
local name = ARGV[2]
if redis.call('EXISTS', P .. 'org:' .. name, P .. 'user:' .. name) > 0 then
  return 'exists'
end
hset_pairs(P .. 'user:' .. name, 4)
redis.call('ZADD', P .. 'users', 0, name)
if ARGV[3] == '1' then redis.call('SADD', P .. 'admins', name) end
return 'ok'
"#;

    // name, role ('' = unchanged, '1' admin), field/value pairs -> ok | missing
    update_user = r#"
local name = ARGV[2]
local key = P .. 'user:' .. name
if redis.call('EXISTS', key) == 0 then return 'missing' end
hset_pairs(key, 4)
if ARGV[3] == '1' then
  redis.call('SADD', P .. 'admins', name)
elseif ARGV[3] ~= '' then
  redis.call('SREM', P .. 'admins', name)
end
return 'ok'
"#;

    // name -> ok | missing
    delete_user = r#"
local name = ARGV[2]
if redis.call('DEL', P .. 'user:' .. name) == 0 then return 'missing' end
redis.call('ZREM', P .. 'users', name)
redis.call('SREM', P .. 'admins', name)
local uo = P .. 'user_orgs:' .. name
for _, org in ipairs(redis.call('HKEYS', uo)) do
  redis.call('HDEL', P .. 'org_members:' .. org, name)
  local ut = P .. 'user_teams:' .. esc(org) .. ':' .. name
  for _, team in ipairs(redis.call('HKEYS', ut)) do
    redis.call('HDEL', P .. 'team_members:' .. esc(org) .. ':' .. team, name)
  end
  redis.call('DEL', ut)
end
redis.call('DEL', uo)
local ut = P .. 'user_tokens:' .. name
for _, id in ipairs(redis.call('HKEYS', ut)) do
  redis.call('DEL', P .. 'token:' .. id)
end
redis.call('DEL', ut)
return 'ok'
"#;

    // sorted set word ('users', 'orgs'), record word ('user:', 'org:'),
    // range start, limit -> records (HGETALL arrays)
    page = r#"
local out = {}
for _, name in ipairs(redis.call('ZRANGEBYLEX', P .. ARGV[2], ARGV[4], '+', 'LIMIT', 0, ARGV[5])) do
  local r = redis.call('HGETALL', P .. ARGV[3] .. name)
  if #r > 0 then out[#out + 1] = r end
end
return out
"#;

    // name, creator, field/value pairs -> ok | exists | no_user
    create_org = r#"
local name, creator = ARGV[2], ARGV[3]
if redis.call('EXISTS', P .. 'org:' .. name, P .. 'user:' .. name) > 0 then
  return 'exists'
end
if redis.call('EXISTS', P .. 'user:' .. creator) == 0 then return 'no_user' end
hset_pairs(P .. 'org:' .. name, 4)
redis.call('ZADD', P .. 'orgs', 0, name)
redis.call('HSET', P .. 'org_members:' .. name, creator, '3')
redis.call('HSET', P .. 'user_orgs:' .. creator, name, '3')
return 'ok'
"#;

    // name, field/value pairs -> ok | missing
    update_org = r#"
local key = P .. 'org:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return 'missing' end
hset_pairs(key, 3)
return 'ok'
"#;

    // name -> ok | missing
    delete_org = r#"
local org = ARGV[2]
if redis.call('DEL', P .. 'org:' .. org) == 0 then return 'missing' end
redis.call('ZREM', P .. 'orgs', org)
local om = P .. 'org_members:' .. org
for _, user in ipairs(redis.call('HKEYS', om)) do
  redis.call('HDEL', P .. 'user_orgs:' .. user, org)
  redis.call('DEL', P .. 'user_teams:' .. esc(org) .. ':' .. user)
end
redis.call('DEL', om)
local teams = P .. 'teams:' .. org
for _, team in ipairs(redis.call('HKEYS', teams)) do
  local tm = P .. 'team_members:' .. esc(org) .. ':' .. team
  for _, user in ipairs(redis.call('HKEYS', tm)) do
    redis.call('DEL', P .. 'user_teams:' .. esc(org) .. ':' .. user)
  end
  local tr = P .. 'team_repos:' .. esc(org) .. ':' .. team
  for _, repo in ipairs(redis.call('HKEYS', tr)) do
    redis.call('HDEL', P .. 'repo_permits:' .. repo, esc(org) .. ':' .. team)
  end
  redis.call('DEL', tm, tr)
end
redis.call('DEL', teams)
return 'ok'
"#;

    // org, user, role -> ok | no_org | no_user
    set_org_member = r#"
local org, user = ARGV[2], ARGV[3]
if redis.call('EXISTS', P .. 'org:' .. org) == 0 then return 'no_org' end
if redis.call('EXISTS', P .. 'user:' .. user) == 0 then return 'no_user' end
redis.call('HSET', P .. 'org_members:' .. org, user, ARGV[4])
redis.call('HSET', P .. 'user_orgs:' .. user, org, ARGV[4])
return 'ok'
"#;

    // org, user -> ok | missing
    remove_org_member = r#"
local org, user = ARGV[2], ARGV[3]
if redis.call('HDEL', P .. 'org_members:' .. org, user) == 0 then return 'missing' end
redis.call('HDEL', P .. 'user_orgs:' .. user, org)
local ut = P .. 'user_teams:' .. esc(org) .. ':' .. user
for _, team in ipairs(redis.call('HKEYS', ut)) do
  redis.call('HDEL', P .. 'team_members:' .. esc(org) .. ':' .. team, user)
end
redis.call('DEL', ut)
return 'ok'
"#;

    // org, team, encoded comment, has creator, creator
    // -> ok | no_org | exists | not_member
    create_team = r#"
local org, team, creator = ARGV[2], ARGV[3], ARGV[6]
if redis.call('EXISTS', P .. 'org:' .. org) == 0 then return 'no_org' end
if redis.call('HEXISTS', P .. 'teams:' .. org, team) == 1 then return 'exists' end
if ARGV[5] == '1' and redis.call('HEXISTS', P .. 'org_members:' .. org, creator) == 0 then
  return 'not_member'
end
redis.call('HSET', P .. 'teams:' .. org, team, ARGV[4])
if ARGV[5] == '1' then
  redis.call('HSET', P .. 'team_members:' .. esc(org) .. ':' .. team, creator, '5')
  redis.call('HSET', P .. 'user_teams:' .. esc(org) .. ':' .. creator, team, '5')
end
return 'ok'
"#;

    // org, team -> ok | missing
    delete_team = r#"
local org, team = ARGV[2], ARGV[3]
if redis.call('HDEL', P .. 'teams:' .. org, team) == 0 then return 'missing' end
local tm = P .. 'team_members:' .. esc(org) .. ':' .. team
for _, user in ipairs(redis.call('HKEYS', tm)) do
  redis.call('HDEL', P .. 'user_teams:' .. esc(org) .. ':' .. user, team)
end
local tr = P .. 'team_repos:' .. esc(org) .. ':' .. team
for _, repo in ipairs(redis.call('HKEYS', tr)) do
  redis.call('HDEL', P .. 'repo_permits:' .. repo, esc(org) .. ':' .. team)
end
redis.call('DEL', tm, tr)
return 'ok'
"#;

    // org, team, user, role -> ok | no_team | no_user | not_member
    set_team_member = r#"
local org, team, user = ARGV[2], ARGV[3], ARGV[4]
if redis.call('HEXISTS', P .. 'teams:' .. org, team) == 0 then return 'no_team' end
if redis.call('EXISTS', P .. 'user:' .. user) == 0 then return 'no_user' end
if redis.call('HEXISTS', P .. 'org_members:' .. org, user) == 0 then
  return 'not_member'
end
redis.call('HSET', P .. 'team_members:' .. esc(org) .. ':' .. team, user, ARGV[5])
redis.call('HSET', P .. 'user_teams:' .. esc(org) .. ':' .. user, team, ARGV[5])
return 'ok'
"#;

    // org, team, user -> ok | missing
    remove_team_member = r#"
local org, team, user = ARGV[2], ARGV[3], ARGV[4]
if redis.call('HDEL', P .. 'team_members:' .. esc(org) .. ':' .. team, user) == 0 then
  return 'missing'
end
redis.call('HDEL', P .. 'user_teams:' .. esc(org) .. ':' .. user, team)
return 'ok'
"#;

    // org, team, repo, permit -> ok | no_team | no_repo | other_org
    set_team_repo = r#"
local org, team, repo = ARGV[2], ARGV[3], ARGV[4]
if redis.call('HEXISTS', P .. 'teams:' .. org, team) == 0 then return 'no_team' end
local ns = redis.call('HGET', P .. 'repo:' .. repo, 'ns')
if not ns then return 'no_repo' end
if ns ~= org then return 'other_org' end
redis.call('HSET', P .. 'team_repos:' .. esc(org) .. ':' .. team, repo, ARGV[5])
redis.call('HSET', P .. 'repo_permits:' .. repo, esc(org) .. ':' .. team, ARGV[5])
return 'ok'
"#;

    // org, team, repo -> ok | missing
    remove_team_repo = r#"
local org, team, repo = ARGV[2], ARGV[3], ARGV[4]
if redis.call('HDEL', P .. 'team_repos:' .. esc(org) .. ':' .. team, repo) == 0 then
  return 'missing'
end
redis.call('HDEL', P .. 'repo_permits:' .. repo, esc(org) .. ':' .. team)
return 'ok'
"#;

    // user, repo -> permits of the user's teams on the repository
    team_permits = r#"
local user = ARGV[2]
local out = {}
local p = redis.call('HGETALL', P .. 'repo_permits:' .. ARGV[3])
for i = 1, #p, 2 do
  -- The field is '<escaped org>:<team>', the suffix of the team's keys.
  if redis.call('HEXISTS', P .. 'team_members:' .. p[i], user) == 1 then
    out[#out + 1] = p[i + 1]
  end
end
return out
"#;

    // name, namespace, public, has comment, comment, created at -> ok | exists
    create_repo = r#"
local name = ARGV[2]
if redis.call('EXISTS', P .. 'repo:' .. name) == 1 then return 'exists' end
new_repo(name, ARGV[3], ARGV[4], ARGV[7])
if ARGV[5] == '1' then redis.call('HSET', P .. 'repo:' .. name, 'comment', ARGV[6]) end
return 'ok'
"#;

    // name, public ('' = unchanged), has comment, comment -> ok | missing
    update_repo = r#"
local key = P .. 'repo:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return 'missing' end
if ARGV[3] ~= '' then redis.call('HSET', key, 'pub', ARGV[3]) end
if ARGV[4] == '1' then redis.call('HSET', key, 'comment', ARGV[5]) end
return 'ok'
"#;

    // name -> id of the removed repository (its content is then drained
    // by `drain`), or nil if there is none
    delete_repo = r#"
local name = ARGV[2]
local key = P .. 'repo:' .. name
local r = redis.call('HMGET', key, 'id', 'ns')
if not r[1] then return false end
redis.call('DEL', key)
redis.call('ZREM', P .. 'repos', name)
redis.call('ZREM', P .. 'ns:' .. r[2], name)
local rp = P .. 'repo_permits:' .. name
for _, t in ipairs(redis.call('HKEYS', rp)) do
  redis.call('HDEL', P .. 'team_repos:' .. t, name)
end
redis.call('DEL', rp)
redis.call('SADD', P .. 'trash', r[1])
return r[1]
"#;

    // namespace -> repository records (HGETALL arrays), by name
    repos_in = r#"
local out = {}
for _, name in ipairs(redis.call('ZRANGEBYLEX', P .. 'ns:' .. ARGV[2], '-', '+')) do
  local r = redis.call('HGETALL', P .. 'repo:' .. name)
  if #r > 0 then out[#out + 1] = r end
end
return out
"#;

    // id, user, field/value pairs -> ok | no_user | exists
    create_token = r#"
local id, user = ARGV[2], ARGV[3]
if redis.call('EXISTS', P .. 'user:' .. user) == 0 then return 'no_user' end
local key = P .. 'token:' .. id
if redis.call('EXISTS', key) == 1 then return 'exists' end
hset_pairs(key, 4)
redis.call('HSET', P .. 'user_tokens:' .. user, id, redis.call('INCR', P .. 'seq:token'))
return 'ok'
"#;

    // user -> {{creation sequence number, HGETALL array}...}
    tokens = r#"
local out = {}
local t = redis.call('HGETALL', P .. 'user_tokens:' .. ARGV[2])
for i = 1, #t, 2 do
  local r = redis.call('HGETALL', P .. 'token:' .. t[i])
  if #r > 0 then out[#out + 1] = {t[i + 1], r} end
end
return out
"#;

    // user, id -> ok | missing
    delete_token = r#"
local user, id = ARGV[2], ARGV[3]
local key = P .. 'token:' .. id
if redis.call('HGET', key, 'user') ~= user then return 'missing' end
redis.call('DEL', key)
redis.call('HDEL', P .. 'user_tokens:' .. user, id)
return 'ok'
"#;

    // ---- audit ---------------------------------------------------------

    // per event: at, actor, action, has repo, repo, JSON record
    append_audit = r#"
for i = 2, #ARGV, 6 do
  local id = redis.call('INCR', P .. 'audit:seq')
  redis.call('HSET', P .. 'audit:ev', id, ARGV[i + 5])
  redis.call('ZADD', P .. 'audit:ids', id, id)
  redis.call('ZADD', P .. 'audit:at', ARGV[i], id)
  redis.call('ZADD', P .. 'audit:actor:' .. ARGV[i + 1], id, id)
  redis.call('ZADD', P .. 'audit:action:' .. ARGV[i + 2], id, id)
  if ARGV[i + 3] == '1' then
    redis.call('ZADD', P .. 'audit:repo:' .. ARGV[i + 4], id, id)
  end
end
return 1
"#;

    // before, batch -> number of events deleted (at most batch)
    prune_audit = r#"
local ids = redis.call('ZRANGEBYSCORE', P .. 'audit:at', '-inf', '(' .. ARGV[2],
  'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local j = redis.call('HGET', P .. 'audit:ev', id)
  if j then
    local e = cjson.decode(j)
    redis.call('ZREM', P .. 'audit:actor:' .. e.actor, id)
    redis.call('ZREM', P .. 'audit:action:' .. e.action, id)
    if type(e.repo) == 'string' then
      redis.call('ZREM', P .. 'audit:repo:' .. e.repo, id)
    end
    redis.call('HDEL', P .. 'audit:ev', id)
  end
  redis.call('ZREM', P .. 'audit:ids', id)
  redis.call('ZREM', P .. 'audit:at', id)
end
return #ids
"#;
}
