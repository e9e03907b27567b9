-- The correction of a settled reservation, and the 429 gate.
-- ARGV[1] = n, ARGV[2] = the gate to set, ns from now (0: none), then per
-- dimension i: ARGV[3i] the emission interval T in ns (0: unlimited),
-- ARGV[3i+1] units to give back, ARGV[3i+2] units to charge.
-- A refund never moves a TAT below now (a full bucket cannot get fuller);
-- a charge moves it forward past the burst if need be (the use happened),
-- at most 2^51 ns ahead. The net counter moves by the whole correction,
-- clamped or not (as the in-memory limiter's does). Returns 1.
local close = tonumber(ARGV[2])
if close > 0 then
  gate = math.max(gate, now + math.min(close, MAX_AHEAD))
end
for i = 1, n do
  local interval = tonumber(ARGV[3 * i])
  local refund = tonumber(ARGV[3 * i + 1])
  local charge = tonumber(ARGV[3 * i + 2])
  if interval > 0 then
    count(i, charge - refund)
    if refund > 0 and tats[i] > now then
      tats[i] = math.max(tats[i] - refund * interval, now)
    end
    if charge > 0 then
      tats[i] = math.min(math.max(tats[i], now) + charge * interval, now + MAX_AHEAD)
    end
  end
end
save()
return 1
