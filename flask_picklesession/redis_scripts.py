"""The Redis store's Lua scripts, with what each takes and answers.

Apart from the store because they are programs of their own, in another
language, and are read against the record format rather than against the
Python around them: :data:`MERGE_SCRIPT` follows :func:`.record.apply_ops`
exactly. Each touches one key only, so they are safe on a cluster.
"""

from __future__ import annotations

#: Merges a patch into the record; follows ``record.apply_ops`` exactly.
#: ARGV: ttl in ms, size limit (compressed values count as before), then
#: (op, key, payload) triples.
MERGE_SCRIPT = """
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' and cur.err then return -3 end
if not cur or string.byte(cur, 1) == 0 then return -1 end
if string.byte(cur, 1) ~= 1 then return -3 end
local function read_varint(s, pos)
  local n, mul = 0, 1
  while true do
    local b = string.byte(s, pos)
    if b == nil or mul > 268435456 then return nil, pos end
    pos = pos + 1
    if b < 128 then return n + b * mul, pos end
    n = n + (b - 128) * mul
    mul = mul * 128
  end
end
local function varint(n)
  local out = {}
  while n > 127 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end
local order, body, moved = {}, {}, {}
local pos, last = 2, #cur
while pos <= last do
  local klen, vlen
  klen, pos = read_varint(cur, pos)
  if not klen or pos + klen - 1 > last then return -3 end
  local key = string.sub(cur, pos, pos + klen - 1)
  pos = pos + klen
  vlen, pos = read_varint(cur, pos)
  if not vlen or pos + 16 + vlen - 1 > last then return -3 end
  if body[key] == nil then order[#order + 1] = key end
  if vlen == 0 then
    body[key] = false
  else
    body[key] = string.sub(cur, pos, pos + 16 + vlen - 1)
  end
  pos = pos + 16 + vlen
end
for _, key in ipairs(order) do
  if body[key] == false then body[key] = nil end
end
for i = 3, #ARGV, 3 do
  local op, key, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == 's' then
    if body[key] == nil then
      order[#order + 1] = key
      moved[key] = #order
    end
    body[key] = payload
  elseif op == 'd' then
    body[key] = nil
  elseif body[key] and string.sub(body[key], 1, 16) == string.sub(payload, 1, 16) then
    body[key] = string.sub(payload, 17)
  end
end
local parts, count, size = {string.char(1)}, 0, 1
for i, key in ipairs(order) do
  local b = body[key]
  if b and (moved[key] == nil or moved[key] == i) then
    local piece = varint(#key) .. key .. varint(#b - 16) .. b
    parts[#parts + 1] = piece
    count = count + 1
    -- the limit counts a compressed value (P or Z) at its size before
    local tag, plain = string.byte(b, 17), nil
    if tag == 80 or tag == 90 then plain = read_varint(b, 18) end
    if plain then
      size = size + #varint(#key) + #key + #varint(plain) + 16 + plain
    else
      size = size + #piece
    end
  end
end
if count == 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
if size > tonumber(ARGV[2]) then return -2 end
redis.call('SET', KEYS[1], table.concat(parts), 'PX', ARGV[1])
return count
"""

#: Appends entries (sets and tombstones) to a record, O(appended bytes).
#: APPEND comes first: Redis refuses a script for lack of memory only at its
#: first write, and PEXPIRE is not one it refuses, so behind it the APPEND
#: would pass a full server's memory limit.
#: ARGV: ttl in ms, the length and last bytes of the record as the caller
#: loaded it, the bytes to append. Returns 1, or -1 (gone, or moved: see
#: :data:`TAKE_SCRIPT`), -3 (not a record of this format: appending would
#: bury the save where no load finds it) or -4: the record is no longer the
#: one loaded, whose size the caller checked the append against (another
#: save grew it meanwhile, by any amount before compression), so the
#: caller merges instead, which checks the whole record. On Redis 7 and
#: later an ACL user refused PEXPIRE is refused before the APPEND: a save
#: that raises is never half done.
APPEND_SCRIPT = """
local size = redis.pcall('STRLEN', KEYS[1])
if type(size) == 'table' and size.err then return -3 end
if size == 0 then return -1 end
local version = redis.call('GETRANGE', KEYS[1], 0, 0)
if version == string.char(0) then return -1 end
if version ~= string.char(1) then return -3 end
if size ~= tonumber(ARGV[2]) then return -4 end
if redis.call('GETRANGE', KEYS[1], -#ARGV[3], -1) ~= ARGV[3] then return -4 end
if redis.acl_check_cmd and not redis.acl_check_cmd('PEXPIRE', KEYS[1], ARGV[1]) then
  return redis.error_reply('NOPERM this user has no permissions to run PEXPIRE')
end
redis.call('APPEND', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
#: :data:`APPEND_SCRIPT`'s answer when the record must be rewritten instead.
NEEDS_REWRITE = -4

#: Takes a record away, to move it to a new id, so that a second run of the
#: same call gets it too. GETDEL could not: when redis-py resends it after
#: losing the reply, the second answer is nil, read as "deleted meanwhile",
#: and the session was dropped. The record is replaced by a marker, the
#: caller's token followed by the record, which loads and merges take for a
#: deleted session, and which the caller deletes once it has the record.
#: ARGV: token, marker lifetime in ms. Returns the record, nil when there is
#: none (or another call's marker), or -3 when the key is not a string.
TAKE_SCRIPT = """
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' and cur.err then return -3 end
if not cur then return false end
if string.byte(cur, 1) == 0 then
  if string.sub(cur, 2, 1 + #ARGV[1]) == ARGV[1] then
    return string.sub(cur, 2 + #ARGV[1])
  end
  return false
end
redis.call('SET', KEYS[1], string.char(0) .. ARGV[1] .. cur, 'PX', ARGV[2])
return cur
"""
#: Pushes back a record's expiry, but not a marker's (see :data:`TAKE_SCRIPT`):
#: an old cookie must not keep a marker, which holds the moved record, alive.
#: ARGV: ttl in ms. Returns 1 if pushed back, else 0.
TOUCH_SCRIPT = """
local head = redis.pcall('GETRANGE', KEYS[1], 0, 0)
if head == string.char(0) then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
"""
#: First byte of a marker left by :data:`TAKE_SCRIPT`; records start with 1.
MOVED_MARKER = b"\x00"
