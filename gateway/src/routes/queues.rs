//! `/v1/namespaces/{ns}/queues/{q}/…`: queues with consumer groups on Redis Streams.
//!
//! | route | does |
//! | --- | --- |
//! | `POST …/queues/{q}/messages` | enqueue the body as is (its `Content-Type` kept); `Idempotency-Key` makes retries safe |
//! | `POST …/queues/{q}/claims` | claim a batch for a consumer of a group, optionally waiting for messages |
//! | `POST …/queues/{q}/acks` | acknowledge claimed messages |
//! | `GET …/queues/{q}` | statistics: length, dead-lettered, per group pending and lag |
//! | `GET …/queues/{q}/dead-letters` | read the dead-letter queue, oldest first, with a cursor |
//!
//! Every route needs a token with the `queue` permission on the namespace.
//!
//! # Storage
//!
//! A queue is one Redis stream ([`keyspace::queue_key`]); each entry holds the body
//! (`b`) and the content type (`ct`). Its dead letters are a second stream
//! ([`keyspace::dead_letter_key`]) and its idempotency records plain strings
//! ([`keyspace::idempotency_key`], kind `queue`). All three carry the queue's hash tag,
//! so they share a Redis Cluster slot and each operation below is one Lua script that
//! runs atomically on one node. A queue exists once something was enqueued or claimed.
//!
//! # Delivery
//!
//! Delivery is at least once. A consumer group (created on its first claim, reading
//! the queue from its start) hands each message to one of its consumers; several groups
//! each get every message. A claim, in one script:
//!
//! 1. creates the group if needed (`XGROUP CREATE … 0 MKSTREAM`);
//! 2. takes over messages of the group delivered more than `visibility_ms` ago and not
//!    acknowledged (`XAUTOCLAIM`): their consumer is presumed dead. A message whose
//!    delivery count (`XPENDING`) would then exceed `max_deliveries` is not delivered
//!    again but moved to the dead-letter stream (with its id, group, body, content type
//!    and the number of deliveries it had) and acknowledged;
//! 3. reads new messages for the rest of the batch (`XREADGROUP … >`).
//!
//! Redelivery therefore happens when the group next claims, not on a timer: there is no
//! background work in the stateless gateways. The visibility timeout is the claimer's:
//! consumers of one group should all use the same `visibility_ms`.
//!
//! With `wait_ms` and nothing to deliver, the claim waits with `XREADGROUP … BLOCK` on
//! an exclusive pooled connection (see [`crate::streams`]), never on the shared one. It
//! waits in slices of at most [`WAIT_SLICE`] and repeats step 2 between slices, so a
//! waiting consumer also picks up messages whose visibility ran out meanwhile. The
//! whole claim is bounded by `wait_ms` plus the request deadline.
//!
//! An acknowledged message is deleted from the stream once no group still needs it
//! (every group has read past it and none holds it pending), so `length` counts the
//! messages some group has yet to finish and a queue does not grow without bound while
//! its groups keep up. Without any group, messages stay until a group reads them.
//! The dead-letter stream keeps about the last [`DEAD_LETTER_CAP`] entries.
//!
//! # Idempotent enqueue
//!
//! With `Idempotency-Key`, the script looks up the key's record first: a retry of the
//! same request (same content type and body, compared by SHA-256 fingerprint) gets the
//! original message id back (`201`, `Idempotent-Replayed: true`) and nothing is
//! enqueued; the same key with a different request is refused with 422
//! `idempotency-key-reused`. Lookup, append and record are one script, so concurrent
//! retries enqueue exactly once. Records are kept [`IDEMPOTENCY_TTL_S`] seconds.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use larder_registry::auth::Permission;
use larder_registry::keyspace;
use larder_registry::model::Cluster;
use redis::{Script, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Json, Query};
use crate::state::{Access, AppState};
use crate::streams::Timeouts;
use crate::value;

/// Longest queue, group or consumer name, bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// Most messages one claim returns.
pub const MAX_CLAIM_COUNT: u32 = 100;
/// Longest wait of one claim, milliseconds.
pub const MAX_WAIT_MS: u64 = 30_000;
/// Visibility timeout when a claim names none, milliseconds.
pub const DEFAULT_VISIBILITY_MS: u64 = 30_000;
/// Longest visibility timeout, milliseconds (12 hours).
pub const MAX_VISIBILITY_MS: u64 = 12 * 3600 * 1000;
/// Deliveries before a message is dead-lettered when a claim names no limit.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
/// Highest `max_deliveries` accepted.
pub const MAX_MAX_DELIVERIES: u32 = 1_000;
/// Most ids one acknowledgement takes.
pub const MAX_ACK_IDS: usize = 1_000;
/// Dead-letter entries kept per queue (approximately: trimmed with `MAXLEN ~`).
pub const DEAD_LETTER_CAP: u64 = 10_000;
/// Dead letters returned per page when the request names no limit, and the most.
pub const DEFAULT_DEAD_LETTER_PAGE: u32 = 100;
pub const MAX_DEAD_LETTER_PAGE: u32 = 1_000;
/// How long an `Idempotency-Key` record is kept, seconds.
pub const IDEMPOTENCY_TTL_S: u64 = 24 * 3600;
/// Longest `Idempotency-Key`, bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Longest single blocking read of a waiting claim; between two, expired messages are
/// looked for again.
pub const WAIT_SLICE: Duration = Duration::from_secs(1);

/// The queue routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/namespaces/{ns}/queues/{q}", get(stats))
        .route("/v1/namespaces/{ns}/queues/{q}/messages", post(enqueue))
        .route("/v1/namespaces/{ns}/queues/{q}/claims", post(claim))
        .route("/v1/namespaces/{ns}/queues/{q}/acks", post(ack))
        .route(
            "/v1/namespaces/{ns}/queues/{q}/dead-letters",
            get(dead_letters),
        )
}

