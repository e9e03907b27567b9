-- A key pool's choice, made on the shared state: every usable key's
-- calendar counter, 429 gate and buckets are read on Redis's clock, the
-- key the strategy prefers among those that take the cost now is chosen,
-- and its group and counter are charged, in one atomic call.
--
-- KEYS: the pool's g distinct limit groups (hashes as prelude.lua
-- describes), then one calendar hash per member (fields p: the period
-- index, r: requests, t: tokens, s: spend in nano-units). Every key
-- carries the pool's hash tag.
-- ARGV[1] = n dimensions, ARGV[2] = g, ARGV[3] = m members, ARGV[4] the
-- strategy (0 most headroom, 1 fewest used), ARGV[5] the request's tokens
-- and ARGV[6] its spend for calendar quotas; ARGV[6+d] the cost of
-- dimension d; then per group j, from o = 6 + n + 2n(j-1): ARGV[o+2d-1]
-- the emission interval in ns (0: unlimited), ARGV[o+2d] the burst; then
-- per member i, from q = 6 + n + 2ng + 7(i-1): ARGV[q+1] its group
-- (1-based), ARGV[q+2] usable (0: skipped, e.g. its local gate is
-- closed), ARGV[q+3] the period (1 day, 2 month), ARGV[q+4] the UTC
-- offset in seconds, ARGV[q+5] requests allowed (-1: any), ARGV[q+6]
-- tokens allowed (-1), ARGV[q+7] spend allowed (-1).
-- Returns {0, member (0-based), period index, then the chosen group's net
-- counters}; {1, wait ns, -1 when a gate holds the earliest key else 0};
-- {2, dimension, burst} when the cost is above every usable key's burst;
-- {3, wait ns until the earliest calendar reset} when every usable key is
-- out of its quota.
local n = tonumber(ARGV[1])
local g = tonumber(ARGV[2])
local m = tonumber(ARGV[3])
local strategy = tonumber(ARGV[4])
local tokens = tonumber(ARGV[5])
local spend = tonumber(ARGV[6])
local time = redis.call('TIME')
local sec = tonumber(time[1])
local usec = tonumber(time[2])
local WEEK = 604800
local DAY = 86400
local NET = 1125899906842624 -- 2^50
local cost = {}
for d = 1, n do cost[d] = tonumber(ARGV[6 + d]) end

