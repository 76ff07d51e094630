//! The Lua scripts behind every operation that must read and write atomically.
//!
//! Each script touches keys of one hash slot only (a value; or a counter with its
//! idempotency record, which share a hash tag), so it runs unchanged on Redis Cluster.
//! Values use the layout of [`crate::value`]: `L1`, content-type length, content type,
//! 8-byte ETag, bytes. A stampede lease is a placeholder value `\0LL<token>` held in the
//! key itself, so filling, deleting and voiding are all single-key operations.

use std::sync::LazyLock;

use redis::Script;

/// Reads the stored ETag of a value (nil for a lease placeholder or a foreign value).
const ETAG_OF: &str = r#"
local function etag_of(v)
  if v and string.sub(v, 1, 2) == 'L1' and #v >= 11 then
    local n = string.byte(v, 3)
    return string.sub(v, 4 + n, 11 + n)
  end
  return nil
end
local function is_lease(v)
  return v and string.sub(v, 1, 3) == '\0LL'
end
local function set_value(key, raw, ttl)
  if ttl ~= '' then
    redis.call('SET', key, raw, 'EX', ttl)
  else
    redis.call('SET', key, raw)
  end
end
"#;

fn with_helpers(body: &str) -> Script {
    Script::new(&format!("{ETAG_OF}\n{body}"))
}

/// `PUT` with `If-Match`. KEYS[1] value; ARGV: expected ETag (8 bytes), new value, TTL
/// seconds or ''. Returns 1 when written, 0 when the current ETag differs or the key is
/// absent.
pub static PUT_IF_MATCH: LazyLock<Script> = LazyLock::new(|| {
    with_helpers(
        r#"
local cur = redis.call('GET', KEYS[1])
if etag_of(cur) ~= ARGV[1] then return 0 end
set_value(KEYS[1], ARGV[2], ARGV[3])
return 1
"#,
    )
});

/// `PUT` with `If-None-Match: *`: creates only. A lease placeholder counts as absent.
/// KEYS[1] value; ARGV: new value, TTL or ''. Returns 1 when created, 0 when it exists.
pub static PUT_IF_ABSENT: LazyLock<Script> = LazyLock::new(|| {
    with_helpers(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur and not is_lease(cur) then return 0 end
set_value(KEYS[1], ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// `DELETE` with `If-Match`. KEYS[1] value; ARGV[1] expected ETag. Returns 1 when
/// deleted, 0 when the ETag differs or the key is absent.
pub static DELETE_IF_MATCH: LazyLock<Script> = LazyLock::new(|| {
    with_helpers(
        r#"
local cur = redis.call('GET', KEYS[1])
if etag_of(cur) ~= ARGV[1] then return 0 end
redis.call('UNLINK', KEYS[1])
return 1
"#,
    )
});

/// `GET ?lease=`: a hit returns `{1, value}`; a miss grants a lease (`{2}`) by storing
/// the placeholder with a TTL; a miss while another caller holds the lease returns `{3}`.
/// KEYS[1] value; ARGV: placeholder (`\0LL` + token), lease milliseconds.
pub static GET_OR_LEASE: LazyLock<Script> = LazyLock::new(|| {
    with_helpers(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur and not is_lease(cur) then return {1, cur} end
if cur then return {3} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {2}
"#,
    )
});

/// `PUT` with `Lease-Token`: fills the key only while the caller's lease placeholder is
/// still there (no write or delete happened since it was granted). KEYS[1] value; ARGV:
/// placeholder, new value, TTL or ''. Returns 1 when filled, 0 when the lease is void.
pub static FILL_LEASE: LazyLock<Script> = LazyLock::new(|| {
    with_helpers(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return 0 end
set_value(KEYS[1], ARGV[2], ARGV[3])
return 1
"#,
    )
});

/// A bounded counter step with an optional idempotency record.
///
/// KEYS[1] counter; KEYS[2] idempotency record (or the counter again when there is
/// none). ARGV: delta, floor or '', ceiling or '', TTL seconds or '', request fingerprint
/// ('' without idempotency), record TTL seconds.
///
/// Returns `{status, value, replayed}`: status 200 applied, 409 refused because the
/// result would pass the floor or ceiling (value is then the current value), 422 the
/// idempotency key was used for a different request. A replay returns the original
/// status and value with `replayed = 1`. Values stay within ±2^53, where Lua's numbers
/// are exact: the gateway checks delta, floor and ceiling, and a step whose result would
/// leave that range is refused like one passing a bound (409), instead of storing a
/// rounded or wrapped value.
pub static COUNTER_STEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local idem = ARGV[5] ~= ''
if idem then
  local rec = redis.call('GET', KEYS[2])
  if rec then
    local fp, status, value = string.match(rec, '^(.-)|(%d+)|(-?%d+)$')
    if fp ~= ARGV[5] then return {422, 0, 1} end
    return {tonumber(status), tonumber(value), 1}
  end
end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local delta = tonumber(ARGV[1])
local nxt = cur + delta
local status, value = 200, nxt
if ARGV[2] ~= '' and nxt < tonumber(ARGV[2]) then
  status, value = 409, cur
elseif ARGV[3] ~= '' and nxt > tonumber(ARGV[3]) then
  status, value = 409, cur
elseif (delta > 0 and cur > 9007199254740992 - delta) or (delta < 0 and cur < -9007199254740992 - delta) then
  -- Compared without forming cur + delta, which rounds past 2^53.
  status, value = 409, cur
else
  if ARGV[4] ~= '' then
    redis.call('SET', KEYS[1], string.format('%d', nxt), 'EX', ARGV[4])
  else
    redis.call('SET', KEYS[1], string.format('%d', nxt), 'KEEPTTL')
  end
end
if idem then
  redis.call('SET', KEYS[2], ARGV[5] .. '|' .. status .. '|' .. string.format('%d', value), 'EX', ARGV[6])
end
return {status, value, 0}
"#,
    )
});