/// The queue routes' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(enqueue, claim, ack, stats, dead_letters),
    components(schemas(
        Enqueued,
        ClaimRequest,
        Claimed,
        Message,
        AckRequest,
        Acknowledged,
        QueueStats,
        GroupStats,
        DeadLetters,
        DeadLetter
    ))
)]
pub struct QueuesApi;

// ---------------------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------------------

/// The answer to an enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Enqueued {
    /// The message id (a Redis stream id, `<milliseconds>-<sequence>`).
    pub id: String,
}

/// `POST …/claims`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Consumer group; created on its first claim, reading the queue from its start.
    #[schema(pattern = "^[!-~]{1,200}$")]
    pub group: String,
    /// This consumer's name within the group.
    #[schema(pattern = "^[!-~]{1,200}$")]
    pub consumer: String,
    /// Most messages to return, 1 to 100.
    #[serde(default = "default_count")]
    #[schema(default = 1, minimum = 1, maximum = 100)]
    pub count: u32,
    /// How long to wait for a message when none is ready, milliseconds (at most
    /// 30000). Without it the claim answers at once.
    #[serde(default)]
    #[schema(maximum = 30000)]
    pub wait_ms: Option<u64>,
    /// A message delivered this long ago and not acknowledged is redelivered to the
    /// next claim of the group, milliseconds.
    #[serde(default = "default_visibility")]
    #[schema(default = 30000, minimum = 1, maximum = 43200000)]
    pub visibility_ms: u64,
    /// A message is delivered at most this many times; a message due again after that
    /// goes to the dead-letter queue.
    #[serde(default = "default_max_deliveries")]
    #[schema(default = 5, minimum = 1, maximum = 1000)]
    pub max_deliveries: u32,
}

fn default_count() -> u32 {
    1
}

fn default_visibility() -> u64 {
    DEFAULT_VISIBILITY_MS
}

fn default_max_deliveries() -> u32 {
    DEFAULT_MAX_DELIVERIES
}

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    /// The id to acknowledge it with.
    pub id: String,
    /// The body, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body in standard base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// The `Content-Type` it was enqueued with.
    pub content_type: String,
    /// How many times it has been delivered, this delivery included.
    pub deliveries: u64,
    /// When it was enqueued, milliseconds since the epoch (from its id).
    pub enqueued_at_ms: u64,
}

/// The answer to a claim: empty when nothing arrived within the wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Claimed {
    pub messages: Vec<Message>,
    /// Messages this claim moved to the dead-letter queue instead of delivering.
    pub dead_lettered: u64,
}

/// The schema of a message id as the API writes it: `<milliseconds>-<sequence>` (a
/// Redis stream id). Ids travel as strings; this only documents their form.
pub struct MessageId;

impl utoipa::PartialSchema for MessageId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9]{1,19}-[0-9]{1,19}$"))
            .into()
    }
}

impl utoipa::ToSchema for MessageId {}

/// `POST …/acks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    #[schema(pattern = "^[!-~]{1,200}$")]
    pub group: String,
    /// Ids of claimed messages, 1 to 1000.
    #[schema(value_type = Vec<MessageId>, min_items = 1, max_items = 1000)]
    pub ids: Vec<String>,
}

/// The answer to an acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Acknowledged {
    /// Messages that were pending in the group and are now acknowledged; ids already
    /// acknowledged (or never delivered) do not count.
    pub acknowledged: u64,
}

/// Query of `GET …/queues/{q}`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Report `pending` for this group.
    #[param(pattern = "^[!-~]{1,200}$")]
    pub group: Option<String>,
}

/// A queue's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueStats {
    pub queue: String,
    /// Messages in the queue that some group has yet to acknowledge (or that no group
    /// has read yet).
    pub length: u64,
    /// Delivered and not yet acknowledged in the group named by `?group=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// Entries in the dead-letter queue.
    pub dead_lettered: u64,
    pub groups: Vec<GroupStats>,
}

/// One consumer group of a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupStats {
    pub name: String,
    /// Consumers that ever claimed in this group.
    pub consumers: u64,
    /// Delivered and not yet acknowledged.
    pub pending: u64,
    /// The last message delivered to the group.
    pub last_delivered_id: String,
    /// Messages not yet delivered to the group, when Redis can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// Query of `GET …/dead-letters`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// Most entries to return (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Return entries after this dead-letter id (the `next` of the previous page).
    #[param(pattern = "^[0-9]{1,19}-[0-9]{1,19}$")]
    pub after: Option<String>,
}

/// A page of the dead-letter queue, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetters {
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A message that was delivered `max_deliveries` times without being acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// This entry's id in the dead-letter queue.
    pub id: String,
    /// The message's id in the queue.
    pub message_id: String,
    /// The group that gave up on it.
    pub group: String,
    /// How many times it was delivered.
    pub deliveries: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    pub content_type: String,
    pub enqueued_at_ms: u64,
    pub dead_lettered_at_ms: u64,
}

// ---------------------------------------------------------------------------------------
// Lua
// ---------------------------------------------------------------------------------------

