-- Learning from the provider, for every process: a response said only
-- `remaining` units are left (as of when its request arrived there).
-- ARGV[1] = n, then per dimension i: ARGV[4i-2] the emission interval T in
-- ns (0: unlimited), ARGV[4i-1] the burst, ARGV[4i] the provider's
-- remaining (-1: not said), ARGV[4i+1] the net counter right after that
-- request's reservation (the admission's reply).
-- What every process reserved since that request (the counter now minus
-- then: none of it is in the provider's `remaining`) is taken off, and
-- what the bucket holds is lowered to at most `remaining - since` from
-- now: the TAT rises to now + (burst - that) * T, never falls (the same
-- rule as src/rate/gcra.rs's tighten, counted from Redis's now, so the
-- refill since that request arrived is not credited: it errs strict).
-- A counter found lower than then (the group expired meanwhile) counts
-- nothing since. Returns 1 when a bucket was lowered, else 0.
local changed = false
for i = 1, n do
  local interval = tonumber(ARGV[4 * i - 2])
  local burst = tonumber(ARGV[4 * i - 1])
  local remaining = tonumber(ARGV[4 * i])
  local at = tonumber(ARGV[4 * i + 1])
  if interval > 0 and remaining >= 0 then
    local since = (nets[i] - at) % NET
    if since >= NET / 2 then since = 0 end
    local left = math.max(remaining - since, 0)
    if left < burst then
      local floor = now + (burst - left) * interval
      if floor > tats[i] then
        tats[i] = floor
        changed = true
      end
    end
  end
end
if changed then
  save()
  return 1
end
return 0
