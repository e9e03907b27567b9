-- A lease: a batch of reservations taken at once, with the corrections
-- the process gathered since its last lease applied first.
-- ARGV[1] = n, ARGV[2] = k, the most multiples of the cost to take, then
-- per dimension i: ARGV[5i-2] the emission interval T in ns (0:
-- unlimited), ARGV[5i-1] the burst, ARGV[5i] the cost of one, ARGV[5i+1]
-- units to give back, ARGV[5i+2] units to charge; then per dimension i,
-- ARGV[5n+2+i]: the provider's `remaining` the process learned since its
-- last lease, as a bound on the net counter (remaining + the counter after
-- that request's reservation, modulo 2^50; -1: none) — what tighten.lua
-- applies, folded into this call so that a lease costs one round trip.
-- Reserves as many of k multiples of the cost as fit now (k lowered to
-- what a burst holds), so that a request is never kept waiting, or
-- refused, for credit it does not need: returns {0, m, then the net
-- counter of every dimension after it}. When not even one fits, as
-- admit.lua, with the wait until all k fit ({1, wait ns, dimension or
-- -1}; {2, dimension, burst}).
-- The corrections and bounds are applied either way, the bounds first (they
-- are counted against the counter as it stood before these corrections).
local k = tonumber(ARGV[2])
local changed = false
for i = 1, n do
  local interval = tonumber(ARGV[5 * i - 2])
  local burst = tonumber(ARGV[5 * i - 1])
  local bound = tonumber(ARGV[5 * n + 2 + i])
  if interval > 0 and bound >= 0 then
    local left = (bound - nets[i]) % NET
    if left >= NET / 2 then left = 0 end
    if left < burst then
      local floor = now + (burst - left) * interval
      if floor > tats[i] then
        tats[i] = floor
        changed = true
      end
    end
  end
end
for i = 1, n do
  local interval = tonumber(ARGV[5 * i - 2])
  local refund = tonumber(ARGV[5 * i + 1])
  local charge = tonumber(ARGV[5 * i + 2])
  if interval > 0 then
    if refund > 0 or charge > 0 then
      count(i, charge - refund)
      changed = true
    end
    if refund > 0 and tats[i] > now then
      tats[i] = math.max(tats[i] - refund * interval, now)
    end
    if charge > 0 then
      tats[i] = math.min(math.max(tats[i], now) + charge * interval, now + MAX_AHEAD)
      changed = true
    end
  end
end
local function denied(reply)
  if changed then save() end
  return reply
end
if gate > now then
  return denied({1, gate - now, -1})
end
-- The multiples that fit now (never more than a burst holds), at most k.
local fit = k
for i = 1, n do
  local interval = tonumber(ARGV[5 * i - 2])
  local burst = tonumber(ARGV[5 * i - 1])
  local cost = tonumber(ARGV[5 * i])
  if interval > 0 and cost > 0 then
    if cost > burst then
      return denied({2, i - 1, burst})
    end
    k = math.min(k, math.floor(burst / cost))
    local room = (now + burst * interval - math.max(tats[i], now)) / (cost * interval)
    fit = math.min(fit, math.floor(room))
  end
end
k = math.max(k, 1)
if fit < 1 then
  -- None fits: the wait for all k, so that under saturation one lease
  -- still serves about k admissions.
  local latest = -1
  local worst = 0
  for i = 1, n do
    local interval = tonumber(ARGV[5 * i - 2])
    local burst = tonumber(ARGV[5 * i - 1])
    local cost = tonumber(ARGV[5 * i])
    if interval > 0 and cost > 0 then
      local at = math.max(tats[i], now) + k * cost * interval - burst * interval
      if at > latest then
        latest = at
        worst = i - 1
      end
    end
  end
  if latest > now then
    return denied({1, latest - now, worst})
  end
else
  k = math.min(k, fit)
end
for i = 1, n do
  local interval = tonumber(ARGV[5 * i - 2])
  local cost = tonumber(ARGV[5 * i])
  if interval > 0 and cost > 0 then
    tats[i] = math.max(tats[i], now) + k * cost * interval
    count(i, k * cost)
  end
end
save()
local reply = {0, k}
for i = 1, n do reply[i + 2] = nets[i] end
return reply