/// Helpers shared by the scripts that acknowledge: `release` deletes an acknowledged
/// entry once no group of the stream still needs it.
const RELEASE: &str = r#"
local function id_after(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not ams or not bms then return false end
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  if ams ~= bms then return ams > bms end
  return aseq > bseq
end
local function load_groups(stream)
  local out = {}
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    out[#out + 1] = info
  end
  return out
end
local function release(stream, groups, id)
  for _, g in ipairs(groups) do
    if id_after(id, g['last-delivered-id']) then return end
    if #redis.call('XPENDING', stream, g['name'], id, id, 1) > 0 then return end
  end
  redis.call('XDEL', stream, id)
end
"#;

/// Enqueue. KEYS[1] stream, KEYS[2] idempotency record (absent without a key). ARGV:
/// body, content type, request fingerprint, record TTL seconds. Returns `{id, status}`:
/// 1 appended, 0 replay of the recorded request (id is the original), -1 the key was
/// used for a different request.
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if #KEYS == 2 then
  local rec = redis.call('GET', KEYS[2])
  if rec then
    local fp, id = string.match(rec, '^(%x+) (.+)$')
    if fp == ARGV[3] then return {id, 0} end
    return {'', -1}
  end
end
local id = redis.call('XADD', KEYS[1], '*', 'b', ARGV[1], 'ct', ARGV[2])
if #KEYS == 2 then
  redis.call('SET', KEYS[2], ARGV[3] .. ' ' .. id, 'EX', ARGV[4])
end
return {id, 1}
"#,
    )
});

/// Claim without waiting. KEYS[1] stream, KEYS[2] dead-letter stream. ARGV: group,
/// consumer, visibility ms, count, max deliveries, dead-letter cap. Returns
/// `{{{id, fields, deliveries}…}, dead-lettered}`.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{RELEASE}{}",
        r#"
local stream, dlq = KEYS[1], KEYS[2]
local group, consumer, visibility = ARGV[1], ARGV[2], ARGV[3]
local count, max_deliveries = tonumber(ARGV[4]), tonumber(ARGV[5])

local created = redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
if type(created) == 'table' and created.err and not string.find(created.err, 'BUSYGROUP', 1, true) then
  return redis.error_reply(created.err)
end

local out, dead, groups = {}, 0, nil
local cursor = '0-0'
for _ = 1, 4 do
  if #out >= count then break end
  local r = redis.call('XAUTOCLAIM', stream, group, consumer, visibility, cursor, 'COUNT', count - #out)
  for _, e in ipairs(r[2]) do
    local id, fields = e[1], e[2]
    if type(fields) ~= 'table' then
      -- Deleted from the stream meanwhile (trimmed by hand): nothing to deliver.
      redis.call('XACK', stream, group, id)
    else
      local p = redis.call('XPENDING', stream, group, id, id, 1)
      local deliveries = p[1] and p[1][4] or 1
      if deliveries > max_deliveries then
        local add = {'XADD', dlq, 'MAXLEN', '~', ARGV[6], '*',
          'id', id, 'group', group, 'deliveries', tostring(deliveries - 1)}
        for i = 1, #fields do add[#add + 1] = fields[i] end
        redis.call(unpack(add))
        redis.call('XACK', stream, group, id)
        groups = groups or load_groups(stream)
        release(stream, groups, id)
        dead = dead + 1
      else
        out[#out + 1] = {id, fields, deliveries}
      end
    end
  end
  cursor = r[1]
  if cursor == '0-0' then break end
end

if #out < count then
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out, 'STREAMS', stream, '>')
  if r then
    for _, e in ipairs(r[1][2]) do out[#out + 1] = {e[1], e[2], 1} end
  end
end
return {out, dead}
"#
    ))
});

/// Acknowledge. KEYS[1] stream. ARGV: group, ids…. Returns the number acknowledged, or
/// -1 when the group does not exist.
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{RELEASE}{}",
        r#"
local stream, group = KEYS[1], ARGV[1]
if redis.call('EXISTS', stream) == 0 then return -1 end
local groups = load_groups(stream)
local known = false
for _, g in ipairs(groups) do
  if g['name'] == group then known = true end
end
if not known then return -1 end
local acked = 0
for i = 2, #ARGV do
  if redis.call('XACK', stream, group, ARGV[i]) == 1 then
    acked = acked + 1
    release(stream, groups, ARGV[i])
  end
end
return acked
"#
    ))
});

/// Statistics. KEYS[1] stream, KEYS[2] dead-letter stream. Returns
/// `{length, dead-lettered, groups}` with `groups` as `XINFO GROUPS` answers it.
static STATS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local groups = {}
if redis.call('EXISTS', KEYS[1]) == 1 then groups = redis.call('XINFO', 'GROUPS', KEYS[1]) end
return {redis.call('XLEN', KEYS[1]), redis.call('XLEN', KEYS[2]), groups}
"#,
    )
});

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// A queue, group or consumer name: 1 to [`MAX_NAME_BYTES`] bytes of visible ASCII.
pub fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ApiError::BadRequest(format!(
            "the {what} name must be 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(format!(
            "the {what} name must be visible ASCII (no spaces or control characters)"
        )));
    }
    Ok(())
}

/// A stream id as Redis writes them: `<ms>-<seq>`, decimal digits only. A sign is
/// refused although `u64::from_str` and Redis take `+5`: the acknowledging script
/// compares ids as `%d+-%d+`, and a `+` spelling it cannot read made it delete an entry
/// another group had yet to read.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (ms, seq) = id.split_once('-')?;
    Some((number(ms)?, number(seq)?))
}

fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if parse_id(id).is_some() {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{what} {id:?} is not a message id (<milliseconds>-<sequence>)"
        )))
    }
}

impl ClaimRequest {
    fn check(&self) -> Result<(), ApiError> {
        check_name("group", &self.group)?;
        check_name("consumer", &self.consumer)?;
        let bad = |m: String| Err(ApiError::BadRequest(m));
        if !(1..=MAX_CLAIM_COUNT).contains(&self.count) {
            return bad(format!("count must be 1 to {MAX_CLAIM_COUNT}"));
        }
        if self.wait_ms.is_some_and(|w| w > MAX_WAIT_MS) {
            return bad(format!("wait_ms must be at most {MAX_WAIT_MS}"));
        }
        if !(1..=MAX_VISIBILITY_MS).contains(&self.visibility_ms) {
            return bad(format!("visibility_ms must be 1 to {MAX_VISIBILITY_MS}"));
        }
        if !(1..=MAX_MAX_DELIVERIES).contains(&self.max_deliveries) {
            return bad(format!("max_deliveries must be 1 to {MAX_MAX_DELIVERIES}"));
        }
        Ok(())
    }
}