-- Civil dates (Howard Hinnant's algorithms), for calendar months.
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local mo = mp < 10 and mp + 3 or mp - 9
  if mo <= 2 then y = y + 1 end
  return y, mo
end
local function days_from_civil(y, mo)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = mo > 2 and mo - 3 or mo + 9
  local doy = math.floor((153 * mp + 2) / 5)
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
-- The period index of now (days or months since 1970 in local time) and
-- the Unix second it ends at (as src/rate/calendar.rs counts them).
local function period(kind, offset)
  local days = math.floor((sec + offset) / DAY)
  if kind == 2 then
    local y, mo = civil(days)
    local ny, nm = y, mo + 1
    if nm == 13 then ny, nm = y + 1, 1 end
    return y * 12 + mo - 1 - 1970 * 12, days_from_civil(ny, nm) * DAY - offset
  end
  return days, (days + 1) * DAY - offset
end

-- The groups, loaded as prelude.lua loads one.
local groups = {}
for j = 1, g do
  local fields = {'b', 'g'}
  for d = 1, n do
    fields[d + 2] = 't' .. d
    fields[n + d + 2] = 'c' .. d
  end
  local stored = redis.call('HMGET', KEYS[j], unpack(fields))
  local gr = {base = tonumber(stored[1]) or sec, gate = tonumber(stored[2]) or 0,
    tats = {}, nets = {}, interval = {}, burst = {}}
  for d = 1, n do
    gr.tats[d] = tonumber(stored[d + 2]) or 0
    gr.nets[d] = tonumber(stored[n + d + 2]) or 0
    local o = 6 + n + 2 * n * (j - 1)
    gr.interval[d] = tonumber(ARGV[o + 2 * d - 1])
    gr.burst[d] = tonumber(ARGV[o + 2 * d])
  end
  if sec - gr.base > WEEK then
    local shift = (sec - gr.base) * 1e9
    gr.base = sec
    gr.gate = math.max(gr.gate - shift, 0)
    for d = 1, n do gr.tats[d] = math.max(gr.tats[d] - shift, 0) end
  end
  gr.now = math.max((sec - gr.base) * 1e9 + usec * 1000, 0)
  groups[j] = gr
end

local best = nil
local wait = nil
local gated = 0
local reset = nil
local never = nil
for i = 1, m do
  local q = 6 + n + 2 * n * g + 7 * (i - 1)
  local j = tonumber(ARGV[q + 1])
  if tonumber(ARGV[q + 2]) == 1 then
    local kind = tonumber(ARGV[q + 3])
    local index, ends = period(kind, tonumber(ARGV[q + 4]))
    local allowed_r = tonumber(ARGV[q + 5])
    local allowed_t = tonumber(ARGV[q + 6])
    local allowed_s = tonumber(ARGV[q + 7])
    local cal = redis.call('HMGET', KEYS[g + i], 'p', 'r', 't', 's')
    local used_r, used_t, used_s = 0, 0, 0
    if tonumber(cal[1]) == index then
      used_r = tonumber(cal[2]) or 0
      used_t = tonumber(cal[3]) or 0
      used_s = tonumber(cal[4]) or 0
    end
    local gr = groups[j]
    local now = gr.now
    if (allowed_r >= 0 and used_r >= allowed_r)
      or (allowed_t >= 0 and used_t + tokens > allowed_t)
      or (allowed_s >= 0 and used_s + spend > allowed_s) then
      local left = (ends - sec) * 1e9 - usec * 1000
      if reset == nil or left < reset then reset = left end
    elseif gr.gate > now then
      local left = gr.gate - now
      if wait == nil or left < wait then wait = left; gated = -1 end
    else
      local latest = -1
      local too_large = false
      for d = 1, n do
        local t = gr.interval[d]
        if t > 0 and cost[d] > 0 then
          if cost[d] > gr.burst[d] then
            too_large = true
            if never == nil then never = {2, d - 1, gr.burst[d]} end
          end
          local at = gr.tats[d] + cost[d] * t - gr.burst[d] * t
          if at > latest then latest = at end
        end
      end
      if not too_large then
        if latest > now then
          local left = latest - now
          if wait == nil or left < wait then wait = left; gated = 0 end
        else
          -- The least fraction of a limited bucket left after the cost.
          local headroom = 1
          for d = 1, n do
            local t = gr.interval[d]
            if t > 0 then
              local used = math.max(gr.tats[d] - now, 0)
              local free = math.max(math.floor((gr.burst[d] * t - used) / t), 0)
              local after = math.max(free - cost[d], 0) / gr.burst[d]
              if after < headroom then headroom = after end
            end
          end
          local c = {i = i, j = j, headroom = headroom, used = used_r,
            used_t = used_t, used_s = used_s, index = index, ends = ends}
          local better
          if best == nil then
            better = true
          elseif strategy == 1 then
            better = c.used < best.used
              or (c.used == best.used and c.headroom > best.headroom)
          else
            better = c.headroom > best.headroom
              or (c.headroom == best.headroom and c.used < best.used)
          end
          if better then best = c end
        end
      end
    end
  end
end

if best == nil then
  if wait ~= nil then
    if reset ~= nil and reset < wait then return {1, reset, 0} end
    return {1, wait, gated}
  end
  if reset ~= nil then return {3, reset} end
  if never ~= nil then return never end
  return {1, 0, 0}
end

local gr = groups[best.j]
local now = gr.now
local ahead = gr.gate - now
local args = {'b', string.format('%.0f', gr.base), 'g', string.format('%.0f', gr.gate)}
for d = 1, n do
  local t = gr.interval[d]
  if t > 0 and cost[d] > 0 then
    gr.tats[d] = math.max(gr.tats[d], now) + cost[d] * t
    gr.nets[d] = (gr.nets[d] + cost[d]) % NET
  end
  if gr.tats[d] - now > ahead then ahead = gr.tats[d] - now end
  args[#args + 1] = 't' .. d
  args[#args + 1] = string.format('%.0f', gr.tats[d])
  args[#args + 1] = 'c' .. d
  args[#args + 1] = string.format('%.0f', gr.nets[d])
end
redis.call('HSET', KEYS[best.j], unpack(args))
redis.call('PEXPIRE', KEYS[best.j], math.ceil(math.max(ahead, 0) / 1e6) + 1000)
local cal = KEYS[g + best.i]
redis.call('HSET', cal, 'p', string.format('%.0f', best.index),
  'r', string.format('%.0f', best.used + 1),
  't', string.format('%.0f', best.used_t + tokens),
  's', string.format('%.0f', best.used_s + spend))
-- Kept a day past its period's end (a late refund finds it; then gone).
redis.call('EXPIREAT', cal, best.ends + DAY)
local reply = {0, best.i - 1, best.index}
for d = 1, n do reply[d + 3] = gr.nets[d] end
return reply
