-- Check-and-reserve, all dimensions or none (the same arithmetic as
-- src/rate/gcra.rs). ARGV[1] = n, then per dimension i: ARGV[3i-1] the
-- emission interval T in ns (0: unlimited), ARGV[3i] the burst, ARGV[3i+1]
-- the cost.
-- Returns {0, server µs since the epoch, then the net counter of every
-- dimension after this reservation} admitted; {1, wait in ns, the
-- dimension (0-based) or -1 for the gate} not yet; {2, dimension, burst}
-- never (the cost is above the burst).
if gate > now then
  return {1, gate - now, -1}
end
local latest = -1
local worst = 0
for i = 1, n do
  local interval = tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  if interval > 0 and cost > 0 then
    if cost > burst then
      return {2, i - 1, burst}
    end
    local at = tats[i] + cost * interval - burst * interval
    if at > latest then
      latest = at
      worst = i - 1
    end
  end
end
if latest > now then
  return {1, latest - now, worst}
end
for i = 1, n do
  local interval = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i + 1])
  if interval > 0 and cost > 0 then
    tats[i] = math.max(tats[i], now) + cost * interval
    count(i, cost)
  end
end
save()
local reply = {0, sec * 1000000 + usec}
for i = 1, n do reply[i + 2] = nets[i] end
return reply