/// Namespace and queue name of the request, checked, with the caller cleared for
/// `queue` on the namespace. Authorisation comes first, so a caller without a valid
/// token learns nothing else.
fn access(
    state: &AppState,
    headers: &HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(Access, String), ApiError> {
    let Path((ns, queue)) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let access = state.authorize(headers, &ns, Permission::Queue)?;
    check_name("queue", &queue)?;
    Ok((access, queue))
}

/// The `Idempotency-Key` header, if present: 1 to 255 bytes of visible ASCII.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.len() <= MAX_IDEMPOTENCY_KEY)
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes of visible ASCII"
            ))
        })?;
    Ok(Some(v))
}

/// The fingerprint an idempotency record keeps of its request.
fn fingerprint(content_type: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(content_type.as_bytes());
    h.update([0]);
    h.update(body);
    hex::encode(h.finalize())
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

/// Enqueues the request body as one message, keeping its `Content-Type`.
///
/// The body is limited to the namespace's `max_value_bytes`; a declared larger body is
/// refused before it is read.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/queues/{q}/messages",
    tag = "queues",
    params(
        ("ns" = String, Path, description = "Namespace"),
        ("q" = String, Path, description = "Queue name: 1 to 200 bytes of visible ASCII", pattern = "^[!-~]{1,200}$"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body returns the original id and enqueues nothing (kept 24 h)", pattern = "^[!-~]{1,255}$"),
    ),
    request_body(content = crate::openapi::Bytes, content_type = "application/octet-stream", description = "The message, any bytes; its Content-Type is kept"),
    responses(
        (status = 201, body = Enqueued, description = "Enqueued, or a replay of an earlier request with this Idempotency-Key",
            headers(("Idempotent-Replayed" = String, description = "`true` when the answer replays an earlier request with the same Idempotency-Key"))),
        (status = 400, description = "Bad queue name or header", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "No `queue` permission on the namespace", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the namespace's limit", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key used for a different request (`idempotency-key-reused`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn enqueue(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (access, queue) = access(&state, &headers, path)?;
    let idempotency = idempotency_key(&headers)?;
    let max = access.namespace.value.limits.max_value_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max
    {
        return Err(ApiError::ValueTooLarge { max });
    }
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => "application/octet-stream",
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| s.len() <= value::MAX_CONTENT_TYPE)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "Content-Type must be visible ASCII of at most 255 bytes".into(),
                )
            })?,
    };
    let body = axum::body::to_bytes(body, usize::try_from(max).unwrap_or(usize::MAX))
        .await
        .map_err(|e| ApiError::from_body(&e, || ApiError::ValueTooLarge { max }))?;

    let ns = &access.namespace.value.name;
    let stream = keyspace::queue_key(ns, queue.as_bytes());
    let mut invocation = ENQUEUE.prepare_invoke();
    invocation.key(&stream);
    if let Some(k) = idempotency {
        invocation.key(keyspace::idempotency_key(
            ns,
            "queue",
            queue.as_bytes(),
            k.as_bytes(),
        ));
    }
    invocation
        .arg(body.as_ref())
        .arg(content_type)
        .arg(fingerprint(content_type, &body))
        .arg(IDEMPOTENCY_TTL_S);
    let (id, status): (String, i64) = state
        .backends
        .script(&access.cluster.value, &invocation)
        .await?;
    match status {
        1 | 0 => {
            let mut response = (StatusCode::CREATED, Json(Enqueued { id })).into_response();
            if status == 0 {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            Ok(response)
        }
        _ => Err(ApiError::Unprocessable {
            slug: "idempotency-key-reused",
            detail: "this Idempotency-Key was used for a different request".into(),
        }),
    }
}

