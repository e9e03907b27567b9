-- Shared by every script (concatenated before each).
--
-- One hash per limit group, KEYS[1]. Fields:
--   b   the group's base: Redis seconds (TIME) that times are counted from
--   g   the 429 gate: no admission before it (ns since b)
--   t1… the TAT of each dimension (ns since b; at or before now = full)
--   c1… the net units reserved in each dimension by every process
--       (admissions and leases, plus charges, minus refunds), modulo 2^50:
--       what was admitted after a request, to correct the provider's
--       `remaining` in its response by (tighten.lua)
--
-- Times are nanoseconds since the base, not since the epoch: Lua numbers
-- are doubles, exact to 2^53 ns (104 days), and nanoseconds since 1970
-- are not. The base moves forward (every stored time shifted) once it is
-- a week old, so a busy group never leaves the exact range; a bucket's
-- capacity is at most 2^51 ns (checked by the client), debt at most 2^51
-- ns ahead of now.
local key = KEYS[1]
local n = tonumber(ARGV[1])
local time = redis.call('TIME')
local sec = tonumber(time[1])
local usec = tonumber(time[2])
local fields = {'b', 'g'}
for i = 1, n do
  fields[i + 2] = 't' .. i
  fields[n + i + 2] = 'c' .. i
end
local stored = redis.call('HMGET', key, unpack(fields))
local base = tonumber(stored[1]) or sec
local gate = tonumber(stored[2]) or 0
local tats = {}
local nets = {}
for i = 1, n do
  tats[i] = tonumber(stored[i + 2]) or 0
  nets[i] = tonumber(stored[n + i + 2]) or 0
end
local WEEK = 604800
if sec - base > WEEK then
  local shift = (sec - base) * 1e9
  base = sec
  gate = math.max(gate - shift, 0)
  for i = 1, n do tats[i] = math.max(tats[i] - shift, 0) end
end
-- A server clock behind the base (a failover to another host) counts as
-- the base: buckets refill later, never early.
local now = math.max((sec - base) * 1e9 + usec * 1000, 0)
local MAX_AHEAD = 2251799813685248 -- 2^51
-- The net counters wrap here (exact in a double, whatever is added).
local NET = 1125899906842624 -- 2^50
local function count(i, units)
  nets[i] = (nets[i] + units) % NET
end

local function save()
  local args = {'b', string.format('%.0f', base), 'g', string.format('%.0f', gate)}
  local ahead = gate - now
  for i = 1, n do
    args[#args + 1] = 't' .. i
    args[#args + 1] = string.format('%.0f', tats[i])
    if tats[i] - now > ahead then ahead = tats[i] - now end
    args[#args + 1] = 'c' .. i
    args[#args + 1] = string.format('%.0f', nets[i])
  end
  redis.call('HSET', key, unpack(args))
  -- Kept until every bucket is full and the gate open, plus a second: an
  -- expired group is exactly a full one.
  redis.call('PEXPIRE', key, math.ceil(math.max(ahead, 0) / 1e6) + 1000)
end
