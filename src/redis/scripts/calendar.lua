-- A key pool's calendar correction: a refused or unsent request's
-- reservation given back, or its tokens and spend corrected to the usage
-- reported. KEYS[1] the member's calendar hash (pool.lua), ARGV[1] the
-- period index the reservation was made in, ARGV[2] requests to add
-- (negative: give back), ARGV[3] tokens to add, ARGV[4] spend to add
-- (nano-units). A period that has ended is not touched
-- (what was reserved in it is gone); counts never go below zero; the TTL
-- stays. Returns 1 when applied, else 0.
local cal = redis.call('HMGET', KEYS[1], 'p', 'r', 't', 's')
if tonumber(cal[1]) ~= tonumber(ARGV[1]) then
  return 0
end
local r = math.max((tonumber(cal[2]) or 0) + tonumber(ARGV[2]), 0)
local t = math.max((tonumber(cal[3]) or 0) + tonumber(ARGV[3]), 0)
local s = math.max((tonumber(cal[4]) or 0) + tonumber(ARGV[4]), 0)
redis.call('HSET', KEYS[1], 'r', string.format('%.0f', r), 't', string.format('%.0f', t),
  's', string.format('%.0f', s))
return 1