/// Claims up to `count` messages for `consumer` of `group`.
///
/// Messages of the group delivered more than `visibility_ms` ago and still not
/// acknowledged come first (their consumer is presumed dead); a message that would be
/// delivered more than `max_deliveries` times goes to the dead-letter queue instead.
/// Then new messages. With `wait_ms` and nothing to deliver, the claim waits up to that
/// long for a message and answers with an empty batch if none came.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/queues/{q}/claims",
    tag = "queues",
    params(
        ("ns" = String, Path, description = "Namespace"),
        ("q" = String, Path, description = "Queue name: 1 to 200 bytes of visible ASCII", pattern = "^[!-~]{1,200}$"),
    ),
    request_body = ClaimRequest,
    responses(
        (status = 200, body = Claimed, description = "The claimed messages; empty when none arrived within `wait_ms`"),
        (status = 400, description = "Bad name, field or JSON", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "No `queue` permission on the namespace", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn claim(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    request: Result<Json<ClaimRequest>, ApiError>,
) -> Result<Json<Claimed>, ApiError> {
    let (access, queue) = access(&state, &headers, path)?;
    let Json(request) = request?;
    request.check()?;
    let ns = &access.namespace.value.name;
    let cluster = &access.cluster.value;
    let stream = keyspace::queue_key(ns, queue.as_bytes());
    let dead = keyspace::dead_letter_key(ns, queue.as_bytes());
    let wait = Duration::from_millis(request.wait_ms.unwrap_or(0));
    let timeouts = Timeouts {
        connect: Duration::from_millis(state.config.connect_timeout_ms),
        request: Duration::from_millis(state.config.request_timeout_ms),
    };
    let started = Instant::now();
    let work = async {
        let mut blocker = state
            .streams
            .blocker(&state.backends, cluster, &stream, timeouts);
        let mut dead_lettered = 0;
        loop {
            let (messages, dead_now) =
                claim_ready(&state, cluster, &stream, &dead, &request).await?;
            dead_lettered += dead_now;
            let remaining = wait.saturating_sub(started.elapsed());
            if !messages.is_empty() || remaining < Duration::from_millis(1) {
                return Ok(Claimed {
                    messages,
                    dead_lettered,
                });
            }
            let slice = remaining.min(WAIT_SLICE);
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&request.group)
                .arg(&request.consumer)
                .arg("COUNT")
                .arg(request.count)
                .arg("BLOCK")
                .arg(slice.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">");
            if let Some(reply) = blocker.run(&read, slice).await? {
                let messages = parse_read(&reply);
                if !messages.is_empty() {
                    return Ok(Claimed {
                        messages,
                        dead_lettered,
                    });
                }
            }
            // The slice ended without a message, or no exclusive connection was free:
            // look again for expired and new messages without blocking.
        }
    };
    match tokio::time::timeout(wait + timeouts.request, work).await {
        Ok(result) => result.map(Json),
        Err(_) => Err(ApiError::BackendTimeout {
            cluster: cluster.name.clone(),
            ms: (wait + timeouts.request).as_millis() as u64,
        }),
    }
}

/// One non-blocking claim: expired messages first, then new ones.
async fn claim_ready(
    state: &AppState,
    cluster: &Cluster,
    stream: &[u8],
    dead: &[u8],
    request: &ClaimRequest,
) -> Result<(Vec<Message>, u64), ApiError> {
    let mut invocation = CLAIM.prepare_invoke();
    invocation
        .key(stream)
        .key(dead)
        .arg(&request.group)
        .arg(&request.consumer)
        .arg(request.visibility_ms)
        .arg(request.count)
        .arg(request.max_deliveries)
        .arg(DEAD_LETTER_CAP);
    let reply: Value = state.backends.script(cluster, &invocation).await?;
    let Value::Array(parts) = reply else {
        return Err(ApiError::Internal("claim script answered no array".into()));
    };
    let messages = match parts.first() {
        Some(Value::Array(entries)) => entries
            .iter()
            .filter_map(|e| {
                let Value::Array(e) = e else { return None };
                let deliveries = int(e.get(2)?)?;
                message(e.first()?, e.get(1)?, deliveries)
            })
            .collect(),
        _ => Vec::new(),
    };
    let dead_lettered = parts.get(1).and_then(int).unwrap_or(0);
    Ok((messages, dead_lettered))
}

/// Acknowledges claimed messages of a group. A message acknowledged by every group is
/// deleted from the queue.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/queues/{q}/acks",
    tag = "queues",
    params(
        ("ns" = String, Path, description = "Namespace"),
        ("q" = String, Path, description = "Queue name: 1 to 200 bytes of visible ASCII", pattern = "^[!-~]{1,200}$"),
    ),
    request_body = AckRequest,
    responses(
        (status = 200, body = Acknowledged),
        (status = 400, description = "Bad name, id or JSON", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "No `queue` permission on the namespace", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group on this queue (`group-not-found`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn ack(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    request: Result<Json<AckRequest>, ApiError>,
) -> Result<Json<Acknowledged>, ApiError> {
    let (access, queue) = access(&state, &headers, path)?;
    let Json(request) = request?;
    check_name("group", &request.group)?;
    if request.ids.is_empty() || request.ids.len() > MAX_ACK_IDS {
        return Err(ApiError::BadRequest(format!(
            "ids must hold 1 to {MAX_ACK_IDS} message ids"
        )));
    }
    for id in &request.ids {
        check_id("id", id)?;
    }
    let stream = keyspace::queue_key(&access.namespace.value.name, queue.as_bytes());
    let mut invocation = ACK.prepare_invoke();
    invocation.key(&stream).arg(&request.group);
    for id in &request.ids {
        invocation.arg(id);
    }
    let acknowledged: i64 = state
        .backends
        .script(&access.cluster.value, &invocation)
        .await?;
    if acknowledged < 0 {
        return Err(group_not_found(&queue, &request.group));
    }
    Ok(Json(Acknowledged {
        acknowledged: acknowledged as u64,
    }))
}

fn group_not_found(queue: &str, group: &str) -> ApiError {
    ApiError::NotFound {
        slug: "group-not-found",
        detail: format!("queue {queue:?} has no consumer group {group:?}"),
    }
}

/// A queue's statistics. A queue nothing was ever enqueued to or claimed from reads as
/// empty.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/queues/{q}",
    tag = "queues",
    params(
        ("ns" = String, Path, description = "Namespace"),
        ("q" = String, Path, description = "Queue name: 1 to 200 bytes of visible ASCII", pattern = "^[!-~]{1,200}$"),
        StatsParams,
    ),
    responses(
        (status = 200, body = QueueStats),
        (status = 400, description = "Bad name", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "No `queue` permission on the namespace", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`?group=` names no group of the queue (`group-not-found`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<StatsParams>, ApiError>,
    headers: HeaderMap,
) -> Result<Json<QueueStats>, ApiError> {
    let (access, queue) = access(&state, &headers, path)?;
    let Query(query) = query?;
    if let Some(group) = &query.group {
        check_name("group", group)?;
    }
    let ns = &access.namespace.value.name;
    let mut invocation = STATS.prepare_invoke();
    invocation
        .key(keyspace::queue_key(ns, queue.as_bytes()))
        .key(keyspace::dead_letter_key(ns, queue.as_bytes()));
    let reply: Value = state
        .backends
        .script(&access.cluster.value, &invocation)
        .await?;
    let Value::Array(parts) = reply else {
        return Err(ApiError::Internal("stats script answered no array".into()));
    };
    let length = parts.first().and_then(int).unwrap_or(0);
    let dead_lettered = parts.get(1).and_then(int).unwrap_or(0);
    let groups: Vec<GroupStats> = match parts.get(2) {
        Some(Value::Array(groups)) => groups.iter().filter_map(group_stats).collect(),
        _ => Vec::new(),
    };
    let pending = match &query.group {
        None => None,
        Some(name) => Some(
            groups
                .iter()
                .find(|g| &g.name == name)
                .map(|g| g.pending)
                .ok_or_else(|| group_not_found(&queue, name))?,
        ),
    };
    Ok(Json(QueueStats {
        queue,
        length,
        pending,
        dead_lettered,
        groups,
    }))
}

/// Reads the dead-letter queue, oldest first.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/queues/{q}/dead-letters",
    tag = "queues",
    params(
        ("ns" = String, Path, description = "Namespace"),
        ("q" = String, Path, description = "Queue name: 1 to 200 bytes of visible ASCII", pattern = "^[!-~]{1,200}$"),
        DeadLetterParams,
    ),
    responses(
        (status = 200, body = DeadLetters),
        (status = 400, description = "Bad name, limit or cursor", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "No `queue` permission on the namespace", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<DeadLetterParams>, ApiError>,
    headers: HeaderMap,
) -> Result<Json<DeadLetters>, ApiError> {
    let (access, queue) = access(&state, &headers, path)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_DEAD_LETTER_PAGE);
    if !(1..=MAX_DEAD_LETTER_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_DEAD_LETTER_PAGE}"
        )));
    }
    // The id right after `after` (Redis refuses `(` on the largest id, a 502 before).
    let start = match &query.after {
        Some(after) => {
            check_id("after", after)?;
            match parse_id(after) {
                Some((ms, seq)) if seq < u64::MAX => format!("{ms}-{}", seq + 1),
                Some((ms, _)) if ms < u64::MAX => format!("{}-0", ms + 1),
                _ => {
                    return Ok(Json(DeadLetters {
                        dead_letters: Vec::new(),
                        next: None,
                    }));
                }
            }
        }
        None => "-".to_owned(),
    };
    let dead = keyspace::dead_letter_key(&access.namespace.value.name, queue.as_bytes());
    let reply: Value = state
        .backends
        .query(
            &access.cluster.value,
            redis::cmd("XRANGE")
                .arg(&dead)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(limit),
        )
        .await?;
    let entries = match &reply {
        Value::Array(entries) => entries.as_slice(),
        _ => &[],
    };
    let dead_letters: Vec<DeadLetter> = entries.iter().filter_map(dead_letter).collect();
    let next = (entries.len() == limit as usize)
        .then(|| dead_letters.last().map(|d| d.id.clone()))
        .flatten();
    Ok(Json(DeadLetters { dead_letters, next }))
}

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    bytes(value).map(|b| String::from_utf8_lossy(b).into_owned())
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

/// The value of `name` in a flat `[name, value, …]` field list.
fn field<'a>(fields: &'a [Value], name: &str) -> Option<&'a Value> {
    fields
        .chunks_exact(2)
        .find(|pair| bytes(&pair[0]) == Some(name.as_bytes()))
        .map(|pair| &pair[1])
}

/// The milliseconds part of a stream id.
fn id_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// A body as JSON carries it: a string when UTF-8, else base64.
fn body_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(body) {
        Ok(s) => (Some(s.to_owned()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(body)),
        ),
    }
}

fn content_type(fields: &[Value]) -> String {
    field(fields, "ct")
        .and_then(text)
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// A message from a stream entry's id and fields. An entry not written by Larder is
/// served with an empty body.
fn message(id: &Value, fields: &Value, deliveries: u64) -> Option<Message> {
    let id = text(id)?;
    let fields = match fields {
        Value::Array(f) => f.as_slice(),
        _ => &[],
    };
    let (body, body_base64) = body_fields(field(fields, "b").and_then(bytes).unwrap_or_default());
    Some(Message {
        enqueued_at_ms: id_ms(&id),
        id,
        body,
        body_base64,
        content_type: content_type(fields),
        deliveries,
    })
}

/// The messages of an `XREADGROUP` reply (`[[stream, [[id, fields]…]]]` or nil): first
/// deliveries.
fn parse_read(reply: &Value) -> Vec<Message> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    streams
        .iter()
        .filter_map(|s| match s {
            Value::Array(pair) => match pair.get(1) {
                Some(Value::Array(entries)) => Some(entries),
                _ => None,
            },
            _ => None,
        })
        .flatten()
        .filter_map(|e| {
            let Value::Array(e) = e else { return None };
            message(e.first()?, e.get(1)?, 1)
        })
        .collect()
}

/// One group of an `XINFO GROUPS` reply (a flat `[name, value, …]` list).
fn group_stats(group: &Value) -> Option<GroupStats> {
    let Value::Array(fields) = group else {
        return None;
    };
    Some(GroupStats {
        name: text(field(fields, "name")?)?,
        consumers: field(fields, "consumers").and_then(int).unwrap_or(0),
        pending: field(fields, "pending").and_then(int).unwrap_or(0),
        last_delivered_id: field(fields, "last-delivered-id")
            .and_then(text)
            .unwrap_or_default(),
        lag: field(fields, "lag").and_then(int),
    })
}

/// A dead-letter entry of an `XRANGE` reply.
fn dead_letter(entry: &Value) -> Option<DeadLetter> {
    let Value::Array(entry) = entry else {
        return None;
    };
    let id = text(entry.first()?)?;
    let fields = match entry.get(1)? {
        Value::Array(f) => f.as_slice(),
        _ => &[],
    };
    let message_id = field(fields, "id").and_then(text).unwrap_or_default();
    let (body, body_base64) = body_fields(field(fields, "b").and_then(bytes).unwrap_or_default());
    Some(DeadLetter {
        dead_lettered_at_ms: id_ms(&id),
        enqueued_at_ms: id_ms(&message_id),
        id,
        message_id,
        group: field(fields, "group").and_then(text).unwrap_or_default(),
        deliveries: field(fields, "deliveries").and_then(int).unwrap_or(0),
        body,
        body_base64,
        content_type: content_type(fields),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn names_are_bounded_visible_ascii() {
        assert!(check_name("queue", "orders.v2:eu-1_{x}").is_ok());
        assert!(check_name("queue", &"q".repeat(MAX_NAME_BYTES)).is_ok());
        for bad in ["", "has space", "tab\t", "nul\0", "ünïcode", "\x7f"] {
            assert!(check_name("queue", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("queue", &"q".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn ids_are_stream_ids() {
        assert!(check_id("id", "1700000000000-0").is_ok());
        for bad in ["", "1", "-1", "1-", "a-b", "1-2-3", "$", ">", "+"] {
            assert!(check_id("id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claim_requests_have_defaults_and_bounds() {
        let r: ClaimRequest = serde_json::from_str(r#"{"group":"g","consumer":"c"}"#).unwrap();
        assert_eq!(r.count, 1);
        assert_eq!(r.wait_ms, None);
        assert_eq!(r.visibility_ms, DEFAULT_VISIBILITY_MS);
        assert_eq!(r.max_deliveries, DEFAULT_MAX_DELIVERIES);
        assert!(r.check().is_ok());
        assert!(
            serde_json::from_str::<ClaimRequest>(r#"{"group":"g","consumer":"c","colour":1}"#)
                .is_err(),
            "unknown fields are refused"
        );
        for (field, value) in [
            ("count", 0),
            ("count", 101),
            ("wait_ms", 30_001),
            ("visibility_ms", 0),
            ("max_deliveries", 0),
        ] {
            let json = format!(r#"{{"group":"g","consumer":"c","{field}":{value}}}"#);
            let r: ClaimRequest = serde_json::from_str(&json).unwrap();
            assert!(r.check().is_err(), "{json}");
        }
        let r: ClaimRequest = serde_json::from_str(r#"{"group":"g g","consumer":"c"}"#).unwrap();
        assert!(r.check().is_err());
    }

    #[test]
    fn bodies_are_text_or_base64() {
        let fields = Value::Array(vec![
            bulk(b"b"),
            bulk(b"\xff\x00"),
            bulk(b"ct"),
            bulk(b"image/png"),
        ]);
        let m = message(&bulk(b"1700000000123-4"), &fields, 2).unwrap();
        assert_eq!(m.body, None);
        assert_eq!(m.body_base64.as_deref(), Some("/wA="));
        assert_eq!(m.content_type, "image/png");
        assert_eq!(m.enqueued_at_ms, 1_700_000_000_123);
        assert_eq!(m.deliveries, 2);
        let json = serde_json::to_value(&m).unwrap();
        assert!(json.get("body").is_none());

        let text = Value::Array(vec![bulk(b"b"), bulk(b"hello")]);
        let m = message(&bulk(b"1-0"), &text, 1).unwrap();
        assert_eq!(m.body.as_deref(), Some("hello"));
        assert_eq!(m.content_type, "application/octet-stream");
    }

    #[test]
    fn replies_are_parsed() {
        let read = Value::Array(vec![Value::Array(vec![
            bulk(b"larder:ns:q:{#q}"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(b"5-0"),
                    Value::Array(vec![bulk(b"b"), bulk(b"x")]),
                ]),
                Value::Array(vec![
                    bulk(b"6-0"),
                    Value::Array(vec![bulk(b"b"), bulk(b"y")]),
                ]),
            ]),
        ])]);
        let got: Vec<_> = parse_read(&read).into_iter().map(|m| m.id).collect();
        assert_eq!(got, ["5-0", "6-0"]);
        assert!(parse_read(&Value::Nil).is_empty());

        let group = Value::Array(vec![
            bulk(b"name"),
            bulk(b"workers"),
            bulk(b"consumers"),
            Value::Int(2),
            bulk(b"pending"),
            Value::Int(3),
            bulk(b"last-delivered-id"),
            bulk(b"9-0"),
            bulk(b"entries-read"),
            Value::Int(9),
            bulk(b"lag"),
            Value::Nil,
        ]);
        let g = group_stats(&group).unwrap();
        assert_eq!((g.name.as_str(), g.consumers, g.pending), ("workers", 2, 3));
        assert_eq!(g.last_delivered_id, "9-0");
        assert_eq!(g.lag, None);

        let dead = Value::Array(vec![
            bulk(b"20-0"),
            Value::Array(vec![
                bulk(b"id"),
                bulk(b"10-0"),
                bulk(b"group"),
                bulk(b"workers"),
                bulk(b"deliveries"),
                bulk(b"3"),
                bulk(b"b"),
                bulk(b"poison"),
                bulk(b"ct"),
                bulk(b"text/plain"),
            ]),
        ]);
        let d = dead_letter(&dead).unwrap();
        assert_eq!((d.id.as_str(), d.message_id.as_str()), ("20-0", "10-0"));
        assert_eq!((d.group.as_str(), d.deliveries), ("workers", 3));
        assert_eq!(d.body.as_deref(), Some("poison"));
        assert_eq!((d.enqueued_at_ms, d.dead_lettered_at_ms), (10, 20));
    }

    #[test]
    fn every_route_is_documented() {
        use utoipa::OpenApi as _;
        let doc = QueuesApi::openapi();
        let json = serde_json::to_value(&doc).unwrap();
        for (path, method) in [
            ("/v1/namespaces/{ns}/queues/{q}", "get"),
            ("/v1/namespaces/{ns}/queues/{q}/messages", "post"),
            ("/v1/namespaces/{ns}/queues/{q}/claims", "post"),
            ("/v1/namespaces/{ns}/queues/{q}/acks", "post"),
            ("/v1/namespaces/{ns}/queues/{q}/dead-letters", "get"),
        ] {
            let op = &json["paths"][path][method];
            assert_eq!(op["tags"][0], "queues", "{method} {path}");
            assert!(op["security"].is_array(), "{method} {path}");
        }
        let schemas = &json["components"]["schemas"];
        for schema in [
            "ClaimRequest",
            "Claimed",
            "Message",
            "QueueStats",
            "DeadLetter",
        ] {
            assert!(schemas.get(schema).is_some(), "{schema}");
        }
        assert_eq!(
            schemas["ClaimRequest"]["required"],
            serde_json::json!(["group", "consumer"])
        );
    }

    #[test]
    fn fingerprints_cover_content_type_and_body() {
        assert_ne!(fingerprint("a", b"x"), fingerprint("b", b"x"));
        assert_ne!(fingerprint("a", b"x"), fingerprint("a", b"y"));
        assert_ne!(fingerprint("a", b"bx"), fingerprint("ab", b"x"));
        assert_eq!(fingerprint("a", b"x").len(), 64);
    }
}

/// Property tests of the queue request parsers: names, message ids, the
/// `Idempotency-Key` header and claim bodies.
#[cfg(test)]
mod properties {
    use super::*;
    use axum::response::IntoResponse;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        #[test]
        fn names_are_bounded_visible_ascii(name in prop_oneof![
            any::<String>(),
            "[!-~]{1,200}",
            "[!-~ ]{195,205}",
        ]) {
            let expected = (1..=MAX_NAME_BYTES).contains(&name.len())
                && name.bytes().all(|b| (b'!'..=b'~').contains(&b));
            match check_name("queue", &name) {
                Ok(()) => prop_assert!(expected, "{:?}", name),
                Err(e) => {
                    prop_assert!(!expected, "{:?}", name);
                    prop_assert_eq!(e.into_response().status(), StatusCode::BAD_REQUEST);
                }
            }
        }

        /// Only `<digits>-<digits>` within `u64` is an id: the form the acknowledging
        /// script can compare, and one Redis accepts.
        #[test]
        fn ids_are_digits_dash_digits(id in prop_oneof![
            any::<String>(),
            "[+-]?[0-9]{1,21}-[+-]?[0-9]{1,21}",
            "[0-9 +$<>*-]{0,8}",
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("{a}-{b}")),
        ]) {
            let well_formed = id.split_once('-').is_some_and(|(a, b)| {
                [a, b].iter().all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) && p.parse::<u64>().is_ok())
            });
            prop_assert_eq!(check_id("id", &id).is_ok(), well_formed, "{:?}", id);
        }

        #[test]
        fn idempotency_keys_are_bounded_visible_ascii(value in proptest::collection::vec(
            prop_oneof![8 => 0x20u8..0x7f, 1 => 0x80u8..=0xff, 1 => Just(b'\t')], 0..300,
        )) {
            let Ok(header) = HeaderValue::from_bytes(&value) else {
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.insert("idempotency-key", header);
            let expected = (1..=MAX_IDEMPOTENCY_KEY).contains(&value.len())
                && value.iter().all(|b| b.is_ascii_graphic());
            match idempotency_key(&headers) {
                Ok(got) => prop_assert_eq!(got.map(str::as_bytes), Some(value.as_slice()).filter(|_| expected)),
                Err(e) => {
                    prop_assert!(!expected);
                    prop_assert_eq!(e.into_response().status(), StatusCode::BAD_REQUEST);
                }
            }
        }

        /// A claim body that parses and passes its check stays within every bound the
        /// handler relies on (wait, count, visibility, deliveries).
        #[test]
        fn checked_claims_are_bounded(
            count in proptest::option::of(prop_oneof![Just(0u64), 1..200u64, Just(u64::MAX)]),
            wait_ms in proptest::option::of(prop_oneof![Just(0u64), 1..40_000u64, Just(u64::MAX)]),
            visibility_ms in proptest::option::of(prop_oneof![Just(0u64), any::<u64>()]),
            max_deliveries in proptest::option::of(prop_oneof![Just(0u64), 1..2_000u64, Just(u64::MAX)]),
            group in "[ -~]{0,4}",
        ) {
            let mut body = serde_json::json!({"group": group, "consumer": "c"});
            for (k, v) in [("count", count), ("wait_ms", wait_ms), ("visibility_ms", visibility_ms), ("max_deliveries", max_deliveries)] {
                if let Some(v) = v {
                    body[k] = v.into();
                }
            }
            let Ok(request) = serde_json::from_value::<ClaimRequest>(body) else {
                // Only numbers past the field's type are refused at parse time.
                prop_assert!(count.is_some_and(|c| c > u64::from(u32::MAX))
                    || max_deliveries.is_some_and(|c| c > u64::from(u32::MAX)));
                return Ok(());
            };
            if request.check().is_ok() {
                prop_assert!((1..=MAX_CLAIM_COUNT).contains(&request.count));
                prop_assert!(request.wait_ms.unwrap_or(0) <= MAX_WAIT_MS);
                prop_assert!((1..=MAX_VISIBILITY_MS).contains(&request.visibility_ms));
                prop_assert!((1..=MAX_MAX_DELIVERIES).contains(&request.max_deliveries));
                prop_assert!(check_name("group", &request.group).is_ok());
            }
        }
    }

    #[test]
    fn signed_ids_are_refused() {
        // `+5` parses as a u64 and Redis takes it, but the acknowledging script cannot
        // compare it and deleted entries other groups still needed.
        for bad in ["+1-2", "1-+2", "+0-+0", " 1-2", "1-2 "] {
            assert!(check_id("id", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_id("18446744073709551615-18446744073709551615"),
            Some((u64::MAX, u64::MAX))
        );
    }
}
